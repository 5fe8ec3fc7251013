//! The HTTP side: WebSocket upgrades on `/<room>`, with auth when configured.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::{ORIGIN, SEC_WEBSOCKET_EXTENSIONS};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::Instrument as _;

use crate::auth::{self, AuthError};
use crate::connection::{self, AppState, Client};
use crate::metrics::Refusal;
use crate::socket::deflate;
use crate::socket::handshake::{self, Rejection};

/// The router: the document API under `/api/` when it is served, and every
/// other one-segment path is a room.
pub fn router(state: Arc<AppState>, api: Option<Arc<crate::api::ApiState>>) -> Router {
    let rooms = Router::new().fallback(upgrade).with_state(state);
    match api {
        Some(api) => crate::api::router(api).merge(rooms),
        None => rooms,
    }
}

/// The room of a request path: its one segment, not percent-decoded
/// (docs/protocol.md section 2.1). Paths of several segments are no room
/// (404), as for y-redis's `/:room` route: accepting them would open rooms the
/// JavaScript servers of a fleet cannot serve. `/` is the room with the empty
/// name (so `wscat -c ws://host:port` connects).
pub fn room_of(uri: &Uri) -> Option<String> {
    let room = uri.path().strip_prefix('/')?;
    (!room.contains('/')).then(|| room.to_string())
}

async fn upgrade(State(state): State<Arc<AppState>>, mut request: Request) -> Response {
    let refused = |reason| state.metrics.refused(reason);
    let Some(room) = room_of(request.uri()) else {
        refused(Refusal::NotFound);
        return (StatusCode::NOT_FOUND, "connect to /<room>\n").into_response();
    };
    let key = match handshake::check(request.method(), request.headers()) {
        Ok(key) => key,
        Err(rejection) => {
            refused(Refusal::BadRequest);
            return rejection.into_response();
        }
    };
    if let Some(refusal) = refuse_origin(&state, request.headers(), &room) {
        return refusal;
    }
    let (client, subprotocol) = match &state.auth {
        // Without auth an offered subprotocol is answered with its first
        // entry, as y-redis answers.
        None => (
            Client::anonymous(),
            auth::first_offered_subprotocol(request.headers()),
        ),
        Some(authenticator) => {
            // Refused before anything is upgraded: a plain 401.
            // `authorize` logs the outcome; the token itself is never logged.
            let Some(token) = auth::token_from_request(request.headers(), request.uri().query())
            else {
                tracing::info!(
                    room = %crate::log_text::bounded(&room),
                    reason = %AuthError::MissingToken,
                    "connection refused"
                );
                refused(Refusal::NoToken);
                return StatusCode::UNAUTHORIZED.into_response();
            };
            match authenticator.authorize(&room, &token.token).await {
                Ok(grant) => (
                    Client {
                        access: grant.access,
                        user: Some(grant.user_id),
                        expires_at: grant.expires_at,
                    },
                    token.subprotocol,
                ),
                Err(err) => {
                    refused(refusal_of(&err));
                    return StatusCode::UNAUTHORIZED.into_response();
                }
            }
        }
    };
    let Some(on_upgrade) = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
    else {
        refused(Refusal::BadRequest);
        return Rejection::NotUpgradable.into_response();
    };
    let offers = request.headers().get_all(SEC_WEBSOCKET_EXTENSIONS);
    let deflate = deflate::negotiate(
        offers.iter().filter_map(|value| value.to_str().ok()),
        &state.settings.deflate,
    );
    let mut response = handshake::switching_protocols(&key, subprotocol.as_deref());
    if let Some(Ok(answer)) = deflate.map(|agreed| agreed.response().parse()) {
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_EXTENSIONS, answer);
    }
    let token = state.connections.token();
    tokio::spawn(async move {
        serve_upgraded(on_upgrade, state, room, client, deflate).await;
        drop(token);
    });
    response
}

