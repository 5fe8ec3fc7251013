//! Document content as comparable JSON: `{t, m, a}` of a yrs doc, with numbers
//! normalised (yjs and yrs may encode the same JavaScript number as an integer
//! or a double, which JSON readers then tell apart).

use anyhow::{Context, Result};
use serde_json::Value;
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

/// Every number as a double, recursively, so `42` and `42.0` compare equal.
pub fn normalize(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| value.clone()),
        Value::Array(items) => Value::Array(items.iter().map(normalize).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize(v))).collect())
        }
        other => other.clone(),
    }
}

/// The normalised content of a yrs doc.
pub fn of_doc(doc: &Doc) -> Value {
    normalize(&testkit::doc_content(doc))
}

/// A fresh yrs doc with these v1 updates applied in order.
pub fn doc_from_updates(updates: &[Vec<u8>]) -> Result<Doc> {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for update in updates {
            let update = Update::decode_v1(update).context("decoding a v1 update")?;
            txn.apply_update(update).context("applying a v1 update")?;
        }
    }
    Ok(doc)
}

/// The normalised content of a fresh yrs doc with these v1 updates applied.
pub fn of_updates(updates: &[Vec<u8>]) -> Result<Value> {
    Ok(of_doc(&doc_from_updates(updates)?))
}

/// The whole state of a doc as one v1 update (to hand it to yjs).
pub fn state_v1(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A v1 update's bytes are readable (decode only).
pub fn is_update_v1(bytes: &[u8]) -> bool {
    Update::decode_v1(bytes).is_ok()
}
