//! Large documents: an initial sync cut into messages reaches a client on a
//! slow link on its first connection, and joiners opening a room together
//! share one load of it.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use yrs::{Doc, Map, Transact};

/// A document of `entries` map entries of 100 characters that do not
/// compress much (as if each held a hash or a token), in map `m`.
fn large_doc(entries: usize) -> Doc {
    let doc = Doc::with_client_id(77);
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    let mut n: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..entries {
        let value: String = (0..100)
            .map(|_| {
                n ^= n << 13;
                n ^= n >> 7;
                n ^= n << 17;
                char::from(
                    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                        [(n % 62) as usize],
                )
            })
            .collect();
        map.insert(&mut txn, format!("k{i}"), value);
    }
    drop(txn);
    doc
}

/// Write a [`large_doc`] of `entries` into `room` through a client that
/// leaves once the server appended it.
async fn write_large_doc(instance: &websocket::app::Instance, room: &str, entries: usize) {
    let writer = YClient::connect_with(room, large_doc(entries), None)
        .await
        .unwrap();
    writer.wait_synced(SOON).await.unwrap();
    eventually("the document appended", SOON, || async {
        counter(&scrape(instance).await, "yws_messages_appended_total") == 1
    })
    .await;
}

/// Bytes per second the slow link forwards from the server to the client.
const LINK_RATE: u64 = 100 * 1024;

/// A TCP proxy to `upstream` that forwards what the server sends at
/// [`LINK_RATE`] (what the client sends goes through at once), counting the
/// bytes it forwarded to the client. Its port.
async fn slow_link(upstream: std::net::SocketAddr, forwarded: Arc<AtomicU64>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let forwarded = Arc::clone(&forwarded);
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
                    let _ = server_write.shutdown().await;
                });
                let started = tokio::time::Instant::now();
                let mut sent: u64 = 0;
                let mut buf = vec![0u8; 4096];
                loop {
                    let n = match server_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if client_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n as u64;
                    forwarded.fetch_add(n as u64, Ordering::Relaxed);
                    let due = started + Duration::from_secs_f64(sent as f64 / LINK_RATE as f64);
                    tokio::time::sleep_until(due).await;
                }
                let _ = client_write.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn a_document_too_large_for_30_s_of_a_slow_link_syncs_on_the_first_connection() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    let room = url(&instance, "large");
    // About 5.6 MB, which deflate takes to 4.2 MB: 42 s at the link's rate.
    const ENTRIES: usize = 52_000;
    write_large_doc(&instance, &room, ENTRIES).await;

    // Unmodified y-websocket 2.x and 3.x providers, each behind its own slow link.
    let upstream = instance.local_addr.unwrap();
    let forwarded = Arc::new(AtomicU64::new(0));
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/slow_link_provider.mjs"
    );
    let mut clients = Vec::new();
    for package in ["y-websocket", "y-websocket3"] {
        let port = slow_link(upstream, Arc::clone(&forwarded)).await;
        clients.push(
            tokio::process::Command::new("node")
                .arg(script)
                .args([&format!("ws://127.0.0.1:{port}"), "large", package])
                .output(),
        );
    }
    for (client, package) in clients.into_iter().zip(["y-websocket", "y-websocket3"]) {
        let output = client.await.expect("node runs (ci/setup.sh installs it)");
        assert!(
            output.status.success(),
            "{package}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(seen["connections"], 1, "{package} reconnected: {seen}");
        assert_eq!(seen["closes"], 0, "{package} gave up on a silence: {seen}");
        assert_eq!(seen["entries"], ENTRIES as u64, "{package}: {seen}");
        assert!(
            seen["messages"].as_u64().unwrap() > 3,
            "{package} in chunks: {seen}"
        );
    }
    // Each client took more than the 30 s of silence y-websocket allows: the
    // two links forwarded more than 30 s worth of bytes each.
    let per_client = forwarded.load(Ordering::Relaxed) / 2;
    assert!(per_client > 30 * LINK_RATE, "{per_client} bytes per client");
    let metrics = scrape(&instance).await;
    assert!(
        metrics.contains("yws_connections_dropped_slow_total 0"),
        "the server dropped a client"
    );
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn fifty_joiners_of_a_large_document_share_one_load() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    // Cut into messages too, so that joiners take the chunked sync.
    cfg.websocket.sync_chunk_size = 256 * 1024;
    let instance = start(&cfg).await;
    let room = url(&instance, "storm");
    const ENTRIES: usize = 12_000;
    write_large_doc(&instance, &room, ENTRIES).await;
    eventually("the room closed", SOON, || async {
        scrape(&instance).await.contains("yws_rooms_open 0")
    })
    .await;
    let loads = |page: &str| counter(page, "yws_document_loads_total");
    let before = loads(&scrape(&instance).await);

    // Redis holds every command but ours for two seconds: all fifty join
    // while the first one's load waits for it.
    let mut admin = redis_conn(&redis).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2000)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    let joiners: Vec<_> = (0..50)
        .map(|_| {
            let room = room.clone();
            tokio::spawn(async move {
                let client = YClient::connect(&room).await.unwrap();
                client.wait_synced(Duration::from_secs(60)).await.unwrap();
                client.content()["m"].as_object().map_or(0, |m| m.len())
            })
        })
        .collect();
    for joiner in joiners {
        assert_eq!(joiner.await.unwrap(), ENTRIES);
    }
    assert_eq!(
        loads(&scrape(&instance).await) - before,
        1,
        "one load for 50"
    );
    instance.shutdown().await.unwrap();
}
