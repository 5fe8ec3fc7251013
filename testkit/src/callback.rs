//! A permission callback as y-redis's auth asks it, `GET {url}/{room}/{user}`,
//! served on a free loopback port: it answers as the test set it per (room,
//! user), per user or per room (in that order), `404` otherwise, records every
//! request, can hold a request without answering, and can go down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::sync::watch;

/// How long a [`Reply::Hang`] holds its request at most (longer than any test).
const HANG_LIMIT: Duration = Duration::from_secs(600);

/// What the callback answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `200 {"yaccess": access, "yuserid": user}`: `"rw"` and `"r"` are what
    /// y-redis expects; anything else tests a refusal.
    Grant(String),
    /// Any status with any body, sent as `application/json`.
    Raw {
        /// The HTTP status.
        status: u16,
        /// The body, as sent.
        body: String,
    },
    /// No answer until the callback stops (a callback that hangs).
    Hang,
}

impl Reply {
    /// `200 {"yaccess": access, …}`.
    pub fn grant(access: &str) -> Self {
        Self::Grant(access.to_string())
    }
}

#[derive(Default)]
struct Table {
    pairs: HashMap<(String, String), Reply>,
    users: HashMap<String, Reply>,
    rooms: HashMap<String, Reply>,
    /// Every request path, as received.
    paths: Vec<String>,
}

/// The running callback; dropping it stops it.
pub struct PermissionCallback {
    url: String,
    table: Arc<Mutex<Table>>,
    stop: watch::Sender<bool>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for PermissionCallback {
    fn drop(&mut self) {
        self.stop.send_replace(true);
        if let Some(server) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
            server.abort();
        }
    }
}

impl PermissionCallback {
    /// Serve on a free port of 127.0.0.1, in the current Tokio runtime.
    pub async fn start() -> Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .context("binding the permission callback")?;
        let addr = listener.local_addr()?;
        let table = Arc::new(Mutex::new(Table::default()));
        let (stop, stopped) = watch::channel(false);
        let app = {
            let table = Arc::clone(&table);
            let released = stopped.clone();
            Router::new().fallback(move |uri: Uri| {
                let table = Arc::clone(&table);
                let released = released.clone();
                async move { answer(&table, &uri, released).await }
            })
        };
        let server = tokio::spawn(async move {
            let mut stopped = stopped;
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await;
        });
        Ok(Self {
            url: format!("http://{addr}/perm"),
            table,
            stop,
            server: Mutex::new(Some(server)),
        })
    }

    /// The base URL to configure (`AUTH_PERM_CALLBACK`), no trailing `/`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answer (`room`, `user`) (the path segments as received) with `reply`.
    pub fn reply(&self, room: &str, user: &str, reply: Reply) {
        self.lock()
            .pairs
            .insert((room.to_string(), user.to_string()), reply);
    }

    /// Answer `user` in every room without a (room, user) reply.
    pub fn reply_user(&self, user: &str, reply: Reply) {
        self.lock().users.insert(user.to_string(), reply);
    }

    /// Answer every user of `room` without a (room, user) or user reply.
    pub fn reply_room(&self, room: &str, reply: Reply) {
        self.lock().rooms.insert(room.to_string(), reply);
    }

    /// Withdraw every reply for `user`.
    pub fn forget_user(&self, user: &str) {
        let mut table = self.lock();
        table.users.remove(user);
        table.pairs.retain(|(_, u), _| u != user);
    }

    /// Every request path so far (`/perm/{room}/{user}`).
    pub fn paths(&self) -> Vec<String> {
        self.lock().paths.clone()
    }

    /// The (room, user) segments of every well-formed request so far.
    pub fn requests(&self) -> Vec<(String, String)> {
        self.lock()
            .paths
            .iter()
            .filter_map(|path| room_and_user(path))
            .map(|(room, user)| (room.to_string(), user.to_string()))
            .collect()
    }

    /// Forget the requests recorded so far.
    pub fn clear_requests(&self) {
        self.lock().paths.clear();
    }

    /// Take the callback down, as an outage would: held requests are answered
    /// 503, open connections close, and the listening socket is closed. Returns
    /// once the server has finished, its listener dropped with it. (Whether the
    /// port then refuses connections is not checked: the port is free again, and
    /// any process on the machine may bind it at once.)
    pub async fn stop(&self) -> Result<()> {
        self.stop.send_replace(true);
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(server) = server else {
            return Ok(());
        };
        match tokio::time::timeout(Duration::from_secs(10), server).await {
            Err(_) => bail!("the permission callback did not stop within 10 s"),
            Ok(Err(e)) => bail!("the permission callback failed: {e}"),
            Ok(Ok(())) => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `/perm/{room}/{user}` → (room, user).
fn room_and_user(path: &str) -> Option<(&str, &str)> {
    path.strip_prefix("/perm/")?.rsplit_once('/')
}

async fn answer(table: &Mutex<Table>, uri: &Uri, mut stopped: watch::Receiver<bool>) -> Response {
    let path = uri.path().to_string();
    let reply = {
        let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
        table.paths.push(path.clone());
        let Some((room, user)) = room_and_user(&path) else {
            return StatusCode::NOT_FOUND.into_response();
        };
        table
            .pairs
            .get(&(room.to_string(), user.to_string()))
            .or_else(|| table.users.get(user))
            .or_else(|| table.rooms.get(room))
            .cloned()
    };
    let user = room_and_user(&path).map_or("", |(_, user)| user);
    match reply {
        Some(Reply::Grant(access)) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({ "yaccess": access, "yuserid": user }).to_string(),
        )
            .into_response(),
        Some(Reply::Raw { status, body }) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response(),
        Some(Reply::Hang) => {
            let _ = tokio::time::timeout(HANG_LIMIT, stopped.wait_for(|stop| *stop)).await;
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
