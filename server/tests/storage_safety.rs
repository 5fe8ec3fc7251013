//! What compaction guarantees when storage fails: nothing is trimmed that storage
//! does not hold, failed passes are retried at the task debounce (no busy loop,
//! one warning per failure), replaced items are deleted only after the new one is
//! stored, and duplicates left by a failed delete merge harmlessly and are
//! cleaned up later. The worker runs on a real redis-server over a storage
//! wrapper that fails on demand; the server reads the same files directly.
//! Retry pauses alone are counted on tokio's paused clock over in-memory streams.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use websocket::storage::fs::FsStorage;
use websocket::storage::{Storage, StorageError, StoredItem, Version};
use websocket::streams::{Append, MemoryStreams, RedisStreams, Streams};
use websocket::worker::{Worker, WorkerSettings};

const DEBOUNCE: Duration = Duration::from_millis(200);
const LIFETIME: Duration = Duration::from_millis(500);

/// fs storage whose operations fail on demand, counting calls and checking that
/// a delete never removes the newest item nor leaves the document without items.
struct Flaky {
    inner: FsStorage,
    fail_load: AtomicBool,
    fail_put: AtomicBool,
    fail_history: AtomicBool,
    /// How many of the next deletes fail.
    fail_deletes: AtomicUsize,
    failures: AtomicUsize,
    deletes: AtomicUsize,
    newest: Mutex<Option<String>>,
    violations: Mutex<Vec<String>>,
}

impl Flaky {
    async fn open(dir: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            inner: FsStorage::open(dir).await.unwrap(),
            fail_load: AtomicBool::new(false),
            fail_put: AtomicBool::new(false),
            fail_history: AtomicBool::new(false),
            fail_deletes: AtomicUsize::new(0),
            failures: AtomicUsize::new(0),
            deletes: AtomicUsize::new(0),
            newest: Mutex::new(None),
            violations: Mutex::new(Vec::new()),
        })
    }

    fn fail(&self, what: &str) -> StorageError {
        self.failures.fetch_add(1, Ordering::SeqCst);
        StorageError::Backend(format!("injected {what} failure"))
    }

    fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }
}

#[async_trait]
impl Storage for Flaky {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        if self.fail_load.load(Ordering::SeqCst) {
            return Err(self.fail("load"));
        }
        self.inner.load(room, docid).await
    }

    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        state_vector: &[u8],
    ) -> Result<String, StorageError> {
        if self.fail_put.load(Ordering::SeqCst) {
            return Err(self.fail("put"));
        }
        let reference = self.inner.put(room, docid, update, state_vector).await?;
        *self.newest.lock().unwrap() = Some(reference.clone());
        Ok(reference)
    }

    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        let newest = self.newest.lock().unwrap().clone();
        if newest.as_ref().is_some_and(|n| references.contains(n)) {
            self.violations
                .lock()
                .unwrap()
                .push(format!("deleting the newest item {newest:?}"));
        }
        let remaining = self
            .inner
            .load(room, docid)
            .await?
            .into_iter()
            .filter(|item| !references.contains(&item.reference))
            .count();
        if remaining == 0 {
            self.violations
                .lock()
                .unwrap()
                .push(format!("deleting every item: {references:?}"));
        }
        let failing = self
            .fail_deletes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(self.fail("delete"));
        }
        self.inner.delete(room, docid, references).await
    }

    fn name(&self) -> &'static str {
        "flaky"
    }

    async fn put_version(
        &self,
        room: &str,
        docid: &str,
        version: &Version,
        update: &[u8],
    ) -> Result<(), StorageError> {
        if self.fail_history.load(Ordering::SeqCst) {
            return Err(self.fail("put_version"));
        }
        self.inner.put_version(room, docid, version, update).await
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        if self.fail_history.load(Ordering::SeqCst) {
            return Err(self.fail("versions"));
        }
        self.inner.versions(room, docid).await
    }

    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.load_version(room, docid, version).await
    }

    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        self.inner.name_version(room, docid, version, name).await
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        self.inner.delete_versions(room, docid, versions).await
    }

    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        self.inner.documents_with_history().await
    }
}

