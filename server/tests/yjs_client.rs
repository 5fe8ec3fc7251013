//! An unmodified npm y-websocket client provider (Node) against this server.

mod common;

use std::process::Stdio;

use common::*;

#[tokio::test]
async fn npm_y_websocket_provider_syncs_with_a_rust_client() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let base = format!("ws://{}", instance.local_addr.unwrap());

    let rust = YClient::connect(&format!("{base}/mixed")).await.unwrap();
    rust.wait_synced(SOON).await.unwrap();
    rust.text_insert("t", 0, "from-rust;");

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/provider_client.mjs"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .args([&base, "mixed", "from-node;", "from-rust;"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node runs (ci/setup.sh installs it)");
    assert!(
        output.status.success(),
        "node client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: String = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        seen.contains("from-rust;") && seen.contains("from-node;"),
        "{seen}"
    );
    rust.wait_until("node's edit", SOON, |c| c.text("t").contains("from-node;"))
        .await
        .unwrap();
    assert_eq!(rust.text("t"), seen);
    instance.shutdown().await.unwrap();
}
