//! A client that sends many frames and then leaves: every frame that reached
//! the server is appended.

mod common;

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

async fn flood_then_close(room: &str) {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let cfg = config(Some(&redis), data.path());
    let instance = start(&cfg).await;
    let addr = instance.local_addr.expect("serves");
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (socket, _) = tokio_tungstenite::client_async(format!("ws://{addr}/{room}"), tcp)
        .await
        .unwrap();
    let (mut sink, mut incoming) = socket.split();
    // Read everything the room sends, as an editor does, so the client never
    // falls behind.
    let reader = tokio::spawn(async move { while let Some(Ok(_)) = incoming.next().await {} });
    for update in updates() {
        sink.feed(Message::Binary(update.into())).await.unwrap();
    }
    sink.flush().await.unwrap();
    sink.send(Message::Close(None)).await.unwrap();
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
    reader.abort();
    instance.shutdown().await;
}

#[tokio::test]
async fn every_frame_sent_before_a_close_is_appended() {
    flood_then_close("flood-close").await;
}