/// Everything logged at warn or above, as text.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// Capture this thread's logs (the tests run on a current-thread runtime, so
    /// that covers the worker) until the guard is dropped.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn lines_with(&self, needle: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

/// A worker over `storage` on this Redis, running until the token is cancelled.
async fn spawn_worker(
    redis: &RedisServer,
    storage: Arc<Flaky>,
) -> (CancellationToken, JoinHandle<()>) {
    spawn_worker_with(redis, storage, DEBOUNCE).await
}

async fn spawn_worker_with(
    redis: &RedisServer,
    storage: Arc<Flaky>,
    task_debounce: Duration,
) -> (CancellationToken, JoinHandle<()>) {
    let streams = Arc::new(RedisStreams::connect(&redis.url(), "y").await.unwrap());
    spawn_worker_on(streams, storage, task_debounce)
}

/// A worker over `storage` and `streams`, running until the token is cancelled.
fn spawn_worker_on(
    streams: Arc<dyn Streams>,
    storage: Arc<Flaky>,
    task_debounce: Duration,
) -> (CancellationToken, JoinHandle<()>) {
    let worker = Worker::new(
        streams,
        storage,
        WorkerSettings {
            task_debounce,
            min_message_lifetime: LIFETIME,
            update_callback: None,
            history: None,
        },
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    let task = tokio::spawn(async move { worker.run(token).await });
    (stop, task)
}

/// A fleet of one server (fs storage in `data`, no worker) on this Redis.
async fn start_server(redis: &RedisServer, data: &std::path::Path) -> websocket::app::Instance {
    let mut cfg = config(Some(redis), data);
    cfg.redis.task_debounce = DEBOUNCE.as_millis() as u64;
    cfg.redis.min_message_lifetime = LIFETIME.as_millis() as u64;
    start_roles(&cfg, true, false).await
}

async fn text_of_new_client(server: &websocket::app::Instance, room: &str) -> String {
    let client = YClient::connect(&url(server, room)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text("t")
}

/// Failed loads and puts leave the stream untouched and the task claimable; it
/// is retried once per debounce, each failure logged once with its error; once
/// storage works again, everything is stored and trimmed.
#[tokio::test]
async fn storage_failures_never_trim_and_are_retried_at_the_debounce() {
    let (logs, _guard) = Logs::capture();
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let server = start_server(&redis, data.path()).await;
    let storage = Flaky::open(data.path()).await;
    storage.fail_load.store(true, Ordering::SeqCst);
    let (stop, worker) = spawn_worker(&redis, storage.clone()).await;
    let key = "y:room:failing:index";
    let mut conn = redis_conn(&redis).await;

    let writer = YClient::connect(&url(&server, "failing")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "kept");
    eventually("the edit appended", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, key).await >= 1 }
    })
    .await;
    let entries = stream_entries(&mut conn, key).await;

    // Loads fail for 2 s, then puts for 2 s.
    for (phase, flag) in [("load", &storage.fail_load), ("put", &storage.fail_put)] {
        flag.store(true, Ordering::SeqCst);
        storage.failures.store(0, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(2)).await;
        flag.store(false, Ordering::SeqCst);
        let failures = storage.failures.load(Ordering::SeqCst);
        // One attempt per debounce at most (10 in 2 s), and retried: the pause
        // between attempts grows from the debounce to 1 s while they fail.
        assert!(
            (2..=10).contains(&failures),
            "{phase}: {failures} attempts in 2 s with a 200 ms debounce"
        );
        assert_eq!(
            stream_entries(&mut conn, key).await[..entries.len()],
            entries[..],
            "{phase} failing: nothing trimmed"
        );
        assert!(stored_files(data.path(), "failing").is_empty());
    }
    let warnings = logs.lines_with("compaction failed");
    let injected = logs.lines_with("injected");
    assert!(
        warnings
            .iter()
            .all(|line| line.contains("WARN") && line.contains("injected")),
        "{warnings:#?}"
    );
    assert_eq!(
        warnings.len(),
        injected.len(),
        "one warning per failure, nothing else about it: {injected:#?}"
    );

    eventually("stored and trimmed once storage works", SOON, || {
        let mut conn = conn.clone();
        let data = data.path().to_path_buf();
        async move { stored_files(&data, "failing").len() == 1 && xlen(&mut conn, key).await == 0 }
    })
    .await;
    assert_eq!(text_of_new_client(&server, "failing").await, "kept");
    assert!(
        storage.violations().is_empty(),
        "{:?}",
        storage.violations()
    );
    stop.cancel();
    worker.await.unwrap();
    server.shutdown().await.unwrap();
}

