//! Peak memory of compacting one long stream: 200 000 small updates
//! (`--entries` changes it) in a throwaway redis-server, then one worker pass
//! into in-memory storage, run in a fresh process (this program again, with
//! `--compact URL`) so that nothing from writing the stream is counted. Prints
//! that process's peak resident memory (the kernel's high-water mark) and how
//! much the pass added to what the process held before it.
//!
//! ```sh
//! cargo run --release -p websocket --example compaction_memory
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use testkit::RedisServer;
use websocket::protocol::encode_sync_update;
use websocket::storage::memory::MemoryStorage;
use websocket::storage::Storage;
use websocket::streams::{stream_key, Append, RedisStreams, TaskQueue};
use websocket::worker::{Worker, WorkerSettings};
use yrs::{Doc, ReadTxn, Text, Transact};

#[derive(Parser)]
struct Options {
    /// Stream entries, each one small update.
    #[arg(long, default_value_t = 200_000)]
    entries: usize,
    /// Only compact the stream of the Redis at this URL (the child process).
    #[arg(long)]
    compact: Option<String>,
}

/// A `/proc/self/status` field in kB.
fn status_kb(field: &str) -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .with_context(|| format!("{field} missing from /proc/self/status"))
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let options = Options::parse();
    if let Some(url) = options.compact {
        return compact(&url).await;
    }
    let redis = RedisServer::start()?;
    let key = stream_key("y", "big", "index");

    // The stream: the first entry through the append script (it queues the
    // compaction task), the rest pipelined.
    let messages: Vec<Vec<u8>> = {
        let doc = Doc::with_client_id(1);
        let text = doc.get_or_insert_text("t");
        (0..options.entries)
            .map(|i| {
                let before = doc.transact().state_vector();
                let at = (i * 7919 % (i + 1)) as u32;
                text.insert(&mut doc.transact_mut(), at, "x");
                encode_sync_update(&doc.transact().encode_state_as_update_v1(&before))
            })
            .collect()
    };
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let streams = Arc::new(RedisStreams::connect(&redis.url(), "y").await?);
    streams.append(&key, &messages[0]).await?;
    let client = redis::Client::open(redis.url())?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    testkit::xadd_all(&mut connection, &key, &messages[1..]).await?;
    drop(messages);
    let len = streams.stream_len(&key).await?;
    println!(
        "stream: {len} entries, {:.1} MB of messages",
        bytes as f64 / 1e6
    );

    let status = std::process::Command::new(std::env::current_exe()?)
        .arg("--compact")
        .arg(redis.url())
        .status()?;
    if !status.success() {
        bail!("the compaction process failed: {status}");
    }
    Ok(())
}

/// The worker pass, in a process of its own.
async fn compact(url: &str) -> Result<()> {
    let streams = Arc::new(RedisStreams::connect(url, "y").await?);
    let storage: Arc<dyn Storage> = Arc::new(MemoryStorage::new());
    let worker = Worker::new(
        streams.clone(),
        storage.clone(),
        WorkerSettings {
            task_debounce: Duration::ZERO,
            min_message_lifetime: Duration::from_secs(60),
            update_callback: None,
            history: None,
        },
    );
    let before = status_kb("VmRSS:")?;
    let started = Instant::now();
    worker
        .flush(tokio::time::Instant::now() + Duration::from_secs(600))
        .await?;
    let elapsed = started.elapsed();
    let peak = status_kb("VmHWM:")?;
    let stored = storage.load("big", "index").await?;
    if stored.len() != 1 {
        bail!("expected one stored item, found {}", stored.len());
    }
    println!(
        "compaction: {:.1} s, stored {} bytes",
        elapsed.as_secs_f64(),
        stored[0].update.len()
    );
    println!(
        "peak RSS during compaction: {:.0} MB ({:.0} MB before it, +{:.0} MB)",
        peak as f64 / 1024.0,
        before as f64 / 1024.0,
        peak.saturating_sub(before) as f64 / 1024.0
    );
    Ok(())
}
