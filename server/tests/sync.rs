//! Serving clients: initial sync, convergence across instances on one Redis,
//! awareness, and the exact stream entries of a scripted session.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn empty_room_gets_the_exact_initial_messages() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let mut client = RawClient::connect(&url(&instance, "empty")).await.unwrap();
    assert_eq!(client.recv(SOON).await.unwrap(), hex("00000100"));
    assert_eq!(client.recv(SOON).await.unwrap(), hex("0001020000"));
    assert_eq!(client.recv(Duration::from_millis(300)).await, None);
    client.close().await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_on_two_instances_converge_and_share_awareness() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let one = start(&config(Some(&redis), data.path())).await;
    let two = start(&config(Some(&redis), data.path())).await;

    let mut a = YClient::connect(&url(&one, "shared")).await.unwrap();
    let b = YClient::connect(&url(&two, "shared")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();

    a.text_insert("t", 0, "hello");
    b.map_set("m", "k", 42.0);
    b.array_push("a", "two");
    a.array_push("a", 1.0);
    a.wait_until("b's edits", SOON, |c| {
        c.content()["m"]["k"] == 42.0 && c.content()["a"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await
    .unwrap();
    b.wait_until("a's edits", SOON, |c| {
        c.content()["t"] == "hello" && c.content()["a"].as_array().is_some_and(|a| a.len() == 2)
    })
    .await
    .unwrap();
    b.text_insert("t", 5, " world");
    a.wait_until("b's text", SOON, |c| c.text("t") == "hello world")
        .await
        .unwrap();
    assert_eq!(a.content(), b.content());

    // Awareness crosses instances, and a disconnect clears it.
    a.set_awareness(r#"{"user":"a"}"#).unwrap();
    let a_id = a.doc.client_id().get();
    b.wait_until("a's awareness", SOON, |c| c.awareness().contains_key(&a_id))
        .await
        .unwrap();
    assert_eq!(b.awareness()[&a_id], r#"{"user":"a"}"#);
    drop(a);
    b.wait_until("a's departure", SOON, |c| {
        !c.awareness().contains_key(&a_id)
    })
    .await
    .unwrap();

    // A late joiner on the first instance gets everything.
    let c = YClient::connect(&url(&one, "shared")).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    assert_eq!(c.content(), b.content());
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

/// Replays the client messages of the captured y-redis session and compares
/// the stream entries byte for byte (ids by order only).
#[tokio::test]
async fn session_appends_the_captured_stream_entries() {
    let session = fixture("session.json");
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let room_url = url(&instance, "fixture%20room");

    let mut a = RawClient::connect(&room_url).await.unwrap();
    let log = session["log"].as_array().unwrap();
    let received = a.recv_all(Duration::from_millis(300)).await;
    let expected: Vec<Vec<u8>> = log[0]["A_received"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex(h.as_str().unwrap()))
        .collect();
    assert_eq!(received, expected, "initial sync of an empty room");

    // Step 1 is ignored; two updates and an awareness message are appended.
    a.send(&hex("00000100")).await.unwrap();
    for message in log[1]["sent"].as_array().unwrap() {
        a.send(&hex(message.as_str().unwrap())).await.unwrap();
    }
    let first = a.recv(SOON).await.unwrap();
    assert_eq!(first, hex(log[1]["sent"][0].as_str().unwrap()));
    // The rest arrives as separate frames (no concatenation, defect 3).
    a.recv_all(Duration::from_millis(500)).await;

    let mut b = RawClient::connect(&room_url).await.unwrap();
    let b_initial = b.recv_all(Duration::from_millis(500)).await;
    assert_eq!(b_initial.len(), 3, "step1, step2, awareness");
    assert_eq!(b_initial[0], hex(log[2]["B_received"][0].as_str().unwrap()));
    assert_eq!(b_initial[2], hex(log[2]["B_received"][2].as_str().unwrap()));

    a.send(&hex(log[3]["sent"].as_str().unwrap()))
        .await
        .unwrap();
    assert_eq!(
        b.recv(SOON).await.unwrap(),
        hex(log[3]["sent"].as_str().unwrap())
    );
    // An empty step 2 is rewritten into an update.
    a.send(&hex("0001020000")).await.unwrap();
    assert_eq!(b.recv(SOON).await.unwrap(), hex("0002020000"));
    // The poison step 2 of y-redis's defect 4 is refused and closes A, which
    // then leaves: B is told A's client is gone.
    a.send(&hex("00010100")).await.unwrap();
    assert_eq!(a.wait_closed(SOON).await, Some(1007));
    assert_eq!(b.recv(SOON).await.unwrap(), hex("0108010a02046e756c6c"));

    let mut conn = redis_conn(&redis).await;
    let key = "y:room:fixture%2520room:index";
    let entries = stream_entries(&mut conn, key).await;
    let captured: Vec<Vec<u8>> = session["redis"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| hex(e["fields"][1].as_str().unwrap()))
        .filter(|m| m != &hex("00020100"))
        .collect();
    let ours: Vec<Vec<u8>> = entries.iter().map(|(_, m)| m.clone()).collect();
    assert_eq!(ours, captured);
    let ids: Vec<&String> = entries.iter().map(|(id, _)| id).collect();
    assert!(
        ids.windows(2)
            .all(|w| websocket::streams::is_smaller_redis_id(w[0], w[1])),
        "ids increase: {ids:?}"
    );
    let queue = stream_entries(&mut conn, "y:worker").await;
    assert_eq!(queue.len(), 1);
    assert_eq!(queue[0].1, key.as_bytes());
    let pending = redis
        .cli(&["XPENDING", "y:worker", "y:worker", "-", "+", "10"])
        .unwrap();
    assert!(
        pending.contains("pending"),
        "task parked under `pending`: {pending}"
    );
    b.close().await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn invalid_frames_close_only_their_connection_and_append_nothing() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.websocket.max_message_size = 64 * 1024;
    let instance = start(&cfg).await;
    let room_url = url(&instance, "guarded");
    let key = "y:room:guarded:index";
    let mut conn = redis_conn(&redis).await;

    let good = YClient::connect(&room_url).await.unwrap();
    good.wait_synced(SOON).await.unwrap();
    good.text_insert("t", 0, "safe");
    // The client's answer to step 1 (an empty step 2) is appended too.
    eventually("first update stored", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await == 2 }
    })
    .await;
    let base = xlen(&mut conn, key).await;

    let truncated_update = hex("00020f01010100040101740568656c6c");
    let oversized = {
        let mut m = vec![0u8, 2];
        testkit::client::write_bytes(&mut m, &vec![0u8; 100 * 1024]);
        m
    };
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated update", truncated_update, 1007),
        ("garbage", b"\xff\xfe\xfd garbage".to_vec(), 1007),
        ("unknown type 7", hex("0700"), 1007),
        ("poison step2", hex("00010100"), 1007),
        ("trailing bytes", hex("0002020000ff"), 1007),
        ("over the size limit", oversized, 1009),
    ];
    for (name, frame, code) in cases {
        let mut bad = RawClient::connect(&room_url).await.unwrap();
        bad.recv_all(Duration::from_millis(200)).await;
        let before = xlen(&mut conn, key).await;
        bad.send(&frame).await.unwrap();
        let closed = bad.wait_closed(SOON).await;
        assert!(closed.is_some(), "{name}: connection closed");
        if code != 1009 {
            assert_eq!(closed, Some(code), "{name}");
        }
        assert_eq!(
            xlen(&mut conn, key).await,
            before,
            "{name}: nothing appended"
        );
    }
    let mut text = RawClient::connect(&room_url).await.unwrap();
    text.recv_all(Duration::from_millis(200)).await;
    text.send_text("hello").await.unwrap();
    assert_eq!(text.wait_closed(SOON).await, Some(1003));

    // The good client is unaffected and keeps editing.
    assert_eq!(good.closed(), None);
    good.text_insert("t", 4, "!");
    eventually("second update stored", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await == base + 1 }
    })
    .await;
    let late = YClient::connect(&room_url).await.unwrap();
    late.wait_synced(SOON).await.unwrap();
    assert_eq!(late.text("t"), "safe!");
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn room_path_is_raw_and_keys_are_encoded() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let client = YClient::connect(&url(&instance, "my%20room"))
        .await
        .unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "x");
    let conn = redis_conn(&redis).await;
    eventually("entry under the encoded key", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, "y:room:my%2520room:index").await >= 1 }
    })
    .await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_slow_client_is_dropped_and_never_stalls_the_room() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.websocket.buffer_capacity = 4;
    let instance = start(&cfg).await;
    let room_url = url(&instance, "busy");

    let mut slow = RawClient::connect_slow(&room_url).await.unwrap();
    slow.recv_all(Duration::from_millis(200)).await;
    // From now on `slow` reads nothing.
    let writer = YClient::connect(&room_url).await.unwrap();
    let watcher = YClient::connect(&room_url).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    watcher.wait_synced(SOON).await.unwrap();
    outpace_a_slow_reader(&writer, &watcher).await;
    assert_eq!(watcher.closed(), None);
    assert_eq!(writer.closed(), None);
    // The slow one was dropped from the room: after what was already on its
    // way, it is told to reconnect.
    let mut frames = 0;
    while slow.recv(Duration::from_secs(5)).await.is_some() {
        frames += 1;
    }
    assert_eq!(slow.close_code, Some(1013), "after {frames} frames");
    instance.shutdown().await.unwrap();
}

