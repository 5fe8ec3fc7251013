//! Compaction into storage: trimming, restarts, poisoned entries, FLUSHALL.

mod common;

use std::time::Duration;

use common::*;

fn fast(config: &mut websocket::config::Config) {
    config.redis.task_debounce = 200;
    config.redis.min_message_lifetime = 500;
}

#[tokio::test]
async fn worker_compacts_trims_and_a_restart_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let server = start_roles(&cfg, true, false).await;
    let worker = start_roles(&cfg, false, true).await;
    let key = "y:room:compact:index";
    let conn = redis_conn(&redis).await;

    let writer = YClient::connect(&url(&server, "compact")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "hello");
    writer.map_set("m", "k", 1.0);
    writer.array_push("a", "x");
    eventually("stored in the filesystem", SOON, || async {
        !stored_files(data.path(), "compact").is_empty()
    })
    .await;
    // Entries older than the lifetime are trimmed once stored.
    eventually("stream trimmed", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await == 0 }
    })
    .await;
    let reader = YClient::connect(&url(&server, "compact")).await.unwrap();
    reader.wait_synced(SOON).await.unwrap();
    assert_eq!(reader.content(), writer.content());

    // More edits, then everything stops and starts again.
    writer.text_insert("t", 5, " world");
    reader
        .wait_until("the new edit", SOON, |c| c.text("t") == "hello world")
        .await
        .unwrap();
    drop(reader);
    let expected = writer.content();
    drop(writer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
    let server = start_roles(&cfg, true, false).await;
    let worker = start_roles(&cfg, false, true).await;
    let reopened = YClient::connect(&url(&server, "compact")).await.unwrap();
    reopened.wait_synced(SOON).await.unwrap();
    assert_eq!(reopened.content(), expected);
    assert_eq!(reopened.text("t"), "hello world");

    // Once compacted again and idle, the old items are replaced by one.
    eventually("one stored item", SOON, || async {
        stored_files(data.path(), "compact").len() == 1
    })
    .await;
    server.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn poisoned_entries_are_skipped_by_server_and_worker() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let instance = start(&cfg).await;
    let key = "y:room:poison:index";
    let mut conn = redis_conn(&redis).await;

    let writer = YClient::connect(&url(&instance, "poison")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "valid");
    eventually("update appended", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await >= 2 }
    })
    .await;
    // Anyone can write anything into a stream: y-redis 0.1.6 appends this one.
    let poison: Vec<u8> = hex("00020100");
    let _: String = redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("m")
        .arg(poison.as_slice())
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg(key)
        .arg("*")
        .arg("other")
        .arg("field")
        .query_async(&mut conn)
        .await
        .unwrap();
    writer
        .wait_until("still connected", Duration::from_millis(500), |c| {
            c.closed().is_some()
        })
        .await
        .ok();
    assert_eq!(writer.closed(), None, "live clients survive the poison");

    let opener = YClient::connect(&url(&instance, "poison")).await.unwrap();
    opener.wait_synced(SOON).await.unwrap();
    assert_eq!(opener.text("t"), "valid");

    eventually("compacted and trimmed past the poison", SOON, || {
        let mut conn = conn.clone();
        let data = data.path().to_path_buf();
        async move { !stored_files(&data, "poison").is_empty() && xlen(&mut conn, key).await == 0 }
    })
    .await;
    let late = YClient::connect(&url(&instance, "poison")).await.unwrap();
    late.wait_synced(SOON).await.unwrap();
    assert_eq!(late.text("t"), "valid");
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn worker_recovers_from_flushall() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let instance = start(&cfg).await;

    let client = YClient::connect(&url(&instance, "before")).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "x");
    eventually("stored", SOON, || async {
        !stored_files(data.path(), "before").is_empty()
    })
    .await;
    drop(client);

    assert!(redis.cli(&["FLUSHALL"]).unwrap().contains("OK"));
    let mut conn = redis_conn(&redis).await;
    eventually(
        "worker group recreated within 2 s",
        Duration::from_secs(2),
        || {
            let redis = &redis;
            async move {
                redis
                    .cli(&["XINFO", "GROUPS", "y:worker"])
                    .map(|out| out.contains("y:worker"))
                    .unwrap_or(false)
            }
        },
    )
    .await;
    let _ = &mut conn;

    let after = YClient::connect(&url(&instance, "after")).await.unwrap();
    after.wait_synced(SOON).await.unwrap();
    after.text_insert("t", 0, "y");
    eventually("compaction resumed", SOON, || async {
        !stored_files(data.path(), "after").is_empty()
    })
    .await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn servers_keep_working_after_clean_redis_script() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let instance = start(&cfg).await;
    let client = YClient::connect(&url(&instance, "cleaned")).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "one");
    eventually("stored", SOON, || async {
        !stored_files(data.path(), "cleaned").is_empty()
    })
    .await;

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/clean_redis.sh");
    let output = std::process::Command::new("bash")
        .args([script, "--url", &redis.url(), "--prefix", "y"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("deleted"));
    assert_eq!(redis.cli(&["DBSIZE"]).unwrap().trim(), "0");

    // Connected clients keep editing; new clients get the stored document.
    client.text_insert("t", 3, " two");
    let other = YClient::connect(&url(&instance, "cleaned")).await.unwrap();
    other.wait_synced(SOON).await.unwrap();
    other
        .wait_until("both edits", SOON, |c| c.text("t") == "one two")
        .await
        .unwrap();
    eventually("compaction resumed", SOON, || async {
        redis
            .cli(&["XINFO", "GROUPS", "y:worker"])
            .map(|out| out.contains("y:worker"))
            .unwrap_or(false)
    })
    .await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn update_callback_receives_each_compacted_document() {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, Uri};
    use std::sync::{Arc, Mutex};
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};

    /// Path, content type and body of each request.
    type Request = (String, String, Vec<u8>);
    let received: Arc<Mutex<Vec<Request>>> = Arc::default();
    let sink = Arc::clone(&received);
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap, body: Bytes| {
        let sink = Arc::clone(&sink);
        async move {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            sink.lock()
                .unwrap()
                .push((uri.path().to_string(), content_type, body.to_vec()));
            "ok"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let callback = format!("http://{}/callback", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    cfg.worker.update_callback = Some(callback);
    let instance = start(&cfg).await;
    let client = YClient::connect(&url(&instance, "cb-room")).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "called back");
    eventually("callback called", SOON, || {
        let received = Arc::clone(&received);
        async move { !received.lock().unwrap().is_empty() }
    })
    .await;
    let (path, content_type, body) = received.lock().unwrap()[0].clone();
    assert_eq!(path, "/callback/cb-room");
    let boundary = content_type
        .split("boundary=")
        .nth(1)
        .expect("multipart boundary")
        .to_string();
    let text = String::from_utf8_lossy(&body).into_owned();
    assert!(text.contains("name=\"ydoc\""), "{text}");
    let start = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("part headers")
        + 4;
    let end_marker = format!("\r\n--{boundary}--");
    let end = body
        .windows(end_marker.len())
        .rposition(|w| w == end_marker.as_bytes())
        .expect("closing boundary");
    let doc = yrs::Doc::new();
    doc.transact_mut()
        .apply_update(yrs::Update::decode_v2(&body[start..end]).unwrap())
        .unwrap();
    let t = doc.get_or_insert_text("t");
    assert_eq!(t.get_string(&doc.transact()), "called back");
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn several_workers_share_the_queue() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let server = start_roles(&cfg, true, false).await;
    let workers = [
        start_roles(&cfg, false, true).await,
        start_roles(&cfg, false, true).await,
    ];
    let mut clients = Vec::new();
    for i in 0..12 {
        let client = YClient::connect(&url(&server, &format!("shared-{i}")))
            .await
            .unwrap();
        client.wait_synced(SOON).await.unwrap();
        client.text_insert("t", 0, &format!("doc {i}"));
        clients.push(client);
    }
    let mut conn = redis_conn(&redis).await;
    for i in 0..12 {
        let room = format!("shared-{i}");
        eventually(&format!("{room} stored once and trimmed"), SOON, || {
            let mut conn = conn.clone();
            let data = data.path().to_path_buf();
            let room = room.clone();
            async move {
                stored_files(&data, &room).len() == 1
                    && xlen(&mut conn, &format!("y:room:{room}:index")).await == 0
            }
        })
        .await;
    }
    // Both workers took part: each consumer has claimed something by now.
    let consumers = redis
        .cli(&["XINFO", "CONSUMERS", "y:worker", "y:worker"])
        .unwrap();
    let named: Vec<&str> = consumers
        .lines()
        .collect::<Vec<_>>()
        .windows(2)
        .filter(|w| w[0] == "name" && w[1] != "pending")
        .map(|w| w[1])
        .collect();
    assert_eq!(named.len(), 2, "two worker consumers: {consumers}");
    for (i, client) in clients.iter().enumerate() {
        let reopened = YClient::connect(&url(&server, &format!("shared-{i}")))
            .await
            .unwrap();
        reopened.wait_synced(SOON).await.unwrap();
        assert_eq!(reopened.text("t"), client.text("t"));
    }
    let _ = &mut conn;
    server.shutdown().await.unwrap();
    for worker in workers {
        worker.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn a_corrupt_stored_item_is_skipped_and_kept() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    fast(&mut cfg);
    let instance = start(&cfg).await;
    let writer = YClient::connect(&url(&instance, "corrupt")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "good");
    eventually("stored", SOON, || async {
        stored_files(data.path(), "corrupt").len() == 1
    })
    .await;
    let garbage = data
        .path()
        .join("corrupt/index/00000000-0000-4000-8000-000000000000");
    std::fs::write(&garbage, b"\xff\xff not a v2 update").unwrap();

    let reader = YClient::connect(&url(&instance, "corrupt")).await.unwrap();
    reader.wait_synced(SOON).await.unwrap();
    assert_eq!(reader.text("t"), "good");
    writer.text_insert("t", 4, "!");
    reader
        .wait_until("new edit", SOON, |c| c.text("t") == "good!")
        .await
        .unwrap();
    // Compaction goes on and leaves the unreadable item where it is.
    eventually("compacted again", SOON, || async {
        let files = stored_files(data.path(), "corrupt");
        files.len() == 2 && files.iter().any(|f| f.starts_with("00000000"))
    })
    .await;
    assert!(garbage.exists());
    drop(reader);
    let late = YClient::connect(&url(&instance, "corrupt")).await.unwrap();
    late.wait_synced(SOON).await.unwrap();
    assert_eq!(late.text("t"), "good!");
    instance.shutdown().await.unwrap();
}

/// Compact every task of `streams` now, with `worker`.
async fn compact_queued(
    streams: &websocket::streams::RedisStreams,
    worker: &websocket::worker::Worker<websocket::streams::RedisStreams>,
) -> usize {
    use websocket::streams::TaskQueue;
    let tasks = streams
        .claim_tasks("history-test", Duration::ZERO, 10)
        .await
        .unwrap();
    for task in &tasks {
        worker.compact(task).await.unwrap();
    }
    tasks.len()
}

fn text_of(update: &[u8]) -> String {
    use yrs::updates::decoder::Decode;
    use yrs::{GetString, Transact};
    let doc = yrs::Doc::new();
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    txn.apply_update(yrs::Update::decode_v2(update).unwrap())
        .unwrap();
    text.get_string(&txn)
}

/// With history on, each compaction that changed the document keeps the
/// stored state as the next version (1, 2, ...); one that changed nothing keeps
/// none. With history off, no versions at all.
#[tokio::test]
async fn changed_compactions_keep_versions_when_history_is_on() {
    use std::sync::Arc;
    use websocket::storage::memory::MemoryStorage;
    use websocket::storage::{Retention, Storage};
    use websocket::streams::{Append, RedisStreams, TaskQueue};
    use websocket::worker::{Worker, WorkerSettings};
    use yrs::{ReadTxn, Text, Transact};

    let redis = RedisServer::start().unwrap();
    for history in [true, false] {
        let prefix = if history { "on" } else { "off" };
        let streams = Arc::new(RedisStreams::connect(&redis.url(), prefix).await.unwrap());
        streams.ensure_worker_group().await.unwrap();
        let storage = Arc::new(MemoryStorage::new());
        let worker = Worker::new(
            streams.clone(),
            storage.clone() as Arc<dyn Storage>,
            WorkerSettings {
                task_debounce: Duration::ZERO,
                // Nothing is trimmed, so a later pass sees the same entries.
                min_message_lifetime: Duration::from_secs(3600),
                update_callback: None,
                history: history.then_some(Retention {
                    keep_all_ms: 3_600_000,
                    hourly_ms: 0,
                    daily_ms: Some(0),
                }),
            },
        );
        let key = format!("{prefix}:room:hist:index");
        let doc = yrs::Doc::with_client_id(1);
        let text = doc.get_or_insert_text("t");
        let edit = |at: u32, chunk: &str| {
            let before = doc.transact().state_vector();
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, at, chunk);
            drop(txn);
            doc.transact().encode_state_as_update_v1(&before)
        };

        let first = edit(0, "one");
        streams
            .append(&key, &websocket::protocol::encode_sync_update(&first))
            .await
            .unwrap();
        assert_eq!(compact_queued(&streams, &worker).await, 1);
        let second = edit(3, " two");
        streams
            .append(&key, &websocket::protocol::encode_sync_update(&second))
            .await
            .unwrap();
        assert_eq!(compact_queued(&streams, &worker).await, 1);
        // The same entries again: the document is unchanged.
        assert_eq!(compact_queued(&streams, &worker).await, 1);

        let stored = storage.load("hist", "index").await.unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(text_of(&stored[0].update), "one two");
        let versions = storage.versions("hist", "index").await.unwrap();
        if !history {
            assert!(versions.is_empty(), "history off: {versions:?}");
            assert!(storage.documents_with_history().await.unwrap().is_empty());
            continue;
        }
        let numbers: Vec<u64> = versions.iter().map(|v| v.version).collect();
        assert_eq!(numbers, [1, 2], "{versions:?}");
        assert!(versions[0].timestamp <= versions[1].timestamp);
        assert!(versions[1].timestamp <= now_ms());
        assert!(versions.iter().all(|v| v.name.is_none()));
        let mut texts = Vec::new();
        for n in [1, 2] {
            let loaded = storage.load_version("hist", "index", n).await.unwrap();
            texts.push(text_of(&loaded.unwrap()));
        }
        assert_eq!(texts, ["one", "one two"]);
        // The latest version is the stored state byte for byte.
        assert_eq!(
            storage.load_version("hist", "index", 2).await.unwrap(),
            Some(stored[0].update.clone())
        );
    }
}
