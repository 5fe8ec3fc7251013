//! [`Survey`] of the embedded streams: read from the maps under one lock.

use std::collections::HashSet;

use async_trait::async_trait;

use super::MemoryStreams;
use crate::streams::{DocStreamSummary, StreamError, Survey};

#[async_trait]
impl Survey for MemoryStreams {
    async fn doc_streams(
        &self,
        limit: usize,
    ) -> Result<(Vec<DocStreamSummary>, bool), StreamError> {
        let state = self.state();
        let queued: HashSet<&str> = state.queue.values().map(String::as_str).collect();
        let mut keys: Vec<&String> = state.streams.keys().collect();
        keys.sort();
        let more = keys.len() > limit;
        let summaries = keys
            .into_iter()
            .take(limit)
            .filter_map(|key| {
                let doc = state.streams.get(key)?;
                Some(DocStreamSummary {
                    key: key.clone(),
                    length: doc.entries.len() as u64,
                    last_id: doc.entries.back().map(|entry| entry.id),
                    task_pending: queued.contains(key.as_str()),
                })
            })
            .collect();
        Ok((summaries, more))
    }
}