/// Serve the connection once hyper hands the upgraded socket over.
async fn serve_upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    state: Arc<AppState>,
    room: String,
    client: Client,
    deflate: Option<deflate::Agreed>,
) {
    let upgraded = match on_upgrade.await {
        Ok(upgraded) => upgraded,
        Err(err) => {
            tracing::debug!(%err, "upgrade did not complete");
            return;
        }
    };
    // The listener serves plain TCP sockets: take the socket back from
    // hyper, with whatever the client sent behind its request.
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) => {
            let socket = parts.io.into_inner();
            let span = connection_span(&room, socket.peer_addr().ok(), client.user.as_deref());
            connection::serve(socket, parts.read_buf, state, room, client, deflate)
                .instrument(span)
                .await
        }
        Err(_) => tracing::error!("upgraded connection is not a TCP socket"),
    }
}

/// The 403 refusing a request from an origin not allowed (counted and
/// logged); `None` for a request that may go on.
fn refuse_origin(state: &AppState, headers: &HeaderMap, room: &str) -> Option<Response> {
    if origin_allowed(headers, &state.allowed_origins) {
        return None;
    }
    let origin = headers.get(ORIGIN).and_then(|o| o.to_str().ok());
    tracing::info!(
        room = %crate::log_text::bounded(room),
        origin = %crate::log_text::bounded(origin.unwrap_or("?")),
        "connection refused: origin not allowed"
    );
    state.metrics.refused(Refusal::Origin);
    Some((StatusCode::FORBIDDEN, "origin not allowed\n").into_response())
}

/// Whether a request may upgrade from where it comes: any when `allowed` is
/// empty; else its `Origin` header, when it has one, must be one of `allowed`
/// (compared as ASCII case-insensitive text, a trailing `/` ignored). A
/// request without `Origin` is no browser's and is not checked.
pub fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim().trim_end_matches('/');
    allowed.iter().any(|allowed| {
        allowed
            .trim()
            .trim_end_matches('/')
            .eq_ignore_ascii_case(origin)
    })
}

/// The metrics label of an auth failure.
fn refusal_of(err: &AuthError) -> Refusal {
    match err {
        AuthError::MissingToken => Refusal::NoToken,
        AuthError::Malformed(_) | AuthError::BadSignature | AuthError::MissingUserId => {
            Refusal::BadToken
        }
        AuthError::Expired => Refusal::Expired,
        AuthError::CallbackRefused(_) => Refusal::Forbidden,
        AuthError::CallbackFailed(_) | AuthError::Config(_) => Refusal::CallbackError,
    }
}

/// Numbers this process's connections, for telling their log lines apart.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// The span every log line of one connection is written in: its room
/// (bounded), a connection id unique in this process, the client's address and,
/// with auth, the token's user id (bounded too).
fn connection_span(room: &str, peer: Option<SocketAddr>, user: Option<&str>) -> tracing::Span {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let span = tracing::info_span!(
        "connection",
        room = %crate::log_text::bounded(room),
        id,
        peer = tracing::field::Empty,
        user = tracing::field::Empty,
    );
    if let Some(peer) = peer {
        span.record("peer", tracing::field::display(peer));
    }
    if let Some(user) = user {
        span.record(
            "user",
            tracing::field::display(crate::log_text::bounded(user)),
        );
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let with = |origin: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(ORIGIN, origin.parse().unwrap());
            headers
        };
        let allowed = vec!["https://app.example.com".to_string()];
        assert!(origin_allowed(&with("https://evil.example"), &[]));
        assert!(origin_allowed(&HeaderMap::new(), &allowed));
        assert!(origin_allowed(&with("https://app.example.com"), &allowed));
        assert!(origin_allowed(&with("HTTPS://App.Example.com/"), &allowed));
        assert!(!origin_allowed(
            &with("https://app.example.com:8443"),
            &allowed
        ));
        assert!(!origin_allowed(&with("http://app.example.com"), &allowed));
        assert!(!origin_allowed(&with("null"), &allowed));
    }

    #[test]
    fn a_room_is_one_raw_path_segment() {
        let room = |path: &str| room_of(&path.parse::<Uri>().unwrap());
        assert_eq!(room("/demo").as_deref(), Some("demo"));
        assert_eq!(room("/my%20room?yauth=x").as_deref(), Some("my%20room"));
        assert_eq!(room("/a%2Fb").as_deref(), Some("a%2Fb"));
        assert_eq!(
            room("/").as_deref(),
            Some(""),
            "the empty room, as in y-redis"
        );
        assert_eq!(room("/a/b"), None);
        assert_eq!(room("/a/"), None);
        assert_eq!(room("//a"), None);
    }
}
