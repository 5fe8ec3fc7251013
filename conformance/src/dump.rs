//! What a fleet leaves in Redis, in a form that can be compared across runs and
//! implementations: every key, every stream entry (field names, value bytes in
//! hex), and consumer-group state, with stream ids replaced by their rank and
//! timing-dependent parts (idle times, random consumer names) left out.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use redis::aio::MultiplexedConnection;
use redis::Value;
use serde::Serialize;

/// Consumer names kept as they are; any other (a worker's random id) becomes
/// [`WORKER_CONSUMER`].
const KNOWN_CONSUMERS: &[&str] = &["pending"];

/// The normalised name of a worker's consumer.
pub const WORKER_CONSUMER: &str = "<worker>";

/// A Redis stream id `ms-seq` (a missing `-seq` counts as 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Id(u64, u64);

impl std::str::FromStr for Id {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Ok(Id(
            ms.parse().with_context(|| format!("stream id {s}"))?,
            seq.parse().with_context(|| format!("stream id {s}"))?,
        ))
    }
}

/// One stream entry as read, with its raw id.
#[derive(Debug, Clone)]
pub struct RawEntry {
    /// The stream id.
    pub id: String,
    /// Field name, value bytes, in order.
    pub fields: Vec<(String, Vec<u8>)>,
}

/// One consumer group as read, with raw ids and names.
#[derive(Debug, Clone, Default)]
pub struct RawGroup {
    /// `XINFO GROUPS` fields of the group, values as text.
    pub info: Vec<(String, String)>,
    /// `(name, pending count)` per consumer (`XINFO CONSUMERS`), if read.
    pub consumers: Option<Vec<(String, String)>>,
    /// `(id, consumer, deliveries)` per pending entry (`XPENDING`), if read.
    pub pending: Option<Vec<(String, String, String)>>,
}

/// One key as read.
#[derive(Debug, Clone)]
pub enum RawKey {
    /// A stream with its entries and groups.
    Stream {
        /// Entries in stream order.
        entries: Vec<RawEntry>,
        /// Consumer groups in `XINFO GROUPS` order.
        groups: Vec<RawGroup>,
    },
    /// Any other type (none is expected): only its type is recorded.
    Other(String),
}

/// Everything in Redis, as read.
#[derive(Debug, Clone, Default)]
pub struct RawDump {
    /// Keys by name.
    pub keys: BTreeMap<String, RawKey>,
}

/// A normalised stream entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The rank of the id among the stream's ids (entries and ids its groups
    /// refer to), from 0.
    pub id: String,
    /// Field name, hex value, field name, hex value, … (as the captures write it).
    pub fields: Vec<String>,
    /// For a worker task (`compact <stream>`): how many entries of that stream
    /// are older than the task, which places the task among the room's entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries_before: Option<usize>,
}

/// A normalised consumer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Consumer {
    /// `pending`, or `<worker>` for a worker's random name.
    pub name: String,
    /// How many entries it holds pending.
    pub pending: String,
}

/// A normalised pending entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pending {
    /// The entry's rank (as in [`Entry::id`]).
    pub id: String,
    /// Its consumer, normalised.
    pub consumer: String,
    /// How often it was delivered.
    pub deliveries: String,
}

/// A normalised consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Group {
    /// `XINFO GROUPS` fields (`last-delivered-id` as a rank).
    pub info: BTreeMap<String, String>,
    /// Consumers, sorted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Vec<Consumer>>,
    /// Pending entries in id order.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<Pending>>,
}

/// A normalised key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Key {
    /// A stream.
    Stream {
        /// Entries in stream order.
        entries: Vec<Entry>,
        /// Consumer groups by name.
        groups: Vec<Group>,
    },
    /// Another type.
    Other(String),
}

/// Redis contents that compare equal whenever two runs did the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dump {
    /// Keys by name.
    pub keys: BTreeMap<String, Key>,
}

impl Dump {
    /// The same dump without consumer lists and pending lists (the parts the
    /// y-redis captures do not record).
    pub fn without_consumers(&self) -> Self {
        let mut out = self.clone();
        for key in out.keys.values_mut() {
            if let Key::Stream { groups, .. } = key {
                for group in groups {
                    group.consumers = None;
                    group.pending = None;
                }
            }
        }
        out
    }
}

