//! Splitting of one Yjs v1 update into several smaller v1 updates.
//!
//! A client's initial sync (sync step 2) carries the whole document as one update, and
//! a large document makes that one message larger than a WebSocket peer or a proxy may
//! accept. The splitter cuts such an update into a sequence of valid v1 updates, each
//! under a size bound, that a client applies one message at a time to reach the same
//! document.
//!
//! It works on the bytes alone, with the structural walk of [`super::update`]: every
//! struct is copied verbatim from the input, only the headers of each client's run of
//! structs (count, client, starting clock) are written anew. Structs that depend on
//! structs of another chunk are fine: Yjs and yrs keep them pending until what they
//! need arrives, and after the last chunk nothing of a complete input stays pending.

use super::codec::write_var_u64;
use super::update::{walk_update_v1, Reason, StructSpan};

/// An empty delete set: no clients. Ends every chunk but the last.
const EMPTY_DELETE_SET: [u8; 1] = [0];

/// Split the v1 update `update` into v1 updates of at most `bound` bytes each, to send
/// a large document as a sequence of messages that all fit under a size limit.
///
/// The chunks hold the input's structs in the input's order, each exactly once and
/// byte for byte, as runs of consecutive structs of one or more clients; a run that
/// starts in the middle of a client's structs starts at that struct's clock. Every
/// chunk has an empty delete set except the last, which carries the input's delete set
/// verbatim. Applying the chunks in order to an empty document gives the document that
/// applying `update` gives.
///
/// A chunk is larger than `bound` only when it holds a single struct that alone is
/// larger (a struct is never cut), or when it is the last chunk, holds no struct, and
/// the input's delete set alone is larger. An update that already fits in `bound` is
/// returned as the one chunk, unchanged.
///
/// Malformed input (anything the structural walk of [`super::update`] refuses) is an
/// error; the splitter never panics. It does not run yrs's decoder: callers pass
/// updates that already passed the full check.
pub fn split_update_v1(update: &[u8], bound: usize) -> Result<Vec<Vec<u8>>, Reason> {
    if update.len() <= bound {
        walk_update_v1(update, |_| {})?;
        return Ok(vec![update.to_vec()]);
    }
    let mut packer = Packer::new(update, bound);
    let delete_set = walk_update_v1(update, |span| packer.push(span))?;
    let delete_set = update.get(delete_set..).ok_or("delete set out of range")?;
    Ok(packer.finish(delete_set))
}

/// Consecutive structs of one client section of the input, bound for one chunk.
#[derive(Debug)]
struct Run {
    /// The input's client section holding the structs.
    section: u64,
    /// The client id of the section.
    client: u64,
    /// The clock of the run's first struct.
    clock: u64,
    /// How many structs the run holds.
    structs: u64,
    /// Offset of the run's first byte in the input.
    start: usize,
    /// Offset just past the run's last byte in the input.
    end: usize,
}

/// Fills chunks greedily, struct by struct, in input order, and writes each one out
/// when the next struct would make it larger than the bound.
struct Packer<'a> {
    /// The update being split.
    input: &'a [u8],
    /// The size no chunk may exceed, but for a single struct larger than it.
    bound: usize,
    /// The runs of the chunk being filled.
    runs: Vec<Run>,
    /// The encoded size of the chunk being filled, with an empty delete set.
    size: usize,
    /// The chunks written so far.
    chunks: Vec<Vec<u8>>,
}

/// The encoded size of a chunk with no struct and an empty delete set.
const EMPTY_CHUNK_SIZE: usize = 2;

impl<'a> Packer<'a> {
    /// A packer with no chunk yet, splitting `input` under `bound`.
    fn new(input: &'a [u8], bound: usize) -> Self {
        Packer {
            input,
            bound,
            runs: Vec::new(),
            size: EMPTY_CHUNK_SIZE,
            chunks: Vec::new(),
        }
    }

    /// Add the next struct of the input, first writing out the chunk being filled when
    /// the struct would not fit in it.
    fn push(&mut self, span: StructSpan) {
        let mut growth = self.growth(&span);
        if !self.runs.is_empty() && self.size.saturating_add(growth) > self.bound {
            self.write_chunk(&EMPTY_DELETE_SET);
            growth = self.growth(&span);
        }
        self.size = self.size.saturating_add(growth);
        match self.runs.last_mut() {
            Some(run) if run.section == span.section => {
                // Structs of one section are consecutive bytes of the input.
                run.structs += 1;
                run.end = span.end;
            }
            _ => self.runs.push(Run {
                section: span.section,
                client: span.client,
                clock: span.clock,
                structs: 1,
                start: span.start,
                end: span.end,
            }),
        }
    }

    /// How many bytes the chunk being filled grows by when `span` joins it: the
    /// struct's bytes, plus either a longer struct count of the last run or the header
    /// of a new run (and perhaps a longer run count).
    fn growth(&self, span: &StructSpan) -> usize {
        let bytes = span.end - span.start;
        match self.runs.last() {
            Some(run) if run.section == span.section => {
                bytes + var_len(run.structs + 1) - var_len(run.structs)
            }
            _ => {
                let runs = self.runs.len() as u64;
                bytes + var_len(1) + var_len(span.client) + var_len(span.clock) + var_len(runs + 1)
                    - var_len(runs)
            }
        }
    }

