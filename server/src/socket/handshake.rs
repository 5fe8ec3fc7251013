//! The WebSocket opening handshake (RFC 6455 section 4.2): which upgrade
//! requests are acceptable, and the `101 Switching Protocols` answer. The one
//! extension, permessage-deflate, is agreed in `deflate.rs` and its answer
//! added to this one.

use axum::http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::digest::{Context, SHA1_FOR_LEGACY_USE_ONLY};

/// The GUID every server appends to the client's key (RFC 6455).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why a request is no WebSocket upgrade; answered as the status says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// Upgrades are `GET` requests.
    #[error("request method must be `GET`")]
    MethodNotGet,
    /// `Connection` must include `upgrade`.
    #[error("Connection header did not include 'upgrade'")]
    ConnectionHeader,
    /// `Upgrade` must be `websocket`.
    #[error("`Upgrade` header did not include 'websocket'")]
    UpgradeHeader,
    /// Only version 13 exists.
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    VersionHeader,
    /// The key the answer is derived from.
    #[error("`Sec-WebSocket-Key` header missing")]
    KeyMissing,
    /// The HTTP connection cannot be taken over (not HTTP/1.1 with upgrades).
    #[error("WebSocket request couldn't be upgraded")]
    NotUpgradable,
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let status = match self {
            Rejection::MethodNotGet => StatusCode::METHOD_NOT_ALLOWED,
            Rejection::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, self.to_string()).into_response()
    }
}

/// Check that a request asks for a WebSocket; the client's key on success.
pub fn check(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, Rejection> {
    if method != Method::GET {
        return Err(Rejection::MethodNotGet);
    }
    let connection_upgrade = headers
        .get(CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade"));
    if !connection_upgrade {
        return Err(Rejection::ConnectionHeader);
    }
    let is = |name, value: &str| {
        headers
            .get(name)
            .is_some_and(|v: &HeaderValue| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    if !is(UPGRADE, "websocket") {
        return Err(Rejection::UpgradeHeader);
    }
    if !is(SEC_WEBSOCKET_VERSION, "13") {
        return Err(Rejection::VersionHeader);
    }
    headers
        .get(SEC_WEBSOCKET_KEY)
        .cloned()
        .ok_or(Rejection::KeyMissing)
}

/// `Sec-WebSocket-Accept` for a client's key.
pub fn accept_key(key: &[u8]) -> String {
    // RFC 6455 fixes SHA-1 here; it proves only that the server read the key.
    let mut sha1 = Context::new(&SHA1_FOR_LEGACY_USE_ONLY);
    sha1.update(key);
    sha1.update(GUID);
    STANDARD.encode(sha1.finish())
}

/// The `101` answer to an accepted upgrade, with `subprotocol` when one is chosen.
pub fn switching_protocols(key: &HeaderValue, subprotocol: Option<&str>) -> Response {
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let headers = response.headers_mut();
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        headers.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(Ok(protocol)) = subprotocol.map(HeaderValue::from_str) {
        headers.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_key_of_the_rfc_example() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn requests_that_are_no_upgrade_are_rejected_as_axum_did() {
        let mut headers = HeaderMap::new();
        assert_eq!(check(&Method::POST, &headers), Err(Rejection::MethodNotGet));
        assert_eq!(
            check(&Method::GET, &headers),
            Err(Rejection::ConnectionHeader)
        );
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(check(&Method::GET, &headers), Err(Rejection::UpgradeHeader));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert_eq!(check(&Method::GET, &headers), Err(Rejection::VersionHeader));
        headers.insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        assert_eq!(check(&Method::GET, &headers), Err(Rejection::KeyMissing));
        headers.insert(SEC_WEBSOCKET_KEY, HeaderValue::from_static("abc"));
        assert_eq!(check(&Method::GET, &headers).unwrap(), "abc");
        assert_eq!(
            Rejection::MethodNotGet.into_response().status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            Rejection::NotUpgradable.into_response().status(),
            StatusCode::UPGRADE_REQUIRED
        );
        assert_eq!(
            Rejection::KeyMissing.into_response().status(),
            StatusCode::BAD_REQUEST
        );
    }
}
