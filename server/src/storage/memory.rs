//! In-process storage: documents live in a map and vanish with the process. Useful
//! for tests and for a single server that needs no durability.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use super::history::check_name;
use super::{Storage, StorageError, StoredItem, Version};

type DocKey = (String, String);

/// The versions of one document by number, each with its v2 update.
type Versions = BTreeMap<u64, (Version, Vec<u8>)>;

/// A per-process map from (room, docid) to stored items. References are UUIDs.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    docs: Mutex<HashMap<DocKey, Vec<StoredItem>>>,
    history: Mutex<HashMap<DocKey, Versions>>,
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

    fn history(&self) -> MutexGuard<'_, HashMap<DocKey, Versions>> {
        // As `docs`: every mutation is a single insert or remove.
        self.history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn key(room: &str, docid: &str) -> DocKey {
    (room.to_string(), docid.to_string())
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

    async fn put_version(
        &self,
        room: &str,
        docid: &str,
        version: &Version,
        update: &[u8],
    ) -> Result<(), StorageError> {
        if let Some(name) = &version.name {
            check_name(name)?;
        }
        self.history()
            .entry(key(room, docid))
            .or_default()
            .insert(version.version, (version.clone(), update.to_vec()));
        Ok(())
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        Ok(self
            .history()
            .get(&key(room, docid))
            .map(|versions| versions.values().map(|(v, _)| v.clone()).collect())
            .unwrap_or_default())
    }

    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self
            .history()
            .get(&key(room, docid))
            .and_then(|versions| versions.get(&version))
            .map(|(_, update)| update.clone()))
    }

    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        check_name(name)?;
        let mut history = self.history();
        let found = history
            .get_mut(&key(room, docid))
            .and_then(|versions| versions.get_mut(&version));
        Ok(match found {
            Some((kept, _)) => {
                kept.name = Some(name.to_string());
                true
            }
            None => false,
        })
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        let mut history = self.history();
        let key = key(room, docid);
        if let Some(kept) = history.get_mut(&key) {
            kept.retain(|number, _| !versions.contains(number));
            if kept.is_empty() {
                history.remove(&key);
            }
        }
        Ok(())
    }

    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        let mut documents: Vec<DocKey> = self.history().keys().cloned().collect();
        documents.sort();
        Ok(documents)
    }
}
