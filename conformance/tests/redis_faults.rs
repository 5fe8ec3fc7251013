//! Redis losing data under connected y-websocket clients, noticed and
//! recovered from without any client reconnecting on its own
//! (docs/protocol.md §3.2 and §3.3, docs/reliability.md):
//!
//! - a `FLUSHALL` before any compaction: what the clients had sent is back in
//!   Redis within seconds, and a fresh client of another instance sees it;
//! - a Sentinel failover (the master killed, its replica promoted) under
//!   clients editing through two instances: no edit is lost.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use conformance::wait::until;
use conformance::{EditOp, Fleet, JsClient, Lang, Sidecar, Storage};
use serde_json::json;
use testkit::SentinelSet;

/// How long a recovery may take: the restart check runs every second, and
/// y-websocket reconnects within its back-off.
const RECOVERED: Duration = Duration::from_secs(20);

/// `Some` once `stream` holds an entry.
async fn has_entries(
    redis: &redis::aio::MultiplexedConnection,
    stream: &str,
) -> Result<Option<()>> {
    let mut redis = redis.clone();
    let len: u64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut redis)
        .await?;
    Ok((len > 0).then_some(()))
}

/// The keys of map `m` a client's document holds.
async fn keys(client: &JsClient<'_>) -> Result<BTreeSet<String>> {
    let content = client.content().await?;
    Ok(content["m"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_made_before_a_flushall_are_back_within_seconds() {
    // The default debounce keeps the worker from compacting before the
    // FLUSHALL: only Redis holds the edit when it goes.
    let fleet = Fleet::builder()
        .storage(Storage::Postgres)
        .rust_servers(2)
        .rust_workers(1)
        .start()
        .await
        .expect("the fleet starts");
    let sidecar = Sidecar::start().expect("the sidecar starts");
    if let Err(err) = flushall(&fleet, &sidecar).await {
        panic!("{err:#}\n{}", fleet.logs());
    }
}

async fn flushall(fleet: &Fleet, sidecar: &Sidecar) -> Result<()> {
    let room = "flushed";
    let one = fleet.server(Lang::Rust, 0)?.ws_base();
    let two = fleet.server(Lang::Rust, 1)?.ws_base();
    let editor = sidecar.open_client("editor", &one, room, None).await?;
    editor
        .edit(&[
            EditOp::TextInsert {
                index: 0,
                text: "kept".into(),
            },
            EditOp::MapSet {
                key: "before".into(),
                value: json!(true),
            },
        ])
        .await?;
    let stream = format!("{}:room:{room}:index", fleet.prefix());
    let mut redis = fleet.redis().connection().await?;
    until("the edit in Redis", RECOVERED, || {
        has_entries(&redis, &stream)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let () = redis::cmd("FLUSHALL").query_async(&mut redis).await?;
    let flushed = Instant::now();

    // The instance notices, closes the editor's connection, and the editor,
    // reconnecting as y-websocket does, sends its document again.
    until("the edit back in Redis", RECOVERED, || {
        has_entries(&redis, &stream)
    })
    .await?;
    let fresh = sidecar.open_client("fresh", &two, room, None).await?;
    until(
        "the edit on a fresh client of the other instance",
        RECOVERED,
        || async {
            let content = fresh.content().await?;
            Ok((content["t"] == "kept" && content["m"]["before"] == true).then_some(()))
        },
    )
    .await?;
    eprintln!(
        "flushall: the edit was back and seen by a fresh client {} ms after the FLUSHALL",
        flushed.elapsed().as_millis()
    );
    // Edits after the recovery flow as before.
    editor
        .edit(&[EditOp::MapSet {
            key: "after".into(),
            value: json!(true),
        }])
        .await?;
    until("an edit after the recovery", RECOVERED, || async {
        let content = fresh.content().await?;
        Ok((content["m"]["after"] == true).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_under_editing_clients_loses_no_edit() {
    let mut set = SentinelSet::start().expect("master, replica and Sentinels start");
    // The fleet's own Redis goes unused: every member finds its master
    // through the Sentinels.
    let fleet = Fleet::builder()
        .storage(Storage::Postgres)
        .rust_servers(2)
        .rust_workers(1)
        .env("REDIS_SENTINELS", &set.sentinel_list())
        .env("REDIS_SENTINEL_MASTER", testkit::sentinel::MASTER_NAME)
        .env("REDIS_TASK_DEBOUNCE", "500")
        .env("REDIS_MIN_MESSAGE_LIFETIME", "1000")
        .start()
        .await
        .expect("the fleet starts");
    let sidecar = Sidecar::start().expect("the sidecar starts");
    if let Err(err) = failover(&fleet, &sidecar, &mut set).await {
        panic!("{err:#}\n{}", fleet.logs());
    }
}

async fn failover(fleet: &Fleet, sidecar: &Sidecar, set: &mut SentinelSet) -> Result<()> {
    let room = "failover";
    let one = fleet.server(Lang::Rust, 0)?.ws_base();
    let two = fleet.server(Lang::Rust, 1)?.ws_base();
    let old_master = set.master_port()?;
    let a = sidecar.open_client("a", &one, room, None).await?;
    let b = sidecar.open_client("b", &two, room, None).await?;

    // Both clients edit every 50 ms, before, during and after the failover.
    let mut made = BTreeSet::new();
    let started = Instant::now();
    let mut failed_over = None;
    let mut i = 0u32;
    while started.elapsed() < Duration::from_secs(14) {
        for (name, client) in [("a", &a), ("b", &b)] {
            let key = format!("{name}{i:04}");
            client
                .edit(&[EditOp::MapSet {
                    key: key.clone(),
                    value: json!(i),
                }])
                .await?;
            made.insert(key);
        }
        i += 1;
        if failed_over.is_none() && started.elapsed() > Duration::from_secs(2) {
            // Blocking: the editing pauses while the Sentinels fail over,
            // and resumes on whatever connections the clients have then.
            let killed = Instant::now();
            let new_master = tokio::task::block_in_place(|| set.fail_master(RECOVERED))?;
            ensure!(new_master != old_master, "the replica was promoted");
            failed_over = Some(killed.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let failed_over = failed_over.context("the failover happened")?;
    let last_edit = Instant::now();
    ensure!(made.len() > 200, "{} edits made", made.len());

    for client in [&a, &b] {
        let waited = until("every edit on both editors", RECOVERED, || async {
            let seen = keys(client).await?;
            Ok(made.is_subset(&seen).then_some(()))
        })
        .await;
        if let Err(err) = waited {
            let seen = keys(client).await?;
            let missing: Vec<_> = made.difference(&seen).collect();
            bail!(
                "{} lacks {} of {} edits ({err}): {:?}",
                client.name(),
                missing.len(),
                made.len(),
                &missing[..missing.len().min(40)]
            );
        }
    }
    let fresh = sidecar.open_client("fresh", &one, room, None).await?;
    let seen = until("every edit on a fresh client", RECOVERED, || async {
        let seen = keys(&fresh).await?;
        Ok(made.is_subset(&seen).then_some(seen))
    })
    .await?;
    let converged = last_edit.elapsed();
    ensure!(seen.len() == made.len(), "no edit from nowhere: {seen:?}");
    let new_master = set.master_port()?;
    let stream = format!("{}:room:{room}:index", fleet.prefix());
    let len = set.cli(new_master, &["XLEN", &stream])?;
    eprintln!(
        "sentinel failover: replica promoted {} ms after the master was killed; {} edits by 2 clients, \
         all on both editors and in a fresh client's document {} ms after the last edit; \
         the room's stream on the new master holds {} entries",
        failed_over.as_millis(),
        made.len(),
        converged.as_millis(),
        len.trim()
    );
    for line in fleet.logs().lines().filter(|l| l.contains("following it")) {
        eprintln!("sentinel failover: {line}");
    }
    Ok(())
}
