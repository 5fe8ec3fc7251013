//! Group f, defect tolerance: Rust instances running next to y-redis 0.1.6
//! JavaScript instances are not hurt by its defects — awareness stays right for
//! the Rust server's clients while a JavaScript server merges the same stream
//! (phantom entries, lost removals), a client reading only the first message of
//! the JavaScript server's concatenated frames still converges, and a poison
//! entry written through a JavaScript server neither stops the Rust server nor
//! the Rust worker (the JavaScript server itself may crash on it).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{bail, Result};
use conformance::wire;
use conformance::{content, dump, Fleet, Lang, Sidecar, Storage};
use redis::aio::MultiplexedConnection;
use serde_json::json;
use testkit::client::{awareness_message, sync_message};
use testkit::{RawClient, YClient};
use yrs::{Doc, GetString, ReadTxn, Text, Transact};

const SOON: Duration = Duration::from_secs(10);
/// `00 01 01 00` sent to a JS server lands in the stream as this (defect 4).
const POISON_ENTRY: &str = "00020100";

/// Wait until the stream `key` holds the poison entry (`present`) or no longer
/// holds it.
async fn wait_poison(
    conn: &mut MultiplexedConnection,
    key: &str,
    present: bool,
    timeout: Duration,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let values = stream_values(conn, key).await?;
        if values.iter().any(|v| v == POISON_ENTRY) == present {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "after {timeout:?} the poison entry is still {}; stream: {values:?}",
                if present { "missing" } else { "there" }
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `m` values of a stream, hex.
async fn stream_values(conn: &mut MultiplexedConnection, key: &str) -> Result<Vec<String>> {
    let raw = dump::read(conn).await?;
    Ok(match raw.keys.get(key) {
        Some(dump::RawKey::Stream { entries, .. }) => entries
            .iter()
            .flat_map(|e| e.fields.iter().map(|(_, v)| hex::encode(v)))
            .collect(),
        _ => Vec::new(),
    })
}

/// Awareness states a Rust client knows, as parsed JSON.
fn states(client: &YClient) -> HashMap<u64, serde_json::Value> {
    client
        .awareness()
        .into_iter()
        .map(|(id, s)| (id, serde_json::from_str(&s).unwrap_or_default()))
        .collect()
}

/// Rust clients of a Rust server keep exactly the live awareness states of the
/// room while a JavaScript server relays the same stream to its own clients (with
/// phantom entries and without removals): no extra client appears, and clients
/// that leave on either side disappear.
#[tokio::test]
async fn rust_clients_awareness_stays_exact_beside_a_js_server() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .unwrap();
    let sidecar = Sidecar::start().unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let room = "presence";

    let mut r1 = YClient::connect(&rust.url(room)).await.unwrap();
    let mut r2 = YClient::connect(&rust.url(room)).await.unwrap();
    r1.wait_synced(SOON).await.unwrap();
    r2.wait_synced(SOON).await.unwrap();
    let j1 = sidecar
        .open_client("j1", &js.ws_base(), room, None)
        .await
        .unwrap();
    let mut raw = RawClient::connect(&js.url(room)).await.unwrap();

    // Bursts, so that stream reads return several entries at once: the JS
    // server merges them (phantom entry included) for its own clients.
    r1.set_awareness(r#"{"user":"r1"}"#).unwrap();
    r1.text_insert("t", 0, "typing");
    r1.set_awareness(r#"{"user":"r1","cursor":6}"#).unwrap();
    j1.set_awareness(json!({"user": "j1"})).await.unwrap();
    r2.set_awareness(r#"{"user":"r2"}"#).unwrap();
    raw.send(&awareness_message(&[(777, 1, r#"{"user":"raw"}"#)]))
        .await
        .unwrap();
    raw.send(&awareness_message(&[(778, 1, r#"{"user":"gone soon"}"#)]))
        .await
        .unwrap();
    raw.send(&awareness_message(&[(778, 2, "null")]))
        .await
        .unwrap();
    raw.send(&sync_message(2, &{
        let doc = Doc::with_client_id(99);
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "x");
        content::state_v1(&doc)
    }))
    .await
    .unwrap();

    let j1_id = *j1
        .awareness()
        .await
        .unwrap()
        .iter()
        .find(|(_, s)| s["user"] == "j1")
        .map(|(id, _)| id)
        .expect("j1 knows its own state");
    let r1_id = r1.doc.client_id().get();
    let r2_id = r2.doc.client_id().get();
    let expected: HashMap<u64, serde_json::Value> = [
        (r1_id, json!({"user":"r1","cursor":6})),
        (r2_id, json!({"user":"r2"})),
        (j1_id, json!({"user":"j1"})),
        (777, json!({"user":"raw"})),
    ]
    .into_iter()
    .collect();
    for client in [&r1, &r2] {
        client
            .wait_until("every live state", SOON, |c| states(c) == expected)
            .await
            .unwrap_or_else(|e| panic!("{e}; states {:?}", states(client)));
    }

    // Leaving on the JS side: j1's provider closes, the raw client closes (the JS
    // server announces the first awareness client it remembered, 777).
    j1.close().await.unwrap();
    raw.close().await;
    let mut remaining = expected.clone();
    remaining.remove(&j1_id);
    remaining.remove(&777);
    for client in [&r1, &r2] {
        client
            .wait_until("the JS side's departures", SOON, |c| states(c) == remaining)
            .await
            .unwrap_or_else(|e| panic!("{e}; states {:?}", states(client)));
    }

    // A late joiner of the Rust server gets the live states from the stream.
    let r3 = YClient::connect(&rust.url(room)).await.unwrap();
    r3.wait_synced(SOON).await.unwrap();
    r3.wait_until("the initial awareness", SOON, |c| states(c) == remaining)
        .await
        .unwrap_or_else(|e| panic!("{e}; states {:?}", states(&r3)));
    assert_eq!(r3.content(), r1.content());
    let ids: HashSet<u64> = states(&r1).keys().copied().collect();
    assert_eq!(ids, [r1_id, r2_id].into_iter().collect());
}

/// The JS server concatenates a merged batch into one frame; a client reading
/// only the first message of each frame (as y-websocket clients do, and as
/// `YClient` does) still converges, because the update comes first.
#[tokio::test]
async fn first_message_readers_converge_on_concatenated_frames() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let room = "concat";

    let reader = YClient::connect(&js.url(room)).await.unwrap();
    reader.wait_synced(SOON).await.unwrap();
    let mut watcher = RawClient::connect(&js.url(room)).await.unwrap();
    watcher.recv_all(Duration::from_millis(300)).await;
    // The stream exists once the Rust server appended a first update.
    let mut writer = YClient::connect(&rust.url(room)).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "start ");
    writer.set_awareness(r#"{"user":"writer"}"#).unwrap();
    let mut conn = fleet.redis().connection().await.unwrap();
    let key = "y:room:concat:index";

    // Bursts of two updates and an awareness message, added to the stream at
    // once, so that the JS server reads (and merges) them in one batch.
    let doc = Doc::with_client_id(4242);
    let text = doc.get_or_insert_text("a-text");
    let mut concatenated = 0;
    for round in 0..5u64 {
        let mut burst = redis::pipe();
        burst.atomic();
        for piece in ["a", "b"] {
            let before = doc.transact().state_vector();
            {
                let mut txn = doc.transact_mut();
                let len = text.len(&txn);
                text.insert(&mut txn, len, &format!("{piece}{round} "));
            }
            let update = doc.transact().encode_state_as_update_v1(&before);
            burst
                .cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("m")
                .arg(sync_message(2, &update));
        }
        burst
            .cmd("XADD")
            .arg(key)
            .arg("*")
            .arg("m")
            .arg(awareness_message(&[(4242, round + 1, r#"{"user":"w"}"#)]));
        let _: () = burst.query_async(&mut conn).await.unwrap();
        let frames = watcher.recv_all(Duration::from_millis(300)).await;
        concatenated += frames
            .iter()
            .filter(|f| wire::split_frame(f).len() > 1)
            .count();
    }
    // Frames of the last bursts may still be on their way.
    let deadline = tokio::time::Instant::now() + SOON;
    while concatenated < 5 && tokio::time::Instant::now() < deadline {
        let frames = watcher.recv_all(Duration::from_millis(200)).await;
        concatenated += frames
            .iter()
            .filter(|f| wire::split_frame(f).len() > 1)
            .count();
    }
    assert!(
        concatenated >= 5,
        "the JS server sent {concatenated} concatenated frames for 5 bursts"
    );
    writer.text_insert("t", 6, "end");
    let burst_text = text.get_string(&doc.transact());
    assert!(burst_text.starts_with("a0 b0 a1 b1"), "{burst_text}");
    reader
        .wait_until("every update", SOON, |c| {
            c.text("t") == "start end" && c.text("a-text") == burst_text
        })
        .await
        .unwrap();
}

/// A poison entry (`00 01 01 00` sent to a JS server, stored as `00 02 01 00`):
/// the Rust server keeps serving the room (new clients get valid content, live
/// updates still flow), the Rust worker still compacts and trims the stream, and
/// once trimmed every server can load the room again. The JS server itself
/// exits when a client opens the poisoned room on it (defect 4); that is
/// tolerated and reported, not asserted.
#[tokio::test]
async fn poison_from_a_js_server_does_not_stop_rust_server_or_worker() {
    let mut fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .rust_workers(1)
        .storage(Storage::Postgres)
        .env("REDIS_TASK_DEBOUNCE", "500")
        .env("REDIS_MIN_MESSAGE_LIFETIME", "1000")
        .start()
        .await
        .unwrap();
    let room = "poisoned";
    let key = "y:room:poisoned:index";
    let rust_url = fleet.server(Lang::Rust, 0).unwrap().url(room);
    let js_url = fleet.server(Lang::Js, 0).unwrap().url(room);
    let mut conn = fleet.redis().connection().await.unwrap();

    let a = YClient::connect(&rust_url).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "before ");
    let mut poisoner = RawClient::connect(&js_url).await.unwrap();
    poisoner.recv_all(Duration::from_millis(200)).await;
    poisoner.send(&[0, 1, 1, 0]).await.unwrap();
    wait_poison(&mut conn, key, true, SOON).await.unwrap();
    a.text_insert("t", 7, "after");
    a.map_set("m", "k", 1.0);

    // New clients of the Rust server get everything valid.
    let b = YClient::connect(&rust_url).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    b.wait_until("a's edits", SOON, |c| c.content() == a.content())
        .await
        .unwrap();
    assert_eq!(b.text("t"), "before after");
    // Live updates still flow to existing clients.
    b.array_push("a", "from b");
    a.wait_until("b's edit", SOON, |c| c.content() == b.content())
        .await
        .unwrap();

    // The JS server is likely to exit when a client opens the poisoned room.
    let opened = RawClient::connect(&js_url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let js_status = fleet.server(Lang::Js, 0).unwrap().exit_status();
    println!(
        "JS server after opening the poisoned room: {}",
        js_status.map_or("still running".to_string(), |s| format!("exited ({s})"))
    );
    drop(opened);

    // The Rust worker compacts the room and trims the poison away.
    wait_poison(&mut conn, key, false, Duration::from_secs(20))
        .await
        .unwrap();
    let stored = fleet
        .postgres()
        .unwrap()
        .psql("SELECT count(*) FROM yredis_docs_v1 WHERE room = 'poisoned' AND doc = 'index'")
        .unwrap();
    assert_eq!(stored.trim(), "1", "one stored document");
    assert!(fleet.worker(Lang::Rust, 0).unwrap().is_running());

    // After the trim every server serves the room from storage: the Rust server,
    // and a JS server (restarted if the poison killed it).
    let c = YClient::connect(&rust_url).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    c.wait_until("the stored content", SOON, |c| c.content() == a.content())
        .await
        .unwrap();
    if js_status.is_some() {
        fleet
            .add(Lang::Js, conformance::Role::Server)
            .await
            .unwrap();
    }
    let js = fleet
        .servers(Lang::Js)
        .into_iter()
        .find(|m| m.is_running())
        .unwrap();
    let d = YClient::connect(&js.url(room)).await.unwrap();
    d.wait_synced(SOON).await.unwrap();
    d.wait_until("the stored content via JS", SOON, |c| {
        c.content() == a.content()
    })
    .await
    .unwrap();
    assert!(fleet.server(Lang::Rust, 0).unwrap().is_running());
}
