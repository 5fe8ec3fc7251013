//! Operations endpoints, on their own port so that no room name is taken:
//! `/metrics` (Prometheus text), `/healthz` (the process answers),
//! `/readyz` (the streams answer too) and the inspector under `/inspector`
//! (behind the API secret where one is set).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use tokio_util::sync::CancellationToken;

use crate::inspector::{self, Guard, Slot};
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::streams::Streams;

/// What the operations endpoints look at.
pub struct OpsState {
    /// This instance's counters.
    pub metrics: Arc<Metrics>,
    /// The rooms open here (absent for a worker-only process).
    pub rooms: Option<Arc<Rooms>>,
    /// The streams, pinged for readiness; empty until Redis first answered.
    pub streams: Arc<OnceLock<Arc<dyn Streams>>>,
    /// Cancelled when shutdown begins: the instance is no longer ready.
    pub draining: CancellationToken,
    /// The inspector, once the streams answered.
    pub inspector: Slot,
    /// Who may open the inspector.
    pub guard: Guard,
}

/// The operations router.
pub fn router(state: Arc<OpsState>) -> Router {
    let inspector = inspector::router(state.guard.clone(), Arc::clone(&state.inspector));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(state)
        .merge(inspector)
}

async fn metrics(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    let rooms = state.rooms.as_ref().map_or(0, |rooms| rooms.len());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(rooms),
    )
}

async fn ready(State(state): State<Arc<OpsState>>) -> impl IntoResponse {
    if state.draining.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        );
    }
    let Some(streams) = state.streams.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis: not connected yet\n".to_string(),
        );
    };
    match tokio::time::timeout(std::time::Duration::from_secs(2), streams.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n".to_string()),
        Ok(Err(err)) => (StatusCode::SERVICE_UNAVAILABLE, format!("redis: {err}\n")),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "redis: no answer\n".to_string(),
        ),
    }
}
