//! Document storage: where the worker puts compacted documents.
//!
//! Every backend stores, per (room, docid), a set of items. Each item is a full or
//! partial document state encoded as a Yjs **v2** update, named by an opaque
//! reference. Loading merges all items; compaction stores one new item holding the
//! whole document and then deletes the references it replaced. The layouts are
//! y-redis 0.1.6's (docs/protocol.md §7), so JavaScript instances read what we
//! write and the reverse.

use async_trait::async_trait;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ReadTxn, Transact, Update};

use crate::streams::encode_uri_component;

pub mod config;
pub mod fs;
pub mod gcs;
mod history;
mod http;
pub mod memory;
mod metered;
mod names;
mod objects;
mod open;
pub mod postgres;
pub mod s3;

pub use config::{StorageBackend, StorageConfig};
pub use history::{apply_retention, now_ms, to_drop, Retention, Version, MAX_NAME_BYTES};
pub use metered::Metered;
pub use open::{open_metered, open_storage, OPEN_TIMEOUT};

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

    /// Keep `update` (a v2 update, the whole document) as `version` of
    /// (room, docid), replacing a version of the same number.
    async fn put_version(
        &self,
        room: &str,
        docid: &str,
        version: &Version,
        update: &[u8],
    ) -> Result<(), StorageError>;

    /// Every kept version of (room, docid), oldest first; empty without any.
    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError>;

    /// The v2 update kept as `version`; `None` when there is no such version.
    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError>;

    /// Give `version` a name, making it a snapshot kept until deleted;
    /// `false` when there is no such version. A name that is empty or longer
    /// than [`MAX_NAME_BYTES`] once encoded is a [`StorageError::Config`].
    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError>;

    /// Delete the given versions of (room, docid); unknown ones are ignored.
    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError>;

    /// Every (room, docid) that has kept versions, for a cleanup of all. Object
    /// stores and fs cannot tell a room or docid whose stored name was shortened
    /// (`names`) and leave such documents out (logged at debug); the worker
    /// still applies the retention to them whenever it keeps a version.
    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError>;

    /// The v1-encoded state vector of the stored document, `None` when it was never
    /// stored. Lets a caller learn what storage already holds without shipping the
    /// whole document around. The default merges every item; backends that keep the
    /// state vector beside the update (PostgreSQL) answer from it.
    async fn state_vector(&self, room: &str, docid: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let items = self.load(room, docid).await?;
        match merge_items(&items)? {
            Some(update) => Ok(Some(state_vector_of_update(&update)?)),
            None => Ok(None),
        }
    }
}

/// Merge stored items (v2 updates) into one v2 update; `None` for no items. A single
/// item is checked for being decodable and returned unchanged. Undecodable bytes are
/// [`StorageError::Corrupt`], never a panic.
pub fn merge_items(items: &[StoredItem]) -> Result<Option<Vec<u8>>, StorageError> {
    match items {
        [] => Ok(None),
        [single] => {
            guard_yrs("decoding a stored update", || {
                Update::decode_v2(&single.update).map(|_| ())
            })?;
            Ok(Some(single.update.clone()))
        }
        many => {
            let merged = guard_yrs("merging stored updates", || {
                yrs::merge_updates_v2(many.iter().map(|item| item.update.as_slice()))
            })?;
            Ok(Some(merged))
        }
    }
}

/// The v1-encoded state vector of the document a v2 update describes, computed by
/// applying it to a fresh document (the state vector yjs would store beside it).
pub fn state_vector_of_update(update: &[u8]) -> Result<Vec<u8>, StorageError> {
    guard_yrs("computing a state vector", || {
        let decoded = Update::decode_v2(update).map_err(|e| e.to_string())?;
        let doc = yrs::Doc::new();
        let mut txn = doc.transact_mut();
        txn.apply_update(decoded).map_err(|e| e.to_string())?;
        Ok::<_, String>(txn.state_vector().encode_v1())
    })
}

/// Run a yrs call that may fail or panic on malformed input, turning both into
/// [`StorageError::Corrupt`].
fn guard_yrs<T, E: std::fmt::Display>(
    what: &str,
    f: impl FnOnce() -> Result<T, E>,
) -> Result<T, StorageError> {
    crate::protocol::guard_yrs("decoder", f)
        .map_err(|e| StorageError::Corrupt(format!("{what}: {e}")))
}

/// What S3 signatures and the GCS JSON API escape in object names, paths and query
/// strings: everything but RFC 3986's unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const STRICT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// [`STRICT`], keeping `/` (S3 object keys in paths).
const STRICT_KEEP_SLASH: &AsciiSet = &STRICT.remove(b'/');

/// Percent-encode everything but RFC 3986 unreserved characters, optionally keeping
/// `/`.
fn encode_strict(s: &str, keep_slash: bool) -> String {
    let set = if keep_slash {
        STRICT_KEEP_SLASH
    } else {
        STRICT
    };
    utf8_percent_encode(s, set).to_string()
}

/// The object-name prefix of (room, docid) in object stores:
/// `{enc(room)}/{enc(docid)}/`, as y-redis lays out its S3 bucket. Long names
/// are shortened (`names`) so that every object name stays within the 1024
/// bytes S3 and GCS allow.
pub fn object_prefix(room: &str, docid: &str) -> String {
    format!(
        "{}/{}/",
        names::bounded(&encode_uri_component(room), OBJECT_ROOM_MAX),
        names::bounded(&encode_uri_component(docid), OBJECT_DOC_MAX)
    )
}

/// The object-name prefix of the versions of (room, docid):
/// `$history/{enc(room)}/{enc(docid)}/`, with [`object_prefix`]'s shortening.
pub fn history_prefix(room: &str, docid: &str) -> String {
    format!("{}/{}", history::HISTORY_ROOT, object_prefix(room, docid))
}

/// Bytes of an object name's room part: with the docid part, two slashes and
/// a 36-byte UUID, far below the object stores' 1024.
const OBJECT_ROOM_MAX: usize = 512;
/// Bytes of an object name's docid part.
const OBJECT_DOC_MAX: usize = 256;

/// How many times a listing is read again when an item vanished between listing
/// and fetching it (a concurrent compaction replaced it by a newer item).
const RELIST_ATTEMPTS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_strict_keeps_only_unreserved() {
        assert_eq!(encode_strict("a%2Fb/c!(", true), "a%252Fb/c%21%28");
        assert_eq!(encode_strict("a/b", false), "a%2Fb");
    }

    #[test]
    fn corrupt_items_are_errors_not_panics() {
        let junk = StoredItem {
            reference: "x".into(),
            update: vec![0xff, 0x13, 0x37, 0x00, 0x01],
        };
        assert!(matches!(
            merge_items(std::slice::from_ref(&junk)),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            merge_items(&[junk.clone(), junk]),
            Err(StorageError::Corrupt(_))
        ));
        assert!(matches!(
            state_vector_of_update(&[1, 2, 3]),
            Err(StorageError::Corrupt(_))
        ));
    }

    #[test]
    fn empty_storage_merges_to_none() {
        assert_eq!(merge_items(&[]).ok(), Some(None));
    }
}
