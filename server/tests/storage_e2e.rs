//! Storage end to end, for PostgreSQL, S3 (moto) and GCS (fake-gcs-server), each
//! started on a free port: a server and a separate worker on a real redis-server
//! compact what clients write into the backend's layout; storage alone brings the
//! document back after everything, Redis included, starts again empty. Storage
//! outages never lose an edit. The binary stops at once, with status 1, when its
//! storage cannot be used.

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{free_port, FakeGcsServer, PostgresServer, S3Server};
use websocket::app::Instance;
use websocket::config::Config;
use websocket::storage::{StorageBackend, StorageConfig};

/// The room as clients name it (the raw path segment), and `encodeURIComponent` of it.
const ROOM: &str = "e2e%20room";
const ENCODED_ROOM: &str = "e2e%2520room";
/// Its doc stream.
const KEY: &str = "y:room:e2e%2520room:index";
const BUCKET: &str = "ydocs";

/// Task debounce and message lifetime of these tests, in ms.
const DEBOUNCE_MS: u64 = 200;
const LIFETIME_MS: u64 = 500;

enum Service {
    Postgres(PostgresServer),
    S3(S3Server),
    Gcs(FakeGcsServer),
}

/// A storage server and how to inspect what it holds, independently of the
/// code under test.
struct Backend {
    service: Service,
}

impl Backend {
    fn postgres() -> Self {
        let server = PostgresServer::start().expect("PostgreSQL must be installed (ci/setup.sh)");
        Self {
            service: Service::Postgres(server),
        }
    }

    fn s3() -> Self {
        let server = S3Server::start().expect("moto's S3 server must be installed (ci/setup.sh)");
        Self {
            service: Service::S3(server),
        }
    }

    /// fake-gcs-server with a bucket; `persistent` keeps objects over a restart.
    fn gcs(persistent: bool) -> Self {
        let server = if persistent {
            FakeGcsServer::start_persistent()
        } else {
            FakeGcsServer::start()
        }
        .expect("fake-gcs-server must be installed (ci/setup.sh)");
        server.create_bucket(BUCKET).unwrap();
        Self {
            service: Service::Gcs(server),
        }
    }

    fn storage_config(&self) -> StorageConfig {
        match &self.service {
            Service::Postgres(server) => StorageConfig {
                backend: Some(StorageBackend::Postgres),
                postgres: Some(server.url()),
                ..StorageConfig::default()
            },
            Service::S3(server) => StorageConfig {
                backend: Some(StorageBackend::S3),
                s3_endpoint: Some("127.0.0.1".into()),
                s3_port: Some(server.port()),
                s3_ssl: Some(false),
                s3_access_key: Some(server.access_key().into()),
                s3_secret_key: Some(server.secret_key().into()),
                s3_bucket: Some(BUCKET.into()),
                ..StorageConfig::default()
            },
            Service::Gcs(server) => StorageConfig {
                backend: Some(StorageBackend::Gcs),
                bucket: Some(BUCKET.into()),
                gcs_endpoint: Some(server.endpoint()),
                ..StorageConfig::default()
            },
        }
    }

    /// The stored items of (ROOM, index), after checking each against the
    /// layout: objects `enc(room)/index/<uuid v4>`, or `yredis_docs_v1` rows with
    /// the room as it is, an update and a state vector.
    fn items(&self) -> Vec<String> {
        tokio::task::block_in_place(|| match &self.service {
            Service::Postgres(server) => {
                let rows = server
                    .psql(&format!(
                        "SELECT room, doc, r, length(update) > 0, length(sv) > 0 \
                         FROM yredis_docs_v1 WHERE room = '{ROOM}' ORDER BY r"
                    ))
                    .unwrap();
                rows.lines()
                    .map(|row| {
                        let fields: Vec<&str> = row.split('|').collect();
                        assert_eq!(fields.len(), 5, "{row}");
                        assert_eq!(&fields[..2], [ROOM, "index"], "{row}");
                        assert_eq!(&fields[3..], ["t", "t"], "update and sv are set: {row}");
                        fields[2].to_string()
                    })
                    .collect()
            }
            Service::S3(server) => object_items(server.object_names(BUCKET).unwrap()),
            Service::Gcs(server) => object_items(server.object_names(BUCKET).unwrap()),
        })
    }

