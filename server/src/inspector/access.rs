//! Who may open the inspector: where `WS_API_SECRET` is set, every route (the
//! page, its scripts and its data) needs it, as the password of HTTP Basic
//! auth (so that a browser asks for it), as `X-API-Secret`, or as
//! `Authorization: Bearer <secret>`; compared in constant time. Without a
//! secret the inspector is open: the operations port is meant to be private.

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;

use crate::api::{same_secret, SECRET_HEADER};

/// The secret the inspector asks for, when one is configured.
#[derive(Clone)]
pub struct Guard {
    /// `WS_API_SECRET`; never logged.
    pub secret: Option<String>,
}

/// The secrets a request offers, in any of the accepted forms.
fn offered(headers: &HeaderMap) -> Vec<String> {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok());
    let mut offered: Vec<String> = header(SECRET_HEADER)
        .map(str::to_string)
        .into_iter()
        .collect();
    for value in headers.get_all(AUTHORIZATION) {
        let Some((scheme, rest)) = value.to_str().ok().and_then(|v| v.trim().split_once(' '))
        else {
            continue;
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            offered.push(rest.trim().to_string());
        } else if scheme.eq_ignore_ascii_case("basic") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .ok()
                .and_then(|bytes| String::from_utf8(bytes).ok());
            if let Some((_, password)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                offered.push(password.to_string());
            }
        }
    }
    offered
}

/// Whether a request with `headers` may use the inspector.
pub fn allowed(guard: &Guard, headers: &HeaderMap) -> bool {
    match &guard.secret {
        None => true,
        Some(secret) => offered(headers)
            .iter()
            .any(|given| same_secret(given, secret)),
    }
}

/// The middleware in front of every inspector route: 401 with a Basic
/// challenge unless [`allowed`].
pub async fn require(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    if allowed(&guard, request.headers()) {
        return next.run(request).await;
    }
    let mut response = (
        StatusCode::UNAUTHORIZED,
        "the inspector needs the API secret (WS_API_SECRET)\n",
    )
        .into_response();
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"websocket inspector\", charset=\"UTF-8\""),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn every_form_of_the_secret_is_accepted() {
        let guard = Guard {
            secret: Some("s3cret".into()),
        };
        let basic = base64::engine::general_purpose::STANDARD.encode("admin:s3cret");
        assert!(allowed(&guard, &headers(&[("x-api-secret", "s3cret")])));
        assert!(allowed(
            &guard,
            &headers(&[("authorization", "Bearer s3cret")])
        ));
        assert!(allowed(
            &guard,
            &headers(&[("authorization", &format!("Basic {basic}"))])
        ));
        let wrong = base64::engine::general_purpose::STANDARD.encode("s3cret:nope");
        assert!(!allowed(&guard, &headers(&[])));
        assert!(!allowed(&guard, &headers(&[("x-api-secret", "s3cre")])));
        assert!(!allowed(
            &guard,
            &headers(&[("authorization", &format!("Basic {wrong}"))])
        ));
        assert!(allowed(&Guard { secret: None }, &headers(&[])));
    }
}
