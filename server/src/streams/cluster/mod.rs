//! Every role of [`super::Streams`] on a Redis Cluster, in the cluster layout
//! of docs/protocol.md ("Redis Cluster layout"), which y-redis instances do
//! not share.
//!
//! Commands go through the cluster client, which follows `MOVED`/`ASK` and
//! failovers. Every key of a room carries its shard's hash tag ([`keys`]), so
//! the append script and its compaction task stay atomic in one slot; the
//! worker queue is one per shard and workers claim from all of them in turn;
//! the subscriber's blocking reads run per shard on dedicated connections
//! ([`readers`]).

mod keys;
mod readers;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use redis::{Client, ConnectionInfo, IntoConnectionInfo, Script, Value};

use self::keys::ClusterKeys;
pub use self::keys::{hash_slot, shard_tag};
use self::readers::{Node, ShardReaders, UNBLOCK_RETRY};
use super::redis::{
    close_order_stream, Reconnects, APPEND_SCRIPT, COMMAND_TIMEOUT, DELETE_IF_EMPTY_SCRIPT,
    NEXT_VERSION_SCRIPT,
};
use super::reply::{parse_claim_reply, parse_page, parse_read_reply};
use super::{
    version_counter_key, Append, CloseOrder, Control, Health, History, KeyError, Keyspace,
    StreamBatch, StreamError, StreamId, StreamPage, StreamReader, TaskQueue, WorkerTask,
    READ_COUNT, VERSION_COUNTER_LIFETIME,
};
use crate::metrics::Count;

/// Returns a shard's epoch marker, first setting it to `ARGV[1]` when it is
/// missing (a new cluster, or a node that lost its data).
const EPOCH_SCRIPT: &str = r#"local v = redis.call("GET", KEYS[1]) if not v then redis.call("SET", KEYS[1], ARGV[1]) v = ARGV[1] end return v"#;

/// The cluster layout on a Redis Cluster.
pub struct ClusterStreams {
    keys: ClusterKeys,
    /// The cluster client's connection: commands and scripts, routed by key.
    commands: ClusterConnection,
    /// The seed nodes, for the dedicated connections (pub/sub, reads).
    seeds: Vec<ConnectionInfo>,
    readers: Arc<ShardReaders>,
    /// Each shard's blocking read under way.
    inflight: tokio::sync::Mutex<HashMap<usize, InFlight>>,
    /// `{prefix}:control`, the pub/sub channel of close orders.
    control_key: String,
    append: Script,
    epoch: Script,
    next_version: Script,
    /// The shard whose queue the next claim starts at, so that every shard is served.
    next_claim: AtomicUsize,
    reconnects: Arc<Reconnects>,
    first_run_id: Option<String>,
}

impl ClusterStreams {
    /// Connect to the cluster through `seeds` (one or more node URLs,
    /// comma-separated), with rooms spread over `shards` shards, and make sure
    /// every shard's worker group exists.
    pub async fn connect(seeds: &str, prefix: &str, shards: u16) -> Result<Self, StreamError> {
        let seeds = seeds
            .split(',')
            .map(str::trim)
            .filter(|seed| !seed.is_empty())
            .map(|seed| seed.into_connection_info())
            .collect::<Result<Vec<_>, _>>()?;
        if seeds.is_empty() {
            return Err(StreamError::Reply("no cluster node named".into()));
        }
        let client = ClusterClient::builder(seeds.clone())
            .connection_timeout(COMMAND_TIMEOUT)
            .response_timeout(COMMAND_TIMEOUT)
            .retries(6)
            .max_retry_wait(1_000)
            .build()?;
        let commands = tokio::time::timeout(COMMAND_TIMEOUT, client.get_async_connection())
            .await
            .map_err(|_| StreamError::NoAnswer(COMMAND_TIMEOUT))??;
        let keys = ClusterKeys::new(prefix, shards);
        let mut streams = Self {
            readers: Arc::new(ShardReaders::new(seeds.clone(), keys.shards())),
            inflight: tokio::sync::Mutex::new(HashMap::new()),
            keys,
            commands,
            seeds,
            control_key: format!("{prefix}:control"),
            append: Script::new(APPEND_SCRIPT),
            epoch: Script::new(EPOCH_SCRIPT),
            next_version: Script::new(NEXT_VERSION_SCRIPT),
            next_claim: AtomicUsize::new(0),
            reconnects: Arc::new(Reconnects::default()),
            first_run_id: None,
        };
        streams.ensure_worker_group().await?;
        streams.first_run_id = Health::run_id(&streams).await.ok().flatten();
        Ok(streams)
    }

