//! What each route does. Reads load the document as the worker does (its
//! stream, then storage); writes append to the room's stream as a client
//! would, so every instance and client of the fleet sees them live and the
//! workers compact them.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update};

use super::access::{self, Needs};
use super::call::{Call, MAX_NAME};
use super::{ApiError, Handler};
use crate::document;
use crate::load::{load_doc, LoadedDoc};
use crate::protocol;
use crate::storage::{apply_retention, now_ms, Version, MAX_NAME_BYTES};
use crate::streams::{CloseOrder, StreamId, CLOSE_DELETED, CLOSE_REVOKED};
use crate::versions::keep_next_version;

/// Serve `call` by its route's handler.
pub async fn handle(call: &Call) -> Result<Response, ApiError> {
    match call.route.handler {
        Handler::Get => get(call).await,
        Handler::Json => json_content(call).await,
        Handler::History => history(call).await,
        Handler::HistoryMetadata => history_metadata(call).await,
        Handler::Version => version(call).await,
        Handler::Rollback => rollback(call).await,
        Handler::Snapshot => snapshot(call).await,
        Handler::Flush => flush(call).await,
        Handler::Copy => copy(call).await,
        Handler::Import => import(call).await,
        Handler::Update => update(call).await,
        Handler::Cleanup => cleanup(call).await,
        Handler::CleanupAll => cleanup_all(call).await,
        Handler::Close => close(call).await,
        Handler::Delete => delete(call).await,
        Handler::NotFound => Err(ApiError::NotFound("no such API route".into())),
    }
}

/// The room of the call (`{doc_id}`).
fn room(call: &Call) -> Result<&str, ApiError> {
    call.param("doc_id")
        .ok_or_else(|| ApiError::BadRequest("no document named".into()))
}

/// A document loaded from its stream and storage.
struct Current {
    loaded: LoadedDoc,
    /// Whether anything of it exists: stream entries or stored items.
    exists: bool,
}

async fn load(call: &Call, room: &str) -> Result<Current, ApiError> {
    let state = &call.state;
    let docid = call.docid();
    let key = state.streams.stream_key(room, docid);
    let loaded = load_doc(
        state.streams.as_ref(),
        state.storage.as_ref(),
        &key,
        room,
        docid,
    )
    .await?;
    let exists = loaded.last_id != StreamId::ZERO || !loaded.references.is_empty();
    Ok(Current { loaded, exists })
}

/// Load a document that must exist (404 otherwise).
async fn load_existing(call: &Call, room: &str) -> Result<LoadedDoc, ApiError> {
    let current = load(call, room).await?;
    if !current.exists {
        return Err(ApiError::NotFound(format!(
            "no document {} (docid {})",
            crate::log_text::bounded(room),
            crate::log_text::bounded(call.docid())
        )));
    }
    Ok(current.loaded)
}

/// The whole state of a document, v1 or v2.
fn encode(doc: &Doc, v2: bool) -> Result<Vec<u8>, ApiError> {
    protocol::guard_yrs("encoder", || {
        let txn = doc.transact();
        Ok::<_, String>(if v2 {
            txn.encode_state_as_update_v2(&StateVector::default())
        } else {
            txn.encode_state_as_update_v1(&StateVector::default())
        })
    })
    .map_err(|err| ApiError::Unavailable(format!("document cannot be encoded: {err}")))
}

/// A document made of a stored (v2) version.
fn doc_of_v2(update: &[u8]) -> Result<Doc, ApiError> {
    let doc = Doc::new();
    protocol::guard_yrs("decoder", || {
        let update = Update::decode_v2(update).map_err(|err| err.to_string())?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|err| err.to_string())
    })
    .map_err(|err| ApiError::Unavailable(format!("stored version does not decode: {err}")))?;
    Ok(doc)
}

/// A state as the caller asked for it: raw bytes, or JSON with `fields`
/// plus `updates` as a byte array.
fn state_response(
    call: &Call,
    doc: &Doc,
    mut fields: serde_json::Map<String, Value>,
) -> Result<Response, ApiError> {
    let update = encode(doc, call.v2())?;
    if call.binary() {
        let mut response = update.into_response();
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(response);
    }
    fields.insert("updates".into(), json!(update));
    Ok(json_response(StatusCode::OK, Value::Object(fields)))
}

