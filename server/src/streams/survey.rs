//! A look over every document stream of the fleet, for people: which rooms
//! exist, how long their streams are, when they last changed and whether a
//! compaction is queued for them. Its own trait, apart from [`super::Streams`],
//! because only the inspector asks it and a streams implementation may go
//! without it.

use async_trait::async_trait;

use super::{StreamError, StreamId};

/// At most this many document streams are listed by one survey, so that a
/// Redis holding millions of rooms is not walked whole for one page view.
pub const SURVEY_LIMIT: usize = 1000;

/// One document stream as a survey finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocStreamSummary {
    /// The stream key, `{prefix}:room:{room}:{docid}`.
    pub key: String,
    /// Entries in the stream.
    pub length: u64,
    /// The id of its newest entry (`None`: the stream is empty).
    pub last_id: Option<StreamId>,
    /// Whether the worker queue holds a compaction task for it.
    pub task_pending: bool,
}

/// Every document stream under the key prefix, bounded.
#[async_trait]
pub trait Survey: Send + Sync + 'static {
    /// Up to `limit` document streams, by key; `true` with them when there
    /// were more than `limit`.
    async fn doc_streams(&self, limit: usize)
        -> Result<(Vec<DocStreamSummary>, bool), StreamError>;
}
