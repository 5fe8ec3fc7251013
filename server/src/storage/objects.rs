//! What the object stores (S3 and GCS) share: y-redis's object layout
//! `{enc(room)}/{enc(docid)}/{uuid}` and the way a document is read from it.

use async_trait::async_trait;
use futures_util::{stream, StreamExt};

use super::{object_prefix, StorageError, StoredItem, RELIST_ATTEMPTS};

/// How many objects are fetched at once while loading a document.
const PARALLEL_FETCHES: usize = 8;

/// An object name and what fetching it gave.
type Fetched = (String, Result<Option<Vec<u8>>, StorageError>);

/// The two calls loading needs from an object store.
#[async_trait]
pub(crate) trait ObjectStore: Sync {
    /// The store's name in error messages ("S3", "GCS").
    const KIND: &'static str;

    /// Every object name under `prefix`.
    async fn list_names(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// An object's bytes, `None` when it does not exist (any more).
    async fn fetch(&self, name: &str) -> Result<Option<Vec<u8>>, StorageError>;
}

/// The part of an object name after the document's prefix, when the object
/// belongs to the document (exactly one more path segment).
pub(crate) fn item_of<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// Every item of (room, docid). An object deleted between the listing and its
/// fetch (a compaction replaced it) makes the listing start again, since the
/// object replacing it may be missing from the first listing.
pub(crate) async fn load_objects<S: ObjectStore>(
    store: &S,
    room: &str,
    docid: &str,
) -> Result<Vec<StoredItem>, StorageError> {
    let prefix = object_prefix(room, docid);
    for _ in 0..RELIST_ATTEMPTS {
        let names: Vec<String> = store
            .list_names(&prefix)
            .await?
            .into_iter()
            .filter(|name| item_of(&prefix, name).is_some())
            .collect();
        let fetched: Vec<Fetched> = stream::iter(names)
            .map(|name| async move {
                let update = store.fetch(&name).await;
                (name, update)
            })
            .buffered(PARALLEL_FETCHES)
            .collect()
            .await;
        let mut items = Vec::with_capacity(fetched.len());
        let mut vanished = false;
        for (reference, update) in fetched {
            match update? {
                Some(update) => items.push(StoredItem { reference, update }),
                None => vanished = true,
            }
        }
        if !vanished {
            return Ok(items);
        }
    }
    Err(StorageError::Backend(format!(
        "{} objects under {prefix} kept changing while being read",
        S::KIND
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_one_segment_below_the_prefix() {
        assert_eq!(item_of("a/index/", "a/index/u1"), Some("u1"));
        assert_eq!(item_of("a/index/", "a/index/sub/u1"), None);
        assert_eq!(item_of("a/index/", "b/index/u1"), None);
        assert_eq!(item_of("a/index/", "a/index/"), None);
    }
}