    /// Write out the chunk being filled, ending it with `delete_set`, and start an
    /// empty one.
    fn write_chunk(&mut self, delete_set: &[u8]) {
        let mut chunk = Vec::with_capacity(self.size - EMPTY_DELETE_SET.len() + delete_set.len());
        write_var_u64(&mut chunk, self.runs.len() as u64);
        for run in self.runs.drain(..) {
            write_var_u64(&mut chunk, run.structs);
            write_var_u64(&mut chunk, run.client);
            write_var_u64(&mut chunk, run.clock);
            chunk.extend_from_slice(&self.input[run.start..run.end]);
        }
        chunk.extend_from_slice(delete_set);
        self.chunks.push(chunk);
        self.size = EMPTY_CHUNK_SIZE;
    }

    /// Write out the last chunk with the input's `delete_set`, or, when the delete set
    /// would push it over the bound, write it out as is and the delete set as a chunk of
    /// its own. Returns every chunk.
    fn finish(mut self, delete_set: &[u8]) -> Vec<Vec<u8>> {
        let with_delete_set = self.size - EMPTY_DELETE_SET.len() + delete_set.len();
        // With no struct at all, the chunk is the delete set alone.
        if self.runs.is_empty()
            || with_delete_set <= self.bound
            || delete_set.len() <= EMPTY_DELETE_SET.len()
        {
            self.write_chunk(delete_set);
        } else {
            self.write_chunk(&EMPTY_DELETE_SET);
            self.write_chunk(delete_set);
        }
        self.chunks
    }
}

