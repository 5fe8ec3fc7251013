//! The y-redis stream layout: where client messages go and how instances and
//! workers find them (docs/protocol.md §3).
//!
//! The streams are split by role ([`Append`], [`StreamReader`], [`History`],
//! [`TaskQueue`], [`Health`], [`Control`], all keyed under one [`Keyspace`]), so that each
//! caller asks for what it uses and an implementation can provide one role at a
//! time; [`Streams`] is all of them. Three implementations provide every role:
//! [`RedisStreams`] for fleets (byte-compatible with y-redis 0.1.6 instances on
//! the same Redis), [`ClusterStreams`] for fleets on a Redis Cluster (keys in
//! the cluster layout, which y-redis instances do not share), and
//! [`MemoryStreams`], in-process streams with the same semantics for a single
//! instance without Redis and for fast tests (what the README and log lines
//! call the embedded bus).

mod cluster;
mod id;
mod keys;
mod memory;
mod redis;
mod reply;
mod sentinel;
mod survey;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub use self::cluster::{hash_slot, shard_tag, ClusterStreams};
pub use self::id::{is_smaller_redis_id, InvalidStreamId, StreamId};
pub use self::keys::{
    decode_uri_component, encode_uri_component, parse_stream_key, stream_key, KeyError, DOC_ID,
};
pub use self::memory::MemoryStreams;
pub use self::redis::RedisStreams;
pub use self::sentinel::Sentinels;
pub use self::survey::{DocStreamSummary, Survey, SURVEY_LIMIT};

/// Where a fleet's Redis is: one URL, or the master a set of Sentinels names
/// (docs/protocol.md §3.3).
#[derive(Debug, Clone)]
pub enum RedisTarget {
    /// One Redis at this URL.
    Url(String),
    /// The master the Sentinels name, followed through failovers.
    Sentinel(Box<Sentinels>),
    /// A Redis Cluster through its seed nodes (comma-separated URLs), with
    /// rooms spread over `shards` hash tags (docs/protocol.md §3.4).
    Cluster {
        /// The seed nodes.
        seeds: String,
        /// How many shards.
        shards: u16,
    },
}

/// How many entries one subscriber read returns at most (as y-redis).
pub const READ_COUNT: usize = 1000;
/// How long one subscriber read blocks when nothing is new (as y-redis).
pub const READ_BLOCK: Duration = Duration::from_millis(1000);
/// How many tasks one worker claims at once (as y-redis).
pub const CLAIM_COUNT: usize = 5;

/// Why a stream operation failed. Every variant is transient from the caller's
/// point of view: the operation may be retried once the streams are back.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// Redis answered with something the y-redis layout does not allow.
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
    /// Redis did not answer in time (down, or unreachable).
    #[error("redis did not answer within {0:?}")]
    NoAnswer(std::time::Duration),
    /// The worker group was missing (after a FLUSHALL, say) and has been recreated.
    #[error("worker group was missing and has been recreated")]
    GroupRecreated,
    /// The streams are not connected yet (Redis has not answered since the
    /// instance started).
    #[error("the streams are not connected yet")]
    NotConnected,
}

/// Entries of a doc stream read by [`History::read_page`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamPage {
    /// The readable entries (entries without an `m` field are skipped).
    pub entries: Vec<StreamEntry>,
    /// The id of the last entry read, readable or not; `None` when the page is
    /// empty, which means the stream holds nothing from `from` on.
    pub last: Option<StreamId>,
}

/// One entry of a doc stream: its id and its `m` field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// Redis stream id.
    pub id: StreamId,
    /// The message bytes (field `m`).
    pub message: Bytes,
}

/// A compaction task from the worker queue: compact `stream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerTask {
    /// Id of the task entry in `{prefix}:worker`.
    pub id: StreamId,
    /// The doc stream key to compact (field `compact`).
    pub stream: String,
}

/// The entries a blocking read returned for one stream.
#[derive(Debug, Clone)]
pub struct StreamBatch {
    /// The doc stream key.
    pub stream: Arc<str>,
    /// New entries in stream order.
    pub entries: Vec<StreamEntry>,
}

