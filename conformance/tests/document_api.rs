//! The document API (docs/api.md) in a mixed fleet: an import and a rollback
//! made through a Rust instance's API reach y-websocket clients of a
//! JavaScript instance live, and the versions a Rust worker kept survive the
//! JavaScript worker's compactions of the same room, in shared PostgreSQL.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use conformance::wait::until;
use conformance::{content, EditOp, Fleet, Lang, Role, Sidecar, Storage};
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, Map, ReadTxn, StateVector, Text, Transact, Update};

const SOON: Duration = Duration::from_secs(10);
/// How long a compaction may take to come round.
const COMPACTED: Duration = Duration::from_secs(30);

/// An HTTP client of one Rust instance's API.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let response = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = response.status();
        let text = response.text().await?;
        ensure!(status.is_success(), "{method} {path}: {status} {text}");
        Ok(serde_json::from_str(&text)?)
    }

    async fn get(&self, path: &str) -> Result<Value> {
        self.call(reqwest::Method::GET, path, Value::Null).await
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

/// The normalised `{t, m, a}` content of a v1 update.
fn content_of_v1(update: &[u8]) -> Result<Value> {
    content::of_updates(&[update.to_vec()])
}

/// The normalised content of a stored (v2) item.
fn content_of_v2(update: &[u8]) -> Result<Value> {
    let v1 = Update::decode_v2(update)?.encode_v1();
    content_of_v1(&v1)
}

/// A v1 update setting text `t` and map key `m.by`.
fn update_with(text: &str, by: &str) -> Vec<u8> {
    let doc = Doc::new();
    let t = doc.get_or_insert_text("t");
    let m = doc.get_or_insert_map("m");
    let mut txn = doc.transact_mut();
    t.insert(&mut txn, 0, text);
    m.insert(&mut txn, "by", by);
    txn.encode_state_as_update_v1(&StateVector::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_writes_reach_javascript_clients_and_history_survives_javascript_compaction() {
    let mut fleet = Fleet::builder()
        .storage(Storage::Postgres)
        .rust_servers(1)
        .js_servers(1)
        .rust_workers(1)
        .env("REDIS_TASK_DEBOUNCE", "300")
        .env("REDIS_MIN_MESSAGE_LIFETIME", "600")
        .start()
        .await
        .expect("the fleet starts");
    let sidecar = Sidecar::start().expect("the sidecar starts");
    if let Err(err) = scenario(&mut fleet, &sidecar).await {
        panic!("{err:#}\n{}", fleet.logs());
    }
}

async fn scenario(fleet: &mut Fleet, sidecar: &Sidecar) -> Result<()> {
    let room = "api:mixed%20room";
    let rust = fleet.server(Lang::Rust, 0)?;
    let api = Api {
        base: format!("http://127.0.0.1:{}", rust.port().context("rust port")?),
        http: reqwest::Client::new(),
    };
    let doc = format!("/api/document/{room}");
    let js_base = fleet.server(Lang::Js, 0)?.ws_base();
    let client = sidecar
        .open_client("js-editor", &js_base, room, None)
        .await?;

    // An import through the Rust API reaches the client of the JavaScript
    // instance.
    api.post(
        &format!("{doc}/import"),
        json!({ "data": update_with("hello", "import") }),
    )
    .await?;
    until("the import on the JavaScript client", SOON, || async {
        let seen = client.content().await?;
        Ok((seen["t"] == "hello").then_some(()))
    })
    .await?;

    // The Rust worker compacts it and keeps it as version 1.
    let first = until("a version kept by the Rust worker", COMPACTED, || async {
        let versions = api.get(&format!("{doc}/history/metadata")).await?;
        Ok(versions.as_array().and_then(|v| v.first()).cloned())
    })
    .await?;
    let first_number = first["version"].as_u64().context("version number")?;
    let first_state = api
        .get(&format!("{doc}/history/version/{first_number}"))
        .await?;
    let first_updates: Vec<u8> = serde_json::from_value(first_state["updates"].clone())?;
    let first_content = content_of_v1(&first_updates)?;
    ensure!(first_content["t"] == "hello", "version 1: {first_content}");

    // From now on only the JavaScript worker compacts.
    let rust_worker = fleet.worker(Lang::Rust, 0)?;
    rust_worker.kill();
    fleet.add(Lang::Js, Role::Worker).await?;
    client
        .edit(&[EditOp::TextInsert {
            index: 5,
            text: " world".into(),
        }])
        .await?;
    until(
        "the JavaScript worker storing the edit",
        COMPACTED,
        || async {
            let items = fleet.stored_items()?;
            let ours: Vec<_> = items.iter().filter(|item| item.room == room).collect();
            Ok(match ours.as_slice() {
                [only] => (content_of_v2(&only.update)?["t"] == "hello world").then_some(()),
                _ => None,
            })
        },
    )
    .await?;
    // What the Rust worker kept is still there, whole.
    let versions = api.get(&format!("{doc}/history/metadata")).await?;
    ensure!(
        versions
            .as_array()
            .is_some_and(|v| v.iter().any(|v| v["version"] == first_number)),
        "version {first_number} survives: {versions}"
    );
    let again = api
        .get(&format!("{doc}/history/version/{first_number}"))
        .await?;
    ensure!(
        again["updates"] == first_state["updates"],
        "version {first_number} unchanged"
    );

    // A rollback through the Rust API reaches the JavaScript client.
    let rolled = api
        .post(
            &format!("{doc}/rollback"),
            json!({ "version": first_number }),
        )
        .await?;
    ensure!(rolled["changed"] == true, "{rolled}");
    until("the rollback on the JavaScript client", SOON, || async {
        let seen = content::normalize(&client.content().await?);
        Ok((seen == first_content).then_some(()))
    })
    .await?;
    client.close().await?;
    Ok(())
}
