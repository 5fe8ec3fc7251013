//! The document HTTP API (docs/api.md) end to end: an instance with its worker
//! on a real redis-server, and each of the five storage backends (fs, memory,
//! PostgreSQL, moto's S3, fake-gcs-server), every route called over HTTP while
//! a yrs client sits in the room and sees the writes live. Then the bad
//! inputs, the secret and bearer tokens, and that the OpenAPI document and the
//! router agree.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::callback::Reply;
use testkit::{FakeGcsServer, PermissionCallback, PostgresServer, S3Server};
use websocket::app::Instance;
use websocket::auth::{generate_key_pair, mint_token};
use websocket::config::Config;
use websocket::storage::{StorageBackend, StorageConfig};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, Map, ReadTxn, StateVector, Text, Transact, Update};

/// The room as a WebSocket client names it (a raw path segment).
const ROOM: &str = "api%20room";
const BUCKET: &str = "ydocs";

/// An HTTP client of one instance's API.
struct Api {
    base: String,
    http: reqwest::Client,
    secret: Option<String>,
}

/// A response: status and body.
struct Answer {
    status: u16,
    body: Vec<u8>,
    content_type: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|err| {
            panic!("not JSON ({err}): {}", String::from_utf8_lossy(&self.body))
        })
    }

    /// The body is `{"error": "..."}`; returns the message.
    fn error(&self) -> String {
        assert!(
            self.content_type.starts_with("application/json"),
            "errors are JSON: {}",
            self.content_type
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field: {}", self.json()))
            .to_string()
    }
}