/// The key prefix (`y` by default) every key of a fleet starts with and the
/// shape of its stream keys: what appenders build stream keys from and what
/// the worker checks task keys against, so that it is implemented once for
/// both roles.
pub trait Keyspace: Send + Sync + 'static {
    /// The key prefix.
    fn prefix(&self) -> &str;

    /// The stream key of a document; y-redis's `{prefix}:room:{enc(room)}:{enc(docid)}`
    /// unless the layout says otherwise (a Redis Cluster's hash-tagged keys).
    fn stream_key(&self, room: &str, docid: &str) -> String {
        stream_key(self.prefix(), room, docid)
    }

    /// `(room, docid)` of a stream key of this layout and prefix.
    fn parse_stream_key(&self, key: &str) -> Result<(String, String), KeyError> {
        parse_stream_key(self.prefix(), key)
    }
}

/// Appending client messages to doc streams: all a connection writes.
#[async_trait]
pub trait Append: Keyspace {
    /// Append one message to a doc stream; a new stream also gets a compaction
    /// task, parked under the consumer `pending` (docs/protocol.md §3).
    async fn append(&self, stream: &str, message: &[u8]) -> Result<(), StreamError>;

    /// Delete a doc stream and everything in it, and its version counter (the
    /// document API's delete). Its compaction task, if any, finds the stream
    /// empty and is dropped.
    async fn delete_stream(&self, stream: &str) -> Result<(), StreamError>;
}

/// The subscriber's blocking read over every stream an instance follows.
#[async_trait]
pub trait StreamReader: Send + Sync + 'static {
    /// Entries newer than the given positions, waiting up to `block` when there
    /// are none. At most [`READ_COUNT`] entries per stream.
    async fn read_new(
        &self,
        positions: &[(Arc<str>, StreamId)],
        block: Duration,
    ) -> Result<Vec<StreamBatch>, StreamError>;

    /// Interrupt a [`StreamReader::read_new`] in progress, because the set of streams
    /// to follow changed.
    async fn wake_reader(&self) -> Result<(), StreamError>;
}

/// Reading one doc stream from the start, as loading a document does.
#[async_trait]
pub trait History: Send + Sync + 'static {
    /// Up to `count` entries of a doc stream from id `from` on (inclusive),
    /// oldest first, so that a long stream is read in bounded pages.
    async fn read_page(
        &self,
        stream: &str,
        from: StreamId,
        count: usize,
    ) -> Result<StreamPage, StreamError>;

    /// The id of a doc stream's oldest entry (`None`: the stream is empty or
    /// missing). Trimming only ever raises it.
    async fn first_id(&self, stream: &str) -> Result<Option<StreamId>, StreamError>;

    /// A number for the next kept version of the doc stream's document: above
    /// `floor` (the largest kept one) and above every number handed out for
    /// it in the last [`VERSION_COUNTER_LIFETIME`], so that writers racing on
    /// one document (a worker and the API, on any instance) never take the
    /// same number (docs/protocol.md §3.5).
    async fn next_version(&self, stream: &str, floor: u64) -> Result<u64, StreamError>;
}

/// How long a document's version counter outlives its last use; after that
/// the storage's largest version is the floor again.
pub const VERSION_COUNTER_LIFETIME: Duration = Duration::from_secs(3600);

/// The version counter of a doc stream: `{prefix}:version:{stream key}`, a
/// string key y-redis never reads (in the cluster layout it carries the
/// stream key's hash tag, so it lives in the room's slot).
pub fn version_counter_key(prefix: &str, stream: &str) -> String {
    format!("{prefix}:version:{stream}")
}

/// The compaction queue `{prefix}:worker` that workers of every language share.
#[async_trait]
pub trait TaskQueue: Keyspace {
    /// Create the worker queue and its consumer group if missing.
    async fn ensure_worker_group(&self) -> Result<(), StreamError>;

    /// Claim up to `count` tasks idle for at least `min_idle` for `consumer`.
    async fn claim_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<WorkerTask>, StreamError>;

    /// Claim every task at once, however recently it was touched (used by a
    /// single instance flushing its documents before it stops).
    async fn claim_all_tasks(&self, consumer: &str) -> Result<Vec<WorkerTask>, StreamError> {
        self.claim_tasks(consumer, Duration::ZERO, usize::MAX).await
    }

