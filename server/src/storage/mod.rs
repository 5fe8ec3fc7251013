//! Document storage: where the worker puts compacted documents.
//!
//! Every backend stores, per (room, docid), a set of items. Each item is a full or
//! partial document state encoded as a Yjs **v2** update, named by an opaque
//! reference. Loading merges all items; compaction stores one new item holding the
//! whole document and then deletes the references it replaced. The layouts are
//! y-redis 0.1.6's (compat notes section 7), so JavaScript instances read what we
//! write and the reverse.

use async_trait::async_trait;

/// Why a storage operation failed. Callers treat every variant as retryable except
/// [`StorageError::Config`], which is reported at start.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The backend is misconfigured (missing bucket, bad URL, ...).
    #[error("storage configuration: {0}")]
    Config(String),
    /// The backend could not be reached or answered with an error.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A local file system operation failed.
    #[error("storage io: {0}")]
    Io(#[from] std::io::Error),
    /// Stored bytes could not be decoded.
    #[error("stored document is corrupt: {0}")]
    Corrupt(String),
}

/// One stored item of a document: its reference and its v2 update bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// Opaque name of the item, used to delete it after compaction.
    pub reference: String,
    /// A Yjs v2 update.
    pub update: Vec<u8>,
}

/// A place documents are compacted into. Implementations must be safe to call
/// concurrently from several tasks and processes.
#[async_trait]
pub trait Storage: Send + Sync + 'static {
    /// Every stored item of (room, docid); empty when the document was never stored.
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError>;

    /// Store one new item holding `update` (a v2 update, normally the whole
    /// document). `state_vector` is the v1 state vector of that document, kept by
    /// backends whose layout has a column for it. Returns the new reference.
    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        state_vector: &[u8],
    ) -> Result<String, StorageError>;

    /// Delete the given items of (room, docid). Unknown references are ignored.
    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError>;

    /// A short name for logs and metrics ("memory", "fs", "gcs", ...).
    fn name(&self) -> &'static str;
}
