//! A client that sends many frames and then leaves: every frame that reached
//! the server is appended, whether the client closes normally or resets the
//! connection.

mod common;

use std::os::fd::AsRawFd;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use websocket::protocol::encode_sync_update;
use yrs::{Doc, ReadTxn, Text, Transact};

/// Frames each client sends.
const FRAMES: usize = 3_000;

/// `FRAMES` y-websocket update messages, each one inserted character.
fn updates() -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(9);
    let text = doc.get_or_insert_text("t");
    (0..FRAMES)
        .map(|_| {
            let before = doc.transact().state_vector();
            text.push(&mut doc.transact_mut(), "x");
            encode_sync_update(&doc.transact().encode_state_as_update_v1(&before))
        })
        .collect()
}

/// Bytes the kernel still holds for the peer of socket `fd`: not sent, or not
/// acknowledged.
fn unacknowledged(fd: std::os::fd::RawFd) -> i32 {
    let mut queued: libc::c_int = 0;
    // SAFETY: `fd` is an open socket; TIOCOUTQ writes one int through the
    // pointer, which is valid.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut queued) };
    assert_eq!(
        rc,
        0,
        "TIOCOUTQ failed: {}",
        std::io::Error::last_os_error()
    );
    queued
}

enum Leave {
    Close,
    Reset,
}

async fn flood_then(leave: Leave, room: &str) {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    // A flood on purpose: no per-connection rate limit (limits.rs tests those).
    cfg.websocket.max_messages_per_second = 0;
    let instance = start(&cfg).await;
    let addr = instance.local_addr.expect("serves");
    let tcp = TcpStream::connect(addr).await.unwrap();
    if matches!(leave, Leave::Reset) {
        // Closing with a zero linger sends a reset instead of a FIN.
        tcp.set_zero_linger().unwrap();
    }
    let fd = tcp.as_raw_fd();
    let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/{room}"), tcp)
        .await
        .unwrap();
    let (mut sink, mut incoming) = socket.split();
    // Read everything the room sends, as an editor does, so the client never
    // falls behind; hand the read half back when told to stop.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return incoming,
                next = incoming.next() => if !matches!(next, Some(Ok(_))) {
                    return incoming;
                },
            }
        }
    });
    for update in updates() {
        sink.feed(Message::Binary(update.into())).await.unwrap();
    }
    sink.flush().await.unwrap();
    match leave {
        Leave::Close => sink.send(Message::Close(None)).await.unwrap(),
        Leave::Reset => {
            // Every byte is in the server's hands before the reset: frames still
            // in this side's send queue would be discarded by this kernel, and
            // no server could append them.
            eventually("the server acknowledging every byte", SOON, || async {
                unacknowledged(fd) == 0
            })
            .await;
            let _ = stop.send(());
            let incoming = reader.await.unwrap();
            drop(sink.reunite(incoming).unwrap());
        }
    }
    let key = format!("y:room:{room}:index");
    let mut conn = redis_conn(&redis).await;
    let deadline = tokio::time::Instant::now() + SOON;
    let mut appended = 0;
    while tokio::time::Instant::now() < deadline {
        appended = xlen(&mut conn, &key).await as usize;
        if appended == FRAMES {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        appended, FRAMES,
        "frames appended of {FRAMES} the server received"
    );
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn every_frame_sent_before_a_close_is_appended() {
    flood_then(Leave::Close, "flood-close").await;
}

#[tokio::test]
async fn every_frame_received_before_a_reset_is_appended() {
    flood_then(Leave::Reset, "flood-reset").await;
}
