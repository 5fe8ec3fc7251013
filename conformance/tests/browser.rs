//! A real browser: y-websocket 2.1.0 in headless Chromium, on the browser's own
//! WebSocket, negotiates permessage-deflate with a Rust and a JavaScript server
//! of one fleet, and the two browser clients (and a yrs client) converge.
//!
//! The browser side is `conformance/browser/deflate_in_chromium.mjs` (puppeteer-core
//! driving Debian's Chromium, yjs and y-websocket bundled by esbuild), run by Node
//! with the packages of `js-reference/`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::{paths, Fleet, Lang};
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

/// Chromium as the script will launch it (`CHROMIUM`, else Debian's path).
fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

/// Fail with what to install when Chromium, Node or the script's packages are
/// missing, rather than letting the script fail obscurely (or skipping).
async fn check_prerequisites(js_reference: &Path) -> Result<()> {
    let browser = chromium();
    if !browser.is_file() {
        bail!(
            "no Chromium at {}: install Debian's `chromium` package (ci/setup.sh does) \
             or set CHROMIUM to a Chromium binary",
            browser.display()
        );
    }
    let node = tokio::process::Command::new("node")
        .arg("--version")
        .output()
        .await;
    match node {
        Ok(output) if output.status.success() => {}
        _ => bail!("no `node` on PATH: install Node.js 20 or later (ci/setup.sh does)"),
    }
    for package in ["puppeteer-core", "esbuild", "yjs", "y-websocket"] {
        if !js_reference.join("node_modules").join(package).is_dir() {
            bail!(
                "{} has no node_modules/{package}: run `npm ci` there (ci/setup.sh does)",
                js_reference.display()
            );
        }
    }
    Ok(())
}

/// Run the browser script against the two servers' bases and read its result.
async fn run_browser(rust_base: &str, js_base: &str) -> Result<BrowserResult> {
    let js_reference = paths::js_reference_dir();
    check_prerequisites(&js_reference).await?;
    let script = paths::workspace_root().join("conformance/browser/deflate_in_chromium.mjs");
    let child = tokio::process::Command::new("node")
        .arg(&script)
        .args([rust_base, js_base, ROOM])
        // The browser's packages come from js-reference, like the sidecar's,
        // whichever implementation CONFORMANCE_JS_DIR puts in the fleet.
        .env(paths::JS_DIR_VAR, &js_reference)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let output = tokio::time::timeout(SCRIPT_LIMIT, child.wait_with_output())
        .await
        .with_context(|| format!("{} ran longer than {SCRIPT_LIMIT:?}", script.display()))?
        .context("waiting for node")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} failed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
            script.display(),
            output.status
        );
    }
    let line = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .with_context(|| format!("the browser script printed nothing; stderr:\n{stderr}"))?;
    serde_json::from_str(line).with_context(|| format!("reading the browser's result {line}"))
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
