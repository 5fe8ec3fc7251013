//! Compaction: move what the streams hold into storage and trim them
//! (docs/protocol.md §5), sharing the task queue with every other worker of
//! the fleet, in any language.

mod callback;

pub use callback::UpdateCallback;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::load::{load_doc, LoadError};
use crate::metrics::{self, Metrics};
use crate::storage::{now_ms, to_drop, Retention, Storage, StorageError};
use crate::streams::{History, StreamError, StreamId, Streams, TaskQueue, WorkerTask, CLAIM_COUNT};
use crate::versions::{keep_next_version, KeepError};

/// The longest pause between claims after batches that failed entirely.
const MAX_FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// Why one compaction pass failed. The task stays claimed and is retried once
/// it has been idle for the task debounce.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Loading the document failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Storing the document failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The streams failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
    /// The update callback's HTTP client could not be made.
    #[error("update callback: {0}")]
    Callback(String),
}

/// Documents a stopping single instance could not store: their edits were only
/// in its memory, so stopping loses them.
#[derive(Debug, thiserror::Error)]
pub enum Unstored {
    /// These rooms' documents were not stored (failed, or out of time).
    #[error("{}", UnstoredRooms(.0))]
    Rooms(Vec<String>),
    /// The queue could not be read, so which documents were stored is unknown.
    #[error("documents not stored before stopping: the task queue failed: {0}")]
    Unknown(StreamError),
}

/// Rooms named in an error line: the first few, each bounded (they are client
/// text), then how many more.
struct UnstoredRooms<'a>(&'a [String]);

/// Rooms an [`Unstored`] line names before it only counts the rest.
const ROOMS_NAMED: usize = 20;

impl std::fmt::Display for UnstoredRooms<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rooms = self.0;
        match rooms.len() {
            1 => write!(f, "1 document not stored before stopping: room ")?,
            n => write!(f, "{n} documents not stored before stopping: rooms ")?,
        }
        for (i, room) in rooms.iter().take(ROOMS_NAMED).enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{:?}", crate::log_text::bounded(room).to_string())?;
        }
        if rooms.len() > ROOMS_NAMED {
            write!(f, " and {} more", rooms.len() - ROOMS_NAMED)?;
        }
        Ok(())
    }
}

/// Timing of compaction, and what it tells or keeps besides the document.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a task waits (idle) before a worker claims it.
    pub task_debounce: Duration,
    /// How long entries stay in a stream after they were compacted.
    pub min_message_lifetime: Duration,
    /// y-redis's `YDOC_UPDATE_CALLBACK`, told of every document that changed.
    pub update_callback: Option<UpdateCallback>,
    /// Keep every stored state of a changed document as its next version,
    /// thinned out by this retention (`[history]`); `None` keeps no versions.
    pub history: Option<Retention>,
}

/// What one compaction pass did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream was empty: it and its task were removed.
    RemovedEmpty,
    /// The document was compacted (stored when it had changed, redundant stored
    /// items deleted) and the stream trimmed before the given id.
    Compacted {
        /// Whether a new item was stored: the stream changed the document, or
        /// several stored items were folded into one.
        stored: bool,
        /// Entries older than this id were trimmed.
        trimmed_before: StreamId,
    },
    /// The task named a key outside this prefix's layout and was dropped.
    Dropped,
}

/// A worker: one consumer of the `{prefix}:worker` group. It needs the task
/// queue and each task's doc stream, nothing else of the streams.
pub struct Worker<Q: TaskQueue + History + ?Sized = dyn Streams> {
    streams: Arc<Q>,
    storage: Arc<dyn Storage>,
    settings: WorkerSettings,
    consumer: String,
    metrics: Arc<Metrics>,
}

impl<Q: TaskQueue + History + ?Sized> Worker<Q> {
    /// A worker with a fresh random consumer name.
    pub fn new(streams: Arc<Q>, storage: Arc<dyn Storage>, settings: WorkerSettings) -> Self {
        Self {
            streams,
            storage,
            settings,
            consumer: uuid::Uuid::new_v4().to_string(),
            metrics: Arc::default(),
        }
    }

