//! Every role of [`super::Streams`] inside the process: the embedded streams
//! of a single instance.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::{self, BoxStream, StreamExt as _};
use tokio::sync::{broadcast, Notify};

use super::StreamId;
use super::{
    Append, CloseOrder, Control, Health, History, Keyspace, StreamBatch, StreamEntry, StreamError,
    StreamPage, StreamReader, TaskQueue, WorkerTask, READ_COUNT,
};

mod survey;

/// The same streams, ids, worker queue and pending list as the Redis layout,
/// kept in memory, for one instance that runs without Redis.
pub struct MemoryStreams {
    prefix: String,
    state: std::sync::Mutex<State>,
    changed: Notify,
    /// Close orders, to every subscriber of this process.
    control: broadcast::Sender<CloseOrder>,
}

/// Close orders a subscriber may fall behind by before it misses some.
const CONTROL_BACKLOG: usize = 1024;

#[derive(Default)]
struct State {
    streams: HashMap<String, DocStream>,
    queue: BTreeMap<StreamId, String>,
    pending: BTreeMap<StreamId, Instant>,
    /// The last version number handed out per doc stream.
    versions: HashMap<String, u64>,
    queue_last: StreamId,
}

#[derive(Default)]
struct DocStream {
    entries: VecDeque<StreamEntry>,
    last: StreamId,
}

/// The next id after `last`, from the wall clock as Redis does.
fn next_id(last: StreamId) -> StreamId {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    if now > last.ms {
        StreamId { ms: now, seq: 0 }
    } else {
        StreamId {
            ms: last.ms,
            seq: last.seq + 1,
        }
    }
}

impl State {
    fn queue_task(&mut self, stream: &str) {
        let id = next_id(self.queue_last);
        self.queue_last = id;
        self.queue.insert(id, stream.to_string());
        self.pending.insert(id, Instant::now());
    }

    fn drop_task(&mut self, id: StreamId) {
        self.queue.remove(&id);
        self.pending.remove(&id);
    }
}

impl MemoryStreams {
    /// Empty streams with the given key prefix.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            state: std::sync::Mutex::new(State::default()),
            changed: Notify::new(),
            control: broadcast::channel(CONTROL_BACKLOG).0,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated in a
        // way that matters more than stopping the streams would.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn collect_new(&self, positions: &[(Arc<str>, StreamId)]) -> Vec<StreamBatch> {
        let state = self.state();
        positions
            .iter()
            .filter_map(|(stream, after)| {
                let doc = state.streams.get(&**stream)?;
                let entries: Vec<StreamEntry> = doc
                    .entries
                    .iter()
                    .filter(|entry| entry.id > *after)
                    .take(READ_COUNT)
                    .cloned()
                    .collect();
                (!entries.is_empty()).then(|| StreamBatch {
                    stream: Arc::clone(stream),
                    entries,
                })
            })
            .collect()
    }
}

impl Keyspace for MemoryStreams {
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[async_trait]
impl Append for MemoryStreams {
    async fn append(&self, stream: &str, message: &[u8]) -> Result<(), StreamError> {
        {
            let mut state = self.state();
            if !state.streams.contains_key(stream) {
                state.queue_task(stream);
            }
            let doc = state.streams.entry(stream.to_string()).or_default();
            let id = next_id(doc.last);
            doc.last = id;
            doc.entries.push_back(StreamEntry {
                id,
                message: Bytes::copy_from_slice(message),
            });
        }
        self.changed.notify_waiters();
        Ok(())
    }

    async fn delete_stream(&self, stream: &str) -> Result<(), StreamError> {
        let mut state = self.state();
        state.streams.remove(stream);
        state.versions.remove(stream);
        Ok(())
    }
}

#[async_trait]
impl StreamReader for MemoryStreams {
    async fn read_new(
        &self,
        positions: &[(Arc<str>, StreamId)],
        block: Duration,
    ) -> Result<Vec<StreamBatch>, StreamError> {
        let notified = self.changed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let batches = self.collect_new(positions);
        if !batches.is_empty() {
            return Ok(batches);
        }
        let _ = tokio::time::timeout(block, notified).await;
        Ok(self.collect_new(positions))
    }

