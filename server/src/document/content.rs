//! The root types of a document: their kinds, their content as JSON for
//! people (`to_json`) and as a canonical value for comparisons (`content`).

use serde_json::{json, Value};
use yrs::types::text::YChange;
use yrs::types::{Attrs, ToJson};
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact,
    XmlFragment, XmlFragmentRef, XmlOut,
};

use super::DocumentError;

/// What kind of shared type a root is. An update does not say: a root's kind
/// is inferred from what it holds (keys: a map; characters: a text; XML
/// elements or XML text: an XML fragment; anything else: an array). A root
/// holding nothing has no kind and is left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootKind {
    /// `Y.Map`.
    Map,
    /// `Y.Array`.
    Array,
    /// `Y.Text`.
    Text,
    /// `Y.XmlFragment`.
    XmlFragment,
}

/// A root of a document, by kind.
pub(super) enum Root {
    Map(MapRef),
    Array(ArrayRef),
    Text(TextRef),
    XmlFragment(XmlFragmentRef),
}

impl Root {
    pub(super) fn kind(&self) -> RootKind {
        match self {
            Root::Map(_) => RootKind::Map,
            Root::Array(_) => RootKind::Array,
            Root::Text(_) => RootKind::Text,
            Root::XmlFragment(_) => RootKind::XmlFragment,
        }
    }
}

/// The roots of `doc` with content, by name, kinds inferred.
pub(super) fn roots(doc: &Doc) -> Vec<(String, Root)> {
    let names: Vec<(String, Out)> = {
        let txn = doc.transact();
        txn.root_refs()
            .map(|(name, out)| (name.to_string(), out))
            .collect()
    };
    let mut roots = Vec::new();
    for (name, out) in names {
        let root = match out {
            Out::YMap(map) => Some(Root::Map(map)),
            Out::YArray(array) => Some(Root::Array(array)),
            Out::YText(text) => Some(Root::Text(text)),
            Out::YXmlFragment(xml) => Some(Root::XmlFragment(xml)),
            Out::UndefinedRef(branch) => infer(doc, branch),
            _ => None,
        };
        if let Some(root) = root {
            roots.push((name, root));
        }
    }
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    roots
}

fn infer(doc: &Doc, branch: yrs::branch::BranchPtr) -> Option<Root> {
    let txn = doc.transact();
    let map = MapRef::from(branch);
    if map.len(&txn) > 0 {
        return Some(Root::Map(map));
    }
    let text = TextRef::from(branch);
    if !text.get_string(&txn).is_empty() {
        return Some(Root::Text(text));
    }
    let array = ArrayRef::from(branch);
    if array.len(&txn) == 0 {
        return None;
    }
    let xml = array
        .iter(&txn)
        .any(|out| matches!(out, Out::YXmlElement(_) | Out::YXmlText(_)));
    Some(match xml {
        true => Root::XmlFragment(XmlFragmentRef::from(branch)),
        false => Root::Array(array),
    })
}

/// The kind of each root with content.
pub fn root_kinds(doc: &Doc) -> Vec<(String, RootKind)> {
    roots(doc)
        .into_iter()
        .map(|(name, root)| (name, root.kind()))
        .collect()
}

/// The document's root types as one JSON object, by root name: maps as
/// objects, arrays as arrays, text as strings, XML fragments as their XML
/// text; binary values as arrays of numbers.
pub fn to_json(doc: &Doc) -> Result<Value, DocumentError> {
    crate::protocol::guard_yrs("reader", || {
        let roots = roots(doc);
        let txn = doc.transact();
        let mut out = serde_json::Map::new();
        for (name, root) in roots {
            let value = match root {
                Root::Map(map) => any_json(&map.to_json(&txn)),
                Root::Array(array) => any_json(&array.to_json(&txn)),
                Root::Text(text) => Value::String(text.get_string(&txn)),
                Root::XmlFragment(xml) => Value::String(xml.get_string(&txn)),
            };
            out.insert(name, value);
        }
        Ok::<_, String>(Value::Object(out))
    })
    .map_err(DocumentError::Yrs)
}

/// The document's content as one canonical value: equal for documents with
/// equal content, whatever their history (text with its formatting, XML with
/// tags, attributes and children, nested types).
pub fn content(doc: &Doc) -> Value {
    let roots = roots(doc);
    let txn = doc.transact();
    let mut out = serde_json::Map::new();
    for (name, root) in roots {
        let value = match root {
            Root::Map(map) => map_content(&map, &txn),
            Root::Array(array) => array_content(&array, &txn),
            Root::Text(text) => json!({ "text": delta_content(&text, &txn) }),
            Root::XmlFragment(xml) => json!({ "fragment": children_content(&xml, &txn) }),
        };
        out.insert(name, value);
    }
    Value::Object(out)
}

