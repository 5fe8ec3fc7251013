//! Documents as files: `{dir}/{enc(room)}/{enc(docid)}/{uuid}`, each file one v2
//! update. The same layout as the object stores, on a local or shared disk.
//! Versions (history) are files `{dir}/$history/{enc(room)}/{enc(docid)}/{leaf}`
//! with the object stores' leaf names (`history`).
//!
//! Writes are atomic: an item is written to a hidden temporary file (name starting
//! with `.`), flushed to disk, then renamed into place, and the directory is synced,
//! so `load` sees either the whole item or nothing, also after a crash.
//!
//! A process killed while writing leaves its temporary file behind. Temporary
//! files older than [`STALE_TEMP_AGE`] are removed from a document's directory
//! whenever an item is written there, and from every document's directory in
//! the background when the storage is opened.

use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use super::history::{self, check_name, decode_component, leaf_name, versions_of_leaves};
use super::{
    encode_uri_component, names, Storage, StorageError, StoredItem, Version, RELIST_ATTEMPTS,
};

/// Stores documents under a directory (default `./data`). Several processes may
/// share the directory: item names are fresh UUIDs and nothing is rewritten in place.
#[derive(Debug, Clone)]
pub struct FsStorage {
    dir: PathBuf,
}

impl FsStorage {
    /// Use `dir`, creating it if missing, and check that files can be written there,
    /// so a read-only or misconfigured directory fails at start, not at the first
    /// compaction.
    pub async fn open(dir: impl Into<PathBuf>) -> Result<Self, StorageError> {
        let dir = dir.into();
        let probe_dir = dir.clone();
        blocking(move || {
            std::fs::create_dir_all(&probe_dir).map_err(|e| {
                StorageError::Config(format!(
                    "cannot create storage directory {}: {e}",
                    probe_dir.display()
                ))
            })?;
            let probe = probe_dir.join(format!(".probe-{}", uuid::Uuid::new_v4()));
            std::fs::write(&probe, b"probe").map_err(|e| {
                StorageError::Config(format!(
                    "storage directory {} is not writable: {e}",
                    probe_dir.display()
                ))
            })?;
            let _ = std::fs::remove_file(&probe);
            Ok(())
        })
        .await?;
        let swept = dir.clone();
        tokio::task::spawn_blocking(move || sweep_all(&swept, STALE_TEMP_AGE));
        Ok(Self { dir })
    }

    /// The directory documents are stored under.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The directory holding the items of (room, docid).
    pub fn doc_dir(&self, room: &str, docid: &str) -> PathBuf {
        self.dir.join(path_segment(room)).join(path_segment(docid))
    }

    /// The directory holding the versions of (room, docid).
    pub fn history_dir(&self, room: &str, docid: &str) -> PathBuf {
        self.dir
            .join(history::HISTORY_ROOT)
            .join(path_segment(room))
            .join(path_segment(docid))
    }
}

/// The name a [`path_segment`] stands for; `None` for a shortened one.
fn segment_name(segment: &str) -> Option<String> {
    match segment {
        "%" => Some(String::new()),
        "%2E" => Some(".".to_string()),
        "%2E%2E" => Some("..".to_string()),
        _ => decode_component(segment),
    }
}

/// One path component for a room or document name: `encodeURIComponent`, except
/// for the three names that cannot be directory names (`""`, `"."`, `".."`), which
/// get spellings the encoding never produces. An encoding longer than a file
/// name may be (255 bytes) is shortened with its hash (`names`).
fn path_segment(name: &str) -> String {
    match name {
        "" => "%".to_string(),
        "." => "%2E".to_string(),
        ".." => "%2E%2E".to_string(),
        _ => names::bounded(&encode_uri_component(name), FILE_NAME_MAX),
    }
}

/// The longest file name common file systems allow, in bytes.
const FILE_NAME_MAX: usize = 255;