    /// Count re-established connections into `counter` (the instance's
    /// `yws_redis_reconnects_total`).
    pub fn with_reconnects(mut self, counter: Count) -> Self {
        // No read has started yet, so nothing else holds the counter.
        if let Some(reconnects) = Arc::get_mut(&mut self.reconnects) {
            reconnects.counter = counter;
        }
        self
    }

    /// The shard of a stream key of this layout.
    fn shard(&self, stream: &str) -> Result<usize, StreamError> {
        self.keys.shard_of_key(stream).ok_or_else(|| {
            StreamError::Reply(format!(
                "{} is no stream key of the cluster layout",
                crate::log_text::bounded(stream)
            ))
        })
    }

    /// Run one command through the cluster client, noting lost connections.
    async fn query<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, StreamError> {
        self.noted(command.query_async(&mut self.commands.clone()).await)
    }

    /// A reply of the cluster client (a command's, a pipeline's or a
    /// script's), with a lost or re-established connection noted.
    fn noted<T>(&self, result: redis::RedisResult<T>) -> Result<T, StreamError> {
        self.reconnects.commands(&result);
        Ok(result?)
    }

    /// Ask the nodes to interrupt these blocked reads.
    async fn unblock(&self, blocked: Vec<(Node, i64)>) {
        for ((host, port), id) in blocked {
            let mut command = redis::cmd("CLIENT");
            command.arg("UNBLOCK").arg(id);
            let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                host: host.clone(),
                port,
            });
            if let Err(err) = self.commands.clone().route_command(command, routing).await {
                tracing::debug!(%err, %host, port, "could not interrupt a shard's read");
            }
        }
    }

    /// One page of a shard's tasks claimed with XAUTOCLAIM from `start`:
    /// the next cursor and the tasks. A task that names no stream of its own
    /// shard (written by something else) is deleted, with a log line.
    async fn claim_page(
        &self,
        shard: usize,
        consumer: &str,
        min_idle: Duration,
        start: &str,
        count: usize,
    ) -> Result<(String, Vec<WorkerTask>), StreamError> {
        let queue = self.keys.worker_key(shard);
        let mut command = redis::cmd("XAUTOCLAIM");
        command
            .arg(&queue)
            .arg(&queue)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(start)
            .arg("COUNT")
            .arg(count);
        let reply: Value = match self.query(&command).await {
            Ok(reply) => reply,
            Err(StreamError::Redis(err)) if err.code() == Some("NOGROUP") => {
                tracing::warn!(%queue, "worker group missing, recreating it");
                self.ensure_group(shard).await?;
                return Err(StreamError::GroupRecreated);
            }
            Err(err) => return Err(err),
        };
        let (cursor, claimed) = parse_claim_reply(reply)?;
        let mut tasks = Vec::with_capacity(claimed.len());
        for (id, stream) in claimed {
            match stream {
                Some(stream) if self.keys.shard_of_key(&stream) == Some(shard) => {
                    tasks.push(WorkerTask { id, stream })
                }
                other => {
                    tracing::warn!(task = %id, %queue, stream = ?other.as_deref().map(crate::log_text::bounded), "worker task naming no stream of its shard, dropping it");
                    let mut delete = redis::cmd("XDEL");
                    delete.arg(&queue).arg(id.to_string());
                    let _: Result<Value, _> = self.query(&delete).await;
                }
            }
        }
        Ok((cursor, tasks))
    }

    /// Create one shard's worker queue and group if missing.
    async fn ensure_group(&self, shard: usize) -> Result<(), StreamError> {
        let queue = self.keys.worker_key(shard);
        let mut command = redis::cmd("XGROUP");
        command
            .arg("CREATE")
            .arg(&queue)
            .arg(&queue)
            .arg("0")
            .arg("MKSTREAM");
        match self.query::<Value>(&command).await {
            Ok(_) => Ok(()),
            Err(StreamError::Redis(err)) if err.code() == Some("BUSYGROUP") => Ok(()),
            Err(err) => Err(err),
        }
    }

    /// Every claimable task of one shard, page by page.
    async fn claim_shard_all(
        &self,
        shard: usize,
        consumer: &str,
        min_idle: Duration,
    ) -> Result<Vec<WorkerTask>, StreamError> {
        let mut all = Vec::new();
        let mut cursor = "0-0".to_string();
        loop {
            let (next, tasks) = match self
                .claim_page(shard, consumer, min_idle, &cursor, 100)
                .await
            {
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

    /// The `run_id`s of every master, sorted and joined.
    async fn master_run_ids(&self) -> Result<String, StreamError> {
        let mut command = redis::cmd("INFO");
        command.arg("server");
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let reply = self.commands.clone().route_command(command, routing).await;
        let replies = match self.noted(reply)? {
            Value::Map(pairs) => pairs.into_iter().map(|(_, info)| info).collect(),
            single => vec![single],
        };
        let mut ids = Vec::with_capacity(replies.len());
        for info in replies {
            let text = match info {
                Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                Value::VerbatimString { text, .. } => text,
                Value::SimpleString(text) => text,
                Value::ServerError(err) => {
                    return Err(StreamError::Reply(format!("INFO on a master: {err:?}")))
                }
                other => return Err(StreamError::Reply(format!("INFO: {other:?}"))),
            };
            let id = text
                .lines()
                .find_map(|line| line.strip_prefix("run_id:"))
                .map(|id| id.trim().to_string())
                .ok_or_else(|| StreamError::Reply("INFO without run_id".into()))?;
            ids.push(id);
        }
        ids.sort();
        Ok(ids.join(","))
    }

    /// Every shard's epoch marker, in shard order (set where missing).
    async fn epochs(&self) -> Result<String, StreamError> {
        let reads = (0..self.keys.shards()).map(|shard| async move {
            let fresh = uuid::Uuid::new_v4().to_string();
            let result = self
                .epoch
                .key(self.keys.epoch_key(shard))
                .arg(fresh)
                .invoke_async::<String>(&mut self.commands.clone())
                .await;
            self.noted(result)
        });
        let epochs = futures_util::future::join_all(reads).await;
        let mut joined = String::new();
        for epoch in epochs {
            let _ = write!(joined, "{},", epoch?);
        }
        Ok(joined)
    }
}

impl Keyspace for ClusterStreams {
    fn prefix(&self) -> &str {
        self.keys.prefix()
    }

    fn stream_key(&self, room: &str, docid: &str) -> String {
        self.keys.stream_key(room, docid)
    }

    fn parse_stream_key(&self, key: &str) -> Result<(String, String), KeyError> {
        self.keys.parse_stream_key(key)
    }
}

#[async_trait]
impl Append for ClusterStreams {
    async fn append(&self, stream: &str, message: &[u8]) -> Result<(), StreamError> {
        let queue = self.keys.worker_key(self.shard(stream)?);
        let result = self
            .append
            .key(stream)
            .arg(message)
            .arg(&queue)
            .invoke_async::<Value>(&mut self.commands.clone())
            .await;
        self.noted(result)?;
        Ok(())
    }

    async fn delete_stream(&self, stream: &str) -> Result<(), StreamError> {
        // The counter carries the stream key's hash tag: one slot, one DEL.
        let mut command = redis::cmd("DEL");
        command
            .arg(stream)
            .arg(version_counter_key(self.keys.prefix(), stream));
        let _: i64 = self.query(&command).await?;
        Ok(())
    }
}

#[async_trait]
impl Control for ClusterStreams {
    async fn publish_close(&self, order: &CloseOrder) -> Result<(), StreamError> {
        // A cluster carries a PUBLISH to every node.
        let mut command = redis::cmd("PUBLISH");
        command.arg(&self.control_key).arg(order.to_json());
        let _: Value = self.query(&command).await?;
        Ok(())
    }

    /// A pub/sub connection to the first seed that answers, subscribed to
    /// `{prefix}:control`; the stream ends with that connection, and the next
    /// subscription tries the seeds again.
    async fn close_orders(&self) -> Result<BoxStream<'static, CloseOrder>, StreamError> {
        let mut last_error = StreamError::NotConnected;
        for seed in &self.seeds {
            let subscribe = async {
                let mut pubsub = Client::open(seed.clone())?.get_async_pubsub().await?;
                pubsub.subscribe(&self.control_key).await?;
                Ok::<_, StreamError>(pubsub)
            };
            match tokio::time::timeout(COMMAND_TIMEOUT, subscribe).await {
                Ok(Ok(pubsub)) => return Ok(close_order_stream(pubsub)),
                Ok(Err(err)) => last_error = err,
                Err(_) => last_error = StreamError::NoAnswer(COMMAND_TIMEOUT),
            }
        }
        Err(last_error)
    }
}

/// A shard's blocking read under way: the positions it reads from, and the
/// task that runs it. It outlives the call that started it, so that a shard
/// whose streams got nothing new goes on waiting while the others' entries
/// are delivered, instead of being interrupted and read again.
struct InFlight {
    positions: Vec<(Arc<str>, StreamId)>,
    read: tokio::task::JoinHandle<Result<Value, StreamError>>,
}

/// Whether two position lists name the same streams at the same ids.
fn same_positions(a: &[(Arc<str>, StreamId)], b: &[(Arc<str>, StreamId)]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((sa, ia), (sb, ib))| ia == ib && (Arc::ptr_eq(sa, sb) || sa == sb))
}

