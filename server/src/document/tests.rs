//! Rollback by content: unit cases per type, and a property test over random
//! edit sequences of several clients.

use proptest::prelude::*;
use yrs::types::xml::Xml;
use yrs::types::Attrs;
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, Doc, Map, MapPrelim, ReadTxn, StateVector, Text, Transact, Update, WriteTxn,
    XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

use super::{content, revert_to, to_json};

fn state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// A document made of v1 updates, as the server builds one (roots untyped).
fn doc_of(updates: &[&[u8]]) -> Doc {
    let doc = Doc::new();
    let mut txn = doc.transact_mut();
    for update in updates {
        txn.apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }
    drop(txn);
    doc
}

/// Roll the state `now` back to `then`, the way the API does, and return the
/// content a client holding `now` sees once it applies the rollback, plus
/// the new state.
fn roll(now: &[u8], then: &[u8]) -> (serde_json::Value, Vec<u8>) {
    let current = doc_of(&[now]);
    let target = doc_of(&[then]);
    let edit = revert_to(&current, &target).unwrap();
    let client = doc_of(&[now]);
    if let Some(edit) = &edit {
        client
            .transact_mut()
            .apply_update(Update::decode_v1(edit).unwrap())
            .unwrap();
    }
    (content(&doc_of(&[&state(&client)])), state(&client))
}

fn bold() -> Attrs {
    Attrs::from([("bold".into(), Any::Bool(true))])
}

#[test]
fn maps_arrays_text_and_xml_roll_back_and_forth() {
    let doc = Doc::with_client_id(1);
    let (m, a, t, x) = (
        doc.get_or_insert_map("m"),
        doc.get_or_insert_array("a"),
        doc.get_or_insert_text("t"),
        doc.get_or_insert_xml_fragment("x"),
    );
    {
        let mut txn = doc.transact_mut();
        m.insert(&mut txn, "k", 1);
        let inner = m.insert(&mut txn, "inner", MapPrelim::default());
        inner.insert(&mut txn, "deep", "yes");
        a.push_back(&mut txn, "one");
        t.insert(&mut txn, 0, "hello");
        t.format(&mut txn, 0, 2, bold());
        let p = x.push_back(&mut txn, XmlElementPrelim::empty("p"));
        p.insert_attribute(&mut txn, "class", "lead");
        p.push_back(&mut txn, XmlTextPrelim::new("para"));
    }
    let v1 = state(&doc);
    {
        let mut txn = doc.transact_mut();
        m.insert(&mut txn, "k", 2);
        m.remove(&mut txn, "inner");
        m.insert(&mut txn, "new", Any::Null);
        a.push_back(&mut txn, "two");
        a.remove(&mut txn, 0);
        t.insert(&mut txn, 5, " world");
        t.format(&mut txn, 0, 5, Attrs::from([("bold".into(), Any::Null)]));
        x.push_back(&mut txn, XmlElementPrelim::empty("h1"));
        let other = txn.get_or_insert_text("other");
        other.insert(&mut txn, 0, "only later");
    }
    let v2 = state(&doc);
    let (seen, after) = roll(&v2, &v1);
    assert_eq!(seen, content(&doc_of(&[&v1])), "back to v1");
    let json = to_json(&doc_of(&[&after])).unwrap();
    assert_eq!(json["t"], "hello");
    assert_eq!(json["m"]["inner"]["deep"], "yes");
    assert_eq!(json["x"], "<p class=\"lead\">para</p>");
    let (seen, _) = roll(&after, &v2);
    assert_eq!(seen, content(&doc_of(&[&v2])), "the rollback rolled back");
}

#[test]
fn equal_contents_need_no_edit_and_untouched_parts_keep_concurrent_edits() {
    let doc = Doc::with_client_id(1);
    let (m, a) = (doc.get_or_insert_map("m"), doc.get_or_insert_array("a"));
    {
        let mut txn = doc.transact_mut();
        m.insert(&mut txn, "kept", "x");
        a.push_back(&mut txn, 1);
    }
    let v1 = state(&doc);
    assert!(revert_to(&doc_of(&[&v1]), &doc_of(&[&v1]))
        .unwrap()
        .is_none());
    m.insert(&mut doc.transact_mut(), "later", "y");
    let v2 = state(&doc);
    let edit = revert_to(&doc_of(&[&v2]), &doc_of(&[&v1]))
        .unwrap()
        .unwrap();
    // Meanwhile another client changed the entry the rollback leaves alone.
    let other = doc_of(&[&v2]);
    other
        .get_or_insert_map("m")
        .insert(&mut other.transact_mut(), "kept", "changed meanwhile");
    other
        .transact_mut()
        .apply_update(Update::decode_v1(&edit).unwrap())
        .unwrap();
    let json = to_json(&other).unwrap();
    assert_eq!(json["m"]["kept"], "changed meanwhile");
    assert!(json["m"].get("later").is_none());
}

