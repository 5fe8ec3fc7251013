//! The edit that makes a document's content equal to another's.

use yrs::Doc;

use super::DocumentError;

/// Edit `current` so that its content equals `target`'s, and return that
/// edit as one v1 update (`None` when the contents are equal already).
pub fn revert_to(current: &Doc, target: &Doc) -> Result<Option<Vec<u8>>, DocumentError> {
    let _ = (current, target);
    Err(DocumentError::Yrs("not implemented".into()))
}
