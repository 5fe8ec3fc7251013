//! A document's content, as people and applications see it: its root types as
//! JSON (`content.rs`), and the edit that makes a document's content equal to
//! an earlier version's (`rollback.rs`), on yrs documents, without IO.

mod content;
mod rollback;

pub use content::{content, root_kinds, to_json, RootKind};
pub use rollback::revert_to;

/// Why a document's content could not be read or changed.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    /// yrs failed (or panicked) on the document.
    #[error("document cannot be read: {0}")]
    Yrs(String),
}

#[cfg(test)]
mod tests;
