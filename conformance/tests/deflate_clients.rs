//! permessage-deflate with a WebSocket client that is neither ours nor a
//! y-websocket provider: Python's `websockets`, on a Rust and a JavaScript
//! server of one fleet. Both servers agree to the extension; each client reads
//! the document another client wrote through the other server, and its own
//! compressed update reaches that client.

use std::time::Duration;

use conformance::{Fleet, Lang};
use testkit::YClient;
use yrs::{Doc, Text, Transact};

const SOON: Duration = Duration::from_secs(10);

/// A Yjs update inserting `text` at the start of text `t`, by client `id`.
fn insertion(id: u64, text: &str) -> Vec<u8> {
    let doc = Doc::with_client_id(id);
    let t = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    txn.encode_update_v1()
}

/// Run the Python client on `room_url`: it checks that its sync step 2 holds
/// `expected`, sends `update` and prints what the server agreed to.
async fn python_client(room_url: &str, update: &[u8], expected: &str) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/tests/python/deflate_client.py"
    );
    let output = tokio::process::Command::new(testkit::python())
        .arg(script)
        .args([room_url, &hex::encode(update), &hex::encode(expected)])
        .output()
        .await
        .expect("python3 runs (ci/setup.sh installs websockets for it)");
    assert!(
        output.status.success(),
        "python client on {room_url} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test]
async fn python_websockets_agrees_to_deflate_with_both_languages_and_converges() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let room = "python-deflate";

    // A long, compressible text written through the JavaScript server, seen
    // through the Rust one (so it is in Redis for both).
    let from_rust = format!(
        "from-rust;{}",
        "a document that compresses well. ".repeat(2000)
    );
    let writer = YClient::connect(&js.url(room)).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, &from_rust);
    let watcher = YClient::connect(&rust.url(room)).await.unwrap();
    watcher
        .wait_until("the writer's text", SOON, |c| {
            c.text("t").contains("from-rust;")
        })
        .await
        .unwrap();

    for (server, id, text) in [
        (rust, 4242, "from-python-on-rust;"),
        (js, 4343, "from-python-on-js;"),
    ] {
        let update = insertion(id, &format!("{text}{}", "python's words. ".repeat(1000)));
        let seen = python_client(&server.url(room), &update, "from-rust;").await;
        let extensions = seen["extensions"].as_str().unwrap_or_default();
        assert!(
            extensions.starts_with("permessage-deflate"),
            "{}: {extensions:?}",
            server.name()
        );
        assert!(seen["step2"].as_u64().unwrap() > from_rust.len() as u64);
        for client in [&writer, &watcher] {
            client
                .wait_until(text, SOON, |c| c.text("t").contains(text))
                .await
                .unwrap();
        }
    }
    assert_eq!(writer.text("t"), watcher.text("t"));
}