fn json_response(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn ok(body: Value) -> Result<Response, ApiError> {
    Ok(json_response(StatusCode::OK, body))
}

async fn get(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let loaded = load_existing(call, room).await?;
    let versions = call.state.storage.versions(room, call.docid()).await?;
    let latest = versions.last();
    let mut fields = serde_json::Map::new();
    fields.insert("id".into(), json!(room));
    fields.insert("version".into(), json!(latest.map_or(0, |v| v.version)));
    fields.insert(
        "timestamp".into(),
        json!(latest.map_or(0, |v| v.timestamp).max(loaded.last_id.ms)),
    );
    state_response(call, &loaded.doc, fields)
}

async fn json_content(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let loaded = load_existing(call, room).await?;
    let content =
        document::to_json(&loaded.doc).map_err(|err| ApiError::Unavailable(err.to_string()))?;
    ok(content)
}

async fn history(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let storage = &call.state.storage;
    let mut out = Vec::new();
    for version in storage.versions(room, call.docid()).await? {
        let Some(update) = storage
            .load_version(room, call.docid(), version.version)
            .await?
        else {
            continue;
        };
        let update = doc_of_v2(&update).and_then(|doc| encode(&doc, call.v2()))?;
        let mut entry = json!({
            "updates": update,
            "version": version.version,
            "timestamp": version.timestamp,
        });
        if let Some(name) = version.name {
            entry["name"] = json!(name);
        }
        out.push(entry);
    }
    ok(Value::Array(out))
}

async fn history_metadata(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let versions = call.state.storage.versions(room, call.docid()).await?;
    ok(json!(versions))
}

/// The `{version}` parameter.
fn version_param(call: &Call) -> Result<u64, ApiError> {
    let raw = call.param("version").unwrap_or_default();
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("version {:?} is not a number", raw)))
}

/// A kept version and its document; 404 when there is no such version.
async fn load_version(call: &Call, room: &str, number: u64) -> Result<(Version, Doc), ApiError> {
    let storage = &call.state.storage;
    let docid = call.docid();
    let info = storage
        .versions(room, docid)
        .await?
        .into_iter()
        .find(|v| v.version == number);
    let update = storage.load_version(room, docid, number).await?;
    match (info, update) {
        (Some(info), Some(update)) => Ok((info, doc_of_v2(&update)?)),
        _ => Err(ApiError::NotFound(format!("no version {number}"))),
    }
}

async fn version(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let (info, doc) = load_version(call, room, version_param(call)?).await?;
    let mut fields = serde_json::Map::new();
    fields.insert("version".into(), json!(info.version));
    fields.insert("timestamp".into(), json!(info.timestamp));
    if let Some(name) = info.name {
        fields.insert("name".into(), json!(name));
    }
    state_response(call, &doc, fields)
}

/// Append a v1 update to the room's stream, as a client's sync update.
async fn append_update(call: &Call, room: &str, update: &[u8]) -> Result<(), ApiError> {
    let key = call.state.streams.stream_key(room, call.docid());
    call.state
        .streams
        .append(&key, &protocol::encode_sync_update(update))
        .await?;
    Ok(())
}

/// Keep the document's state as its next version, when versions are kept.
async fn record_version(call: &Call, room: &str, doc: &Doc) -> Result<Option<u64>, ApiError> {
    if !call.state.history {
        return Ok(None);
    }
    Ok(Some(keep_doc(call, room, doc).await?))
}

/// Keep the document's state as its next version; its number.
async fn keep_doc(call: &Call, room: &str, doc: &Doc) -> Result<u64, ApiError> {
    let (number, _) = keep_next_version(
        call.state.streams.as_ref(),
        call.state.storage.as_ref(),
        room,
        call.docid(),
        &encode(doc, true)?,
        now_ms(),
    )
    .await?;
    Ok(number)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    version: u64,
}

