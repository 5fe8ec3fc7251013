//! The edit that makes a document's content equal to another's: computed from
//! the two contents (not by undoing operations), in one transaction, leaving
//! what is equal untouched: map entries, and the common start and end of
//! arrays and XML children.

use serde_json::Value;
use yrs::types::text::YChange;
use yrs::types::xml::Xml;
use yrs::types::Attrs;
use yrs::{
    Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, Out, Text, TextPrelim, Transact,
    Transaction, TransactionMut, XmlElementPrelim, XmlFragment, XmlOut, XmlTextPrelim,
};

use super::content::{self, out_content, xml_content, Root, RootKind};
use super::DocumentError;

/// Edit `current` so that its content equals `target`'s, and return that
/// edit as one v1 update (`None` when the contents are equal already). Roots
/// only `current` has are emptied (a root cannot be deleted); roots only
/// `target` has are created with the target's kind.
pub fn revert_to(current: &Doc, target: &Doc) -> Result<Option<Vec<u8>>, DocumentError> {
    crate::protocol::guard_yrs("rollback", || Ok::<_, String>(revert(current, target)))
        .map_err(DocumentError::Yrs)
}

fn revert(current: &Doc, target: &Doc) -> Option<Vec<u8>> {
    if content::content(current) == content::content(target) {
        return None;
    }
    let wanted = content::roots(target);
    let present = content::roots(current);
    // Root references of `current` with the kinds wanted, taken before its
    // transaction opens.
    let mut pairs: Vec<(Root, Option<Root>)> = Vec::new();
    for (name, root) in &present {
        if !wanted.iter().any(|(n, _)| n == name) {
            pairs.push((same_root(current, name, root.kind()), None));
        }
    }
    for (name, root) in wanted {
        pairs.push((same_root(current, &name, root.kind()), Some(root)));
    }
    let source = target.transact();
    let mut txn = current.transact_mut();
    for (into, from) in pairs {
        match (into, from) {
            (Root::Map(into), Some(Root::Map(from))) => sync_map(&into, &mut txn, &from, &source),
            (Root::Map(into), _) => {
                let keys: Vec<String> = into.keys(&txn).map(str::to_string).collect();
                for key in keys {
                    into.remove(&mut txn, &key);
                }
            }
            (Root::Array(into), Some(Root::Array(from))) => {
                sync_array(&into, &mut txn, &from, &source)
            }
            (Root::Array(into), _) => {
                let len = into.len(&txn);
                into.remove_range(&mut txn, 0, len);
            }
            (Root::Text(into), Some(Root::Text(from))) => {
                sync_text(&into, &mut txn, &from, &source)
            }
            (Root::Text(into), _) => {
                let len = into.len(&txn);
                into.remove_range(&mut txn, 0, len);
            }
            (Root::XmlFragment(into), Some(Root::XmlFragment(from))) => {
                sync_children(&into, &mut txn, &from, &source)
            }
            (Root::XmlFragment(into), _) => {
                let len = into.len(&txn);
                into.remove_range(&mut txn, 0, len);
            }
        }
    }
    Some(txn.encode_update_v1())
}

/// The root `name` of `doc` as `kind`.
fn same_root(doc: &Doc, name: &str, kind: RootKind) -> Root {
    match kind {
        RootKind::Map => Root::Map(doc.get_or_insert_map(name)),
        RootKind::Array => Root::Array(doc.get_or_insert_array(name)),
        RootKind::Text => Root::Text(doc.get_or_insert_text(name)),
        RootKind::XmlFragment => Root::XmlFragment(doc.get_or_insert_xml_fragment(name)),
    }
}

fn sync_map(into: &MapRef, txn: &mut TransactionMut, from: &MapRef, source: &Transaction) {
    let stale: Vec<String> = into
        .keys(txn)
        .filter(|key| from.get(source, key).is_none())
        .map(str::to_string)
        .collect();
    for key in stale {
        into.remove(txn, &key);
    }
    for (key, value) in from.iter(source) {
        let equal = into
            .get(txn, key)
            .is_some_and(|have| out_content(&have, txn) == out_content(&value, source));
        if !equal {
            set_in_map(into, txn, key, &value, source);
        }
    }
}

