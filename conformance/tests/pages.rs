//! The project's pages in a real browser: the editing demo (`websocket demo`)
//! and the inspector (operations port), in headless Chromium on a fleet of a
//! Rust and a JavaScript instance on one Redis, with a Rust worker and shared
//! PostgreSQL storage. Two editors, one per instance, type and see the same
//! text and each other's cursor; the inspector lists the room (and rooms with
//! hostile names, shown as text), shows its live content and history, and its
//! rollback changes both editors. The browser side is
//! `conformance/browser/pages_in_chromium.mjs`; it writes the screenshots
//! `docs/images/demo.png`, `docs/images/inspector.png` and
//! `docs/images/inspector-rooms.png`.
//!
//! Beside it: the inspector refuses every request without the secret.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conformance::{browser, paths, Fleet, Lang, Storage};
use serde::Deserialize;
use serde_json::json;
use websocket::streams::{stream_key, Append, RedisStreams};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};

/// How long the browser script may run: its own limit is 90 s, the rest is
/// Node's start and Chromium's shutdown.
const SCRIPT_LIMIT: Duration = Duration::from_secs(150);
/// How long a port may take to answer once its process runs.
const ANSWERS: Duration = Duration::from_secs(30);
/// The inspector's password.
const SECRET: &str = "inspector-secret";
/// The room both editors edit.
const ROOM: &str = "pages-demo";
/// Room names that a page inserting data as markup would run.
const HOSTILE: [&str; 2] = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>"];

/// What the browser script saw.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    /// Both editors' text after typing in each.
    phase_one: String,
    /// The remote cursor's label in editor A (`rust`) and B (`js`).
    cursors: Cursors,
    /// The room names the inspector listed.
    listed: Vec<String>,
    /// `script` and `img` elements found in the inspector's room list.
    injected: usize,
    /// The hostile room's name as its view shows it.
    hostile_shown: String,
    /// Versions the inspector's history listed.
    versions: usize,
    /// The version rolled back to.
    first: u64,
    /// The diff's text between that version and now.
    diff: String,
    /// Both editors' text after the rollback.
    rolled_back: String,
    /// Dialogs any page opened (none may).
    dialogs: Vec<String>,
    /// Errors the pages reported, for the log.
    page_errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Cursors {
    rust: String,
    js: String,
}

/// Write a document with some text to `room` straight into the fleet's
/// streams, as any instance would append a client's update.
async fn seed_room(fleet: &Fleet, room: &str) -> Result<()> {
    let streams = RedisStreams::connect(&fleet.redis().url(), fleet.prefix()).await?;
    let doc = Doc::new();
    let text = doc.get_or_insert_text("t");
    text.insert(&mut doc.transact_mut(), 0, "a room with a hostile name");
    let update = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let key = stream_key(fleet.prefix(), room, "index");
    streams
        .append(&key, &websocket::protocol::encode_sync_update(&update))
        .await?;
    Ok(())
}

/// Run the browser script with `options` and read its result.
async fn run_browser(options: serde_json::Value) -> Result<Seen> {
    browser::check_prerequisites(&["esbuild", "y-prosemirror"]).await?;
    browser::run_script(
        "pages_in_chromium.mjs",
        &[options.to_string()],
        SCRIPT_LIMIT,
    )
    .await
}

/// A fleet of a JavaScript server, a Rust worker and the Rust demo instance
/// (inspector on its operations port, behind [`SECRET`]); returns it with the
/// demo page's and the inspector's bases.
async fn demo_fleet() -> Result<(Fleet, String, String)> {
    let mut fleet = Fleet::builder()
        .js_servers(1)
        .rust_workers(1)
        .storage(Storage::Postgres)
        .start()
        .await?;
    let peer = fleet.server(Lang::Js, 0)?.ws_base();
    // A free port may be taken by another process before the demo binds it:
    // the demo is started again on other ports then.
    let mut failures = Vec::new();
    for _ in 0..3 {
        let (demo_port, ops_port) = (testkit::free_port()?, testkit::free_port()?);
        let (demo, ops) = (demo_port.to_string(), ops_port.to_string());
        let started = fleet
            .add_rust_with_args(
                &["demo", "--no-worker", "--demo-port", &demo, "--peer", &peer],
                &[("METRICS_PORT", &ops), ("WS_API_SECRET", SECRET)],
            )
            .await;
        let member = match started {
            Ok(member) => member,
            Err(err) => {
                failures.push(format!("{err:#}"));
                continue;
            }
        };
        match holds_ports(member, &[demo_port, ops_port]).await {
            Ok(()) => {
                let demo = format!("http://127.0.0.1:{demo_port}");
                let inspector = format!("http://127.0.0.1:{ops_port}");
                return Ok((fleet, demo, inspector));
            }
            Err(err) => {
                member.kill();
                failures.push(format!("{err:#}"));
            }
        }
    }
    bail!("the demo instance did not start: {failures:#?}")
}

