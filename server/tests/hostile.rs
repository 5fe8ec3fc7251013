//! Hostile input at the listener: requests that never finish, and what a
//! client controls reaching storage and logs.

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read until the server closes the connection.
async fn read_to_close(stream: &mut TcpStream) {
    let mut sink = Vec::new();
    let _ = stream.read_to_end(&mut sink).await;
}

#[tokio::test]
async fn half_sent_upgrade_requests_are_closed_after_the_header_timeout() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.websocket.header_timeout = 500;
    let instance = start(&cfg).await;
    let addr = instance.local_addr.expect("serves");
    let mut held = Vec::new();
    for i in 0..50 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        if i % 2 == 0 {
            stream
                .write_all(b"GET /room HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    tokio::time::timeout(SOON, async {
        for stream in &mut held {
            read_to_close(stream).await;
        }
    })
    .await
    .expect("every half-sent request is closed by the server");

    // The instance still serves clients.
    let client = YClient::connect(&url(&instance, "room")).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    drop(client);
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn connections_past_the_handshake_bound_wait_and_are_then_served() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.websocket.header_timeout = 60_000;
    cfg.websocket.max_handshakes = 4;
    let instance = start(&cfg).await;
    let addr = instance.local_addr.expect("serves");
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /room HTTP/1.1\r\n").await.unwrap();
        held.push(stream);
    }
    let waiting = tokio::spawn({
        let url = url(&instance, "room");
        async move {
            let client = YClient::connect(&url).await.expect("connects");
            client.wait_synced(SOON).await.expect("synced");
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "a client was served while the handshake bound was reached"
    );
    held.clear();
    tokio::time::timeout(SOON, waiting)
        .await
        .expect("served once the held connections are gone")
        .unwrap();
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_room_name_longer_than_a_file_name_is_served_and_stored() {
    let data = tempfile::tempdir().unwrap();
    let cfg = config(None, data.path());
    let room = "r".repeat(10_000);
    let instance = start(&cfg).await;
    let client = YClient::connect(&url(&instance, &room)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "kept");
    let other = YClient::connect(&url(&instance, &room)).await.unwrap();
    other
        .wait_until("the edit", SOON, |c| c.text("t") == "kept")
        .await
        .unwrap();
    drop(client);
    drop(other);
    // The embedded instance stores every document when it stops.
    instance.shutdown().await.unwrap();

    let instance = start(&cfg).await;
    let client = YClient::connect(&url(&instance, &room)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    assert_eq!(client.text("t"), "kept", "the long room was not stored");
    drop(client);
    instance.shutdown().await.unwrap();
}
