//! Group e, auth parity: a Rust server and a JavaScript server on one Redis, both
//! given the same `AUTH_PUBLIC_KEY` and `AUTH_PERM_CALLBACK`, accept, refuse with
//! 401, and hold read-only the same tokens and permissions. Every case is one
//! upgrade request written by hand and sent to both servers at once; what is
//! compared is the HTTP status, the subprotocol answered and, for accepted
//! connections, whether the initial sync arrived and whether a write landed in
//! the room's stream. Where the two servers legitimately differ (the Rust server
//! is stricter, never looser), the difference itself is asserted; each one is
//! listed with its reason in `docs/conformance.md`.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use conformance::handshake::{self, Ended, Handshake};
use conformance::redis::RedisService;
use conformance::wire::{self, Msg};
use conformance::{content, Access, Fleet, Lang, Member, Reply, Sidecar};
use testkit::client::{awareness_message, sync_message};
use testkit::now_ms;
use yrs::{Doc, GetString, Text, Transact};

/// How long a handshake may take before it counts as not answered; longer than
/// the Rust server's callback timeout in these fleets.
const ANSWER_WAIT: Duration = Duration::from_secs(3);
/// The Rust server's permission callback timeout in these fleets (ms).
const RUST_CALLBACK_TIMEOUT_MS: &str = "1000";
/// How long a write may take to land in the stream.
const LAND_WAIT: Duration = Duration::from_secs(3);
/// How long to watch a stream before concluding that a write was dropped.
const DROP_WAIT: Duration = Duration::from_millis(700);

const HEADER: &str = r#"{"alg":"ES384","typ":"JWT"}"#;

/// A fleet of one Rust and one JavaScript server with auth, and `alice` granted
/// read-write everywhere.
async fn fleet() -> Fleet {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .auth()
        .env("AUTH_PERM_TIMEOUT", RUST_CALLBACK_TIMEOUT_MS)
        .start()
        .await
        .expect("a fleet of one Rust and one JavaScript server with auth");
    fleet.auth().unwrap().grant("alice", Access::ReadWrite);
    fleet
}

/// One upgrade request: the query string (without `?`) and the
/// `Sec-WebSocket-Protocol` header lines.
#[derive(Clone, Debug, Default)]
struct Req {
    query: Option<String>,
    protocols: Vec<String>,
}

impl Req {
    fn query(token: &str) -> Self {
        Self {
            query: Some(format!("yauth={token}")),
            protocols: Vec::new(),
        }
    }

    fn protocols(lines: &[String]) -> Self {
        Self {
            query: None,
            protocols: lines.to_vec(),
        }
    }

    fn none() -> Self {
        Self::default()
    }
}

/// What a server did with a request.
#[derive(Clone, Debug, PartialEq)]
enum Outcome {
    /// Answered this status without upgrading.
    Refused(u16),
    /// No answer within [`ANSWER_WAIT`].
    NoAnswer,
    /// Upgraded: the subprotocol answered, whether sync step 1 and 2 arrived
    /// within [`SYNC_WAIT`] (`false`: a slow server, the connection still open),
    /// and whether the client's update landed in the room's stream.
    Accepted {
        subprotocol: Option<String>,
        synced: bool,
        writes: bool,
    },
    /// Upgraded, then the connection ended before the probe was done: `during`
    /// the initial sync or the write, how (`Ended::Closed` with the server's close
    /// code, `Ended::Broken` with the client's error), and whether the server
    /// process had exited by then (a crash, not a closed connection).
    Closed {
        during: Stage,
        how: Ended,
        server_exited: bool,
    },
}

/// The part of a probe during which an upgraded connection ended.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Stage {
    InitialSync,
    Write,
}

/// How long the initial sync may take before a probe reports it missing.
const SYNC_WAIT: Duration = Duration::from_secs(5);

/// A read-write acceptance with this subprotocol answered.
fn writer(subprotocol: Option<&str>) -> Outcome {
    Outcome::Accepted {
        subprotocol: subprotocol.map(str::to_string),
        synced: true,
        writes: true,
    }
}

/// A read-only acceptance (no subprotocol: these requests use the query).
fn reader() -> Outcome {
    Outcome::Accepted {
        subprotocol: None,
        synced: true,
        writes: false,
    }
}

/// The stream key of a room whose name needs no escaping.
fn stream_key(room: &str) -> String {
    format!("y:room:{room}:index")
}

/// A stream entry as `XRANGE` returns it: id and (field, value) pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// The `m` values of a stream.
async fn stream(redis: &RedisService, room: &str) -> Result<Vec<Vec<u8>>> {
    let mut conn = redis.connection().await?;
    let entries: Vec<StreamEntry> = redis::cmd("XRANGE")
        .arg(stream_key(room))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await?;
    Ok(entries
        .into_iter()
        .flat_map(|(_, fields)| fields.into_iter().map(|(_, v)| v))
        .collect())
}

