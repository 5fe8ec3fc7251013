//! Group a, stream format: the same scripted raw-client sessions against a
//! JavaScript fleet and a Rust fleet (each on its own fresh Redis) leave the same
//! Redis contents: keys, field names, entry bytes, worker tasks and consumer-group
//! state, once stream ids are replaced by their rank. The normalised dumps are
//! snapshots, and the captured y-redis 0.1.6 session is reproduced exactly.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::dump::{self, Dump};
use conformance::{paths, Fleet, Lang, Role};
use redis::aio::MultiplexedConnection;
use testkit::{hex, xlen, RawClient};
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact};

const SOON: Duration = Duration::from_secs(10);
/// The workers' default task debounce: a task is claimed once it has waited
/// this long, so a second pass comes no sooner than this after the first.
const TASK_DEBOUNCE: Duration = Duration::from_secs(10);

/// The room of the captured session: path `/fixture%20room`.
const FIXTURE_ROOM: &str = "fixture%20room";
const FIXTURE_KEY: &str = "y:room:fixture%2520room:index";
/// The poison step 2 of y-redis's defect 4, as it lands in the stream.
const POISON_ENTRY: &str = "00020100";

/// Wait until the stream `key` holds `n` entries (so steps happen in order).
async fn wait_len(conn: &mut MultiplexedConnection, key: &str, n: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let len = xlen(conn, key).await;
        if len == n {
            return Ok(());
        }
        if len > n || tokio::time::Instant::now() > deadline {
            bail!("{key} has {len} entries, expected {n}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ids of the worker queue's entries.
async fn task_ids(conn: &mut MultiplexedConnection) -> Result<Vec<String>> {
    let raw = dump::read(conn).await?;
    Ok(match raw.keys.get("y:worker") {
        Some(dump::RawKey::Stream { entries, .. }) => {
            entries.iter().map(|e| e.id.clone()).collect()
        }
        _ => Vec::new(),
    })
}

type SessionFuture<'a> = Pin<Box<dyn Future<Output = Result<()>> + 'a>>;

/// One scripted session: what the clients do, given the fleet to do it on.
struct Session {
    name: &'static str,
    script: for<'a> fn(&'a mut Fleet, Lang) -> SessionFuture<'a>,
}

/// Run `session` on a fresh fleet of `lang` and dump what it left in Redis.
async fn run(session: &Session, lang: Lang) -> Result<Dump> {
    // A worker a session starts has the default task debounce (10 s).
    let builder = Fleet::builder();
    let builder = match lang {
        Lang::Rust => builder.rust_servers(1),
        Lang::Js => builder.js_servers(1),
    };
    let mut fleet = builder.start().await?;
    (session.script)(&mut fleet, lang)
        .await
        .with_context(|| format!("{} session on the {lang} fleet", session.name))?;
    // Whatever would still arrive late arrives now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = fleet.redis().connection().await?;
    let dump = dump::dump(&mut conn).await?;
    for member in fleet.members() {
        if let Some(status) = member.exit_status() {
            bail!("{} exited with {status}:\n{}", member.name(), member.logs());
        }
    }
    Ok(dump)
}

/// Run `session` on both fleets at once; their dumps must be equal.
async fn compare(session: &Session) -> Dump {
    let (js, rust) = tokio::join!(run(session, Lang::Js), run(session, Lang::Rust));
    let js = js.expect("JavaScript fleet");
    let rust = rust.expect("Rust fleet");
    assert_eq!(
        serde_json::to_string_pretty(&rust).unwrap(),
        serde_json::to_string_pretty(&js).unwrap(),
        "{}: the Rust fleet's Redis (left) differs from the JavaScript fleet's (right)",
        session.name
    );
    rust
}

/// The captured session of `fixtures/yredis-0.1.6/session.json`, minus the
/// poison step 2 (which the Rust server refuses): A opens the empty room, sends
/// step 1, two updates and its awareness; B joins; A sends a third update; the
/// worker compacts once; A sends an empty step 2 and leaves.
fn fixture_session<'a>(fleet: &'a mut Fleet, lang: Lang) -> SessionFuture<'a> {
    Box::pin(async move {
        let session = paths::fixture("session.json")?;
        let log = &session["log"];
        let url = fleet.server(lang, 0)?.url(FIXTURE_ROOM);
        let mut conn = fleet.redis().connection().await?;

        let mut a = RawClient::connect(&url).await?;
        a.recv_all(Duration::from_millis(300)).await;
        a.send(&hex("00000100")).await?;
        for message in log[1]["sent"].as_array().context("sent")? {
            a.send(&hex(message.as_str().context("hex")?)).await?;
        }
        wait_len(&mut conn, FIXTURE_KEY, 3).await?;

        let mut b = RawClient::connect(&url).await?;
        b.recv_all(Duration::from_millis(300)).await;
        let before = task_ids(&mut conn).await?;
        tokio::time::sleep(Duration::from_millis(400)).await;
        a.send(&hex(log[3]["sent"].as_str().context("third update")?))
            .await?;
        wait_len(&mut conn, FIXTURE_KEY, 4).await?;

        // The worker starts only now, so that its first pass sees all four
        // entries however long the steps above took; one compaction pass
        // replaces the task; then the worker goes away, long before a second
        // pass (a task debounce later) could race with the dump.
        fleet.add(lang, Role::Worker).await?;
        let deadline = tokio::time::Instant::now() + 2 * TASK_DEBOUNCE;
        loop {
            let now = task_ids(&mut conn).await?;
            if now.len() == 1 && now != before {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no compaction pass: tasks {before:?} → {now:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        fleet.worker(lang, 0)?.kill();

        a.send(&hex("0001020000")).await?;
        wait_len(&mut conn, FIXTURE_KEY, 5).await?;
        a.close().await;
        wait_len(&mut conn, FIXTURE_KEY, 6).await?;
        b.close().await;
        Ok(())
    })
}

/// Awareness: single-entry messages (remembered per connection: the first
/// client id, its latest clock), multi-entry messages (not remembered), another
/// client's entry on the same connection, an explicit `null`, unicode JSON, and
/// query-awareness (dropped); every close appends the remembered removal.
fn awareness_session<'a>(fleet: &'a mut Fleet, lang: Lang) -> SessionFuture<'a> {
    Box::pin(async move {
        let server = fleet.server(lang, 0)?;
        let url = server.url("presence");
        let key = "y:room:presence:index";
        let mut conn = fleet.redis().connection().await?;
        let aw = testkit::client::awareness_message;

        let mut a = RawClient::connect(&url).await?;
        let mut b = RawClient::connect(&url).await?;
        let mut c = RawClient::connect(&url).await?;
        let sends: Vec<(usize, Vec<u8>)> = vec![
            (
                0,
                aw(&[(20, 1, r##"{"user":{"name":"Zoë","color":"#30bced"}}"##)]),
            ),
            (
                1,
                aw(&[(30, 1, r#"{"user":"b1"}"#), (31, 1, r#"{"user":"b2"}"#)]),
            ),
            (1, aw(&[(32, 2, r#"{"user":"b3"}"#)])),
            (
                0,
                aw(&[(20, 2, r#"{"user":{"name":"Zoë","cursor":[1,2]}}"#)]),
            ),
            (0, aw(&[(21, 5, r#"{"user":"someone else"}"#)])),
            (2, aw(&[(40, 1, r#"{"user":"c","emoji":"✓"}"#)])),
            (2, aw(&[(40, 2, "null")])),
            (0, aw(&[(20, 3, r#"{"user":{"name":"Zoë"}}"#)])),
        ];
        let mut len = 0;
        for (who, message) in sends {
            let client = match who {
                0 => &mut a,
                1 => &mut b,
                _ => &mut c,
            };
            client.send(&message).await?;
            len += 1;
            wait_len(&mut conn, key, len).await?;
        }
        // Query-awareness is not appended.
        c.send(&[3]).await?;
        for client in [a, b, c] {
            client.close().await;
            len += 1;
            wait_len(&mut conn, key, len).await?;
        }
        Ok(())
    })
}

/// A v1 update made by a doc with a fixed client id, so its bytes are the same
/// in every run.
fn fixed_updates(client_id: u64, edits: &[&str]) -> (Vec<Vec<u8>>, Doc) {
    let doc = Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("t");
    let map = doc.get_or_insert_map("m");
    let mut updates = Vec::new();
    for (i, edit) in edits.iter().enumerate() {
        let before = doc.transact().state_vector();
        {
            let mut txn = doc.transact_mut();
            let len = text.len(&txn);
            text.insert(&mut txn, len, edit);
            map.insert(&mut txn, format!("k{i}"), i as i64);
        }
        updates.push(doc.transact().encode_state_as_update_v1(&before));
    }
    (updates, doc)
}

/// Updates: a burst of dependent updates in a room whose name needs encoding,
/// a second room fed by a step 2 (rewritten to an update), an empty step 2, and
/// messages that are dropped while the connection stays (step 1, auth,
/// query-awareness, a step 2 shorter than 4 bytes).
fn updates_session<'a>(fleet: &'a mut Fleet, lang: Lang) -> SessionFuture<'a> {
    Box::pin(async move {
        let server = fleet.server(lang, 0)?;
        let room = "caf%C3%A9%20(draft)!";
        let key = "y:room:caf%25C3%25A9%2520(draft)!:index";
        let mut conn = fleet.redis().connection().await?;
        let sync = testkit::client::sync_message;

        let (burst, doc) = fixed_updates(7, &["Hello", ", ", "world", "!", " Bye."]);
        assert_eq!(
            doc.get_or_insert_text("t").get_string(&doc.transact()),
            "Hello, world! Bye."
        );
        let mut a = RawClient::connect(&server.url(room)).await?;
        a.send(&sync(2, &burst[0])).await?;
        wait_len(&mut conn, key, 1).await?;
        for update in &burst[1..] {
            a.send(&sync(2, update)).await?;
        }
        wait_len(&mut conn, key, 5).await?;

        let (other, _) = fixed_updates(8, &["second room"]);
        let mut b = RawClient::connect(&server.url("plain")).await?;
        b.send(&sync(1, &other[0])).await?;
        wait_len(&mut conn, "y:room:plain:index", 1).await?;
        b.send(&hex("0001020000")).await?;
        b.send(&[3]).await?;
        b.send(&hex("020000")).await?;
        // A step 2 shorter than 4 bytes is dropped, and the connection stays.
        b.send(&hex("000100")).await?;
        b.send(&sync(0, &StateVector::default().encode_v1()))
            .await?;
        wait_len(&mut conn, "y:room:plain:index", 2).await?;
        let (more, _) = fixed_updates(10, &["still here"]);
        b.send(&sync(2, &more[0])).await?;
        wait_len(&mut conn, "y:room:plain:index", 3).await?;

        a.send(&sync(0, &doc.transact().state_vector().encode_v1()))
            .await?;
        let (late, _) = fixed_updates(9, &["late"]);
        a.send(&sync(2, &late[0])).await?;
        wait_len(&mut conn, key, 6).await?;
        a.close().await;
        b.close().await;
        Ok(())
    })
}

#[tokio::test]
async fn fixture_session_leaves_the_same_redis_as_the_capture() {
    let session = Session {
        name: "fixture",
        script: fixture_session,
    };
    let dump = compare(&session).await;
    insta::assert_json_snapshot!("fixture_session", dump);

    let capture = paths::fixture("session.json").unwrap();
    let captured =
        dump::normalize(&dump::from_capture(&capture["redis"], &[POISON_ENTRY]).unwrap()).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&dump.without_consumers()).unwrap(),
        serde_json::to_string_pretty(&captured).unwrap(),
        "the session's Redis (left) differs from y-redis 0.1.6's capture (right)"
    );
}

#[tokio::test]
async fn awareness_session_leaves_the_same_redis() {
    let session = Session {
        name: "awareness",
        script: awareness_session,
    };
    let dump = compare(&session).await;
    insta::assert_json_snapshot!("awareness_session", dump);
}

#[tokio::test]
async fn updates_session_leaves_the_same_redis() {
    let session = Session {
        name: "updates",
        script: updates_session,
    };
    let dump = compare(&session).await;
    insta::assert_json_snapshot!("updates_session", dump);
}