/// A delete that fails after the new item was stored (as a crash between the two
/// would) leaves duplicates: the document stays whole, they are not multiplied
/// by later passes, and they are cleaned up once deletes work again.
#[tokio::test]
async fn failed_deletes_leave_duplicates_that_merge_and_are_cleaned_up() {
    let (logs, _guard) = Logs::capture();
    let data = tempfile::tempdir().unwrap();
    let redis = RedisServer::start().unwrap();
    let server = start_server(&redis, data.path()).await;
    let storage = Flaky::open(data.path()).await;
    let (stop, worker) = spawn_worker(&redis, storage.clone()).await;
    let key = "y:room:dups:index";
    let conn = redis_conn(&redis).await;
    let files = || stored_files(data.path(), "dups");
    let compacted = |count: usize| {
        let conn = conn.clone();
        let data = data.path().to_path_buf();
        move || {
            let mut conn = conn.clone();
            let data = data.clone();
            async move { stored_files(&data, "dups").len() == count && xlen(&mut conn, key).await == 0 }
        }
    };

    let writer = YClient::connect(&url(&server, "dups")).await.unwrap();
    writer.wait_synced(SOON).await.unwrap();
    writer.text_insert("t", 0, "one");
    eventually("the first item", SOON, compacted(1)).await;

    // One failed delete: the next pass (the stream still holds the edit) finds
    // the new item holds everything and deletes the old one, with no new edit.
    storage.fail_deletes.store(1, Ordering::SeqCst);
    writer.text_insert("t", 3, " two");
    eventually("the new item beside the old", SOON, || async {
        files().len() == 2
    })
    .await;
    assert_eq!(text_of_new_client(&server, "dups").await, "one two");
    eventually("the duplicate deleted without a new edit", SOON, || async {
        files().len() == 1
    })
    .await;
    assert_eq!(text_of_new_client(&server, "dups").await, "one two");

    // Deletes keep failing: later passes do not store more copies.
    storage.fail_deletes.store(usize::MAX, Ordering::SeqCst);
    let deletes_before = storage.deletes.load(Ordering::SeqCst);
    writer.text_insert("t", 7, " three");
    eventually("the new item beside the old", SOON, || async {
        files().len() == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(files().len(), 2, "no copy per pass while deletes fail");
    assert!(
        storage.deletes.load(Ordering::SeqCst) >= deletes_before + 2,
        "later passes tried to delete the duplicate"
    );
    assert_eq!(text_of_new_client(&server, "dups").await, "one two three");

    // Deletes work again: the next compaction leaves one item.
    storage.fail_deletes.store(0, Ordering::SeqCst);
    writer.text_insert("t", 13, " four");
    eventually("one item again", SOON, compacted(1)).await;
    assert_eq!(
        text_of_new_client(&server, "dups").await,
        "one two three four"
    );

    assert!(
        storage.violations().is_empty(),
        "{:?}",
        storage.violations()
    );
    assert!(!logs
        .lines_with("could not delete replaced items")
        .is_empty());
    assert!(logs.lines_with("compaction failed").is_empty());
    stop.cancel();
    worker.await.unwrap();
    server.shutdown().await.unwrap();
}

/// Even with no debounce at all, a failing backend is retried with pauses that
/// grow to 1 s, not in a busy loop, and each failure is logged once. The clock
/// is tokio's, paused, so the attempts are counted exactly; the streams are in
/// memory because a real Redis would answer on the wall clock while the paused
/// one jumps ahead.
#[tokio::test(start_paused = true)]
async fn a_failing_backend_does_not_spin_without_debounce() {
    let (logs, _guard) = Logs::capture();
    let data = tempfile::tempdir().unwrap();
    let storage = Flaky::open(data.path()).await;
    storage.fail_load.store(true, Ordering::SeqCst);
    let streams = Arc::new(MemoryStreams::new("y"));
    let (stop, worker) = spawn_worker_on(streams.clone(), storage.clone(), Duration::ZERO);
    let update = {
        use yrs::{ReadTxn, StateVector, Text, Transact};
        let doc = yrs::Doc::new();
        let text = doc.get_or_insert_text("t");
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "x");
        txn.encode_state_as_update_v1(&StateVector::default())
    };
    let message = websocket::protocol::encode_sync_update(&update);
    for room in ["zero-a", "zero-b"] {
        streams
            .append(&format!("y:room:{room}:index"), &message)
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let failures = storage.failures.load(Ordering::SeqCst);
    // Two tasks per batch, batches at 0, 50, 150, 350, 750, 1550 and 2550 ms
    // (pauses of 50, 100, 200, 400, 800, 1000 ms): 7 batches in 3 s.
    assert_eq!(failures, 14, "{failures} attempts in 3 s");
    assert_eq!(logs.lines_with("compaction failed").len(), failures);
    stop.cancel();
    worker.await.unwrap();
}

/// A history that cannot be written costs only the version: the compaction
/// stores the document and succeeds, with one warning; once history works
/// again, the next changed compaction keeps version 1.
#[tokio::test]
async fn a_failing_history_never_fails_a_compaction() {
    use websocket::storage::Retention;
    use websocket::streams::TaskQueue;
    use websocket::worker::Outcome;

    let (logs, _guard) = Logs::capture();
    let data = tempfile::tempdir().unwrap();
    let storage = Flaky::open(data.path()).await;
    storage.fail_history.store(true, Ordering::SeqCst);
    let streams = Arc::new(MemoryStreams::new("y"));
    let worker = Worker::new(
        streams.clone(),
        storage.clone(),
        WorkerSettings {
            task_debounce: Duration::ZERO,
            min_message_lifetime: Duration::ZERO,
            update_callback: None,
            history: Some(Retention {
                keep_all_ms: 3_600_000,
                hourly_ms: 0,
                daily_ms: None,
            }),
        },
    );
    let key = "y:room:nohistory:index";
    let doc = yrs::Doc::with_client_id(3);
    let text = {
        use yrs::Text;
        let text = doc.get_or_insert_text("t");
        move |txn: &mut yrs::TransactionMut, at: u32, chunk: &str| text.insert(txn, at, chunk)
    };
    for (round, chunk) in ["a", "b"].into_iter().enumerate() {
        let update = {
            use yrs::{ReadTxn, Transact};
            let before = doc.transact().state_vector();
            let mut txn = doc.transact_mut();
            text(&mut txn, round as u32, chunk);
            txn.encode_state_as_update_v1(&before)
        };
        streams
            .append(key, &websocket::protocol::encode_sync_update(&update))
            .await
            .unwrap();
        let tasks = streams
            .claim_tasks("test", Duration::ZERO, 10)
            .await
            .unwrap();
        assert_eq!(tasks.len(), 1);
        let outcome = worker.compact(&tasks[0]).await.unwrap();
        assert!(
            matches!(outcome, Outcome::Compacted { stored: true, .. }),
            "{outcome:?}"
        );
        storage.fail_history.store(false, Ordering::SeqCst);
    }
    let warnings = logs.lines_with("could not keep a version");
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(warnings[0].contains("WARN") && warnings[0].contains("injected"));
    assert!(logs.lines_with("compaction failed").is_empty());
    assert_eq!(
        storage
            .inner
            .load("nohistory", "index")
            .await
            .unwrap()
            .len(),
        1
    );
    let versions = storage.inner.versions("nohistory", "index").await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [1]);
}
