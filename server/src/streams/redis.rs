//! Every role of [`super::Streams`] on a real Redis, byte-compatible with y-redis 0.1.6.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{BoxStream, StreamExt as _};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, ConnectionInfo, IntoConnectionInfo, Script, Value};
use tokio::sync::Mutex;

use super::reply::{parse_claim_reply, parse_page, parse_read_reply};
use super::{version_counter_key, RedisTarget, Sentinels, StreamId, VERSION_COUNTER_LIFETIME};
use super::{
    Append, CloseOrder, Control, Health, History, Keyspace, StreamBatch, StreamError, StreamPage,
    StreamReader, TaskQueue, WorkerTask, READ_COUNT,
};
use crate::metrics::Count;

mod survey;

/// Appends a message; a stream that does not exist yet first gets a compaction
/// task, moved at once into the pending list of the consumer `pending` (docs/protocol.md
/// §3). Unlike y-redis it recreates the worker group when it is
/// missing (after a FLUSHALL), instead of failing every append of a new room.
pub(super) const APPEND_SCRIPT: &str = r#"
if redis.call("EXISTS", KEYS[1]) == 0 then
  redis.call("XADD", ARGV[2], "*", "compact", KEYS[1])
  local read = redis.pcall("XREADGROUP", "GROUP", ARGV[2], "pending", "STREAMS", ARGV[2], ">")
  if type(read) == "table" and read.err then
    redis.call("XGROUP", "CREATE", ARGV[2], ARGV[2], "0", "MKSTREAM")
    redis.call("XREADGROUP", "GROUP", ARGV[2], "pending", "STREAMS", ARGV[2], ">")
  end
end
redis.call("XADD", KEYS[1], "*", "m", ARGV[1])
"#;

/// Deletes a stream only while it is empty.
pub(super) const DELETE_IF_EMPTY_SCRIPT: &str = r#"
if redis.call("XLEN", KEYS[1]) == 0 then
  redis.call("DEL", KEYS[1])
end
"#;

/// Reads the fleet's epoch marker, first setting it to `ARGV[1]` when it is
/// missing: a Redis that lost its data to a `FLUSHALL`, a `FLUSHDB` or a
/// restart without persistence comes back without it, and the new value tells
/// every instance so (docs/protocol.md §3.2).
pub(super) const EPOCH_SCRIPT: &str = r#"
local epoch = redis.call("GET", KEYS[1])
if not epoch then
  redis.call("SET", KEYS[1], ARGV[1])
  epoch = ARGV[1]
end
return epoch
"#;

/// Hands out a document's next version number (docs/protocol.md §3.5):
/// above the storage's largest (`ARGV[1]`) and every number handed out
/// before; the counter expires `ARGV[2]` ms after its last use.
pub(super) const NEXT_VERSION_SCRIPT: &str = r#"
local floor = tonumber(ARGV[1])
local n = redis.call("INCR", KEYS[1])
if n <= floor then
  n = floor + 1
  redis.call("SET", KEYS[1], n)
end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return n
"#;

/// A connection for blocking reads (an answer may take the whole block
/// time), and its Redis client id, by which `CLIENT UNBLOCK` interrupts it.
pub(super) async fn blocking_connection(
    client: &Client,
) -> Result<(MultiplexedConnection, i64), StreamError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(COMMAND_TIMEOUT))
        .set_response_timeout(Some(super::READ_BLOCK + COMMAND_TIMEOUT));
    let mut connection = client
        .get_multiplexed_async_connection_with_config(&config)
        .await?;
    let id: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query_async(&mut connection)
        .await?;
    Ok((connection, id))
}

/// How long a command may wait for its answer before the connection counts as
/// broken and is re-established.
pub(super) const COMMAND_TIMEOUT: Duration = Duration::from_secs(5);

/// The y-redis layout on a Redis server: one auto-reconnecting connection for
/// commands and scripts, and a dedicated one for the blocking subscriber read.
pub struct RedisStreams {
    /// The Redis commands go to: fixed, or the master Sentinel names.
    link: std::sync::RwLock<Link>,
    /// The Sentinels to ask for the master, when the fleet uses them.
    sentinels: Option<Sentinels>,
    /// Held while the master is looked up, so that one lookup runs at a time;
    /// it holds when the last one ran.
    looked_up: Mutex<Option<tokio::time::Instant>>,
    prefix: String,
    worker_key: String,
    /// The pub/sub channel of close orders, `{prefix}:control`.
    control_key: String,
    /// The fleet's epoch marker, `{prefix}:epoch`.
    epoch_key: String,
    reader: Mutex<Option<Reader>>,
    reader_id: std::sync::Mutex<Option<i64>>,
    /// The last read's command up to its ids, reused while the followed
    /// streams stay the same: with a thousand rooms, its keys are most of it.
    read_command: std::sync::Mutex<Option<ReadCommand>>,
    append: Script,
    epoch: Script,
    next_version: Script,
    reconnects: Reconnects,
    /// Redis's `run_id` when these streams connected, before any client was served.
    first_run_id: Option<String>,
}

