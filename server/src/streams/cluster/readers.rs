//! The subscriber's blocking reads on a Redis Cluster: one dedicated
//! connection per shard, to the node that serves the shard's slot.
//!
//! XREAD may not span slots, and a blocking read ties up its connection, so
//! each shard with followed streams reads on a plain connection of its own.
//! Where a shard lives is learnt the way Redis tells it: connect to the node
//! last known (a seed at first), and follow the `MOVED` redirect it answers
//! with; a failover breaks the connection or redirects, and the read
//! connects again.

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{Client, ConnectionAddr, ConnectionInfo, RedisError, Value};

use crate::streams::redis::{blocking_connection, lost, Reconnects};
use crate::streams::StreamError;

/// How many redirects one read follows before it gives up for this round.
const MAX_REDIRECTS: usize = 3;

/// A node of the cluster: host and port.
pub type Node = (String, u16);

/// The dedicated read connections, one slot per shard.
pub struct ShardReaders {
    seeds: Vec<ConnectionInfo>,
    shards: Vec<tokio::sync::Mutex<Option<Reader>>>,
    /// Per shard, the node and Redis client id of its connection while it
    /// has one: readable while a read holds the connection, for `CLIENT
    /// UNBLOCK` to interrupt it.
    blocked: Mutex<Vec<Option<(Node, i64)>>>,
    /// Per shard, the node that served it last.
    nodes: Mutex<Vec<Option<Node>>>,
}

/// One shard's connection.
struct Reader {
    connection: MultiplexedConnection,
}

impl ShardReaders {
    /// Readers for `shards` shards that first look for their nodes among `seeds`.
    pub fn new(seeds: Vec<ConnectionInfo>, shards: usize) -> Self {
        Self {
            seeds,
            shards: (0..shards).map(|_| tokio::sync::Mutex::new(None)).collect(),
            blocked: Mutex::new(vec![None; shards]),
            nodes: Mutex::new(vec![None; shards]),
        }
    }

    /// Run one blocking read (`XREAD … BLOCK …` on this shard's streams) on
    /// the shard's connection, following redirects.
    pub async fn read(
        &self,
        shard: usize,
        command: &redis::Cmd,
        reconnects: &Reconnects,
    ) -> Result<Value, StreamError> {
        let mut redirects = 0;
        loop {
            let mut connection = self.connection(shard, reconnects).await?;
            match command.query_async::<Value>(&mut connection).await {
                Ok(reply) => return Ok(reply),
                Err(err) => {
                    self.forget(shard, reconnects).await;
                    match redirect(&err) {
                        Some(node) if redirects < MAX_REDIRECTS => {
                            tracing::debug!(shard, host = %node.0, port = node.1, "shard moved, following");
                            self.remember(shard, Some(node));
                            redirects += 1;
                        }
                        _ => {
                            if lost(&err) {
                                // The node is gone: look for the shard anew.
                                self.remember(shard, None);
                            }
                            return Err(err.into());
                        }
                    }
                }
            }
        }
    }

    /// The node and client id of every shard's connection (`None` where a
    /// shard has none), for interrupting their reads.
    pub fn blocked(&self, shards: impl IntoIterator<Item = usize>) -> Vec<(Node, i64)> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        shards
            .into_iter()
            .filter_map(|shard| blocked.get(shard).cloned().flatten())
            .collect()
    }

    /// Every shard that has a connection.
    pub fn connected(&self) -> Vec<(Node, i64)> {
        let blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        blocked.iter().flatten().cloned().collect()
    }

    fn remember(&self, shard: usize, node: Option<Node>) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = nodes.get_mut(shard) {
            *slot = node;
        }
    }

    async fn forget(&self, shard: usize, reconnects: &Reconnects) {
        reconnects.reader_lost();
        if let Some(reader) = self.shards.get(shard) {
            *reader.lock().await = None;
        }
        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = blocked.get_mut(shard) {
            *slot = None;
        }
    }

    /// The shard's connection, made when it has none: to the node last known
    /// to serve it, else to the first seed that answers.
    async fn connection(
        &self,
        shard: usize,
        reconnects: &Reconnects,
    ) -> Result<MultiplexedConnection, StreamError> {
        let slot = self
            .shards
            .get(shard)
            .ok_or_else(|| StreamError::Reply(format!("no shard {shard}")))?;
        let mut reader = slot.lock().await;
        if let Some(reader) = reader.as_ref() {
            return Ok(reader.connection.clone());
        }
        let known = {
            let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
            nodes.get(shard).cloned().flatten()
        };
        let candidates = known
            .iter()
            .filter_map(|node| self.seeds.first().map(|seed| at_node(seed, node)))
            .chain(self.seeds.iter().cloned());
        let mut last_error = None;
        for info in candidates {
            let node = node_of(&info);
            match connect(info).await {
                Ok((connection, id)) => {
                    if let Some(node) = node {
                        self.remember(shard, Some(node.clone()));
                        let mut blocked = self.blocked.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(slot) = blocked.get_mut(shard) {
                            *slot = Some((node, id));
                        }
                    }
                    reconnects.reader_connected();
                    *reader = Some(Reader {
                        connection: connection.clone(),
                    });
                    return Ok(connection);
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or(StreamError::NotConnected))
    }
}

/// The node a `MOVED` or `ASK` error names.
fn redirect(err: &RedisError) -> Option<Node> {
    let (addr, _slot) = err.redirect_node()?;
    let (host, port) = addr.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// `seed`'s settings (credentials, protocol) for another node.
pub fn at_node(seed: &ConnectionInfo, node: &Node) -> ConnectionInfo {
    seed.clone()
        .set_addr(ConnectionAddr::Tcp(node.0.clone(), node.1))
}

/// Host and port of a TCP connection's address.
pub fn node_of(info: &ConnectionInfo) -> Option<Node> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => Some((host.clone(), *port)),
        _ => None,
    }
}

/// A blocking-read connection to the node at `info`, and its client id.
async fn connect(info: ConnectionInfo) -> Result<(MultiplexedConnection, i64), StreamError> {
    blocking_connection(&Client::open(info)?).await
}

/// How long a read waits for the other shards' reads after it asked them to
/// stop, before it asks again (an unblock that reached a node before the
/// read it was meant for does nothing).
pub const UNBLOCK_RETRY: Duration = Duration::from_millis(25);