/// Read every key of the Redis behind `conn`.
pub async fn read(conn: &mut MultiplexedConnection) -> Result<RawDump> {
    let mut names: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query_async(conn).await?;
    names.sort();
    let mut dump = RawDump::default();
    for name in names {
        let key = String::from_utf8(name.clone()).context("key names are UTF-8")?;
        let kind: String = redis::cmd("TYPE").arg(&name).query_async(conn).await?;
        if kind == "string" && (key.ends_with(":epoch") || key.contains(":version:")) {
            // The Rust instances' epoch marker and version counters
            // (docs/protocol.md §3.2, §3.5), which y-redis neither has nor
            // reads: not part of the layout compared.
            continue;
        }
        if kind != "stream" {
            dump.keys.insert(key, RawKey::Other(kind));
            continue;
        }
        let entries = read_entries(conn, &name).await?;
        let groups_reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&name)
            .query_async(conn)
            .await?;
        let mut groups = Vec::new();
        for group in list(&groups_reply)? {
            let info = pairs(group)?;
            let group_name = info
                .iter()
                .find(|(k, _)| k == "name")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| anyhow!("XINFO GROUPS without a name"))?;
            let consumers_reply: Value = redis::cmd("XINFO")
                .arg("CONSUMERS")
                .arg(&name)
                .arg(&group_name)
                .query_async(conn)
                .await?;
            let mut consumers = Vec::new();
            for consumer in list(&consumers_reply)? {
                let fields = pairs(consumer)?;
                let field = |n: &str| {
                    fields
                        .iter()
                        .find(|(k, _)| k == n)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                };
                consumers.push((field("name"), field("pending")));
            }
            let pending_reply: Value = redis::cmd("XPENDING")
                .arg(&name)
                .arg(&group_name)
                .arg("-")
                .arg("+")
                .arg(1000)
                .query_async(conn)
                .await?;
            let mut pending = Vec::new();
            for item in list(&pending_reply)? {
                match list(item)? {
                    [id, consumer, _idle, deliveries] => {
                        pending.push((text(id)?, text(consumer)?, text(deliveries)?))
                    }
                    other => bail!("unexpected XPENDING item {other:?}"),
                }
            }
            groups.push(RawGroup {
                info,
                consumers: Some(consumers),
                pending: Some(pending),
            });
        }
        dump.keys.insert(key, RawKey::Stream { entries, groups });
    }
    Ok(dump)
}

async fn read_entries(conn: &mut MultiplexedConnection, key: &[u8]) -> Result<Vec<RawEntry>> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await?;
    let mut entries = Vec::new();
    for entry in list(&reply)? {
        let [id, fields] = list(entry)? else {
            bail!("unexpected XRANGE entry {entry:?}");
        };
        let fields = list(fields)?
            .chunks(2)
            .map(|pair| match pair {
                [name, value] => Ok((text(name)?, bytes(value)?)),
                _ => bail!("odd field list"),
            })
            .collect::<Result<Vec<_>>>()?;
        entries.push(RawEntry {
            id: text(id)?,
            fields,
        });
    }
    Ok(entries)
}

/// Read the Redis behind `conn` and normalise it.
pub async fn dump(conn: &mut MultiplexedConnection) -> Result<Dump> {
    normalize(&read(conn).await?)
}

/// The `redis` section of a y-redis capture (`session.json`) as a raw dump:
/// `key → [{id, fields: [name, hex, …]}]` and `key (XINFO GROUPS) → [[name, value, …]]`.
/// `skip` drops entries whose `m` value (hex) is listed.
pub fn from_capture(redis: &serde_json::Value, skip: &[&str]) -> Result<RawDump> {
    let object = redis
        .as_object()
        .ok_or_else(|| anyhow!("the capture's redis section is not an object"))?;
    let mut dump = RawDump::default();
    for (name, value) in object {
        if name.ends_with(" (XINFO GROUPS)") {
            continue;
        }
        let mut entries = Vec::new();
        for entry in value
            .as_array()
            .ok_or_else(|| anyhow!("{name}: not a list"))?
        {
            let id = entry["id"]
                .as_str()
                .ok_or_else(|| anyhow!("{name}: entry without id"))?;
            let flat: Vec<&str> = entry["fields"]
                .as_array()
                .ok_or_else(|| anyhow!("{name}: entry without fields"))?
                .iter()
                .filter_map(|f| f.as_str())
                .collect();
            let mut fields = Vec::new();
            for pair in flat.chunks(2) {
                if let [field, value] = pair {
                    fields.push((field.to_string(), hex::decode(value)?));
                }
            }
            if fields
                .iter()
                .any(|(_, v)| skip.contains(&hex::encode(v).as_str()))
            {
                continue;
            }
            entries.push(RawEntry {
                id: id.to_string(),
                fields,
            });
        }
        let mut groups = Vec::new();
        if let Some(list) = object
            .get(&format!("{name} (XINFO GROUPS)"))
            .and_then(|g| g.as_array())
        {
            for group in list {
                let flat: Vec<String> = group
                    .as_array()
                    .ok_or_else(|| anyhow!("{name}: group is not a list"))?
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string())
                    })
                    .collect();
                let info = flat
                    .chunks(2)
                    .filter_map(|p| match p {
                        [k, v] => Some((k.clone(), v.clone())),
                        _ => None,
                    })
                    .collect();
                groups.push(RawGroup {
                    info,
                    consumers: None,
                    pending: None,
                });
            }
        }
        dump.keys
            .insert(name.clone(), RawKey::Stream { entries, groups });
    }
    Ok(dump)
}