async fn rollback(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let body: RollbackBody = call.json()?;
    let (_, target) = load_version(call, room, body.version).await?;
    let current = load(call, room).await?.loaded.doc;
    let before = record_version(call, room, &current).await?;
    let edit = document::revert_to(&current, &target)
        .map_err(|err| ApiError::Unavailable(err.to_string()))?;
    let changed = edit.is_some();
    if let Some(update) = &edit {
        append_update(call, room, update).await?;
    }
    let after = match changed {
        true => record_version(call, room, &current).await?,
        false => before,
    };
    tracing::info!(
        room = %crate::log_text::bounded(room),
        version = body.version,
        changed,
        "document rolled back"
    );
    ok(json!({
        "id": room,
        "version": body.version,
        "changed": changed,
        "before": before,
        "after": after,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotBody {
    doc_id: String,
    #[serde(default)]
    version: Option<u64>,
    name: String,
}

async fn snapshot(call: &Call) -> Result<Response, ApiError> {
    let body: SnapshotBody = call.json()?;
    let room = body.doc_id.as_str();
    if room.len() > MAX_NAME {
        return Err(ApiError::BadRequest(format!(
            "doc_id must be at most {MAX_NAME} bytes"
        )));
    }
    if crate::streams::encode_uri_component(&body.name).len() > MAX_NAME_BYTES {
        return Err(ApiError::BadRequest(format!(
            "name must be at most {MAX_NAME_BYTES} bytes once URI-encoded"
        )));
    }
    if body.name.is_empty() {
        return Err(ApiError::BadRequest("name must not be empty".into()));
    }
    access::authorize(&call.state, &call.headers, room, Needs::Write).await?;
    let number = match body.version {
        Some(number) => number,
        None => {
            let current = load_existing(call, room).await?;
            keep_doc(call, room, &current.doc).await?
        }
    };
    if !call
        .state
        .storage
        .name_version(room, call.docid(), number, &body.name)
        .await?
    {
        return Err(ApiError::NotFound(format!("no version {number}")));
    }
    ok(json!({ "id": room, "version": number, "name": body.name }))
}

async fn flush(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let loaded = load_existing(call, room).await?;
    let storage = &call.state.storage;
    let docid = call.docid();
    let store = loaded.changed || loaded.references.len() > 1;
    let mut version = None;
    if store {
        let (update, state_vector) = loaded.stored_state()?;
        storage.put(room, docid, &update, &state_vector).await?;
        if let Err(err) = storage.delete(room, docid, &loaded.references).await {
            tracing::warn!(room = %crate::log_text::bounded(room), %err, "could not delete replaced items, a later compaction will");
        }
        if loaded.changed {
            version = record_version(call, room, &loaded.doc).await?;
        }
    }
    ok(json!({ "id": room, "stored": store, "version": version }))
}

async fn copy(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let source = call
        .param("source")
        .ok_or_else(|| ApiError::BadRequest("no source document named".into()))?;
    access::authorize(&call.state, &call.headers, source, Needs::Read).await?;
    let from = load_existing(call, source).await?;
    let target = load(call, room).await?;
    let edit = if target.exists {
        document::revert_to(&target.loaded.doc, &from.doc)
            .map_err(|err| ApiError::Unavailable(err.to_string()))?
    } else {
        Some(encode(&from.doc, false)?)
    };
    let changed = edit.is_some();
    if let Some(update) = edit {
        append_update(call, room, &update).await?;
    }
    ok(json!({ "id": room, "source": source, "changed": changed }))
}

/// Check a v1 update as a client's would be checked, and append it.
async fn append_checked(call: &Call, room: &str, update: &[u8]) -> Result<Response, ApiError> {
    protocol::check_update(update)
        .map_err(|reason| ApiError::BadRequest(format!("not a Yjs update: {reason}")))?;
    append_update(call, room, update).await?;
    ok(json!({ "id": room, "appended": update.len() }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    data: Vec<u8>,
}

async fn import(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let body: ImportBody = call.json()?;
    append_checked(call, room, &body.data).await
}

async fn update(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    if call.v2() {
        let update = protocol::guard_yrs("decoder", || {
            Update::decode_v2(&call.body)
                .map(|update| update.encode_v1())
                .map_err(|err| err.to_string())
        })
        .map_err(|reason| ApiError::BadRequest(format!("not a Yjs v2 update: {reason}")))?;
        return append_checked(call, room, &update).await;
    }
    append_checked(call, room, &call.body).await
}

async fn cleanup(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let state = &call.state;
    let dropped = apply_retention(
        state.storage.as_ref(),
        room,
        call.docid(),
        &state.retention,
        now_ms(),
    )
    .await?;
    ok(json!({ "id": room, "dropped": dropped }))
}

async fn cleanup_all(call: &Call) -> Result<Response, ApiError> {
    let state = &call.state;
    let documents = state.storage.documents_with_history().await?;
    let mut dropped = 0;
    for (room, docid) in &documents {
        dropped += apply_retention(
            state.storage.as_ref(),
            room,
            docid,
            &state.retention,
            now_ms(),
        )
        .await?
        .len();
    }
    tracing::info!(documents = documents.len(), dropped, "history cleaned up");
    ok(json!({ "documents": documents.len(), "dropped": dropped }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CloseBody {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The longest close reason: a close frame's payload is at most 125 bytes,
/// two of them the code.
const MAX_REASON: usize = 123;

async fn close(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let body: CloseBody = call.json()?;
    let reason = body.reason.unwrap_or_else(|| "permission revoked".into());
    if reason.len() > MAX_REASON {
        return Err(ApiError::BadRequest(format!(
            "reason must be at most {MAX_REASON} bytes"
        )));
    }
    let order = CloseOrder {
        stream: call.state.streams.stream_key(room, call.docid()),
        user: body.user,
        code: CLOSE_REVOKED,
        reason,
    };
    call.state.streams.publish_close(&order).await?;
    ok(json!({ "id": room, "code": order.code, "user": order.user }))
}

async fn delete(call: &Call) -> Result<Response, ApiError> {
    let room = room(call)?;
    let current = load(call, room).await?;
    let storage = &call.state.storage;
    let docid = call.docid();
    let versions = version_numbers(storage.as_ref(), room, docid).await?;
    if !current.exists && versions.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no document {}",
            crate::log_text::bounded(room)
        )));
    }
    let key = call.state.streams.stream_key(room, docid);
    call.state
        .streams
        .publish_close(&CloseOrder {
            stream: key.clone(),
            user: None,
            code: CLOSE_DELETED,
            reason: "document deleted".into(),
        })
        .await?;
    call.state.streams.delete_stream(&key).await?;
    storage
        .delete(room, docid, &current.loaded.references)
        .await?;
    storage.delete_versions(room, docid, &versions).await?;
    sweep_late_items(storage.as_ref(), room, docid).await?;
    tracing::info!(room = %crate::log_text::bounded(room), "document deleted");
    ok(json!({ "id": room, "deleted": true, "versions": versions.len() }))
}

/// The numbers of the versions kept of a document.
async fn version_numbers(
    storage: &dyn crate::storage::Storage,
    room: &str,
    docid: &str,
) -> Result<Vec<u64>, ApiError> {
    Ok(storage
        .versions(room, docid)
        .await?
        .into_iter()
        .map(|v| v.version)
        .collect())
}

/// How many times, and how far apart, a deleted document's storage is looked
/// at again for items a compaction in progress wrote after the delete.
const LATE_SWEEPS: u32 = 3;
const LATE_SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// A worker that loaded the document just before its stream was deleted
/// stores what it loaded moments later: look again a few times and delete
/// what appeared (its compaction then finds the stream gone and queues
/// nothing more). A compaction slower than the sweeps can still write the
/// document back (docs/api.md).
async fn sweep_late_items(
    storage: &dyn crate::storage::Storage,
    room: &str,
    docid: &str,
) -> Result<(), ApiError> {
    for _ in 0..LATE_SWEEPS {
        tokio::time::sleep(LATE_SWEEP_PAUSE).await;
        let late: Vec<String> = storage
            .load(room, docid)
            .await?
            .into_iter()
            .map(|item| item.reference)
            .collect();
        if !late.is_empty() {
            tracing::info!(room = %crate::log_text::bounded(room), items = late.len(), "items stored during a delete, deleted too");
            storage.delete(room, docid, &late).await?;
        }
        let versions = version_numbers(storage, room, docid).await?;
        if !versions.is_empty() {
            storage.delete_versions(room, docid, &versions).await?;
        }
    }
    Ok(())
}