/// y-redis 0.1.6 reads a room's stream from `0` on its first subscription and
/// sends the whole backlog again; this server starts at the loaded document.
#[tokio::test]
async fn opening_a_room_does_not_replay_its_backlog() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let writer_instance = start(&config(Some(&redis), data.path())).await;
    let writer = YClient::connect(&url(&writer_instance, "backlog"))
        .await
        .unwrap();
    writer.wait_synced(SOON).await.unwrap();
    for i in 0..5 {
        writer.text_insert("t", i, "x");
    }
    let watcher = YClient::connect(&url(&writer_instance, "backlog"))
        .await
        .unwrap();
    watcher
        .wait_until("backlog written", SOON, |c| c.text("t") == "xxxxx")
        .await
        .unwrap();

    let fresh = start(&config(Some(&redis), data.path())).await;
    let mut reader = RawClient::connect(&url(&fresh, "backlog")).await.unwrap();
    let frames = reader.recv_all(Duration::from_millis(1500)).await;
    assert_eq!(
        frames.len(),
        2,
        "step 1 and step 2 only, no replay: {frames:?}"
    );
    writer_instance.shutdown().await.unwrap();
    fresh.shutdown().await.unwrap();
}

#[tokio::test]
async fn without_auth_an_offered_subprotocol_is_answered_with_its_first_entry() {
    let data = tempfile::tempdir().unwrap();
    let instance = start(&config(None, data.path())).await;
    let mut client = RawClient::connect_with_protocols(&url(&instance, "p"), "first, second")
        .await
        .unwrap();
    assert_eq!(client.recv(SOON).await.unwrap(), hex("00000100"));
    match RawClient::try_connect(&url(&instance, "p"), Some("only"))
        .await
        .unwrap()
    {
        testkit::Handshake::Accepted { protocol, client } => {
            assert_eq!(protocol.as_deref(), Some("only"));
            client.close().await;
        }
        testkit::Handshake::Refused { status, .. } => panic!("refused with {status}"),
    }
    client.close().await;
    instance.shutdown().await.unwrap();
}
