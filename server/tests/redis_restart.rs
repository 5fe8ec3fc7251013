//! Redis going away: servers and workers survive and recover once it is back.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn servers_and_workers_recover_after_a_redis_restart() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.redis.task_debounce = 200;
    cfg.redis.min_message_lifetime = 500;
    cfg.metrics.port = Some(0);
    let one = start_roles(&cfg, true, false).await;
    let two = start_roles(&cfg, true, false).await;
    let worker = start_roles(&cfg, false, true).await;

    let a = YClient::connect(&url(&one, "outage")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "stored");
    eventually("stored before the outage", SOON, || async {
        !stored_files(data.path(), "outage").is_empty()
    })
    .await;

    // Redis goes away (losing everything, it has no persistence) and comes back.
    redis.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A client writing meanwhile is told to reconnect: nothing half-stored.
    a.text_insert("t", 6, " lost-in-flight");
    a.wait_until("closed by the server", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(a.closed(), Some(1011));
    redis.restart().unwrap();
    // Both servers notice the restart (within a second or so) and close what
    // is connected then; clients connecting from then on stay.
    for instance in [&one, &two] {
        eventually("the restart noticed", SOON, || async {
            counter(&scrape(instance).await, "yws_redis_restarts_total") >= 1
        })
        .await;
    }

    // Both servers serve again and relay between each other; the stored
    // document is there.
    let mut b = None;
    for _ in 0..50 {
        if let Ok(client) = YClient::connect(&url(&one, "outage")).await {
            if client.wait_synced(Duration::from_secs(2)).await.is_ok() {
                b = Some(client);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let b = b.expect("server one serves again");
    assert_eq!(b.text("t"), "stored");
    let c = YClient::connect(&url(&two, "outage")).await.unwrap();
    c.wait_synced(SOON).await.unwrap();
    b.text_insert("t", 6, " again");
    c.wait_until("relayed after the restart", SOON, |c| {
        c.text("t") == "stored again"
    })
    .await
    .unwrap();
    // The worker queue is back (recreated) and compaction resumes.
    eventually("stored after the restart", SOON, || async {
        let dir = data.path().join("outage/index");
        std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(|e| e.ok()).any(|e| {
                    let doc = yrs::Doc::new();
                    let bytes = std::fs::read(e.path()).unwrap_or_default();
                    let Ok(update) =
                        <yrs::Update as yrs::updates::decoder::Decode>::decode_v2(&bytes)
                    else {
                        return false;
                    };
                    let text = {
                        use yrs::{GetString, Transact};
                        let t = doc.get_or_insert_text("t");
                        if doc.transact_mut().apply_update(update).is_err() {
                            return false;
                        }
                        let txn = doc.transact();
                        t.get_string(&txn)
                    };
                    text == "stored again"
                })
            })
            .unwrap_or(false)
    })
    .await;
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
    worker.shutdown().await.unwrap();
}

#[tokio::test]
async fn clients_are_closed_after_a_redis_restart_and_restore_what_it_lost() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    // Nothing is compacted during the test: only Redis holds the edits.
    cfg.redis.task_debounce = 60_000;
    let instance = start_roles(&cfg, true, false).await;

    let a = YClient::connect(&url(&instance, "amnesia")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.map_set("m", "before", true);
    let conn = redis_conn(&redis).await;
    eventually("the edit appended", SOON, || {
        let mut conn = conn.clone();
        async move { xlen(&mut conn, "y:room:amnesia:index").await > 0 }
    })
    .await;

    // Redis comes back empty while the client sends nothing: its connection
    // never fails, yet what it sent is gone.
    redis.restart().unwrap();
    a.wait_until("closed after the restart", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(a.closed(), Some(1011));

    // Reconnecting with its document, as y-websocket does, restores the edit
    // for everyone; an edit made after the restart integrates too.
    let doc = a.doc.clone();
    drop(a);
    let a = YClient::connect_with(&url(&instance, "amnesia"), doc, None)
        .await
        .unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.map_set("m", "after", true);
    let b = YClient::connect(&url(&instance, "amnesia")).await.unwrap();
    b.wait_until("both edits", SOON, |c| {
        c.content()["m"] == serde_json::json!({"before": true, "after": true})
    })
    .await
    .unwrap();
    instance.shutdown().await.unwrap();
}

/// A connection whose document is still loading when a Redis restart is
/// noticed is closed too, once its initial sync is out: what it loaded may
/// hold what Redis lost, and its client must send its document again. The
/// load is held by a lock on the storage table, so the restart falls inside it.
#[tokio::test]
async fn a_connection_still_loading_its_document_is_closed_after_a_redis_restart() {
    let data = tempfile::tempdir().unwrap();
    let postgres =
        testkit::PostgresServer::start().expect("PostgreSQL must be installed (ci/setup.sh)");
    let mut redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.storage.backend = Some(websocket::storage::StorageBackend::Postgres);
    cfg.storage.postgres = Some(postgres.url());
    cfg.redis.task_debounce = 60_000;
    let instance = start_roles(&cfg, true, false).await;

    // A client in another room, synced before the storage is locked: its
    // close tells when the instance noticed the restart.
    let probe = YClient::connect(&url(&instance, "probe")).await.unwrap();
    probe.wait_synced(SOON).await.unwrap();

    let (locker, connection) = tokio_postgres::connect(&postgres.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE yredis_docs_v1 IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let loading = YClient::connect(&url(&instance, "loading")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        loading
            .wait_synced(Duration::from_millis(200))
            .await
            .is_err(),
        "the load waits for the lock"
    );

    redis.restart().unwrap();
    probe
        .wait_until("the restart noticed", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(probe.closed(), Some(1011));
    assert!(loading.closed().is_none(), "still loading");

    // The load finishes after the restart was noticed: the connection closes
    // all the same.
    locker.batch_execute("COMMIT").await.unwrap();
    loading
        .wait_until("closed after its initial sync", SOON, |c| {
            c.closed().is_some()
        })
        .await
        .unwrap();
    assert_eq!(loading.closed(), Some(1011));
    instance.shutdown().await.unwrap();
}