/// The length of `value` as a lib0 varuint, as [`write_var_u64`] writes it.
fn var_len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::Reader;
    use crate::protocol::update::check_update_v1;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    use serde_json::Value;
    use std::collections::HashMap;
    use std::sync::Arc;
    use yrs::types::text::YChange;
    use yrs::types::ToJson;
    use yrs::updates::decoder::Decode;
    use yrs::{
        Any, Array, ArrayPrelim, ClientID, Doc, GetString, Map, MapPrelim, OffsetKind, Options,
        Out, ReadTxn, StateVector, Text, TextPrelim, Transact, TransactionMut, Update, WriteTxn,
        Xml, XmlElementPrelim, XmlFragment, XmlOut, XmlTextPrelim,
    };

    /// An edit of a text-like type (root text, nested text, XML text), with positions
    /// counted in characters and embeds, so they never cut a character.
    #[derive(Debug, Clone)]
    enum TextEdit {
        Insert { pos: u32, text: String, bold: bool },
        Format { pos: u32, len: u32, italic: bool },
        Embed { pos: u32, value: Any },
        Delete { pos: u32, len: u32 },
    }

    /// One edit of a document's shared types: root map `m`, root array `a`, root text
    /// `t`, root XML fragment `x`, and the types nested in them.
    #[derive(Debug, Clone)]
    enum Op {
        MapSet {
            key: u8,
            value: Any,
        },
        MapNest {
            key: u8,
            kind: u8,
        },
        MapDelete {
            key: u8,
        },
        MapNested {
            key: u8,
            edit: TextEdit,
            value: Any,
        },
        ArrayInsert {
            pos: u32,
            values: Vec<Any>,
        },
        ArrayNest {
            pos: u32,
            kind: u8,
        },
        ArrayNested {
            index: u32,
            edit: TextEdit,
            value: Any,
        },
        ArrayDelete {
            pos: u32,
            len: u32,
        },
        Text(TextEdit),
        XmlElement {
            pos: u32,
            tag: u8,
        },
        XmlText {
            pos: u32,
            text: String,
        },
        XmlChild {
            index: u32,
            edit: TextEdit,
            attr: u8,
        },
        XmlDelete {
            pos: u32,
            len: u32,
        },
    }

    /// A step of a scenario: edits of one document in one transaction, or what one
    /// document sends another so that later edits reference other clients' items.
    #[derive(Debug, Clone)]
    enum Step {
        Edit { doc: usize, ops: Vec<Op> },
        Sync { from: usize, to: usize },
    }

    /// Documents of distinct clients edited and exchanged, then split under `bound`.
    #[derive(Debug, Clone)]
    struct Scenario {
        clients: Vec<u64>,
        steps: Vec<Step>,
        /// Split a yrs merge of every document's update rather than one document's.
        merged: bool,
        bound: usize,
    }

    /// Short strings with characters of one to four UTF-8 bytes, the four-byte one
    /// two UTF-16 units, so clocks counted in UTF-16 units differ from bytes and chars.
    fn text() -> impl Strategy<Value = String> {
        "[a-z é中😀]{1,12}"
    }

    /// Any values of every kind the walk reads, nested a little.
    fn value() -> impl Strategy<Value = Any> {
        let leaf = prop_oneof![
            Just(Any::Null),
            any::<bool>().prop_map(Any::Bool),
            (-1000i32..1000).prop_map(|n| Any::from(f64::from(n) / 4.0)),
            any::<i64>().prop_map(Any::from),
            text().prop_map(|s| Any::from(s.as_str())),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Any::Buffer(b.into())),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| Any::Array(v.into())),
                prop::collection::hash_map("[a-c]", inner, 0..3)
                    .prop_map(|m| Any::Map(Arc::new(m))),
            ]
        })
    }

    /// Random text edits.
    fn text_edit() -> impl Strategy<Value = TextEdit> {
        prop_oneof![
            4 => (any::<u32>(), text(), any::<bool>())
                .prop_map(|(pos, text, bold)| TextEdit::Insert { pos, text, bold }),
            2 => (any::<u32>(), 0u32..6, any::<bool>())
                .prop_map(|(pos, len, italic)| TextEdit::Format { pos, len, italic }),
            1 => (any::<u32>(), value()).prop_map(|(pos, value)| TextEdit::Embed { pos, value }),
            2 => (any::<u32>(), 0u32..6).prop_map(|(pos, len)| TextEdit::Delete { pos, len }),
        ]
    }

    /// Random edits of any shared type.
    fn op() -> impl Strategy<Value = Op> {
        let key = 0u8..6;
        prop_oneof![
            3 => (key.clone(), value()).prop_map(|(key, value)| Op::MapSet { key, value }),
            2 => (key.clone(), 0u8..3).prop_map(|(key, kind)| Op::MapNest { key, kind }),
            1 => key.clone().prop_map(|key| Op::MapDelete { key }),
            3 => (key, text_edit(), value())
                .prop_map(|(key, edit, value)| Op::MapNested { key, edit, value }),
            3 => (any::<u32>(), prop::collection::vec(value(), 1..4))
                .prop_map(|(pos, values)| Op::ArrayInsert { pos, values }),
            1 => (any::<u32>(), 0u8..3).prop_map(|(pos, kind)| Op::ArrayNest { pos, kind }),
            2 => (any::<u32>(), text_edit(), value())
                .prop_map(|(index, edit, value)| Op::ArrayNested { index, edit, value }),
            1 => (any::<u32>(), 0u32..4).prop_map(|(pos, len)| Op::ArrayDelete { pos, len }),
            5 => text_edit().prop_map(Op::Text),
            2 => (any::<u32>(), 0u8..3).prop_map(|(pos, tag)| Op::XmlElement { pos, tag }),
            2 => (any::<u32>(), text()).prop_map(|(pos, text)| Op::XmlText { pos, text }),
            3 => (any::<u32>(), text_edit(), 0u8..3)
                .prop_map(|(index, edit, attr)| Op::XmlChild { index, edit, attr }),
            1 => (any::<u32>(), 0u32..3).prop_map(|(pos, len)| Op::XmlDelete { pos, len }),
        ]
    }

    /// Random scenarios of two to four clients.
    fn scenario() -> impl Strategy<Value = Scenario> {
        prop::collection::hash_set(1u64..(1 << 53), 2..5).prop_flat_map(|clients| {
            let clients: Vec<u64> = clients.into_iter().collect();
            let n = clients.len();
            let step = prop_oneof![
                3 => (0..n, prop::collection::vec(op(), 1..8))
                    .prop_map(|(doc, ops)| Step::Edit { doc, ops }),
                1 => (0..n, 0..n).prop_map(|(from, to)| Step::Sync { from, to }),
            ];
            (
                Just(clients),
                prop::collection::vec(step, 1..40),
                any::<bool>(),
                // Mostly bounds well under the document's size.
                prop_oneof![3 => 20usize..200, 1 => 20usize..2000],
            )
                .prop_map(|(clients, steps, merged, bound)| Scenario {
                    clients,
                    steps,
                    merged,
                    bound,
                })
        })
    }

    /// A document of `client` whose text offsets count UTF-16 units, as Yjs does.
    fn client_doc(client: u64) -> Doc {
        let mut options = Options::with_client_id(ClientID::new(client));
        options.offset_kind = OffsetKind::Utf16;
        Doc::with_options(options)
    }

    /// The width in offset units of each character or embed of `text`.
    fn widths<T: Text, R: ReadTxn>(text: &T, txn: &R) -> Vec<u32> {
        let mut widths = Vec::new();
        for chunk in text.diff(txn, YChange::identity) {
            match chunk.insert {
                Out::Any(Any::String(s)) => {
                    widths.extend(s.chars().map(|c| c.len_utf16() as u32));
                }
                _ => widths.push(1),
            }
        }
        widths
    }

    /// The offset and length of `len` characters from character `pos` (both wrapped
    /// into the text).
    fn range(widths: &[u32], pos: u32, len: u32) -> (u32, u32) {
        let n = widths.len();
        let start = pos as usize % (n + 1);
        let end = (start + len as usize).min(n);
        let offset = widths[..start].iter().sum();
        (offset, widths[start..end].iter().sum())
    }

    /// Apply `edit` to a text-like type, wrapping its positions into the text.
    fn apply_text_edit<T: Text>(text: &T, txn: &mut TransactionMut, edit: &TextEdit) {
        let widths = widths(text, txn);
        assert_eq!(widths.iter().sum::<u32>(), text.len(txn));
        match edit {
            TextEdit::Insert { pos, text: s, bold } => {
                let (offset, _) = range(&widths, *pos, 0);
                if *bold {
                    let attrs = HashMap::from([(Arc::from("bold"), Any::Bool(true))]);
                    text.insert_with_attributes(txn, offset, s, attrs);
                } else {
                    text.insert(txn, offset, s);
                }
            }
            TextEdit::Format { pos, len, italic } => {
                let (offset, len) = range(&widths, *pos, *len);
                if len > 0 {
                    let value = if *italic { Any::Bool(true) } else { Any::Null };
                    text.format(
                        txn,
                        offset,
                        len,
                        HashMap::from([(Arc::from("italic"), value)]),
                    );
                }
            }
            TextEdit::Embed { pos, value } => {
                let (offset, _) = range(&widths, *pos, 0);
                // An embedded string reads back like text: wrap it.
                let value = match value {
                    Any::String(_) => Any::Array(vec![value.clone()].into()),
                    other => other.clone(),
                };
                text.insert_embed(txn, offset, value);
            }
            TextEdit::Delete { pos, len } => {
                let (offset, len) = range(&widths, *pos, *len);
                if len > 0 {
                    text.remove_range(txn, offset, len);
                }
            }
        }
    }

    /// `pos` wrapped into a sequence of `len` elements (the end included).
    fn wrap(pos: u32, len: u32) -> u32 {
        pos % (len + 1)
    }

    /// Put a new nested map (`kind` 0), array (1) or text (2) at `key` of `map`.
    fn nest_in_map(map: &yrs::MapRef, txn: &mut TransactionMut, key: String, kind: u8) {
        match kind {
            0 => drop(map.insert(txn, key, MapPrelim::default())),
            1 => drop(map.insert(txn, key, ArrayPrelim::default())),
            _ => drop(map.insert(txn, key, TextPrelim::new("nested"))),
        }
    }

    /// Apply `edit` or `value` to a nested shared type, whichever fits its kind.
    fn edit_nested(nested: Out, txn: &mut TransactionMut, edit: &TextEdit, value: &Any) {
        match nested {
            Out::YText(text) => apply_text_edit(&text, txn, edit),
            Out::YMap(map) => match edit {
                TextEdit::Delete { pos, .. } => drop(map.remove(txn, &format!("k{}", pos % 3))),
                TextEdit::Embed { pos, .. } => nest_in_map(&map, txn, format!("k{}", pos % 3), 1),
                _ => drop(map.insert(txn, format!("k{}", value_key(value)), value.clone())),
            },
            Out::YArray(array) => {
                let len = array.len(txn);
                match edit {
                    TextEdit::Delete { pos, len: n } => {
                        let start = wrap(*pos, len);
                        let n = (*n).min(len - start);
                        if n > 0 {
                            array.remove_range(txn, start, n);
                        }
                    }
                    TextEdit::Embed { pos, .. } => {
                        array.insert(txn, wrap(*pos, len), MapPrelim::default());
                    }
                    TextEdit::Insert { pos, .. } | TextEdit::Format { pos, .. } => {
                        array.insert(txn, wrap(*pos, len), value.clone());
                    }
                }
            }
            _ => {}
        }
    }

    /// A key of a nested map chosen by `value`, so sets of one key race.
    fn value_key(value: &Any) -> u8 {
        match value {
            Any::Null | Any::Undefined => 0,
            Any::Bool(_) | Any::Number(_) => 1,
            _ => 2,
        }
    }

    /// Apply `op` to the root types of the document of `txn`.
    fn apply_op(op: &Op, txn: &mut TransactionMut) {
        let m = txn.get_or_insert_map("m");
        let a = txn.get_or_insert_array("a");
        let t = txn.get_or_insert_text("t");
        let x = txn.get_or_insert_xml_fragment("x");
        match op {
            Op::MapSet { key, value } => drop(m.insert(txn, format!("k{key}"), value.clone())),
            Op::MapNest { key, kind } => nest_in_map(&m, txn, format!("k{key}"), *kind),
            Op::MapDelete { key } => drop(m.remove(txn, &format!("k{key}"))),
            Op::MapNested { key, edit, value } => {
                if let Some(nested) = m.get(txn, &format!("k{key}")) {
                    edit_nested(nested, txn, edit, value);
                }
            }
            Op::ArrayInsert { pos, values } => {
                let pos = wrap(*pos, a.len(txn));
                a.insert_range(txn, pos, values.clone());
            }
            Op::ArrayNest { pos, kind } => {
                let pos = wrap(*pos, a.len(txn));
                match kind {
                    0 => drop(a.insert(txn, pos, MapPrelim::default())),
                    1 => drop(a.insert(txn, pos, ArrayPrelim::default())),
                    _ => drop(a.insert(txn, pos, TextPrelim::new("in array"))),
                }
            }
            Op::ArrayNested { index, edit, value } => {
                let len = a.len(txn);
                if len > 0 {
                    if let Some(nested) = a.get(txn, index % len) {
                        edit_nested(nested, txn, edit, value);
                    }
                }
            }
            Op::ArrayDelete { pos, len } => {
                let total = a.len(txn);
                let start = wrap(*pos, total);
                let len = (*len).min(total - start);
                if len > 0 {
                    a.remove_range(txn, start, len);
                }
            }
            Op::Text(edit) => apply_text_edit(&t, txn, edit),
            Op::XmlElement { pos, tag } => {
                let pos = wrap(*pos, x.len(txn));
                let tag = ["p", "div", "span"][usize::from(*tag)];
                x.insert(txn, pos, XmlElementPrelim::empty(tag));
            }
            Op::XmlText { pos, text } => {
                let pos = wrap(*pos, x.len(txn));
                x.insert(txn, pos, XmlTextPrelim::new(text.as_str()));
            }
            Op::XmlChild { index, edit, attr } => {
                let len = x.len(txn);
                if len == 0 {
                    return;
                }
                match x.get(txn, index % len) {
                    Some(XmlOut::Element(element)) => match edit {
                        TextEdit::Insert { text, .. } => {
                            element.push_back(txn, XmlTextPrelim::new(text.as_str()));
                        }
                        TextEdit::Embed { .. } => {
                            element.push_back(txn, XmlElementPrelim::empty("b"));
                        }
                        _ => {
                            element.insert_attribute(txn, format!("a{attr}"), format!("v{index}"));
                        }
                    },
                    Some(XmlOut::Text(text)) => apply_text_edit(&text, txn, edit),
                    _ => {}
                }
            }
            Op::XmlDelete { pos, len } => {
                let total = x.len(txn);
                let start = wrap(*pos, total);
                let len = (*len).min(total - start);
                if len > 0 {
                    x.remove_range(txn, start, len);
                }
            }
        }
    }

    /// All of `doc` as one v1 update, as an initial sync sends it.
    fn full_update(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    /// Send `to` what `from` has that `to` lacks.
    fn sync(from: &Doc, to: &Doc) {
        let sv = to.transact().state_vector();
        let diff = from.transact().encode_diff_v1(&sv);
        let update = Update::decode_v1(&diff).unwrap();
        to.transact_mut().apply_update(update).unwrap();
    }

    /// Run `scenario`, returning the update to split: everything every client wrote.
    fn scenario_update(scenario: &Scenario) -> Vec<u8> {
        let docs: Vec<Doc> = scenario.clients.iter().map(|c| client_doc(*c)).collect();
        for step in &scenario.steps {
            match step {
                Step::Edit { doc, ops } => {
                    let mut txn = docs[*doc].transact_mut();
                    for op in ops {
                        apply_op(op, &mut txn);
                    }
                }
                Step::Sync { from, to } if from != to => sync(&docs[*from], &docs[*to]),
                Step::Sync { .. } => {}
            }
        }
        if scenario.merged {
            let updates: Vec<Vec<u8>> = docs.iter().map(full_update).collect();
            yrs::merge_updates_v1(updates.iter().map(Vec::as_slice)).unwrap()
        } else {
            for doc in &docs[1..] {
                sync(doc, &docs[0]);
            }
            full_update(&docs[0])
        }
    }

    /// A fresh document with `updates` applied in order, each in its own transaction
    /// as separate messages would be; also how many of them left something pending.
    fn apply_in_order<B: AsRef<[u8]>>(updates: &[B]) -> (Doc, usize) {
        let doc = Doc::new();
        let mut pending_after = 0;
        for update in updates {
            let mut txn = doc.transact_mut();
            txn.apply_update(Update::decode_v1(update.as_ref()).unwrap())
                .unwrap();
            if txn.has_missing_updates() {
                pending_after += 1;
            }
        }
        (doc, pending_after)
    }

    /// `text` as a Quill delta, the shape Yjs's `toDelta` gives.
    fn delta<T: Text, R: ReadTxn>(text: &T, txn: &R) -> Value {
        let chunks = text.diff(txn, YChange::identity).into_iter().map(|chunk| {
            let mut entry = serde_json::Map::new();
            entry.insert("insert".into(), json(&chunk.insert.to_json(txn)));
            if let Some(attributes) = chunk.attributes.filter(|a| !a.is_empty()) {
                let attributes: serde_json::Map<String, Value> = attributes
                    .iter()
                    .map(|(k, v)| (k.to_string(), json(v)))
                    .collect();
                entry.insert("attributes".into(), Value::Object(attributes));
            }
            Value::Object(entry)
        });
        Value::Array(chunks.collect())
    }

    /// `value` as serde JSON.
    fn json(value: &Any) -> Value {
        serde_json::to_value(value).unwrap()
    }

    /// An XML node as tag, attributes (unordered) and children, or a text's delta.
    fn xml<R: ReadTxn>(node: XmlOut, txn: &R) -> Value {
        match node {
            XmlOut::Element(element) => {
                let attrs: serde_json::Map<String, Value> = element
                    .attributes(txn)
                    .map(|(k, v)| (k.to_string(), json(&v.to_json(txn))))
                    .collect();
                let children: Vec<Value> = element.children(txn).map(|c| xml(c, txn)).collect();
                serde_json::json!({ "tag": element.tag().to_string(), "attrs": attrs, "children": children })
            }
            XmlOut::Text(text) => delta(&text, txn),
            XmlOut::Fragment(fragment) => {
                Value::Array(fragment.children(txn).map(|c| xml(c, txn)).collect())
            }
        }
    }

    /// The content of every root type, with the text's formatting and the XML's
    /// structure, numbers as floats; the same shape [`YJS_APPLY`] prints for Yjs.
    fn roots(doc: &Doc) -> Value {
        let m = doc.get_or_insert_map("m");
        let a = doc.get_or_insert_array("a");
        let t = doc.get_or_insert_text("t");
        let x = doc.get_or_insert_xml_fragment("x");
        let txn = doc.transact();
        normalize(serde_json::json!({
            "m": json(&m.to_json(&txn)),
            "a": json(&a.to_json(&txn)),
            "t": t.get_string(&txn),
            "d": delta(&t, &txn),
            "x": xml(XmlOut::Fragment(x), &txn),
        }))
    }

    /// Client, clock and length of each struct of `update`: its layout, which does
    /// not depend on the order yrs writes the entries of a map value in. Neighbouring
    /// GC structs count as one: the deleted items of two chunks become two GC blocks
    /// that yrs does not merge, where the same items of one update become one.
    fn layout(update: &[u8]) -> Vec<(u64, u64, usize, bool)> {
        let mut out: Vec<(u64, u64, usize, bool)> = Vec::new();
        walk_update_v1(update, |s| {
            let bytes = &update[s.start..s.end];
            // A GC struct: info byte 0, then its length in clock units.
            let gc =
                (bytes[0] == 0).then(|| Reader::new(&bytes[1..]).read_var_u64().unwrap() as usize);
            match (out.last_mut(), gc) {
                (Some((client, _, len, true)), Some(n)) if *client == s.client => *len += n,
                _ => out.push((s.client, s.clock, gc.unwrap_or(bytes.len()), gc.is_some())),
            }
        })
        .unwrap();
        out
    }

    /// The delete set of `update` as yrs reads it, as clock ranges with neighbours
    /// merged.
    fn delete_set(update: &[u8]) -> Vec<(u64, u32, u32)> {
        let update = Update::decode_v1(update).unwrap();
        let mut ranges: Vec<(u64, u32, u32)> = Vec::new();
        for (client, client_ranges) in update.delete_set().iter() {
            for range in client_ranges.iter() {
                match ranges.last_mut() {
                    Some(last) if last.0 == client.get() && last.2 >= range.start => {
                        last.2 = last.2.max(range.end);
                    }
                    _ => ranges.push((client.get(), range.start, range.end)),
                }
            }
        }
        ranges
    }

    /// Each struct of `update` as client, clock and bytes, in order.
    fn structs(update: &[u8]) -> Vec<(u64, u64, Vec<u8>)> {
        let mut out = Vec::new();
        walk_update_v1(update, |s| {
            out.push((s.client, s.clock, update[s.start..s.end].to_vec()))
        })
        .unwrap();
        out
    }

    /// Assert everything the splitter promises of `chunks`, split from `input` under
    /// `bound`, and that applying them gives the document `input` gives. Returns how
    /// many chunks left yrs with something pending.
    fn check_split(input: &[u8], chunks: &[Vec<u8>], bound: usize) -> usize {
        assert_eq!(check_update_v1(input), Ok(()));
        assert!(!chunks.is_empty());
        if input.len() <= bound {
            assert_eq!(chunks, [input.to_vec()]);
        }
        let input_ds = walk_update_v1(input, |_| {}).unwrap();
        let mut all = Vec::new();
        for (i, chunk) in chunks.iter().enumerate() {
            assert_eq!(check_update_v1(chunk), Ok(()), "chunk {i}");
            let own = structs(chunk);
            let last = i + 1 == chunks.len();
            assert!(
                chunk.len() <= bound || own.len() == 1 || (last && own.is_empty()),
                "chunk {i} of {} bytes and {} structs over {bound}",
                chunk.len(),
                own.len()
            );
            let ds = walk_update_v1(chunk, |_| {}).unwrap();
            if last {
                assert_eq!(chunk[ds..], input[input_ds..], "last delete set");
            } else {
                assert_eq!(chunk[ds..], [0], "delete set of chunk {i}");
                assert!(!own.is_empty(), "chunk {i} holds no struct");
            }
            all.extend(own);
        }
        assert_eq!(all, structs(input), "structs in order, each once");

        let (whole, whole_pending) = apply_in_order(&[input]);
        assert_eq!(whole_pending, 0);
        let (split, pending) = apply_in_order(chunks);
        assert!(!split.transact().has_missing_updates(), "pending after all");
        assert_eq!(
            split.transact().state_vector(),
            whole.transact().state_vector()
        );
        // yrs writes the entries of a map value in hash order, so the two documents'
        // updates are compared by layout, delete set and content, not byte for byte.
        let (split_update, whole_update) = (full_update(&split), full_update(&whole));
        assert_eq!(layout(&split_update), layout(&whole_update));
        assert_eq!(delete_set(&split_update), delete_set(&whole_update));
        assert_eq!(roots(&split), roots(&whole));
        pending
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 256,
            // A failure prints its shrunk input; no regression files in the tree.
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        /// Random multi-client documents split under random small bounds.
        #[test]
        fn random_documents_split_into_valid_chunks(scenario in scenario()) {
            let input = scenario_update(&scenario);
            let chunks = split_update_v1(&input, scenario.bound).unwrap();
            check_split(&input, &chunks, scenario.bound);
        }

        /// Damaged updates are refused exactly when the walk refuses them, and never
        /// make the splitter panic.
        #[test]
        fn damaged_updates_are_errors(
            scenario in scenario(),
            cut in any::<prop::sample::Index>(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            bound in 0usize..300,
        ) {
            let input = scenario_update(&scenario);
            let truncated = &input[..cut.index(input.len())];
            prop_assert!(split_update_v1(truncated, bound).is_err());
            let mut flipped = input.clone();
            flipped[at.index(input.len())] = byte;
            let walked = walk_update_v1(&flipped, |_| {}).is_ok();
            prop_assert_eq!(split_update_v1(&flipped, bound).is_ok(), walked);
        }
    }

    /// A document of two clients whose items sit between each other's, so that the
    /// structs of the client written first depend on structs written after them.
    fn interleaved_update() -> Vec<u8> {
        let a = client_doc(1);
        let b = client_doc(1 << 40);
        for round in 0..6 {
            let (this, other) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
            {
                let t = this.get_or_insert_text("t");
                let m = this.get_or_insert_map("m");
                let mut txn = this.transact_mut();
                let len = t.len(&txn);
                t.insert(&mut txn, len / 2, &format!("<{round}>"));
                m.insert(&mut txn, format!("k{}", round % 2), round);
            }
            sync(this, other);
        }
        {
            let t = a.get_or_insert_text("t");
            let mut txn = a.transact_mut();
            t.remove_range(&mut txn, 1, 4);
        }
        sync(&b, &a);
        full_update(&a)
    }

    /// Chunks that arrive before the structs they depend on stay pending in yrs
    /// until the chunk holding those structs, and nothing is pending after the last.
    #[test]
    fn dependencies_across_chunks_resolve_after_the_last() {
        let input = interleaved_update();
        // Every struct in its own chunk.
        let chunks = split_update_v1(&input, 0).unwrap();
        // Every struct in its own chunk, and the delete set in one more.
        assert_eq!(chunks.len(), structs(&input).len() + 1);
        let pending = check_split(&input, &chunks, 0);
        assert!(pending > 0, "some chunk arrives before what it depends on");
    }

    /// An update within the bound comes back byte for byte; malformed ones are errors.
    #[test]
    fn an_update_that_fits_is_returned_unchanged() {
        let input = interleaved_update();
        assert_eq!(split_update_v1(&input, input.len()).unwrap(), [input]);
        assert_eq!(split_update_v1(&[0, 0], 2).unwrap(), [vec![0, 0]]);
        // An empty update over a zero bound stays one chunk.
        assert_eq!(split_update_v1(&[0, 0], 0).unwrap(), [vec![0, 0]]);
        assert!(split_update_v1(&[0, 0, 0], 100).is_err());
        assert!(split_update_v1(&[], 100).is_err());
    }

    /// A struct is never cut, even when it alone is over the bound.
    #[test]
    fn a_struct_larger_than_the_bound_stays_whole() {
        let doc = client_doc(5);
        let t = doc.get_or_insert_text("t");
        {
            let mut txn = doc.transact_mut();
            t.insert(&mut txn, 0, &"x".repeat(1000));
            let m = txn.get_or_insert_map("m");
            m.insert(&mut txn, "small", 1);
        }
        let input = full_update(&doc);
        let chunks = split_update_v1(&input, 100).unwrap();
        check_split(&input, &chunks, 100);
        assert_eq!(chunks.len(), 2);
        assert!(chunks.iter().any(|c| c.len() > 1000));
    }

    /// A delete set that would push the last chunk over the bound comes in a chunk
    /// of its own after it.
    #[test]
    fn a_delete_set_over_the_bound_gets_a_chunk_of_its_own() {
        let doc = client_doc(9);
        let a = doc.get_or_insert_array("a");
        {
            let mut txn = doc.transact_mut();
            for i in 0..200 {
                a.push_back(&mut txn, i);
            }
        }
        // Every other element deleted: 100 ranges in the delete set.
        for i in (0..100).rev() {
            let mut txn = doc.transact_mut();
            a.remove(&mut txn, i * 2);
        }
        let input = full_update(&doc);
        let ds = walk_update_v1(&input, |_| {}).unwrap();
        assert!(input.len() - ds > 150);
        let chunks = split_update_v1(&input, 150).unwrap();
        check_split(&input, &chunks, 150);
        let last = chunks.last().unwrap();
        assert_eq!(last[0], 0, "no struct in the last chunk");
        assert_eq!(last[1..], input[ds..]);
    }

    /// A single-client map of 20 000 entries of 100 characters, about 2 MB.
    fn large_map_update() -> Vec<u8> {
        let doc = client_doc(42);
        let m = doc.get_or_insert_map("m");
        {
            let mut txn = doc.transact_mut();
            for i in 0..20_000u32 {
                let value = format!("{i:0>100}");
                m.insert(&mut txn, format!("key{i}"), value);
            }
        }
        full_update(&doc)
    }

    /// A 2 MB single-client document in chunks of at most 256 KiB.
    #[test]
    fn a_large_document_splits_under_256_kib() {
        let input = large_map_update();
        assert!(input.len() > 2_000_000, "{}", input.len());
        let bound = 256 * 1024;
        let chunks = split_update_v1(&input, bound).unwrap();
        for chunk in &chunks {
            assert!(chunk.len() <= bound, "{}", chunk.len());
        }
        // Filled greedily: no more chunks than the size needs, plus one.
        assert!(chunks.len() <= input.len() / bound + 2, "{}", chunks.len());
        assert_eq!(check_split(&input, &chunks, bound), 0);
    }

    /// The chunks applied in order by the real Yjs (`js-reference/node_modules/yjs`).
    /// For each case, it prints whether anything stayed pending, whether the document
    /// matches the one the whole update gives in Yjs, and the JSON of its root types
    /// and its state vector, compared here against yrs's.
    const YJS_APPLY: &str = r#"
const fs = require('fs')
const path = require('path')
const [yjsDir, dir] = process.argv.slice(-2)
const Y = require(yjsDir)
const read = (file) => new Uint8Array(fs.readFileSync(file))
const pending = (doc) => doc.store.pendingStructs !== null || doc.store.pendingDs !== null
const delta = (text) => text.toDelta().map((d) => d.attributes && Object.keys(d.attributes).length > 0 ? d : { insert: d.insert })
const xml = (node) => node instanceof Y.XmlElement
  ? { tag: node.nodeName, attrs: node.getAttributes(), children: node.toArray().map(xml) }
  : node instanceof Y.XmlText ? delta(node) : node.toArray().map(xml)
// Keys sorted: a map's keys come in the order its entries were integrated, which
// depends on the order the structs arrived in.
const canon = (v) => Array.isArray(v) ? v.map(canon)
  : v !== null && typeof v === 'object' ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canon(v[k])])) : v
