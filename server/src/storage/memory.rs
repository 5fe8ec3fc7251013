//! In-process storage: documents live in a map and vanish with the process. Useful
//! for tests and for a single server that needs no durability.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::{Storage, StorageError, StoredItem};

type DocKey = (String, String);

/// A per-process map from (room, docid) to stored items. References are UUIDs.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    docs: Mutex<HashMap<DocKey, Vec<StoredItem>>>,
}

impl MemoryStorage {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn docs(&self) -> MutexGuard<'_, HashMap<DocKey, Vec<StoredItem>>> {
        // A panic while holding the lock cannot leave the map half-updated (every
        // mutation is a single push or retain), so a poisoned lock is still usable.
        self.docs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        Ok(self
            .docs()
            .get(&(room.to_string(), docid.to_string()))
            .cloned()
            .unwrap_or_default())
    }

    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        _state_vector: &[u8],
    ) -> Result<String, StorageError> {
        let reference = uuid::Uuid::new_v4().to_string();
        self.docs()
            .entry((room.to_string(), docid.to_string()))
            .or_default()
            .push(StoredItem {
                reference: reference.clone(),
                update: update.to_vec(),
            });
        Ok(reference)
    }

    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        let mut docs = self.docs();
        let key = (room.to_string(), docid.to_string());
        if let Some(items) = docs.get_mut(&key) {
            items.retain(|item| !references.contains(&item.reference));
            if items.is_empty() {
                docs.remove(&key);
            }
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
