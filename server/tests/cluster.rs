//! The cluster layout on a real Redis Cluster (three masters with a replica
//! each): instances (`websocket` processes, and instances in this process)
//! relay between each other, compaction serves every
//! master's shards, and a master failing over loses no edit.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_port, RedisCluster, ServiceProcess};
use websocket::app::Instance;
use websocket::config::Config;
use yrs::{Map, Transact};

/// Generous limit for what waits on a failover.
const FAILOVER: Duration = Duration::from_secs(60);

/// A test configuration on `cluster`, files under `data`.
fn cluster_config(cluster: &RedisCluster, data: &std::path::Path) -> Config {
    let mut cfg = config(None, data);
    cfg.redis.url = Some(cluster.urls());
    cfg.redis.cluster = true;
    cfg
}

/// The keys of map `m` of a client's document.
fn map_keys(client: &YClient) -> BTreeSet<String> {
    let m = client.doc.get_or_insert_map("m");
    let txn = client.doc.transact();
    m.keys(&txn).map(str::to_string).collect()
}

/// The room stream keys each master holds, by master port.
fn room_keys_by_master(cluster: &RedisCluster) -> HashMap<u16, Vec<String>> {
    cluster
        .masters()
        .unwrap()
        .into_iter()
        .map(|port| {
            let keys = cluster
                .cli(port, &["KEYS", "*"])
                .unwrap()
                .lines()
                .filter(|key| key.contains(":room:") && !key.contains(":version:"))
                .map(str::to_string)
                .collect();
            (port, keys)
        })
        .collect()
}

/// A `websocket` process (server and worker) on the cluster, files under
/// `data`, and the port it serves on.
fn spawn_instance(cluster: &RedisCluster, data: &std::path::Path) -> (ServiceProcess, u16) {
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command
        .arg("serve")
        .env("REDIS_URL", cluster.urls())
        .env("REDIS_CLUSTER", "true")
        .env_remove("REDIS")
        .env("STORAGE_BACKEND", "fs")
        .env("STORAGE_DIR", data)
        .env("WS_HOST", "127.0.0.1")
        .env("WS_PORT", port.to_string())
        .env("RUST_LOG", "warn");
    let mut process = ServiceProcess::spawn("websocket", command).unwrap();
    process.wait_listening(port, SOON).unwrap();
    (process, port)
}

#[tokio::test]
async fn clients_on_two_instances_converge_on_many_rooms() {
    let data = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let (_one, one) = spawn_instance(&cluster, data.path());
    let (_two, two) = spawn_instance(&cluster, data.path());
    let room_url = |port: u16, room: &str| format!("ws://127.0.0.1:{port}/{room}");

    let mut pairs = Vec::new();
    for i in 0..12 {
        let room = format!("converge-{i}");
        let a = YClient::connect(&room_url(one, &room)).await.unwrap();
        let b = YClient::connect(&room_url(two, &room)).await.unwrap();
        a.wait_synced(SOON).await.unwrap();
        b.wait_synced(SOON).await.unwrap();
        pairs.push((a, b));
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        a.text_insert("t", 0, &format!("a{i}"));
        b.map_set("m", "from-b", i as f64);
    }
    for (i, (a, b)) in pairs.iter().enumerate() {
        b.wait_until("a's edit on the other instance", SOON, |c| {
            c.text("t") == format!("a{i}")
        })
        .await
        .unwrap();
        a.wait_until("b's edit on the other instance", SOON, |c| {
            map_keys(c).contains("from-b")
        })
        .await
        .unwrap();
        assert_eq!(a.content(), b.content());
    }
    // The rooms landed on more than one master.
    let by_master = room_keys_by_master(&cluster);
    let holding = by_master.values().filter(|keys| !keys.is_empty()).count();
    assert!(holding >= 2, "rooms by master: {by_master:?}");
    // Every key of the cluster layout carries a hash tag.
    for keys in by_master.values() {
        for key in keys {
            assert!(key.starts_with("y:{"), "{key}");
        }
    }
}

