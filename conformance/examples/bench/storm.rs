//! A join storm: many clients open a closed room holding a large document at
//! the same moment. Counts the clients synced, their sync times and the
//! server's peak resident memory (`VmHWM`), which shows whether the server
//! holds one copy of the document per joiner or one for all of them.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conformance::Member;
use yrs::{Doc, Map, Transact};

use crate::client;

/// Clients joining at once.
pub const JOINERS: usize = 150;

/// Map entries of the document and the length of each value: about 20 MB of
/// v1 update in as many items.
const ENTRIES: usize = 180_000;
const VALUE_LEN: usize = 100;

#[derive(Debug, Clone)]
pub struct Outcome {
    /// Size of the document's v1 update, in bytes.
    pub document_bytes: usize,
    /// Clients whose initial sync carried the whole document.
    pub synced: usize,
    /// Sync times of the synced clients, in milliseconds, sorted.
    pub times_ms: Vec<f64>,
    /// The server's peak resident memory before the storm and after it.
    pub peak_before_kib: u64,
    pub peak_after_kib: Option<u64>,
    /// The first failure of a client, if any failed.
    pub failure: Option<String>,
}

/// The document: one map of [`ENTRIES`] values of varied letters (so that it
/// compresses as text does, not to nothing).
fn large_update() -> Vec<u8> {
    let doc = Doc::new();
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    for i in 0..ENTRIES {
        let value: String = (0..VALUE_LEN)
            .map(|j| char::from(b'a' + ((i * 7 + j * j) % 26) as u8))
            .collect();
        map.insert(&mut txn, format!("entry-{i}"), value);
    }
    txn.encode_update_v1()
}

/// `VmHWM` of a process in KiB; `None` once it is gone.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

pub async fn run(server: &Member, pid: u32) -> Result<Outcome> {
    let url = server.url("join-storm");
    let update = large_update();
    let mut writer = client::write_document(&url, &update, Duration::from_secs(120)).await?;
    let _ = writer.close(None).await;
    drop(writer);
    // Let the room close, so that the storm loads it anew.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let peak_before_kib = peak_kib(pid).context("the server's VmHWM")?;

    let started = Instant::now();
    let joiners: Vec<_> = (0..JOINERS)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let (mut socket, document) = client::connect_synced(&url).await?;
                let elapsed = started.elapsed().as_secs_f64() * 1000.0;
                let _ = socket.close(None).await;
                if document < ENTRIES * VALUE_LEN {
                    bail!("the initial sync carried {document} bytes, not the whole document");
                }
                Ok(elapsed)
            })
        })
        .collect();
    let mut times_ms = Vec::new();
    let mut failure = None;
    for joiner in joiners {
        match joiner.await {
            Ok(Ok(ms)) => times_ms.push(ms),
            Ok(Err(err)) => {
                failure.get_or_insert_with(|| format!("{err:#}"));
            }
            Err(err) => {
                failure.get_or_insert_with(|| err.to_string());
            }
        }
    }
    times_ms.sort_by(f64::total_cmp);
    Ok(Outcome {
        document_bytes: update.len(),
        synced: times_ms.len(),
        times_ms,
        peak_before_kib,
        peak_after_kib: peak_kib(pid),
        failure,
    })
}