/// Whether `message` shows up in the room's stream within `wait`.
async fn lands(redis: &RedisService, room: &str, message: &[u8], wait: Duration) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        if stream(redis, room).await?.iter().any(|m| m == message) {
            return Ok(true);
        }
        if tokio::time::Instant::now() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A sync update no other probe sends: one text insert by a fresh client id.
fn unique_update(text: &str) -> Vec<u8> {
    static NEXT: AtomicU64 = AtomicU64::new(1000);
    let doc = Doc::with_client_id(NEXT.fetch_add(1, Ordering::Relaxed));
    let t = doc.get_or_insert_text("t");
    t.insert(&mut doc.transact_mut(), 0, text);
    content::state_v1(&doc)
}

/// Whether frames hold sync step 1 and, after it, a sync step 2 (the initial
/// sync). Stream messages may come first: y-redis subscribes a connection to its
/// room before it loads the document, so a read of the room's stream that
/// completes meanwhile reaches the new connection ahead of its initial sync.
fn synced(frames: &[Vec<u8>]) -> bool {
    let messages = wire::messages_of(frames);
    messages
        .iter()
        .position(|m| matches!(m, Msg::Step1(_)))
        .is_some_and(|step1| {
            messages[step1 + 1..]
                .iter()
                .any(|m| matches!(m, Msg::Update(_)))
        })
}

/// Send `req` to `server` for `room`, and for an accepted connection: wait for
/// the initial sync, send a unique update and see whether it lands in the stream
/// (waiting only [`DROP_WAIT`] when `expect_write` is false). The subprotocol is
/// reported with the token replaced by `<token>` when it is `yauth-<token>` for
/// the request's token.
async fn probe(
    server: &Member,
    redis: &RedisService,
    room: &str,
    req: &Req,
    expect_write: bool,
) -> Result<Outcome> {
    let mut url = server.url(room);
    if let Some(query) = &req.query {
        url = format!("{url}?{query}");
    }
    let lines: Vec<&str> = req.protocols.iter().map(String::as_str).collect();
    let Some(mut answer) = handshake::upgrade(&url, &lines, ANSWER_WAIT).await? else {
        return Ok(Outcome::NoAnswer);
    };
    if !answer.is_open() {
        return Ok(Outcome::Refused(answer.status()));
    }
    let subprotocol = answer.subprotocol().map(|p| redact(p, req));
    let closed = |during, how| Outcome::Closed {
        during,
        how,
        server_exited: server.exit_status().is_some(),
    };
    let (frames, ended) = answer.recv_until_ended(SYNC_WAIT, synced).await?;
    if matches!(ended, Ended::Closed { .. } | Ended::Broken(_)) {
        return Ok(closed(Stage::InitialSync, ended));
    }
    let update = sync_message(2, &unique_update(&format!("{} {room}", server.name())));
    if let Err(e) = answer.send(&update).await {
        return Ok(closed(Stage::Write, Ended::Broken(format!("{e:#}"))));
    }
    let wait = if expect_write { LAND_WAIT } else { DROP_WAIT };
    let writes = lands(redis, room, &update, wait).await?;
    answer.close().await;
    Ok(Outcome::Accepted {
        subprotocol,
        synced: synced(&frames),
        writes,
    })
}

/// The subprotocol answered, as `yauth-<token>` when it is exactly a `yauth-`
/// entry the request offered (so outcomes stay short and comparable), else as is.
fn redact(subprotocol: &str, req: &Req) -> String {
    let offered = req
        .protocols
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .any(|entry| entry.starts_with("yauth-") && entry == subprotocol);
    if offered {
        "yauth-<token>".to_string()
    } else {
        subprotocol.to_string()
    }
}

/// Both servers' outcomes for one request, probed at the same time.
async fn both(
    fleet: &Fleet,
    room: &str,
    req: &Req,
    expect_write: bool,
) -> Result<(Outcome, Outcome)> {
    let rust = fleet.server(Lang::Rust, 0)?;
    let js = fleet.server(Lang::Js, 0)?;
    let redis = fleet.redis();
    let (rust_room, js_room) = (format!("{room}-rust"), format!("{room}-js"));
    let (r, j) = tokio::join!(
        probe(rust, redis, &rust_room, req, expect_write),
        probe(js, redis, &js_room, req, expect_write)
    );
    Ok((
        r.with_context(|| format!("{room}: probing the Rust server"))?,
        j.with_context(|| format!("{room}: probing the JavaScript server"))?,
    ))
}

/// One case: a name (also the room), a request, and the outcome expected from
/// each server (the same one unless the case is a documented difference).
struct Case {
    name: &'static str,
    req: Req,
    rust: Outcome,
    js: Outcome,
}

