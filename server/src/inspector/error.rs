//! Why an inspector request failed, answered as `{"error": "…"}` with its
//! status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An inspector request that could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum InspectorError {
    /// The request names no room, or a bad one.
    #[error("{0}")]
    BadRequest(String),
    /// No such version.
    #[error("{0}")]
    NotFound(String),
    /// The streams have not answered since the instance started.
    #[error("the streams are not connected yet")]
    NotConnected,
    /// The streams or storage failed.
    #[error("{0}")]
    Unavailable(String),
    /// The document or a version cannot be read.
    #[error("{0}")]
    Unreadable(String),
}

impl InspectorError {
    /// The streams or storage failed with `err`.
    pub fn unavailable(err: impl std::fmt::Display) -> Self {
        Self::Unavailable(err.to_string())
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::NotConnected | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Unreadable(_) => StatusCode::CONFLICT,
        }
    }
}

impl IntoResponse for InspectorError {
    fn into_response(self) -> Response {
        super::answer(self.status(), json!({ "error": self.to_string() }))
    }
}
