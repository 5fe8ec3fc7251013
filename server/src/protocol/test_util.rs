//! Helpers shared by the protocol tests: fixture loading and document content.

use serde_json::Value;
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, GetString, ReadTxn, Transact, Update};

/// `fixtures/yredis-0.1.6/<name>` parsed as JSON.
pub(crate) fn fixture(name: &str) -> Value {
    let text = match name {
        "protocol.json" => include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/yredis-0.1.6/protocol.json"
        )),
        "session.json" => include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../fixtures/yredis-0.1.6/session.json"
        )),
        other => panic!("unknown fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

/// Bytes of a fixture hex string.
pub(crate) fn unhex(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

/// What a document holds in the fixture's shared types: text `t`, map `m`, array `a`.
#[derive(Debug, PartialEq)]
pub(crate) struct Content {
    pub text: String,
    pub map: Value,
    pub array: Value,
}

/// The content of `doc`.
pub(crate) fn content(doc: &Doc) -> Content {
    let t = doc.get_or_insert_text("t");
    let m = doc.get_or_insert_map("m");
    let a = doc.get_or_insert_array("a");
    let txn = doc.transact();
    Content {
        text: t.get_string(&txn),
        map: serde_json::to_value(m.to_json(&txn)).unwrap(),
        array: serde_json::to_value(a.to_json(&txn)).unwrap(),
    }
}

/// A fresh document with the given v1 updates applied, asserting nothing stays pending.
pub(crate) fn doc_from_v1<B: AsRef<[u8]>>(updates: &[B]) -> Doc {
    let doc = Doc::new();
    {
        let mut txn = doc.transact_mut();
        for u in updates {
            txn.apply_update(Update::decode_v1(u.as_ref()).unwrap())
                .unwrap();
        }
    }
    assert!(doc.transact().store().pending_update().is_none());
    doc
}
