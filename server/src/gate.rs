//! The router an instance serves from its first moment: `503 Service
//! Unavailable` until the instance can serve (Redis answered), then the real
//! router. The listener starts at once, so a fleet's load balancer sees a
//! clear refusal rather than a closed port while Redis is down at start.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower::ServiceExt as _;

use crate::metrics::Count;

/// Holds the real router once there is one.
#[derive(Default)]
pub struct Gate {
    inner: OnceLock<Router>,
    /// Requests refused while there is none.
    refused: Count,
}

/// Seconds a refused client is told to wait before trying again.
const RETRY_AFTER: &str = "2";

impl Gate {
    /// A closed gate counting the requests it refuses into `refused`.
    pub fn new(refused: Count) -> Self {
        Self {
            inner: OnceLock::new(),
            refused,
        }
    }

    /// Serve `router` from now on (the first call wins).
    pub fn open(&self, router: Router) {
        let _ = self.inner.set(router);
    }

    /// The router to serve: every request goes to the real router, or is
    /// refused with 503 while there is none.
    pub fn router(self: &Arc<Self>) -> Router {
        let gate = Arc::clone(self);
        Router::new().fallback(move |request: Request<Body>| {
            let gate = Arc::clone(&gate);
            async move {
                match gate.inner.get() {
                    Some(router) => match router.clone().oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    None => {
                        gate.refused.inc();
                        not_ready()
                    }
                }
            }
        })
    }
}

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, RETRY_AFTER)],
        "not ready: redis is not answering yet\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    #[tokio::test]
    async fn refuses_until_opened_then_serves() {
        let gate = Arc::new(Gate::default());
        let router = gate.router();
        let request = || Request::builder().uri("/x").body(Body::empty()).unwrap();
        let refused = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(gate.refused.get(), 1);
        gate.open(Router::new().route("/x", get(|| async { "served" })));
        let served = router.oneshot(request()).await.unwrap();
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(gate.refused.get(), 1, "served requests are not refusals");
    }
}
