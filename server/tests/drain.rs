//! Draining shutdown: a stopping instance tells its load balancer first, then
//! hands its clients to the rest of the fleet without losing an edit.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use testkit::{free_port, wait_for_port, ServiceProcess};

const CLIENTS: usize = 20;
/// Edits each client makes on the first instance's side of the test, at least
/// (it keeps editing until it is closed), and after reconnecting.
const EDITS_AFTER: usize = 5;

/// `/readyz`'s status, or `None` when nothing answers.
async fn readyz(http: &reqwest::Client, port: u16) -> Option<u16> {
    let response = http
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// One client's edits: map `m` keys `"{client}.{n}"`.
fn key(client: usize, n: usize) -> String {
    format!("{client}.{n}")
}

#[tokio::test]
async fn sigterm_drains_then_hands_clients_to_the_fleet() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let ops_port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command
        .current_dir(data.path())
        .env("REDIS_URL", redis.url())
        .env_remove("REDIS")
        .env("WS_PORT", port.to_string())
        .env("WS_HOST", "127.0.0.1")
        .env("METRICS_PORT", ops_port.to_string())
        .env("SHUTDOWN_DRAIN_MS", "1500")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let mut first = ServiceProcess::spawn("websocket", command).unwrap();
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    wait_for_port(ops_port, Duration::from_secs(20)).unwrap();
    let http = reqwest::Client::new();
    eventually("first instance ready", SOON, || async {
        readyz(&http, ops_port).await == Some(200)
    })
    .await;

    let second_data = tempfile::tempdir().unwrap();
    let second = start(&config(Some(&redis), second_data.path())).await;
    let second_url = url(&second, "drained");
    let first_url = format!("ws://127.0.0.1:{port}/drained");

    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let client = YClient::connect(&first_url).await.unwrap();
        client.wait_synced(SOON).await.unwrap();
        clients.push(Arc::new(client));
    }

    // Every client edits until the first instance closes it, reconnects to the
    // second one with its document and makes a few more edits there.
    let mut tasks = Vec::new();
    for (i, client) in clients.iter().enumerate() {
        let client = Arc::clone(client);
        let second_url = second_url.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while client.closed().is_none() {
                client.map_set("m", &key(i, n), true);
                n += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let code = client.closed();
            let moved = YClient::connect_with(&second_url, client.doc.clone(), None)
                .await
                .unwrap();
            moved.wait_synced(SOON).await.unwrap();
            for _ in 0..EDITS_AFTER {
                moved.map_set("m", &key(i, n), true);
                n += 1;
            }
            (code, n, moved)
        }));
    }
    // Let every client edit on the first instance.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let closed = || clients.iter().filter(|c| c.closed().is_some()).count();
    assert_eq!(closed(), 0, "closed before the signal");

    let stopping = tokio::task::spawn_blocking(move || first.terminate(Duration::from_secs(10)));
    // Not ready before any client is closed.
    let mut status = readyz(&http, ops_port).await;
    while status == Some(200) {
        status = readyz(&http, ops_port).await;
    }
    let closed_when_unready = closed();
    assert_eq!(status, Some(503), "/readyz after the signal");
    assert_eq!(
        closed_when_unready, 0,
        "clients were closed before /readyz answered 503"
    );

    let mut expected = serde_json::Map::new();
    let mut moved = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (code, n, client) = task.await.unwrap();
        assert_eq!(code, Some(1001), "client {i}'s close code");
        for e in 0..n {
            expected.insert(key(i, e), serde_json::Value::Bool(true));
        }
        moved.push(client);
    }
    let status = stopping.await.unwrap().expect("exits within 10 s");
    assert!(status.success(), "exit status {status}");

    let expected = serde_json::Value::Object(expected);
    for (i, client) in moved.iter().enumerate() {
        client
            .wait_until(&format!("client {i} has every edit"), SOON, |c| {
                c.content()["m"] == expected
            })
            .await
            .unwrap();
    }
    second.shutdown().await.unwrap();
}