impl Case {
    fn same(name: &'static str, req: Req, expected: Outcome) -> Self {
        Self {
            name,
            req,
            rust: expected.clone(),
            js: expected,
        }
    }
}

/// Run every case against both servers; collect every mismatch, then fail once
/// with all of them.
async fn run(fleet: &Fleet, cases: &[Case]) {
    let mut mismatches = Vec::new();
    for case in cases {
        let expect_write = matches!(
            (&case.rust, &case.js),
            (Outcome::Accepted { writes: true, .. }, _)
                | (_, Outcome::Accepted { writes: true, .. })
        );
        let (rust, js) = both(fleet, case.name, &case.req, expect_write)
            .await
            .unwrap_or_else(|e| panic!("{}: {e:#}", case.name));
        if rust != case.rust || js != case.js {
            mismatches.push(format!(
                "{}:\n  rust {rust:?} (expected {:?})\n  js   {js:?} (expected {:?})",
                case.name, case.rust, case.js
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

/// Valid read-write tokens are accepted by both servers the same way, wherever
/// the token is (query, subprotocol alone or beside other protocols) and
/// whoever signed it (the Rust library, the Rust CLI, Node's WebCrypto, the
/// harness's own signer); a token offered as subprotocol is answered with that
/// exact entry, a query token with the first subprotocol offered (if any), and a
/// write lands in the stream.
#[tokio::test]
async fn valid_tokens_are_accepted_alike() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let library = auth.token("alice").unwrap();
    let cli = auth.token_from_cli("alice", 3600).unwrap();
    let exp = now_ms() + 3_600_000;
    let node = auth
        .sign_with_node(&format!(r#"{{"yuserid":"alice","exp":{exp}}}"#))
        .unwrap();
    let harness = auth
        .sign(HEADER, &format!(r#"{{"yuserid":"alice","exp":{exp}}}"#))
        .unwrap();
    let no_exp = auth.sign(HEADER, r#"{"yuserid":"alice"}"#).unwrap();
    let null_exp = auth
        .sign(HEADER, r#"{"yuserid":"alice","exp":null}"#)
        .unwrap();
    let float_exp = auth
        .sign(HEADER, &format!(r#"{{"yuserid":"alice","exp":{exp}.5}}"#))
        .unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    // `=` padding, as Python's urlsafe_b64encode writes it; lib0 decodes it.
    let padded = auth
        .sign_encoded(
            &b64(HEADER),
            &format!("{}==", b64(r#"{"yuserid":"alice","x":"ab"}"#)),
        )
        .unwrap();
    let yauth = |t: &str| format!("yauth-{t}");
    let cases = [
        Case::same("query", Req::query(&library), writer(None)),
        Case::same(
            "protocol-alone",
            Req::protocols(&[yauth(&library)]),
            writer(Some("yauth-<token>")),
        ),
        Case::same(
            "protocol-then-other",
            Req::protocols(&[format!("{}, other", yauth(&library))]),
            writer(Some("yauth-<token>")),
        ),
        Case::same(
            "query-beside-other-protocol",
            Req {
                query: Some(format!("yauth={library}")),
                protocols: vec!["other".into()],
            },
            writer(Some("other")),
        ),
        Case::same(
            "query-beside-other-protocols",
            Req {
                query: Some(format!("yauth={library}")),
                protocols: vec!["first,second".into(), "third".into()],
            },
            writer(Some("first")),
        ),
        Case::same(
            "protocol-and-query",
            Req {
                query: Some(format!("yauth={library}")),
                protocols: vec![yauth(&library)],
            },
            writer(Some("yauth-<token>")),
        ),
        Case::same(
            "query-percent-encoded",
            Req {
                query: Some(format!("other=1&yauth={}", library.replace('.', "%2E"))),
                protocols: Vec::new(),
            },
            writer(None),
        ),
        Case::same("cli-token-query", Req::query(&cli), writer(None)),
        Case::same(
            "cli-token-protocol",
            Req::protocols(&[yauth(&cli)]),
            writer(Some("yauth-<token>")),
        ),
        Case::same("webcrypto-token-query", Req::query(&node), writer(None)),
        Case::same(
            "webcrypto-token-protocol",
            Req::protocols(&[yauth(&node)]),
            writer(Some("yauth-<token>")),
        ),
        Case::same("harness-signed-token", Req::query(&harness), writer(None)),
        Case::same("payload-padded", Req::query(&padded), writer(None)),
        Case::same("no-exp", Req::query(&no_exp), writer(None)),
        Case::same("exp-null", Req::query(&null_exp), writer(None)),
        Case::same("exp-float-ms", Req::query(&float_exp), writer(None)),
    ];
    run(&fleet, &cases).await;
    // Both servers asked the callback for every accepted request, with the room
    // as the raw path segment and the user id.
    let requests: BTreeSet<(String, String)> = auth.requests().into_iter().collect();
    for case in &cases {
        for lang in ["rust", "js"] {
            let room = format!("{}-{lang}", case.name);
            assert!(
                requests.contains(&(room.clone(), "alice".to_string())),
                "the callback was never asked for ({room}, alice): {requests:?}"
            );
        }
    }
}

/// A read-only (`r`) user gets the initial sync and others' updates on both
/// servers, and everything it sends is dropped: updates, step 2, awareness; its
/// close appends no awareness removal (while a writer's close does).
#[tokio::test]
async fn read_only_users_read_and_never_write() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let writer_token = auth.token("alice").unwrap();
    let reader_token = auth.user("rita", Access::ReadOnly).unwrap();
    let redis = fleet.redis();
    let mut summaries = Vec::new();
    for lang in [Lang::Rust, Lang::Js] {
        let server = fleet.server(lang, 0).unwrap();
        let room = format!("readonly-{lang}");
        let summary = read_only_session(server, redis, &room, &writer_token, &reader_token)
            .await
            .unwrap_or_else(|e| panic!("{lang}: {e:#}"));
        summaries.push(summary);
    }
    let expected = ReadOnlySummary {
        initial_sync_has_earlier_write: true,
        sees_later_write: true,
        appended_by_reader: 0,
        appended_at_reader_close: 0,
        appended_at_writer_close: 1,
    };
    assert_eq!(summaries[0], expected, "rust");
    assert_eq!(summaries[1], expected, "js");
}

/// What a read-only session did, compared between the two servers.
#[derive(Debug, PartialEq)]
struct ReadOnlySummary {
    initial_sync_has_earlier_write: bool,
    sees_later_write: bool,
    /// Stream entries added while the reader sent an update, a step 2 and
    /// awareness.
    appended_by_reader: usize,
    /// Stream entries added when the reader closed.
    appended_at_reader_close: usize,
    /// Stream entries added when the writer (who had set awareness) closed.
    appended_at_writer_close: usize,
}

/// The text `t` of a doc made of these v1 updates.
fn text_of(updates: &[Vec<u8>]) -> Result<String> {
    let doc = content::doc_from_updates(updates)?;
    let t = doc.get_or_insert_text("t");
    let txn = doc.transact();
    Ok(t.get_string(&txn))
}

/// The update payloads (step 2 and updates) in these frames.
fn updates_of(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    wire::messages_of(frames)
        .into_iter()
        .filter_map(|m| match m {
            Msg::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

/// Connect with `token` in the query and wait for the initial sync; returns the
/// connection and the frames of the initial sync.
async fn open(server: &Member, room: &str, token: &str) -> Result<(Handshake, Vec<Vec<u8>>)> {
    let url = format!("{}?yauth={token}", server.url(room));
    let mut answer = handshake::upgrade(&url, &[], ANSWER_WAIT)
        .await?
        .context("no answer to the upgrade")?;
    anyhow::ensure!(answer.is_open(), "refused with {}", answer.status());
    let frames = answer.recv_until(SYNC_WAIT, synced).await?;
    anyhow::ensure!(synced(&frames), "no initial sync: {frames:?}");
    Ok((answer, frames))
}

/// Wait until the room's stream holds at least `n` entries; returns its length.
async fn wait_len(redis: &RedisService, room: &str, n: usize) -> Result<usize> {
    let deadline = tokio::time::Instant::now() + LAND_WAIT;
    loop {
        let len = stream(redis, room).await?.len();
        if len >= n || tokio::time::Instant::now() > deadline {
            return Ok(len);
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// A writer writes and sets awareness; a reader (`r`) connects, reads, receives a
/// later write, sends an update, a step 2 and awareness, and closes; then the
/// writer closes. Counts what each step appended to the room's stream.
async fn read_only_session(
    server: &Member,
    redis: &RedisService,
    room: &str,
    writer_token: &str,
    reader_token: &str,
) -> Result<ReadOnlySummary> {
    let (mut writer, _) = open(server, room, writer_token).await?;
    let first = sync_message(2, &unique_update("first "));
    writer.send(&first).await?;
    anyhow::ensure!(
        lands(redis, room, &first, LAND_WAIT).await?,
        "the writer's update never landed"
    );
    writer
        .send(&awareness_message(&[(4242, 1, r#"{"user":"alice"}"#)]))
        .await?;
    wait_len(redis, room, 2).await?;

    // The reader: initial sync holds the earlier write.
    let (mut reader, initial) = open(server, room, reader_token).await?;
    let initial_sync_has_earlier_write = text_of(&updates_of(&initial))?.contains("first");

    // A later write by the writer reaches the reader.
    let second = unique_update("second ");
    writer.send(&sync_message(2, &second)).await?;
    let later = reader
        .recv_until(SYNC_WAIT, |f| {
            text_of(&updates_of(f))
                .unwrap_or_default()
                .contains("second")
        })
        .await?;
    let sees_later_write = text_of(&updates_of(&later))?.contains("second");

    // Everything the reader sends is dropped.
    let before = stream(redis, room).await?.len();
    reader
        .send(&sync_message(2, &unique_update("reader update ")))
        .await?;
    reader
        .send(&sync_message(1, &unique_update("reader step2 ")))
        .await?;
    reader
        .send(&awareness_message(&[(777, 1, r#"{"user":"rita"}"#)]))
        .await?;
    tokio::time::sleep(DROP_WAIT).await;
    let appended_by_reader = stream(redis, room).await?.len() - before;

    let before = stream(redis, room).await?.len();
    reader.close().await;
    tokio::time::sleep(DROP_WAIT).await;
    let appended_at_reader_close = stream(redis, room).await?.len() - before;

    let before = stream(redis, room).await?.len();
    writer.close().await;
    let appended_at_writer_close = wait_len(redis, room, before + 1).await? - before;

    Ok(ReadOnlySummary {
        initial_sync_has_earlier_write,
        sees_later_write,
        appended_by_reader,
        appended_at_reader_close,
        appended_at_writer_close,
    })
}

/// Tokens and permissions every server must refuse are refused by both with 401
/// before the upgrade: no token, expired ones (`exp` in ms in the past, and a
/// standard `exp` in seconds, which y-redis reads as ms), another key, malformed
/// tokens, tokens without a user, and callbacks that do not grant access.
#[tokio::test]
async fn refusals_are_401_alike() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let good = auth.token("alice").unwrap();
    let now = now_ms();
    let exp = now + 3_600_000;
    let signed = |payload: &str| auth.sign(HEADER, payload).unwrap();
    let signed_with_header = |header: &str, payload: &str| auth.sign(header, payload).unwrap();
    let (other_private, _) = websocket::auth::generate_key_pair().unwrap();
    let other_key =
        websocket::auth::mint_token(&other_private, "alice", Some(Duration::from_secs(3600)))
            .unwrap();
    let parts: Vec<&str> = good.split('.').collect();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    for (user, status, body) in [
        ("notjson", 200, "this is not json"),
        ("notjson403", 403, "forbidden"),
        ("emptybody", 200, ""),
        ("jsonnull", 200, "null"),
    ] {
        auth.reply_user(
            user,
            Reply::Raw {
                status,
                body: body.to_string(),
            },
        );
    }
    let token_for = |user: &str| auth.token(user).unwrap();
    let refused = Outcome::Refused(401);
    let cases = [
        Case::same("no-token", Req::none(), refused.clone()),
        Case::same(
            "no-token-other-protocol",
            Req::protocols(&["other".to_string()]),
            refused.clone(),
        ),
        Case::same(
            "query-empty",
            Req {
                query: Some("yauth=".into()),
                protocols: Vec::new(),
            },
            refused.clone(),
        ),
        Case::same(
            "query-bare",
            Req {
                query: Some("yauth".into()),
                protocols: Vec::new(),
            },
            refused.clone(),
        ),
        Case::same(
            "exp-ms-past",
            Req::query(&signed(&format!(
                r#"{{"yuserid":"alice","exp":{}}}"#,
                now - 60_000
            ))),
            refused.clone(),
        ),
        Case::same(
            "exp-ms-past-webcrypto",
            Req::query(
                &auth
                    .sign_with_node(&format!(r#"{{"yuserid":"alice","exp":{}}}"#, now - 60_000))
                    .unwrap(),
            ),
            refused.clone(),
        ),
        Case::same(
            "exp-seconds-future",
            Req::query(&signed(&format!(
                r#"{{"yuserid":"alice","exp":{}}}"#,
                now / 1000 + 3600
            ))),
            refused.clone(),
        ),
        Case::same(
            "exp-seconds-future-protocol",
            Req::protocols(&[format!(
                "yauth-{}",
                signed(&format!(
                    r#"{{"yuserid":"alice","exp":{}}}"#,
                    now / 1000 + 3600
                ))
            )]),
            refused.clone(),
        ),
        Case::same("wrong-key", Req::query(&other_key), refused.clone()),
        Case::same("garbage", Req::query("garbage"), refused.clone()),
        Case::same("two-parts", Req::query("abc.def"), refused.clone()),
        Case::same(
            "signature-truncated",
            Req::query(&format!("{}.{}.{}", parts[0], parts[1], &parts[2][..40])),
            refused.clone(),
        ),
        Case::same(
            "signature-not-base64",
            Req::query(&format!("{}.{}.***", parts[0], parts[1])),
            refused.clone(),
        ),
        Case::same(
            "payload-tampered",
            Req::query(&format!(
                "{}.{}.{}",
                parts[0],
                b64(&format!(r#"{{"yuserid":"admin","exp":{exp}}}"#)),
                parts[2]
            )),
            refused.clone(),
        ),
        Case::same(
            "payload-not-json",
            Req::query(&signed("not json")),
            refused.clone(),
        ),
        Case::same(
            "payload-array",
            Req::query(&signed("[1,2]")),
            refused.clone(),
        ),
        Case::same("payload-null", Req::query(&signed("null")), refused.clone()),
        Case::same(
            "header-not-json",
            Req::query(&signed_with_header(
                "not json",
                &format!(r#"{{"yuserid":"alice","exp":{exp}}}"#),
            )),
            refused.clone(),
        ),
        Case::same(
            "no-yuserid",
            Req::query(&signed(&format!(r#"{{"exp":{exp}}}"#))),
            refused.clone(),
        ),
        Case::same(
            "yuserid-null",
            Req::query(&signed(&format!(r#"{{"yuserid":null,"exp":{exp}}}"#))),
            refused.clone(),
        ),
        Case::same(
            "yuserid-empty",
            Req::query(&signed(&format!(r#"{{"yuserid":"","exp":{exp}}}"#))),
            refused.clone(),
        ),
        Case::same(
            "user-unknown-to-callback",
            Req::query(&token_for("mallory")),
            refused.clone(),
        ),
        Case::same(
            "callback-403-not-json",
            Req::query(&token_for("notjson403")),
            refused.clone(),
        ),
        Case::same(
            "callback-invalid-json",
            Req::query(&token_for("notjson")),
            refused.clone(),
        ),
        Case::same(
            "callback-empty-body",
            Req::query(&token_for("emptybody")),
            refused.clone(),
        ),
        Case::same(
            "callback-json-null",
            Req::query(&token_for("jsonnull")),
            refused.clone(),
        ),
        Case::same(
            "bad-protocol-token-beats-good-query",
            Req {
                query: Some(format!("yauth={good}")),
                protocols: vec!["yauth-garbage".into()],
            },
            refused.clone(),
        ),
        Case::same(
            "empty-protocol-token-beats-good-query",
            Req {
                query: Some(format!("yauth={good}")),
                protocols: vec!["yauth-".into()],
            },
            refused.clone(),
        ),
        Case::same(
            "yauth-not-first-in-entry",
            Req::protocols(&[format!("other yauth-{good}")]),
            refused.clone(),
        ),
    ];
    run(&fleet, &cases).await;
}

/// Where the two servers differ on purpose, the difference itself: the Rust
/// server refuses what y-redis lets through (a token of four parts, a callback
/// answer that is not 2xx or grants neither `rw` nor `r`, claims of the wrong
/// type, a JOSE header that is not ES384, a token part that is not whole
/// base64url), stops waiting for a callback that hangs, and reads
/// `Sec-WebSocket-Protocol` as the HTTP list it is (an entry after `, `, a second
/// header line), answering with the entry that carried the token.
#[tokio::test]
async fn documented_differences() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let exp = now_ms() + 3_600_000;
    let signed = |header: &str, payload: &str| auth.sign(header, payload).unwrap();
    auth.reply_user(
        "xuser",
        Reply::Raw {
            status: 200,
            body: r#"{"yaccess":"x","yuserid":"xuser"}"#.into(),
        },
    );
    auth.reply_user(
        "noaccess",
        Reply::Raw {
            status: 200,
            body: r#"{"yuserid":"noaccess"}"#.into(),
        },
    );
    for (user, status) in [("forbidden", 403), ("failing", 500)] {
        auth.reply_user(
            user,
            Reply::Raw {
                status,
                body: format!(r#"{{"yaccess":"rw","yuserid":"{user}"}}"#),
            },
        );
    }
    auth.grant("7", Access::ReadWrite);
    auth.reply_user("hanger", Reply::Hang);
    let good = auth.token("alice").unwrap();
    let refused = Outcome::Refused(401);
    let differ = |name, req, rust: &Outcome, js: Outcome| Case {
        name,
        req,
        rust: rust.clone(),
        js,
    };
    let cases = [
        differ(
            "yaccess-other",
            Req::query(&auth.token("xuser").unwrap()),
            &refused,
            reader(),
        ),
        differ(
            "yaccess-missing",
            Req::query(&auth.token("noaccess").unwrap()),
            &refused,
            reader(),
        ),
        differ(
            "exp-string",
            Req::query(&signed(HEADER, r#"{"yuserid":"alice","exp":"soon"}"#)),
            &refused,
            writer(None),
        ),
        differ(
            "exp-numeric-string",
            Req::query(&signed(
                HEADER,
                &format!(r#"{{"yuserid":"alice","exp":"{exp}"}}"#),
            )),
            &refused,
            writer(None),
        ),
        differ(
            "yuserid-number",
            Req::query(&signed(HEADER, &format!(r#"{{"yuserid":7,"exp":{exp}}}"#))),
            &refused,
            writer(None),
        ),
        differ(
            "header-alg-hs256",
            Req::query(&signed(
                r#"{"alg":"HS256","typ":"JWT"}"#,
                &format!(r#"{{"yuserid":"alice","exp":{exp}}}"#),
            )),
            &refused,
            writer(None),
        ),
        differ(
            "header-without-alg",
            Req::query(&signed(
                r#"{"typ":"JWT"}"#,
                &format!(r#"{{"yuserid":"alice","exp":{exp}}}"#),
            )),
            &refused,
            writer(None),
        ),
        differ(
            "four-parts",
            Req::query(&format!("{good}.x")),
            &refused,
            writer(None),
        ),
        differ(
            "callback-403-granting",
            Req::query(&auth.token("forbidden").unwrap()),
            &refused,
            writer(None),
        ),
        differ(
            "callback-500-granting",
            Req::query(&auth.token("failing").unwrap()),
            &refused,
            writer(None),
        ),
        differ(
            "other-comma-space-protocol",
            Req::protocols(&[format!("other, yauth-{good}")]),
            &writer(Some("yauth-<token>")),
            refused.clone(),
        ),
        differ(
            "protocol-second-header-line",
            Req::protocols(&["other".to_string(), format!("yauth-{good}")]),
            &writer(Some("yauth-<token>")),
            refused.clone(),
        ),
        differ(
            "other-comma-protocol",
            Req::protocols(&[format!("other,yauth-{good}")]),
            &writer(Some("yauth-<token>")),
            writer(Some("other")),
        ),
        differ(
            "signature-dangling-char",
            Req::query(&format!("{}A", auth.token("alice").unwrap())),
            &refused,
            writer(None),
        ),
        differ(
            "callback-hangs",
            Req::query(&auth.token("hanger").unwrap()),
            &refused,
            Outcome::NoAnswer,
        ),
    ];
    run(&fleet, &cases).await;
}

/// User ids reach the callback as one path segment on both servers when they need
/// no escaping or only the escaping a URL parser applies anyway (space, non-ASCII);
/// with `/`, `?`, `#` or `%` the JavaScript server pastes the raw id into the URL
/// (adding path segments, a query, a fragment, or a bare `%`), while the Rust
/// server percent-encodes it, so the callback sees the id itself.
#[tokio::test]
async fn user_ids_reach_the_callback() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let exp = now_ms() + 3_600_000;
    // (user id, what the Rust server asks, what the JavaScript server asks: room
    // suffix and user segment), and whether the callback grants what is asked.
    let cases = [
        ("a b", ("", "a%20b"), ("", "a%20b"), true),
        ("\u{e9}", ("", "%C3%A9"), ("", "%C3%A9"), true),
        ("a/b", ("", "a%2Fb"), ("/a", "b"), false),
        ("a?b", ("", "a%3Fb"), ("", "a"), false),
        ("a#b", ("", "a%23b"), ("", "a"), false),
        ("100%", ("", "100%25"), ("", "100%"), false),
    ];
    for (i, (user, (_, rust_user), (_, js_user), granted)) in cases.iter().enumerate() {
        if *granted {
            auth.grant(rust_user, Access::ReadWrite);
            auth.grant(js_user, Access::ReadWrite);
        }
        let token = auth
            .sign(HEADER, &format!(r#"{{"yuserid":"{user}","exp":{exp}}}"#))
            .unwrap();
        let room = format!("user{i}");
        let expected = if *granted {
            writer(None)
        } else {
            Outcome::Refused(401)
        };
        let (rust, js) = both(&fleet, &room, &Req::query(&token), *granted)
            .await
            .unwrap();
        assert_eq!((&rust, &js), (&expected, &expected), "user id {user:?}");
    }
    let requests = auth.requests();
    for (i, (user, (rust_suffix, rust_user), (js_suffix, js_user), _)) in cases.iter().enumerate() {
        for (lang, suffix, asked) in [("rust", rust_suffix, rust_user), ("js", js_suffix, js_user)]
        {
            let expected = (format!("user{i}-{lang}{suffix}"), asked.to_string());
            let prefix = format!("user{i}-{lang}");
            let seen: Vec<_> = requests
                .iter()
                .filter(|(room, _)| room.starts_with(&prefix))
                .collect();
            assert_eq!(seen, [&expected], "{lang} asking for user id {user:?}");
        }
    }
}

/// A room is one raw, non-empty path segment: a path of several segments is
/// refused with 404 by both servers before any auth. The empty room (`/`) gets 404
/// from y-redis (its `/:room` route does not match an empty segment); with auth on
/// the Rust server refuses it with 401 (an empty segment would change the
/// callback URL), token or not.
#[tokio::test]
async fn rooms_are_one_path_segment() {
    let fleet = fleet().await;
    let token = fleet.auth().unwrap().token("alice").unwrap();
    let rust = fleet.server(Lang::Rust, 0).unwrap();
    let js = fleet.server(Lang::Js, 0).unwrap();
    let redis = fleet.redis();
    for (room, expect_write, rust_expected, js_expected) in [
        (
            "nested/room",
            false,
            Outcome::Refused(404),
            Outcome::Refused(404),
        ),
        (
            "nested/",
            false,
            Outcome::Refused(404),
            Outcome::Refused(404),
        ),
        ("", false, Outcome::Refused(401), Outcome::Refused(404)),
    ] {
        for req in [Req::query(&token), Req::none()] {
            let (r, j) = tokio::join!(
                probe(rust, redis, room, &req, expect_write),
                probe(js, redis, room, &req, expect_write)
            );
            assert_eq!(r.unwrap(), rust_expected, "rust, room {room:?}, {req:?}");
            assert_eq!(j.unwrap(), js_expected, "js, room {room:?}, {req:?}");
        }
    }
}

/// A permission callback that is down refuses every connection with 401 on both
/// servers, tokens valid or not.
#[tokio::test]
async fn callback_down_is_401_alike() {
    let fleet = fleet().await;
    let auth = fleet.auth().unwrap();
    let token = auth.token("alice").unwrap();
    // Up: accepted (this also leaves a kept-alive connection to the callback in
    // both servers, which must not outlive the outage).
    let (rust, js) = both(&fleet, "before-outage", &Req::query(&token), true)
        .await
        .unwrap();
    assert_eq!((rust, js), (writer(None), writer(None)));
    auth.stop_callback().await.unwrap();
    let cases = [
        Case::same("down-query", Req::query(&token), Outcome::Refused(401)),
        Case::same(
            "down-protocol",
            Req::protocols(&[format!("yauth-{token}")]),
            Outcome::Refused(401),
        ),
        Case::same("down-no-token", Req::none(), Outcome::Refused(401)),
    ];
    run(&fleet, &cases).await;
}

/// Keys from `websocket auth keygen` work where y-redis uses them: lib0's
/// `ecdsa.importKeyJwk` (which takes the usages from `key_ops`) imports both, as
/// y-redis's server and token tools do, verifies a token from `websocket auth
/// token` and signs one; a fleet whose JavaScript server imports the public key
/// that way starts, and both servers accept the CLI's and lib0's tokens. Without
/// `key_ops` the same public key is refused by lib0 (WebCrypto will not give a
/// public key the `sign` usage), which is why the CLI writes it.
#[tokio::test]
async fn cli_keys_work_with_lib0_and_both_servers() {
    let fleet = Fleet::builder()
        .rust_servers(1)
        .js_servers(1)
        .auth_with_cli_keys()
        .env("AUTH_PERM_TIMEOUT", RUST_CALLBACK_TIMEOUT_MS)
        .start()
        .await
        .expect("a fleet with keys from websocket auth keygen starts");
    let auth = fleet.auth().unwrap();
    auth.grant("alice", Access::ReadWrite);
    auth.grant("lib0-user", Access::ReadWrite);
    let public: serde_json::Value = serde_json::from_str(auth.public_jwk()).unwrap();
    let private: serde_json::Value = serde_json::from_str(auth.private_jwk()).unwrap();
    assert_eq!(public["key_ops"], serde_json::json!(["verify"]));
    assert_eq!(private["key_ops"], serde_json::json!(["sign"]));

    let cli_token = auth.token_from_cli("alice", 3600).unwrap();
    let sidecar = Sidecar::start().expect("the sidecar starts");
    let lib0 = sidecar
        .call(
            "lib0Jwt",
            serde_json::json!({
                "publicKey": auth.public_jwk(),
                "privateKey": auth.private_jwk(),
                "token": cli_token,
                "payload": { "yuserid": "lib0-user" },
            }),
        )
        .await
        .expect("lib0 imports both keys and verifies the CLI's token");
    assert_eq!(lib0["verified"]["yuserid"], "alice");
    let lib0_token = lib0["signed"].as_str().expect("lib0 signed a token");

    let mut without_key_ops = public.clone();
    without_key_ops.as_object_mut().unwrap().remove("key_ops");
    let refused = sidecar
        .call(
            "lib0Jwt",
            serde_json::json!({ "publicKey": without_key_ops.to_string(), "token": cli_token }),
        )
        .await
        .expect_err("lib0 refuses a public key without key_ops");
    assert!(
        format!("{refused:#}").contains("Unsupported key usage"),
        "{refused:#}"
    );

    let cases = [
        Case::same("cli-keys-query", Req::query(&cli_token), writer(None)),
        Case::same(
            "cli-keys-protocol",
            Req::protocols(&[format!("yauth-{cli_token}")]),
            writer(Some("yauth-<token>")),
        ),
        Case::same("cli-keys-lib0-token", Req::query(lib0_token), writer(None)),
    ];
    run(&fleet, &cases).await;
}