/// A reference names a file inside the doc directory; anything else (hidden files,
/// path separators, `..`) is not ours and is ignored.
fn is_item_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\'])
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StorageError> + Send + 'static,
) -> Result<T, StorageError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Backend(format!("file system task failed: {e}")))?
}

fn load_dir(dir: &Path) -> Result<Vec<StoredItem>, StorageError> {
    'relist: for _ in 0..RELIST_ATTEMPTS {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut items = Vec::new();
        for entry in entries {
            let entry = entry?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !is_item_name(&name) || !entry.file_type()?.is_file() {
                continue;
            }
            match std::fs::read(entry.path()) {
                Ok(update) => items.push(StoredItem {
                    reference: name,
                    update,
                }),
                // Deleted since the listing: a compaction replaced it by a newer
                // item, which this listing may not contain. Read the listing again.
                Err(e) if e.kind() == ErrorKind::NotFound => continue 'relist,
                Err(e) => return Err(e.into()),
            }
        }
        items.sort_by(|a, b| a.reference.cmp(&b.reference));
        return Ok(items);
    }
    Err(StorageError::Backend(format!(
        "items of {} kept changing while being read",
        dir.display()
    )))
}

/// Create the document's directory if needed; new directories are synced into
/// their parents (`levels` of them: up to the storage directory) so the item's
/// path survives a power loss too.
fn ensure_dir(dir: &Path, levels: usize) -> Result<(), StorageError> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    let mut current = dir;
    // The room directory and the storage directory (and for versions the
    // `$history` directory) hold the new entries.
    for _ in 0..levels {
        match current.parent() {
            Some(parent) => {
                std::fs::File::open(parent)?.sync_all()?;
                current = parent;
            }
            None => break,
        }
    }
    Ok(())
}

/// Age after which a temporary file is a leftover of a killed writer: writing
/// one item takes seconds, not minutes.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(10 * 60);

fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// Remove the temporary files in `dir` last modified more than `age` ago;
/// returns how many. Best effort: what cannot be read or removed stays.
pub fn sweep_stale_temps(dir: &Path, age: Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(is_temp_name) {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|meta| meta.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|elapsed| elapsed > age);
        if stale && std::fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// [`sweep_stale_temps`] in every document directory under `root`
/// (`{root}/{room}/{docid}`).
/// The history directories (`{root}/$history/{room}/{docid}`) are swept too.
fn sweep_all(root: &Path, age: Duration) {
    let sweep = |root: &Path| {
        let Ok(rooms) = std::fs::read_dir(root) else {
            return 0;
        };
        let mut removed = 0;
        for room in rooms.flatten() {
            let Ok(docs) = std::fs::read_dir(room.path()) else {
                continue;
            };
            for doc in docs.flatten() {
                removed += sweep_stale_temps(&doc.path(), age);
            }
        }
        removed
    };
    let removed = sweep(root) + sweep(&root.join(history::HISTORY_ROOT));
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files left by interrupted writes"
        );
    }
}

fn write_item(dir: &Path, update: &[u8]) -> Result<String, StorageError> {
    ensure_dir(dir, 2)?;
    let removed = sweep_stale_temps(dir, STALE_TEMP_AGE);
    if removed > 0 {
        tracing::info!(
            removed,
            "removed temporary files left by interrupted writes"
        );
    }
    let reference = uuid::Uuid::new_v4().to_string();
    let temp = dir.join(format!(".{reference}.tmp"));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(update)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, dir.join(&reference))?;
        // Make the rename itself durable.
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(reference)
}

/// Write `bytes` as file `name` in `dir` atomically (temporary file, rename
/// over any file of that name, directory synced).
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
    ensure_dir(dir, 3)?;
    sweep_stale_temps(dir, STALE_TEMP_AGE);
    let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, dir.join(name))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e.into());
    }
    Ok(())
}

/// The names in `dir` (none when it does not exist) of the entries `keep`
/// takes, given each entry's name and whether it is a directory.
fn names_in(dir: &Path, keep: impl Fn(&str, bool) -> bool) -> Result<Vec<String>, StorageError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let is_dir = entry.file_type()?.is_dir();
        if let Ok(name) = entry.file_name().into_string() {
            if keep(&name, is_dir) {
                names.push(name);
            }
        }
    }
    Ok(names)
}

