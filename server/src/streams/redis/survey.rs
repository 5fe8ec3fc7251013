//! [`Survey`] on Redis: `SCAN … MATCH {prefix}:room:* TYPE stream`, bounded,
//! then per stream `XLEN` and its newest entry's id (pipelined), and the
//! streams named by a task of the worker queue `{prefix}:worker`.

use std::collections::HashSet;

use async_trait::async_trait;
use redis::Value;

use super::RedisStreams;
use crate::streams::reply::{take_field, value_string};
use crate::streams::{DocStreamSummary, StreamError, StreamId, Survey};

/// Keys asked of one `SCAN` step.
const SCAN_COUNT: usize = 1000;
/// `SCAN` steps one survey takes at most, whatever it found: with a sparse
/// keyspace every step may find nothing.
const SCAN_STEPS: usize = 1000;
/// Streams asked about in one pipeline.
const PIPELINE: usize = 100;
/// Worker tasks read at most when looking for queued compactions.
const TASKS_READ: usize = 100_000;

/// `prefix` with Redis's glob characters escaped, for `MATCH`.
fn glob_escape(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len());
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl RedisStreams {
    /// Up to `limit` + 1 document stream keys, sorted.
    async fn scan_doc_streams(&self, limit: usize) -> Result<Vec<String>, StreamError> {
        let pattern = format!("{}:room:*", glob_escape(&self.prefix));
        let mut keys = HashSet::new();
        let mut cursor = "0".to_string();
        for _ in 0..SCAN_STEPS {
            let (pattern, at) = (&pattern, cursor.clone());
            let reply: Value = self
                .command(|mut connection| async move {
                    redis::cmd("SCAN")
                        .arg(at)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .arg("TYPE")
                        .arg("stream")
                        .query_async(&mut connection)
                        .await
                })
                .await?;
            let Value::Array(mut parts) = reply else {
                return Err(StreamError::Reply("SCAN did not answer an array".into()));
            };
            let found = parts.pop();
            cursor = parts
                .first()
                .and_then(value_string)
                .ok_or_else(|| StreamError::Reply("SCAN gave no cursor".into()))?;
            if let Some(Value::Array(found)) = found {
                keys.extend(found.iter().filter_map(value_string));
            }
            if cursor == "0" || keys.len() > limit {
                break;
            }
        }
        let mut keys: Vec<String> = keys.into_iter().collect();
        keys.sort();
        keys.truncate(limit + 1);
        Ok(keys)
    }

    /// Length and newest entry id of each stream of `keys`, in order.
    async fn lengths(&self, keys: &[String]) -> Result<Vec<(u64, Option<StreamId>)>, StreamError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(PIPELINE) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("XLEN").arg(key);
                pipe.cmd("XREVRANGE")
                    .arg(key)
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1);
            }
            let pipe = &pipe;
            let replies: Vec<Value> = self
                .command(|mut connection| async move { pipe.query_async(&mut connection).await })
                .await?;
            let mut replies = replies.into_iter();
            while let (Some(length), Some(newest)) = (replies.next(), replies.next()) {
                let length = match length {
                    Value::Int(n) => u64::try_from(n).unwrap_or(0),
                    _ => 0,
                };
                let last = match newest {
                    Value::Array(entries) => entries
                        .into_iter()
                        .next()
                        .and_then(|entry| take_field(entry, b"m").ok())
                        .map(|(id, _)| id),
                    _ => None,
                };
                out.push((length, last));
            }
        }
        Ok(out)
    }

    /// The document streams named by a task of the worker queue.
    async fn queued_streams(&self) -> Result<HashSet<String>, StreamError> {
        let reply: Value = self
            .command(|mut connection| async move {
                redis::cmd("XRANGE")
                    .arg(&self.worker_key)
                    .arg("-")
                    .arg("+")
                    .arg("COUNT")
                    .arg(TASKS_READ)
                    .query_async(&mut connection)
                    .await
            })
            .await?;
        let Value::Array(entries) = reply else {
            return Ok(HashSet::new());
        };
        Ok(entries
            .into_iter()
            .filter_map(|entry| take_field(entry, b"compact").ok()?.1)
            .filter_map(|key| String::from_utf8(key).ok())
            .collect())
    }
}

#[async_trait]
impl Survey for RedisStreams {
    async fn doc_streams(
        &self,
        limit: usize,
    ) -> Result<(Vec<DocStreamSummary>, bool), StreamError> {
        let mut keys = self.scan_doc_streams(limit).await?;
        let more = keys.len() > limit;
        keys.truncate(limit);
        let lengths = self.lengths(&keys).await?;
        let queued = self.queued_streams().await?;
        let summaries = keys
            .into_iter()
            .zip(lengths)
            .map(|(key, (length, last_id))| DocStreamSummary {
                task_pending: queued.contains(&key),
                key,
                length,
                last_id,
            })
            .collect();
        Ok((summaries, more))
    }
}

#[cfg(test)]
mod tests {
    use super::glob_escape;

    #[test]
    fn prefixes_match_literally() {
        assert_eq!(glob_escape("y"), "y");
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
