//! What the object stores (S3 and GCS) share: y-redis's object layout
//! `{enc(room)}/{enc(docid)}/{uuid}`, the versions under
//! `$history/{enc(room)}/{enc(docid)}/` (docs/storage.md, "History"), and
//! everything [`Storage`] does with them apart from the requests themselves. A
//! backend implements [`ObjectStore`] (its requests: one page of a listing, get,
//! put, delete, and how its error replies read) and gets [`Storage`] from the
//! impl below.

use async_trait::async_trait;
use futures_util::{stream, StreamExt};
use reqwest::StatusCode;

use super::history::{self, check_name, decode_component, leaf_name, versions_of_leaves};
use super::http::Reply;
use super::{
    history_prefix, object_prefix, Storage, StorageError, StoredItem, Version, RELIST_ATTEMPTS,
};

/// How many objects are fetched at once while loading a document.
const PARALLEL_FETCHES: usize = 8;

/// An object name and what fetching it gave.
type Fetched = (String, Result<Option<Vec<u8>>, StorageError>);

/// One page of a listing: object names and the token of the next page, if any.
pub(super) struct Page {
    /// Object names, in the store's order.
    pub names: Vec<String>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<String>,
}

/// The requests of one object store, in y-redis's object layout.
#[async_trait]
pub(super) trait ObjectStore: Send + Sync + 'static {
    /// The store's name in error messages ("S3", "GCS").
    const KIND: &'static str;
    /// The backend's name in logs and metrics ("s3", "gcs").
    const NAME: &'static str;

    /// The bucket objects are stored in.
    fn bucket(&self) -> &str;

    /// One page of the object names under `prefix`, from `page` on (`None`: the
    /// first page).
    async fn list_page(&self, prefix: &str, page: Option<&str>) -> Result<Page, StorageError>;

    /// Download an object; the reply is interpreted by [`get`].
    async fn get_object(&self, name: &str) -> Result<Reply, StorageError>;

    /// Upload a new object.
    async fn put_object(&self, name: &str, body: &[u8]) -> Result<(), StorageError>;

    /// Delete objects; names that do not exist (any more) are not an error.
    async fn delete_objects(&self, names: &[String]) -> Result<(), StorageError>;

    /// What an error reply says, for messages.
    fn describe(reply: &Reply) -> String;

    /// The error for a reply with an unexpected status.
    fn failure(&self, what: &str, reply: &Reply) -> StorageError {
        StorageError::Backend(format!(
            "{} {what} in bucket {}: {}",
            Self::KIND,
            self.bucket(),
            Self::describe(reply)
        ))
    }
}

/// Every object name under `prefix` (all pages).
pub(super) async fn list<S: ObjectStore>(
    store: &S,
    prefix: &str,
) -> Result<Vec<String>, StorageError> {
    let mut names = Vec::new();
    let mut page: Option<String> = None;
    loop {
        let listed = store.list_page(prefix, page.as_deref()).await?;
        names.extend(listed.names);
        match listed.next {
            Some(next) => page = Some(next),
            None => return Ok(names),
        }
    }
}

/// An object's bytes, `None` when it does not exist (any more).
pub(super) async fn get<S: ObjectStore>(
    store: &S,
    name: &str,
) -> Result<Option<Vec<u8>>, StorageError> {
    let reply = store.get_object(name).await?;
    match reply.status {
        StatusCode::OK => Ok(Some(reply.body.to_vec())),
        StatusCode::NOT_FOUND => Ok(None),
        _ => Err(store.failure("downloading an object", &reply)),
    }
}

/// The part of an object name after the document's prefix, when the object
/// belongs to the document (exactly one more path segment).
pub(super) fn item_of<'a>(prefix: &str, name: &'a str) -> Option<&'a str> {
    name.strip_prefix(prefix)
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
}

