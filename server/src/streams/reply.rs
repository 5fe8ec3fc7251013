//! Reading Redis replies: stream entries (XREAD, XRANGE, XAUTOCLAIM) in RESP2
//! or RESP3 shape, shared by the single-Redis and the cluster streams, with
//! the message bytes moved out of the reply rather than copied.

use std::sync::Arc;

use bytes::Bytes;
use redis::Value;

use super::{StreamBatch, StreamEntry, StreamError, StreamId, StreamPage};

/// Text of a bulk or simple string reply (ids and cursors, never messages).
pub(super) fn value_string(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok(),
        Value::SimpleString(text) => Some(text.clone()),
        _ => None,
    }
}

/// The bytes of a bulk or simple string reply, moved out of it.
fn into_bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(bytes) => Some(bytes),
        Value::SimpleString(text) => Some(text.into_bytes()),
        _ => None,
    }
}

/// The one reader of stream entries, for XREAD, XRANGE and XAUTOCLAIM replies:
/// `[id, [field, value, ...]]` (RESP2) or `[id, {field: value}]` (RESP3) → the
/// id and the value of field `name` (`None` when the entry has none), moved
/// out of the reply so that a message's bytes are never copied. An entry whose
/// fields cannot be read is an error carrying its id when that could be read.
pub(super) fn take_field(
    entry: Value,
    name: &[u8],
) -> Result<(StreamId, Option<Vec<u8>>), Option<StreamId>> {
    let Value::Array(parts) = entry else {
        return Err(None);
    };
    let mut parts = parts.into_iter();
    let id: StreamId = parts
        .next()
        .and_then(|id| value_string(&id)?.parse().ok())
        .ok_or(None)?;
    let is_name = |field: &Value| match field {
        Value::BulkString(bytes) => bytes == name,
        Value::SimpleString(text) => text.as_bytes() == name,
        _ => false,
    };
    let value = match parts.next() {
        Some(Value::Array(flat)) => {
            let mut flat = flat.into_iter();
            std::iter::from_fn(|| Some((flat.next()?, flat.next()?)))
                .find(|(field, _)| is_name(field))
        }
        Some(Value::Map(pairs)) => pairs.into_iter().find(|(field, _)| is_name(field)),
        _ => return Err(Some(id)),
    };
    Ok((id, value.and_then(|(_, value)| into_bytes(value))))
}

/// Entries of one stream; entries without an `m` field are skipped with a log line.
pub(super) fn parse_page(stream: &str, reply: Value) -> StreamPage {
    let Value::Array(entries) = reply else {
        return StreamPage::default();
    };
    let mut out = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        match take_field(entry, b"m") {
            Ok((id, message)) => {
                last = Some(id);
                match message {
                    Some(message) => out.push(StreamEntry {
                        id,
                        message: Bytes::from(message),
                    }),
                    None => {
                        tracing::warn!(stream = %crate::log_text::bounded(stream), entry = %id, "stream entry without an `m` field, skipped")
                    }
                }
            }
            Err(id) => {
                last = id.or(last);
                tracing::warn!(stream = %crate::log_text::bounded(stream), "unreadable stream entry, skipped")
            }
        }
    }
    StreamPage { entries: out, last }
}

/// An XREAD reply (RESP2 array or RESP3 map) → batches per stream.
pub(super) fn parse_read_reply(reply: Value) -> Vec<StreamBatch> {
    let pairs: Vec<(Value, Value)> = match reply {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|item| match item {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let entries = pair.pop()?;
                    let key = pair.pop()?;
                    Some((key, entries))
                }
                _ => None,
            })
            .collect(),
        Value::Map(pairs) => pairs,
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .filter_map(|(key, entries)| {
            let stream: Arc<str> = String::from_utf8(into_bytes(key)?).ok()?.into();
            let entries = parse_page(&stream, entries).entries;
            Some(StreamBatch { stream, entries })
        })
        .collect()
}

/// A claimed worker task: its id, and the stream key its `compact` field names
/// (`None` when it names none, or no text).
pub(super) type ClaimedTask = (StreamId, Option<String>);

/// An XAUTOCLAIM reply → the next cursor and the claimed tasks. Entries
/// deleted meanwhile (no fields) are left out.
pub(super) fn parse_claim_reply(reply: Value) -> Result<(String, Vec<ClaimedTask>), StreamError> {
    let Value::Array(parts) = reply else {
        return Err(StreamError::Reply("XAUTOCLAIM: not an array".into()));
    };
    let cursor = parts
        .first()
        .and_then(value_string)
        .unwrap_or_else(|| "0-0".to_string());
    let mut tasks = Vec::new();
    if let Some(Value::Array(entries)) = parts.into_iter().nth(1) {
        for entry in entries {
            if let Ok((id, stream)) = take_field(entry, b"compact") {
                tasks.push((id, stream.and_then(|key| String::from_utf8(key).ok())));
            }
        }
    }
    Ok((cursor, tasks))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(bytes: &[u8]) -> Value {
        Value::BulkString(bytes.to_vec())
    }

    #[test]
    fn entries_of_resp2_and_resp3_replies() {
        let resp2 = Value::Array(vec![
            Value::Array(vec![
                bulk(b"1-0"),
                Value::Array(vec![bulk(b"m"), bulk(b"a")]),
            ]),
            Value::Array(vec![
                bulk(b"2-0"),
                Value::Array(vec![bulk(b"x"), bulk(b"b")]),
            ]),
            Value::Array(vec![bulk(b"3-0"), Value::Nil]),
            Value::Nil,
        ]);
        let page = parse_page("s", resp2);
        assert_eq!(page.entries.len(), 1);
        assert_eq!(page.entries[0].message, Bytes::from_static(b"a"));
        assert_eq!(page.last, Some(StreamId { ms: 3, seq: 0 }));

        let resp3 = Value::Map(vec![(
            bulk(b"y:room:r:index"),
            Value::Array(vec![Value::Array(vec![
                bulk(b"4-1"),
                Value::Map(vec![(bulk(b"m"), bulk(b"c"))]),
            ])]),
        )]);
        let batches = parse_read_reply(resp3);
        assert_eq!(&*batches[0].stream, "y:room:r:index");
        assert_eq!(batches[0].entries[0].id, StreamId { ms: 4, seq: 1 });
        assert_eq!(batches[0].entries[0].message, Bytes::from_static(b"c"));
    }

    #[test]
    fn task_entries() {
        let task = Value::Array(vec![
            bulk(b"5-0"),
            Value::Array(vec![bulk(b"compact"), bulk(b"k")]),
        ]);
        assert_eq!(
            take_field(task, b"compact"),
            Ok((StreamId { ms: 5, seq: 0 }, Some(b"k".to_vec())))
        );
        let deleted = Value::Array(vec![bulk(b"6-0"), Value::Nil]);
        assert_eq!(
            take_field(deleted, b"compact"),
            Err(Some(StreamId { ms: 6, seq: 0 }))
        );
    }
}