impl ClusterStreams {
    /// Interrupt the reads of `shards` and wait until they returned; what
    /// they read is dropped (their streams are read again from the same
    /// positions, or no longer followed).
    async fn cancel_reads(&self, inflight: &mut HashMap<usize, InFlight>, shards: Vec<usize>) {
        let mut reads: Vec<(usize, InFlight)> = shards
            .into_iter()
            .filter_map(|shard| Some((shard, inflight.remove(&shard)?)))
            .collect();
        while !reads.is_empty() {
            self.unblock(self.readers.blocked(reads.iter().map(|(shard, _)| *shard)))
                .await;
            let deadline = tokio::time::Instant::now() + UNBLOCK_RETRY;
            let mut left = Vec::new();
            for (shard, mut read) in reads {
                if tokio::time::timeout_at(deadline, &mut read.read)
                    .await
                    .is_err()
                {
                    left.push((shard, read));
                }
            }
            reads = left;
        }
    }
}

#[async_trait]
impl StreamReader for ClusterStreams {
    /// One XREAD per shard with followed streams, each on the shard's own
    /// connection, returning as soon as one or more of them returned. A
    /// shard whose read is still waiting keeps waiting into the next call
    /// (as long as its streams and positions stay the same), so a busy shard
    /// costs the quiet ones nothing. A shard that fails is skipped this round
    /// (the others' entries still go out); only when every returned read
    /// failed is the read an error.
    async fn read_new(
        &self,
        positions: &[(Arc<str>, StreamId)],
        block: Duration,
    ) -> Result<Vec<StreamBatch>, StreamError> {
        let desired = self.by_shard(positions);
        let mut inflight = self.inflight.lock().await;
        let stale: Vec<usize> = inflight
            .iter()
            .filter(|(shard, read)| {
                desired
                    .get(shard)
                    .is_none_or(|wanted| !same_positions(wanted, &read.positions))
            })
            .map(|(shard, _)| *shard)
            .collect();
        if !stale.is_empty() {
            self.cancel_reads(&mut inflight, stale).await;
        }
        for (shard, wanted) in desired {
            if inflight.contains_key(&shard) {
                continue;
            }
            let command = read_command(&wanted, block);
            let readers = Arc::clone(&self.readers);
            let reconnects = Arc::clone(&self.reconnects);
            let read =
                tokio::spawn(async move { readers.read(shard, &command, &reconnects).await });
            inflight.insert(
                shard,
                InFlight {
                    positions: wanted,
                    read,
                },
            );
        }
        if inflight.is_empty() {
            drop(inflight);
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(Vec::new());
        }
        // The first read to return, then every other one already done.
        let shards: Vec<usize> = inflight.keys().copied().collect();
        let (output, first, _) =
            futures_util::future::select_all(inflight.values_mut().map(|read| &mut read.read))
                .await;
        inflight.remove(&shards[first]);
        let mut outputs = vec![(shards[first], output)];
        let finished: Vec<usize> = inflight
            .iter()
            .filter(|(_, read)| read.read.is_finished())
            .map(|(shard, _)| *shard)
            .collect();
        for shard in finished {
            if let Some(read) = inflight.remove(&shard) {
                outputs.push((shard, read.read.await));
            }
        }
        gather(outputs)
    }