/// Every item of (room, docid). An object deleted between the listing and its
/// fetch (a compaction replaced it) makes the listing start again, since the
/// object replacing it may be missing from the first listing.
async fn load_objects<S: ObjectStore>(
    store: &S,
    room: &str,
    docid: &str,
) -> Result<Vec<StoredItem>, StorageError> {
    let prefix = object_prefix(room, docid);
    for _ in 0..RELIST_ATTEMPTS {
        let names: Vec<String> = list(store, &prefix)
            .await?
            .into_iter()
            .filter(|name| item_of(&prefix, name).is_some())
            .collect();
        let fetched: Vec<Fetched> = stream::iter(names)
            .map(|name| async move {
                let update = get(store, &name).await;
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

/// The versions of (room, docid), each with its object names.
async fn list_versions<S: ObjectStore>(
    store: &S,
    prefix: &str,
) -> Result<Vec<(Version, Vec<String>)>, StorageError> {
    let names = list(store, prefix).await?;
    let leaves = names.iter().filter_map(|name| item_of(prefix, name));
    Ok(versions_of_leaves(leaves)
        .into_iter()
        .map(|(version, leaves)| {
            let names = leaves.into_iter().map(|leaf| format!("{prefix}{leaf}"));
            (version, names.collect())
        })
        .collect())
}

/// The object names of one version, `None` when there is no such version.
async fn version_objects<S: ObjectStore>(
    store: &S,
    prefix: &str,
    version: u64,
) -> Result<Option<(Version, Vec<String>)>, StorageError> {
    Ok(list_versions(store, prefix)
        .await?
        .into_iter()
        .find(|(v, _)| v.version == version))
}

/// (room, docid) of an object name under `$history/`; `None` for a name of
/// another shape, or whose room or docid was shortened (`names`).
fn document_of(name: &str) -> Option<(String, String)> {
    let rest = name
        .strip_prefix(history::HISTORY_ROOT)?
        .strip_prefix('/')?;
    let mut parts = rest.split('/');
    let (room, doc, leaf) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || history::parse_leaf(leaf).is_none() {
        return None;
    }
    match (decode_component(room), decode_component(doc)) {
        (Some(room), Some(doc)) => Some((room, doc)),
        _ => {
            tracing::debug!(
                object = %crate::log_text::bounded(name),
                "history of a shortened room or docid name left out of the listing"
            );
            None
        }
    }
}

#[async_trait]
impl<S: ObjectStore> Storage for S {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        load_objects(self, room, docid).await
    }

    /// A new object named `{prefix}{uuid v4}`; its name is the reference.
    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        _state_vector: &[u8],
    ) -> Result<String, StorageError> {
        let name = format!("{}{}", object_prefix(room, docid), uuid::Uuid::new_v4());
        self.put_object(&name, update).await?;
        Ok(name)
    }

    /// Only names of the document's own items are deleted.
    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        let prefix = object_prefix(room, docid);
        let names: Vec<String> = references
            .iter()
            .filter(|name| item_of(&prefix, name).is_some())
            .cloned()
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        self.delete_objects(&names).await
    }

    fn name(&self) -> &'static str {
        S::NAME
    }

    /// Writes the new object, then deletes other objects of the same number.
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
        let prefix = history_prefix(room, docid);
        let name = format!("{prefix}{}", leaf_name(version));
        self.put_object(&name, update).await?;
        let replaced: Vec<String> = version_objects(self, &prefix, version.version)
            .await?
            .map(|(_, names)| names)
            .unwrap_or_default()
            .into_iter()
            .filter(|other| *other != name)
            .collect();
        if !replaced.is_empty() {
            self.delete_objects(&replaced).await?;
        }
        Ok(())
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        let prefix = history_prefix(room, docid);
        Ok(list_versions(self, &prefix)
            .await?
            .into_iter()
            .map(|(version, _)| version)
            .collect())
    }

    /// The named object first: when naming was interrupted, both hold the
    /// same bytes. A version renamed between listing and download is looked
    /// up again.
    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let prefix = history_prefix(room, docid);
        for _ in 0..RELIST_ATTEMPTS {
            let Some((_, names)) = version_objects(self, &prefix, version).await? else {
                return Ok(None);
            };
            let mut ordered = names;
            ordered.sort_by_key(|name| std::cmp::Reverse(name.len()));
            for name in &ordered {
                if let Some(update) = get(self, name).await? {
                    return Ok(Some(update));
                }
            }
        }
        Err(StorageError::Backend(format!(
            "{} version {version} under {prefix} kept changing while being read",
            S::KIND
        )))
    }

    /// Downloads the version, writes it under the named object name, then
    /// deletes the other objects of that number.
    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        check_name(name)?;
        let prefix = history_prefix(room, docid);
        let Some((kept, names)) = version_objects(self, &prefix, version).await? else {
            return Ok(false);
        };
        let named = format!(
            "{prefix}{}",
            leaf_name(&Version {
                name: Some(name.to_string()),
                ..kept
            })
        );
        if !names.contains(&named) {
            let Some(update) = self.load_version(room, docid, version).await? else {
                return Ok(false);
            };
            self.put_object(&named, &update).await?;
        }
        let others: Vec<String> = names.into_iter().filter(|n| *n != named).collect();
        if !others.is_empty() {
            self.delete_objects(&others).await?;
        }
        Ok(true)
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        if versions.is_empty() {
            return Ok(());
        }
        let prefix = history_prefix(room, docid);
        let doomed: Vec<String> = list_versions(self, &prefix)
            .await?
            .into_iter()
            .filter(|(v, _)| versions.contains(&v.version))
            .flat_map(|(_, names)| names)
            .collect();
        if doomed.is_empty() {
            return Ok(());
        }
        self.delete_objects(&doomed).await
    }

    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        let root = format!("{}/", history::HISTORY_ROOT);
        let documents: std::collections::BTreeSet<(String, String)> = list(self, &root)
            .await?
            .iter()
            .filter_map(|name| document_of(name))
            .collect();
        Ok(documents.into_iter().collect())
    }
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

    /// An object store in memory that lists two names per page.
    #[derive(Default)]
    struct Fake {
        objects: std::sync::Mutex<std::collections::BTreeMap<String, Vec<u8>>>,
    }

    impl Fake {
        fn names(&self) -> Vec<String> {
            self.objects.lock().unwrap().keys().cloned().collect()
        }
    }

    #[async_trait]
    impl ObjectStore for Fake {
        const KIND: &'static str = "fake";
        const NAME: &'static str = "fake";

        fn bucket(&self) -> &str {
            "bucket"
        }

        async fn list_page(&self, prefix: &str, page: Option<&str>) -> Result<Page, StorageError> {
            let start: usize = page.map_or(0, |page| page.parse().unwrap());
            let names: Vec<String> = self
                .names()
                .into_iter()
                .filter(|name| name.starts_with(prefix))
                .collect();
            let end = (start + 2).min(names.len());
            Ok(Page {
                names: names[start..end].to_vec(),
                next: (end < names.len()).then(|| end.to_string()),
            })
        }

        async fn get_object(&self, name: &str) -> Result<Reply, StorageError> {
            Ok(match self.objects.lock().unwrap().get(name) {
                Some(body) => Reply {
                    status: StatusCode::OK,
                    body: body.clone().into(),
                },
                None => Reply {
                    status: StatusCode::NOT_FOUND,
                    body: Default::default(),
                },
            })
        }

        async fn put_object(&self, name: &str, body: &[u8]) -> Result<(), StorageError> {
            self.objects
                .lock()
                .unwrap()
                .insert(name.to_string(), body.to_vec());
            Ok(())
        }

        async fn delete_objects(&self, names: &[String]) -> Result<(), StorageError> {
            let mut objects = self.objects.lock().unwrap();
            for name in names {
                objects.remove(name);
            }
            Ok(())
        }

        fn describe(_: &Reply) -> String {
            "fake".to_string()
        }
    }

    #[tokio::test]
    async fn only_the_documents_own_objects_are_items() {
        let store = Fake::default();
        let mut own = Vec::new();
        for i in 0..5u8 {
            own.push(store.put("a b", "index", &[i], &[]).await.unwrap());
        }
        for name in [
            "a%20b/index/sub/1",
            "a%20b/indexx/2",
            "a%20b/index/",
            "b/index/3",
        ] {
            store.put_object(name, b"other").await.unwrap();
        }
        assert!(own.iter().all(|name| name.starts_with("a%20b/index/")));

        // All pages are read; deeper names and other documents are not items.
        let mut loaded: Vec<String> = store
            .load("a b", "index")
            .await
            .unwrap()
            .into_iter()
            .map(|item| item.reference)
            .collect();
        loaded.sort();
        own.sort();
        assert_eq!(loaded, own);

        // Only the document's own items are deleted, whatever the references say.
        let mut references = own[..2].to_vec();
        references.extend(["a%20b/index/sub/1".to_string(), "b/index/3".to_string()]);
        store.delete("a b", "index", &references).await.unwrap();
        let left = store.names();
        assert!(
            !left.contains(&own[0]) && !left.contains(&own[1]),
            "{left:?}"
        );
        assert!(left.contains(&own[2]), "{left:?}");
        for name in [
            "a%20b/index/sub/1",
            "a%20b/indexx/2",
            "a%20b/index/",
            "b/index/3",
        ] {
            assert!(left.iter().any(|left| left == name), "{name} kept");
        }
        assert_eq!(store.name(), "fake");
    }
}
