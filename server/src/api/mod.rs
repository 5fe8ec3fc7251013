//! The document HTTP API under `/api` (docs/api.md): read a document, its
//! history and its content as JSON; write to it (import, update, copy,
//! rollback) through its stream like a client would, so every instance and
//! client of the fleet sees the change live; keep named snapshots; delete a
//! document and close its connections fleet-wide.
//!
//! [`ROUTES`] is the one table of routes: the router is built from it, and a
//! test checks it against the OpenAPI document (`docs/openapi.json`).

mod access;
mod call;
mod document;
mod error;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use axum::routing::{on, MethodFilter};
use axum::Router;

use crate::auth::Authenticator;
use crate::storage::{Retention, Storage};
use crate::streams::Streams;

pub use access::{same as same_secret, Needs, SECRET_HEADER};
pub use error::ApiError;

use call::Call;

/// What every API request shares.
pub struct ApiState {
    /// The stream bus: reads, appends, deletes and control orders.
    pub streams: Arc<dyn Streams>,
    /// Where documents and their versions are stored.
    pub storage: Arc<dyn Storage>,
    /// Token auth (y-redis's), for `Authorization: Bearer <token>`.
    pub auth: Option<Authenticator>,
    /// The shared secret (`X-API-Secret`); never logged.
    pub secret: Option<String>,
    /// Largest request body, in bytes.
    pub max_body: usize,
    /// Whether versions are kept (`[history] enabled`).
    pub history: bool,
    /// What `cleanup` keeps.
    pub retention: Retention,
}

/// What a route does, so that the table names its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handler {
    /// The latest state.
    Get,
    /// The root types as JSON.
    Json,
    /// Every version with its state.
    History,
    /// Every version's number, time and name.
    HistoryMetadata,
    /// One version.
    Version,
    /// Back to a version.
    Rollback,
    /// Name a version.
    Snapshot,
    /// Store now.
    Flush,
    /// Copy another document into this one.
    Copy,
    /// A Yjs update as a JSON byte array.
    Import,
    /// A raw Yjs update.
    Update,
    /// Apply the retention to one document.
    Cleanup,
    /// Apply the retention to every document.
    CleanupAll,
    /// Close the document's connections.
    Close,
    /// Delete the document.
    Delete,
    /// Unknown `/api/...` path.
    NotFound,
}

/// One route: method, path (axum's syntax), what a caller needs, handler.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Path, `{doc_id}`-style parameters.
    pub path: &'static str,
    /// What the caller must be allowed.
    pub needs: Needs,
    /// What it does.
    pub handler: Handler,
}

const fn route(method: &'static str, path: &'static str, needs: Needs, handler: Handler) -> Route {
    Route {
        method,
        path,
        needs,
        handler,
    }
}

/// Every route of the API, as `docs/openapi.json` documents them.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/document/{doc_id}", Needs::Read, Handler::Get),
    route(
        "DELETE",
        "/api/document/{doc_id}",
        Needs::Admin,
        Handler::Delete,
    ),
    route(
        "GET",
        "/api/document/{doc_id}/json",
        Needs::Read,
        Handler::Json,
    ),
    route(
        "GET",
        "/api/document/{doc_id}/history",
        Needs::Read,
        Handler::History,
    ),
    route(
        "GET",
        "/api/document/{doc_id}/history/metadata",
        Needs::Read,
        Handler::HistoryMetadata,
    ),
    route(
        "GET",
        "/api/document/{doc_id}/history/version/{version}",
        Needs::Read,
        Handler::Version,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/rollback",
        Needs::Write,
        Handler::Rollback,
    ),
    route(
        "POST",
        "/api/document/snapshot",
        Needs::Write,
        Handler::Snapshot,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/flush",
        Needs::Write,
        Handler::Flush,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/{source}/copy",
        Needs::Write,
        Handler::Copy,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/import",
        Needs::Write,
        Handler::Import,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/update",
        Needs::Write,
        Handler::Update,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/cleanup",
        Needs::Admin,
        Handler::Cleanup,
    ),
    route(
        "POST",
        "/api/admin/cleanup",
        Needs::Admin,
        Handler::CleanupAll,
    ),
    route(
        "POST",
        "/api/document/{doc_id}/close",
        Needs::Admin,
        Handler::Close,
    ),
];

/// The API's routes, to be merged into the public router. Paths under `/api/`
/// that no route serves answer 404 with a JSON error; `/api` itself stays a
/// room, as every one-segment path is.
pub fn router(state: Arc<ApiState>) -> Router {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, on(filter(route.method), serve(route)));
    }
    let not_found = &Route {
        method: "",
        path: "/api/{*rest}",
        needs: Needs::Nothing,
        handler: Handler::NotFound,
    };
    router
        .route(not_found.path, axum::routing::any(serve(not_found)))
        .with_state(state)
}

/// The handler of one route: the call is assembled (parameters, query, body
/// within its limit), then handed to what the route does.
fn serve(
    route: &'static Route,
) -> impl Fn(State<Arc<ApiState>>, Request) -> futures_util::future::BoxFuture<'static, Response>
       + Clone
       + Send
       + Sync
       + 'static {
    move |State(state), request| {
        Box::pin(async move {
            match Call::new(route, state, request).await {
                Ok(call) => call.run().await,
                Err(err) => err.respond(route, None),
            }
        })
    }
}

fn filter(method: &str) -> MethodFilter {
    match method {
        "DELETE" => MethodFilter::DELETE,
        "POST" => MethodFilter::POST,
        "PUT" => MethodFilter::PUT,
        _ => MethodFilter::GET,
    }
}
