//! Processes killed under load, and many connections at once: an instance
//! SIGKILLed under editing clients, a worker SIGKILLed in the middle of a
//! compaction, and a connection storm. Each prints its figure (run with
//! `--nocapture` to see it).

mod common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_port, open_at_once, ServiceProcess};
use websocket::protocol::encode_sync_update;
use websocket::storage::{open_storage, Storage};
use websocket::streams::{stream_key, Append, RedisStreams};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, Transact, Update};

/// The `websocket` binary with the test's Redis and `fs` storage, its output
/// discarded unless `TESTKIT_VERBOSE` is set.
fn binary(redis: &RedisServer, data: &std::path::Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command
        .args(args)
        .env("REDIS_URL", redis.url())
        .env_remove("REDIS")
        .env("STORAGE_BACKEND", "fs")
        .env("STORAGE_DIR", data)
        .env("WS_HOST", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    command
}

/// The keys of map `m` in what storage holds for `room`.
async fn stored_keys(storage: &Arc<dyn Storage>, room: &str) -> BTreeSet<String> {
    let doc = Doc::new();
    for item in storage.load(room, "index").await.expect("storage loads") {
        let update = Update::decode_v2(&item.update).expect("stored item decodes");
        doc.transact_mut()
            .apply_update(update)
            .expect("stored item applies");
    }
    keys(&doc)
}

/// The keys of map `m` of a document.
fn keys(doc: &Doc) -> BTreeSet<String> {
    let m = doc.get_or_insert_map("m");
    let txn = doc.transact();
    m.keys(&txn).map(str::to_string).collect()
}

/// Clients editing through both instances.
const EDITORS: usize = 6;
/// Edits each client makes before the kill, at least, and after it.
const EDITS: usize = 20;

#[tokio::test]
async fn an_instance_killed_under_editing_clients_loses_no_edit() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let mut command = binary(&redis, data.path(), &["serve", "--no-worker"]);
    command.env("WS_PORT", port.to_string());
    let mut doomed = ServiceProcess::spawn("websocket", command).unwrap();
    doomed.wait_listening(port, SOON).unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.redis.task_debounce = 300;
    cfg.redis.min_message_lifetime = 500;
    let survivor = start_roles(&cfg, true, false).await;
    let worker = start_roles(&cfg, false, true).await;
    let doomed_url = format!("ws://127.0.0.1:{port}/killed");
    let survivor_url = url(&survivor, "killed");

    // Even clients on the instance that is killed, odd ones on the other. Each
    // edits until the kill and then makes EDITS more; one that loses its
    // connection keeps editing its document and reconnects to the survivor
    // with it, as a y-websocket provider does.
    let killed = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..EDITORS {
        let first_url = if i % 2 == 0 {
            &doomed_url
        } else {
            &survivor_url
        };
        let client = YClient::connect(first_url).await.unwrap();
        client.wait_synced(SOON).await.unwrap();
        let survivor_url = survivor_url.clone();
        let killed = Arc::clone(&killed);
        tasks.push(tokio::spawn(async move {
            let mut client = client;
            let mut n = 0;
            let mut after = 0;
            let mut reconnected = false;
            while after < EDITS {
                client.map_set("m", &format!("{i}.{n}"), true);
                n += 1;
                if killed.load(Ordering::SeqCst) {
                    after += 1;
                }
                if client.closed().is_some() {
                    let doc = client.doc.clone();
                    drop(client);
                    client = YClient::connect_with(&survivor_url, doc, None)
                        .await
                        .unwrap();
                    client.wait_synced(SOON).await.unwrap();
                    reconnected = true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (n, reconnected, client)
        }));
    }
    // Kill while edits flow through both instances: once an edit from each
    // side reached the other.
    let probe = YClient::connect(&survivor_url).await.unwrap();
    probe
        .wait_until("edits from both instances", SOON, |c| {
            let m = c.content()["m"].clone();
            (0..EDITORS).all(|i| m.get(format!("{i}.{EDITS}")).is_some())
        })
        .await
        .unwrap();
    doomed.kill();
    killed.store(true, Ordering::SeqCst);

    let mut expected = BTreeSet::new();
    let mut clients = Vec::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let (n, reconnected, client) = task.await.unwrap();
        assert_eq!(reconnected, i % 2 == 0, "client {i} reconnected");
        expected.extend((0..n).map(|e| format!("{i}.{e}")));
        clients.push(client);
    }
    for (i, client) in clients.iter().enumerate() {
        client
            .wait_until(&format!("client {i} holds every edit"), SOON, |c| {
                keys(&c.doc) == expected
            })
            .await
            .unwrap();
    }
    let storage = open_storage(&cfg.storage).await.unwrap();
    let deadline = Instant::now() + SOON;
    let mut stored = stored_keys(&storage, "killed").await;
    while stored != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = stored_keys(&storage, "killed").await;
    }
    let lost = expected.difference(&stored).count();
    println!(
        "instance SIGKILL: {lost} of {} edits lost ({EDITORS} clients, half of them moved)",
        expected.len()
    );
    assert_eq!(lost, 0, "edits missing from storage");
    assert_eq!(stored, expected, "storage holds exactly the edits made");
    survivor.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

/// Entries of the stream the killed worker was compacting: enough that a pass
/// of the debug build takes seconds.
const ENTRIES: usize = 40_000;
/// The workers' task debounce: how long the killed worker's task stays
/// claimed before another worker takes it.
const TASK_TIMEOUT_MS: u64 = 1_000;

/// The consumers holding worker tasks (`XPENDING` of the worker group).
async fn task_owners(conn: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("y:worker")
        .arg("y:worker")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(conn)
        .await
        .expect("XPENDING");
    pending.into_iter().map(|(_, owner, _, _)| owner).collect()
}

#[tokio::test]
async fn a_worker_killed_mid_compaction_is_replaced_and_loses_nothing() {
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let key = stream_key("y", "big", "index");
    let mut expected = BTreeSet::new();
    let messages: Vec<Vec<u8>> = {
        let doc = Doc::with_client_id(7);
        let m = doc.get_or_insert_map("m");
        (0..ENTRIES)
            .map(|i| {
                let before = doc.transact().state_vector();
                let k = format!("k{i}");
                m.insert(&mut doc.transact_mut(), k.as_str(), true);
                expected.insert(k);
                encode_sync_update(&doc.transact().encode_state_as_update_v1(&before))
            })
            .collect()
    };
    // The first entry through the append script (it queues the task), the rest
    // pipelined.
    let streams = RedisStreams::connect(&redis.url(), "y").await.unwrap();
    streams.append(&key, &messages[0]).await.unwrap();
    let mut conn = redis_conn(&redis).await;
    testkit::xadd_all(&mut conn, &key, &messages[1..])
        .await
        .unwrap();
    assert_eq!(xlen(&mut conn, &key).await, ENTRIES as u64);
    assert_eq!(task_owners(&mut conn).await, ["pending"]);

    let worker = || {
        let mut command = binary(&redis, data.path(), &["worker"]);
        command
            .env("REDIS_TASK_DEBOUNCE", TASK_TIMEOUT_MS.to_string())
            .env("REDIS_MIN_MESSAGE_LIFETIME", "0");
        ServiceProcess::spawn("websocket worker", command).unwrap()
    };
    let mut first = worker();
    // Killed as soon as it holds the task: in the middle of loading the stream.
    let deadline = Instant::now() + SOON;
    while task_owners(&mut conn).await == ["pending"] {
        assert!(
            Instant::now() < deadline,
            "the first worker claims the task"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    first.kill();
    let killed_at = Instant::now();
    let cfg = config(Some(&redis), data.path());
    let storage = open_storage(&cfg.storage).await.unwrap();
    assert_eq!(
        xlen(&mut conn, &key).await,
        ENTRIES as u64,
        "the stream is untouched when the worker dies"
    );
    assert!(
        stored_keys(&storage, "big").await.is_empty(),
        "nothing stored when the worker dies"
    );

    // A second worker takes the task once it has been idle for the timeout.
    let _second = worker();
    let deadline = Instant::now() + Duration::from_secs(60);
    let recovered = loop {
        // Sample the stream first: a trim seen here must come after storing.
        let len = xlen(&mut conn, &key).await;
        let stored = stored_keys(&storage, "big").await;
        assert!(
            len == ENTRIES as u64 || stored == expected,
            "the stream was trimmed ({len} entries left) before storage held every edit ({} of {ENTRIES})",
            stored.len()
        );
        if stored == expected {
            break killed_at.elapsed();
        }
        assert!(Instant::now() < deadline, "not stored within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let deadline = Instant::now() + SOON;
    while xlen(&mut conn, &key).await == ENTRIES as u64 {
        assert!(
            Instant::now() < deadline,
            "the stream trimmed after storing"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "worker SIGKILL mid-compaction: 0 of {ENTRIES} edits lost, stored {:.1} s after the kill (task timeout {TASK_TIMEOUT_MS} ms)",
        recovered.as_secs_f64()
    );
}

/// Connections opened at once in the storm test.
const STORM: usize = 500;

/// Raise this process's open-file limit to its hard limit (the storm's client
/// sockets), so that the test does not depend on the shell's soft limit.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Resident memory of a process in kB.
fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse().ok())
        })
        .expect("VmRSS of the server")
}

#[tokio::test]
async fn a_connection_storm_is_served_in_full() {
    raise_open_files();
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let port = free_port().unwrap();
    let mut command = binary(&redis, data.path(), &["serve", "--no-worker"]);
    command.env("WS_PORT", port.to_string());
    let mut server = ServiceProcess::spawn("websocket", command).unwrap();
    server.wait_listening(port, SOON).unwrap();
    let pid = server.pid().unwrap();
    let before = rss_kb(pid);

    // Ten rooms, opened by the storm itself.
    let urls = (0..STORM)
        .map(|i| format!("ws://127.0.0.1:{port}/storm{}", i % 10))
        .collect();
    let storm = open_at_once(urls, Duration::from_secs(30)).await;
    let during = rss_kb(pid);
    println!(
        "connection storm: {} of {STORM} connections answered, the last after {:.2} s; server RSS {} MB before, {} MB with them open",
        storm.answered,
        storm.elapsed.as_secs_f64(),
        before / 1024,
        during / 1024
    );
    assert_eq!(storm.answered, STORM, "connections answered");
    drop(storm);
    // The server still serves.
    let client = YClient::connect(&format!("ws://127.0.0.1:{port}/storm0"))
        .await
        .unwrap();
    client.wait_synced(SOON).await.unwrap();
    server.check_running().unwrap();
}
