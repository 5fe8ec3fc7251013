//! Finding the token in an upgrade request, and URL text helpers.

use axum::http::header::SEC_WEBSOCKET_PROTOCOL;
use axum::http::HeaderMap;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::RequestToken;

/// The subprotocol prefix that carries a token (browsers cannot set other headers on
/// a WebSocket).
const SUBPROTOCOL_PREFIX: &str = "yauth-";

/// The query parameter that carries a token when no subprotocol does.
const QUERY_PARAMETER: &str = "yauth";

/// Finds the client's token, where y-redis looks for it: first a
/// `Sec-WebSocket-Protocol` entry `yauth-<token>`, then the `yauth` query parameter
/// (decoded as a browser's `URLSearchParams` does). Only the first `yauth-` entry
/// counts: when it is empty (`yauth-` alone), the request has no usable token and the
/// query is not consulted, as the JavaScript server does. An empty query token counts
/// as absent. `None` means the request must be answered with 401.
///
/// The header is read as HTTP defines a list: entries separated by commas with
/// optional spaces, over every header line. y-redis reads only the first line and
/// only entries right after a comma, so it refuses `other, yauth-<token>` as
/// browsers write it; this server accepts it (see docs/conformance.md).
///
/// A token from the query is answered with the first offered subprotocol, if any,
/// as y-redis (uWebSockets.js) answers with the first entry of the offer.
pub fn token_from_request(headers: &HeaderMap, query: Option<&str>) -> Option<RequestToken> {
    let entry = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find(|entry| entry.starts_with(SUBPROTOCOL_PREFIX));
    if let Some(entry) = entry {
        let token = &entry[SUBPROTOCOL_PREFIX.len()..];
        return (!token.is_empty()).then(|| RequestToken {
            token: token.to_owned(),
            subprotocol: Some(entry.to_owned()),
        });
    }
    let first_offered = first_offered_subprotocol(headers);
    let query = query?;
    let query = query.strip_prefix('?').unwrap_or(query);
    // Decoded as `URLSearchParams` does: `+` is a space, `%XX` a byte, malformed
    // escapes stay as they are and invalid UTF-8 is replaced.
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == QUERY_PARAMETER)
        // URLSearchParams.get returns the first occurrence.
        .map(|(_, value)| value.into_owned())
        .filter(|token| !token.is_empty())
        .map(|token| RequestToken {
            token,
            subprotocol: first_offered,
        })
}

/// The first entry of the first `Sec-WebSocket-Protocol` line, which is what
/// y-redis (uWebSockets.js) answers with when the offer carries no token: a
/// client that offers subprotocols fails its handshake if none is answered.
pub fn first_offered_subprotocol(headers: &HeaderMap) -> Option<String> {
    headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(',').next())
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_owned)
}

/// Percent-encodes `s` for use as one URL path segment, so that a user id cannot add
/// path segments, a query or a fragment to the callback request. Characters that are
/// common in user ids (letters, digits, `-._~`, `@`, `:` and the other sub-delimiters)
/// are kept, so those ids reach the callback exactly as the JavaScript server sends
/// them.
pub(super) fn encode_path_segment(s: &str) -> String {
    utf8_percent_encode(s, PATH_SEGMENT).to_string()
}

/// What [`encode_path_segment`] escapes: everything but letters, digits, `-._~` and
/// the sub-delimiters `!$&'()*+,;=`, `:` and `@`.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// The room as one raw path segment of the callback URL. The room is normally already
/// the raw segment of the request path and passes unchanged; a `/`, `?` or `#` in it is
/// escaped so that it cannot change which URL is asked. Empty and dot segments (`.`,
/// `..`, also percent-encoded) would be dropped or climb a level when the URL is
/// normalized, so they yield `None`.
pub(super) fn room_segment(room: &str) -> Option<String> {
    let lower = room.to_ascii_lowercase().replace("%2e", ".");
    if room.is_empty() || lower == "." || lower == ".." {
        return None;
    }
    Some(
        room.replace('/', "%2F")
            .replace('?', "%3F")
            .replace('#', "%23"),
    )
}
