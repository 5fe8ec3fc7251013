//! The versions a Rust worker keeps of a document, beside y-redis's items and
//! in a namespace y-redis never lists, reads or deletes (docs/storage.md,
//! "History"), and the retention that thins them out.

use serde::Serialize;

/// One kept version of a document: the whole state a compaction stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Grows by one with every version of the document.
    pub version: u64,
    /// When it was kept, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// A named snapshot's name: kept until deleted, whatever the retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// How long versions are kept (`[history]` settings): every version for
/// `keep_all_ms`, then the last of each hour for `hourly_ms` more, then the
/// last of each day for `daily_ms` more (`None`: forever). Named snapshots and
/// the latest version are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Milliseconds every version is kept.
    pub keep_all_ms: u64,
    /// Milliseconds, after those, one version an hour is kept.
    pub hourly_ms: u64,
    /// Milliseconds, after those, one version a day is kept; `None` = forever.
    pub daily_ms: Option<u64>,
}
