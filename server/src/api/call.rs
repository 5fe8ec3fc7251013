//! One API request, taken apart: the route's raw path parameters, the query,
//! the headers and the body, read within its limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::header::{ACCEPT, CONTENT_LENGTH};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::de::DeserializeOwned;

use super::access::{self, Needs};
use super::{document, ApiError, ApiState, Route};
use crate::streams::DOC_ID;

/// Bytes a room name, a docid or a snapshot name may have: far more than an
/// application uses, and bounded so that a hostile name cannot grow log
/// lines, Redis keys or storage names without end.
pub const MAX_NAME: usize = 1024;

/// A request to one route, ready to be served.
pub struct Call {
    /// The route it came in on.
    pub route: &'static Route,
    /// What requests share.
    pub state: Arc<ApiState>,
    /// The route's path parameters, raw (not percent-decoded), as the
    /// WebSocket path names a room.
    params: Vec<(&'static str, String)>,
    /// The query's pairs, percent-decoded.
    query: Vec<(String, String)>,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
}

impl Call {
    /// Take `request` apart for `route`; a body over the limit or a name over
    /// [`MAX_NAME`] is refused here.
    pub async fn new(
        route: &'static Route,
        state: Arc<ApiState>,
        request: Request,
    ) -> Result<Self, ApiError> {
        let (parts, body) = request.into_parts();
        let params = path_params(route.path, parts.uri.path());
        for (name, value) in &params {
            if value.len() > MAX_NAME {
                return Err(ApiError::BadRequest(format!(
                    "{name} is longer than {MAX_NAME} bytes"
                )));
            }
        }
        let query: Vec<(String, String)> =
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        if let Some((_, docid)) = query.iter().find(|(key, _)| key == "docid") {
            if docid.len() > MAX_NAME {
                return Err(ApiError::BadRequest(format!(
                    "docid is longer than {MAX_NAME} bytes"
                )));
            }
        }
        let declared = parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared.is_some_and(|length| length > state.max_body as u64) {
            return Err(ApiError::TooLarge(state.max_body));
        }
        let body = axum::body::to_bytes(body, state.max_body)
            .await
            .map_err(|_| ApiError::TooLarge(state.max_body))?;
        Ok(Self {
            route,
            state,
            params,
            query,
            headers: parts.headers,
            body,
        })
    }

    /// Check the caller may use the route on its room, then serve it.
    pub async fn run(self) -> Response {
        let room = self.param("doc_id").map(str::to_string);
        if let Some(room) = &room {
            if let Err(err) =
                access::authorize(&self.state, &self.headers, room, self.route.needs).await
            {
                return err.respond(self.route, Some(room));
            }
        } else if matches!(self.route.needs, Needs::Admin) {
            if let Err(err) = access::authorize(&self.state, &self.headers, "", Needs::Admin).await
            {
                return err.respond(self.route, None);
            }
        }
        match document::handle(&self).await {
            Ok(response) => response,
            Err(err) => err.respond(self.route, room.as_deref()),
        }
    }

    /// A path parameter, raw.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    /// A query parameter, percent-decoded.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The document of the room: `?docid=`, else y-redis's `index`.
    pub fn docid(&self) -> &str {
        self.query("docid").unwrap_or(DOC_ID)
    }

    /// Whether the caller wants the raw update rather than JSON.
    pub fn binary(&self) -> bool {
        self.query("format") == Some("binary")
            || self.headers.get_all(ACCEPT).iter().any(|value| {
                value
                    .to_str()
                    .is_ok_and(|value| value.contains("application/octet-stream"))
            })
    }

    /// Whether updates are v2 (`?v=2`) rather than v1.
    pub fn v2(&self) -> bool {
        self.query("v") == Some("2")
    }

    /// The body as JSON of type `T`; an empty body reads as `{}`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        let body: &[u8] = if self.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body)
            .map_err(|err| ApiError::BadRequest(format!("body is not the expected JSON: {err}")))
    }
}

/// The values of `pattern`'s `{name}` segments in `path`, raw. The router
/// matched `path` to `pattern` already, so segments line up.
fn path_params(pattern: &str, path: &str) -> Vec<(&'static str, String)> {
    const NAMES: [&str; 3] = ["doc_id", "source", "version"];
    pattern
        .split('/')
        .zip(path.split('/'))
        .filter_map(|(pattern, value)| {
            let name = pattern.strip_prefix('{')?.strip_suffix('}')?;
            let name = NAMES.into_iter().find(|known| *known == name)?;
            Some((name, value.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::path_params;

    #[test]
    fn parameters_are_raw_segments() {
        assert_eq!(
            path_params(
                "/api/document/{doc_id}/{source}/copy",
                "/api/document/a%2Fb/my%20room/copy"
            ),
            vec![
                ("doc_id", "a%2Fb".to_string()),
                ("source", "my%20room".to_string())
            ]
        );
        assert_eq!(
            path_params("/api/document/{doc_id}", "/api/document/"),
            vec![("doc_id", String::new())]
        );
    }
}
