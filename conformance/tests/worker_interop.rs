//! Group d, worker interop: streams written through the servers of one language
//! are compacted by the worker of the other, into one shared storage (PostgreSQL
//! and S3, each test once per store), and what either language stored is read by
//! both. Every scenario ends the same way: the streams are trimmed away, storage
//! holds exactly one item per document (a v2 update, in y-redis's layout, read
//! independently with `psql` or boto3 and decoded by yrs and by yjs), and after
//! Redis is emptied, fresh Rust and JavaScript servers serve the whole content
//! from storage alone to a Rust client and to a y-websocket client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::put;
use axum::Router;
use conformance::{
    content, edit, EditOp, Fleet, FleetBuilder, JsClient, Lang, Role, Sidecar, Storage, StoredItem,
};
use redis::aio::MultiplexedConnection;
use serde_json::{json, Value};
use testkit::YClient;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

const SOON: Duration = Duration::from_secs(10);
/// How long compaction may take to store a document and trim its stream away.
const COMPACTED: Duration = Duration::from_secs(30);
/// Pause between edit rounds, long enough for a compaction pass in between, so
/// later passes merge a stored item with new stream entries.
const BETWEEN_ROUNDS: Duration = Duration::from_millis(1200);

/// Worker timing: fast compaction for a fleet with one worker at a time.
const FAST: [(&str, &str); 2] = [
    ("REDIS_TASK_DEBOUNCE", "300"),
    ("REDIS_MIN_MESSAGE_LIFETIME", "600"),
];
/// Waves of the mixed scenario: at least two (so a stored item of one wave is
/// loaded, merged and replaced in the next), more until both workers stored.
const MAX_WAVES: u32 = 5;
/// Between opening the clients of one room and the next (mixed scenario).
const STAGGER: Duration = Duration::from_millis(300);

/// Worker timing with two workers on one queue: a task is re-claimed by another
/// worker once it has been idle for the debounce, even while a slow pass still
/// runs (y-redis's design), and two concurrent passes of one document leave two
/// items. A debounce well above a pass's duration keeps passes apart.
const SHARED_QUEUE: [(&str, &str); 2] = [
    ("REDIS_TASK_DEBOUNCE", "1000"),
    ("REDIS_MIN_MESSAGE_LIFETIME", "1500"),
];

/// Update callbacks heard (`YDOC_UPDATE_CALLBACK`, called by a worker before it
/// stores a changed document): each worker gets its own base URL, so the
/// requests tell which worker compacted which room.
struct Callbacks {
    base: String,
    heard: Arc<Mutex<Vec<(String, String)>>>,
    server: tokio::task::JoinHandle<()>,
}