#[tokio::test]
async fn compaction_stores_and_trims_rooms_on_every_master() {
    let data = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let mut cfg = cluster_config(&cluster, data.path());
    cfg.redis.task_debounce = 200;
    cfg.redis.min_message_lifetime = 500;
    let one = start(&cfg).await;
    let two = start(&cfg).await;

    let rooms: Vec<String> = (0..48).map(|i| format!("compact-{i}")).collect();
    let mut writers = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let instance = if i % 2 == 0 { &one } else { &two };
        let writer = YClient::connect(&url(instance, room)).await.unwrap();
        writer.wait_synced(SOON).await.unwrap();
        writer.text_insert("t", 0, &format!("content of {room}"));
        writers.push(writer);
    }
    // Every master holds some of the rooms' streams (looked at before they
    // are trimmed away).
    let mut by_master = HashMap::new();
    let mut stream_of: HashMap<String, (u16, String)> = HashMap::new();
    let deadline = Instant::now() + SOON;
    while stream_of.len() < rooms.len() {
        assert!(
            Instant::now() < deadline,
            "streams of every room: {by_master:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        by_master = room_keys_by_master(&cluster);
        stream_of = by_master
            .iter()
            .flat_map(|(port, keys)| {
                keys.iter().filter_map(|key| {
                    let room = key.split(":room:").nth(1)?.strip_suffix(":index")?;
                    Some((room.to_string(), (*port, key.clone())))
                })
            })
            .collect();
    }
    assert_eq!(by_master.len(), 3);
    for (port, keys) in &by_master {
        assert!(
            !keys.is_empty(),
            "master {port} holds no room: {by_master:?}"
        );
    }

    for room in &rooms {
        eventually(&format!("{room} stored"), SOON * 3, || async {
            !stored_files(data.path(), room).is_empty()
        })
        .await;
    }
    for room in &rooms {
        let (port, key) = &stream_of[room];
        eventually(&format!("{room} trimmed"), SOON * 3, || async {
            cluster.cli(*port, &["XLEN", key]).unwrap().trim() == "0"
        })
        .await;
    }
    // Each stored room kept a version, numbered by a counter in its own slot
    // (docs/protocol.md §3.5): on the master that holds its stream.
    for room in &rooms {
        let (port, key) = &stream_of[room];
        let counter = format!("y:version:{key}");
        eventually(&format!("{room}'s version counter"), SOON, || async {
            let value = cluster.cli(*port, &["GET", &counter]).unwrap();
            value.trim().parse::<u64>().is_ok_and(|n| n >= 1)
        })
        .await;
    }
    drop(writers);
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();

    // A new instance loads every room from storage alone.
    let three = start(&cfg).await;
    for room in &rooms {
        let reader = YClient::connect(&url(&three, room)).await.unwrap();
        reader.wait_synced(SOON).await.unwrap();
        assert_eq!(reader.text("t"), format!("content of {room}"));
    }
}

/// An editing client: its instance's room URL and the client, made anew
/// with its document whenever the server closed it.
struct Editor {
    room_url: String,
    client: YClient,
    name: String,
    edits: usize,
    /// How often the server closed it and it connected again.
    reconnects: usize,
}

impl Editor {
    /// Connected again (with the same document) when the server closed it;
    /// `false` while the instance does not serve yet.
    async fn reconnected(&mut self) -> bool {
        if self.client.closed().is_none() {
            return true;
        }
        match YClient::connect_with(&self.room_url, self.client.doc.clone(), None).await {
            Ok(client) => {
                self.client = client;
                self.reconnects += 1;
                true
            }
            Err(_) => false,
        }
    }
}

