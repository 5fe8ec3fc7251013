//! The HTTP side: WebSocket upgrades on `/<room>` (with auth when configured)
//! and the state every connection shares.

use std::sync::Arc;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Access, Authenticator};
use crate::connection;
use crate::metrics::Metrics;
use crate::rooms::Rooms;
use crate::storage::Storage;
use crate::streams::Streams;

/// The document id of every WebSocket connection (as y-redis).
pub const DOC_ID: &str = "index";

/// What every connection of this instance shares.
pub struct AppState {
    /// The stream bus.
    pub streams: Arc<dyn Streams>,
    /// Where compacted documents are.
    pub storage: Arc<dyn Storage>,
    /// The rooms open on this instance.
    pub rooms: Arc<Rooms>,
    /// Token auth, when configured.
    pub auth: Option<Authenticator>,
    /// Largest accepted message in bytes.
    pub max_message_size: usize,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when connections must close (shutdown).
    pub shutdown: CancellationToken,
    /// This instance's counters.
    pub metrics: Arc<Metrics>,
}

/// Bytes read from a socket at once. tungstenite zero-fills this much of its
/// read buffer on every read, so its default (128 KiB) becomes resident memory
/// for every connection; y-websocket messages are small, and a larger frame
/// still arrives whole (the buffer grows for it), in more reads.
const READ_BUFFER_SIZE: usize = 4 * 1024;

/// The router: every path is a room.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(upgrade).with_state(state)
}

/// The room of a request path: its one segment, not percent-decoded (compat
/// notes 2.1). Paths of several segments are no room (404), as for y-redis's
/// `/:room` route: accepting them would open rooms the JavaScript servers of a
/// fleet cannot serve. `/` is the room with the empty name, as in y-redis (so
/// `wscat -c ws://host:port` connects).
pub fn room_of(uri: &Uri) -> Option<String> {
    let room = uri.path().strip_prefix('/')?;
    (!room.contains('/')).then(|| room.to_string())
}

async fn upgrade(
    State(state): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Some(room) = room_of(&uri) else {
        return (StatusCode::NOT_FOUND, "connect to /<room>\n").into_response();
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let (access, subprotocol) = match &state.auth {
        None => (Access::ReadWrite, None),
        Some(authenticator) => {
            // Refused before anything is upgraded: a plain 401 (compat notes 2.2).
            // `authorize` logs the outcome; the token itself is never logged.
            let Some(token) = auth::token_from_request(&headers, uri.query()) else {
                tracing::info!(
                    room = %crate::log_text::bounded(&room),
                    reason = %auth::AuthError::MissingToken,
                    "connection refused"
                );
                return StatusCode::UNAUTHORIZED.into_response();
            };
            match authenticator.authorize(&room, &token.token).await {
                Ok(grant) => (grant.access, token.subprotocol),
                Err(_) => return StatusCode::UNAUTHORIZED.into_response(),
            }
        }
    };
    let ws = ws
        .read_buffer_size(READ_BUFFER_SIZE)
        .max_message_size(state.max_message_size)
        .max_frame_size(state.max_message_size);
    let ws = match subprotocol {
        Some(protocol) => ws.protocols([protocol]),
        None => ws,
    };
    let token = state.connections.token();
    ws.on_upgrade(move |socket| async move {
        connection::serve(socket, state, room, access).await;
        drop(token);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
