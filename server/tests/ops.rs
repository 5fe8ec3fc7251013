//! Operations endpoints: Prometheus metrics, liveness and readiness.

mod common;

use std::time::Duration;

use common::*;

/// The sample `name` of a `/metrics` text, parsed as `T`.
fn sample<T: std::str::FromStr>(metrics: &str, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
        .parse()
        .unwrap()
}

fn value(metrics: &str, name: &str) -> u64 {
    sample(metrics, name)
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    cfg.redis.task_debounce = 100;
    let instance = start(&cfg).await;
    let ops = format!("http://{}", instance.metrics_addr.expect("metrics served"));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{ops}{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);

    let a = YClient::connect(&url(&instance, "counted")).await.unwrap();
    let b = YClient::connect(&url(&instance, "counted")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "x");
    b.wait_until("edit", SOON, |c| c.text("t") == "x")
        .await
        .unwrap();
    eventually("compacted", SOON, || async {
        value(&get("/metrics").await.1, "yws_documents_stored_total") >= 1
    })
    .await;
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(value(&metrics, "yws_connections_open"), 2);
    assert_eq!(value(&metrics, "yws_connections_total"), 2);
    assert_eq!(value(&metrics, "yws_rooms_open"), 1);
    assert!(value(&metrics, "yws_messages_appended_total") >= 1);
    assert!(value(&metrics, "yws_messages_delivered_total") >= 2);
    assert!(value(&metrics, "yws_compactions_total") >= 1);
    drop(a);
    eventually("one connection left", SOON, || async {
        value(&get("/metrics").await.1, "yws_connections_open") == 1
    })
    .await;

    assert_eq!(
        value(&get("/metrics").await.1, "yws_redis_reconnects_total"),
        0
    );
    redis.stop();
    assert_eq!(get("/readyz").await.0, 503, "not ready without Redis");
    assert_eq!(get("/healthz").await.0, 200, "still alive");
    redis.restart().unwrap();
    eventually("ready again", SOON, || async {
        get("/readyz").await.0 == 200
    })
    .await;
    // The commands connection answered the readiness ping again.
    eventually(
        "the commands connection's reconnect counted",
        SOON,
        || async { value(&get("/metrics").await.1, "yws_redis_reconnects_total") >= 1 },
    )
    .await;
    // Connections are closed when Redis restarted; a client opening the room
    // again has the subscriber's reader connect anew.
    b.wait_until("closed for the restart", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    let c = YClient::connect(&url(&instance, "counted")).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    eventually("the reader's reconnect counted", SOON, || async {
        value(&get("/metrics").await.1, "yws_redis_reconnects_total") >= 2
    })
    .await;
    drop(c);
    instance.shutdown().await.unwrap();
}

/// A value that may be a float (histogram sums), as a float.
fn float(metrics: &str, name: &str) -> f64 {
    sample(metrics, name)
}

#[tokio::test]
async fn scripted_traffic_moves_counters_and_histograms_by_its_amounts() {
    const EDITS: u64 = 12;
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;

    let a = YClient::connect(&url(&instance, "measured")).await.unwrap();
    let b = YClient::connect(&url(&instance, "measured")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    // The sync answers settle before the edits are counted: each client answers
    // the server's step 1 with a step 2, appended as an update.
    let settled = |now: &str| {
        value(now, "yws_messages_appended_total") >= 2
            && value(now, "yws_stream_entries_read_total")
                == value(now, "yws_messages_appended_total")
            && value(now, "yws_append_seconds_count") == value(now, "yws_messages_appended_total")
    };
    let deadline = tokio::time::Instant::now() + SOON;
    let mut before = scrape(&instance).await;
    while !settled(&before) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "sync appends never settled:\n{before}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = scrape(&instance).await;
    }

    for n in 0..EDITS {
        a.text_insert("t", 0, &format!("{n};"));
    }
    b.wait_until("every edit", SOON, |c| {
        c.text("t").matches(';').count() == EDITS as usize
    })
    .await
    .unwrap();
    let read_before = value(&before, "yws_stream_entries_read_total");
    let deadline = tokio::time::Instant::now() + SOON;
    let mut after = scrape(&instance).await;
    while value(&after, "yws_stream_entries_read_total") < read_before + EDITS {
        assert!(
            tokio::time::Instant::now() < deadline,
            "entries never read:\n{after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        after = scrape(&instance).await;
    }
    let delta = |name: &str| value(&after, name) - value(&before, name);
    assert_eq!(delta("yws_messages_appended_total"), EDITS);
    assert_eq!(
        delta("yws_append_seconds_count"),
        EDITS,
        "one observation per append"
    );
    assert_eq!(
        float(&after, "yws_read_batch_entries_sum") - float(&before, "yws_read_batch_entries_sum"),
        EDITS as f64,
        "read batch sizes add up to the entries read"
    );
    assert!(delta("yws_read_batch_entries_count") >= 1);
    assert!(delta("yws_delivery_lag_seconds_count") >= 1);
    assert!(delta("yws_delivery_lag_seconds_count") <= EDITS);
    assert_eq!(delta("yws_append_errors_total"), 0);

    let client_closed = "yws_connections_closed_total{reason=\"client\"}";
    let closed_before = value(&after, client_closed);
    drop(b);
    eventually("the departure counted", SOON, || async {
        value(&scrape(&instance).await, client_closed) == closed_before + 1
    })
    .await;
    let last = scrape(&instance).await;
    assert_eq!(value(&last, "yws_connections_open"), 1);
    assert_eq!(value(&last, "yws_connections_total"), 2);
    assert_eq!(value(&last, "yws_rooms_open"), 1);
    assert_eq!(
        value(&last, "yws_connections_closed_total{reason=\"shutdown\"}"),
        0
    );
    drop(a);
    instance.shutdown().await.unwrap();
}

/// The storage series of the fs backend for `operation`.
fn storage_series(name: &str, operation: &str) -> String {
    format!("{name}{{backend=\"fs\",operation=\"{operation}\"}}")
}

#[tokio::test]
async fn storage_calls_are_timed_and_their_failures_counted() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().join("documents");
    let redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), &dir);
    cfg.metrics.port = Some(0);
    cfg.redis.task_debounce = 100;
    let instance = start(&cfg).await;
    let calls = |text: &str, operation: &str| {
        value(
            text,
            &storage_series("yws_storage_operation_seconds_count", operation),
        )
    };
    let errors = |text: &str, operation: &str| {
        value(text, &storage_series("yws_storage_errors_total", operation))
    };

    // Exported before the first call.
    let first = scrape(&instance).await;
    for operation in ["load", "put", "delete", "state_vector"] {
        assert_eq!(errors(&first, operation), 0, "{first}");
    }
    assert_eq!(calls(&first, "put"), 0, "{first}");

    // A worker pass: the client's initial sync and the worker load, the
    // worker puts.
    let a = YClient::connect(&url(&instance, "kept")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "x");
    eventually("compacted", SOON, || async {
        value(&scrape(&instance).await, "yws_documents_stored_total") >= 1
    })
    .await;
    let stored = scrape(&instance).await;
    assert!(calls(&stored, "put") >= 1, "{stored}");
    assert!(calls(&stored, "load") >= 2, "{stored}");
    for operation in ["load", "put", "delete", "state_vector"] {
        assert_eq!(errors(&stored, operation), 0, "{stored}");
    }
    drop(a);

    // The storage directory becomes unusable: a file stands where it was, so
    // loading a document fails and the client is refused.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::write(&dir, b"not a directory").unwrap();
    let before = scrape(&instance).await;
    let b = YClient::connect(&url(&instance, "unusable")).await.unwrap();
    b.wait_until("refused", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(b.closed(), Some(1011));
    let after = scrape(&instance).await;
    assert!(
        errors(&after, "load") > errors(&before, "load"),
        "{before}\n{after}"
    );
    assert!(calls(&after, "load") >= errors(&after, "load"), "{after}");
    instance.shutdown().await.unwrap();
}