const view = (doc) => canon(JSON.parse(JSON.stringify({
  m: doc.getMap('m').toJSON(),
  a: doc.getArray('a').toJSON(),
  t: doc.getText('t').toString(),
  d: delta(doc.getText('t')),
  x: xml(doc.getXmlFragment('x')),
}, (k, v) => typeof v === 'bigint' ? Number(v) : (v instanceof Uint8Array ? Array.from(v) : v))))
const results = []
for (const name of fs.readdirSync(dir).sort()) {
  const caseDir = path.join(dir, name)
  const whole = new Y.Doc()
  Y.applyUpdate(whole, read(path.join(caseDir, 'input')))
  const doc = new Y.Doc()
  let pendingAfter = 0
  const chunks = fs.readdirSync(caseDir).filter((f) => f.startsWith('chunk')).sort()
  for (const chunk of chunks) {
    Y.applyUpdate(doc, read(path.join(caseDir, chunk)))
    if (pending(doc)) pendingAfter++
  }
  const same = Buffer.compare(Buffer.from(Y.encodeStateAsUpdate(doc)), Buffer.from(Y.encodeStateAsUpdate(whole))) === 0
  results.push({
    name,
    chunks: chunks.length,
    pendingAfter,
    pendingAtEnd: pending(doc),
    wholePending: pending(whole),
    sameUpdate: same,
    sameView: JSON.stringify(view(doc)) === JSON.stringify(view(whole)),
    view: view(doc),
    sv: Array.from(Y.decodeStateVector(Y.encodeStateVector(doc)).entries()),
  })
}
console.log(JSON.stringify(results))
"#;

    /// Every number as a float, since yrs writes whole floats as integers and
    /// JavaScript does not tell them apart.
    fn normalize(value: Value) -> Value {
        match value {
            Value::Number(n) => n.as_f64().map_or(Value::Null, Value::from),
            Value::Array(items) => Value::Array(items.into_iter().map(normalize).collect()),
            Value::Object(entries) => Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k, normalize(v)))
                    .collect(),
            ),
            other => other,
        }
    }

    /// Yjs accepts the chunks of documents of every kind above and reaches the same
    /// document as yrs, with nothing pending; fails when Node.js or the packages of
    /// `js-reference` are missing.
    #[test]
    fn yjs_applies_the_chunks_in_order() {
        let mut cases: Vec<(Vec<u8>, usize)> = vec![
            (interleaved_update(), 0),
            (interleaved_update(), 40),
            (large_map_update(), 256 * 1024),
        ];
        let mut runner = TestRunner::deterministic();
        let strategy = scenario();
        for _ in 0..40 {
            let scenario = strategy.new_tree(&mut runner).unwrap().current();
            cases.push((scenario_update(&scenario), scenario.bound));
        }

        let dir = tempfile::tempdir().unwrap();
        let mut expected = Vec::new();
        for (i, (input, bound)) in cases.iter().enumerate() {
            let chunks = split_update_v1(input, *bound).unwrap();
            let yrs_pending = check_split(input, &chunks, *bound);
            let case = dir.path().join(format!("case{i:03}"));
            std::fs::create_dir(&case).unwrap();
            std::fs::write(case.join("input"), input).unwrap();
            for (j, chunk) in chunks.iter().enumerate() {
                std::fs::write(case.join(format!("chunk{j:05}")), chunk).unwrap();
            }
            let (doc, _) = apply_in_order(&[input]);
            let mut sv: Vec<(u64, u32)> = doc
                .transact()
                .state_vector()
                .iter()
                .map(|(client, clock)| (client.get(), *clock))
                .collect();
            sv.sort();
            expected.push((chunks.len(), yrs_pending, roots(&doc), sv));
        }

        let yjs = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../js-reference/node_modules/yjs"
        );
        let output = std::process::Command::new("node")
            .arg("-e")
            .arg(YJS_APPLY)
            .arg(yjs)
            .arg(dir.path())
            .output()
            .expect("node runs (install Node.js and run npm ci in js-reference)");
        assert!(
            output.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(results.len(), cases.len());
        let mut pending_cases = 0;
        for (result, (chunks, yrs_pending, roots, sv)) in results.iter().zip(expected) {
            let name = &result["name"];
            assert_eq!(result["chunks"], chunks, "{name}");
            assert_eq!(result["pendingAtEnd"], false, "{name}");
            assert_eq!(result["wholePending"], false, "{name}");
            assert_eq!(result["sameUpdate"], true, "{name}");
            assert_eq!(result["sameView"], true, "{name}");
            assert_eq!(normalize(result["view"].clone()), roots, "{name}");
            let js_sv: Vec<(u64, u32)> = serde_json::from_value(result["sv"].clone()).unwrap();
            let mut js_sv = js_sv;
            js_sv.sort();
            assert_eq!(js_sv, sv, "{name}");
            if result["pendingAfter"].as_u64().unwrap() > 0 {
                pending_cases += 1;
            }
            eprintln!(
                "{name}: {chunks} chunks, pending after {} in yjs, {yrs_pending} in yrs",
                result["pendingAfter"]
            );
        }
        // The interleaved document, one struct a chunk, has chunks arriving before
        // what they depend on.
        assert!(pending_cases > 0);
    }
}
