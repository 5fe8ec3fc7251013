//! Token auth end to end (docs/protocol.md §6): real instances on a real Redis, a
//! permission callback served here, tokens by query and by subprotocol, read-only
//! connections, every refusal as HTTP 401 before the upgrade, tokens kept out of the
//! logs, a Node `ws` client, and the `websocket auth` tools against this server and
//! the JavaScript reference server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use common::*;
use p384::ecdsa::signature::Signer as _;
use testkit::callback::Reply;
use testkit::client::{awareness_message, sync_message};
use testkit::{free_port, wait_for_port, Handshake, PermissionCallback};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;
use websocket::app::Instance;
use websocket::auth::{generate_key_pair, mint_token};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

// ---------------------------------------------------------------------------
// Captured logs of the instances running in this test process.

/// Everything this process logs, at every level.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Installs the capture once per test process and returns it.
fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = LogBuffer::default();
        // Every level of every crate, `log` records included. The test's own
        // WebSocket client library (tungstenite) traces the requests it sends,
        // token and all; it is not part of the server, so it is left out.
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(
                "trace,tungstenite=off,tokio_tungstenite=off",
            ))
            .with_writer(buffer.clone())
            .with_ansi(false)
            .try_init()
            .expect("the log capture is the only subscriber");
        buffer
    })
}

fn captured_logs() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

/// Neither a token nor its signature (the part that makes it a secret) was logged.
fn assert_not_in(text: &str, tokens: &[&str], source: &str) {
    for token in tokens {
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            !text.contains(token) && (signature.len() < 20 || !text.contains(signature)),
            "{source} contain a token: {token}"
        );
    }
}

fn assert_not_logged(tokens: &[&str]) {
    assert_not_in(&captured_logs(), tokens, "the logs");
}

// ---------------------------------------------------------------------------
// Tokens.