    /// Count into `metrics` (the instance's) instead of a private set.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Claim and compact tasks until `shutdown` is cancelled. A task being
    /// compacted when the signal comes is finished first.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(consumer = %self.consumer, storage = self.storage.name(), "worker started");
        let mut backoff = Duration::from_millis(100);
        // Pause after a batch whose every task failed; doubles while that goes on.
        let mut failure_pause: Option<Duration> = None;
        while !shutdown.is_cancelled() {
            let claimed = self
                .streams
                .claim_tasks(&self.consumer, self.settings.task_debounce, CLAIM_COUNT)
                .await;
            let pause = match claimed {
                Ok(tasks) if tasks.is_empty() => {
                    backoff = Duration::from_millis(100);
                    self.idle_pause()
                }
                Ok(tasks) => {
                    backoff = Duration::from_millis(100);
                    let mut failed = 0;
                    for task in &tasks {
                        if !self.compact_logged(task).await {
                            failed += 1;
                        }
                    }
                    if failed < tasks.len() {
                        failure_pause = None;
                        continue;
                    }
                    // Every claimed task failed (storage down, say). They become
                    // claimable again after the debounce, the natural retry
                    // interval; this pause, doubling up to 1 s while failures go
                    // on, keeps a very short debounce from turning the retries
                    // into a busy loop.
                    let pause = failure_pause.map_or(self.idle_pause(), |pause| {
                        (pause * 2).min(MAX_FAILURE_PAUSE)
                    });
                    failure_pause = Some(pause);
                    pause
                }
                Err(err) => {
                    tracing::warn!(%err, retry_in = ?backoff, "claiming worker tasks failed");
                    let pause = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    pause
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        tracing::info!(consumer = %self.consumer, "worker stopped");
    }

    /// How long to wait before claiming again when there was nothing to do: the
    /// task debounce, within 50 ms and 1 s (y-redis sleeps 1 s).
    fn idle_pause(&self) -> Duration {
        Duration::from_secs(1).min(self.settings.task_debounce.max(Duration::from_millis(50)))
    }

    /// Compact every queued document now, however recent its changes (a single
    /// instance does this before it stops, since its streams die with it).
    /// Documents not stored by `deadline`, or whose compaction failed, are
    /// returned by room: their edits live nowhere else.
    pub async fn flush(&self, deadline: tokio::time::Instant) -> Result<(), Unstored> {
        let tasks = match self.streams.claim_all_tasks(&self.consumer).await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::warn!(%err, "could not claim tasks to flush");
                return Err(Unstored::Unknown(err));
            }
        };
        let mut unstored = Vec::new();
        for task in &tasks {
            let stored = tokio::time::timeout_at(deadline, self.compact_logged(task)).await;
            if !matches!(stored, Ok(true)) {
                unstored.push(self.room_of(task));
            }
        }
        match unstored.is_empty() {
            true => Ok(()),
            false => Err(Unstored::Rooms(unstored)),
        }
    }

    /// The room a task's stream belongs to, for telling an operator what was
    /// lost; the stream key itself when it names no room.
    fn room_of(&self, task: &WorkerTask) -> String {
        self.streams
            .parse_stream_key(&task.stream)
            .map(|(room, _)| room)
            .unwrap_or_else(|_| task.stream.clone())
    }

    /// Compact one task; a failure is logged once, at warn, with its error. A
    /// panic inside (a yrs defect on crafted input, say) is caught and logged
    /// like an error, so one document can never stop the worker. Returns
    /// whether the pass succeeded.
    async fn compact_logged(&self, task: &WorkerTask) -> bool {
        let started = std::time::Instant::now();
        let compacted = AssertUnwindSafe(self.compact(task)).catch_unwind().await;
        metrics::observe(&self.metrics.compaction_seconds, started.elapsed());
        match compacted {
            Ok(Ok(outcome)) => {
                metrics::inc(&self.metrics.compactions);
                if matches!(outcome, Outcome::Compacted { stored: true, .. }) {
                    metrics::inc(&self.metrics.documents_stored);
                }
                tracing::debug!(stream = %crate::log_text::bounded(&task.stream), ?outcome, "compacted");
                true
            }
            Ok(Err(err)) => {
                metrics::inc(&self.metrics.compaction_errors);
                tracing::warn!(
                    stream = %crate::log_text::bounded(&task.stream),
                    %err,
                    retry_in = ?self.settings.task_debounce,
                    "compaction failed, nothing was trimmed; the task will be retried"
                );
                false
            }
            Err(_) => {
                metrics::inc(&self.metrics.compaction_errors);
                tracing::error!(
                    stream = %crate::log_text::bounded(&task.stream),
                    retry_in = ?self.settings.task_debounce,
                    "compaction panicked, nothing was trimmed; the task will be retried"
                );
                false
            }
        }
    }

