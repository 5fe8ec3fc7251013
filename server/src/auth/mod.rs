//! Authentication and authorization of WebSocket connections, as y-redis 0.1.6 does it
//! (docs/protocol.md §6).
//!
//! A client presents a JWT signed with ES384 (ECDSA P-384, SHA-384), either as the
//! `Sec-WebSocket-Protocol` entry `yauth-<token>` or as the query parameter `yauth`.
//! The token names the user in its `yuserid` claim and may carry an `exp` claim in
//! milliseconds. Once the token checks out, an HTTP permission callback decides,
//! per room and user, whether the connection may write (`"rw"`) or only read (`"r"`).
//! Every failure is a refusal: the server answers 401.
//!
//! Tokens are secrets: nothing in this module logs them or puts them into an error.

mod jwt;
mod request;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub use jwt::{generate_key_pair, mint_token};
pub use request::{first_offered_subprotocol, token_from_request};

/// Why a connection was refused, or why the authentication setup is unusable.
///
/// The server turns every variant except [`AuthError::Config`] into a 401; `Config`
/// is reported at start. The text says why, and never contains the token.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The request carried no token, neither as subprotocol nor as query parameter.
    #[error("no auth token in the request")]
    MissingToken,
    /// The token is not a well-formed ES384 JWT (parts, base64url, JSON, header).
    #[error("malformed auth token: {0}")]
    Malformed(String),
    /// The token's signature does not verify with the configured public key.
    #[error("auth token signature is invalid")]
    BadSignature,
    /// The token's `exp` claim (milliseconds since the epoch) is in the past.
    #[error("auth token has expired")]
    Expired,
    /// The token verified but names no user (`yuserid` is absent or empty).
    #[error("auth token has no yuserid claim")]
    MissingUserId,
    /// The permission callback could not be asked or gave an unreadable answer
    /// (connection refused, timeout, invalid JSON).
    #[error("permission callback failed: {0}")]
    CallbackFailed(String),
    /// The permission callback answered, but did not grant access (a non-2xx status
    /// or a `yaccess` other than `"rw"` and `"r"`).
    #[error("permission callback refused access: {0}")]
    CallbackRefused(String),
    /// The public key, the private key or the callback URL given by the operator is
    /// unusable.
    #[error("auth configuration: {0}")]
    Config(String),
}

/// What a connection may do in a room, as granted by the permission callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The client may send document updates (`yaccess` `"rw"`).
    ReadWrite,
    /// The client receives updates but its own updates are dropped (`yaccess` `"r"`).
    ReadOnly,
}

/// The outcome of a successful authorization: who connected and what they may do.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The `yuserid` claim of the token; y-redis records it with each update.
    pub user_id: String,
    /// Whether the user may write to the room.
    pub access: Access,
    /// The token's `exp` claim, in milliseconds since the epoch (y-redis's
    /// unit), whole milliseconds: the token is valid up to and including
    /// that millisecond. `None`: it never expires.
    pub expires_at: Option<u64>,
}

/// A token found in an upgrade request, with the place it came from, so that the
/// upgrade response can echo the chosen subprotocol (browsers close a WebSocket whose
/// response selects none of the protocols they offered).
#[derive(Clone)]
pub struct RequestToken {
    /// The token itself (a JWT). Secret: never log it.
    pub token: String,
    /// The `Sec-WebSocket-Protocol` entry to answer with: the exact `yauth-<token>`
    /// entry when the token came from that header; when it came from the query, the
    /// first entry the client offered, as y-redis answers (Node's `ws` client fails a
    /// handshake that selects none of its offers); `None` when nothing was offered.
    pub subprotocol: Option<String>,
}

impl fmt::Debug for RequestToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestToken")
            .field("token", &"<redacted>")
            .field(
                "subprotocol",
                &self.subprotocol.as_deref().map(|p| {
                    if p.starts_with("yauth-") {
                        "yauth-<redacted>"
                    } else {
                        "<offered>"
                    }
                }),
            )
            .finish()
    }
}

/// Checks tokens and asks the permission callback; built once from the operator's
/// configuration and shared by every connection. Cloning is cheap (an `Arc`).
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    key: jwt::PublicKey,
    /// The callback base URL, always ending with `/`.
    callback: String,
    timeout: Duration,
    client: reqwest::Client,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("callback", &self.inner.callback)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

/// Largest permission callback body read; the answer is a tiny JSON object.
const MAX_CALLBACK_BODY: usize = 64 * 1024;

