//! Initial sync of a 5 MB document: the time from a fresh client's connect to
//! the server's sync step 2, a few times, with the room open on the server (one
//! other client stays connected) and closed (no other client).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use conformance::Member;
use yrs::{Doc, Map, Transact};

use crate::client;

/// Connects measured per variant.
pub const REPETITIONS: usize = 5;

/// Map entries of the document and the length of each value: about 5 MB of
/// v1 update in as many separate items as a large edited document has.
const ENTRIES: usize = 45_000;
const VALUE_LEN: usize = 100;

/// Pause after closing a client, long enough for a server to close a room that
/// lost its last connection.
const PAUSE: Duration = Duration::from_millis(500);

/// Sync times of one variant, in milliseconds, sorted.
#[derive(Debug, Clone)]
pub struct Times(pub Vec<f64>);

impl Times {
    pub fn min(&self) -> f64 {
        self.0.first().copied().unwrap_or(f64::NAN)
    }
    pub fn median(&self) -> f64 {
        self.0.get(self.0.len() / 2).copied().unwrap_or(f64::NAN)
    }
    pub fn max(&self) -> f64 {
        self.0.last().copied().unwrap_or(f64::NAN)
    }
}

#[derive(Debug, Clone)]
pub struct Outcome {
    /// Size of the document's v1 update, in bytes.
    pub document_bytes: usize,
    pub room_open: Times,
    pub room_closed: Times,
}

/// The document: one map with [`ENTRIES`] string values.
fn large_update() -> Vec<u8> {
    let doc = Doc::new();
    let map = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    for i in 0..ENTRIES {
        let value: String =
            std::iter::repeat_n(char::from(b'a' + (i % 26) as u8), VALUE_LEN).collect();
        map.insert(&mut txn, format!("entry-{i}"), value);
    }
    txn.encode_update_v1()
}

async fn time_sync(url: &str) -> Result<f64> {
    let started = Instant::now();
    let (mut socket, document) = client::connect_synced(url).await?;
    let elapsed = started.elapsed().as_secs_f64() * 1000.0;
    if document < ENTRIES * VALUE_LEN {
        bail!("the initial sync carried {document} bytes, not the whole document");
    }
    let _ = socket.close(None).await;
    Ok(elapsed)
}

async fn repeat(url: &str) -> Result<Times> {
    let mut times = Vec::with_capacity(REPETITIONS);
    for _ in 0..REPETITIONS {
        times.push(time_sync(url).await?);
        tokio::time::sleep(PAUSE).await;
    }
    times.sort_by(f64::total_cmp);
    Ok(Times(times))
}

pub async fn run(server: &Member) -> Result<Outcome> {
    let url = server.url("sync-5mb");
    let update = large_update();
    let mut writer = client::write_document(&url, &update, Duration::from_secs(60)).await?;

    let room_open = repeat(&url).await?;
    let _ = writer.close(None).await;
    drop(writer);
    tokio::time::sleep(PAUSE).await;
    let room_closed = repeat(&url).await?;
    Ok(Outcome {
        document_bytes: update.len(),
        room_open,
        room_closed,
    })
}
