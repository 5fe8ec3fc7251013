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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::{stream_key, Append, TaskQueue};

    #[tokio::test]
    async fn every_stream_is_listed_with_its_length_and_task() {
        let streams = MemoryStreams::new("y");
        let a = stream_key("y", "room a", "index");
        let b = stream_key("y", "<b>", "index");
        streams.append(&a, b"one").await.unwrap();
        streams.append(&a, b"two").await.unwrap();
        streams.append(&b, b"three").await.unwrap();
        let (listed, more) = streams.doc_streams(10).await.unwrap();
        assert!(!more);
        let keys: Vec<&str> = listed.iter().map(|s| s.key.as_str()).collect();
        let mut sorted = vec![a.as_str(), b.as_str()];
        sorted.sort();
        assert_eq!(keys, sorted);
        let first = listed.iter().find(|s| s.key == a).unwrap();
        assert_eq!(first.length, 2);
        assert!(first.last_id.is_some());
        assert!(first.task_pending);

        let tasks = streams.claim_all_tasks("test").await.unwrap();
        for task in &tasks {
            streams.drop_empty_stream(task).await.unwrap();
        }
        let (limited, more) = streams.doc_streams(1).await.unwrap();
        assert!(more);
        assert_eq!(limited.len(), 1);
        assert!(limited.iter().all(|s| !s.task_pending && s.length > 0));
    }
}