    fn stop(&mut self) {
        match &mut self.service {
            Service::Postgres(server) => server.stop(),
            Service::S3(server) => server.stop(),
            Service::Gcs(server) => server.stop(),
        }
    }

    /// Start the server again on its port. moto comes back empty, so its bucket
    /// is created again (as an operator would).
    fn restart(&mut self) {
        tokio::task::block_in_place(|| match &mut self.service {
            Service::Postgres(server) => server.restart().unwrap(),
            Service::S3(server) => {
                server.restart().unwrap();
                server.create_bucket(BUCKET).unwrap();
            }
            Service::Gcs(server) => server.restart().unwrap(),
        })
    }
}

/// The objects of ROOM among `names`, each checked to be `enc(room)/index/<uuid v4>`.
fn object_items(names: Vec<String>) -> Vec<String> {
    let prefix = format!("{ENCODED_ROOM}/index/");
    names
        .into_iter()
        .filter(|name| name.starts_with(&format!("{ENCODED_ROOM}/")))
        .map(|name| {
            let id = name
                .strip_prefix(&prefix)
                .unwrap_or_else(|| panic!("{name} is not under {prefix}"));
            let uuid = uuid::Uuid::parse_str(id).unwrap_or_else(|_| panic!("{name}: no uuid"));
            assert_eq!(uuid.get_version_num(), 4, "{name}");
            assert_eq!(uuid.hyphenated().to_string(), id, "{name}");
            name
        })
        .collect()
}

/// A fleet member's configuration: this Redis, this storage, fast compaction.
fn fleet_config(redis: &RedisServer, backend: &Backend, unused: &Path) -> Config {
    let mut cfg = config(Some(redis), unused);
    cfg.storage = backend.storage_config();
    cfg.redis.task_debounce = DEBOUNCE_MS;
    cfg.redis.min_message_lifetime = LIFETIME_MS;
    cfg
}

/// A server (no worker) and a separate worker.
async fn start_fleet(cfg: &Config) -> (Instance, Instance) {
    (
        start_roles(cfg, true, false).await,
        start_roles(cfg, false, true).await,
    )
}

async fn connect(server: &Instance) -> YClient {
    let client = YClient::connect(&url(server, ROOM)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client
}

/// Wait until the worker has stored the stream and trimmed it empty (it trims
/// only what storage holds).
async fn wait_compacted(redis: &RedisServer, what: &str) {
    let conn = redis_conn(redis).await;
    eventually(what, SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, KEY).await == 0 }
    })
    .await;
}

