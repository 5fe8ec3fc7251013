//! Redis down when an instance starts: the instance listens and refuses
//! clearly until Redis answers; with `fail_fast` it refuses to start.

mod common;

use common::*;
use testkit::Handshake;
use websocket::app::{Instance, Roles};

#[tokio::test]
async fn an_instance_started_without_redis_refuses_with_503_until_redis_answers() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    redis.stop();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    let ops = format!("http://{}", instance.metrics_addr.expect("metrics served"));
    let http = reqwest::Client::new();
    let status = |path: &str| {
        let request = http.get(format!("{ops}{path}"));
        async move { request.send().await.unwrap().status().as_u16() }
    };

    assert_eq!(status("/healthz").await, 200);
    assert_eq!(status("/readyz").await, 503);
    match RawClient::try_connect(&url(&instance, "room"), None)
        .await
        .unwrap()
    {
        Handshake::Refused { status, .. } => assert_eq!(status, 503),
        Handshake::Accepted { .. } => panic!("upgraded while redis is down"),
    }

    redis.restart().unwrap();
    eventually("/readyz answering 200", SOON, || async {
        status("/readyz").await == 200
    })
    .await;
    let a = YClient::connect(&url(&instance, "room")).await.unwrap();
    let b = YClient::connect(&url(&instance, "room")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "after redis came up");
    b.wait_until("a's edit", SOON, |c| c.text("t") == "after redis came up")
        .await
        .unwrap();
    let mut conn = redis_conn(&redis).await;
    assert!(xlen(&mut conn, "y:room:room:index").await > 0);
    drop((a, b));
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn with_fail_fast_an_instance_does_not_start_without_redis() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    redis.stop();
    let mut cfg = config(Some(&redis), data.path());
    cfg.redis.fail_fast = true;
    let started = Instance::start(
        &cfg,
        Roles {
            serve: true,
            worker: true,
        },
    )
    .await;
    assert!(started.is_err(), "started without redis despite fail_fast");
}

#[tokio::test]
async fn an_instance_waiting_for_redis_stops_at_once() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    redis.stop();
    let cfg = config(Some(&redis), data.path());
    let instance = start(&cfg).await;
    tokio::time::timeout(SOON, instance.shutdown())
        .await
        .expect("shutdown while waiting for redis")
        .unwrap();
}