impl Api {
    fn new(instance: &Instance, secret: Option<&str>) -> Self {
        Self {
            base: format!("http://{}", instance.local_addr.unwrap()),
            http: reqwest::Client::new(),
            secret: secret.map(str::to_string),
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        let request = match &self.secret {
            Some(secret) => request.header("X-API-Secret", secret),
            None => request,
        };
        let response = request.send().await.expect("the API answers");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = response.bytes().await.unwrap().to_vec();
        Answer {
            status,
            body,
            content_type,
        }
    }

    async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(&body))
            .await
    }

    async fn post_bytes(&self, path: &str, body: Vec<u8>) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).body(body))
            .await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// GET that must answer 200 with JSON.
    async fn get_ok(&self, path: &str) -> Value {
        let answer = self.get(path).await;
        assert_eq!(
            answer.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }

    /// POST that must answer 200 with JSON.
    async fn post_ok(&self, path: &str, body: Value) -> Value {
        let answer = self.post(path, body).await;
        assert_eq!(
            answer.status,
            200,
            "POST {path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        answer.json()
    }
}

/// Entries in a stream.
async fn stream_len(redis: &RedisServer, key: &str) -> u64 {
    let mut connection = redis_conn(redis).await;
    xlen(&mut connection, key).await
}

/// A document's text `t` from a v1 update.
fn text_of_v1(update: &[u8]) -> String {
    let doc = Doc::new();
    doc.transact_mut()
        .apply_update(Update::decode_v1(update).unwrap())
        .unwrap();
    let text = doc.get_or_insert_text("t");
    let txn = doc.transact();
    text.get_string(&txn)
}

/// The `updates` byte array of a JSON answer.
fn updates(value: &Value) -> Vec<u8> {
    serde_json::from_value(value["updates"].clone()).expect("updates is a byte array")
}

/// A v1 update: text `t` = `text` and map `m` = {k: 1}, by a new client.
fn some_update(text: &str) -> Vec<u8> {
    let doc = Doc::new();
    let t = doc.get_or_insert_text("t");
    let m = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    m.insert(&mut txn, "k", 1);
    txn.encode_state_as_update_v1(&StateVector::default())
}

/// The instance configuration of the suite: a fast worker, the given storage.
fn suite_config(redis: &RedisServer, data: &std::path::Path, storage: StorageConfig) -> Config {
    let mut cfg = config(Some(redis), data);
    cfg.storage = storage;
    cfg.redis.task_debounce = 200;
    cfg.redis.min_message_lifetime = 500;
    cfg
}

/// Every route on one backend, in the order an application would use them.
async fn suite(storage: StorageConfig) {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let instance = start(&suite_config(&redis, data.path(), storage)).await;
    let api = Api::new(&instance, None);
    let doc = format!("/api/document/{ROOM}");

    // Nothing there yet.
    assert_eq!(api.get(&doc).await.status, 404);

    let client = YClient::connect(&url(&instance, ROOM)).await.unwrap();
    client.wait_synced(SOON).await.unwrap();

    // Import: appended to the stream, seen live by the client.
    let answer = api
        .post_ok(
            &format!("{doc}/import"),
            json!({ "data": some_update("hello") }),
        )
        .await;
    assert_eq!(answer["id"], ROOM);
    client
        .wait_until("the import", SOON, |c| c.text("t") == "hello")
        .await
        .unwrap();

    // Read back as JSON, raw v1, raw v2.
    let got = api.get_ok(&doc).await;
    assert_eq!(got["id"], ROOM);
    assert_eq!(text_of_v1(&updates(&got)), "hello");
    assert!(got["version"].is_u64() && got["timestamp"].as_u64().unwrap() > 0);
    let raw = api.get(&format!("{doc}?format=binary")).await;
    assert_eq!(raw.status, 200);
    assert_eq!(raw.content_type, "application/octet-stream");
    assert_eq!(text_of_v1(&raw.body), "hello");
    let accept = api
        .send(
            api.http
                .get(format!("{}{doc}?v=2", api.base))
                .header("Accept", "application/octet-stream"),
        )
        .await;
    assert_eq!(accept.status, 200);
    let v2 = Update::decode_v2(&accept.body).expect("a v2 update");
    assert_eq!(text_of_v1(&v2.encode_v1()), "hello");

    // A raw update, appended behind it.
    {
        let tail = Doc::new();
        tail.transact_mut()
            .apply_update(Update::decode_v1(&raw.body).unwrap())
            .unwrap();
        let before = tail.transact().state_vector();
        let t = tail.get_or_insert_text("t");
        let mut txn = tail.transact_mut();
        t.insert(&mut txn, 5, " world");
        drop(txn);
        let diff = tail.transact().encode_state_as_update_v1(&before);
        let answer = api.post_bytes(&format!("{doc}/update"), diff).await;
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
    }
    client
        .wait_until("the raw update", SOON, |c| c.text("t") == "hello world")
        .await
        .unwrap();

    // The root types as JSON.
    let content = api.get_ok(&format!("{doc}/json")).await;
    assert_eq!(content["t"], "hello world");
    assert_eq!(content["m"], json!({ "k": 1 }));

    // Flush: stored now, kept as a version.
    let flushed = api.post_ok(&format!("{doc}/flush"), json!({})).await;
    assert_eq!(flushed["stored"], true, "{flushed}");
    let first = flushed["version"].as_u64().expect("a version was kept");
    let metadata = api.get_ok(&format!("{doc}/history/metadata")).await;
    let numbers: Vec<u64> = metadata
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    assert!(numbers.contains(&first), "{metadata}");

    // An edit, flushed again: a second version.
    client.text_insert("t", 11, "!!!");
    let flushed = loop {
        let flushed = api.post_ok(&format!("{doc}/flush"), json!({})).await;
        if flushed["stored"] == true {
            break flushed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let second = flushed["version"].as_u64().unwrap();
    assert!(second > first);
    let one = api.get_ok(&format!("{doc}/history/version/{first}")).await;
    assert_eq!(text_of_v1(&updates(&one)), "hello world");
    assert_eq!(one["version"], first);
    let all = api.get_ok(&format!("{doc}/history")).await;
    let texts: Vec<String> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|v| text_of_v1(&updates(v)))
        .collect();
    assert!(texts.contains(&"hello world".to_string()), "{texts:?}");
    assert!(texts.contains(&"hello world!!!".to_string()), "{texts:?}");

    // Rollback: the client stays connected and sees it; the rollback is kept,
    // so it can be rolled back in turn.
    let rolled = api
        .post_ok(&format!("{doc}/rollback"), json!({ "version": first }))
        .await;
    assert_eq!(rolled["changed"], true, "{rolled}");
    client
        .wait_until("the rollback", SOON, |c| c.text("t") == "hello world")
        .await
        .unwrap();
    assert_eq!(client.closed(), None, "the client stays connected");
    let before = rolled["before"]
        .as_u64()
        .expect("the state before was kept");
    api.post_ok(&format!("{doc}/rollback"), json!({ "version": before }))
        .await;
    client
        .wait_until("the rollback of the rollback", SOON, |c| {
            c.text("t") == "hello world!!!"
        })
        .await
        .unwrap();

    // A named snapshot.
    let named = api
        .post_ok(
            "/api/document/snapshot",
            json!({ "doc_id": ROOM, "version": first, "name": "first draft" }),
        )
        .await;
    assert_eq!(named["name"], "first draft");
    let metadata = api.get_ok(&format!("{doc}/history/metadata")).await;
    assert!(
        metadata
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["name"] == "first draft"),
        "{metadata}"
    );

    // Copy into a new document, then into one that has content.
    let copy = "api%20copy";
    api.post_ok(&format!("/api/document/{copy}/{ROOM}/copy"), json!({}))
        .await;
    let copied = api.get_ok(&format!("/api/document/{copy}/json")).await;
    assert_eq!(copied["t"], "hello world!!!");
    api.post_ok(
        &format!("/api/document/{copy}/import"),
        json!({ "data": some_update("other") }),
    )
    .await;
    api.post_ok(&format!("/api/document/{copy}/{ROOM}/copy"), json!({}))
        .await;
    let copied = api.get_ok(&format!("/api/document/{copy}/json")).await;
    assert_eq!(copied["t"], "hello world!!!", "{copied}");

    // Retention: nothing young is dropped; named snapshots never are.
    let cleaned = api.post_ok(&format!("{doc}/cleanup"), json!({})).await;
    assert_eq!(cleaned["dropped"], json!([]), "{cleaned}");
    api.post_ok("/api/admin/cleanup", json!({})).await;

    // Close: the client is closed with 4401.
    api.post_ok(&format!("{doc}/close"), json!({})).await;
    client
        .wait_until("the close", SOON, |c| c.closed().is_some())
        .await
        .unwrap();
    assert_eq!(client.closed(), Some(4401));

    // Delete: stream, items and history gone.
    let deleted = api.delete(&doc).await;
    assert_eq!(
        deleted.status,
        200,
        "{}",
        String::from_utf8_lossy(&deleted.body)
    );
    assert_eq!(api.get(&doc).await.status, 404);
    assert_eq!(
        api.get_ok(&format!("{doc}/history/metadata")).await,
        json!([])
    );
    assert_eq!(stream_len(&redis, "y:room:api%2520room:index").await, 0);
    instance.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_fs() {
    let data = tempfile::tempdir().unwrap();
    suite(StorageConfig {
        backend: Some(StorageBackend::Fs),
        dir: Some(data.path().to_path_buf()),
        ..StorageConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_memory() {
    suite(StorageConfig {
        backend: Some(StorageBackend::Memory),
        ..StorageConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_postgres() {
    let server = PostgresServer::start().expect("PostgreSQL must be installed (ci/setup.sh)");
    suite(StorageConfig {
        backend: Some(StorageBackend::Postgres),
        postgres: Some(server.url()),
        ..StorageConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_s3() {
    let server = S3Server::start().expect("moto's S3 server must be installed (ci/setup.sh)");
    suite(StorageConfig {
        backend: Some(StorageBackend::S3),
        s3_endpoint: Some("127.0.0.1".into()),
        s3_port: Some(server.port()),
        s3_ssl: Some(false),
        s3_access_key: Some(server.access_key().into()),
        s3_secret_key: Some(server.secret_key().into()),
        s3_bucket: Some(BUCKET.into()),
        ..StorageConfig::default()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_on_gcs() {
    let server = FakeGcsServer::start().expect("fake-gcs-server must be installed (ci/setup.sh)");
    server.create_bucket(BUCKET).unwrap();
    suite(StorageConfig {
        backend: Some(StorageBackend::Gcs),
        bucket: Some(BUCKET.into()),
        gcs_endpoint: Some(server.endpoint()),
        ..StorageConfig::default()
    })
    .await;
}

/// Bad input gets a clear 4xx with a JSON error, and nothing is appended or
/// deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_changes_nothing() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.api.secret = Some("s3cret".into());
    cfg.api.max_body = 4096;
    let instance = start(&cfg).await;
    let api = Api::new(&instance, Some("s3cret"));
    let doc = format!("/api/document/{ROOM}");
    let key = "y:room:api%2520room:index";

    // A missing or wrong secret.
    for secret in [None, Some("wrong")] {
        let anonymous = Api::new(&instance, secret);
        let answer = anonymous.get(&doc).await;
        assert_eq!(answer.status, 401);
        assert!(answer.error().contains("secret"), "{}", answer.error());
        let answer = anonymous
            .post(
                &format!("{doc}/import"),
                json!({ "data": some_update("x") }),
            )
            .await;
        assert_eq!(answer.status, 401);
    }
    assert_eq!(
        stream_len(&redis, key).await,
        0,
        "nothing appended without the secret"
    );
    // The secret as a bearer token works too.
    let bearer = api
        .send(
            api.http
                .post(format!("{}{doc}/import", api.base))
                .header("Authorization", "Bearer s3cret")
                .json(&json!({ "data": some_update("seed") })),
        )
        .await;
    assert_eq!(bearer.status, 200);
    assert_eq!(stream_len(&redis, key).await, 1);

    // Not an update, a truncated update, not JSON, a byte out of range.
    let update = some_update("hello");
    let cases: Vec<(&str, Value)> = vec![
        ("garbage", json!({ "data": [1, 2, 3, 4, 5, 6, 7] })),
        (
            "truncated",
            json!({ "data": update[..update.len() - 3].to_vec() }),
        ),
        ("not bytes", json!({ "data": [256, 1] })),
        ("no data", json!({ "update": [0, 0] })),
    ];
    for (what, body) in cases {
        let answer = api.post(&format!("{doc}/import"), body).await;
        assert_eq!(answer.status, 400, "{what}");
        assert!(!answer.error().is_empty(), "{what}");
    }
    let answer = api
        .post_bytes(
            &format!("{doc}/update"),
            update[..update.len() - 3].to_vec(),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert!(
        answer.error().contains("not a Yjs update"),
        "{}",
        answer.error()
    );
    let answer = api
        .post_bytes(&format!("{doc}/update?v=2"), vec![9, 9, 9])
        .await;
    assert_eq!(answer.status, 400);
    let answer = api
        .post_bytes(&format!("{doc}/import"), b"{".to_vec())
        .await;
    assert_eq!(answer.status, 400);
    // A body over the limit.
    let answer = api
        .post_bytes(&format!("{doc}/update"), vec![0; 8192])
        .await;
    assert_eq!(answer.status, 413);
    assert!(answer.error().contains("4096"), "{}", answer.error());
    assert_eq!(
        stream_len(&redis, key).await,
        1,
        "nothing appended by a refused request"
    );

    // An unknown version, a version that is no number, a rollback to nothing.
    assert_eq!(
        api.get(&format!("{doc}/history/version/99")).await.status,
        404
    );
    let answer = api.get(&format!("{doc}/history/version/abc")).await;
    assert_eq!(answer.status, 400);
    let answer = api
        .post(&format!("{doc}/rollback"), json!({ "version": 99 }))
        .await;
    assert_eq!(answer.status, 404);
    assert!(answer.error().contains("99"));
    let answer = api
        .post(&format!("{doc}/rollback"), json!({ "version": "one" }))
        .await;
    assert_eq!(answer.status, 400);
    let answer = api
        .post(
            "/api/document/snapshot",
            json!({ "doc_id": ROOM, "version": 99, "name": "x" }),
        )
        .await;
    assert_eq!(answer.status, 404);

    // Hostile room names: too long; markup and dot segments stay names.
    let long = "x".repeat(2000);
    let answer = api.get(&format!("/api/document/{long}")).await;
    assert_eq!(answer.status, 400);
    assert!(answer.error().contains("1024"));
    let answer = api
        .get("/api/document/%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert_eq!(answer.status, 404);
    assert!(
        answer.error().contains("%3Cscript%3E"),
        "{}",
        answer.error()
    );
    let answer = api
        .post(
            "/api/document/..%2F..%2Fetc/import",
            json!({ "data": some_update("dots") }),
        )
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let flushed = api
        .post_ok("/api/document/..%2F..%2Fetc/flush", json!({}))
        .await;
    assert_eq!(flushed["stored"], true);
    assert!(
        std::fs::read_dir(data.path().join("..%252F..%252Fetc")).is_ok(),
        "the room is stored under its encoded name, inside the directory"
    );

    // An unknown route, deleting what does not exist.
    let answer = api.get("/api/nothing/here").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.error(), "no such API route");
    let answer = api.delete("/api/document/never-written").await;
    assert_eq!(answer.status, 404);
    assert_eq!(
        stream_len(&redis, key).await,
        1,
        "nothing deleted by a refused request"
    );
    assert_eq!(api.get_ok(&doc).await["id"], ROOM);
    instance.shutdown().await.unwrap();
}

/// A y-redis token as a bearer: `r` reads, `rw` writes, admin routes need
/// the secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_tokens_are_checked_by_the_permission_callback() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let callback = PermissionCallback::start().await.unwrap();
    callback.reply_user("reader", Reply::grant("r"));
    callback.reply_user("writer", Reply::grant("rw"));
    let (private, public) = generate_key_pair().unwrap();
    let mut cfg = config(Some(&redis), data.path());
    cfg.auth.public_key = Some(public);
    cfg.auth.perm_callback = Some(callback.url().to_string());
    let instance = start(&cfg).await;
    let api = Api::new(&instance, None);
    let token = |user: &str| mint_token(&private, user, Some(Duration::from_secs(60))).unwrap();
    let doc = format!("/api/document/{ROOM}");
    let call = |method: reqwest::Method, path: &str, user: Option<&str>, body: Value| {
        let mut request = api
            .http
            .request(method, format!("{}{path}", api.base))
            .json(&body);
        if let Some(user) = user {
            request = request.bearer_auth(token(user));
        }
        api.send(request)
    };

    let import = json!({ "data": some_update("hi") });
    let path = format!("{doc}/import");
    assert_eq!(
        call(reqwest::Method::POST, &path, None, import.clone())
            .await
            .status,
        401
    );
    let answer = call(reqwest::Method::POST, &path, Some("reader"), import.clone()).await;
    assert_eq!(answer.status, 403);
    assert!(answer.error().contains("read-only"));
    assert_eq!(stream_len(&redis, "y:room:api%2520room:index").await, 0);
    assert_eq!(
        call(reqwest::Method::POST, &path, Some("writer"), import)
            .await
            .status,
        200
    );
    assert_eq!(
        call(reqwest::Method::GET, &doc, Some("reader"), json!({}))
            .await
            .status,
        200
    );
    assert_eq!(
        call(reqwest::Method::GET, &doc, Some("nobody"), json!({}))
            .await
            .status,
        401
    );
    let answer = call(
        reqwest::Method::POST,
        "/api/admin/cleanup",
        Some("writer"),
        json!({}),
    )
    .await;
    assert_eq!(answer.status, 403);
    assert!(answer.error().contains("secret"));
    let answer = call(reqwest::Method::DELETE, &doc, Some("writer"), json!({})).await;
    assert_eq!(answer.status, 403);
    assert_eq!(
        call(reqwest::Method::GET, &doc, Some("reader"), json!({}))
            .await
            .status,
        200
    );
    assert!(
        callback
            .paths()
            .iter()
            .any(|p| p.ends_with(&format!("{ROOM}/reader"))),
        "the callback was asked for the raw room: {:?}",
        callback.paths()
    );
    instance.shutdown().await.unwrap();
}

/// Every route `docs/openapi.json` documents is served, and every served
/// route is documented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_and_the_router_agree() {
    let openapi: Value =
        serde_json::from_str(include_str!("../../docs/openapi.json")).expect("valid JSON");
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = Vec::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "put", "delete", "patch"].contains(&method.as_str()) {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    let mut routed: Vec<(String, String)> = websocket::api::ROUTES
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    documented.sort();
    routed.sort();
    assert_eq!(
        documented, routed,
        "docs/openapi.json and api::ROUTES differ"
    );

    // And the router serves each: no "no such API route" for any of them.
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let instance = start(&config(Some(&redis), data.path())).await;
    let api = Api::new(&instance, None);
    for (method, path) in &documented {
        let path = path
            .replace("{doc_id}", "some-room")
            .replace("{source}", "other-room")
            .replace("{version}", "1");
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let answer = api
            .send(
                api.http
                    .request(method.clone(), format!("{}{path}", api.base))
                    .body("{}"),
            )
            .await;
        assert_ne!(answer.status, 405, "{method} {path}");
        if answer.status == 404 {
            assert_ne!(answer.error(), "no such API route", "{method} {path}");
        }
    }
    instance.shutdown().await.unwrap();
}

/// Versions kept at once through two instances of a fleet (twelve snapshots
/// of the current state, sent together) all get numbers of their own: none
/// replaces another, and every name lands on its own version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_kept_at_once_across_the_fleet_never_share_a_number() {
    let redis = RedisServer::start().expect("redis-server must be installed");
    let data = tempfile::tempdir().unwrap();
    let storage = StorageConfig {
        backend: Some(StorageBackend::Fs),
        dir: Some(data.path().to_path_buf()),
        ..StorageConfig::default()
    };
    let one = start(&suite_config(&redis, data.path(), storage.clone())).await;
    let two = start(&suite_config(&redis, data.path(), storage)).await;
    let apis = [Api::new(&one, None), Api::new(&two, None)];
    let doc = format!("/api/document/{ROOM}");
    apis[0]
        .post_ok(
            &format!("{doc}/import"),
            json!({ "data": some_update("racing") }),
        )
        .await;

    let names: Vec<String> = (0..12).map(|i| format!("draft {i}")).collect();
    let answers = futures_util::future::join_all(names.iter().enumerate().map(|(i, name)| {
        apis[i % 2].post_ok(
            "/api/document/snapshot",
            json!({ "doc_id": ROOM, "name": name }),
        )
    }))
    .await;
    let mut numbers: Vec<u64> = answers
        .iter()
        .map(|a| a["version"].as_u64().expect("a version number"))
        .collect();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers.len(), names.len(), "numbers shared: {answers:?}");

    let metadata = apis[1].get_ok(&format!("{doc}/history/metadata")).await;
    let kept: Vec<&str> = metadata
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    for name in &names {
        assert!(kept.contains(&name.as_str()), "{name} lost: {metadata}");
    }

    // The counter is in Redis beside the stream; deleting the document
    // deletes it too.
    let mut conn = redis_conn(&redis).await;
    let counters: Vec<String> = redis::cmd("KEYS")
        .arg("y:version:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counters, ["y:version:y:room:api%2520room:index"]);
    assert_eq!(apis[0].delete(&doc).await.status, 200);
    let counters: Vec<String> = redis::cmd("KEYS")
        .arg("y:version:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(counters.is_empty(), "{counters:?}");
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}