/// Wait until `member`'s process listens on every one of `ports`; an error
/// (with its output) when it exited first or did not within [`ANSWERS`].
async fn holds_ports(member: &conformance::Member, ports: &[u16]) -> Result<()> {
    let deadline = Instant::now() + ANSWERS;
    loop {
        let pid = member.pid().context("the demo instance has no process")?;
        if ports
            .iter()
            .all(|port| testkit::group_listens_on(pid, *port))
        {
            return Ok(());
        }
        if !member.is_running() || Instant::now() > deadline {
            bail!(
                "{} does not listen on {ports:?}; output:\n{}",
                member.name(),
                member.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn editors_on_two_languages_and_the_inspector_in_chromium() {
    let (fleet, demo, inspector) = demo_fleet().await.unwrap();
    for room in HOSTILE {
        seed_room(&fleet, room).await.unwrap();
    }
    let images = paths::workspace_root().join("docs/images");
    std::fs::create_dir_all(&images).unwrap();
    let options = json!({
        "demo": demo,
        "js": fleet.server(Lang::Js, 0).unwrap().ws_base(),
        "inspector": inspector,
        "secret": SECRET,
        "room": ROOM,
        "hostile": HOSTILE,
        "images": images,
    });
    let seen = match run_browser(options).await {
        Ok(seen) => seen,
        Err(err) => panic!("{err:#}"),
    };
    eprintln!("the browser saw: {seen:#?}");

    assert!(seen.phase_one.contains("Typed through Rust."));
    assert!(seen.phase_one.contains("Typed through JavaScript."));
    assert!(seen.cursors.rust.contains("Bob on JavaScript"));
    assert!(seen.cursors.js.contains("Ada on Rust"));
    for room in [ROOM, HOSTILE[0], HOSTILE[1]] {
        assert!(seen.listed.iter().any(|r| r == room), "{room} not listed");
    }
    assert_eq!(seen.injected, 0, "a room name became markup");
    assert_eq!(seen.hostile_shown, HOSTILE[0]);
    assert!(seen.dialogs.is_empty(), "a page opened {:?}", seen.dialogs);
    assert!(seen.versions >= 2, "{} versions", seen.versions);
    assert!(seen.first >= 1);
    assert!(seen.diff.contains("Written after the first version."));
    assert_eq!(seen.rolled_back, seen.phase_one);
    for path in [
        "docs/images/demo.png",
        "docs/images/inspector.png",
        "docs/images/inspector-rooms.png",
    ] {
        let shot = paths::workspace_root().join(path);
        assert!(
            std::fs::metadata(&shot).is_ok_and(|m| m.len() > 0),
            "no {path}"
        );
    }
    let _ = seen.page_errors;
}

#[tokio::test]
async fn the_inspector_refuses_requests_without_the_secret() {
    let (_fleet, _demo, inspector) = demo_fleet().await.unwrap();
    let http = reqwest::Client::new();
    let paths = [
        "/inspector",
        "/inspector/inspector.js",
        "/inspector/data/rooms",
        "/inspector/data/room?room=pages-demo",
        "/inspector/data/version?room=pages-demo&version=1",
        "/inspector/api/document/pages-demo/json",
    ];
    for path in paths {
        let url = format!("{inspector}{path}");
        let bare = http.get(&url).send().await.unwrap();
        assert_eq!(bare.status(), 401, "{path} without the secret");
        assert!(bare
            .headers()
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Basic")));
        let wrong = http
            .get(&url)
            .basic_auth("admin", Some("not-the-secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong secret");
        let header = http
            .get(&url)
            .header("x-api-secret", "not-the-secret")
            .send()
            .await
            .unwrap();
        assert_eq!(header.status(), 401, "{path} with a wrong X-API-Secret");
    }
    let rollback = http
        .post(format!(
            "{inspector}/inspector/api/document/pages-demo/rollback"
        ))
        .body(r#"{"version":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(rollback.status(), 401);
    for path in ["/inspector", "/inspector/data/rooms"] {
        let url = format!("{inspector}{path}");
        let basic = http
            .get(&url)
            .basic_auth("admin", Some(SECRET))
            .send()
            .await
            .unwrap();
        assert_eq!(basic.status(), 200, "{path} with Basic auth");
        let bearer = http.get(&url).bearer_auth(SECRET).send().await.unwrap();
        assert_eq!(bearer.status(), 200, "{path} with a bearer secret");
    }
    // With the secret, the page's API calls are offered, not the others.
    let delete = http
        .delete(format!("{inspector}/inspector/api/document/pages-demo"))
        .basic_auth("admin", Some(SECRET))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 404, "the inspector passed a delete on");
    // The metrics stay where they were, without the secret.
    let metrics = http
        .get(format!("{inspector}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status(), 200);
}

/// `server/assets/demo.js` is what `demo/build.mjs` makes of `demo/src/` with
/// the locked packages of `js-reference/`: the committed bundle is not edited
/// by hand, nor left behind its sources.
#[tokio::test]
async fn the_committed_demo_bundle_is_built_from_its_sources() {
    browser::check_prerequisites(&["esbuild", "y-prosemirror"])
        .await
        .unwrap();
    let root = paths::workspace_root();
    let rebuilt = std::env::temp_dir().join(format!("demo-bundle-{}.js", std::process::id()));
    let status = tokio::process::Command::new("node")
        .arg(root.join("demo/build.mjs"))
        .arg(&rebuilt)
        .status()
        .await
        .unwrap();
    assert!(status.success(), "node demo/build.mjs failed");
    let committed = std::fs::read(root.join("server/assets/demo.js")).unwrap();
    let made = std::fs::read(&rebuilt).unwrap();
    let _ = std::fs::remove_file(&rebuilt);
    assert!(
        made == committed,
        "server/assets/demo.js differs from a build of demo/src: run `node demo/build.mjs`"
    );
}