/// The file names in `dir` (none when it does not exist), hidden ones left out.
fn file_names(dir: &Path) -> Result<Vec<String>, StorageError> {
    names_in(dir, |name, _| is_item_name(name))
}

/// The versions in a history directory, each with its file names.
fn list_versions(dir: &Path) -> Result<Vec<(Version, Vec<String>)>, StorageError> {
    let names = file_names(dir)?;
    Ok(versions_of_leaves(names.iter().map(String::as_str)))
}

fn remove_if_present(path: &Path) -> Result<(), StorageError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn put_version_file(dir: &Path, version: &Version, update: &[u8]) -> Result<(), StorageError> {
    let leaf = leaf_name(version);
    write_file(dir, &leaf, update)?;
    let replaced = list_versions(dir)?
        .into_iter()
        .filter(|(v, _)| v.version == version.version)
        .flat_map(|(_, files)| files)
        .filter(|file| *file != leaf);
    for file in replaced {
        remove_if_present(&dir.join(file))?;
    }
    Ok(())
}

fn load_version_file(dir: &Path, version: u64) -> Result<Option<Vec<u8>>, StorageError> {
    for _ in 0..RELIST_ATTEMPTS {
        let Some((_, files)) = list_versions(dir)?
            .into_iter()
            .find(|(v, _)| v.version == version)
        else {
            return Ok(None);
        };
        // The named file first: it is the one kept when naming was interrupted.
        let mut vanished = false;
        for file in files.iter().rev() {
            match std::fs::read(dir.join(file)) {
                Ok(update) => return Ok(Some(update)),
                // Renamed or replaced since the listing.
                Err(e) if e.kind() == ErrorKind::NotFound => vanished = true,
                Err(e) => return Err(e.into()),
            }
        }
        if !vanished {
            return Ok(None);
        }
    }
    Err(StorageError::Backend(format!(
        "version {version} in {} kept changing while being read",
        dir.display()
    )))
}