    async fn wake_reader(&self) -> Result<(), StreamError> {
        self.unblock(self.readers.connected()).await;
        Ok(())
    }
}

/// `XREAD COUNT … BLOCK … STREAMS <keys> <ids>` for one shard's streams.
fn read_command(streams: &[(Arc<str>, StreamId)], block: Duration) -> redis::Cmd {
    let mut command = redis::cmd("XREAD");
    command
        .arg("COUNT")
        .arg(READ_COUNT)
        .arg("BLOCK")
        .arg(block.as_millis() as u64)
        .arg("STREAMS");
    for (stream, _) in streams {
        command.arg(&**stream);
    }
    let mut id_text = String::with_capacity(32);
    for (_, id) in streams {
        id_text.clear();
        let _ = write!(id_text, "{id}");
        command.arg(id_text.as_str());
    }
    command
}

#[async_trait]
impl History for ClusterStreams {
    async fn read_page(
        &self,
        stream: &str,
        from: StreamId,
        count: usize,
    ) -> Result<StreamPage, StreamError> {
        let mut command = redis::cmd("XRANGE");
        command
            .arg(stream)
            .arg(from.to_string())
            .arg("+")
            .arg("COUNT")
            .arg(count);
        let reply: Value = self.query(&command).await?;
        Ok(parse_page(stream, reply))
    }