/// Replace ids by their rank within their stream, drop timing-dependent values
/// and random consumer names, and place worker tasks among their room's entries.
pub fn normalize(raw: &RawDump) -> Result<Dump> {
    let mut keys = BTreeMap::new();
    for (name, key) in &raw.keys {
        let normalized = match key {
            RawKey::Other(kind) => Key::Other(kind.clone()),
            RawKey::Stream { entries, groups } => {
                let mut ids: Vec<Id> = entries
                    .iter()
                    .map(|e| e.id.parse())
                    .collect::<Result<_>>()?;
                for group in groups {
                    for (field, value) in &group.info {
                        if field == "last-delivered-id" {
                            ids.push(value.parse()?);
                        }
                    }
                    for (id, _, _) in group.pending.iter().flatten() {
                        ids.push(id.parse()?);
                    }
                }
                ids.sort();
                ids.dedup();
                let rank = |id: &str| -> Result<String> {
                    let id: Id = id.parse()?;
                    if id == Id(0, 0) {
                        return Ok("0-0".into());
                    }
                    let position = ids.binary_search(&id).map_err(|_| anyhow!("unknown id"))?;
                    Ok(position.to_string())
                };
                let entries = entries
                    .iter()
                    .map(|e| {
                        let entries_before = e
                            .fields
                            .iter()
                            .find(|(f, _)| f == "compact")
                            .map(|(_, target)| entries_before(raw, target, &e.id))
                            .transpose()?;
                        Ok(Entry {
                            id: rank(&e.id)?,
                            fields: e
                                .fields
                                .iter()
                                .flat_map(|(f, v)| [f.clone(), hex::encode(v)])
                                .collect(),
                            entries_before,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                let groups = groups
                    .iter()
                    .map(|g| {
                        let info = g
                            .info
                            .iter()
                            .map(|(k, v)| {
                                let v = if k == "last-delivered-id" {
                                    rank(v)?
                                } else {
                                    v.clone()
                                };
                                Ok((k.clone(), v))
                            })
                            .collect::<Result<BTreeMap<_, _>>>()?;
                        let consumers = g.consumers.as_ref().map(|list| {
                            let mut list: Vec<Consumer> = list
                                .iter()
                                .map(|(name, pending)| Consumer {
                                    name: consumer_name(name),
                                    pending: pending.clone(),
                                })
                                .collect();
                            list.sort();
                            list
                        });
                        let pending = g
                            .pending
                            .as_ref()
                            .map(|list| {
                                list.iter()
                                    .map(|(id, consumer, deliveries)| {
                                        Ok(Pending {
                                            id: rank(id)?,
                                            consumer: consumer_name(consumer),
                                            deliveries: deliveries.clone(),
                                        })
                                    })
                                    .collect::<Result<Vec<_>>>()
                            })
                            .transpose()?;
                        Ok(Group {
                            info,
                            consumers,
                            pending,
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Key::Stream { entries, groups }
            }
        };
        keys.insert(name.clone(), normalized);
    }
    Ok(Dump { keys })
}

fn consumer_name(name: &str) -> String {
    if KNOWN_CONSUMERS.contains(&name) {
        name.to_string()
    } else {
        WORKER_CONSUMER.to_string()
    }
}

/// How many entries of the stream named by `target` have ids below `task_id`.
fn entries_before(raw: &RawDump, target: &[u8], task_id: &str) -> Result<usize> {
    let task: Id = task_id.parse()?;
    let target = String::from_utf8_lossy(target);
    Ok(match raw.keys.get(target.as_ref()) {
        Some(RawKey::Stream { entries, .. }) => entries
            .iter()
            .map(|e| e.id.parse::<Id>())
            .collect::<Result<Vec<_>>>()?
            .into_iter()
            .filter(|id| *id < task)
            .count(),
        _ => 0,
    })
}

fn list(value: &Value) -> Result<&[Value]> {
    match value {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(&[]),
        other => bail!("expected a list, got {other:?}"),
    }
}

fn text(value: &Value) -> Result<String> {
    Ok(match value {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Nil => "nil".into(),
        Value::Okay => "OK".into(),
        Value::Double(d) => d.to_string(),
        Value::Boolean(b) => b.to_string(),
        other => bail!("expected a scalar, got {other:?}"),
    })
}

fn bytes(value: &Value) -> Result<Vec<u8>> {
    match value {
        Value::BulkString(b) => Ok(b.clone()),
        other => text(other).map(String::into_bytes),
    }
}

/// `[name, value, name, value, …]` (or a RESP3 map) as text pairs.
fn pairs(value: &Value) -> Result<Vec<(String, String)>> {
    match value {
        Value::Map(items) => items
            .iter()
            .map(|(k, v)| Ok((text(k)?, text(v)?)))
            .collect(),
        other => list(other)?
            .chunks(2)
            .map(|pair| match pair {
                [k, v] => Ok((text(k)?, text(v)?)),
                _ => bail!("odd field list"),
            })
            .collect(),
    }
}
