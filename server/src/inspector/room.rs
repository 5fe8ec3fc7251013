//! One room as the inspector shows it: its root types (kinds, JSON and the
//! full structure, XML included), the awareness states its stream holds, its
//! stream's length, connections here, stored items and kept versions; and
//! one version's content, for the page's diff.

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};
use yrs::updates::decoder::Decode;
use yrs::{Doc, Transact, Update};

use super::{answer, connected, Inspector, InspectorError, Slot};
use crate::document::{self, RootKind};
use crate::load::load_doc;
use crate::streams::{StreamId, DOC_ID};

/// Bytes a room name or docid may have here, as in the document API.
const MAX_NAME: usize = 1024;

/// The room and docid a request names (`?room=…&docid=…`, percent-decoded),
/// and `?version=` when given.
struct Named {
    room: String,
    docid: String,
    version: Option<String>,
}

fn named(uri: &Uri) -> Result<Named, InspectorError> {
    let mut room = None;
    let mut docid = None;
    let mut version = None;
    for (key, value) in form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes()) {
        match &*key {
            "room" => room = Some(value.into_owned()),
            "docid" => docid = Some(value.into_owned()),
            "version" => version = Some(value.into_owned()),
            _ => {}
        }
    }
    let room = room.ok_or_else(|| InspectorError::BadRequest("no room named".into()))?;
    let docid = docid
        .filter(|docid| !docid.is_empty())
        .unwrap_or_else(|| DOC_ID.to_string());
    if room.len() > MAX_NAME || docid.len() > MAX_NAME {
        return Err(InspectorError::BadRequest(format!(
            "room and docid are at most {MAX_NAME} bytes"
        )));
    }
    Ok(Named {
        room,
        docid,
        version,
    })
}

fn kind_name(kind: RootKind) -> &'static str {
    match kind {
        RootKind::Map => "map",
        RootKind::Array => "array",
        RootKind::Text => "text",
        RootKind::XmlFragment => "xml",
    }
}

/// Kinds, JSON and structure of a document's roots.
fn roots_of(doc: &Doc) -> Result<Value, InspectorError> {
    let json = document::to_json(doc).map_err(|err| InspectorError::Unreadable(err.to_string()))?;
    let structure =
        crate::protocol::guard_yrs("reader", || Ok::<_, String>(document::content(doc)))
            .map_err(InspectorError::Unreadable)?;
    let kinds: Vec<Value> = document::root_kinds(doc)
        .into_iter()
        .map(|(name, kind)| json!({ "name": name, "kind": kind_name(kind) }))
        .collect();
    Ok(json!({ "kinds": kinds, "json": json, "structure": structure }))
}

/// The awareness states of the stream, newest per client; states that are
/// not JSON are shown as their text.
fn awareness_of(loaded: &crate::load::LoadedDoc) -> Vec<Value> {
    loaded
        .awareness
        .to_update(false)
        .entries
        .into_iter()
        .map(|entry| {
            let state =
                serde_json::from_str::<Value>(&entry.state).unwrap_or(Value::String(entry.state));
            json!({ "client": entry.client_id, "clock": entry.clock, "state": state })
        })
        .collect()
}

/// Connections to the room's stream on this instance.
fn connections_here(inspector: &Inspector, key: &str) -> usize {
    inspector
        .rooms
        .as_ref()
        .and_then(|rooms| {
            rooms
                .connections()
                .into_iter()
                .find(|(stream, _)| &**stream == key)
        })
        .map_or(0, |(_, n)| n)
}

/// `GET /inspector/data/room?room=…[&docid=…]`.
pub async fn room(State(slot): State<Slot>, uri: Uri) -> Result<Response, InspectorError> {
    let inspector = connected(&slot)?;
    let Named { room, docid, .. } = named(&uri)?;
    let body = view(&inspector, &room, &docid).await?;
    Ok(answer(StatusCode::OK, body))
}

async fn view(inspector: &Inspector, room: &str, docid: &str) -> Result<Value, InspectorError> {
    let unavailable = |err: &dyn std::fmt::Display| InspectorError::unavailable(err);
    let key = inspector.streams.stream_key(room, docid);
    let storage = inspector.storage.as_ref();
    let loaded = load_doc(inspector.streams.as_ref(), storage, &key, room, docid)
        .await
        .map_err(|err| unavailable(&err))?;
    let length = inspector
        .streams
        .stream_len(&key)
        .await
        .map_err(|err| unavailable(&err))?;
    let items: Vec<Value> = storage
        .load(room, docid)
        .await
        .map_err(|err| unavailable(&err))?
        .into_iter()
        .map(|item| json!({ "reference": item.reference, "bytes": item.update.len() }))
        .collect();
    let versions = storage
        .versions(room, docid)
        .await
        .map_err(|err| unavailable(&err))?;
    let last_id = (loaded.last_id != StreamId::ZERO).then(|| loaded.last_id.to_string());
    Ok(json!({
        "room": room,
        "docid": docid,
        "key": key,
        "exists": last_id.is_some() || !items.is_empty(),
        "stream": { "length": length, "last_id": last_id },
        "connections": connections_here(inspector, &key),
        "roots": roots_of(&loaded.doc)?,
        "awareness": awareness_of(&loaded),
        "storage": { "backend": storage.name(), "items": items },
        "versions": versions,
    }))
}

/// `GET /inspector/data/version?room=…&version=N[&docid=…]`: one kept
/// version's roots.
pub async fn version(State(slot): State<Slot>, uri: Uri) -> Result<Response, InspectorError> {
    let inspector = connected(&slot)?;
    let Named {
        room,
        docid,
        version,
    } = named(&uri)?;
    let Some(number) = version.and_then(|v| v.parse::<u64>().ok()) else {
        return Err(InspectorError::BadRequest(
            "version must be a number".into(),
        ));
    };
    let update = inspector
        .storage
        .load_version(&room, &docid, number)
        .await
        .map_err(InspectorError::unavailable)?
        .ok_or_else(|| InspectorError::NotFound(format!("no version {number}")))?;
    let doc = Doc::new();
    let applied = crate::protocol::guard_yrs("decoder", || {
        let update = Update::decode_v2(&update).map_err(|err| err.to_string())?;
        doc.transact_mut()
            .apply_update(update)
            .map_err(|err| err.to_string())
    });
    if let Err(err) = applied {
        return Err(InspectorError::Unreadable(format!(
            "version does not decode: {err}"
        )));
    }
    let roots = roots_of(&doc)?;
    Ok(answer(
        StatusCode::OK,
        json!({ "version": number, "roots": roots }),
    ))
}
