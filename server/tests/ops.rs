//! Operations endpoints: Prometheus metrics, liveness and readiness.

mod common;

use common::*;

fn value(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let data = tempfile::tempdir().unwrap();
    let mut redis = RedisServer::start().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    cfg.redis.task_debounce = 100;
    let instance = start(&cfg).await;
    let ops = format!("http://{}", instance.metrics_addr.expect("metrics served"));
    let http = reqwest::Client::new();
    let get = |path: &str| {
        let request = http.get(format!("{ops}{path}"));
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };

    assert_eq!(get("/healthz").await.0, 200);
    assert_eq!(get("/readyz").await.0, 200);

    let a = YClient::connect(&url(&instance, "counted")).await.unwrap();
    let b = YClient::connect(&url(&instance, "counted")).await.unwrap();
    a.wait_synced(SOON).await.unwrap();
    b.wait_synced(SOON).await.unwrap();
    a.text_insert("t", 0, "x");
    b.wait_until("edit", SOON, |c| c.text("t") == "x")
        .await
        .unwrap();
    eventually("compacted", SOON, || async {
        value(&get("/metrics").await.1, "yws_documents_stored_total") >= 1
    })
    .await;
    let (status, metrics) = get("/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(value(&metrics, "yws_connections_open"), 2);
    assert_eq!(value(&metrics, "yws_connections_total"), 2);
    assert_eq!(value(&metrics, "yws_rooms_open"), 1);
    assert!(value(&metrics, "yws_messages_appended_total") >= 1);
    assert!(value(&metrics, "yws_messages_delivered_total") >= 2);
    assert!(value(&metrics, "yws_compactions_total") >= 1);
    drop(a);
    eventually("one connection left", SOON, || async {
        value(&get("/metrics").await.1, "yws_connections_open") == 1
    })
    .await;

    redis.stop();
    assert_eq!(get("/readyz").await.0, 503, "not ready without Redis");
    assert_eq!(get("/healthz").await.0, 200, "still alive");
    redis.restart().unwrap();
    eventually("ready again", SOON, || async {
        get("/readyz").await.0 == 200
    })
    .await;
    instance.shutdown().await;
}