    /// Delete items whose content a stored item already holds. A failure only
    /// leaves duplicates, which merge harmlessly until a later pass deletes them,
    /// so it is logged and the pass goes on (the stream may be trimmed: storage
    /// holds its content).
    async fn delete_replaced(&self, room: &str, docid: &str, references: &[String]) {
        if references.is_empty() {
            return;
        }
        if let Err(err) = self.storage.delete(room, docid, references).await {
            tracing::warn!(room = %crate::log_text::bounded(room), %err, "could not delete replaced items, a later pass will");
        }
    }

    /// Keep `update` (the state just stored) as the document's next version and
    /// apply the retention, when history is on. A failure only costs a version:
    /// it is logged once and the pass goes on.
    async fn keep_version_logged(&self, room: &str, docid: &str, update: &[u8]) {
        let Some(retention) = self.settings.history.as_ref() else {
            return;
        };
        if let Err(err) = self.keep_version(room, docid, update, retention).await {
            tracing::warn!(
                room = %crate::log_text::bounded(room),
                docid = %crate::log_text::bounded(docid),
                %err,
                "could not keep a version of the stored document"
            );
        }
    }

    async fn keep_version(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        retention: &Retention,
    ) -> Result<(), KeepError> {
        let now = now_ms();
        let (_, versions) = keep_next_version(
            self.streams.as_ref(),
            self.storage.as_ref(),
            room,
            docid,
            update,
            now,
        )
        .await?;
        let dropped = to_drop(&versions, now, retention);
        if !dropped.is_empty() {
            self.storage.delete_versions(room, docid, &dropped).await?;
        }
        Ok(())
    }

    /// One compaction pass over the task's stream. Storage is written before the
    /// stream is trimmed, and old items are deleted only after the new one is
    /// stored: an error at any step loses nothing. On an error the task is left
    /// claimed, untrimmed; any worker claims it again once it has been idle for
    /// the task debounce.
    pub async fn compact(&self, task: &WorkerTask) -> Result<Outcome, WorkerError> {
        let (room, docid) = match self.streams.parse_stream_key(&task.stream) {
            Ok(parts) => parts,
            Err(err) => {
                tracing::warn!(task = %task.id, stream = %crate::log_text::bounded(&task.stream), %err, "task names no doc stream of this prefix, dropping it");
                self.streams.drop_empty_stream(task).await?;
                return Ok(Outcome::Dropped);
            }
        };
        if self.streams.stream_len(&task.stream).await? == 0 {
            self.streams.drop_empty_stream(task).await?;
            return Ok(Outcome::RemovedEmpty);
        }
        let loaded = load_doc(
            self.streams.as_ref(),
            self.storage.as_ref(),
            &task.stream,
            &room,
            &docid,
        )
        .await?;
        // Several stored items mean an earlier pass stored its item but could not
        // delete the ones it replaced (a crash, a failed delete). They merge
        // harmlessly; when nothing changed they are pruned to the one holding
        // everything, or folded into a new item when none does.
        let redundant: Vec<String> = match (&loaded.covering, loaded.changed) {
            (Some(keep), false) => loaded
                .references
                .iter()
                .filter(|reference| *reference != keep)
                .cloned()
                .collect(),
            _ => Vec::new(),
        };
        let store = loaded.changed || (loaded.references.len() > 1 && loaded.covering.is_none());
        if store {
            let (update, state_vector) = loaded.stored_state()?;
            if let Some(callback) = self
                .settings
                .update_callback
                .as_ref()
                .filter(|_| loaded.changed)
            {
                // As y-redis: the callback hears of the change before it is stored.
                callback.notify(&room, &update).await;
            }
            // Nothing is deleted or trimmed unless this succeeds.
            self.storage
                .put(&room, &docid, &update, &state_vector)
                .await?;
            self.delete_replaced(&room, &docid, &loaded.references)
                .await;
            if loaded.changed {
                self.keep_version_logged(&room, &docid, &update).await;
            }
        } else if !redundant.is_empty() {
            self.delete_replaced(&room, &docid, &redundant).await;
        }
        let last_ms = loaded.last_id.ms.max(task.id.ms);
        let trim_before = StreamId {
            ms: last_ms.saturating_sub(self.settings.min_message_lifetime.as_millis() as u64),
            seq: 0,
        };
        self.streams.finish_task(task, trim_before).await?;
        Ok(Outcome::Compacted {
            stored: store,
            trimmed_before: trim_before,
        })
    }
}
