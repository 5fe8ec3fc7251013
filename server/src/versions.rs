//! Keeping a document's state as its next version. The number comes from the
//! streams, one counter per document for the whole fleet, so that a worker's
//! compaction and an API call racing on one document never take the same
//! number (and so never replace each other's version); the bytes go to
//! storage. The worker and the document API both keep versions through here.

use crate::storage::{Storage, StorageError, Version};
use crate::streams::{History, Keyspace, StreamError};

/// Why a version could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum KeepError {
    /// The streams could not hand out a number.
    #[error("version number: {0}")]
    Streams(#[from] StreamError),
    /// Storage could not list or keep versions.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Keep `update` (a v2 update, the whole document) as the next version of
/// (room, docid), kept at `timestamp` (ms). Returns the new version's number
/// and every version of the document, the new one last.
pub async fn keep_next_version<S: History + Keyspace + ?Sized>(
    streams: &S,
    storage: &dyn Storage,
    room: &str,
    docid: &str,
    update: &[u8],
    timestamp: u64,
) -> Result<(u64, Vec<Version>), KeepError> {
    let mut versions = storage.versions(room, docid).await?;
    let floor = versions.iter().map(|v| v.version).max().unwrap_or(0);
    let number = streams
        .next_version(&streams.stream_key(room, docid), floor)
        .await?;
    let version = Version {
        version: number,
        timestamp,
        name: None,
    };
    storage.put_version(room, docid, &version, update).await?;
    versions.push(version);
    Ok((number, versions))
}
