//! One blocking stream read per instance, fanned out to the rooms.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use bytes::Bytes;
use yrs::{ReadTxn, StateVector, Transact};

use crate::connection::AppState;
use crate::load::load_doc;
use crate::log_text::bounded;
use crate::metrics;
use crate::protocol::{self};
use crate::rooms::Follow;
use crate::socket::RoomFrame;
use crate::streams::CloseOrder;
use crate::streams::{StreamReader, READ_BLOCK};

/// Read every followed stream, merge each stream's new messages and deliver
/// them to the room, until `shutdown` is cancelled. Read errors are logged and
/// retried with a growing pause (up to [`MAX_RETRY`]), so a Redis restart is
/// survived. Reads that failed for half the message lifetime or longer may
/// have missed entries a worker trimmed meanwhile; once they succeed again,
/// every followed room is sent its whole document ([`resync`]).
///
/// While the rooms are busy (see [`Pacing`]), the next read starts `window`
/// after the previous one did, so that it returns more entries, merged into
/// fewer frames, for fewer reads of every followed stream (each costs Redis
/// work per stream). Otherwise, and after a read that waited for its
/// entries, the next read starts at once.
pub async fn run<R: StreamReader + ?Sized>(
    streams: Arc<R>,
    state: Arc<AppState>,
    shutdown: CancellationToken,
) {
    let rooms = &state.rooms;
    let metrics = &state.metrics;
    let window = state.settings.coalesce_window;
    let mut backoff = Duration::from_millis(100);
    let mut failing_since: Option<Instant> = None;
    let mut pacing = Pacing::new(window, Instant::now());
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
                if let Some(since) = failing_since.take() {
                    let outage = since.elapsed();
                    if outage >= state.settings.message_lifetime / 2 {
                        tracing::warn!(
                            ?outage,
                            rooms = follows.len(),
                            "stream reads failed for half the message lifetime or longer; sending every followed room its whole document"
                        );
                        metrics::inc(&metrics.room_resyncs);
                        resync(&state, &follows).await;
                    }
                }
                let entries: usize = batches.iter().map(|b| b.entries.len()).sum();
                // Counted by the followed stream's own `Arc` (a batch's is new).
                pacing.read(
                    Instant::now(),
                    follows.len(),
                    entries,
                    batches
                        .iter()
                        .filter_map(|b| by_stream.get(&*b.stream).map(|f| &f.stream)),
                );
                let busy = pacing.paced() && entries > 0 && started.elapsed() < window;
                metrics.read_batch_entries.observe(entries as f64);
                deliver(rooms, metrics, &by_stream, batches);
                if busy {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep_until(started + window) => {}
                    }
                }
            }
            Err(err) => {
                failing_since.get_or_insert_with(Instant::now);
                metrics::inc(&metrics.stream_read_errors);
                tracing::warn!(%err, retry_in = ?backoff, "stream read failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_RETRY);
            }
        }
    }
    tracing::debug!("subscriber stopped");
}

/// Merge each stream's new messages, frame them once and hand them to the
/// stream's room.
fn deliver(
    rooms: &crate::rooms::Rooms,
    metrics: &crate::metrics::Metrics,
    by_stream: &HashMap<&str, &Follow>,
    batches: Vec<crate::streams::StreamBatch>,
) {
    for batch in batches {
        let (Some(follow), Some(first), Some(last)) = (
            by_stream.get(&*batch.stream),
            batch.entries.first(),
            batch.entries.last(),
        ) else {
            continue;
        };
        let messages =
            protocol::merge_messages(&batch.entries.iter().map(|e| &e.message).collect::<Vec<_>>());
        metrics::add(&metrics.stream_entries_read, batch.entries.len() as u64);
        // Framed (and compressed) once, written to every member.
        let frames: Vec<_> = messages.into_iter().map(RoomFrame::new).collect();
        let queued = rooms.deliver(follow, last.id, &frames);
        metrics::add(&metrics.messages_delivered, queued as u64);
        // Once per stream and read, for its oldest entry.
        let lag_ms = now_ms().saturating_sub(first.id.ms);
        metrics::observe(&metrics.delivery_lag_seconds, Duration::from_millis(lag_ms));
    }
}

/// Send each room of `follows` its whole document, loaded as for an opening
/// client: entries appended while this instance could not read may have been
/// compacted and trimmed before it read them, and its clients would never get
/// them (updates apply idempotently, so what they had is harmless). A room
/// whose document cannot be loaded has its connections closed with 1011
/// instead, so that its clients reconnect and load it then.
async fn resync(state: &AppState, follows: &[Follow]) {
    for follow in follows {
        let loaded = match state.streams.parse_stream_key(&follow.stream) {
            Ok((room, docid)) => load_doc(
                state.streams.as_ref(),
                state.storage.as_ref(),
                &follow.stream,
                &room,
                &docid,
            )
            .await
            .map_err(|err| err.to_string()),
            Err(err) => Err(err.to_string()),
        };
        let update = loaded.map(|loaded| {
            let update = loaded
                .doc
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            (update, loaded.last_id)
        });
        match update {
            Ok((update, last_id)) => {
                let frame = RoomFrame::new(Bytes::from(protocol::encode_sync_update(&update)));
                let last_id = last_id.max(follow.after);
                state.rooms.deliver(follow, last_id, &[frame]);
            }
            Err(err) => {
                tracing::warn!(stream = %bounded(&follow.stream), %err, "could not load a document to resend; closing its connections");
                state.rooms.close(&CloseOrder {
                    stream: follow.stream.to_string(),
                    user: None,
                    code: 1011,
                    reason: "missed stream entries, reconnect".into(),
                });
            }
        }
    }
}

