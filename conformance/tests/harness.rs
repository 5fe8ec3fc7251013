//! The harness itself: fleets of every shape start, their members talk to each
//! other, and the choices later groups rely on (storage, auth) reach both
//! languages.

use std::time::Duration;

use conformance::{Access, Fleet, Lang, Sidecar, Storage};
use testkit::{RawClient, YClient};

const SOON: Duration = Duration::from_secs(10);

#[tokio::test]
async fn mixed_fleet_relays_between_languages_and_clients() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .start()
        .await
        .unwrap();
    let sidecar = Sidecar::start().unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();

    let a = YClient::connect(&rust.url("smoke")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    let b = sidecar
        .open_client("b", &js.ws_base(), "smoke", None)
        .await
        .unwrap();
    a.text_insert("t", 0, "from rust");
    b.edit(&[conformance::EditOp::MapSet {
        key: "k".into(),
        value: serde_json::json!(1),
    }])
    .await
    .unwrap();
    a.wait_until("the JS client's edit", SOON, |c| {
        c.content()["m"]["k"] == 1.0
    })
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let content = b.content().await.unwrap();
        if content["t"] == "from rust" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the JS client never saw the Rust client's text: {content}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.close().await.unwrap();
}

#[tokio::test]
async fn memory_storage_is_refused_for_mixed_fleets_with_workers() {
    let err = Fleet::builder()
        .rust_servers(1)
        .js_workers(1)
        .start()
        .await
        .err()
        .expect("refused");
    assert!(err.to_string().contains("shared storage"), "{err}");
}

/// Auth reaches both languages: a granted user connects to either, a user the
/// callback does not know gets 401 from either, and both asked the callback.
#[tokio::test]
async fn auth_and_postgres_reach_both_languages() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .rust_workers(1)
        .js_workers(1)
        .storage(Storage::Postgres)
        .auth()
        .start()
        .await
        .unwrap();
    let auth = fleet.auth().unwrap();
    let alice = auth.user("alice", Access::ReadWrite).unwrap();
    let mallory = auth.token("mallory").unwrap();
    for lang in [Lang::Rust, Lang::Js] {
        let server = fleet.server(lang, 0).unwrap();
        let ok = format!("{}?yauth={alice}", server.url("locked"));
        let client = YClient::connect(&ok).await.unwrap();
        client.wait_synced(SOON).await.unwrap();
        let refused = format!("{}?yauth={mallory}", server.url("locked"));
        let err = RawClient::connect(&refused).await.err().expect("refused");
        assert!(format!("{err:#}").contains("401"), "{lang}: {err:#}");
    }
    let asked: Vec<String> = auth.requests().into_iter().map(|(_, u)| u).collect();
    assert_eq!(asked, ["alice", "mallory", "alice", "mallory"]);
    // The storage both languages were given exists.
    let tables = fleet
        .postgres()
        .unwrap()
        .psql("SELECT count(*) FROM yredis_docs_v1")
        .unwrap();
    assert_eq!(tables.trim(), "0");
}

/// Both languages accept the S3 settings (each checks its bucket at start).
#[tokio::test]
async fn s3_fleet_starts() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .rust_workers(1)
        .js_workers(1)
        .storage(Storage::S3)
        .start()
        .await
        .unwrap();
    for member in fleet.members() {
        assert!(member.is_running(), "{} stopped", member.name());
    }
    assert!(fleet.s3().is_some());
}

/// A server that answers every upgrade request in one scripted way.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// `401 Unauthorized`.
    Refuse,
    /// `101`, then a close frame with code 1001 and the end of the stream.
    UpgradeThenClose,
    /// `101`, then the socket is dropped without a close frame.
    UpgradeThenDrop,
    /// `101`, then nothing (the connection stays open).
    UpgradeThenSilence,
    /// No answer at all.
    Silence,
}

async fn scripted_server(script: Script) -> std::net::SocketAddr {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if socket.read(&mut byte).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(byte[0]);
                }
                let upgraded = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
                match script {
                    Script::Refuse => {
                        let _ = socket
                            .write_all(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
                            .await;
                    }
                    Script::UpgradeThenClose => {
                        let _ = socket.write_all(upgraded).await;
                        let _ = socket.write_all(&[0x88, 0x02, 0x03, 0xe9]).await;
                        let _ = socket.shutdown().await;
                        tokio::time::sleep(SOON).await;
                    }
                    Script::UpgradeThenDrop => {
                        let _ = socket.write_all(upgraded).await;
                    }
                    Script::UpgradeThenSilence => {
                        let _ = socket.write_all(upgraded).await;
                        tokio::time::sleep(SOON).await;
                    }
                    Script::Silence => tokio::time::sleep(SOON).await,
                }
            });
        }
    });
    addr
}

/// The hand-written handshake tells a refusal, a server that does not answer, a
/// connection closed (with a close frame, or dropped) after the upgrade and a slow
/// one apart, so that a probe reports which of them it met.
#[tokio::test]
async fn handshake_tells_refused_closed_and_slow_apart() {
    use conformance::handshake::{self, Ended};
    let wait = Duration::from_millis(500);
    let url = |addr: std::net::SocketAddr| format!("ws://{addr}/room");

    let refused = handshake::upgrade(&url(scripted_server(Script::Refuse).await), &[], wait)
        .await
        .unwrap()
        .expect("an answer");
    assert_eq!((refused.status(), refused.is_open()), (401, false));

    let silent = handshake::upgrade(&url(scripted_server(Script::Silence).await), &[], wait)
        .await
        .unwrap();
    assert!(silent.is_none(), "no answer is told apart: {silent:?}");

    for (script, expected) in [
        (Script::UpgradeThenClose, "closed"),
        (Script::UpgradeThenDrop, "broken"),
        (Script::UpgradeThenSilence, "timed out"),
    ] {
        let mut answer = handshake::upgrade(&url(scripted_server(script).await), &[], wait)
            .await
            .unwrap()
            .expect("an answer");
        assert!(answer.is_open(), "{script:?}");
        let (frames, ended) = answer.recv_until_ended(wait, |_| false).await.unwrap();
        assert!(frames.is_empty());
        let seen = match &ended {
            Ended::Closed { code: Some(1001) } => "closed",
            Ended::Broken(_) => "broken",
            Ended::TimedOut => "timed out",
            _ => "something else",
        };
        assert_eq!(seen, expected, "{script:?}: {ended:?}");
    }
}