pub(super) fn any_json(any: &Any) -> Value {
    serde_json::to_value(any).unwrap_or(Value::Null)
}

pub(super) fn attrs_json(attrs: &Option<Box<Attrs>>) -> Value {
    match attrs {
        None => Value::Null,
        Some(attrs) => {
            let mut map: Vec<(String, Value)> = attrs
                .iter()
                .map(|(k, v)| (k.to_string(), any_json(v)))
                .collect();
            map.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(map.into_iter().collect())
        }
    }
}

pub(super) fn map_content<T: ReadTxn>(map: &MapRef, txn: &T) -> Value {
    let mut entries: Vec<(String, Value)> = map
        .iter(txn)
        .map(|(k, v)| (k.to_string(), out_content(&v, txn)))
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    json!({ "map": Value::Object(entries.into_iter().collect()) })
}

pub(super) fn array_content<T: ReadTxn>(array: &ArrayRef, txn: &T) -> Value {
    let items: Vec<Value> = array.iter(txn).map(|v| out_content(&v, txn)).collect();
    json!({ "array": items })
}

/// A text's content as runs of `[insert, attributes]`, canonical: adjacent
/// strings with equal attributes are one run and no attributes are `null`,
/// however the edits that made the text cut it into items (a formatting
/// removed leaves separate items with the same attributes).
pub(super) fn delta_content<T: ReadTxn, X: Text>(text: &X, txn: &T) -> Value {
    let mut chunks: Vec<(Value, Value)> = Vec::new();
    for diff in text.diff(txn, YChange::identity) {
        let insert = out_content(&diff.insert, txn);
        let attrs = match attrs_json(&diff.attributes) {
            Value::Object(map) if map.is_empty() => Value::Null,
            attrs => attrs,
        };
        if let Some((last, last_attrs)) = chunks.last_mut() {
            if *last_attrs == attrs {
                if let (Some(Value::String(before)), Some(Value::String(more))) =
                    (last.get_mut("any"), insert.get("any"))
                {
                    before.push_str(more);
                    continue;
                }
            }
        }
        chunks.push((insert, attrs));
    }
    Value::Array(
        chunks
            .into_iter()
            .map(|(insert, attrs)| json!([insert, attrs]))
            .collect(),
    )
}

pub(super) fn children_content<T: ReadTxn, X: XmlFragment>(xml: &X, txn: &T) -> Value {
    Value::Array(xml.children(txn).map(|c| xml_content(&c, txn)).collect())
}

pub(super) fn xml_attrs<T: ReadTxn, X: yrs::types::xml::Xml>(xml: &X, txn: &T) -> Value {
    let mut attrs: Vec<(String, Value)> = xml
        .attributes(txn)
        .map(|(k, v)| (k.to_string(), out_content(&v, txn)))
        .collect();
    attrs.sort_by(|a, b| a.0.cmp(&b.0));
    Value::Object(attrs.into_iter().collect())
}

pub(super) fn xml_content<T: ReadTxn>(node: &XmlOut, txn: &T) -> Value {
    match node {
        XmlOut::Element(element) => json!({
            "element": element.tag().to_string(),
            "attrs": xml_attrs(element, txn),
            "children": children_content(element, txn),
        }),
        XmlOut::Text(text) => json!({
            "xmltext": delta_content(text, txn),
            "attrs": xml_attrs(text, txn),
        }),
        XmlOut::Fragment(fragment) => json!({ "fragment": children_content(fragment, txn) }),
    }
}

pub(super) fn out_content<T: ReadTxn>(out: &Out, txn: &T) -> Value {
    match out {
        Out::Any(any) => json!({ "any": any_json(any) }),
        Out::YText(text) => json!({ "text": delta_content(text, txn) }),
        Out::YArray(array) => array_content(array, txn),
        Out::YMap(map) => map_content(map, txn),
        Out::YXmlElement(element) => xml_content(&XmlOut::Element(element.clone()), txn),
        Out::YXmlFragment(fragment) => xml_content(&XmlOut::Fragment(fragment.clone()), txn),
        Out::YXmlText(text) => xml_content(&XmlOut::Text(text.clone()), txn),
        Out::YDoc(doc) => json!({ "doc": doc.guid().to_string() }),
        _ => Value::Null,
    }
}
