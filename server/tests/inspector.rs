//! The inspector's data end to end (docs/inspector.md), on the embedded bus
//! and on a real redis-server: a yrs client edits a room; the inspector lists
//! it with its stream, queued compaction and connection, shows its content,
//! awareness and stored items, keeps versions, gives a version's content and
//! rolls back through the document API, which the client sees live. The page
//! itself is tested in Chromium by the conformance suite (`pages.rs`).

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::{RedisServer, YClient};
use websocket::app::Instance;

const ROOM: &str = "inspected";

/// An HTTP client of one instance's inspector.
struct Inspector {
    base: String,
    http: reqwest::Client,
}

impl Inspector {
    fn new(instance: &Instance) -> Self {
        Self {
            base: format!("http://{}/inspector", instance.metrics_addr.unwrap()),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> Value {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "GET {path}");
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "POST {path}");
        response.json().await.unwrap()
    }
}

/// The whole walk through one instance's inspector.
async fn inspect(instance: &Instance) {
    let mut client = YClient::connect(&url(instance, ROOM)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();
    client.text_insert("t", 0, "first");
    client
        .set_awareness(r#"{"user":{"name":"<b>Ada</b>"}}"#)
        .unwrap();
    let inspector = Inspector::new(instance);

    let page = reqwest::get(&inspector.base).await.unwrap();
    assert_eq!(page.status(), 200);
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("/inspector/inspector.js"));

    eventually("the room listed with its connection", SOON, || async {
        let rooms = inspector.get("/data/rooms").await;
        rooms["rooms"].as_array().unwrap().iter().any(|room| {
            room["room"] == ROOM
                && room["docid"] == "index"
                && room["length"].as_u64() >= Some(1)
                && room["task_pending"] == true
                && room["connections"] == 1
                && room["age_ms"].is_u64()
        })
    })
    .await;
    let view_path = format!("/data/room?room={ROOM}");
    eventually("the content and the awareness", SOON, || async {
        let view = inspector.get(&view_path).await;
        view["roots"]["json"] == json!({ "t": "first" })
            && view["roots"]["kinds"] == json!([{ "name": "t", "kind": "text" }])
            && view["awareness"]
                .as_array()
                .unwrap()
                .iter()
                .any(|state| state["state"]["user"]["name"] == "<b>Ada</b>")
    })
    .await;

    let kept = inspector
        .post(&format!("/api/document/{ROOM}/flush"), json!({}))
        .await;
    let first = kept["version"].as_u64().expect("a version kept");
    let view = inspector.get(&view_path).await;
    assert_eq!(view["storage"]["items"].as_array().unwrap().len(), 1);
    assert!(view["storage"]["items"][0]["bytes"].as_u64().unwrap() > 0);

    client.text_insert("t", 5, " and second");
    eventually("the edit shown live", SOON, || async {
        inspector.get(&view_path).await["roots"]["json"]["t"] == "first and second"
    })
    .await;
    let version = inspector
        .get(&format!("/data/version?room={ROOM}&version={first}"))
        .await;
    assert_eq!(version["roots"]["json"], json!({ "t": "first" }));

    let rolled = inspector
        .post(
            &format!("/api/document/{ROOM}/rollback"),
            json!({ "version": first }),
        )
        .await;
    assert_eq!(rolled["changed"], true);
    client
        .wait_until("the rollback", SOON, |c| c.text("t") == "first")
        .await
        .unwrap();
    let view = inspector.get(&view_path).await;
    assert!(view["versions"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn the_inspector_on_the_embedded_bus() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(None, data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    inspect(&instance).await;
    instance.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_inspector_on_redis() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.metrics.port = Some(0);
    let instance = start(&cfg).await;
    inspect(&instance).await;
    instance.shutdown().await.unwrap();
}
