//! The inspector: a page on the operations port for the people who run the
//! fleet (docs/inspector.md). It lists the fleet's rooms from the streams
//! (length, last change, queued compaction, connections here) and shows one
//! room: its root types as a tree, live (the page polls once a second), the
//! awareness states in its stream, its kept versions with a diff between any
//! two and a rollback through the document API, and its items in storage.
//!
//! Plain HTML and JavaScript embedded in the binary, with no build step and
//! nothing fetched from elsewhere; every name and value is inserted as text.
//! Behind the API secret where one is set (`access.rs`).

mod access;
mod error;
mod room;

use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::{Request, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::api::ApiState;
use crate::rooms::Rooms;
use crate::storage::Storage;
use crate::streams::{Streams, Survey, SURVEY_LIMIT};

pub use access::Guard;
pub use error::InspectorError;

/// What the inspector reads, once the streams are connected.
pub struct Inspector {
    /// The stream bus: the rooms' streams.
    pub streams: Arc<dyn Streams>,
    /// The fleet's document streams, listed.
    pub survey: Arc<dyn Survey>,
    /// Where documents and their versions are stored.
    pub storage: Arc<dyn Storage>,
    /// This instance's rooms (absent for a worker-only process).
    pub rooms: Option<Arc<Rooms>>,
    /// The document API as the inspector calls it (reads, rollback, flush):
    /// open, since every inspector route is behind the inspector's own guard.
    pub api: Router,
}

impl Inspector {
    /// The inspector of these parts; its document API has no access checks
    /// of its own (the inspector's guard is in front of it).
    pub fn new(
        streams: Arc<dyn Streams>,
        survey: Arc<dyn Survey>,
        storage: Arc<dyn Storage>,
        rooms: Option<Arc<Rooms>>,
        api: ApiState,
    ) -> Self {
        Self {
            streams,
            survey,
            storage,
            rooms,
            api: crate::api::router(Arc::new(api)),
        }
    }
}

/// The inspector, filled in when the streams first answer.
pub type Slot = Arc<OnceLock<Arc<Inspector>>>;

/// The page.
const PAGE: &str = include_str!("assets/index.html");
/// Its script.
const SCRIPT: &str = include_str!("assets/inspector.js");
/// Its style sheet.
const STYLE: &str = include_str!("assets/inspector.css");

/// Only the page's own scripts, styles and requests: nothing inline runs,
/// whatever a document or a room name holds.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                      connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'";

/// The inspector's routes under `/inspector`, every one behind `guard`.
pub fn router(guard: Guard, slot: Slot) -> Router {
    Router::new()
        .route(
            "/inspector",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/inspector/",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/inspector/inspector.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/inspector/inspector.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/inspector/data/rooms", get(rooms))
        .route("/inspector/data/room", get(room::room))
        .route("/inspector/data/version", get(room::version))
        .route("/inspector/api/{*rest}", axum::routing::any(api))
        .with_state(slot)
        .layer(axum::middleware::from_fn_with_state(guard, access::require))
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON answer.
fn answer(status: StatusCode, body: Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The inspector, or 503 while the streams have not answered yet.
fn connected(slot: &Slot) -> Result<Arc<Inspector>, InspectorError> {
    slot.get().cloned().ok_or(InspectorError::NotConnected)
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The fleet's rooms, from the streams, with this instance's connections.
async fn rooms(State(slot): State<Slot>) -> Result<Response, InspectorError> {
    let inspector = connected(&slot)?;
    let (streams, more) = inspector
        .survey
        .doc_streams(SURVEY_LIMIT)
        .await
        .map_err(InspectorError::unavailable)?;
    let connections = inspector
        .rooms
        .as_ref()
        .map(|rooms| rooms.connections())
        .unwrap_or_default();
    let here = |key: &str| {
        connections
            .iter()
            .find(|(stream, _)| &**stream == key)
            .map_or(0, |(_, n)| *n)
    };
    let now = now_ms();
    let prefix = inspector.streams.prefix();
    let listed: Vec<Value> = streams
        .iter()
        .map(|stream| {
            let (room, docid) = inspector
                .streams
                .parse_stream_key(&stream.key)
                .map_or((None, None), |(room, docid)| (Some(room), Some(docid)));
            json!({
                "key": stream.key,
                "room": room,
                "docid": docid,
                "length": stream.length,
                "last_id": stream.last_id.map(|id| id.to_string()),
                "age_ms": stream.last_id.map(|id| now.saturating_sub(id.ms)),
                "task_pending": stream.task_pending,
                "connections": here(&stream.key),
            })
        })
        .collect();
    Ok(answer(
        StatusCode::OK,
        json!({
            "prefix": prefix,
            "rooms": listed,
            "more": more,
            "limit": SURVEY_LIMIT,
            "connections_here": connections.iter().map(|(_, n)| n).sum::<usize>(),
            "storage": inspector.storage.name(),
        }),
    ))
}

/// Whether the inspector passes a document API request on: its reads,
/// `flush` and `rollback`; not deletes, imports, copies, closes or cleanups,
/// which stay on the public API with its own access rules.
fn offered_to_the_page(method: &axum::http::Method, path_and_query: &str) -> bool {
    let path = path_and_query.split('?').next().unwrap_or_default();
    let Some(rest) = path.strip_prefix("/api/document/") else {
        return false;
    };
    match *method {
        axum::http::Method::GET => true,
        axum::http::Method::POST => rest.ends_with("/rollback") || rest.ends_with("/flush"),
        _ => false,
    }
}

/// A document API request made from the page (`/inspector/api/...`), served
/// by the API's own routes as `/api/...`.
async fn api(State(slot): State<Slot>, mut request: Request) -> Result<Response, InspectorError> {
    let inspector = connected(&slot)?;
    let path_and_query = request
        .uri()
        .path_and_query()
        .and_then(|pq| pq.as_str().strip_prefix("/inspector"))
        .map(str::to_string)
        .unwrap_or_default();
    if !offered_to_the_page(request.method(), &path_and_query) {
        return Err(InspectorError::NotFound(
            "the inspector offers the document API's reads, flush and rollback only".into(),
        ));
    }
    match path_and_query.parse() {
        Ok(uri) => *request.uri_mut() = uri,
        Err(_) => return Err(InspectorError::BadRequest("not a request path".into())),
    }
    match inspector.api.clone().oneshot(request).await {
        Ok(response) => Ok(response),
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::offered_to_the_page;

    #[test]
    fn the_page_reaches_reads_flush_and_rollback_only() {
        assert!(offered_to_the_page(&Method::GET, "/api/document/a/json"));
        assert!(offered_to_the_page(
            &Method::POST,
            "/api/document/a/rollback?docid=x"
        ));
        assert!(offered_to_the_page(&Method::POST, "/api/document/a/flush"));
        assert!(!offered_to_the_page(&Method::DELETE, "/api/document/a"));
        assert!(!offered_to_the_page(
            &Method::POST,
            "/api/document/a/import"
        ));
        assert!(!offered_to_the_page(&Method::POST, "/api/document/a/close"));
        assert!(!offered_to_the_page(&Method::POST, "/api/admin/cleanup"));
        assert!(!offered_to_the_page(
            &Method::POST,
            "/api/document/a/b/copy"
        ));
    }
}