    /// Number of entries in a doc stream.
    async fn stream_len(&self, stream: &str) -> Result<u64, StreamError>;

    /// The doc stream was empty: delete it if it still is, and drop the task.
    async fn drop_empty_stream(&self, task: &WorkerTask) -> Result<(), StreamError>;

    /// The doc is safely stored up to `trim_before`: trim older entries, queue
    /// the next compaction of this stream and drop the finished task.
    async fn finish_task(
        &self,
        task: &WorkerTask,
        trim_before: StreamId,
    ) -> Result<(), StreamError>;
}

/// Whether the streams' server answers and whether it restarted, for readiness
/// and for closing connections after Redis lost its data.
#[async_trait]
pub trait Health: Send + Sync + 'static {
    /// Whether the streams answer (readiness checks).
    async fn ping(&self) -> Result<(), StreamError> {
        Ok(())
    }

    /// An id of the streams' server process that changes when it restarts
    /// (Redis's `run_id`); `None` for streams that cannot restart under us.
    async fn run_id(&self) -> Result<Option<String>, StreamError> {
        Ok(None)
    }

    /// [`Health::run_id`] as it was when the streams connected, before any
    /// client was served: a restart from then on is noticed.
    fn first_run_id(&self) -> Option<String> {
        None
    }
}

/// An order to close connections on every Rust instance of the fleet: the
/// document API's `close` and `DELETE` (docs/api.md). y-redis instances do not
/// hear it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloseOrder {
    /// The doc stream key whose connections close.
    pub stream: String,
    /// Only the connections of this user (the token's `yuserid`); `None`: all.
    #[serde(default)]
    pub user: Option<String>,
    /// The WebSocket close code: [`CLOSE_REVOKED`] or [`CLOSE_DELETED`].
    pub code: u16,
    /// The close frame's reason (short UTF-8).
    #[serde(default)]
    pub reason: String,
}

/// Close code of a connection whose permission was revoked or whose token
/// expired (as yjs/yhub).
pub const CLOSE_REVOKED: u16 = 4401;
/// Close code of a connection whose document was deleted.
pub const CLOSE_DELETED: u16 = 4404;

impl CloseOrder {
    /// The order as it travels on the control channel: a JSON object.
    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// An order read from the control channel; `None` (with a log line, the
    /// payload bounded) for anything that is no order a close frame can carry:
    /// not JSON of the order's shape, or a close code a server may not send.
    pub fn from_json(payload: &[u8]) -> Option<Self> {
        match serde_json::from_slice::<CloseOrder>(payload) {
            Ok(order) if sendable_close_code(order.code) => Some(order),
            Ok(order) => {
                tracing::warn!(
                    code = order.code,
                    "close order with a close code a server may not send, skipped"
                );
                None
            }
            Err(err) => {
                let text = String::from_utf8_lossy(payload);
                tracing::warn!(%err, payload = %crate::log_text::bounded(&text), "unreadable close order, skipped");
                None
            }
        }
    }
}

/// Whether a server may send `code` in a close frame (RFC 6455 section 7.4):
/// the defined codes but those reserved for no frame at all, and the
/// registered and private ranges 3000 to 4999.
pub fn sendable_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Orders to the whole fleet, through the streams' server.
#[async_trait]
pub trait Control: Send + Sync + 'static {
    /// Tell every instance of the fleet, this one included, to close the
    /// connections `order` names.
    async fn publish_close(&self, order: &CloseOrder) -> Result<(), StreamError>;

    /// The orders published from now on, as they arrive; the stream ends when
    /// the streams' server went away (subscribe again then).
    async fn close_orders(
        &self,
    ) -> Result<futures_util::stream::BoxStream<'static, CloseOrder>, StreamError>;
}

/// Every role at once, for the wiring of an instance that hands one connection
/// to Redis (or the embedded streams) to connections, subscriber, worker and
/// health checks; implemented for whatever implements all the roles.
pub trait Streams: Append + StreamReader + History + TaskQueue + Health + Control {}

impl<T: Append + StreamReader + History + TaskQueue + Health + Control> Streams for T {}