/// Bytes of a WebSocket frame carrying `payload` bytes (client frames are
/// masked).
fn frame_len(payload: usize, masked: bool) -> u64 {
    let header = match payload {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    };
    (header + if masked { 4 } else { 0 } + payload) as u64
}

#[tokio::test]
async fn bytes_in_and_out_are_counted_to_the_byte() {
    use testkit::client::sync_message;
    use yrs::{ReadTxn, StateVector, Text, Transact};

    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    // The counters move right after the bytes went: wait for them to reach
    // what the clients saw, then check they did not pass it.
    let settled = |name: &'static str, expected: u64| {
        let instance = &instance;
        async move {
            let deadline = tokio::time::Instant::now() + SOON;
            loop {
                let now = value(&scrape(instance).await, name);
                if now >= expected || tokio::time::Instant::now() > deadline {
                    assert_eq!(now, expected, "{name}");
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let first = scrape(&instance).await;
    assert_eq!(value(&first, "yws_received_bytes_total"), 0);
    assert_eq!(value(&first, "yws_sent_bytes_total"), 0);

    // Each client gets the initial sync, step 1 and step 2; it sends nothing.
    let room = url(&instance, "bytes");
    let mut a = RawClient::connect(&room).await.unwrap();
    let mut b = RawClient::connect(&room).await.unwrap();
    let mut sent = 0;
    for client in [&mut a, &mut b] {
        for _ in 0..2 {
            let frame = client.recv(SOON).await.expect("initial sync");
            sent += frame_len(frame.len(), false);
        }
    }
    settled("yws_sent_bytes_total", sent).await;
    settled("yws_received_bytes_total", 0).await;

    // One update from `a`, a large one from `b`: appended and delivered to
    // both.
    let mut received = 0;
    for (text, from_a) in [("hello".to_string(), true), ("y".repeat(300), false)] {
        let doc = yrs::Doc::new();
        let t = doc.get_or_insert_text("t");
        t.insert(&mut doc.transact_mut(), 0, &text);
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let message = sync_message(2, &update);
        let sender = if from_a { &mut a } else { &mut b };
        sender.send(&message).await.unwrap();
        received += frame_len(message.len(), true);
        let to_a = a.recv(SOON).await.expect("delivered to a");
        let to_b = b.recv(SOON).await.expect("delivered to b");
        assert_eq!(to_a, to_b);
        sent += 2 * frame_len(to_a.len(), false);
    }
    settled("yws_received_bytes_total", received).await;
    settled("yws_sent_bytes_total", sent).await;
    a.close().await;
    b.close().await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_client_that_stops_reading_deepens_the_queue_gauge() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    let room = url(&instance, "deep");

    let mut slow = RawClient::connect_slow(&room).await.unwrap();
    slow.recv_all(Duration::from_millis(200)).await;
    // From now on `slow` reads nothing.
    let writer = YClient::connect(&room).await.unwrap();
    let watcher = YClient::connect(&room).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    watcher.wait_synced(SOON).await.unwrap();
    // The gauge is the deepest since the previous scrape.
    scrape(&instance).await;
    assert_eq!(
        value(&scrape(&instance).await, "yws_connection_queue_deepest"),
        0,
        "nothing queued between two scrapes"
    );
    outpace_a_slow_reader(&writer, &watcher).await;
    let deepest = value(&scrape(&instance).await, "yws_connection_queue_deepest");
    assert!(deepest > 0, "{deepest}");
    drop((slow, writer, watcher));
    instance.shutdown().await.unwrap();
}
