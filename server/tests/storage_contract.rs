//! One contract, every storage backend: each test starts the real service (or a
//! faithful emulator) on a free port, opens the backend through the configuration
//! path the server uses, and runs the same checks. A missing service fails the
//! test with the reason; nothing is skipped.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use testkit::{FakeGcsServer, PostgresServer, S3Server};
use websocket::config::Config;
use websocket::storage::{
    apply_retention, history_prefix, merge_items, object_prefix, open_storage,
    state_vector_of_update, Retention, Storage, StorageBackend, StorageConfig, StorageError,
    StoredItem, Version,
};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

/// Load (room, docid) and merge its items into one v2 update (`None` when nothing
/// is stored), with the references of every item merged.
async fn load_doc_state(
    storage: &dyn Storage,
    room: &str,
    docid: &str,
) -> Result<(Option<Vec<u8>>, Vec<String>), StorageError> {
    let items = storage.load(room, docid).await?;
    let merged = merge_items(&items)?;
    Ok((
        merged,
        items.into_iter().map(|item| item.reference).collect(),
    ))
}

/// Rooms whose names need encoding, with `encodeURIComponent` of each.
const SPECIAL_ROOMS: [(&str, &str); 4] = [
    ("my room", "my%20room"),
    ("a/b", "a%2Fb"),
    ("ä:ö", "%C3%A4%3A%C3%B6"),
    ("x%20y", "x%2520y"),
];

/// How a backend's raw contents are inspected, independently of the code under test.
enum Layout {
    /// No inspection (memory).
    Opaque,
    /// Object names (`enc(room)/enc(doc)/uuid`): files under a directory, or the
    /// objects of a bucket.
    Objects(Box<dyn Fn() -> Vec<String> + Send + Sync>),
    /// PostgreSQL rows as `room|doc|r|length(update)`.
    Rows(Box<dyn Fn() -> Vec<String> + Send + Sync>),
}

/// A text document "t" written by `client` with `content`, as a full-state v2 update,
/// and its v1 state vector.
fn text_doc(client: u64, content: &str) -> (Vec<u8>, Vec<u8>) {
    let doc = Doc::with_client_id(client);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    text.insert(&mut txn, 0, content);
    (
        txn.encode_state_as_update_v2(&StateVector::default()),
        txn.state_vector().encode_v1(),
    )
}

/// The text "t" after applying every v2 update, in the given order.
fn apply_all<'a>(updates: impl IntoIterator<Item = &'a [u8]>) -> String {
    let doc = Doc::with_client_id(999_999);
    let text = doc.get_or_insert_text("t");
    let mut txn = doc.transact_mut();
    for update in updates {
        let update = Update::decode_v2(update).expect("stored update decodes");
        txn.apply_update(update).expect("stored update applies");
    }
    text.get_string(&txn)
}

fn item_text(items: &[StoredItem]) -> String {
    apply_all(items.iter().map(|item| item.update.as_slice()))
}

async fn merged_text(storage: &dyn Storage, room: &str, doc: &str) -> String {
    let (merged, _) = load_doc_state(storage, room, doc)
        .await
        .expect("load_doc_state");
    apply_all(merged.as_deref())
}

fn refs(items: &[StoredItem]) -> BTreeSet<String> {
    items.iter().map(|item| item.reference.clone()).collect()
}

/// A deterministic, poorly compressible lowercase text of `len` bytes.
fn noise(len: usize) -> String {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}