fn name_version_file(dir: &Path, version: u64, name: &str) -> Result<bool, StorageError> {
    let Some((kept, files)) = list_versions(dir)?
        .into_iter()
        .find(|(v, _)| v.version == version)
    else {
        return Ok(false);
    };
    let named = Version {
        name: Some(name.to_string()),
        ..kept
    };
    let leaf = leaf_name(&named);
    let mut sources = files.iter().filter(|file| **file != leaf);
    if let Some(first) = sources.next() {
        if !files.contains(&leaf) {
            match std::fs::rename(dir.join(first), dir.join(&leaf)) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        } else {
            remove_if_present(&dir.join(first))?;
        }
        for other in sources {
            remove_if_present(&dir.join(other))?;
        }
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

fn delete_version_files(dir: &Path, versions: &[u64]) -> Result<(), StorageError> {
    let doomed = list_versions(dir)?
        .into_iter()
        .filter(|(v, _)| versions.contains(&v.version))
        .flat_map(|(_, files)| files);
    for file in doomed {
        remove_if_present(&dir.join(file))?;
    }
    Ok(())
}

/// (room, docid) of every history directory under `root` holding a version.
fn documents_in(root: &Path) -> Result<Vec<(String, String)>, StorageError> {
    let mut documents = Vec::new();
    for room in dir_names(root)? {
        for doc in dir_names(&root.join(&room))? {
            if list_versions(&root.join(&room).join(&doc))?.is_empty() {
                continue;
            }
            match (segment_name(&room), segment_name(&doc)) {
                (Some(room), Some(doc)) => documents.push((room, doc)),
                _ => tracing::debug!(
                    room = %crate::log_text::bounded(&room),
                    "history of a shortened room or docid name left out of the listing"
                ),
            }
        }
    }
    documents.sort();
    Ok(documents)
}

/// The subdirectory names of `dir` (none when it does not exist).
fn dir_names(dir: &Path) -> Result<Vec<String>, StorageError> {
    names_in(dir, |_, is_dir| is_dir)
}

fn delete_items(dir: &Path, references: &[String]) -> Result<(), StorageError> {
    for reference in references.iter().filter(|r| is_item_name(r)) {
        match std::fs::remove_file(dir.join(reference)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[async_trait]
impl Storage for FsStorage {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        let dir = self.doc_dir(room, docid);
        blocking(move || load_dir(&dir)).await
    }

    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        _state_vector: &[u8],
    ) -> Result<String, StorageError> {
        let dir = self.doc_dir(room, docid);
        let update = update.to_vec();
        blocking(move || write_item(&dir, &update)).await
    }

    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        let dir = self.doc_dir(room, docid);
        let references = references.to_vec();
        blocking(move || delete_items(&dir, &references)).await
    }

    fn name(&self) -> &'static str {
        "fs"
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
        let dir = self.history_dir(room, docid);
        let (version, update) = (version.clone(), update.to_vec());
        blocking(move || put_version_file(&dir, &version, &update)).await
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        let dir = self.history_dir(room, docid);
        blocking(move || {
            Ok(list_versions(&dir)?
                .into_iter()
                .map(|(version, _)| version)
                .collect())
        })
        .await
    }

    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let dir = self.history_dir(room, docid);
        blocking(move || load_version_file(&dir, version)).await
    }

    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        check_name(name)?;
        let dir = self.history_dir(room, docid);
        let name = name.to_string();
        blocking(move || name_version_file(&dir, version, &name)).await
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        let dir = self.history_dir(room, docid);
        let versions = versions.to_vec();
        blocking(move || delete_version_files(&dir, &versions)).await
    }

    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        let root = self.dir.join(history::HISTORY_ROOT);
        blocking(move || documents_in(&root)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_names_stay_inside_the_directory() {
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment(""), "%");
        assert_eq!(path_segment("a/b"), "a%2Fb");
        assert_eq!(path_segment(".hidden"), ".hidden");
    }

    #[test]
    fn long_names_fit_in_a_file_name() {
        let long = "é".repeat(5000);
        let segment = path_segment(&long);
        assert!(segment.len() <= FILE_NAME_MAX, "{}", segment.len());
        assert_ne!(segment, path_segment(&"é".repeat(5001)));
    }

    #[test]
    fn stale_temporary_files_are_removed_when_an_item_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("room").join("index");
        std::fs::create_dir_all(&doc).unwrap();
        let stale = doc.join(".dead-writer.tmp");
        let fresh = doc.join(".live-writer.tmp");
        std::fs::write(&stale, b"partial").unwrap();
        std::fs::write(&fresh, b"partial").unwrap();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let reference = write_item(&doc, b"item").unwrap();
        assert!(!stale.exists(), "a stale temporary file was kept");
        assert!(fresh.exists(), "a temporary file being written was removed");
        assert_eq!(load_dir(&doc).unwrap().len(), 1);
        assert!(doc.join(reference).exists());
    }

    #[tokio::test]
    async fn stale_temporary_files_are_removed_when_storage_opens() {
        let dir = tempfile::tempdir().unwrap();
        let doc = dir.path().join("room").join("index");
        std::fs::create_dir_all(&doc).unwrap();
        let stale = doc.join(".dead-writer.tmp");
        std::fs::write(&stale, b"partial").unwrap();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        FsStorage::open(dir.path()).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while stale.exists() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            !stale.exists(),
            "opening the storage kept a stale temporary file"
        );
    }

    #[test]
    fn foreign_references_are_ignored() {
        assert!(is_item_name("5b7e0f1c-1b0e-4a55-9a43-2f5d1f1a2b3c"));
        assert!(!is_item_name("../x"));
        assert!(!is_item_name(".tmp"));
        assert!(!is_item_name(""));
    }
}