#[tokio::test]
async fn a_master_killed_under_editing_clients_loses_no_edit() {
    let data = tempfile::tempdir().unwrap();
    let mut cluster = RedisCluster::start().unwrap();
    let cfg = cluster_config(&cluster, data.path());
    let one = start(&cfg).await;
    let two = start(&cfg).await;

    let rooms: Vec<String> = (0..6).map(|i| format!("failover-{i}")).collect();
    let mut editors = Vec::new();
    for room in &rooms {
        for (side, instance) in [("one", &one), ("two", &two)] {
            let room_url = url(instance, room);
            let client = YClient::connect(&room_url).await.unwrap();
            client.wait_synced(SOON).await.unwrap();
            editors.push(Editor {
                room_url,
                client,
                name: format!("{room}-{side}"),
                edits: 0,
                reconnects: 0,
            });
        }
    }

    // Every editor sets a new key of map `m` every 50 ms until told to stop,
    // reconnecting whenever the server closes it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for mut editor in editors {
        let stop = Arc::clone(&stop);
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if editor.reconnected().await {
                    editor
                        .client
                        .map_set("m", &format!("{}-{}", editor.name, editor.edits), 1.0);
                    editor.edits += 1;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            editor
        }));
    }

    // The master of the most rooms dies under them; its replica is promoted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let by_master = room_keys_by_master(&cluster);
    let (&victim, _) = by_master.iter().max_by_key(|(_, keys)| keys.len()).unwrap();
    assert!(!by_master[&victim].is_empty());
    let killed = Instant::now();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.kill_master(victim).unwrap();
        cluster
    })
    .await
    .unwrap();
    let promoted = killed.elapsed();
    // Editing goes on after the failover.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let stopped = Instant::now();
    let mut editors = Vec::new();
    for task in tasks {
        editors.push(task.await.unwrap());
    }

    // Every edit any client made reaches every client of its room.
    let expected: HashMap<String, BTreeSet<String>> = rooms
        .iter()
        .map(|room| {
            let keys = editors
                .iter()
                .filter(|e| e.room_url.ends_with(&format!("/{room}")))
                .flat_map(|e| (0..e.edits).map(move |n| format!("{}-{n}", e.name)))
                .collect();
            (room.clone(), keys)
        })
        .collect();
    let deadline = Instant::now() + FAILOVER;
    loop {
        let mut converged = true;
        for editor in &mut editors {
            let room = editor.room_url.rsplit('/').next().unwrap().to_string();
            if !editor.reconnected().await || map_keys(&editor.client) != expected[&room] {
                converged = false;
            }
        }
        if converged {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "clients did not converge within {FAILOVER:?} of the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let recovered = stopped.elapsed();
    // The failover was noticed: every connection was closed (so that its
    // client sent its document again) and made anew.
    for editor in &editors {
        assert!(editor.reconnects > 0, "{} was never closed", editor.name);
    }
    // A fresh client of each room sees every edit too.
    for room in &rooms {
        let client = YClient::connect(&url(&two, room)).await.unwrap();
        client.wait_synced(SOON).await.unwrap();
        let fresh = client;
        fresh
            .wait_until("every edit in a fresh client", SOON, |c| {
                map_keys(c) == expected[room]
            })
            .await
            .unwrap();
    }
    let edits: usize = expected.values().map(BTreeSet::len).sum();
    eprintln!(
        "cluster failover: {edits} edits, 0 lost; replica promoted {promoted:?} after the kill, \
         every client converged {recovered:?} after the editing stopped"
    );
    drop(editors);
    shutdown_all([one, two]).await;
    drop(cluster);
}

#[tokio::test]
async fn a_flushall_of_every_master_is_noticed_and_nothing_is_lost() {
    let data = tempfile::tempdir().unwrap();
    let cluster = RedisCluster::start().unwrap();
    let cfg = cluster_config(&cluster, data.path());
    let one = start(&cfg).await;
    let two = start(&cfg).await;
    let rooms: Vec<String> = (0..6).map(|i| format!("flushed-{i}")).collect();
    let mut editors = Vec::new();
    for room in &rooms {
        let room_url = url(&one, room);
        let client = YClient::connect(&room_url).await.unwrap();
        client.wait_synced(SOON).await.unwrap();
        client.text_insert("t", 0, &format!("before the flush of {room}"));
        editors.push(Editor {
            room_url,
            client,
            name: room.clone(),
            edits: 1,
            reconnects: 0,
        });
    }
    for room in &rooms {
        let reader = YClient::connect(&url(&two, room)).await.unwrap();
        reader
            .wait_until("the edit on the other instance", SOON, |c| {
                c.text("t") == format!("before the flush of {room}")
            })
            .await
            .unwrap();
    }
    // Every master loses its data; nothing was compacted yet.
    for port in cluster.masters().unwrap() {
        assert_eq!(cluster.cli(port, &["FLUSHALL"]).unwrap().trim(), "OK");
    }
    // The servers close the editors' connections; reconnected as a
    // y-websocket provider does, they send their documents again.
    let deadline = Instant::now() + SOON * 3;
    while !editors.iter().all(|e| e.reconnects > 0) {
        assert!(
            Instant::now() < deadline,
            "connections not closed after FLUSHALL"
        );
        for editor in &mut editors {
            editor.reconnected().await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for room in &rooms {
        eventually(&format!("{room} back in Redis"), SOON, || async {
            let Ok(fresh) = YClient::connect(&url(&two, room)).await else {
                return false;
            };
            fresh.wait_synced(SOON).await.is_ok()
                && fresh.text("t") == format!("before the flush of {room}")
        })
        .await;
    }
    drop(editors);
    shutdown_all([one, two]).await;
}

/// Stop instances one after the other.
async fn shutdown_all(instances: impl IntoIterator<Item = Instance>) {
    for instance in instances {
        let _ = instance.shutdown().await;
    }
}