/// Wait until storage holds exactly one item of ROOM.
async fn wait_one_item(backend: &Backend) {
    let deadline = Instant::now() + SOON;
    loop {
        let items = backend.items();
        if items.len() == 1 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {} stored items: {items:?}",
            items.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Stop server and worker, restart Redis empty, start a server again and check a
/// new client gets `expected` from storage alone.
async fn reopen_from_storage_alone(
    redis: &mut RedisServer,
    cfg: &Config,
    fleet: (Instance, Instance),
    expected: &serde_json::Value,
) {
    fleet.0.shutdown().await.unwrap();
    fleet.1.shutdown().await.unwrap();
    tokio::task::block_in_place(|| redis.restart()).unwrap();
    assert_eq!(
        redis.cli(&["DBSIZE"]).unwrap().trim(),
        "0",
        "Redis is empty"
    );
    let (server, worker) = start_fleet(cfg).await;
    let reopened = connect(&server).await;
    assert_eq!(&reopened.content(), expected);
    drop(reopened);
    server.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

/// Edit text, map and array; compact; edit again; compact; stop everything,
/// Redis included; start again: the full document comes from storage.
async fn round_trip(backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let cfg = fleet_config(&redis, &backend, data.path());
    let (server, worker) = start_fleet(&cfg).await;
    let writer = connect(&server).await;
    let reader = connect(&server).await;

    writer.text_insert("t", 0, "hello");
    writer.map_set("m", "k", 1.0);
    writer.array_push("a", "x");
    let first = writer.content();
    reader
        .wait_until("the first edits", SOON, |c| c.content() == first)
        .await
        .unwrap();
    wait_compacted(&redis, "the first edits compacted and trimmed").await;
    assert!(!backend.items().is_empty(), "stored in the backend");

    writer.text_insert("t", 5, " world");
    writer.text_delete("t", 0, 1);
    writer.map_set("m", "k2", "v");
    writer.array_push("a", 2.0);
    let expected = writer.content();
    assert_eq!(expected["t"], "ello world");
    reader
        .wait_until("the second edits", SOON, |c| c.content() == expected)
        .await
        .unwrap();
    wait_compacted(&redis, "the second edits compacted and trimmed").await;
    // The item of the first compaction was replaced by the second's.
    wait_one_item(&backend).await;

    drop((writer, reader));
    reopen_from_storage_alone(&mut redis, &cfg, (server, worker), &expected).await;
    assert_eq!(backend.items().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_round_trip_survives_a_full_restart() {
    round_trip(Backend::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_survives_a_full_restart() {
    round_trip(Backend::s3()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_round_trip_survives_a_full_restart() {
    round_trip(Backend::gcs(false)).await;
}

/// Keep editing for well over the message lifetime while storage is down: the
/// other client follows every edit, and the stream keeps everything (it grows,
/// and its first entry stays).
async fn edit_during_outage(redis: &RedisServer, writer: &YClient, reader: &YClient) {
    let mut conn = redis_conn(redis).await;
    let mut first_entry = None;
    let mut lengths = Vec::new();
    let started = Instant::now();
    for i in 0..10 {
        let len = writer.text_len("t");
        writer.text_insert("t", len, &i.to_string());
        writer.map_set("m", &format!("k{i}"), f64::from(i));
        writer.array_push("a", f64::from(i));
        let now = writer.content();
        reader
            .wait_until("an edit made during the outage", SOON, |c| {
                c.content() == now
            })
            .await
            .unwrap();
        if first_entry.is_none() {
            first_entry = stream_entries(&mut conn, KEY)
                .await
                .first()
                .map(|(id, _)| id.clone());
        }
        lengths.push(xlen(&mut conn, KEY).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let outage = started.elapsed();
    assert!(outage > Duration::from_millis(3 * (DEBOUNCE_MS + LIFETIME_MS)));
    assert!(
        lengths.windows(2).all(|w| w[0] < w[1]),
        "the stream only grows while storage is down: {lengths:?}"
    );
    assert!(*lengths.last().unwrap() >= 30, "{lengths:?}");
    let first_entry = first_entry.expect("a stream entry");
    let entries = stream_entries(&mut conn, KEY).await;
    assert_eq!(
        entries.first().map(|(id, _)| id.as_str()),
        Some(first_entry.as_str()),
        "entries older than the lifetime are kept while storage is down"
    );
}

/// Storage that keeps its data over a restart (PostgreSQL, fake-gcs-server on
/// disk): stored content, then an outage with edits, then the worker catches up
/// and storage holds every edit.
async fn outage_with_lasting_storage(mut backend: Backend) {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let cfg = fleet_config(&redis, &backend, data.path());
    let (server, worker) = start_fleet(&cfg).await;
    let writer = connect(&server).await;
    let reader = connect(&server).await;
    writer.text_insert("t", 0, "stored before ");
    // Storage first: the stream may not hold the edit yet when this starts (the
    // connections' own entries can be compacted away already), and an empty
    // stream alone would say nothing.
    wait_one_item(&backend).await;
    wait_compacted(&redis, "the first edit stored").await;
    assert_eq!(backend.items().len(), 1);

    backend.stop();
    edit_during_outage(&redis, &writer, &reader).await;
    backend.restart();

    wait_compacted(&redis, "the worker catching up after the outage").await;
    wait_one_item(&backend).await;
    let expected = writer.content();
    assert_eq!(expected["t"], "stored before 0123456789");
    drop((writer, reader));
    reopen_from_storage_alone(&mut redis, &cfg, (server, worker), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outage_loses_nothing() {
    outage_with_lasting_storage(Backend::postgres()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_outage_loses_nothing() {
    outage_with_lasting_storage(Backend::gcs(true)).await;
}

/// moto keeps nothing over a restart, so the document lives in the stream only:
/// storage goes down before anything is stored, nothing is trimmed during the
/// outage, and after it the worker stores the whole document from the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_keeps_the_stream_until_stored() {
    let mut backend = Backend::s3();
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let cfg = fleet_config(&redis, &backend, data.path());
    let (server, worker) = start_fleet(&cfg).await;
    let writer = connect(&server).await;
    let reader = connect(&server).await;

    backend.stop();
    writer.text_insert("t", 0, "stream only ");
    edit_during_outage(&redis, &writer, &reader).await;
    backend.restart();

    wait_compacted(&redis, "the worker storing the stream after the outage").await;
    wait_one_item(&backend).await;
    let expected = writer.content();
    assert_eq!(expected["t"], "stream only 0123456789");
    drop((writer, reader));
    reopen_from_storage_alone(&mut redis, &cfg, (server, worker), &expected).await;
}

/// A port where a server accepts connections and never answers.
fn silent_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
        }
    });
    port
}

/// Run the binary with `env` (and nothing else configured) until it exits;
/// returns its status code, stderr and how long it ran. Fails after 30 s.
fn run_binary(env: &[(&str, String)]) -> (Option<i32>, String, Duration) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command.current_dir(dir.path());
    for (name, _) in std::env::vars() {
        let ours = [
            "REDIS", "PORT", "WS_", "STORAGE_", "S3_", "POSTGRES", "GOOGLE_", "AUTH_", "YDOC_",
            "RUST_LOG",
        ];
        if ours.iter().any(|prefix| name.starts_with(prefix)) {
            command.env_remove(name);
        }
    }
    command
        .env("WS_HOST", "127.0.0.1")
        .env("WS_PORT", free_port().unwrap().to_string())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the binary still runs after 30 s with {env:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    (status.code(), reader.join().unwrap(), elapsed)
}

/// Unreachable, silent or misconfigured storage stops the binary at start: status
/// 1, one `error:` line naming the problem, within 15 s.
#[test]
fn unusable_storage_stops_the_binary_with_one_error_line() {
    let gcs = FakeGcsServer::start().expect("fake-gcs-server must be installed (ci/setup.sh)");
    let closed = free_port().unwrap().to_string();
    let silent = silent_server().to_string();
    let postgres = |port: &str| {
        vec![
            ("STORAGE_BACKEND", "postgres".to_string()),
            (
                "POSTGRES",
                format!("postgres://yredis@127.0.0.1:{port}/postgres"),
            ),
        ]
    };
    let s3 = |port: &str| {
        vec![
            ("STORAGE_BACKEND", "s3".to_string()),
            ("S3_ENDPOINT", "127.0.0.1".to_string()),
            ("S3_PORT", port.to_string()),
            ("S3_ACCESS_KEY", "key".to_string()),
            ("S3_SECRET_KEY", "secret".to_string()),
        ]
    };
    let google = |endpoint: String, bucket: &str| {
        vec![
            ("STORAGE_BACKEND", "gcs".to_string()),
            ("GOOGLE_CLOUD_STORAGE_BUCKET", bucket.to_string()),
            ("STORAGE_EMULATOR_HOST", endpoint),
        ]
    };
    /// Name, environment, what the error line must mention.
    type Case = (&'static str, Vec<(&'static str, String)>, &'static str);
    let cases: Vec<Case> = vec![
        ("postgres refused", postgres(&closed), "postgres"),
        ("postgres silent", postgres(&silent), "postgres"),
        ("s3 refused", s3(&closed), "S3"),
        ("s3 silent", s3(&silent), "s3"),
        (
            "gcs refused",
            google(format!("http://127.0.0.1:{closed}"), BUCKET),
            "GCS",
        ),
        (
            "gcs silent",
            google(format!("http://127.0.0.1:{silent}"), BUCKET),
            "gcs",
        ),
        (
            "gcs missing bucket",
            google(gcs.endpoint(), "no-such-bucket"),
            "no-such-bucket",
        ),
    ];
    let runs: Vec<_> = cases
        .into_iter()
        .map(|(name, env, mention)| std::thread::spawn(move || (name, mention, run_binary(&env))))
        .collect();
    for run in runs {
        let (name, mention, (code, stderr, elapsed)) = run.join().unwrap();
        assert_eq!(code, Some(1), "{name}: {stderr}");
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(errors.len(), 1, "{name}: one error line in {stderr}");
        assert!(
            errors[0].to_lowercase().contains(&mention.to_lowercase()),
            "{name}: {:?} should mention {mention}",
            errors[0]
        );
        assert!(
            !stderr.to_lowercase().contains("panick"),
            "{name}: {stderr}"
        );
        assert!(elapsed < Duration::from_secs(15), "{name} took {elapsed:?}");
        eprintln!("{name}: {:?} after {elapsed:?}", errors[0]);
    }
}