impl Callbacks {
    async fn start() -> Result<Self> {
        let heard: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let record = Arc::clone(&heard);
        let app = Router::new().route(
            "/{who}/{room}",
            put(move |Path((who, room)): Path<(String, String)>| {
                let record = Arc::clone(&record);
                async move {
                    record.lock().unwrap().push((who, room));
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            base,
            heard,
            server,
        })
    }

    /// The callback URL for the worker called `who`.
    fn url(&self, who: &str) -> String {
        format!("{}/{who}", self.base)
    }

    /// `(worker, room)` of every callback so far.
    fn heard(&self) -> Vec<(String, String)> {
        self.heard.lock().unwrap().clone()
    }
}

impl Drop for Callbacks {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A stream entry as `XRANGE` returns it: id, then field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// `room` as JavaScript's `encodeURIComponent` writes it (asked of yjs's side,
/// so the layouts are checked against the real function): the form it takes in
/// stream keys and S3 object names.
async fn encoded(sidecar: &Sidecar, room: &str) -> Result<String> {
    let key = sidecar.call("streamKey", json!({ "room": room })).await?;
    let key = key.as_str().context("streamKey answers a string")?;
    key.strip_prefix("y:room:")
        .and_then(|k| k.strip_suffix(":index"))
        .map(str::to_string)
        .with_context(|| format!("unexpected stream key {key}"))
}

/// The doc stream of `room` (docid `index`, prefix `y`).
async fn stream_key(sidecar: &Sidecar, room: &str) -> Result<String> {
    Ok(format!("y:room:{}:index", encoded(sidecar, room).await?))
}

/// A client editing the document: a yrs client (`testkit::YClient`) or a
/// y-websocket provider in the sidecar.
enum Editor<'a> {
    Rust(YClient),
    Js(JsClient<'a>),
}

impl Editor<'_> {
    async fn edit(&self, ops: &[EditOp]) -> Result<()> {
        match self {
            Editor::Rust(client) => {
                edit::apply_ops(&client.doc, ops);
                Ok(())
            }
            Editor::Js(client) => client.edit(ops).await,
        }
    }

    async fn content(&self) -> Result<Value> {
        Ok(match self {
            Editor::Rust(client) => content::of_doc(&client.doc),
            Editor::Js(client) => content::normalize(&client.content().await?),
        })
    }

    async fn close(self) -> Result<()> {
        match self {
            Editor::Rust(client) => drop(client),
            Editor::Js(client) => client.close().await?,
        }
        Ok(())
    }
}

/// Open a yrs client and a y-websocket client on `base` (`ws://…`) for `room`.
async fn open_editors<'a>(
    sidecar: &'a Sidecar,
    base: &str,
    room: &str,
    tag: &str,
) -> Result<Vec<Editor<'a>>> {
    let rust = YClient::connect(&format!("{base}/{room}")).await?;
    rust.wait_synced(SOON).await?;
    let js = sidecar
        .open_client(&format!("{room}-{tag}"), base, room, None)
        .await?;
    Ok(vec![Editor::Rust(rust), Editor::Js(js)])
}

/// One round of edits by `who`: inserts and deletes in text, map and array.
fn round_ops(round: u32, who: &str) -> Vec<EditOp> {
    let mut ops = vec![
        EditOp::TextInsert {
            index: round * 3,
            text: format!("{who}{round} "),
        },
        EditOp::MapSet {
            key: who.to_string(),
            value: json!({ "round": round, "by": who, "half": 0.5 }),
        },
        EditOp::MapSet {
            key: format!("{who}-tmp"),
            value: json!(round),
        },
        // Keys go through v2's string encoder, whose lengths are UTF-16 units.
        EditOp::MapSet {
            key: format!("clé-😀-{who}"),
            value: json!(format!("naïve ✓ 𝄞 {round}")),
        },
        EditOp::ArrayInsert {
            index: round,
            values: vec![json!(round), json!(format!("{who}-{round}")), json!(null)],
        },
    ];
    if round > 0 {
        ops.extend([
            EditOp::TextDelete { index: 1, len: 2 },
            EditOp::MapDelete {
                key: format!("{who}-tmp"),
            },
            EditOp::ArrayDelete { index: 0, len: 1 },
        ]);
    }
    ops
}