/// The longest pause between failed reads: a read on a Redis that is down
/// fails at once, and one that came back is read again within it.
const MAX_RETRY: Duration = Duration::from_secs(1);

/// How long the reads' figures are gathered before pacing is decided anew.
const EPOCH: Duration = Duration::from_millis(100);

/// Streams read per entry returned above which reads are paced: each read
/// costs Redis (and the server) work for every followed stream, so with a
/// thousand quiet rooms one read per entry is mostly work on empty streams.
const MAX_READ_AMPLIFICATION: f64 = 64.0;

/// Whether the subscriber's reads are paced, decided every [`EPOCH`] from the
/// reads of the last one: paced when a room that gets updates gets at least
/// one per window (so a paced read merges several into one frame), or when
/// reads cost many streams read per entry they return (many followed rooms,
/// few updates each) while there is at least an entry per window in all.
/// Light load is neither, and nothing waits.
#[derive(Debug)]
struct Pacing {
    window: Duration,
    epoch_started: Instant,
    reads: u64,
    /// Stream reads: followed streams summed over the epoch's reads.
    streams_read: u64,
    entries: u64,
    /// Streams that returned entries in the epoch (by address).
    active: HashSet<usize>,
    paced: bool,
}

impl Pacing {
    fn new(window: Duration, now: Instant) -> Self {
        Self {
            window,
            epoch_started: now,
            reads: 0,
            streams_read: 0,
            entries: 0,
            active: HashSet::new(),
            paced: false,
        }
    }

    /// Note a read at `now` over `followed` streams that returned `entries`
    /// from `streams`.
    fn read<'a>(
        &mut self,
        now: Instant,
        followed: usize,
        entries: usize,
        streams: impl Iterator<Item = &'a Arc<str>>,
    ) {
        self.reads += 1;
        self.streams_read += followed as u64;
        self.entries += entries as u64;
        self.active
            .extend(streams.map(|s| Arc::as_ptr(s) as *const u8 as usize));
        let elapsed = now.saturating_duration_since(self.epoch_started);
        if elapsed < EPOCH {
            return;
        }
        self.paced = !self.window.is_zero() && self.entries > 0 && {
            let per_room_per_window =
                self.entries as f64 / self.active.len().max(1) as f64 / elapsed.as_secs_f64()
                    * self.window.as_secs_f64();
            let amplification = self.streams_read as f64 / self.entries as f64;
            // At least an entry per window in all, so that a paced read
            // still carries one.
            let per_window =
                self.entries as f64 / elapsed.as_secs_f64() * self.window.as_secs_f64();
            per_room_per_window >= 1.0
                || (amplification >= MAX_READ_AMPLIFICATION && per_window >= 1.0)
        };
        *self = Self {
            paced: self.paced,
            active: std::mem::take(&mut self.active),
            ..Self::new(self.window, now)
        };
        self.active.clear();
    }

    /// Whether reads are paced now.
    fn paced(&self) -> bool {
        self.paced
    }
}

/// Milliseconds since the Unix epoch, the clock of stream entry ids.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run reads for one epoch and a bit: `reads` reads over `followed`
    /// streams, `entries` entries in all spread over `active` streams.
    fn epoch(
        pacing: &mut Pacing,
        start: Instant,
        reads: u64,
        followed: usize,
        entries: u64,
        active: usize,
    ) -> bool {
        let streams: Vec<Arc<str>> = (0..active).map(|i| Arc::from(i.to_string())).collect();
        for i in 0..reads {
            let at = start + EPOCH.mul_f64((i + 1) as f64 / reads as f64);
            let these = (entries / reads) as usize;
            let from = (i as usize * these) % active.max(1);
            pacing.read(
                at,
                followed,
                these,
                streams.iter().cycle().skip(from).take(these.min(active)),
            );
        }
        pacing.paced()
    }

    #[test]
    fn reads_are_paced_only_when_rooms_are_busy_or_reads_mostly_empty() {
        let window = Duration::from_millis(5);
        let start = Instant::now();
        // 2 000 updates/s over 20 rooms, read one at a time: 100/s a room,
        // half an update per window; 20 streams read per entry.
        let mut pacing = Pacing::new(window, start);
        assert!(!epoch(&mut pacing, start, 200, 20, 200, 20));
        // 5 000 updates/s over 20 rooms: 1.25 a room per window.
        let mut pacing = Pacing::new(window, start);
        assert!(epoch(&mut pacing, start, 500, 20, 500, 20));
        // 2 000 updates/s over 1 000 rooms of 2 updates/s: a read per entry
        // reads 1 000 streams for it.
        let mut pacing = Pacing::new(window, start);
        assert!(epoch(&mut pacing, start, 200, 1000, 200, 200));
        // Paced, the figures keep it paced; quiet again, it is not.
        let later = start + EPOCH;
        assert!(epoch(&mut pacing, later, 20, 1000, 200, 200));
        let quiet = start + EPOCH * 2;
        assert!(!epoch(&mut pacing, quiet, 3, 1000, 3, 3));
        // A zero window never paces.
        let mut pacing = Pacing::new(Duration::ZERO, start);
        assert!(!epoch(&mut pacing, start, 500, 20, 500, 20));
    }
}
