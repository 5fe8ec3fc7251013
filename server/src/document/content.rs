//! The root types of a document as JSON.

use yrs::Doc;

use super::DocumentError;

/// What kind of shared type a root is. An update does not say: a root's kind
/// is inferred from what it holds (keys: a map; characters and formatting: a
/// text; XML elements or XML text: an XML fragment; anything else: an array).
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

/// The document's root types as one JSON object, by root name.
pub fn to_json(doc: &Doc) -> Result<serde_json::Value, DocumentError> {
    let _ = doc;
    Err(DocumentError::Yrs("not implemented".into()))
}