/// `rounds` rounds of edits by every editor, a pause between rounds; returns the
/// content they all converged to.
async fn edit_rounds(editors: &[Editor<'_>], first_round: u32, rounds: u32) -> Result<Value> {
    for round in first_round..first_round + rounds {
        if round > first_round {
            tokio::time::sleep(BETWEEN_ROUNDS).await;
        }
        for (i, editor) in editors.iter().enumerate() {
            editor.edit(&round_ops(round, &format!("e{i}"))).await?;
        }
    }
    converged(editors).await
}

/// Wait until every editor has the same content, with every editor's last edit.
async fn converged(editors: &[Editor<'_>]) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let mut contents = Vec::new();
        for editor in editors {
            contents.push(editor.content().await?);
        }
        let complete = |v: &Value| (0..editors.len()).all(|i| v["m"][format!("e{i}")].is_object());
        if contents.iter().all(complete) && contents.windows(2).all(|w| w[0] == w[1]) {
            return Ok(contents.swap_remove(0));
        }
        if tokio::time::Instant::now() > deadline {
            bail!("editors did not converge: {contents:#?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn close_all(editors: Vec<Editor<'_>>) -> Result<()> {
    for editor in editors {
        editor.close().await?;
    }
    Ok(())
}

/// Wait until the workers compacted `rooms`: each doc stream trimmed to nothing
/// and deleted, and no compaction task left for it.
async fn wait_compacted(
    conn: &mut MultiplexedConnection,
    sidecar: &Sidecar,
    rooms: &[String],
) -> Result<()> {
    let mut keys = Vec::new();
    for room in rooms {
        keys.push(stream_key(sidecar, room).await?);
    }
    let deadline = tokio::time::Instant::now() + COMPACTED;
    loop {
        let mut left = Vec::new();
        let tasks: Vec<StreamEntry> = redis::cmd("XRANGE")
            .arg("y:worker")
            .arg("-")
            .arg("+")
            .query_async(conn)
            .await?;
        for key in &keys {
            let len: u64 = redis::cmd("XLEN").arg(key).query_async(conn).await?;
            let exists: bool = redis::cmd("EXISTS").arg(key).query_async(conn).await?;
            let queued = tasks
                .iter()
                .any(|(_, fields)| fields.iter().any(|(_, v)| v == key.as_bytes()));
            if exists || queued {
                left.push(format!("{key}: {len} entries, task queued: {queued}"));
            }
        }
        if left.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not compacted after {COMPACTED:?}: {left:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `8-4-4-4-12` lowercase hex with version 4, as `crypto.randomUUID` and
/// `uuid::Uuid::new_v4` write it.
fn is_uuid_v4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups.iter().all(|g| {
            g.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
        && groups[2].starts_with('4')
}

/// Check what storage holds for `room`: exactly one item, in y-redis's layout,
/// a v2 update whose content is `expected` for yrs and for yjs, and (PostgreSQL)
/// the v1 state vector of that content beside it. Returns the item.
async fn check_stored(
    all: &[StoredItem],
    storage: Storage,
    sidecar: &Sidecar,
    room: &str,
    expected: &Value,
) -> Result<StoredItem> {
    // PostgreSQL keeps the room as it is, S3 names hold it encoded.
    let stored_room = match storage {
        Storage::S3 => encoded(sidecar, room).await?,
        _ => room.to_string(),
    };
    let mut items: Vec<StoredItem> = all
        .iter()
        .filter(|item| item.room == stored_room)
        .cloned()
        .collect();
    let listing: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|i| (i.room.as_str(), i.doc.as_str(), i.reference.as_str()))
        .collect();
    ensure!(
        items.len() == 1,
        "{room}: expected exactly one stored item, storage holds {listing:?}"
    );
    let item = items.remove(0);
    ensure!(
        item.doc == "index",
        "{room}: stored under doc {:?}",
        item.doc
    );
    match storage {
        Storage::S3 => {
            let uuid = item
                .reference
                .strip_prefix(&format!("{stored_room}/index/"))
                .unwrap_or("");
            ensure!(
                is_uuid_v4(uuid),
                "{room}: object name {:?} is not {stored_room}/index/{{uuid v4}}",
                item.reference
            );
        }
        Storage::Postgres => {
            ensure!(
                item.reference.parse::<u32>().is_ok(),
                "{room}: r = {:?}",
                item.reference
            );
        }
        Storage::Memory => bail!("memory storage is not shared"),
    }

    let update = Update::decode_v2(&item.update)
        .map_err(|e| anyhow::anyhow!("{room}: the stored item is no v2 update for yrs: {e}"))?;
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(update)
        .with_context(|| format!("{room}: applying the stored item"))?;
    ensure!(
        !doc.transact().has_missing_updates(),
        "{room}: the stored item misses updates it depends on"
    );
    let yrs_content = content::of_doc(&doc);
    ensure!(
        &yrs_content == expected,
        "{room}: the stored item holds (yrs) {yrs_content}, the clients had {expected}"
    );
    let yjs_content = sidecar
        .call(
            "content",
            json!({ "updates": [hex::encode(&item.update)], "v2": true }),
        )
        .await
        .with_context(|| format!("{room}: yjs reading the stored item as v2"))?;
    let yjs_content = content::normalize(&yjs_content);
    ensure!(
        &yjs_content == expected,
        "{room}: the stored item holds (yjs) {yjs_content}, the clients had {expected}"
    );
    if let Some(sv) = &item.sv {
        let stored = StateVector::decode_v1(sv)
            .map_err(|e| anyhow::anyhow!("{room}: sv column is no v1 state vector: {e}"))?;
        let actual = doc.transact().state_vector();
        ensure!(
            stored == actual,
            "{room}: sv column {stored:?}, the stored update's state vector {actual:?}"
        );
    }
    Ok(item)
}

/// Kill the workers, empty Redis, start a fresh Rust server and a fresh
/// JavaScript server, and check that a yrs client and a y-websocket client of
/// each get `expected` for every room: storage alone now holds the documents.
async fn reload_from_storage_only(
    fleet: &mut Fleet,
    sidecar: &Sidecar,
    rooms: &[(String, Value)],
) -> Result<()> {
    for worker in fleet.members().iter().filter(|m| m.role() == Role::Worker) {
        worker.kill();
    }
    let mut conn = fleet.redis().connection().await?;
    let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
    let keys: u64 = redis::cmd("DBSIZE").query_async(&mut conn).await?;
    ensure!(keys == 0, "Redis still holds {keys} keys after FLUSHALL");

    let mut bases = Vec::new();
    for lang in [Lang::Rust, Lang::Js] {
        let server = fleet.add(lang, Role::Server).await?;
        bases.push((server.name().to_string(), server.ws_base()));
    }
    for (name, base) in &bases {
        for (room, expected) in rooms {
            let client = YClient::connect(&format!("{base}/{room}")).await?;
            client.wait_synced(SOON).await?;
            let got = content::of_doc(&client.doc);
            ensure!(
                &got == expected,
                "{name}, {room}: a yrs client got {got}, storage should hold {expected}"
            );
            let js = sidecar
                .open_client(&format!("{room}-reload-{name}"), base, room, None)
                .await?;
            let got = content::normalize(&js.content().await?);
            ensure!(
                &got == expected,
                "{name}, {room}: a y-websocket client got {got}, storage should hold {expected}"
            );
            js.close().await?;
        }
    }
    for member in fleet.members() {
        if member.role() == Role::Server {
            if let Some(status) = member.exit_status() {
                bail!("{} exited with {status}", member.name());
            }
        }
    }
    Ok(())
}

/// Start the fleet and a sidecar, run `body`, and fail (with every member's
/// output, printed by the fleet while it is dropped) on the first error.
async fn scenario<F>(builder: FleetBuilder, body: F)
where
    F: for<'a> AsyncFnOnce(&'a mut Fleet, &'a Sidecar) -> Result<()>,
{
    let started = std::time::Instant::now();
    let mut fleet = builder.start().await.expect("the fleet starts");
    let sidecar = Sidecar::start().expect("the sidecar starts");
    if let Err(err) = body(&mut fleet, &sidecar).await {
        panic!("{err:#}");
    }
    let name = std::thread::current()
        .name()
        .unwrap_or("scenario")
        .to_string();
    println!("{name}: took {:?}", started.elapsed());
}

fn with_env(mut builder: FleetBuilder, env: [(&str, &str); 2]) -> FleetBuilder {
    for (name, value) in env {
        builder = builder.env(name, value);
    }
    builder
}

/// Scenarios 1 and 2: servers of `writers` only, the worker of `worker` only.
async fn cross_compaction(storage: Storage, writers: Lang, worker: Lang) {
    let mut builder = Fleet::builder().storage(storage);
    builder = match writers {
        Lang::Rust => builder.rust_servers(1),
        Lang::Js => builder.js_servers(1),
    };
    builder = match worker {
        Lang::Rust => builder.rust_workers(1),
        Lang::Js => builder.js_workers(1),
    };
    scenario(with_env(builder, FAST), async |fleet, sidecar| {
        // Characters that `encodeURIComponent` changes, so the layouts show
        // where the room is stored as it is and where encoded.
        let room = format!("{writers}:to+{worker}%20doc");
        let base = fleet.server(writers, 0)?.ws_base();

        let editors = open_editors(sidecar, &base, &room, "w").await?;
        let expected = edit_rounds(&editors, 0, 3).await?;
        close_all(editors).await?;
        let mut conn = fleet.redis().connection().await?;
        wait_compacted(&mut conn, sidecar, std::slice::from_ref(&room))
            .await
            .context("the worker trims the stream")?;
        check_stored(
            &fleet.stored_items()?,
            fleet.storage(),
            sidecar,
            &room,
            &expected,
        )
        .await?;
        ensure!(fleet.worker(worker, 0)?.is_running(), "the worker stopped");

        reload_from_storage_only(fleet, sidecar, &[(room, expected)]).await
    })
    .await;
}

/// Scenario 3: Rust and JavaScript servers and workers at once on one Redis and
/// one storage; several rooms, each edited through both server kinds.
async fn mixed_compaction(storage: Storage) {
    let builder = Fleet::builder()
        .storage(storage)
        .rust_servers(1)
        .js_servers(1);
    scenario(with_env(builder, SHARED_QUEUE), async |fleet, sidecar| {
        let callbacks = Callbacks::start().await?;
        for lang in [Lang::Rust, Lang::Js] {
            let url = callbacks.url(&lang.to_string());
            fleet
                .add_with_env(lang, Role::Worker, &[("YDOC_UPDATE_CALLBACK", &url)])
                .await?;
        }
        let rust = fleet.server(Lang::Rust, 0)?.ws_base();
        let js = fleet.server(Lang::Js, 0)?.ws_base();
        let rooms: Vec<String> = (0..4).map(|i| format!("mixed@{i}")).collect();
        let mut expected: Vec<Value> = vec![content::of_doc(&Doc::new()); rooms.len()];
        let mut conn = fleet.redis().connection().await?;

        for wave in 0..MAX_WAVES {
            // Every room: a yrs client and a y-websocket client on each server
            // kind, opened a room at a time: their first append queues the
            // room's task, so the tasks fall due at different moments and each
            // goes to whichever worker polls next.
            let mut editors = Vec::new();
            for (room, expected) in rooms.iter().zip(&expected) {
                let mut of_room = open_editors(sidecar, &rust, room, &format!("r{wave}")).await?;
                of_room.extend(open_editors(sidecar, &js, room, &format!("j{wave}")).await?);
                for editor in &of_room {
                    let loaded = editor.content().await?;
                    ensure!(
                        &loaded == expected,
                        "wave {wave}, {room}: a new client loads {loaded}, stored was {expected}"
                    );
                }
                editors.push(of_room);
                tokio::time::sleep(STAGGER).await;
            }
            for of_room in &editors {
                for (i, editor) in of_room.iter().enumerate() {
                    editor.edit(&round_ops(wave, &format!("e{i}"))).await?;
                }
            }
            for ((room, of_room), expected) in rooms.iter().zip(editors).zip(&mut expected) {
                *expected = converged(&of_room).await.context(room.clone())?;
                close_all(of_room).await?;
            }
            wait_compacted(&mut conn, sidecar, &rooms)
                .await
                .with_context(|| format!("wave {wave}: the workers trim every stream"))?;
            let all = fleet.stored_items()?;
            for (room, content) in rooms.iter().zip(&expected) {
                check_stored(&all, fleet.storage(), sidecar, room, content)
                    .await
                    .with_context(|| format!("wave {wave}"))?;
            }
            ensure!(
                all.len() == rooms.len(),
                "{} items for {} rooms",
                all.len(),
                rooms.len()
            );
            for worker in fleet.members().iter().filter(|m| m.role() == Role::Worker) {
                ensure!(worker.is_running(), "{} stopped", worker.name());
            }
            let heard = callbacks.heard();
            println!("after wave {wave}, stored by (worker, room): {heard:?}");
            let by = |who: &str| heard.iter().any(|(w, _)| w == who);
            if wave >= 1 && by("rust") && by("js") {
                break;
            }
            ensure!(
                wave + 1 < MAX_WAVES,
                "after {MAX_WAVES} waves not both workers stored documents: {heard:?}"
            );
        }
        let expected: Vec<(String, Value)> = rooms.into_iter().zip(expected).collect();
        reload_from_storage_only(fleet, sidecar, &expected).await
    })
    .await;
}

/// Scenario 4: the item a Rust worker stored is read, merged and replaced by a
/// JavaScript worker, whose item is in turn replaced by a Rust worker: each time
/// storage ends with exactly one item, a new one, and nothing is lost.
async fn items_replaced_across_languages(storage: Storage) {
    let builder = Fleet::builder()
        .storage(storage)
        .rust_servers(1)
        .js_servers(1)
        .rust_workers(1);
    scenario(with_env(builder, FAST), async |fleet, sidecar| {
        let room = "hand:over$".to_string();
        let bases = [
            fleet.server(Lang::Rust, 0)?.ws_base(),
            fleet.server(Lang::Js, 0)?.ws_base(),
        ];
        let mut conn = fleet.redis().connection().await?;

        let mut seen: Vec<String> = Vec::new();
        let mut expected = content::of_doc(&Doc::new());
        // Which worker compacts each phase; the previous one is stopped first.
        let phases = [Lang::Rust, Lang::Js, Lang::Rust];
        for (phase, worker) in phases.into_iter().enumerate() {
            if phase > 0 {
                for member in fleet.members().iter().filter(|m| m.role() == Role::Worker) {
                    member.kill();
                }
                fleet.add(worker, Role::Worker).await?;
            }
            // Edits through both server kinds, by clients that first load what
            // the previous phase stored.
            let mut editors = open_editors(sidecar, &bases[0], &room, &format!("r{phase}")).await?;
            editors.extend(open_editors(sidecar, &bases[1], &room, &format!("j{phase}")).await?);
            for editor in &editors {
                let before = editor.content().await?;
                ensure!(
                    before == expected,
                    "phase {phase}: a new client starts from {before}, expected {expected}"
                );
            }
            expected = edit_rounds(&editors, phase as u32 * 2, 2).await?;
            close_all(editors).await?;
            wait_compacted(&mut conn, sidecar, std::slice::from_ref(&room))
                .await
                .with_context(|| format!("phase {phase}: the {worker} worker trims the stream"))?;
            let all = fleet.stored_items()?;
            let item = check_stored(&all, fleet.storage(), sidecar, &room, &expected)
                .await
                .with_context(|| format!("phase {phase}, compacted by the {worker} worker"))?;
            ensure!(
                !seen.contains(&item.reference),
                "phase {phase}: the {worker} worker left the old item {} in place ({seen:?})",
                item.reference
            );
            seen.push(item.reference);
        }
        reload_from_storage_only(fleet, sidecar, &[(room, expected)]).await
    })
    .await;
}

#[tokio::test]
async fn rust_servers_js_worker_postgres() {
    cross_compaction(Storage::Postgres, Lang::Rust, Lang::Js).await;
}

#[tokio::test]
async fn rust_servers_js_worker_s3() {
    cross_compaction(Storage::S3, Lang::Rust, Lang::Js).await;
}

#[tokio::test]
async fn js_servers_rust_worker_postgres() {
    cross_compaction(Storage::Postgres, Lang::Js, Lang::Rust).await;
}

#[tokio::test]
async fn js_servers_rust_worker_s3() {
    cross_compaction(Storage::S3, Lang::Js, Lang::Rust).await;
}

#[tokio::test]
async fn both_workers_at_once_postgres() {
    mixed_compaction(Storage::Postgres).await;
}

#[tokio::test]
async fn both_workers_at_once_s3() {
    mixed_compaction(Storage::S3).await;
}

#[tokio::test]
async fn items_replaced_across_languages_postgres() {
    items_replaced_across_languages(Storage::Postgres).await;
}

#[tokio::test]
async fn items_replaced_across_languages_s3() {
    items_replaced_across_languages(Storage::S3).await;
}
