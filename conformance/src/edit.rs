//! Edit operations on the fixed document shape (text `t`, map `m`, array `a`),
//! applied the same way to a yrs doc (Rust clients) and, through the sidecar, to
//! a yjs doc (y-websocket clients): one transaction, indexes clamped into range.

use std::sync::Arc;

use serde_json::{json, Value};
use yrs::{Any, Array, ArrayRef, Doc, Map, MapRef, Text, TextRef, Transact};

/// One edit of the document.
#[derive(Debug, Clone, PartialEq)]
pub enum EditOp {
    /// Insert `text` (ASCII, so byte and UTF-16 offsets agree) into `t`.
    TextInsert {
        /// Position, clamped to the text's length.
        index: u32,
        /// What to insert.
        text: String,
    },
    /// Delete up to `len` characters of `t` from `index`.
    TextDelete {
        /// Position, clamped to the text's length.
        index: u32,
        /// How many, clamped to what follows `index`.
        len: u32,
    },
    /// Set `key` of `m` to a JSON value.
    MapSet {
        /// The key.
        key: String,
        /// Numbers, strings, booleans, null, or lists and objects of them.
        value: Value,
    },
    /// Delete `key` of `m`.
    MapDelete {
        /// The key.
        key: String,
    },
    /// Insert `values` into `a`.
    ArrayInsert {
        /// Position, clamped to the array's length.
        index: u32,
        /// The values to insert.
        values: Vec<Value>,
    },
    /// Delete up to `len` elements of `a` from `index`.
    ArrayDelete {
        /// Position, clamped to the array's length.
        index: u32,
        /// How many, clamped to what follows `index`.
        len: u32,
    },
}

impl EditOp {
    /// The op as the sidecar's `clientEdit` expects it.
    pub fn to_sidecar(&self) -> Value {
        match self {
            EditOp::TextInsert { index, text } => {
                json!({"type": "text-insert", "index": index, "text": text})
            }
            EditOp::TextDelete { index, len } => {
                json!({"type": "text-delete", "index": index, "len": len})
            }
            EditOp::MapSet { key, value } => json!({"type": "map-set", "key": key, "value": value}),
            EditOp::MapDelete { key } => json!({"type": "map-delete", "key": key}),
            EditOp::ArrayInsert { index, values } => {
                json!({"type": "array-insert", "index": index, "values": values})
            }
            EditOp::ArrayDelete { index, len } => {
                json!({"type": "array-delete", "index": index, "len": len})
            }
        }
    }
}

/// Apply `ops` to `doc` in one transaction, clamping like the sidecar does.
pub fn apply_ops(doc: &Doc, ops: &[EditOp]) {
    let text: TextRef = doc.get_or_insert_text("t");
    let map: MapRef = doc.get_or_insert_map("m");
    let array: ArrayRef = doc.get_or_insert_array("a");
    let mut txn = doc.transact_mut();
    for op in ops {
        match op {
            EditOp::TextInsert { index, text: chunk } => {
                let len = text.len(&txn);
                text.insert(&mut txn, (*index).min(len), chunk);
            }
            EditOp::TextDelete { index, len } => {
                let total = text.len(&txn);
                let index = (*index).min(total);
                let len = (*len).min(total - index);
                if len > 0 {
                    text.remove_range(&mut txn, index, len);
                }
            }
            EditOp::MapSet { key, value } => {
                map.insert(&mut txn, Arc::<str>::from(key.as_str()), to_any(value));
            }
            EditOp::MapDelete { key } => {
                map.remove(&mut txn, key);
            }
            EditOp::ArrayInsert { index, values } => {
                let len = array.len(&txn);
                let values: Vec<Any> = values.iter().map(to_any).collect();
                array.insert_range(&mut txn, (*index).min(len), values);
            }
            EditOp::ArrayDelete { index, len } => {
                let total = array.len(&txn);
                let index = (*index).min(total);
                let len = (*len).min(total - index);
                if len > 0 {
                    array.remove_range(&mut txn, index, len);
                }
            }
        }
    }
}

/// A JSON value as a yrs `Any` (numbers as doubles, as JavaScript has them).
pub fn to_any(value: &Value) -> Any {
    match value {
        Value::Null => Any::Null,
        Value::Bool(b) => Any::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Any::from(i),
            None => Any::from(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => Any::String(Arc::from(s.as_str())),
        Value::Array(items) => Any::Array(items.iter().map(to_any).collect::<Vec<_>>().into()),
        Value::Object(map) => Any::Map(Arc::new(
            map.iter().map(|(k, v)| (k.clone(), to_any(v))).collect(),
        )),
    }
}
