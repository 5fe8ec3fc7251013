//! What one connection may send, and what happens to a peer that goes silent:
//! a client over a limit is closed with 1008 after everything it sent before
//! was appended; a client that answers nothing is closed after the idle
//! timeout and its awareness departure is appended.

mod common;

use std::time::Duration;

use common::*;
use testkit::client::awareness_message;
use websocket::config::Config;

const ROOM_KEY: &str = "y:room:limits:index";

/// An instance on its own Redis with `tune` applied to its configuration.
async fn instance(
    tune: impl FnOnce(&mut Config),
) -> (
    RedisServer,
    websocket::app::Instance,
    tempfile::TempDir,
    redis::aio::MultiplexedConnection,
) {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut config = config(Some(&redis), data.path());
    tune(&mut config);
    let instance = start(&config).await;
    let conn = redis_conn(&redis).await;
    (redis, instance, data, conn)
}

/// A raw client past its initial sync.
async fn synced_client(instance: &websocket::app::Instance) -> RawClient {
    let mut client = RawClient::connect(&url(instance, "limits")).await.unwrap();
    assert!(client.recv(SOON).await.is_some(), "step 1");
    assert!(client.recv(SOON).await.is_some(), "step 2");
    client
}

/// The `m` values of the room's stream, in order.
async fn appended(conn: &mut redis::aio::MultiplexedConnection) -> Vec<Vec<u8>> {
    stream_entries(conn, ROOM_KEY)
        .await
        .into_iter()
        .map(|(_, m)| m)
        .collect()
}

#[tokio::test]
async fn a_client_over_the_message_rate_is_closed_and_keeps_what_it_sent_before() {
    let (_redis, instance, _data, mut conn) =
        instance(|c| c.websocket.max_messages_per_second = 20).await;
    let mut client = synced_client(&instance).await;
    let sent: Vec<Vec<u8>> = (1..=100)
        .map(|clock| awareness_message(&[(5, clock, "{}")]))
        .collect();
    for message in &sent {
        if client.send(message).await.is_err() {
            break;
        }
    }
    assert_eq!(client.wait_closed(SOON).await, Some(1008));
    let stored = appended(&mut conn).await;
    // At least the first second's worth, in order, and never everything.
    assert!(
        stored.len() >= 20 && stored.len() < sent.len(),
        "{} appended",
        stored.len()
    );
    assert_eq!(stored[..], sent[..stored.len()]);
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_over_the_byte_rate_is_closed_after_what_fit() {
    let (_redis, instance, _data, mut conn) =
        instance(|c| c.websocket.max_bytes_per_second = 10_000).await;
    let mut client = synced_client(&instance).await;
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(6000));
    let sent: Vec<Vec<u8>> = (1..=3)
        .map(|clock| awareness_message(&[(5, clock, &big)]))
        .collect();
    for message in &sent {
        if client.send(message).await.is_err() {
            break;
        }
    }
    assert_eq!(client.wait_closed(SOON).await, Some(1008));
    // The first two started under the limit; the third came over it.
    assert_eq!(appended(&mut conn).await, sent[..2]);
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn oversized_awareness_states_and_crowded_awareness_messages_are_refused() {
    let (_redis, instance, _data, mut conn) = instance(|c| {
        c.websocket.max_awareness_state = 1000;
        c.websocket.max_awareness_clients = 10;
    })
    .await;

    let mut client = synced_client(&instance).await;
    let fine = awareness_message(&[(5, 1, "{\"name\":\"ok\"}")]);
    client.send(&fine).await.unwrap();
    let huge = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    client
        .send(&awareness_message(&[(5, 2, &huge)]))
        .await
        .unwrap();
    assert_eq!(client.wait_closed(SOON).await, Some(1008));

    let mut client = synced_client(&instance).await;
    let crowd: Vec<(u64, u64, &str)> = (0..11).map(|id| (100 + id, 1, "{}")).collect();
    client.send(&awareness_message(&crowd)).await.unwrap();
    assert_eq!(client.wait_closed(SOON).await, Some(1008));

    // Only the acceptable message, then the first client's departure (appended
    // once its connection closed).
    let deadline = tokio::time::Instant::now() + SOON;
    let mut stored = appended(&mut conn).await;
    while stored.len() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        stored = appended(&mut conn).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stored_later = appended(&mut conn).await;
    assert_eq!(stored, stored_later, "nothing more is appended");
    assert_eq!(stored.len(), 2, "{stored:?}");
    assert_eq!(stored[0], fine);
    assert_eq!(
        stored[1],
        websocket::protocol::encode_awareness_removal(5, 1)
    );
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_silent_peer_is_closed_and_its_departure_appended() {
    let (_redis, instance, _data, mut conn) = instance(|c| c.websocket.idle_timeout = 1000).await;
    // This client never reads again, so it never answers the server's ping:
    // a peer that vanished without closing its socket.
    let mut silent = synced_client(&instance).await;
    silent
        .send(&awareness_message(&[(77, 3, "{\"user\":\"gone\"}")]))
        .await
        .unwrap();
    let removal = websocket::protocol::encode_awareness_removal(77, 3);
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let stored = appended(&mut conn).await;
        if stored.last() == Some(&removal) {
            assert_eq!(stored.len(), 2, "{stored:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no departure appended: {stored:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_answers_pings_stays_beyond_the_idle_timeout() {
    let (_redis, instance, _data, _conn) = instance(|c| c.websocket.idle_timeout = 600).await;
    let writer = YClient::connect(&url(&instance, "limits")).await.unwrap();
    let reader = YClient::connect(&url(&instance, "limits")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    reader.wait_synced(SOON).await.unwrap();
    // Five idle timeouts without a single edit: only pings and pongs.
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(writer.closed(), None);
    assert_eq!(reader.closed(), None);
    writer.text_insert("t", 0, "still here");
    reader
        .wait_until("the edit after the quiet time", SOON, |c| {
            c.text("t") == "still here"
        })
        .await
        .unwrap();
    instance.shutdown().await.unwrap();
}