/// The contract every backend must meet.
async fn contract(storage: Arc<dyn Storage>, layout: Layout) {
    let s = storage.as_ref();

    // A document never stored is empty.
    assert!(s.load("nobody", "index").await.unwrap().is_empty());
    let (merged, references) = load_doc_state(s, "nobody", "index").await.unwrap();
    assert!(merged.is_none() && references.is_empty());
    assert_eq!(s.state_vector("nobody", "index").await.unwrap(), None);
    s.delete("nobody", "index", &["1".into(), "nope".into()])
        .await
        .unwrap();

    // Persist, load, merge.
    let parts: Vec<(Vec<u8>, Vec<u8>)> = (1..=3u64)
        .map(|client| text_doc(client, &format!("<{client}>")))
        .collect();
    let mut put_refs = BTreeSet::new();
    for (update, sv) in &parts {
        put_refs.insert(s.put("merge", "index", update, sv).await.unwrap());
    }
    assert_eq!(put_refs.len(), 3, "references are unique");
    let items = s.load("merge", "index").await.unwrap();
    assert_eq!(refs(&items), put_refs, "load returns what put stored");
    let expected = apply_all(parts.iter().map(|(u, _)| u.as_slice()));
    assert_eq!(expected.len(), 9);
    assert_eq!(item_text(&items), expected);
    let (merged, merged_refs) = load_doc_state(s, "merge", "index").await.unwrap();
    assert_eq!(
        merged_refs.iter().cloned().collect::<BTreeSet<_>>(),
        put_refs
    );
    assert_eq!(apply_all(merged.as_deref()), expected);
    // Documents are separate: another docid of the room holds nothing.
    assert!(s.load("merge", "other").await.unwrap().is_empty());

    // Deleting some references leaves exactly the others.
    let ordered: Vec<String> = put_refs.iter().cloned().collect();
    s.delete("merge", "index", &ordered[..2]).await.unwrap();
    let left = s.load("merge", "index").await.unwrap();
    assert_eq!(refs(&left), BTreeSet::from([ordered[2].clone()]));
    // Deleting again, or references of another document, changes nothing.
    s.delete("merge", "index", &ordered[..2]).await.unwrap();
    s.delete("merge", "other", &ordered[2..]).await.unwrap();
    assert_eq!(s.load("merge", "index").await.unwrap().len(), 1);

    // The state vector of a stored document.
    let (update, sv) = text_doc(42, "state vector");
    s.put("sv", "index", &update, &sv).await.unwrap();
    let stored = s
        .state_vector("sv", "index")
        .await
        .unwrap()
        .expect("stored sv");
    assert_eq!(
        StateVector::decode_v1(&stored).unwrap(),
        StateVector::decode_v1(&sv).unwrap()
    );
    let (other, other_sv) = text_doc(43, "more");
    s.put("sv", "index", &other, &other_sv).await.unwrap();
    let both = s
        .state_vector("sv", "index")
        .await
        .unwrap()
        .expect("merged sv");
    let both = StateVector::decode_v1(&both).unwrap();
    assert_eq!(both.get(&yrs::ClientID::new(42)), 12);
    assert_eq!(both.get(&yrs::ClientID::new(43)), 4);

    // Concurrent persists of one document are all retrievable.
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let storage = storage.clone();
            tokio::spawn(async move {
                let (update, sv) = text_doc(100 + i, &format!("[{i}]"));
                storage.put("busy", "index", &update, &sv).await
            })
        })
        .collect();
    let mut concurrent_refs = BTreeSet::new();
    for task in tasks {
        concurrent_refs.insert(task.await.unwrap().unwrap());
    }
    assert_eq!(concurrent_refs.len(), 8);
    let items = s.load("busy", "index").await.unwrap();
    assert_eq!(refs(&items), concurrent_refs);
    let text = merged_text(s, "busy", "index").await;
    for i in 0..8 {
        assert!(text.contains(&format!("[{i}]")), "{text:?} lacks [{i}]");
    }

    // A 10 MB document survives the round trip byte for byte.
    let big_text = noise(10 * 1024 * 1024);
    let (big, big_sv) = text_doc(7, &big_text);
    assert!(big.len() >= 10 * 1024 * 1024);
    let big_ref = s.put("big", "index", &big, &big_sv).await.unwrap();
    let items = s.load("big", "index").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].reference, big_ref);
    assert!(items[0].update == big, "10 MB document changed in storage");
    assert!(merged_text(s, "big", "index").await == big_text);
    s.delete("big", "index", &[big_ref]).await.unwrap();

    // Names that need encoding: stored apart, laid out as y-redis does.
    let docids = ["index", "doc/ä"];
    let mut stored_refs = Vec::new();
    for (room, _) in SPECIAL_ROOMS {
        for docid in docids {
            let (update, sv) = text_doc(5, &format!("{room}#{docid}"));
            let reference = s.put(room, docid, &update, &sv).await.unwrap();
            stored_refs.push((room, docid, reference));
        }
    }
    for (room, docid, reference) in &stored_refs {
        let items = s.load(room, docid).await.unwrap();
        assert_eq!(
            refs(&items),
            BTreeSet::from([reference.clone()]),
            "{room}/{docid}"
        );
        assert_eq!(item_text(&items), format!("{room}#{docid}"));
    }
    match &layout {
        Layout::Opaque => {}
        Layout::Objects(list) => {
            let names: BTreeSet<String> = list().into_iter().collect();
            for (room, encoded_room) in SPECIAL_ROOMS {
                let prefix = format!("{encoded_room}/");
                let found: BTreeSet<&String> =
                    names.iter().filter(|n| n.starts_with(&prefix)).collect();
                let expected: BTreeSet<String> = stored_refs
                    .iter()
                    .filter(|(r, _, _)| *r == room)
                    .map(|(_, docid, reference)| {
                        let uuid = reference.rsplit('/').next().unwrap();
                        let parsed = uuid::Uuid::parse_str(uuid).expect("item name is a UUID");
                        assert_eq!(parsed.get_version_num(), 4);
                        let encoded_doc = if *docid == "index" {
                            "index"
                        } else {
                            "doc%2F%C3%A4"
                        };
                        format!("{encoded_room}/{encoded_doc}/{uuid}")
                    })
                    .collect();
                assert_eq!(
                    found.into_iter().cloned().collect::<BTreeSet<_>>(),
                    expected,
                    "object names of room {room:?}"
                );
            }
            assert_eq!(object_prefix("x%20y", "index"), "x%2520y/index/");
        }
        Layout::Rows(rows) => {
            let rows: BTreeSet<String> = rows().into_iter().collect();
            for (room, docid, reference) in &stored_refs {
                let row = format!("{room}|{docid}|{reference}|");
                assert!(
                    rows.iter().any(|r| r.starts_with(&row)),
                    "no raw row {row:?} in {rows:?}"
                );
            }
        }
    }

    // Names longer than any backend allows (file names, object names, index
    // rows) are stored and read back, and rooms sharing a long prefix stay apart.
    let long_rooms = [
        format!("{}1", noise(10_000)),
        format!("{}2", noise(10_000)),
        "ä".repeat(3_000),
    ];
    let mut long_refs = Vec::new();
    for (i, room) in long_rooms.iter().enumerate() {
        let (update, sv) = text_doc(60 + i as u64, &format!("long {i}"));
        long_refs.push(s.put(room, "index", &update, &sv).await.unwrap());
    }
    for (i, room) in long_rooms.iter().enumerate() {
        let items = s.load(room, "index").await.unwrap();
        assert_eq!(refs(&items), BTreeSet::from([long_refs[i].clone()]));
        assert_eq!(item_text(&items), format!("long {i}"));
        assert!(s.state_vector(room, "index").await.unwrap().is_some());
    }
    s.delete(&long_rooms[0], "index", &long_refs[..1])
        .await
        .unwrap();
    assert!(s.load(&long_rooms[0], "index").await.unwrap().is_empty());
    assert_eq!(s.load(&long_rooms[1], "index").await.unwrap().len(), 1);

    // A crash between put and delete leaves two full states; they merge into the
    // same content, and the next compaction cleans up.
    let doc = Doc::with_client_id(77);
    let text = doc.get_or_insert_text("t");
    let first = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "hello");
        txn.encode_state_as_update_v2(&StateVector::default())
    };
    let r1 = s.put("crash", "index", &first, &[]).await.unwrap();
    let (second, second_sv) = {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 5, " world");
        text.remove_range(&mut txn, 0, 1);
        (
            txn.encode_state_as_update_v2(&StateVector::default()),
            txn.state_vector().encode_v1(),
        )
    };
    let r2 = s.put("crash", "index", &second, &second_sv).await.unwrap();
    // ...crash: r1 is never deleted.
    let (merged, references) = load_doc_state(s, "crash", "index").await.unwrap();
    assert_eq!(references.len(), 2);
    let merged = merged.unwrap();
    assert_eq!(apply_all([merged.as_slice()]), "ello world");
    let merged_sv = state_vector_of_update(&merged).unwrap();
    let r3 = s.put("crash", "index", &merged, &merged_sv).await.unwrap();
    s.delete("crash", "index", &[r1, r2]).await.unwrap();
    let items = s.load("crash", "index").await.unwrap();
    assert_eq!(refs(&items), BTreeSet::from([r3]));
    assert_eq!(item_text(&items), "ello world");

    // Corrupt stored bytes are an error, not a panic.
    s.put("corrupt", "index", &[0xff, 0xfe, 0x00, 0x42], &[])
        .await
        .unwrap();
    match load_doc_state(s, "corrupt", "index").await {
        Err(StorageError::Corrupt(_)) => {}
        other => panic!("corrupt item gave {other:?}"),
    }

    history_contract(s, &layout).await;
}

