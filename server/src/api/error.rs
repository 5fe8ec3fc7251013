//! Why an API request failed, as the JSON error its caller gets.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::Route;
use crate::load::LoadError;
use crate::log_text::bounded;
use crate::storage::StorageError;
use crate::streams::StreamError;
use crate::versions::KeepError;

/// Why a request failed. Every variant answers `{"error": "<message>"}` with
/// its status; nothing was appended, stored or deleted by a request that
/// failed before its write.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request itself is wrong (400).
    #[error("{0}")]
    BadRequest(String),
    /// No secret or token, or a wrong one (401).
    #[error("missing or wrong API secret or token")]
    Unauthorized,
    /// A valid caller without the right (403).
    #[error("{0}")]
    Forbidden(String),
    /// No such document, version or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The body is over the limit (413).
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// Redis or storage failed; the request may be retried (503).
    #[error("{0}")]
    Unavailable(String),
}

impl From<StreamError> for ApiError {
    fn from(err: StreamError) -> Self {
        ApiError::Unavailable(format!("streams: {err}"))
    }
}

impl From<StorageError> for ApiError {
    fn from(err: StorageError) -> Self {
        ApiError::Unavailable(format!("storage: {err}"))
    }
}

impl From<KeepError> for ApiError {
    fn from(err: KeepError) -> Self {
        match err {
            KeepError::Storage(err) => err.into(),
            KeepError::Streams(err) => err.into(),
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(err: LoadError) -> Self {
        match err {
            LoadError::Storage(err) => err.into(),
            LoadError::Streams(err) => err.into(),
            LoadError::Encode(err) => ApiError::Unavailable(format!("document: {err}")),
        }
    }
}

impl ApiError {
    /// The status it answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The JSON answer, after one bounded log line: a caller's mistake at
    /// info, a failing backend as a warning.
    pub fn respond(&self, route: &Route, room: Option<&str>) -> Response {
        let message = self.to_string();
        let room = room.map(bounded);
        match self {
            ApiError::Unavailable(_) => tracing::warn!(
                path = route.path,
                room = room.as_ref().map(tracing::field::display),
                error = %bounded(&message),
                "document API request failed"
            ),
            _ => tracing::info!(
                path = route.path,
                room = room.as_ref().map(tracing::field::display),
                status = self.status().as_u16(),
                error = %bounded(&message),
                "document API request refused"
            ),
        }
        let body = serde_json::json!({ "error": message }).to_string();
        let mut response = (self.status(), body).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
