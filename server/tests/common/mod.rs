//! Shared set-up for the server's integration tests: instances in this process
//! on free ports, a real redis-server per test, and Redis inspection helpers.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use redis::Value;
use websocket::app::{Instance, Roles};
use websocket::config::Config;

#[allow(unused_imports)]
pub use testkit::{hex, now_ms, xlen, RawClient, RedisServer, YClient};

/// Generous limit for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

/// A configuration for tests: a free port on loopback, the given Redis (or the
/// embedded bus), files under `data`.
pub fn config(redis: Option<&RedisServer>, data: &Path) -> Config {
    let mut config = Config::from_toml(&format!(
        "[storage]\nbackend = \"fs\"\ndir = {:?}\n",
        data.display().to_string()
    ))
    .expect("test config");
    config.websocket.port = 0;
    config.websocket.host = [127, 0, 0, 1].into();
    config.redis.url = redis.map(RedisServer::url);
    config
}

/// Start a server (with its worker) for `config`.
pub async fn start(config: &Config) -> Instance {
    Instance::start(
        config,
        Roles {
            serve: true,
            worker: true,
        },
    )
    .await
    .expect("instance starts")
}

/// Start with explicit roles.
pub async fn start_roles(config: &Config, serve: bool, worker: bool) -> Instance {
    Instance::start(config, Roles { serve, worker })
        .await
        .expect("instance starts")
}

/// `ws://127.0.0.1:{port}/{room}`.
pub fn url(instance: &Instance, room: &str) -> String {
    let addr = instance.local_addr.expect("instance serves");
    format!("ws://{addr}/{room}")
}

/// A counter's value in a `/metrics` page (which must hold it).
pub fn counter(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the metrics page"))
}

/// The text of the instance's `/metrics` (which must answer 200).
pub async fn scrape(instance: &Instance) -> String {
    let ops = format!(
        "http://{}/metrics",
        instance.metrics_addr.expect("metrics served")
    );
    let response = reqwest::get(ops).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.text().await.unwrap()
}

/// `writer` inserts 300 chunks of 32 KiB into text `t`, more than the kernel
/// buffers between the server and a client that stopped reading can hold, and
/// `watcher` (reading) receives them all.
pub async fn outpace_a_slow_reader(writer: &YClient, watcher: &YClient) {
    let chunk = "x".repeat(32 * 1024);
    let count = 300u32;
    for i in 0..count {
        writer.text_insert("t", i * chunk.len() as u32, &chunk);
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let total = count * chunk.len() as u32;
    watcher
        .wait_until("every edit", Duration::from_secs(30), |c| {
            c.text_len("t") == total
        })
        .await
        .unwrap();
}

/// Two clients of the room at `room_url`, both synced, after the first wrote
/// `text` at the start of the text `t` and the second received it: the edit
/// is on the server.
pub async fn two_editors_after(room_url: &str, text: &str) -> (YClient, YClient) {
    let a = YClient::connect(room_url).await.unwrap();
    let b = YClient::connect(room_url).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, text);
    b.wait_until("edit", SOON, |c| c.text("t") == text)
        .await
        .unwrap();
    (a, b)
}

/// A direct Redis connection for inspecting what the servers wrote.
pub async fn redis_conn(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connects")
}

/// `(id, m bytes)` of every entry of a stream.
pub async fn stream_entries(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
) -> Vec<(String, Vec<u8>)> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    let mut out = Vec::new();
    if let Value::Array(entries) = reply {
        for entry in entries {
            if let Value::Array(parts) = entry {
                let id = match &parts[0] {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => panic!("unexpected id {other:?}"),
                };
                let fields = match &parts[1] {
                    Value::Array(f) => f.clone(),
                    other => panic!("unexpected fields {other:?}"),
                };
                for pair in fields.chunks(2) {
                    if let [Value::BulkString(name), Value::BulkString(value)] = pair {
                        if name == b"m" || name == b"compact" {
                            out.push((id.clone(), value.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

/// Poll `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Files stored for (room, index) under a fs storage directory.
pub fn stored_files(data: &Path, encoded_room: &str) -> Vec<String> {
    let dir = data.join(encoded_room).join("index");
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| !name.starts_with('.'))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The fixtures directory of the project.
pub fn fixture(name: &str) -> serde_json::Value {
    let path = format!(
        "{}/../fixtures/yredis-0.1.6/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture json")
}