    async fn first_id(&self, stream: &str) -> Result<Option<StreamId>, StreamError> {
        let mut command = redis::cmd("XRANGE");
        command.arg(stream).arg("-").arg("+").arg("COUNT").arg(1);
        let reply: Value = self.query(&command).await?;
        Ok(parse_page(stream, reply).last)
    }

    async fn next_version(&self, stream: &str, floor: u64) -> Result<u64, StreamError> {
        let result = self
            .next_version
            .key(version_counter_key(self.keys.prefix(), stream))
            .arg(floor)
            .arg(VERSION_COUNTER_LIFETIME.as_millis() as u64)
            .invoke_async(&mut self.commands.clone())
            .await;
        self.noted(result)
    }
}

#[async_trait]
impl TaskQueue for ClusterStreams {
    async fn ensure_worker_group(&self) -> Result<(), StreamError> {
        for shard in 0..self.keys.shards() {
            self.ensure_group(shard).await?;
        }
        Ok(())
    }

    /// Claims from the shards' queues in turn, starting at a shard that moves
    /// on with every call, until `count` tasks are claimed. A shard that fails
    /// (its master failing over) is skipped; only when nothing was claimed and
    /// a shard failed is the claim an error.
    async fn claim_tasks(
        &self,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<WorkerTask>, StreamError> {
        let shards = self.keys.shards();
        let start = self.next_claim.fetch_add(1, Ordering::Relaxed) % shards;
        let mut tasks = Vec::new();
        let mut failure = None;
        for step in 0..shards {
            let shard = (start + step) % shards;
            let remaining = count.saturating_sub(tasks.len());
            if remaining == 0 {
                break;
            }
            let claimed = if count == usize::MAX {
                self.claim_shard_all(shard, consumer, min_idle).await
            } else {
                match self
                    .claim_page(shard, consumer, min_idle, "0", remaining)
                    .await
                {
                    Ok((_, claimed)) => Ok(claimed),
                    Err(StreamError::GroupRecreated) => Ok(Vec::new()),
                    Err(err) => Err(err),
                }
            };
            match claimed {
                Ok(claimed) => tasks.extend(claimed),
                Err(err) => {
                    tracing::debug!(shard, %err, "claiming a shard's tasks failed");
                    failure = Some(err);
                }
            }
        }
        match failure {
            Some(err) if tasks.is_empty() => Err(err),
            _ => Ok(tasks),
        }
    }

    async fn stream_len(&self, stream: &str) -> Result<u64, StreamError> {
        let mut command = redis::cmd("XLEN");
        command.arg(stream);
        self.query(&command).await
    }

    async fn drop_empty_stream(&self, task: &WorkerTask) -> Result<(), StreamError> {
        let queue = self.keys.worker_key(self.shard(&task.stream)?);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EVAL")
            .arg(DELETE_IF_EMPTY_SCRIPT)
            .arg(1)
            .arg(&task.stream)
            .ignore()
            .cmd("XDEL")
            .arg(&queue)
            .arg(task.id.to_string())
            .ignore();
        self.noted(pipe.query_async::<Value>(&mut self.commands.clone()).await)?;
        Ok(())
    }

    async fn finish_task(
        &self,
        task: &WorkerTask,
        trim_before: StreamId,
    ) -> Result<(), StreamError> {
        let queue = self.keys.worker_key(self.shard(&task.stream)?);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XTRIM")
            .arg(&task.stream)
            .arg("MINID")
            .arg(trim_before.to_string())
            .ignore()
            .cmd("XADD")
            .arg(&queue)
            .arg("*")
            .arg("compact")
            .arg(&task.stream)
            .ignore()
            .cmd("XREADGROUP")
            .arg("GROUP")
            .arg(&queue)
            .arg("pending")
            .arg("COUNT")
            .arg(50)
            .arg("STREAMS")
            .arg(&queue)
            .arg(">")
            .ignore()
            .cmd("XDEL")
            .arg(&queue)
            .arg(task.id.to_string())
            .ignore();
        self.noted(pipe.query_async::<Value>(&mut self.commands.clone()).await)?;
        Ok(())
    }
}

#[async_trait]
impl Health for ClusterStreams {
    async fn ping(&self) -> Result<(), StreamError> {
        let _: Value = self.query(&redis::cmd("PING")).await?;
        Ok(())
    }