fn b64(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// An ES384 token with any payload, signed here independently of the server's code.
fn sign(private_jwk: &str, payload: &serde_json::Value) -> String {
    let jwk: serde_json::Value = serde_json::from_str(private_jwk).unwrap();
    let d = URL_SAFE_NO_PAD.decode(jwk["d"].as_str().unwrap()).unwrap();
    let key = p384::ecdsa::SigningKey::from_slice(&d).unwrap();
    let input = format!(
        "{}.{}",
        b64(r#"{"alg":"ES384","typ":"JWT"}"#),
        b64(&payload.to_string())
    );
    let signature: p384::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

fn payload_of(token: &str) -> serde_json::Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// The permission callback.

// ---------------------------------------------------------------------------
// An instance with auth.

const PERM_TIMEOUT_MS: u64 = 300;

struct Setup {
    redis: RedisServer,
    _data: tempfile::TempDir,
    instance: Instance,
    callback: PermissionCallback,
    private: String,
}

async fn setup() -> Setup {
    logs();
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let callback = PermissionCallback::start().await.unwrap();
    let base = callback.url().to_string();
    let (private, public) = generate_key_pair().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.auth.public_key = Some(public);
    cfg.auth.perm_callback = Some(base);
    cfg.auth.perm_timeout = PERM_TIMEOUT_MS;
    let instance = start(&cfg).await;
    Setup {
        redis,
        _data: data,
        instance,
        callback,
        private,
    }
}

impl Setup {
    fn url(&self, room: &str) -> String {
        url(&self.instance, room)
    }

    /// A valid token for `user`, expiring in a minute.
    fn token(&self, user: &str) -> String {
        mint_token(&self.private, user, Some(Duration::from_secs(60))).unwrap()
    }
}

async fn expect_accepted(url: &str, protocols: Option<&str>) -> (RawClient, Option<String>) {
    match RawClient::try_connect(url, protocols).await.unwrap() {
        Handshake::Accepted { client, protocol } => (*client, protocol),
        Handshake::Refused { status, .. } => panic!("{url} refused with {status}"),
    }
}

/// The server answered 401 and did not upgrade.
async fn expect_401(case: &str, url: &str, protocols: Option<&str>) {
    match RawClient::try_connect(url, protocols).await.unwrap() {
        Handshake::Accepted { .. } => panic!("{case}: accepted"),
        Handshake::Refused {
            status,
            upgrade_header,
        } => {
            assert_eq!(status, 401, "{case}");
            assert!(!upgrade_header, "{case}: a refusal upgrades nothing");
        }
    }
}

async fn room_keys(redis: &RedisServer) -> Vec<String> {
    let mut conn = redis_conn(redis).await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("y:room:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    keys
}

// ---------------------------------------------------------------------------
// Connections.

#[tokio::test]
async fn read_write_tokens_by_query_and_by_subprotocol() {
    let s = setup().await;
    s.callback.reply("doc", "alice", Reply::grant("rw"));
    s.callback.reply("doc", "bob", Reply::grant("rw"));
    let alice = s.token("alice");
    let bob = s.token("bob");
    let by_query = format!("{}?yauth={alice}", s.url("doc"));

    // By query: the answer selects no subprotocol, the initial sync follows.
    let (mut raw, protocol) = expect_accepted(&by_query, None).await;
    assert_eq!(protocol, None);
    assert_eq!(raw.recv(SOON).await.unwrap(), hex("00000100"));
    raw.close().await;

    // By subprotocol, alone or among others: the answer is exactly that entry.
    let entry = format!("yauth-{bob}");
    for offered in [entry.clone(), format!("y-first, {entry},y-last")] {
        let (mut raw, protocol) = expect_accepted(&s.url("doc"), Some(&offered)).await;
        assert_eq!(protocol.as_deref(), Some(entry.as_str()), "{offered}");
        assert_eq!(raw.recv(SOON).await.unwrap(), hex("00000100"));
        assert_eq!(raw.recv(SOON).await.unwrap(), hex("0001020000"));
        raw.close().await;
    }

    // Both write.
    let a = YClient::connect(&by_query).await.unwrap();
    let b = YClient::connect_with(&s.url("doc"), Doc::new(), Some(&entry))
        .await
        .unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "from alice;");
    b.wait_until("alice's edit", SOON, |c| c.text("t") == "from alice;")
        .await
        .unwrap();
    b.map_set("m", "by", "bob");
    a.wait_until("bob's edit", SOON, |c| c.content()["m"]["by"] == "bob")
        .await
        .unwrap();

    // The room is the path alone; the callback was asked per (room, user).
    assert_eq!(room_keys(&s.redis).await, ["y:room:doc:index"]);
    let asked = s.callback.paths();
    assert!(asked
        .iter()
        .all(|p| p == "/perm/doc/alice" || p == "/perm/doc/bob"));
    assert!(asked.contains(&"/perm/doc/alice".to_string()));
    assert!(asked.contains(&"/perm/doc/bob".to_string()));
    drop((a, b));
    s.instance.shutdown().await.unwrap();
    assert_not_logged(&[&alice, &bob]);
}

#[tokio::test]
async fn read_only_token_receives_everything_and_sends_nothing() {
    let s = setup().await;
    s.callback.reply("shared", "writer", Reply::grant("rw"));
    s.callback.reply("shared", "reader", Reply::grant("r"));
    let writer_token = s.token("writer");
    let reader_token = s.token("reader");
    let key = "y:room:shared:index";
    let mut conn = redis_conn(&s.redis).await;

    let writer = YClient::connect(&format!("{}?yauth={writer_token}", s.url("shared")))
        .await
        .unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "before;");
    // The writer's answer to step 1 and its edit.
    eventually("the writer's messages", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await == 2 }
    })
    .await;

    // The reader gets the initial sync, by subprotocol and by query.
    let mut reader = YClient::connect_with(
        &s.url("shared"),
        Doc::new(),
        Some(&format!("yauth-{reader_token}")),
    )
    .await
    .unwrap();
    reader.wait_synced(SOON).await.unwrap();
    assert_eq!(reader.text("t"), "before;");
    let (mut raw, _) =
        expect_accepted(&format!("{}?yauth={reader_token}", s.url("shared")), None).await;
    assert_eq!(raw.recv_all(Duration::from_millis(300)).await.len(), 2);
    let before = stream_entries(&mut conn, key).await;

    // Everything the reader sends is dropped: updates, step 2, awareness.
    reader.text_insert("t", 0, "reader edit;");
    reader.set_awareness(r#"{"user":"yclient"}"#).unwrap();
    let update = {
        let doc = Doc::new();
        let text = doc.get_or_insert_text("t");
        text.insert(&mut doc.transact_mut(), 0, "raw edit;");
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        update
    };
    raw.send(&sync_message(2, &update)).await.unwrap();
    raw.send(&sync_message(1, &update)).await.unwrap();
    raw.send(&awareness_message(&[(77, 1, r#"{"user":"reader"}"#)]))
        .await
        .unwrap();
    raw.send(&awareness_message(&[(77, 2, r#"{"user":"reader!"}"#)]))
        .await
        .unwrap();
    raw.send_text("not even read").await.unwrap();

    // ... while it keeps receiving what others write.
    writer.text_insert("t", 7, "after;");
    reader
        .wait_until("the writer's later edit", SOON, |c| {
            c.text("t").contains("before;after;")
        })
        .await
        .unwrap();
    let echoed = raw.recv(SOON).await.unwrap();
    assert_eq!(
        echoed[..2],
        [0, 2],
        "the writer's update reaches the reader"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(writer.text("t"), "before;after;");
    assert!(writer.awareness().is_empty(), "{:?}", writer.awareness());
    assert_eq!(reader.closed(), None, "the reader stays connected");
    assert_eq!(raw.close_code, None, "the raw reader too");

    let after = stream_entries(&mut conn, key).await;
    assert_eq!(after.len(), before.len() + 1, "only the writer's edit");
    assert_eq!(after[..before.len()], before[..]);
    assert_eq!(after[before.len()].1[..2], [0, 2]);

    // Its close appends no awareness removal ...
    raw.close().await;
    drop(reader);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(xlen(&mut conn, key).await, after.len() as u64);

    // ... where a writer's close does (the control: 300 ms is long enough).
    let (mut control, _) =
        expect_accepted(&format!("{}?yauth={writer_token}", s.url("shared")), None).await;
    control.recv_all(Duration::from_millis(200)).await;
    control
        .send(&awareness_message(&[(78, 1, r#"{"user":"writer"}"#)]))
        .await
        .unwrap();
    control.recv(SOON).await.unwrap();
    control.close().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let last = stream_entries(&mut conn, key).await;
    assert_eq!(last.len(), after.len() + 2);
    assert_eq!(last[..after.len()], after[..]);
    assert_eq!(last[after.len() + 1].1, hex("0108014e02046e756c6c"));
    assert!(
        last.iter().all(|(_, m)| m[0] != 1 || m[3] != 77),
        "no entry about the reader's client"
    );
    drop(writer);
    s.instance.shutdown().await.unwrap();
    assert_not_logged(&[&writer_token, &reader_token]);
}

#[tokio::test]
async fn refusals_are_401_before_the_upgrade() {
    let s = setup().await;
    let (other_private, _) = generate_key_pair().unwrap();
    let now = now_ms();
    let valid = s.token("alice");
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::json!({ "yuserid": "admin", "exp": now + 60_000 }).to_string()),
            parts[2]
        )
    };
    let token_cases: Vec<(&str, String)> = vec![
        (
            "expired (exp in ms, a minute ago)",
            sign(
                &s.private,
                &serde_json::json!({ "yuserid": "alice", "exp": now - 60_000 }),
            ),
        ),
        (
            "exp in seconds, an hour ahead",
            sign(
                &s.private,
                &serde_json::json!({ "yuserid": "alice", "exp": now / 1000 + 3600 }),
            ),
        ),
        (
            "signed by another key",
            mint_token(&other_private, "alice", Some(Duration::from_secs(60))).unwrap(),
        ),
        ("payload changed after signing", tampered),
        ("not a JWT", "not-a-token".to_string()),
        ("three parts of garbage", "abc.def.ghi".to_string()),
        (
            "no yuserid",
            sign(&s.private, &serde_json::json!({ "exp": now + 60_000 })),
        ),
        (
            "empty yuserid",
            sign(&s.private, &serde_json::json!({ "yuserid": "" })),
        ),
    ];
    // The token is good; the callback says no, or fails.
    s.callback.reply("ok", "alice", Reply::grant("rw"));
    s.callback.reply(
        "forbidden",
        "alice",
        Reply::Raw {
            status: 403,
            body: r#"{"yaccess":"rw"}"#.into(),
        },
    );
    s.callback.reply(
        "error",
        "alice",
        Reply::Raw {
            status: 500,
            body: r#"{"yaccess":"rw"}"#.into(),
        },
    );
    s.callback.reply(
        "badjson",
        "alice",
        Reply::Raw {
            status: 200,
            body: "this is not json".into(),
        },
    );
    s.callback.reply(
        "noaccess",
        "alice",
        Reply::Raw {
            status: 200,
            body: r#"{"yuserid":"alice"}"#.into(),
        },
    );
    s.callback.reply("admin", "alice", Reply::grant("admin"));
    s.callback.reply("upper", "alice", Reply::grant("RW"));
    s.callback.reply("slow", "alice", Reply::Hang);
    let room_cases = [
        ("callback answers 403", "forbidden"),
        ("callback answers 500", "error"),
        ("callback answers invalid JSON", "badjson"),
        ("callback answers without yaccess", "noaccess"),
        ("yaccess admin", "admin"),
        ("yaccess RW", "upper"),
        ("callback does not know the room", "unknown"),
    ];

    expect_401("no token", &s.url("ok"), None).await;
    expect_401("only other protocols", &s.url("ok"), Some("y-other, chat")).await;
    expect_401(
        "empty query token",
        &format!("{}?yauth=", s.url("ok")),
        None,
    )
    .await;
    for (case, token) in &token_cases {
        let by_query = format!("{}?yauth={token}", s.url("ok"));
        expect_401(case, &by_query, None).await;
        let entry = format!("y-other, yauth-{token}");
        expect_401(case, &s.url("ok"), Some(&entry)).await;
    }
    assert!(
        s.callback.paths().is_empty(),
        "a bad token never reaches the callback: {:?}",
        s.callback.paths()
    );
    for (case, room) in room_cases {
        expect_401(case, &format!("{}?yauth={valid}", s.url(room)), None).await;
        expect_401(case, &s.url(room), Some(&format!("yauth-{valid}"))).await;
    }
    for protocols in [None, Some(format!("yauth-{valid}"))] {
        let url = match &protocols {
            None => format!("{}?yauth={valid}", s.url("slow")),
            Some(_) => s.url("slow"),
        };
        let started = Instant::now();
        expect_401("callback hangs", &url, protocols.as_deref()).await;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(PERM_TIMEOUT_MS - 50)
                && elapsed < Duration::from_secs(3),
            "refused after {elapsed:?}"
        );
    }

    // Nothing of a refused connection reached Redis, and the right token still
    // opens the room.
    assert!(room_keys(&s.redis).await.is_empty());
    let (raw, _) = expect_accepted(&format!("{}?yauth={valid}", s.url("ok")), None).await;
    raw.close().await;

    // The callback is down.
    let closed_port = free_port().unwrap();
    let data = tempfile::tempdir().unwrap();
    let (down_private, down_public) = generate_key_pair().unwrap();
    let mut cfg = config(Some(&s.redis), data.path());
    cfg.auth.public_key = Some(down_public);
    cfg.auth.perm_callback = Some(format!("http://127.0.0.1:{closed_port}/perm"));
    cfg.auth.perm_timeout = PERM_TIMEOUT_MS;
    let down = start(&cfg).await;
    let down_token = mint_token(&down_private, "alice", None).unwrap();
    let room = url(&down, "ok");
    expect_401("callback down", &format!("{room}?yauth={down_token}"), None).await;
    expect_401("callback down", &room, Some(&format!("yauth-{down_token}"))).await;

    down.shutdown().await.unwrap();
    s.instance.shutdown().await.unwrap();
    let logged = captured_logs();
    assert!(
        logged.contains("connection refused"),
        "refusals are logged (the capture works)"
    );
    let mut tokens: Vec<&str> = token_cases
        .iter()
        .map(|(_, t)| t.as_str())
        .filter(|t| t.len() > 20)
        .collect();
    tokens.extend([valid.as_str(), down_token.as_str()]);
    assert_not_logged(&tokens);
}

// ---------------------------------------------------------------------------
// A Node `ws` client.

#[tokio::test]
async fn node_ws_client_offering_two_protocols_syncs() {
    let s = setup().await;
    s.callback.reply("node", "node-user", Reply::grant("rw"));
    s.callback.reply("node", "rust-user", Reply::grant("rw"));
    let node_token = s.token("node-user");
    let rust_token = s.token("rust-user");
    let rust = YClient::connect(&format!("{}?yauth={rust_token}", s.url("node")))
        .await
        .unwrap();
    rust.wait_synced(SOON).await.unwrap();
    rust.text_insert("t", 0, "from-rust;");

    let base = format!("ws://{}", s.instance.local_addr.unwrap());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/node/auth_provider_client.mjs"
    );
    let output = tokio::process::Command::new("node")
        .arg(script)
        .args([&base, "node", &node_token, "from-node;", "from-rust;"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .expect("node must be installed (ci/setup.sh installs it)");
    assert!(
        output.status.success(),
        "node client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(result["protocol"], format!("yauth-{node_token}"));
    let seen = result["text"].as_str().unwrap();
    assert!(seen.contains("from-rust;") && seen.contains("from-node;"));
    rust.wait_until("node's edit", SOON, |c| c.text("t").contains("from-node;"))
        .await
        .unwrap();
    assert_eq!(rust.text("t"), seen);
    assert_eq!(
        s.callback
            .paths()
            .iter()
            .filter(|p| *p == "/perm/node/node-user")
            .count(),
        1
    );
    drop(rust);
    s.instance.shutdown().await.unwrap();
    assert_not_logged(&[&node_token, &rust_token]);
}

// ---------------------------------------------------------------------------
// The binary: key and token tools, the open-server warning, the JavaScript server.

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_websocket"))
}

/// Runs `websocket auth …` and returns its stdout lines.
fn auth_tool(args: &[&str]) -> Vec<String> {
    let output = binary().arg("auth").args(args).output().unwrap();
    assert!(
        output.status.success(),
        "websocket auth {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A child process whose output is collected; killed when dropped.
struct Spawned {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    source: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let mut text = into.lock().unwrap();
            text.push_str(&line);
            text.push('\n');
        }
    })
}

impl Spawned {
    fn spawn(what: &str, mut command: Command) -> Self {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("{what} must be runnable: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    /// Waits until stdout has a line starting with `prefix`; returns its rest.
    fn wait_stdout_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .stdout
                .lock()
                .unwrap()
                .lines()
                .find_map(|l| l.strip_prefix(prefix).map(str::to_string));
            if let Some(rest) = found {
                return rest;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "exited with {status} before printing {prefix:?}: {}",
                    self.stderr.lock().unwrap()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {prefix:?} line in {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, wait for the exit, and return everything written to stderr.
    fn stop(mut self) -> String {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "did not stop within 10 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        stderr
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Rust server binary on a free loopback port with the given environment; the
/// test's own environment cannot reach it.
fn spawn_server(dir: &std::path::Path, env: &[(&str, &str)]) -> (Spawned, u16) {
    let port = free_port().unwrap();
    let mut command = binary();
    command
        .current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("WS_PORT", port.to_string())
        .env("WS_HOST", "127.0.0.1")
        .env("STORAGE_BACKEND", "fs")
        .env("STORAGE_DIR", dir.join("data"))
        .envs(env.iter().copied());
    let spawned = Spawned::spawn("websocket", command);
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    (spawned, port)
}

#[test]
fn keygen_prints_a_private_and_a_public_jwk() {
    let lines = auth_tool(&["keygen"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let private: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    let public: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
    for jwk in [&private, &public] {
        assert_eq!(jwk["kty"], "EC");
        assert_eq!(jwk["crv"], "P-384");
    }
    assert!(private["d"].is_string());
    assert!(
        public.get("d").is_none(),
        "the public key is public: {public}"
    );
    assert_eq!(private["x"], public["x"]);
    assert_eq!(private["y"], public["y"]);
    assert_ne!(auth_tool(&["keygen"])[0], lines[0], "a new pair each time");
}

/// `websocket auth token` makes tokens that this server (the binary, started with the
/// key `websocket auth keygen` printed) and the JavaScript reference server both
/// accept; both refuse a token signed with another key.
#[tokio::test]
async fn cli_tokens_open_the_rust_and_the_javascript_server() {
    let dir = tempfile::tempdir().unwrap();
    let keys = auth_tool(&["keygen"]);
    let (private, public) = (&keys[0], &keys[1]);
    let key_file = dir.path().join("key.json");
    std::fs::write(&key_file, private).unwrap();
    let key_arg = format!("@{}", key_file.display());
    let token = auth_tool(&[
        "token",
        "--private-key",
        &key_arg,
        "--user",
        "alice",
        "--ttl",
        "60",
    ]);
    assert_eq!(token.len(), 1, "{token:?}");
    let token = token[0].clone();
    let payload = payload_of(&token);
    assert_eq!(payload["yuserid"], "alice");
    let exp = payload["exp"].as_u64().unwrap();
    let now = now_ms();
    assert!(
        exp > now + 50_000 && exp <= now + 60_000,
        "exp in ms: {exp}"
    );
    let other_keys = auth_tool(&["keygen"]);
    std::fs::write(&key_file, &other_keys[0]).unwrap();
    let forged = auth_tool(&["token", "--private-key", &key_arg, "--user", "alice"]).remove(0);

    let redis = RedisServer::start().expect("redis-server must be installed");
    let callback = PermissionCallback::start().await.unwrap();
    callback.reply("cli", "alice", Reply::grant("rw"));
    let base = callback.url().to_string();

    let (rust_server, rust_port) = spawn_server(
        dir.path(),
        &[
            ("REDIS_URL", &redis.url()),
            ("AUTH_PUBLIC_KEY", public),
            ("AUTH_PERM_CALLBACK", &base),
            ("RUST_LOG", "trace"),
        ],
    );
    let mut js = Command::new("node");
    js.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../js-reference/bin/server.js"
    ))
    .env("REDIS", redis.url())
    .env("PORT", "0")
    .env("AUTH_PUBLIC_KEY", public)
    .env("AUTH_PERM_CALLBACK", &base);
    let mut js_server = Spawned::spawn("node", js);
    let js_port: u16 = js_server
        .wait_stdout_line("listening on ", Duration::from_secs(20))
        .trim()
        .parse()
        .unwrap();

    let rust_room = format!("ws://127.0.0.1:{rust_port}/cli");
    let js_room = format!("ws://127.0.0.1:{js_port}/cli");
    for room in [&rust_room, &js_room] {
        expect_401("forged", &format!("{room}?yauth={forged}"), None).await;
        expect_401("no token", room, None).await;
    }
    let (_, protocol) = expect_accepted(&js_room, Some(&format!("yauth-{token}"))).await;
    assert_eq!(
        protocol,
        Some(format!("yauth-{token}")),
        "the JavaScript server's answer"
    );

    let on_rust = YClient::connect(&format!("{rust_room}?yauth={token}"))
        .await
        .unwrap();
    let on_js = YClient::connect_with(&js_room, Doc::new(), Some(&format!("yauth-{token}")))
        .await
        .unwrap();
    on_rust.wait_synced(SOON).await.unwrap();
    on_js.wait_synced(SOON).await.unwrap();
    on_rust.text_insert("t", 0, "rust;");
    on_js
        .wait_until("the edit made on the Rust server", SOON, |c| {
            c.text("t") == "rust;"
        })
        .await
        .unwrap();
    on_js.text_insert("t", 5, "js;");
    on_rust
        .wait_until("the edit made on the JavaScript server", SOON, |c| {
            c.text("t") == "rust;js;"
        })
        .await
        .unwrap();
    drop((on_rust, on_js));

    let stderr = rust_server.stop();
    assert!(stderr.contains("connection authorized"), "traced: {stderr}");
    assert!(
        !stderr.contains("AUTH_PUBLIC_KEY"),
        "no open-server warning: {stderr}"
    );
    assert_not_in(&stderr, &[&token, &forged], "the server's stderr");
    drop(js_server);
}

#[tokio::test]
async fn without_a_public_key_the_server_says_it_is_open_in_one_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (server, port) = spawn_server(dir.path(), &[]);
    let client = YClient::connect(&format!("ws://127.0.0.1:{port}/open"))
        .await
        .unwrap();
    client.wait_synced(SOON).await.unwrap();
    drop(client);
    let stderr = server.stop();
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains("AUTH_PUBLIC_KEY"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "plain text when stderr is not a terminal: {stderr:?}"
    );
}