    async fn wake_reader(&self) -> Result<(), StreamError> {
        self.changed.notify_waiters();
        Ok(())
    }
}

#[async_trait]
impl History for MemoryStreams {
    async fn read_page(
        &self,
        stream: &str,
        from: StreamId,
        count: usize,
    ) -> Result<StreamPage, StreamError> {
        let state = self.state();
        let entries: Vec<StreamEntry> = state
            .streams
            .get(stream)
            .map(|doc| {
                let start = doc.entries.partition_point(|entry| entry.id < from);
                doc.entries.range(start..).take(count).cloned().collect()
            })
            .unwrap_or_default();
        let last = entries.last().map(|entry| entry.id);
        Ok(StreamPage { entries, last })
    }

    async fn first_id(&self, stream: &str) -> Result<Option<StreamId>, StreamError> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .and_then(|doc| doc.entries.front().map(|entry| entry.id)))
    }

    /// One process holds every writer of the embedded bus, so the counter is
    /// a map under the bus's lock (kept for the process's life).
    async fn next_version(&self, stream: &str, floor: u64) -> Result<u64, StreamError> {
        let mut state = self.state();
        let last = state.versions.entry(stream.to_string()).or_insert(0);
        *last = (*last).max(floor) + 1;
        Ok(*last)
    }
}

#[async_trait]
impl TaskQueue for MemoryStreams {
    async fn ensure_worker_group(&self) -> Result<(), StreamError> {
        Ok(())
    }

    async fn claim_tasks(
        &self,
        _consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<WorkerTask>, StreamError> {
        let mut state = self.state();
        let now = Instant::now();
        let due: Vec<StreamId> = state
            .pending
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= min_idle)
            .map(|(id, _)| *id)
            .take(count)
            .collect();
        let mut tasks = Vec::with_capacity(due.len());
        for id in due {
            match state.queue.get(&id).cloned() {
                Some(stream) => {
                    state.pending.insert(id, now);
                    tasks.push(WorkerTask { id, stream });
                }
                None => {
                    state.pending.remove(&id);
                }
            }
        }
        Ok(tasks)
    }

    async fn stream_len(&self, stream: &str) -> Result<u64, StreamError> {
        Ok(self
            .state()
            .streams
            .get(stream)
            .map(|doc| doc.entries.len() as u64)
            .unwrap_or(0))
    }

    async fn drop_empty_stream(&self, task: &WorkerTask) -> Result<(), StreamError> {
        let mut state = self.state();
        if state
            .streams
            .get(&task.stream)
            .is_some_and(|doc| doc.entries.is_empty())
        {
            state.streams.remove(&task.stream);
        }
        state.drop_task(task.id);
        Ok(())
    }

    async fn finish_task(
        &self,
        task: &WorkerTask,
        trim_before: StreamId,
    ) -> Result<(), StreamError> {
        let mut state = self.state();
        if let Some(doc) = state.streams.get_mut(&task.stream) {
            while doc
                .entries
                .front()
                .is_some_and(|entry| entry.id < trim_before)
            {
                doc.entries.pop_front();
            }
        }
        state.queue_task(&task.stream);
        state.drop_task(task.id);
        Ok(())
    }
}

/// Always answers, never restarts: the defaults.
impl Health for MemoryStreams {}

#[async_trait]
impl Control for MemoryStreams {
    async fn publish_close(&self, order: &CloseOrder) -> Result<(), StreamError> {
        // Nobody listening is no error: there is nothing to close.
        let _ = self.control.send(order.clone());
        Ok(())
    }

    async fn close_orders(&self) -> Result<BoxStream<'static, CloseOrder>, StreamError> {
        let receiver = self.control.subscribe();
        Ok(stream::unfold(receiver, |mut receiver| async move {
            loop {
                match receiver.recv().await {
                    Ok(order) => return Some((order, receiver)),
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "close orders came faster than they were carried out; some were missed"
                        );
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
        .boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn version_numbers_rise_above_the_floor_and_every_number_handed_out() {
        let streams = MemoryStreams::new("y");
        assert_eq!(streams.next_version("a", 0).await.unwrap(), 1);
        assert_eq!(streams.next_version("a", 0).await.unwrap(), 2);
        // Storage holds more than was handed out here: above it.
        assert_eq!(streams.next_version("a", 7).await.unwrap(), 8);
        // A writer that read an older floor still gets a fresh number.
        assert_eq!(streams.next_version("a", 7).await.unwrap(), 9);
        assert_eq!(streams.next_version("b", 0).await.unwrap(), 1);
    }
}
