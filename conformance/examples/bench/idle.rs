//! Memory per idle connection: the server's resident memory before any
//! connection and after 1 000, 5 000 and 10 000 connections that finished their
//! initial sync and then stay silent.

use std::time::Duration;

use anyhow::Result;
use conformance::Member;
use futures_util::StreamExt;

use crate::client;
use crate::procfs::rss_kib;

/// Connection counts at which memory is read, in increasing order.
pub const LEVELS: [usize; 3] = [1_000, 5_000, 10_000];

/// Rooms the connections spread over (connection `i` joins room `i % ROOMS`).
const ROOMS: usize = 20;

/// Connections opened at once: quick, yet within both servers' accept backlog.
const OPEN_CONCURRENCY: usize = 32;

/// Quiet time before each reading, so that the allocations of the previous
/// step (and, for Node, a garbage collection) settle.
const SETTLE: Duration = Duration::from_secs(2);

/// What was measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub rss_before_kib: u64,
    /// Per level reached: (connections, resident memory in KiB).
    pub levels: Vec<(usize, u64)>,
    /// Connections open at the end.
    pub held: usize,
    /// Why opening stopped before the last level, if it did.
    pub failure: Option<String>,
}

impl Outcome {
    /// Memory per connection at `connections`, in KiB, if that level was reached.
    pub fn per_connection_kib(&self, connections: usize) -> Option<f64> {
        self.levels
            .iter()
            .find(|(n, _)| *n == connections)
            .map(|(n, rss)| rss.saturating_sub(self.rss_before_kib) as f64 / *n as f64)
    }
}

pub async fn run(server: &Member, pid: u32) -> Result<Outcome> {
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = rss_kib(pid)?;
    let mut held = Vec::new();
    let mut levels = Vec::new();
    let mut failure = None;
    for level in LEVELS {
        let first = held.len();
        let opened: Vec<Result<(client::Socket, usize)>> = futures_util::stream::iter(first..level)
            .map(|i| {
                let url = server.url(&format!("idle-{}", i % ROOMS));
                async move { client::connect_synced(&url).await }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
        for result in opened {
            match result {
                Ok((socket, _)) => held.push(client::hold(socket)),
                Err(err) => {
                    failure.get_or_insert_with(|| format!("{err:#}"));
                }
            }
        }
        if failure.is_some() {
            break;
        }
        tokio::time::sleep(SETTLE).await;
        levels.push((level, rss_kib(pid)?));
    }
    let outcome = Outcome {
        rss_before_kib,
        levels,
        held: held.iter().filter(|task| !task.is_finished()).count(),
        failure,
    };
    for task in held {
        task.abort();
    }
    Ok(outcome)
}