/// One Redis server and the commands connection to it. Behind Sentinel it is
/// replaced when the master moves; every connection made afterwards (reader,
/// pub/sub) is made from the new client.
struct Link {
    client: Client,
    commands: ConnectionManager,
    /// `host:port` of the master Sentinel named; `None` without Sentinel.
    master: Option<String>,
}

impl Link {
    /// Connect the commands connection to the Redis `info` names.
    async fn open(info: ConnectionInfo, master: Option<String>) -> Result<Self, StreamError> {
        let client = Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_max_delay(Duration::from_secs(2));
        let commands = tokio::time::timeout(
            COMMAND_TIMEOUT,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| StreamError::NoAnswer(COMMAND_TIMEOUT))??;
        Ok(Self {
            client,
            commands,
            master,
        })
    }
}

/// How long the restart check waits for Redis's answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// How often at most the master is looked up again through Sentinel.
const LOOKUP_INTERVAL: Duration = Duration::from_millis(500);

/// Counts the connections to Redis coming back after they broke. The
/// commands connection is re-established by its manager behind the first
/// command that finds it lost, so the first command that succeeds after such a
/// failure marks one reconnect; the reader's connection is made anew after a
/// failed read, which marks one too.
#[derive(Default)]
pub(super) struct Reconnects {
    pub(super) counter: Count,
    commands_lost: AtomicBool,
    reader_lost: AtomicBool,
}

impl Reconnects {
    /// Note what a command on the commands connection answered.
    pub(super) fn commands<T>(&self, result: &Result<T, redis::RedisError>) {
        match result {
            // A plain load first: every append passes here, and the flag is
            // almost always clear.
            Ok(_) => {
                if self.commands_lost.load(Ordering::Relaxed)
                    && self.commands_lost.swap(false, Ordering::Relaxed)
                {
                    self.counter.inc();
                    tracing::info!("redis connection re-established");
                }
            }
            Err(err) if lost(err) => self.commands_lost.store(true, Ordering::Relaxed),
            Err(_) => {}
        }
    }

    /// The reader's connection failed and is dropped.
    pub(super) fn reader_lost(&self) {
        self.reader_lost.store(true, Ordering::Relaxed);
    }

    /// A reader's connection was made.
    pub(super) fn reader_connected(&self) {
        if self.reader_lost.swap(false, Ordering::Relaxed) {
            self.counter.inc();
            tracing::info!("redis reader connection re-established");
        }
    }
}

/// Whether an error means the connection is gone (and is to be made again).
pub(super) fn lost(err: &redis::RedisError) -> bool {
    err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal()
}

/// The dedicated connection of the blocking read, so that no command waits
/// behind it. Its Redis client id is kept apart (`RedisStreams::reader_id`),
/// readable while the read holds this, for `CLIENT UNBLOCK` to interrupt it.
struct Reader {
    connection: MultiplexedConnection,
}

/// `XREAD COUNT … BLOCK … STREAMS <keys>` for one set of followed streams
/// (the same `Arc`s, in the same order) and one block time.
struct ReadCommand {
    streams: Vec<Arc<str>>,
    block: Duration,
    command: redis::Cmd,
}

impl ReadCommand {
    /// Whether this command reads exactly `positions`' streams, blocking as long.
    fn reads(&self, positions: &[(Arc<str>, StreamId)], block: Duration) -> bool {
        self.block == block
            && self.streams.len() == positions.len()
            && self
                .streams
                .iter()
                .zip(positions)
                .all(|(a, (b, _))| Arc::ptr_eq(a, b))
    }
}

