//! Auth for a fleet, the y-redis way: an ES384 key pair (the public JWK goes to
//! every server as `AUTH_PUBLIC_KEY`), tokens minted per user, and the permission
//! callback (`GET {callback}/{room}/{user}` → `{"yaccess": "rw" | "r", "yuserid"}`)
//! served over HTTP on 127.0.0.1.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
pub use websocket::auth::Access;

/// How long minted tokens stay valid.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

#[derive(Default)]
struct Permissions {
    /// Access per user, for every room.
    users: HashMap<String, Access>,
    /// Access per (room, user), winning over `users`.
    rooms: HashMap<(String, String), Access>,
    /// Every callback request, as (room, user) path segments.
    requests: Vec<(String, String)>,
}

/// The key pair, the permission table and the callback server of a fleet with
/// auth. Users without a grant get `404` from the callback, which every server
/// must treat as a refusal (HTTP 401 at upgrade).
pub struct AuthService {
    private_jwk: String,
    public_jwk: String,
    callback: String,
    permissions: Arc<Mutex<Permissions>>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl AuthService {
    /// Generate a key pair and start the callback server on a free port of
    /// 127.0.0.1 (in the current Tokio runtime).
    pub async fn start() -> Result<Self> {
        let (private_jwk, public_jwk) =
            websocket::auth::generate_key_pair().context("generating an ES384 key pair")?;
        let permissions = Arc::new(Mutex::new(Permissions::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the permission callback")?;
        let addr = listener.local_addr()?;
        let table = Arc::clone(&permissions);
        let app = Router::new().fallback(move |uri: Uri| {
            let table = Arc::clone(&table);
            async move { answer(&table, &uri) }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            private_jwk,
            public_jwk,
            callback: format!("http://{addr}/auth/perm"),
            permissions,
            server,
        })
    }

    /// The public key as JWK JSON text (`AUTH_PUBLIC_KEY`).
    pub fn public_jwk(&self) -> &str {
        &self.public_jwk
    }

    /// The private key as JWK JSON text, for minting tokens of other shapes.
    pub fn private_jwk(&self) -> &str {
        &self.private_jwk
    }

    /// The permission callback base URL (`AUTH_PERM_CALLBACK`), no trailing `/`.
    pub fn perm_callback(&self) -> &str {
        &self.callback
    }

    /// Give `user` this access in every room (replacing an earlier grant).
    pub fn grant(&self, user: &str, access: Access) {
        self.lock().users.insert(user.to_string(), access);
    }

    /// Give `user` this access in `room` only (the room as it appears in the URL
    /// path), winning over [`AuthService::grant`].
    pub fn grant_room(&self, room: &str, user: &str, access: Access) {
        self.lock()
            .rooms
            .insert((room.to_string(), user.to_string()), access);
    }

    /// Withdraw every grant of `user`.
    pub fn revoke(&self, user: &str) {
        let mut permissions = self.lock();
        permissions.users.remove(user);
        permissions.rooms.retain(|(_, u), _| u != user);
    }

    /// A token for `user`, valid for an hour (`exp` in milliseconds, as y-redis
    /// checks it). The user still needs a grant to connect.
    pub fn token(&self, user: &str) -> Result<String> {
        websocket::auth::mint_token(&self.private_jwk, user, Some(TOKEN_TTL))
            .with_context(|| format!("minting a token for {user}"))
    }

    /// Grant `access` to `user` in every room and return a token for it.
    pub fn user(&self, user: &str, access: Access) -> Result<String> {
        self.grant(user, access);
        self.token(user)
    }

    /// The (room, user) path segments of every callback request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.lock().requests.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Permissions> {
        self.permissions.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `GET /auth/perm/{room}/{user}`: the grant as y-redis expects it, or 404.
fn answer(table: &Mutex<Permissions>, uri: &Uri) -> Response {
    let path = uri.path();
    let Some(rest) = path.strip_prefix("/auth/perm/") else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Some((room, user)) = rest.rsplit_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    table.requests.push((room.to_string(), user.to_string()));
    let access = table
        .rooms
        .get(&(room.to_string(), user.to_string()))
        .or_else(|| table.users.get(user))
        .copied();
    match access {
        Some(access) => {
            let yaccess = match access {
                Access::ReadWrite => "rw",
                Access::ReadOnly => "r",
            };
            axum::Json(serde_json::json!({ "yaccess": yaccess, "yuserid": user })).into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
