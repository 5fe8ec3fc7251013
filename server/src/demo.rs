//! The editing demo (`websocket demo`): a page with a collaborative rich-text
//! editor (ProseMirror with y-prosemirror, live cursors), bundled once from
//! `demo/src/editor.js` into `server/assets/demo.js` and embedded here, served
//! on its own port beside a running instance. The page connects to that
//! instance unless `?server=` names another one (a second instance of the
//! fleet, Rust or JavaScript); `--peer` puts a link to such a second server on
//! the page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::listener::{self, ListenerSettings};

/// The page.
const PAGE: &str = include_str!("../assets/demo.html");
/// The bundled editor (yjs, y-websocket, y-prosemirror, ProseMirror).
const SCRIPT: &str = include_str!("../assets/demo.js");
/// The page's style sheet.
const STYLE: &str = include_str!("../assets/demo.css");

/// What the page is told: the WebSocket port of the instance serving it, and
/// the second server to link to, if any.
#[derive(Debug, Clone)]
pub struct DemoSettings {
    /// The instance's WebSocket port (the page connects to the host it was
    /// loaded from, on this port).
    pub websocket_port: u16,
    /// A second server's WebSocket URL (`ws://host:port`), linked from the page.
    pub peer: Option<String>,
}

/// The demo's routes: `/`, `/demo.js`, `/demo.css` and `/config.json`.
pub fn router(settings: DemoSettings) -> Router {
    let config =
        Arc::new(json!({ "port": settings.websocket_port, "peer": settings.peer }).to_string());
    Router::new()
        .route(
            "/",
            get(|| async { asset(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/demo.js",
            get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/demo.css",
            get(|| async { asset(STYLE, "text/css; charset=utf-8") }),
        )
        .route(
            "/config.json",
            get(move || {
                let config = Arc::clone(&config);
                async move { asset(config.as_str().to_owned(), "application/json") }
            }),
        )
}

fn asset(body: impl Into<String>, kind: &'static str) -> Response {
    let mut response = body.into().into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Serve the demo on `addr` until `stop`; returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    settings: DemoSettings,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(listener::serve(
        listener,
        router(settings),
        ListenerSettings::default(),
        stop,
    ));
    Ok(bound)
}