/// What a backend holds outside the history namespace, raw: object or file
/// names not under `$history/`, or the rows of y-redis's table; `None` for
/// memory. The second part: object or file names under `$history/`.
fn raw_view(layout: &Layout) -> Option<(BTreeSet<String>, BTreeSet<String>)> {
    match layout {
        Layout::Opaque => None,
        Layout::Objects(list) => {
            let (history, items) = list().into_iter().partition(|n| n.starts_with("$history/"));
            Some((items, history))
        }
        Layout::Rows(rows) => Some((rows().into_iter().collect(), BTreeSet::new())),
    }
}

/// 2023-11-14 22:13:20 UTC.
const T0: u64 = 1_700_000_000_000;

fn version(number: u64, timestamp: u64, name: Option<&str>) -> Version {
    Version {
        version: number,
        timestamp,
        name: name.map(str::to_string),
    }
}

/// Versions: kept, listed oldest first, loaded, replaced, named, deleted,
/// thinned by retention, listed by document; in a namespace y-redis never sees.
async fn history_contract(s: &dyn Storage, layout: &Layout) {
    let before = raw_view(layout);

    // No versions yet.
    assert!(s.versions("hist", "index").await.unwrap().is_empty());
    assert_eq!(s.load_version("hist", "index", 1).await.unwrap(), None);
    assert!(!s.name_version("hist", "index", 1, "x").await.unwrap());
    s.delete_versions("hist", "index", &[1]).await.unwrap();

    // Put out of order, listed oldest first, each loaded as stored.
    let states: Vec<Vec<u8>> = (1..=3u64)
        .map(|i| text_doc(200 + i, &format!("v{i}")).0)
        .collect();
    for n in [2u64, 1, 3] {
        s.put_version(
            "hist",
            "index",
            &version(n, T0 + n * 1000, None),
            &states[n as usize - 1],
        )
        .await
        .unwrap();
    }
    assert_eq!(
        s.versions("hist", "index").await.unwrap(),
        (1..=3u64)
            .map(|n| version(n, T0 + n * 1000, None))
            .collect::<Vec<_>>()
    );
    for n in 1..=3u64 {
        let loaded = s.load_version("hist", "index", n).await.unwrap();
        assert_eq!(loaded.as_deref(), Some(states[n as usize - 1].as_slice()));
    }
    assert_eq!(s.load_version("hist", "index", 4).await.unwrap(), None);
    assert!(s.versions("hist", "other").await.unwrap().is_empty());

    // The same number again replaces the version.
    let (again, _) = text_doc(300, "v2 again");
    s.put_version("hist", "index", &version(2, T0 + 5000, None), &again)
        .await
        .unwrap();
    let versions = s.versions("hist", "index").await.unwrap();
    assert_eq!(versions.len(), 3);
    assert_eq!(versions[1], version(2, T0 + 5000, None));
    let loaded = s.load_version("hist", "index", 2).await.unwrap().unwrap();
    assert_eq!(apply_all([loaded.as_slice()]), "v2 again");

    // Naming: listed with its name, same content; named again, renamed.
    assert!(s
        .name_version("hist", "index", 1, "release 1/ä-x")
        .await
        .unwrap());
    let versions = s.versions("hist", "index").await.unwrap();
    assert_eq!(versions[0], version(1, T0 + 1000, Some("release 1/ä-x")));
    assert_eq!(versions.len(), 3);
    assert_eq!(
        s.load_version("hist", "index", 1).await.unwrap().as_deref(),
        Some(states[0].as_slice())
    );
    assert!(s.name_version("hist", "index", 1, "final").await.unwrap());
    assert!(s.name_version("hist", "index", 1, "final").await.unwrap());
    let versions = s.versions("hist", "index").await.unwrap();
    assert_eq!(versions[0], version(1, T0 + 1000, Some("final")));
    assert_eq!(versions.len(), 3);
    for bad in ["".to_string(), "ä".repeat(100)] {
        let refused = s.name_version("hist", "index", 1, &bad).await;
        assert!(
            matches!(refused, Err(StorageError::Config(_))),
            "{refused:?}"
        );
    }

    // Deleting: only the given versions, unknown ones ignored.
    s.delete_versions("hist", "index", &[2, 9]).await.unwrap();
    let numbers: Vec<u64> = s
        .versions("hist", "index")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [1, 3]);

    // Retention keeps the named and the latest version.
    let nothing = Retention {
        keep_all_ms: 0,
        hourly_ms: 0,
        daily_ms: Some(0),
    };
    let far = T0 + 365 * 86_400_000;
    assert!(apply_retention(s, "hist", "index", &nothing, far)
        .await
        .unwrap()
        .is_empty());
    s.put_version("hist", "index", &version(4, T0 + 9000, None), &again)
        .await
        .unwrap();
    assert_eq!(
        apply_retention(s, "hist", "index", &nothing, far)
            .await
            .unwrap(),
        [3]
    );
    let numbers: Vec<u64> = s
        .versions("hist", "index")
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(numbers, [1, 4]);

    // Names that need encoding, and names too long to store as they are.
    for (room, _) in SPECIAL_ROOMS {
        let (update, _) = text_doc(7, &format!("{room} v1"));
        s.put_version(room, "hist/ä", &version(1, T0, None), &update)
            .await
            .unwrap();
    }
    for (room, _) in SPECIAL_ROOMS {
        assert_eq!(
            s.versions(room, "hist/ä").await.unwrap(),
            [version(1, T0, None)]
        );
        let loaded = s.load_version(room, "hist/ä", 1).await.unwrap().unwrap();
        assert_eq!(apply_all([loaded.as_slice()]), format!("{room} v1"));
    }
    let long_room = format!("{}h", noise(5_000));
    s.put_version(&long_room, "index", &version(1, T0, Some("n")), &again)
        .await
        .unwrap();
    assert_eq!(
        s.versions(&long_room, "index").await.unwrap(),
        [version(1, T0, Some("n"))]
    );

    // Every document with versions is listed; every one listed is addressable.
    let documents = s.documents_with_history().await.unwrap();
    assert!(documents.contains(&("hist".to_string(), "index".to_string())));
    for (room, _) in SPECIAL_ROOMS {
        assert!(
            documents.contains(&(room.to_string(), "hist/ä".to_string())),
            "{room:?} not in {documents:?}"
        );
    }
    for (room, doc) in &documents {
        assert!(
            !s.versions(room, doc).await.unwrap().is_empty(),
            "{room:?}/{doc:?}"
        );
    }

    // y-redis's view is untouched: no items for these documents, nothing new
    // outside `$history/`, and versions laid out as documented.
    assert!(s.load("hist", "index").await.unwrap().is_empty());
    for (room, _) in SPECIAL_ROOMS {
        assert!(s.load(room, "hist/ä").await.unwrap().is_empty());
    }
    if let (Some((items_before, _)), Some((items_after, history))) = (before, raw_view(layout)) {
        assert_eq!(items_before, items_after, "history changed y-redis's view");
        if let Layout::Objects(_) = layout {
            let prefix = history_prefix("hist", "index");
            assert_eq!(prefix, "$history/hist/index/");
            let own: BTreeSet<&String> =
                history.iter().filter(|n| n.starts_with(&prefix)).collect();
            let expected = BTreeSet::from([
                format!("{prefix}00000000000000000001-{}-final", T0 + 1000),
                format!("{prefix}00000000000000000004-{}", T0 + 9000),
            ]);
            assert_eq!(own.into_iter().cloned().collect::<BTreeSet<_>>(), expected);
            for (_, encoded_room) in SPECIAL_ROOMS {
                let name =
                    format!("$history/{encoded_room}/hist%2F%C3%A4/00000000000000000001-{T0}");
                assert!(history.contains(&name), "no {name} in {history:?}");
            }
            assert!(history.iter().all(|n| n.len() <= 1024));
        }
    }

    // Deleting every version of a document takes it out of the listing.
    s.delete_versions("hist", "index", &[1, 4]).await.unwrap();
    assert!(s.versions("hist", "index").await.unwrap().is_empty());
    let documents = s.documents_with_history().await.unwrap();
    assert!(!documents.contains(&("hist".to_string(), "index".to_string())));
}