/// How many leading and trailing items two sequences share.
fn common_ends(have: &[Value], want: &[Value]) -> (usize, usize) {
    let prefix = have.iter().zip(want).take_while(|(a, b)| a == b).count();
    let room = have.len().min(want.len()) - prefix;
    let suffix = have
        .iter()
        .rev()
        .zip(want.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    (prefix, suffix)
}

fn sync_array(into: &ArrayRef, txn: &mut TransactionMut, from: &ArrayRef, source: &Transaction) {
    let have: Vec<Value> = into.iter(txn).map(|v| out_content(&v, txn)).collect();
    let items: Vec<Out> = from.iter(source).collect();
    let want: Vec<Value> = items.iter().map(|v| out_content(v, source)).collect();
    let (prefix, suffix) = common_ends(&have, &want);
    let removed = have.len() - prefix - suffix;
    if removed > 0 {
        into.remove_range(txn, prefix as u32, removed as u32);
    }
    for (i, item) in items[prefix..items.len() - suffix].iter().enumerate() {
        insert_in_array(into, txn, (prefix + i) as u32, item, source);
    }
}

fn sync_text<I: Text, F: Text>(into: &I, txn: &mut TransactionMut, from: &F, source: &Transaction) {
    if content::delta_content(into, txn) == content::delta_content(from, source) {
        return;
    }
    let len = into.len(txn);
    into.remove_range(txn, 0, len);
    fill_text(into, txn, from, source);
}

fn sync_children<I: XmlFragment, F: XmlFragment>(
    into: &I,
    txn: &mut TransactionMut,
    from: &F,
    source: &Transaction,
) {
    let have: Vec<Value> = into.children(txn).map(|c| xml_content(&c, txn)).collect();
    let nodes: Vec<XmlOut> = from.children(source).collect();
    let want: Vec<Value> = nodes.iter().map(|c| xml_content(c, source)).collect();
    let (prefix, suffix) = common_ends(&have, &want);
    let removed = have.len() - prefix - suffix;
    if removed > 0 {
        into.remove_range(txn, prefix as u32, removed as u32);
    }
    for (i, node) in nodes[prefix..nodes.len() - suffix].iter().enumerate() {
        insert_xml(into, txn, (prefix + i) as u32, node, source);
    }
}

fn set_in_map(
    into: &MapRef,
    txn: &mut TransactionMut,
    key: &str,
    value: &Out,
    source: &Transaction,
) {
    match value {
        Out::Any(any) => {
            into.insert(txn, key, any.clone());
        }
        Out::YMap(map) => {
            let made = into.insert(txn, key, MapPrelim::default());
            fill_map(&made, txn, map, source);
        }
        Out::YArray(array) => {
            let made = into.insert(txn, key, ArrayPrelim::default());
            fill_array(&made, txn, array, source);
        }
        Out::YText(text) => {
            let made = into.insert(txn, key, TextPrelim::new(""));
            fill_text(&made, txn, text, source);
        }
        Out::YXmlElement(element) => {
            let made = into.insert(txn, key, XmlElementPrelim::empty(element.tag().clone()));
            fill_attributes(&made, txn, element, source);
            fill_children(&made, txn, element, source);
        }
        Out::YXmlText(text) => {
            let made = into.insert(txn, key, XmlTextPrelim::new(""));
            fill_attributes(&made, txn, text, source);
            fill_text(&made, txn, text, source);
        }
        _ => {}
    }
}

fn insert_in_array(
    into: &ArrayRef,
    txn: &mut TransactionMut,
    index: u32,
    value: &Out,
    source: &Transaction,
) {
    match value {
        Out::Any(any) => {
            into.insert(txn, index, any.clone());
        }
        Out::YMap(map) => {
            let made = into.insert(txn, index, MapPrelim::default());
            fill_map(&made, txn, map, source);
        }
        Out::YArray(array) => {
            let made = into.insert(txn, index, ArrayPrelim::default());
            fill_array(&made, txn, array, source);
        }
        Out::YText(text) => {
            let made = into.insert(txn, index, TextPrelim::new(""));
            fill_text(&made, txn, text, source);
        }
        Out::YXmlElement(element) => {
            let made = into.insert(txn, index, XmlElementPrelim::empty(element.tag().clone()));
            fill_attributes(&made, txn, element, source);
            fill_children(&made, txn, element, source);
        }
        Out::YXmlText(text) => {
            let made = into.insert(txn, index, XmlTextPrelim::new(""));
            fill_attributes(&made, txn, text, source);
            fill_text(&made, txn, text, source);
        }
        _ => {}
    }
}

fn insert_xml<I: XmlFragment>(
    into: &I,
    txn: &mut TransactionMut,
    index: u32,
    node: &XmlOut,
    source: &Transaction,
) {
    match node {
        XmlOut::Element(element) => {
            let made = into.insert(txn, index, XmlElementPrelim::empty(element.tag().clone()));
            fill_attributes(&made, txn, element, source);
            fill_children(&made, txn, element, source);
        }
        XmlOut::Text(text) => {
            let made = into.insert(txn, index, XmlTextPrelim::new(""));
            fill_attributes(&made, txn, text, source);
            fill_text(&made, txn, text, source);
        }
        XmlOut::Fragment(_) => {}
    }
}

fn fill_map(into: &MapRef, txn: &mut TransactionMut, from: &MapRef, source: &Transaction) {
    for (key, value) in from.iter(source) {
        set_in_map(into, txn, key, &value, source);
    }
}

fn fill_array(into: &ArrayRef, txn: &mut TransactionMut, from: &ArrayRef, source: &Transaction) {
    for (i, value) in from.iter(source).enumerate() {
        insert_in_array(into, txn, i as u32, &value, source);
    }
}

fn fill_children<I: XmlFragment, F: XmlFragment>(
    into: &I,
    txn: &mut TransactionMut,
    from: &F,
    source: &Transaction,
) {
    for (i, node) in from.children(source).enumerate() {
        insert_xml(into, txn, i as u32, &node, source);
    }
}

fn fill_attributes<I: Xml, F: Xml>(
    into: &I,
    txn: &mut TransactionMut,
    from: &F,
    source: &Transaction,
) {
    let attributes: Vec<(String, Out)> = from
        .attributes(source)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (key, value) in attributes {
        if let Out::Any(any) = value {
            into.insert_attribute(txn, key, any);
        } else {
            into.insert_attribute(txn, key, value.to_string(source));
        }
    }
}

/// Append `from`'s chunks, with their formatting, to `into`. Text inserted
/// at the end takes on the formatting before it, so each chunk also ends the
/// formatting of the chunk before that it does not have.
fn fill_text<I: Text, F: Text>(into: &I, txn: &mut TransactionMut, from: &F, source: &Transaction) {
    let mut previous = Attrs::new();
    for diff in from.diff(source, YChange::identity) {
        let at = into.len(txn);
        let mut attrs = diff.attributes.map(|attrs| *attrs).unwrap_or_default();
        let wanted = attrs.clone();
        for key in previous.keys() {
            if !attrs.contains_key(key) {
                attrs.insert(key.clone(), yrs::Any::Null);
            }
        }
        match diff.insert {
            Out::Any(yrs::Any::String(chunk)) => {
                into.insert_with_attributes(txn, at, &chunk, attrs)
            }
            Out::Any(embed) => {
                into.insert_embed_with_attributes(txn, at, embed, attrs);
            }
            _ => {}
        }
        previous = wanted;
    }
}