    /// The sorted `run_id`s of every master, then every shard's epoch marker:
    /// it changes when a master is replaced (a replica promoted, whose data
    /// may lack acknowledged appends) or restarted, and when a node lost its
    /// data (FLUSHALL), which all call for clients to send their documents
    /// again.
    async fn run_id(&self) -> Result<Option<String>, StreamError> {
        let masters = self.master_run_ids().await?;
        let epochs = self.epochs().await?;
        Ok(Some(format!("{masters}|{epochs}")))
    }

    fn first_run_id(&self) -> Option<String> {
        self.first_run_id.clone()
    }
}

/// The inspector's room list is not read from a cluster: it would scan every
/// master. The inspector says so where the list would be.
#[async_trait]
impl super::Survey for ClusterStreams {
    async fn doc_streams(
        &self,
        _limit: usize,
    ) -> Result<(Vec<super::DocStreamSummary>, bool), StreamError> {
        Err(StreamError::Reply(
            "the room list is not available on a Redis Cluster".into(),
        ))
    }
}

impl ClusterStreams {
    /// The followed streams grouped by shard; a stream of no shard is not read.
    fn by_shard(
        &self,
        positions: &[(Arc<str>, StreamId)],
    ) -> HashMap<usize, Vec<(Arc<str>, StreamId)>> {
        let mut desired: HashMap<usize, Vec<(Arc<str>, StreamId)>> = HashMap::new();
        for (stream, id) in positions {
            match self.keys.shard_of_key(stream) {
                Some(shard) => desired
                    .entry(shard)
                    .or_default()
                    .push((Arc::clone(stream), *id)),
                None => {
                    tracing::debug!(stream = %crate::log_text::bounded(stream), "followed stream of no shard, not read")
                }
            }
        }
        desired
    }
}

/// What one shard's read task ended with.
type ShardRead = Result<Result<redis::Value, StreamError>, tokio::task::JoinError>;

/// The batches of the shard reads that returned; an error only when every one
/// of them failed.
fn gather(outputs: Vec<(usize, ShardRead)>) -> Result<Vec<StreamBatch>, StreamError> {
    let mut batches = Vec::new();
    let mut failure = None;
    let mut succeeded = false;
    for (shard, output) in outputs {
        match output {
            Ok(Ok(reply)) => {
                succeeded = true;
                batches.extend(parse_read_reply(reply));
            }
            Ok(Err(err)) => {
                tracing::warn!(shard, %err, "a shard's stream read failed");
                failure = Some(err);
            }
            Err(err) => failure = Some(StreamError::Reply(format!("shard read: {err}"))),
        }
    }
    match failure {
        Some(err) if !succeeded => Err(err),
        _ => Ok(batches),
    }
}