fn config(backend: StorageBackend) -> StorageConfig {
    StorageConfig {
        backend: Some(backend),
        ..StorageConfig::default()
    }
}

/// Relative paths of the files under `dir`, hidden ones excluded.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with('.') {
                let relative = path.strip_prefix(dir).unwrap();
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_backend_meets_the_contract() {
    let storage = open_storage(&config(StorageBackend::Memory)).await.unwrap();
    assert_eq!(storage.name(), "memory");
    contract(storage, Layout::Opaque).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fs_backend_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let cfg = StorageConfig {
        dir: Some(root.clone()),
        ..StorageConfig::default()
    };
    assert_eq!(cfg.backend_kind(), StorageBackend::Fs);
    let storage = open_storage(&cfg).await.unwrap();
    assert_eq!(storage.name(), "fs");
    let listed = root.clone();
    contract(
        storage.clone(),
        Layout::Objects(Box::new(move || files_under(&listed))),
    )
    .await;

    // A temporary file of an interrupted write is never loaded, and no temporary
    // files are left behind by completed writes.
    let doc_dir = root.join("tmp").join("index");
    std::fs::create_dir_all(&doc_dir).unwrap();
    std::fs::write(doc_dir.join(".0f8e1b6c-half-written.tmp"), b"\x00\x01").unwrap();
    assert!(storage.load("tmp", "index").await.unwrap().is_empty());
    let leftovers: Vec<String> = std::fs::read_dir(root.join("merge").join("index"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Names that are not directory names stay inside the storage directory.
    let (update, sv) = text_doc(1, "dots");
    storage.put("..", ".", &update, &sv).await.unwrap();
    assert_eq!(storage.load("..", ".").await.unwrap().len(), 1);
    assert!(root.join("%2E%2E").join("%2E").is_dir());
    assert!(!dir.path().join("index").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backend_meets_the_contract() {
    let server =
        Arc::new(PostgresServer::start().expect("PostgreSQL must be installed (ci/setup.sh)"));
    let cfg = StorageConfig {
        postgres: Some(server.url()),
        ..StorageConfig::default()
    };
    assert_eq!(cfg.backend_kind(), StorageBackend::Postgres);
    let storage = open_storage(&cfg).await.unwrap();
    assert_eq!(storage.name(), "postgres");
    let inspect = server.clone();
    let rows = move || {
        inspect
            .psql("SELECT room, doc, r, length(update) FROM yredis_docs_v1")
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    };
    contract(storage, Layout::Rows(Box::new(rows))).await;

    // The table is y-redis's, column for column.
    let columns = server
        .psql(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'yredis_docs_v1' ORDER BY ordinal_position",
        )
        .unwrap();
    assert_eq!(
        columns.lines().collect::<Vec<_>>(),
        [
            "room|text",
            "doc|text",
            "r|integer",
            "update|bytea",
            "sv|bytea"
        ]
    );
    let key = server
        .psql(
            "SELECT string_agg(a.attname, ',' ORDER BY array_position(i.indkey, a.attnum)) \
             FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid \
             AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = 'yredis_docs_v1'::regclass AND i.indisprimary",
        )
        .unwrap();
    assert_eq!(key.trim(), "room,doc,r");
    // Versions are in a table of their own, names as they are.
    let history = server
        .psql("SELECT room, doc, version, ts, name FROM yws_history_v1 ORDER BY room")
        .unwrap();
    assert!(
        history
            .lines()
            .any(|row| row == format!("my room|hist/ä|1|{T0}|")),
        "{history}"
    );
    let columns = server
        .psql(
            "SELECT column_name, data_type FROM information_schema.columns \
             WHERE table_name = 'yws_history_v1' ORDER BY ordinal_position",
        )
        .unwrap();
    assert_eq!(
        columns.lines().collect::<Vec<_>>(),
        [
            "room|text",
            "doc|text",
            "version|bigint",
            "ts|bigint",
            "name|text",
            "update|bytea"
        ]
    );
    // The state vector column holds what put was given.
    let (update, sv) = text_doc(9, "sv column");
    let r = open_storage(&cfg)
        .await
        .unwrap()
        .put("svcol", "index", &update, &sv)
        .await
        .unwrap();
    let stored = server
        .psql(&format!(
            "SELECT encode(sv, 'hex') FROM yredis_docs_v1 WHERE r = {r}"
        ))
        .unwrap();
    assert_eq!(stored.trim(), hex::encode(&sv));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_connection_loss_is_recovered() {
    let mut server = PostgresServer::start().expect("PostgreSQL must be installed (ci/setup.sh)");
    let storage = open_storage(&StorageConfig {
        postgres: Some(server.url()),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    let (update, sv) = text_doc(1, "before");
    storage.put("r", "index", &update, &sv).await.unwrap();

    server.stop();
    let failed = storage.load("r", "index").await;
    assert!(
        matches!(failed, Err(StorageError::Backend(_) | StorageError::Io(_))),
        "a stopped server is an error, not a panic or stale data: {failed:?}"
    );

    server.restart().unwrap();
    let items = storage.load("r", "index").await.unwrap();
    assert_eq!(item_text(&items), "before");
    storage.put("r", "index", &update, &sv).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s3_backend_meets_the_contract() {
    let server =
        Arc::new(S3Server::start().expect("moto's S3 server must be installed (ci/setup.sh)"));
    let mut config = Config::default();
    config
        .apply_env(|name| match name {
            "S3_ENDPOINT" => Some("127.0.0.1".into()),
            "S3_PORT" => Some(server.port().to_string()),
            "S3_SSL" => Some("false".into()),
            "S3_ACCESS_KEY" => Some(server.access_key().into()),
            "S3_SECRET_KEY" => Some(server.secret_key().into()),
            // moto takes any credentials, temporary ones too: every request
            // below carries the token (signed; see the botocore test).
            "S3_SESSION_TOKEN" => Some("moto-session-token".into()),
            _ => None,
        })
        .unwrap();
    let cfg = config.storage;
    assert_eq!(cfg.backend_kind(), StorageBackend::S3);
    assert_eq!(cfg.s3_session_token.as_deref(), Some("moto-session-token"));
    // The bucket (default `ydocs`) does not exist yet: opening creates it.
    let storage = open_storage(&cfg).await.unwrap();
    assert_eq!(storage.name(), "s3");
    assert!(server.object_names("ydocs").unwrap().is_empty());
    let inspect = server.clone();
    let names = move || inspect.object_names("ydocs").unwrap();
    contract(storage, Layout::Objects(Box::new(names))).await;

    // More than one listing page (1000 keys) is read in full.
    let storage = open_storage(&cfg).await.unwrap();
    let (update, sv) = text_doc(3, "p");
    let puts: Vec<_> = (0..1005)
        .map(|_| {
            let storage = storage.clone();
            let update = update.clone();
            let sv = sv.clone();
            tokio::spawn(async move { storage.put("paged", "index", &update, &sv).await })
        })
        .collect();
    let mut written = BTreeSet::new();
    for put in puts {
        written.insert(put.await.unwrap().unwrap());
    }
    let items = storage.load("paged", "index").await.unwrap();
    assert_eq!(refs(&items), written);
    let all: Vec<String> = written.into_iter().collect();
    storage.delete("paged", "index", &all).await.unwrap();
    assert!(storage.load("paged", "index").await.unwrap().is_empty());
}

/// A request as an S3 server receives it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Recomputes the signature of captured requests with botocore, AWS's own Python
/// implementation, from the raw request line and headers as received.
const BOTOCORE_SIGNATURES: &str = r#"
import sys, json
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
d = json.load(sys.stdin)
for r in d["requests"]:
    headers = dict(r["headers"])
    signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    req = AWSRequest(method=r["method"], url="http://" + headers["host"] + r["uri"],
                     data=bytes.fromhex(r["body"]),
                     headers={k: v for k, v in headers.items() if k in signed})
    req.context["timestamp"] = headers["x-amz-date"]
    auth = S3SigV4Auth(Credentials(d["ak"], d["sk"], d["token"]), "s3", d["region"])
    print(auth.signature(auth.string_to_sign(req, auth.canonical_request(req)), req))
"#;

/// Every request the S3 backend sends (bucket check, upload, listing, download,
/// multi-object delete) carries the signature botocore computes for it, for names
/// that need encoding, with static and with temporary credentials (session
/// token); refused credentials are a configuration error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_requests_are_signed_as_botocore_signs_them() {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::response::Response;

    let captured: Arc<std::sync::Mutex<Vec<Captured>>> = Arc::default();
    let sink = captured.clone();
    let app = axum::Router::new().fallback(move |request: Request| {
        let sink = sink.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap()
                .to_vec();
            let uri = parts.uri.to_string();
            let headers: Vec<(String, String)> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let authorization = parts
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            sink.lock().unwrap().push(Captured {
                method: parts.method.to_string(),
                uri: uri.clone(),
                headers,
                body,
            });
            let reply = |status: u16, body: &str| {
                Response::builder()
                    .status(status)
                    .body(Body::from(body.to_string()))
                    .unwrap()
            };
            if authorization.contains("Credential=REFUSED/") {
                return reply(403, "");
            }
            if uri.contains("list-type=2") {
                reply(
                    200,
                    "<ListBucketResult><Contents><Key>x%2520y/doc%2F%C3%A4/u1</Key></Contents>\
                     <IsTruncated>false</IsTruncated></ListBucketResult>",
                )
            } else if uri.contains("?delete") {
                reply(200, "<DeleteResult></DeleteResult>")
            } else {
                reply(200, "stored")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let (ak, sk, region) = (
        "AKIDEXAMPLE",
        "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        "eu-central-1",
    );
    let cfg = StorageConfig {
        s3_endpoint: Some(format!("http://{addr}")),
        s3_access_key: Some(ak.into()),
        s3_secret_key: Some(sk.into()),
        s3_region: Some(region.into()),
        s3_bucket: Some("my-docs".into()),
        ..StorageConfig::default()
    };
    let storage = open_storage(&cfg).await.unwrap();
    storage
        .put("ä:ö (1)!", "doc/ä", b"update", b"sv")
        .await
        .unwrap();
    let items = storage.load("x%20y", "doc/ä").await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].reference, "x%2520y/doc%2F%C3%A4/u1");
    storage
        .delete("x%20y", "doc/ä", &["x%2520y/doc%2F%C3%A4/u1".to_string()])
        .await
        .unwrap();

    let requests = captured.lock().unwrap().clone();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "PUT", "GET", "GET", "POST"]);
    assert!(requests[1]
        .uri
        .starts_with("/my-docs/%25C3%25A4%253A%25C3%25B6%2520%281%29%21/doc%252F%25C3%25A4/"));
    assert!(requests[4].headers.iter().any(|(k, _)| k == "content-md5"));
    assert_signed_as_botocore_signs(&requests, ak, sk, None, region);

    // Temporary credentials: the session token goes along on every request,
    // signed.
    captured.lock().unwrap().clear();
    let token = "FwoGZXIvYXdzEXAMPLE//token+with/base64=";
    let temporary = StorageConfig {
        s3_session_token: Some(token.into()),
        ..cfg.clone()
    };
    let storage = open_storage(&temporary).await.unwrap();
    storage.put("room", "doc", b"update", b"sv").await.unwrap();
    storage
        .delete("room", "doc", &["room/doc/u1".to_string()])
        .await
        .unwrap();
    let requests = captured.lock().unwrap().clone();
    let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
    assert_eq!(methods, ["HEAD", "PUT", "POST"]);
    for request in &requests {
        let header = |name: &str| {
            request
                .headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(header("x-amz-security-token"), Some(token));
        assert!(header("authorization")
            .unwrap_or_default()
            .contains(";x-amz-security-token,"));
    }
    assert_signed_as_botocore_signs(&requests, ak, sk, Some(token), region);

    // Credentials the server refuses stop the start with a configuration error.
    let mut refused = cfg.clone();
    refused.s3_access_key = Some("REFUSED".into());
    let result = open_storage(&refused).await.err();
    assert!(
        matches!(result, Some(StorageError::Config(_))),
        "{result:?}"
    );
}

/// Each request carries the signature botocore computes for it from these
/// credentials, in this region's scope.
fn assert_signed_as_botocore_signs(
    requests: &[Captured],
    ak: &str,
    sk: &str,
    token: Option<&str>,
    region: &str,
) {
    let input = serde_json::json!({
        "ak": ak, "sk": sk, "token": token, "region": region,
        "requests": requests.iter().map(|r| serde_json::json!({
            "method": r.method,
            "uri": r.uri,
            "headers": r.headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(),
            "body": hex::encode(&r.body),
        })).collect::<Vec<_>>(),
    });
    let mut python = std::process::Command::new("python3")
        .args(["-c", BOTOCORE_SIGNATURES])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with botocore (installed with moto) must be available");
    {
        use std::io::Write;
        let mut stdin = python.stdin.take().unwrap();
        stdin.write_all(input.to_string().as_bytes()).unwrap();
    }
    let output = python.wait_with_output().unwrap();
    assert!(output.status.success(), "botocore failed");
    let expected: Vec<String> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(expected.len(), requests.len());
    for (request, signature) in requests.iter().zip(&expected) {
        let sent = request
            .headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        assert!(
            sent.ends_with(&format!("Signature={signature}")),
            "{} {}: sent {sent}, botocore computes {signature}",
            request.method,
            request.uri
        );
        assert!(sent.contains(&format!("/{region}/s3/aws4_request")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gcs_backend_meets_the_contract() {
    let server =
        Arc::new(FakeGcsServer::start().expect("fake-gcs-server must be installed (ci/setup.sh)"));
    server.create_bucket("ydocs-test").unwrap();
    let mut config = Config::default();
    config.storage.bucket = Some("ydocs-test".into());
    let endpoint = server.endpoint();
    config
        .apply_env(|name| (name == "STORAGE_EMULATOR_HOST").then(|| endpoint.clone()))
        .unwrap();
    let cfg = config.storage;
    assert_eq!(cfg.backend_kind(), StorageBackend::Gcs);
    let storage = open_storage(&cfg).await.unwrap();
    assert_eq!(storage.name(), "gcs");
    let inspect = server.clone();
    let names = move || inspect.object_names("ydocs-test").unwrap();
    contract(storage, Layout::Objects(Box::new(names))).await;

    // A bucket that does not exist is a configuration error.
    let mut missing = cfg.clone();
    missing.bucket = Some("no-such-bucket".into());
    let refused = open_storage(&missing).await.err();
    assert!(
        matches!(refused, Some(StorageError::Config(_))),
        "{refused:?}"
    );
}

/// Opening a backend whose server is unreachable fails, quickly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backends_fail_at_start() {
    let port = testkit::free_port().unwrap();
    let configs = [
        StorageConfig {
            postgres: Some(format!("postgres://yredis@127.0.0.1:{port}/postgres")),
            ..StorageConfig::default()
        },
        StorageConfig {
            s3_endpoint: Some(format!("http://127.0.0.1:{port}")),
            s3_access_key: Some("a".into()),
            s3_secret_key: Some("b".into()),
            ..StorageConfig::default()
        },
        StorageConfig {
            bucket: Some("ydocs".into()),
            gcs_endpoint: Some(format!("127.0.0.1:{port}")),
            ..StorageConfig::default()
        },
    ];
    for cfg in configs {
        let started = Instant::now();
        let result = open_storage(&cfg).await;
        let elapsed = started.elapsed();
        assert!(
            result.is_err(),
            "{:?} opened without a server",
            cfg.backend_kind()
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "{:?} took {elapsed:?} to fail",
            cfg.backend_kind()
        );
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(!message.is_empty());
    }

    // An fs directory that cannot be created is a configuration error.
    let file = tempfile::NamedTempFile::new().unwrap();
    let blocked = StorageConfig {
        dir: Some(file.path().join("sub")),
        ..StorageConfig::default()
    };
    assert!(matches!(
        open_storage(&blocked).await,
        Err(StorageError::Config(_))
    ));
}
