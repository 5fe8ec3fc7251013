//! A real browser: y-websocket 2.1.0 in headless Chromium, on the browser's own
//! WebSocket, negotiates permessage-deflate with a Rust and a JavaScript server
//! of one fleet, and the two browser clients (and a yrs client) converge.
//!
//! The browser side is `conformance/browser/deflate_in_chromium.mjs` (puppeteer-core
//! driving Debian's Chromium, yjs and y-websocket bundled by esbuild), run by Node
//! with the packages of `js-reference/`.

use std::time::Duration;

use anyhow::Result;
use conformance::{browser, Fleet, Lang};
use serde::Deserialize;
use testkit::YClient;

/// How long the browser script may run: its own limit is 30 s, the rest is
/// Node's start and Chromium's shutdown.
const SCRIPT_LIMIT: Duration = Duration::from_secs(60);

/// How long the yrs client may take to sync and see the browsers' text.
const SOON: Duration = Duration::from_secs(10);

/// The room both browser pages and the yrs client join.
const ROOM: &str = "chromium-deflate";

/// What the browser script reports for one page.
#[derive(Debug, Deserialize)]
struct PageResult {
    /// `WebSocket.extensions` as the browser reports it.
    extensions: String,
    /// The page's `Y.Text` `t` once both pages agreed.
    text: String,
    /// What the page inserted.
    inserted: String,
}

/// The browser script's one JSON line.
#[derive(Debug, Deserialize)]
struct BrowserResult {
    /// Page A, connected to the Rust server.
    rust: PageResult,
    /// Page B, connected to the JavaScript server.
    js: PageResult,
}

/// Run the browser script against the two servers' bases and read its result.
async fn run_browser(rust_base: &str, js_base: &str) -> Result<BrowserResult> {
    browser::check_prerequisites(&["esbuild", "yjs", "y-websocket"]).await?;
    let args = [rust_base, js_base, ROOM].map(String::from);
    browser::run_script("deflate_in_chromium.mjs", &args, SCRIPT_LIMIT).await
}

/// Chromium offers permessage-deflate to both servers and both accept it; edits
/// made in the two browsers meet through the fleet's Redis, and a yrs client of
/// the Rust server sees the same text.
#[tokio::test]
async fn chromium_negotiates_deflate_with_both_languages_and_converges() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let result = match run_browser(&rust.ws_base(), &js.ws_base()).await {
        Ok(result) => result,
        Err(err) => panic!("{err:#}"),
    };
    eprintln!(
        "Sec-WebSocket-Extensions agreed: Rust server {:?}, JavaScript server {:?}",
        result.rust.extensions, result.js.extensions
    );

    for (server, page) in [("Rust", &result.rust), ("JavaScript", &result.js)] {
        assert!(
            page.extensions.starts_with("permessage-deflate"),
            "Chromium and the {server} server agreed to {:?}, not permessage-deflate",
            page.extensions
        );
    }
    assert_eq!(
        result.rust.text, result.js.text,
        "the two browsers' texts differ"
    );
    assert_ne!(result.rust.inserted, result.js.inserted);
    for page in [&result.rust, &result.js] {
        assert!(
            result.rust.text.contains(&page.inserted),
            "the browsers' text {:?} lacks {:?}",
            result.rust.text,
            page.inserted
        );
    }

    let client = YClient::connect(&rust.url(ROOM)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client
        .wait_until("the browsers' text", SOON, |c| {
            c.text("t") == result.rust.text
        })
        .await
        .unwrap();
}
