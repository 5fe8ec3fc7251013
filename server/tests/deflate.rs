//! permessage-deflate with WebSocket clients this project did not write:
//! Node's `ws` under an unmodified y-websocket provider, Python's
//! `websockets`; and compressed frames that would inflate past the message
//! size limit.

mod common;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use flate2::write::DeflateEncoder;
use flate2::Compression;
use testkit::{free_port, python, wait_for_port, ServiceProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use yrs::{Doc, Text, Transact};

/// Prose that compresses as real documents do (a few times, not a thousand).
fn prose(seed: usize, bytes: usize) -> String {
    let words = [
        "room",
        "stream",
        "worker",
        "document",
        "awareness",
        "update",
        "merge",
        "client",
        "server",
        "storage",
        "compaction",
        "redis",
        "fleet",
        "editor",
        "cursor",
    ];
    let mut text = String::with_capacity(bytes + 16);
    let mut n = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    while text.len() < bytes {
        n = n.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        text.push_str(words[(n >> 33) % words.len()]);
        text.push(if (n >> 20).is_multiple_of(9) {
            '.'
        } else {
            ' '
        });
    }
    text
}

#[tokio::test]
async fn a_node_ws_provider_agrees_to_deflate_and_both_directions_are_compressed() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let base = format!("ws://{}", instance.local_addr.unwrap());
    let from_rust = format!("from-rust;{}", prose(1, 300_000));
    let from_node = format!("from-node;{}", prose(2, 200_000));

    let rust = YClient::connect(&format!("{base}/deflated")).await.unwrap();
    rust.wait_synced(SOON).await.unwrap();
    rust.text_insert("t", 0, &from_rust);

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/deflate_provider.mjs"
    );
    // The text goes in a file: it is longer than an argument may be.
    let insert = data.path().join("from-node.txt");
    std::fs::write(&insert, &from_node).unwrap();
    let result = data.path().join("node-result.json");
    let output = tokio::process::Command::new("node")
        .arg(script)
        .arg(&base)
        .arg("deflated")
        .arg(&insert)
        .arg("from-rust;")
        .arg(&result)
        .output()
        .await
        .expect("node runs (ci/setup.sh installs it)");
    assert!(
        output.status.success(),
        "node client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let extensions = seen["extensions"].as_str().unwrap();
    assert!(
        extensions.starts_with("permessage-deflate"),
        "agreed: {extensions:?}"
    );
    assert_eq!(seen["connections"], 1, "synced on its first connection");
    // The initial sync carried 300 kB of text, and the client sent 200 kB:
    // both went compressed, a few times smaller.
    let read = seen["bytesRead"].as_u64().unwrap();
    let written = seen["bytesWritten"].as_u64().unwrap();
    assert!(read < 300_000 / 2, "node read {read} bytes");
    assert!(written < 200_000 / 2, "node wrote {written} bytes");
    let text = seen["text"].as_str().unwrap();
    assert!(text.contains(&from_rust) && text.contains(&from_node));
    rust.wait_until("node's edit", SOON, |c| c.text("t").contains("from-node;"))
        .await
        .unwrap();
    assert_eq!(rust.text("t"), text);
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn python_websockets_agrees_to_deflate_reads_the_document_and_sends_an_update() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    let room = url(&instance, "python");
    let rust = YClient::connect(&room).await.unwrap();
    rust.wait_synced(SOON).await.unwrap();
    let from_rust = format!("from-rust;{}", prose(3, 100_000));
    rust.text_insert("t", 0, &from_rust);
    eventually("the edit appended", SOON, || async {
        counter(&scrape(&instance).await, "yws_messages_appended_total") >= 1
    })
    .await;

    // Python's update: 60 kB of text from a client of its own.
    let from_python = format!("from-python;{}", prose(4, 60_000));
    let doc = Doc::with_client_id(4242);
    let text = doc.get_or_insert_text("t");
    let update = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, &from_python);
        txn.encode_update_v1()
    };
    let received_before = counter(&scrape(&instance).await, "yws_received_bytes_total");
    let output = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/deflate_client.py"
        ))
        .args([&room, &hex::encode(&update), &hex::encode("from-rust;")])
        .output()
        .await
        .expect("python3 runs (ci/setup.sh installs websockets for it)");
    assert!(
        output.status.success(),
        "python client failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(seen["extensions"]
        .as_str()
        .unwrap()
        .starts_with("permessage-deflate; server_no_context_takeover"));
    rust.wait_until("python's update", SOON, |c| {
        c.text("t").contains("from-python;")
    })
    .await
    .unwrap();
    assert!(rust.text("t").contains(&from_python));
    // What the server read from Python's socket was compressed.
    let received = counter(&scrape(&instance).await, "yws_received_bytes_total") - received_before;
    assert!(
        received < update.len() as u64 / 2,
        "{received} bytes read for an update of {}",
        update.len()
    );
    instance.shutdown().await.unwrap();
}

