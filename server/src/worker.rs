//! Compaction: move what the streams hold into storage and trim them
//! (compat notes section 5), sharing the task queue with every other worker of
//! the fleet, in any language.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::doc::{load_doc, LoadError};
use crate::protocol::{self, StreamId};
use crate::storage::{Storage, StorageError};
use crate::streams::{StreamError, Streams, WorkerTask, CLAIM_COUNT};

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
    /// The stream bus failed.
    #[error(transparent)]
    Streams(#[from] StreamError),
}

/// Timing of compaction.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// How long a task waits (idle) before a worker claims it.
    pub task_debounce: Duration,
    /// How long entries stay in a stream after they were compacted.
    pub min_message_lifetime: Duration,
    /// y-redis's `YDOC_UPDATE_CALLBACK`: `PUT {url}/{room}` with a multipart
    /// field `ydoc` holding the v2 state of every document that changed.
    pub update_callback: Option<String>,
}

/// What one compaction pass did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The stream was empty: it and its task were removed.
    RemovedEmpty,
    /// The document was compacted (stored when it had changed) and the stream
    /// trimmed before the given id.
    Compacted {
        /// Whether a new item was stored.
        stored: bool,
        /// Entries older than this id were trimmed.
        trimmed_before: StreamId,
    },
    /// The task named a key outside this prefix's layout and was dropped.
    Dropped,
}

/// A worker: one consumer of the `{prefix}:worker` group.
pub struct Worker {
    streams: Arc<dyn Streams>,
    storage: Arc<dyn Storage>,
    settings: WorkerSettings,
    consumer: String,
    http: reqwest::Client,
}

impl Worker {
    /// A worker with a fresh random consumer name.
    pub fn new(
        streams: Arc<dyn Streams>,
        storage: Arc<dyn Storage>,
        settings: WorkerSettings,
    ) -> Self {
        Self {
            streams,
            storage,
            settings,
            consumer: uuid::Uuid::new_v4().to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }

    /// This worker's consumer name in the group.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Claim and compact tasks until `shutdown` is cancelled. A task being
    /// compacted when the signal comes is finished first.
    pub async fn run(&self, shutdown: CancellationToken) {
        tracing::info!(consumer = %self.consumer, storage = self.storage.name(), "worker started");
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let claimed = self
                .streams
                .claim_tasks(&self.consumer, self.settings.task_debounce, CLAIM_COUNT)
                .await;
            let pause = match claimed {
                Ok(tasks) if tasks.is_empty() => {
                    backoff = Duration::from_millis(100);
                    Duration::from_secs(1)
                        .min(self.settings.task_debounce.max(Duration::from_millis(50)))
                }
                Ok(tasks) => {
                    backoff = Duration::from_millis(100);
                    for task in tasks {
                        self.compact_logged(&task).await;
                    }
                    continue;
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

    /// Compact every queued document now, however recent its changes (a single
    /// instance does this before it stops, since its streams die with it).
    pub async fn flush(&self) {
        match self.streams.claim_all_tasks(&self.consumer).await {
            Ok(tasks) => {
                for task in tasks {
                    self.compact_logged(&task).await;
                }
            }
            Err(err) => tracing::warn!(%err, "could not claim tasks to flush"),
        }
    }

    /// Compact one task and log the outcome. A panic inside (a yrs defect on
    /// crafted input, say) is caught and logged like an error, so one document
    /// can never stop the worker.
    async fn compact_logged(&self, task: &WorkerTask) {
        match AssertUnwindSafe(self.compact(task)).catch_unwind().await {
            Ok(Ok(outcome)) => tracing::debug!(stream = %task.stream, ?outcome, "compacted"),
            Ok(Err(err)) => {
                tracing::warn!(stream = %task.stream, %err, "compaction failed, the task will be retried")
            }
            Err(_) => {
                tracing::error!(stream = %task.stream, "compaction panicked, the task will be retried")
            }
        }
    }

    async fn notify_update(&self, callback: &str, room: &str, update: &[u8]) {
        let url = format!("{}/{room}", callback.trim_end_matches('/'));
        let form = reqwest::multipart::Form::new().part(
            "ydoc",
            reqwest::multipart::Part::bytes(update.to_vec()).file_name("ydoc"),
        );
        match self.http.put(&url).multipart(form).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                tracing::warn!(%room, status = %response.status(), "update callback refused the document")
            }
            Err(err) => tracing::warn!(%room, err = %err.without_url(), "update callback failed"),
        }
    }

    /// One compaction pass over the task's stream. Storage is written before the
    /// stream is trimmed, and old items are deleted only after the new one is
    /// stored: an error at any step loses nothing.
    pub async fn compact(&self, task: &WorkerTask) -> Result<Outcome, WorkerError> {
        let (room, docid) = match protocol::parse_stream_key(self.streams.prefix(), &task.stream) {
            Ok(parts) => parts,
            Err(err) => {
                tracing::warn!(task = %task.id, stream = %task.stream, %err, "task names no doc stream of this prefix, dropping it");
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
        if loaded.changed {
            let (update, state_vector) = loaded.stored_state()?;
            if let Some(callback) = &self.settings.update_callback {
                // As y-redis: the callback hears of the change before it is stored.
                // Its failure is logged and never blocks storing the document.
                self.notify_update(callback, &room, &update).await;
            }
            self.storage
                .put(&room, &docid, &update, &state_vector)
                .await?;
            if !loaded.references.is_empty() {
                if let Err(err) = self.storage.delete(&room, &docid, &loaded.references).await {
                    // The new item holds everything: the old ones merge harmlessly
                    // until a later pass deletes them.
                    tracing::warn!(%room, %err, "could not delete replaced items");
                }
            }
        }
        let last_ms = loaded.last_id.ms.max(task.id.ms);
        let trim_before = StreamId {
            ms: last_ms.saturating_sub(self.settings.min_message_lifetime.as_millis() as u64),
            seq: 0,
        };
        self.streams.finish_task(task, trim_before).await?;
        Ok(Outcome::Compacted {
            stored: loaded.changed,
            trimmed_before: trim_before,
        })
    }
}
