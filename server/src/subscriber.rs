//! One blocking stream read per instance, fanned out to the rooms.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::metrics::{self, Metrics};
use crate::protocol::{self};
use crate::rooms::{Follow, Rooms};
use crate::socket::RoomFrame;
use crate::streams::{StreamReader, READ_BLOCK};

/// Read every followed stream, merge each stream's new messages and deliver
/// them to the room, until `shutdown` is cancelled. Read errors are logged and
/// retried with a growing pause, so a Redis restart is survived.
///
/// A read that returns entries at once found them waiting: the rooms are
/// busier than one read per entry. The next read then starts `window` after
/// this one did, so that it returns more entries, merged into fewer frames,
/// for fewer reads of every followed stream (each costs Redis work per
/// stream). A read that waited for its entries is followed at once.
pub async fn run<R: StreamReader + ?Sized>(
    streams: Arc<R>,
    rooms: Arc<Rooms>,
    metrics: Arc<Metrics>,
    window: Duration,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = tokio::time::Instant::now();
        let follows = rooms.follows();
        let positions: Vec<_> = follows
            .iter()
            .map(|f| (Arc::clone(&f.stream), f.after))
            .collect();
        let by_stream: HashMap<&str, &Follow> = follows.iter().map(|f| (&*f.stream, f)).collect();
        let read = tokio::select! {
            _ = shutdown.cancelled() => break,
            read = streams.read_new(&positions, READ_BLOCK) => read,
        };
        match read {
            Ok(batches) => {
                backoff = Duration::from_millis(100);
                let busy = !batches.is_empty() && started.elapsed() < window;
                let entries: usize = batches.iter().map(|b| b.entries.len()).sum();
                metrics.read_batch_entries.observe(entries as f64);
                for batch in batches {
                    let (Some(follow), Some(first), Some(last)) = (
                        by_stream.get(&*batch.stream),
                        batch.entries.first(),
                        batch.entries.last(),
                    ) else {
                        continue;
                    };
                    let messages = protocol::merge_messages(
                        &batch.entries.iter().map(|e| &e.message).collect::<Vec<_>>(),
                    );
                    metrics::add(&metrics.stream_entries_read, batch.entries.len() as u64);
                    // Framed (and compressed) once, written to every member.
                    let frames: Vec<_> = messages.into_iter().map(RoomFrame::new).collect();
                    let queued = rooms.deliver(follow, last.id, &frames);
                    metrics::add(&metrics.messages_delivered, queued as u64);
                    // Once per stream and read, for its oldest entry.
                    let lag_ms = now_ms().saturating_sub(first.id.ms);
                    metrics::observe(&metrics.delivery_lag_seconds, Duration::from_millis(lag_ms));
                }
                if busy {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(started + window) => {}
                    }
                }
            }
            Err(err) => {
                metrics::inc(&metrics.stream_read_errors);
                tracing::warn!(%err, retry_in = ?backoff, "stream read failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    tracing::debug!("subscriber stopped");
}

/// Milliseconds since the Unix epoch, the clock of stream entry ids.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