/// A client frame: FIN, RSV1 (compressed), binary, masked.
fn compressed_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0xC2];
    match payload.len() {
        len @ 0..=125 => frame.push(0x80 | len as u8),
        len @ 126..=0xFFFF => {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(0x80 | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    let mask = [0x5a, 0x13, 0x77, 0xc4];
    frame.extend_from_slice(&mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// `inflated` zeros deflated as a client sends them (sync flush, tail cut).
fn bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = DeflateEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(&vec![0u8; inflated]).unwrap();
    // Ended with a final block: as valid a message as a sync-flushed one.
    encoder.finish().unwrap()
}

/// Open a WebSocket offering permessage-deflate; the server's answer.
async fn open_deflated(port: u16, room: &str) -> (TcpStream, String) {
    let mut socket = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET /{room} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        socket.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (socket, String::from_utf8(head).unwrap())
}

/// Read server frames until the close frame; its status code.
async fn close_code(socket: &mut TcpStream) -> u16 {
    loop {
        let mut header = [0u8; 2];
        socket.read_exact(&mut header).await.unwrap();
        let len = match header[1] & 0x7F {
            126 => u64::from(socket.read_u16().await.unwrap()),
            127 => socket.read_u64().await.unwrap(),
            short => u64::from(short),
        };
        let mut payload = vec![0u8; len as usize];
        socket.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0F == 0x8 {
            return u16::from_be_bytes([payload[0], payload[1]]);
        }
    }
}

/// Peak resident memory of a process, in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test]
async fn frames_that_inflate_past_the_limit_are_refused_with_1009_in_bounded_memory() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command
        .current_dir(data.path())
        .env_remove("REDIS_URL")
        .env_remove("REDIS")
        .env("WS_PORT", port.to_string())
        .env("WS_HOST", "127.0.0.1")
        .env("WS_MAX_MESSAGE_SIZE", "524288")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let server = ServiceProcess::spawn("websocket", command).unwrap();
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    let pid = server.pid().unwrap();

    // A 1 kB frame that inflates to 1 MB, twice the limit.
    let small = bomb(1024 * 1024);
    assert!(small.len() <= 1100, "{} bytes", small.len());
    let (mut socket, answer) = open_deflated(port, "bomb").await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(answer.contains("permessage-deflate"), "{answer}");
    socket.write_all(&compressed_frame(&small)).await.unwrap();
    assert_eq!(close_code(&mut socket).await, 1009);

    // Ten at once, each 100 kB inflating to 100 MB: a server that inflated
    // them whole would need a gigabyte.
    let before = peak_rss(pid);
    let large = bomb(100 * 1024 * 1024);
    let mut clients = Vec::new();
    for i in 0..10 {
        let large = large.clone();
        clients.push(tokio::spawn(async move {
            let (mut socket, _) = open_deflated(port, &format!("bomb{i}")).await;
            socket.write_all(&compressed_frame(&large)).await.unwrap();
            close_code(&mut socket).await
        }));
    }
    for client in clients {
        assert_eq!(client.await.unwrap(), 1009);
    }
    let grew = peak_rss(pid).saturating_sub(before);
    assert!(grew < 64 * 1024 * 1024, "peak memory grew by {grew} bytes");

    // A frame that is no deflate data at all: 1007.
    let (mut socket, _) = open_deflated(port, "garbage").await;
    socket
        .write_all(&compressed_frame(&[0xff; 64]))
        .await
        .unwrap();
    assert_eq!(close_code(&mut socket).await, 1007);
    drop(server);
}