impl Authenticator {
    /// Builds an authenticator from the operator's settings: `public_jwk` is the P-384
    /// public key as JWK JSON text (y-redis's `AUTH_PUBLIC_KEY`), `perm_callback` the
    /// permission callback base URL (`AUTH_PERM_CALLBACK`), and `timeout` bounds each
    /// callback request as a whole.
    pub fn new(
        public_jwk: &str,
        perm_callback: &str,
        timeout: Duration,
    ) -> Result<Self, AuthError> {
        let key = jwt::PublicKey::from_jwk(public_jwk)?;
        let mut callback = perm_callback.trim().to_owned();
        if callback.is_empty() {
            return Err(AuthError::Config(
                "the permission callback URL is empty".into(),
            ));
        }
        if !callback.ends_with('/') {
            callback.push('/');
        }
        let url = reqwest::Url::parse(&callback).map_err(|e| {
            AuthError::Config(format!("the permission callback URL is invalid: {e}"))
        })?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(AuthError::Config(format!(
                "the permission callback URL must be http or https, not {}",
                url.scheme()
            )));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(AuthError::Config(
                "the permission callback URL must not have a query or fragment".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // The JavaScript server's fetch ignores proxy variables; so do we, so that
            // the callback reaches the same host from both.
            .no_proxy()
            .build()
            .map_err(|e| AuthError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                key,
                callback,
                timeout,
                client,
            }),
        })
    }

    /// Checks a token's ES384 signature, its `exp` (milliseconds, as y-redis and lib0
    /// compare it) and its `yuserid`, and returns that user id. Used by
    /// [`Authenticator::authorize`], and on its own where no room is involved.
    pub fn verify_token(&self, token: &str) -> Result<String, AuthError> {
        let result = jwt::verify(&self.inner.key, token, jwt::now_millis()).map(|v| v.user_id);
        if let Err(e) = &result {
            tracing::debug!(reason = %e, "auth token rejected");
        }
        result
    }

    /// Decides whether the bearer of `token` may open `room`, and how: verifies the
    /// token, then asks `GET {callback}/{room}/{yuserid}` and maps its `yaccess` answer
    /// (`"rw"` or `"r"`). `room` is used as given, i.e. the raw (still percent-encoded)
    /// path segment of the request (only `/`, `?` and `#` are escaped, and dot
    /// segments are refused). Any failure is an error, which means 401.
    pub async fn authorize(&self, room: &str, token: &str) -> Result<Grant, AuthError> {
        let result = self.authorize_inner(room, token).await;
        match &result {
            Ok(grant) => tracing::debug!(
                room,
                user = %grant.user_id,
                access = ?grant.access,
                "connection authorized"
            ),
            Err(e) => {
                tracing::info!(room = %crate::log_text::bounded(room), reason = %e, "connection refused")
            }
        }
        result
    }

    async fn authorize_inner(&self, room: &str, token: &str) -> Result<Grant, AuthError> {
        let jwt::Verified {
            user_id,
            expires_at,
        } = jwt::verify(&self.inner.key, token, jwt::now_millis())?;
        let access = self.ask_callback(room, &user_id).await?;
        Ok(Grant {
            user_id,
            access,
            expires_at,
        })
    }

    async fn ask_callback(&self, room: &str, user_id: &str) -> Result<Access, AuthError> {
        let room = request::room_segment(room).ok_or_else(|| {
            AuthError::CallbackRefused("the room name cannot be a URL path segment".into())
        })?;
        let url = format!(
            "{}{}/{}",
            self.inner.callback,
            room,
            request::encode_path_segment(user_id)
        );
        let url = reqwest::Url::parse(&url)
            .map_err(|e| AuthError::CallbackFailed(format!("invalid callback URL: {e}")))?;
        let mut response = self
            .inner
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(AuthError::CallbackRefused(format!("HTTP status {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.request_error(e))? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_CALLBACK_BODY {
                return Err(AuthError::CallbackFailed(format!(
                    "answer larger than {MAX_CALLBACK_BODY} bytes"
                )));
            }
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| AuthError::CallbackFailed(format!("answer is not JSON: {e}")))?;
        match answer.get("yaccess") {
            Some(serde_json::Value::String(s)) if s == "rw" => Ok(Access::ReadWrite),
            Some(serde_json::Value::String(s)) if s == "r" => Ok(Access::ReadOnly),
            Some(other) => Err(AuthError::CallbackRefused(format!(
                "yaccess is {}",
                truncate(&other.to_string(), 64)
            ))),
            None => Err(AuthError::CallbackRefused("answer has no yaccess".into())),
        }
    }

    fn request_error(&self, e: reqwest::Error) -> AuthError {
        let e = e.without_url();
        if e.is_timeout() {
            AuthError::CallbackFailed(format!(
                "no answer within {} ms",
                self.inner.timeout.as_millis()
            ))
        } else if e.is_connect() {
            AuthError::CallbackFailed(format!("cannot connect: {}", error_chain(&e)))
        } else {
            AuthError::CallbackFailed(error_chain(&e))
        }
    }
}

/// The error and its sources on one line (reqwest's own text is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// At most `max` characters of `s`, so that a hostile answer cannot flood the logs.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_owned(),
    }
}