/// One random edit.
#[derive(Debug, Clone)]
enum Op {
    MapSet(u8, u32),
    MapNested(u8, u32),
    MapRemove(u8),
    ArrayInsert(u8, u32),
    ArrayRemove(u8),
    TextInsert(u8, String),
    TextDelete(u8, u8),
    TextBold(u8, u8, bool),
    XmlElement(u8, u8),
    XmlText(u8, String),
    XmlAttribute(u8, u8),
    XmlRemove(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, any::<u32>()).prop_map(|(k, v)| Op::MapSet(k, v)),
        (0..4u8, any::<u32>()).prop_map(|(k, v)| Op::MapNested(k, v)),
        (0..4u8).prop_map(Op::MapRemove),
        (any::<u8>(), any::<u32>()).prop_map(|(i, v)| Op::ArrayInsert(i, v)),
        any::<u8>().prop_map(Op::ArrayRemove),
        (any::<u8>(), "[a-z ]{1,6}").prop_map(|(i, s)| Op::TextInsert(i, s)),
        (any::<u8>(), 1..4u8).prop_map(|(i, n)| Op::TextDelete(i, n)),
        (any::<u8>(), 1..4u8, any::<bool>()).prop_map(|(i, n, b)| Op::TextBold(i, n, b)),
        (any::<u8>(), 0..3u8).prop_map(|(i, tag)| Op::XmlElement(i, tag)),
        (any::<u8>(), "[a-z]{1,5}").prop_map(|(i, s)| Op::XmlText(i, s)),
        (any::<u8>(), 0..3u8).prop_map(|(i, v)| Op::XmlAttribute(i, v)),
        any::<u8>().prop_map(Op::XmlRemove),
    ]
}

fn apply(doc: &Doc, op: &Op) {
    let m = doc.get_or_insert_map("m");
    let a = doc.get_or_insert_array("a");
    let t = doc.get_or_insert_text("t");
    let x = doc.get_or_insert_xml_fragment("x");
    let mut txn = doc.transact_mut();
    let at = |i: u8, len: u32| {
        if len == 0 {
            0
        } else {
            u32::from(i) % (len + 1)
        }
    };
    match op {
        Op::MapSet(k, v) => {
            m.insert(&mut txn, format!("k{k}"), *v);
        }
        Op::MapNested(k, v) => {
            let inner = m.insert(&mut txn, format!("k{k}"), MapPrelim::default());
            inner.insert(&mut txn, "v", *v);
        }
        Op::MapRemove(k) => {
            m.remove(&mut txn, &format!("k{k}"));
        }
        Op::ArrayInsert(i, v) => {
            let len = a.len(&txn);
            a.insert(&mut txn, at(*i, len), *v);
        }
        Op::ArrayRemove(i) => {
            let len = a.len(&txn);
            if len > 0 {
                a.remove(&mut txn, u32::from(*i) % len);
            }
        }
        Op::TextInsert(i, s) => {
            let len = t.len(&txn);
            t.insert(&mut txn, at(*i, len), s);
        }
        Op::TextDelete(i, n) => {
            let len = t.len(&txn);
            if len > 0 {
                let from = u32::from(*i) % len;
                t.remove_range(&mut txn, from, u32::from(*n).min(len - from));
            }
        }
        Op::TextBold(i, n, on) => {
            let len = t.len(&txn);
            if len > 0 {
                let from = u32::from(*i) % len;
                let value = if *on { Any::Bool(true) } else { Any::Null };
                t.format(
                    &mut txn,
                    from,
                    u32::from(*n).min(len - from),
                    Attrs::from([("bold".into(), value)]),
                );
            }
        }
        Op::XmlElement(i, tag) => {
            let len = x.len(&txn);
            let tag = ["p", "h1", "li"][usize::from(*tag)];
            let element = x.insert(&mut txn, at(*i, len), XmlElementPrelim::empty(tag));
            element.push_back(&mut txn, XmlTextPrelim::new("in"));
        }
        Op::XmlText(i, s) => {
            let len = x.len(&txn);
            x.insert(&mut txn, at(*i, len), XmlTextPrelim::new(s.as_str()));
        }
        Op::XmlAttribute(i, v) => {
            let len = x.len(&txn);
            if len > 0 {
                if let Some(yrs::XmlOut::Element(element)) = x.get(&txn, u32::from(*i) % len) {
                    element.insert_attribute(&mut txn, "data", format!("v{v}"));
                }
            }
        }
        Op::XmlRemove(i) => {
            let len = x.len(&txn);
            if len > 0 {
                x.remove_range(&mut txn, u32::from(*i) % len, 1);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Three clients edit, syncing after each step; the state after each
    /// step is a version. Rolling back to any version gives its content on a
    /// client that applies the rollback; rolling that back restores the
    /// content before it.
    #[test]
    fn a_rollback_to_any_version_restores_its_content(
        steps in proptest::collection::vec((0..3usize, op()), 1..25),
        pick in any::<prop::sample::Index>(),
    ) {
        let clients: Vec<Doc> = (1..=3).map(Doc::with_client_id).collect();
        let mut versions = Vec::new();
        for (who, op) in &steps {
            apply(&clients[*who], op);
            let update = state(&clients[*who]);
            for other in &clients {
                other.transact_mut().apply_update(Update::decode_v1(&update).unwrap()).unwrap();
            }
            versions.push(state(&clients[0]));
        }
        let now = state(&clients[0]);
        let then = &versions[pick.index(versions.len())];
        let (seen, after) = roll(&now, then);
        prop_assert_eq!(seen, content(&doc_of(&[then])));
        let (seen, _) = roll(&after, &now);
        prop_assert_eq!(seen, content(&doc_of(&[&now])));
    }
}
