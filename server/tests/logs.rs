//! `LOG_FORMAT=json`: one JSON object per line, a connection's lines carrying
//! the connection's fields.

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use testkit::callback::Reply;
use testkit::{free_port, wait_for_port, PermissionCallback, ServiceProcess};
use websocket::auth::{generate_key_pair, mint_token};

/// The server binary on the embedded bus with `LOG_FORMAT=json` at debug,
/// listening on its port, with `env` set too; its stderr lines are collected
/// by a thread.
struct Logged {
    port: u16,
    process: ServiceProcess,
    lines: Arc<Mutex<Vec<String>>>,
    reader: std::thread::JoinHandle<()>,
    _data: tempfile::TempDir,
}

fn spawn_logged(env: &[(&str, &str)]) -> Logged {
    let data = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_websocket"));
    command
        .current_dir(data.path())
        .env_remove("REDIS_URL")
        .env_remove("REDIS")
        .env("WS_PORT", port.to_string())
        .env("WS_HOST", "127.0.0.1")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "websocket=debug")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut process = ServiceProcess::spawn_with_stdio("websocket", command).unwrap();
    let stderr = process
        .child_mut()
        .and_then(|child| child.stderr.take())
        .expect("stderr piped");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = std::thread::spawn({
        let lines = Arc::clone(&lines);
        move || {
            for line in std::io::BufReader::new(stderr).lines() {
                lines.lock().unwrap().push(line.unwrap());
            }
        }
    });
    wait_for_port(port, Duration::from_secs(20)).unwrap();
    Logged {
        port,
        process,
        lines,
        reader,
        _data: data,
    }
}

impl Logged {
    /// Stop the server (it must exit 0) and return every line it wrote.
    async fn stop(self) -> String {
        let Logged {
            mut process,
            lines,
            reader,
            ..
        } = self;
        let status =
            tokio::task::spawn_blocking(move || process.terminate(Duration::from_secs(10)))
                .await
                .unwrap()
                .expect("stops");
        assert!(status.success(), "exit status {status}");
        reader.join().unwrap();
        let text = lines.lock().unwrap().join("\n");
        text
    }
}

#[tokio::test]
async fn json_logs_carry_the_connection_fields() {
    let logged = spawn_logged(&[]);
    let port = logged.port;
    let lines = Arc::clone(&logged.lines);
    let count = |message: &str| {
        let needle = format!("\"message\":\"{message}\"");
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(&needle))
            .count()
    };

    // A scripted session: two editors, one leaves by closing, one by dropping
    // its socket.
    let room = format!("ws://127.0.0.1:{port}/logged");
    let (a, b) = two_editors_after(&room, "hello").await;
    drop(a);
    drop(b);
    let raw = RawClient::connect(&room).await.unwrap();
    raw.close().await;
    eventually("every connection's end logged", SOON, || async {
        count("client went away") == 2 && count("client disconnected") == 1
    })
    .await;

    let text = logged.stop().await;

    let mut connection_lines = 0;
    let mut ids = std::collections::HashSet::new();
    let mut messages = Vec::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not one JSON object ({err}): {line}"));
        assert!(value.is_object(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        if value["target"] != "websocket::connection" {
            continue;
        }
        connection_lines += 1;
        let span = &value["span"];
        assert_eq!(span["name"], "connection", "{line}");
        assert_eq!(span["room"], "logged", "{line}");
        assert!(
            span["peer"]
                .as_str()
                .is_some_and(|p| p.starts_with("127.0.0.1:")),
            "{line}"
        );
        let id = span["id"].as_u64().unwrap_or_else(|| panic!("{line}"));
        ids.insert(id);
        assert_eq!(
            value["level"], "DEBUG",
            "clients leaving normally are debug: {line}"
        );
        messages.push(
            value["fields"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        );
    }
    assert_eq!(ids.len(), 3, "three connections logged apart:\n{text}");
    assert!(connection_lines >= 6, "{text}");
    for expected in ["document loaded", "client disconnected", "client went away"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} line:\n{text}"
        );
    }
}

#[tokio::test]
async fn with_auth_a_connections_lines_carry_its_user() {
    let callback = PermissionCallback::start().await.unwrap();
    callback.reply("shared", "alice", Reply::grant("rw"));
    callback.reply("shared", "bob", Reply::grant("r"));
    let (private, public) = generate_key_pair().unwrap();
    let logged = spawn_logged(&[
        ("AUTH_PUBLIC_KEY", &public),
        ("AUTH_PERM_CALLBACK", callback.url()),
    ]);
    let room = format!("ws://127.0.0.1:{}/shared", logged.port);
    let token = |user: &str| mint_token(&private, user, Some(Duration::from_secs(60))).unwrap();
    let alice = YClient::connect(&format!("{room}?yauth={}", token("alice")))
        .await
        .unwrap();
    let bob = YClient::connect(&format!("{room}?yauth={}", token("bob")))
        .await
        .unwrap();
    alice.wait_synced(SOON).await.unwrap();
    bob.wait_synced(SOON).await.unwrap();
    alice.text_insert("t", 0, "hi");
    bob.wait_until("alice's edit", SOON, |c| c.text("t") == "hi")
        .await
        .unwrap();
    drop(alice);
    drop(bob);
    let lines = Arc::clone(&logged.lines);
    eventually("both ends logged", SOON, || async {
        lines
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains("\"message\":\"client went away\""))
            .count()
            == 2
    })
    .await;
    let text = logged.stop().await;

    // Every connection line names its user; each connection one user.
    let mut users = std::collections::HashMap::<u64, String>::new();
    for line in text.lines() {
        let value: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|err| panic!("not one JSON object ({err}): {line}"));
        if value["target"] != "websocket::connection" {
            continue;
        }
        let span = &value["span"];
        assert_eq!(span["name"], "connection", "{line}");
        let user = span["user"]
            .as_str()
            .unwrap_or_else(|| panic!("no user: {line}"));
        let id = span["id"].as_u64().unwrap_or_else(|| panic!("{line}"));
        let known = users.entry(id).or_insert_with(|| user.to_string());
        assert_eq!(known, user, "one user per connection: {line}");
    }
    let mut seen: Vec<&str> = users.values().map(String::as_str).collect();
    seen.sort();
    assert_eq!(seen, ["alice", "bob"], "{text}");
}