impl RedisStreams {
    /// Connect to `url` and make sure the worker group exists.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, StreamError> {
        Self::open(&RedisTarget::Url(url.to_string()), prefix).await
    }

    /// Connect to the Redis `target` names (the master, behind Sentinel) and
    /// make sure the worker group exists.
    pub async fn open(target: &RedisTarget, prefix: &str) -> Result<Self, StreamError> {
        let (link, sentinels) = match target {
            RedisTarget::Url(url) => (
                Link::open(url.as_str().into_connection_info()?, None).await?,
                None,
            ),
            RedisTarget::Sentinel(sentinels) => {
                let (address, info) = sentinels.master().await?;
                tracing::info!(master = %address, name = sentinels.master_name(), "redis master found through Sentinel");
                (
                    Link::open(info, Some(address)).await?,
                    Some(Sentinels::clone(sentinels)),
                )
            }
            RedisTarget::Cluster { .. } => {
                return Err(StreamError::Reply(
                    "a Redis Cluster is opened by ClusterStreams".into(),
                ))
            }
        };
        let mut streams = Self {
            link: std::sync::RwLock::new(link),
            sentinels,
            looked_up: Mutex::new(None),
            prefix: prefix.to_string(),
            worker_key: format!("{prefix}:worker"),
            control_key: format!("{prefix}:control"),
            epoch_key: format!("{prefix}:epoch"),
            reader: Mutex::new(None),
            reader_id: std::sync::Mutex::new(None),
            read_command: std::sync::Mutex::new(None),
            append: Script::new(APPEND_SCRIPT),
            epoch: Script::new(EPOCH_SCRIPT),
            next_version: Script::new(NEXT_VERSION_SCRIPT),
            reconnects: Reconnects::default(),
            first_run_id: None,
        };
        streams.ensure_worker_group().await?;
        // A Redis that refuses INFO only goes without restart checks.
        streams.first_run_id = Health::run_id(&streams).await.ok().flatten();
        Ok(streams)
    }

    /// Count re-established connections into `counter` (the instance's
    /// `yws_redis_reconnects_total`).
    pub fn with_reconnects(mut self, counter: Count) -> Self {
        self.reconnects.counter = counter;
        self
    }

    /// Run one command on the commands connection, noting whether the
    /// connection was lost or is back.
    async fn command<T, F, Fut>(&self, command: F) -> Result<T, redis::RedisError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let result = command(self.commands()).await;
        self.reconnects.commands(&result);
        if let Err(err) = &result {
            if self.sentinels.is_some()
                && (lost(err)
                    || err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly))
            {
                self.follow_master().await;
            }
        }
        result
    }

    /// Run a command, and run it once more when the connection turned out to be
    /// broken (Redis restarted): the connection manager reconnects behind the
    /// first failure, so a client opening or writing just then is not bounced.
    async fn retrying<T, F, Fut>(&self, command: F) -> Result<T, redis::RedisError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        match self.command(&command).await {
            Err(err) if err.is_io_error() || err.is_connection_dropped() => {
                tracing::debug!(%err, "redis connection lost, retrying once");
                tokio::time::sleep(Duration::from_millis(100)).await;
                self.command(&command).await
            }
            result => result,
        }
    }

    /// A handle on the commands connection (cheap: the manager is shared).
    fn commands(&self) -> ConnectionManager {
        self.link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .commands
            .clone()
    }

    /// The client every new connection is made from.
    fn client(&self) -> Client {
        self.link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .client
            .clone()
    }

    /// Behind Sentinel: ask which server is the master now, and move the
    /// connections there when it changed. The new master's run id differs,
    /// so the restart check then closes every connection and clients send
    /// their documents again (docs/protocol.md §3.3). Looked up at most every
    /// [`LOOKUP_INTERVAL`]; a lookup already running is not waited for.
    async fn follow_master(&self) {
        let Some(sentinels) = &self.sentinels else {
            return;
        };
        let Ok(mut looked_up) = self.looked_up.try_lock() else {
            return;
        };
        if looked_up.is_some_and(|at| at.elapsed() < LOOKUP_INTERVAL) {
            return;
        }
        *looked_up = Some(tokio::time::Instant::now());
        let (address, info) = match sentinels.master().await {
            Ok(master) => master,
            Err(err) => {
                tracing::debug!(%err, "no master from Sentinel yet");
                return;
            }
        };
        let current = self
            .link
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .master
            .clone();
        if current.as_deref() == Some(address.as_str()) {
            return;
        }
        match Link::open(info, Some(address.clone())).await {
            Ok(link) => {
                tracing::warn!(
                    from = current.as_deref().unwrap_or("-"),
                    to = %address,
                    "redis master moved (Sentinel failover); following it"
                );
                *self.link.write().unwrap_or_else(|p| p.into_inner()) = link;
                self.forget_reader().await;
            }
            Err(err) => {
                tracing::warn!(%err, master = %address, "could not connect to the new redis master")
            }
        }
    }

    /// Redis's run id and the fleet's epoch marker (docs/protocol.md §3.2). A
    /// restart changes the run id; a FLUSHALL or FLUSHDB only removes the
    /// epoch marker, which comes back with a new value.
    async fn identity(&self) -> Result<Option<String>, StreamError> {
        let info: String = self
            .command(|mut connection| async move {
                redis::cmd("INFO")
                    .arg("server")
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let Some(run_id) = info
            .lines()
            .find_map(|line| line.strip_prefix("run_id:"))
            .map(|id| id.trim().to_string())
        else {
            return Ok(None);
        };
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let epoch: String = self
            .command(|mut connection| {
                let mut invocation = self.epoch.key(&self.epoch_key);
                invocation.arg(&fresh);
                async move { invocation.invoke_async(&mut connection).await }
            })
            .await?;
        Ok(Some(format!("{run_id} epoch {epoch}")))
    }

    /// The worker queue's key, `{prefix}:worker`.
    pub fn worker_key(&self) -> &str {
        &self.worker_key
    }

    async fn reader_connection(&self) -> Result<MultiplexedConnection, StreamError> {
        let mut reader = self.reader.lock().await;
        if let Some(reader) = reader.as_ref() {
            return Ok(reader.connection.clone());
        }
        let (connection, id) = blocking_connection(&self.client()).await?;
        if let Ok(mut slot) = self.reader_id.lock() {
            *slot = Some(id);
        }
        self.reconnects.reader_connected();
        *reader = Some(Reader {
            connection: connection.clone(),
        });
        Ok(connection)
    }

    /// The read's command without its ids: the cached one when the followed
    /// streams did not change, built anew (and cached) otherwise.
    fn read_command(&self, positions: &[(Arc<str>, StreamId)], block: Duration) -> redis::Cmd {
        let mut cached = self.read_command.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(read) = cached.as_ref().filter(|read| read.reads(positions, block)) {
            return read.command.clone();
        }
        let mut command = redis::cmd("XREAD");
        command
            .arg("COUNT")
            .arg(READ_COUNT)
            .arg("BLOCK")
            .arg(block.as_millis() as u64)
            .arg("STREAMS");
        for (stream, _) in positions {
            command.arg(&**stream);
        }
        *cached = Some(ReadCommand {
            streams: positions.iter().map(|(s, _)| Arc::clone(s)).collect(),
            block,
            command: command.clone(),
        });
        command
    }

    async fn forget_reader(&self) {
        self.reconnects.reader_lost();
        *self.reader.lock().await = None;
        if let Ok(mut slot) = self.reader_id.lock() {
            *slot = None;
        }
    }

    async fn claim_page(
        &self,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<(String, Vec<WorkerTask>), StreamError> {
        let reply: Result<Value, _> = self
            .command(|mut connection| async move {
                redis::cmd("XAUTOCLAIM")
                    .arg(&self.worker_key)
                    .arg(&self.worker_key)
                    .arg(consumer)
                    .arg(min_idle.as_millis() as u64)
                    .arg(start)
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut connection)
                    .await
            })
            .await;
        let reply = match reply {
            Ok(reply) => reply,
            Err(err) if err.code() == Some("NOGROUP") => {
                tracing::warn!(queue = %self.worker_key, "worker group missing, recreating it");
                self.ensure_worker_group().await?;
                return Err(StreamError::GroupRecreated);
            }
            Err(err) => return Err(err.into()),
        };
        let (cursor, claimed) = parse_claim_reply(reply)?;
        let mut tasks = Vec::with_capacity(claimed.len());
        for (id, stream) in claimed {
            if let Some(stream) = stream {
                tasks.push(WorkerTask { id, stream });
                continue;
            }
            tracing::warn!(task = %id, "worker task without a `compact` field, dropping it");
            let _: Result<Value, _> = self
                .command(|mut connection| async move {
                    redis::cmd("XDEL")
                        .arg(&self.worker_key)
                        .arg(id.to_string())
                        .query_async(&mut connection)
                        .await
                })
                .await;
        }
        Ok((cursor, tasks))
    }
}

impl Keyspace for RedisStreams {
    fn prefix(&self) -> &str {
        &self.prefix
    }
}

#[async_trait]
impl Append for RedisStreams {
    async fn append(&self, stream: &str, message: &[u8]) -> Result<(), StreamError> {
        // A retried append may land twice; stream messages are CRDT updates and
        // awareness states, which apply idempotently.
        let _: Value = self
            .retrying(|mut connection| async move {
                self.append
                    .key(stream)
                    .arg(message)
                    .arg(&self.worker_key)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?;
        Ok(())
    }

    async fn delete_stream(&self, stream: &str) -> Result<(), StreamError> {
        let counter = version_counter_key(&self.prefix, stream);
        let counter = counter.as_str();
        let _: i64 = self
            .retrying(|mut connection| async move {
                redis::cmd("DEL")
                    .arg(stream)
                    .arg(counter)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Control for RedisStreams {
    async fn publish_close(&self, order: &CloseOrder) -> Result<(), StreamError> {
        let payload = order.to_json();
        let payload = payload.as_str();
        let _: i64 = self
            .retrying(|mut connection| async move {
                redis::cmd("PUBLISH")
                    .arg(&self.control_key)
                    .arg(payload)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(())
    }

    /// A dedicated pub/sub connection subscribed to `{prefix}:control`; the
    /// stream ends when that connection does, or fails its ping
    /// ([`close_order_stream`]).
    async fn close_orders(&self) -> Result<BoxStream<'static, CloseOrder>, StreamError> {
        let subscribe = async {
            let mut pubsub = self.client().get_async_pubsub().await?;
            pubsub.subscribe(&self.control_key).await?;
            Ok::<_, StreamError>(pubsub)
        };
        let pubsub = tokio::time::timeout(COMMAND_TIMEOUT, subscribe)
            .await
            .map_err(|_| StreamError::NoAnswer(COMMAND_TIMEOUT))??;
        Ok(close_order_stream(pubsub))
    }
}

/// How often a close-orders subscription is pinged. A subscribed connection
/// otherwise only reads, so one whose path died without a FIN or RST (a
/// frozen peer, a lost route) would never fail, and its orders never arrive.
const CONTROL_PING: Duration = Duration::from_secs(2);

/// The close orders arriving on `pubsub`, ending when the connection ends or
/// a ping gets no answer within [`COMMAND_TIMEOUT`], so that the control
/// watch subscribes again.
pub(super) fn close_order_stream(pubsub: redis::aio::PubSub) -> BoxStream<'static, CloseOrder> {
    let (mut sink, messages) = pubsub.split();
    let dead = async move {
        loop {
            tokio::time::sleep(CONTROL_PING).await;
            match tokio::time::timeout(COMMAND_TIMEOUT, sink.ping::<Value>()).await {
                Ok(Ok(_)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(%err, "the close orders connection failed its ping");
                    return;
                }
                Err(_) => {
                    tracing::warn!(timeout = ?COMMAND_TIMEOUT, "the close orders connection did not answer its ping");
                    return;
                }
            }
        }
    };
    messages
        .filter_map(|message| {
            std::future::ready(CloseOrder::from_json(message.get_payload_bytes()))
        })
        .take_until(dead)
        .boxed()
}

#[async_trait]
impl StreamReader for RedisStreams {
    async fn read_new(
        &self,
        positions: &[(Arc<str>, StreamId)],
        block: Duration,
    ) -> Result<Vec<StreamBatch>, StreamError> {
        if positions.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Vec::new());
        }
        let mut connection = self.reader_connection().await?;
        let mut command = self.read_command(positions, block);
        let mut id_text = String::with_capacity(32);
        for (_, id) in positions {
            id_text.clear();
            let _ = write!(id_text, "{id}");
            command.arg(id_text.as_str());
        }
        let reply: Value = match command.query_async(&mut connection).await {
            Ok(reply) => reply,
            Err(err) => {
                self.forget_reader().await;
                return Err(err.into());
            }
        };
        Ok(parse_read_reply(reply))
    }

    async fn wake_reader(&self) -> Result<(), StreamError> {
        let id = self.reader_id.lock().ok().and_then(|slot| *slot);
        if let Some(id) = id {
            let _: Value = self
                .command(|mut connection| async move {
                    redis::cmd("CLIENT")
                        .arg("UNBLOCK")
                        .arg(id)
                        .query_async(&mut connection)
                        .await
                })
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl History for RedisStreams {
    async fn read_page(
        &self,
        stream: &str,
        from: StreamId,
        count: usize,
    ) -> Result<StreamPage, StreamError> {
        let start = from.to_string();
        let start = start.as_str();
        let reply: Value = self
            .retrying(|mut connection| async move {
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg(start)
                    .arg("+")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(parse_page(stream, reply))
    }

    async fn first_id(&self, stream: &str) -> Result<Option<StreamId>, StreamError> {
        let reply: Value = self
            .retrying(|mut connection| async move {
                redis::cmd("XRANGE")
                    .arg(stream)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(parse_page(stream, reply).last)
    }

    async fn next_version(&self, stream: &str, floor: u64) -> Result<u64, StreamError> {
        let key = version_counter_key(&self.prefix, stream);
        let key = key.as_str();
        // A retry after a lost answer may skip a number, never repeat one.
        Ok(self
            .retrying(|mut connection| async move {
                self.next_version
                    .key(key)
                    .arg(floor)
                    .arg(VERSION_COUNTER_LIFETIME.as_millis() as u64)
                    .invoke_async(&mut connection)
                    .await
            })
            .await?)
    }
}

#[async_trait]
impl TaskQueue for RedisStreams {
    async fn ensure_worker_group(&self) -> Result<(), StreamError> {
        let created: Result<Value, _> = self
            .command(|mut connection| async move {
                redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&self.worker_key)
                    .arg(&self.worker_key)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut connection)
                    .await
            })
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(err) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    async fn claim_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<WorkerTask>, StreamError> {
        if count == usize::MAX {
            let mut all = Vec::new();
            let mut cursor = "0-0".to_string();
            loop {
                let (next, tasks) = match self.claim_page(consumer, min_idle, &cursor, 100).await {
                    Err(StreamError::GroupRecreated) => return Ok(all),
                    other => other?,
                };
                all.extend(tasks);
                if next == "0-0" {
                    return Ok(all);
                }
                cursor = next;
            }
        }
        match self.claim_page(consumer, min_idle, "0", count).await {
            Ok((_, tasks)) => Ok(tasks),
            Err(StreamError::GroupRecreated) => Ok(Vec::new()),
            Err(err) => Err(err),
        }
    }

    async fn stream_len(&self, stream: &str) -> Result<u64, StreamError> {
        let len: u64 = self
            .command(|mut connection| async move {
                redis::cmd("XLEN")
                    .arg(stream)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        Ok(len)
    }

    async fn drop_empty_stream(&self, task: &WorkerTask) -> Result<(), StreamError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EVAL")
            .arg(DELETE_IF_EMPTY_SCRIPT)
            .arg(1)
            .arg(&task.stream)
            .ignore()
            .cmd("XDEL")
            .arg(&self.worker_key)
            .arg(task.id.to_string())
            .ignore();
        let pipe = &pipe;
        let _: Value = self
            .command(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        Ok(())
    }

    async fn finish_task(
        &self,
        task: &WorkerTask,
        trim_before: StreamId,
    ) -> Result<(), StreamError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XTRIM")
            .arg(&task.stream)
            .arg("MINID")
            .arg(trim_before.to_string())
            .ignore()
            .cmd("XADD")
            .arg(&self.worker_key)
            .arg("*")
            .arg("compact")
            .arg(&task.stream)
            .ignore()
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&self.worker_key)
            .arg("pending")
            .arg("COUNT")
            .arg(50)
            .arg("STREAMS")
            .arg(&self.worker_key)
            .arg(">")
            .ignore()
            .cmd("XDEL")
            .arg(&self.worker_key)
            .arg(task.id.to_string())
            .ignore();
        let pipe = &pipe;
        let _: Value = self
            .command(|mut connection| async move { pipe.query_async(&mut connection).await })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Health for RedisStreams {
    async fn ping(&self) -> Result<(), StreamError> {
        let _: Value = self
            .command(|mut connection| async move {
                redis::cmd("PING").query_async(&mut connection).await
            })
            .await?;
        Ok(())
    }

    async fn run_id(&self) -> Result<Option<String>, StreamError> {
        self.follow_master().await;
        // Bounded, so that a server gone away does not hold the next check
        // (and, behind Sentinel, the next look for the master) for the whole
        // command timeout.
        tokio::time::timeout(HEALTH_TIMEOUT, self.identity())
            .await
            .map_err(|_| StreamError::NoAnswer(HEALTH_TIMEOUT))?
    }

    fn first_run_id(&self) -> Option<String> {
        self.first_run_id.clone()
    }
}
