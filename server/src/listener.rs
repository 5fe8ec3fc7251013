//! The accept loop: HTTP/1 connections served to an axum router, with the
//! limits a public listener needs before any request reaches the router.
//!
//! `axum::serve` holds a connection for as long as its client likes, even one
//! that sends half a request line and stops: thousands of such connections
//! exhaust the process's file descriptors. Here every connection must deliver
//! its request headers within a bound (hyper's header read timeout), and at
//! most a bounded number of connections may be between accept and upgrade
//! (reading headers, waiting on the permission callback); past that bound the
//! loop stops accepting until one finishes, so the kernel's backlog, not this
//! process, holds the rest.
//!
//! Contract for upgrade handlers: each accepted socket has `TCP_NODELAY` set
//! and is handed to hyper as exactly `TokioIo<TcpStream>`, so an upgraded
//! connection can be downcast back to the `TcpStream`
//! (`hyper::upgrade::Upgraded::downcast::<TokioIo<TcpStream>>`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    /// How long a connection may take to send a request's headers (also the
    /// first request's, and the next one's on a kept-alive connection).
    pub header_read_timeout: Duration,
    /// Connections accepted and not yet upgraded (or, for plain HTTP, not yet
    /// closed) at once.
    pub max_handshakes: usize,
}

impl Default for ListenerSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_handshakes: 1024,
        }
    }
}

/// How long the loop pauses after an accept error that is not the client's
/// (out of file descriptors, for instance), so that it does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// How long connections still handshaking get to finish once `stop` fires
/// (the first step of the instance's stop, `app.rs`).
pub const DRAIN: Duration = Duration::from_secs(1);

/// Serve `router` on `listener` until `stop` fires; then stop accepting, let
/// requests in flight finish (up to a short bound) and return. Upgraded
/// connections are the router's: they outlive this function.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ListenerSettings,
    stop: CancellationToken,
) {
    let handshakes = Arc::new(Semaphore::new(settings.max_handshakes.max(1)));
    let connections = TaskTracker::new();
    let draining = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            _ = stop.cancelled() => break,
            permit = Arc::clone(&handshakes).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(err) if is_connection_error(&err) => {
                tracing::debug!(%err, "connection failed before accept");
                continue;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot accept connections; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let io: TokioIo<tokio::net::TcpStream> = TokioIo::new(stream);
        let service = TowerToHyperService::new(router.clone());
        let draining = draining.clone();
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(settings.header_read_timeout);
            let connection = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                _ = draining.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = served {
                tracing::debug!(%err, "http connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    draining.cancel();
    connections.close();
    if tokio::time::timeout(DRAIN, connections.wait())
        .await
        .is_err()
    {
        tracing::debug!("some requests were still in flight at shutdown");
    }
}

/// Errors of one incoming connection (the peer gave up), not of the listener.
fn is_connection_error(err: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        err.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::response::IntoResponse;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn start(
        router: Router,
        settings: ListenerSettings,
    ) -> (std::net::SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(serve(listener, router, settings, stop.clone()));
        (addr, stop)
    }

    /// Read until the peer closes; the bytes read.
    async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out).await;
        out
    }

    #[tokio::test]
    async fn a_request_whose_headers_never_finish_is_closed() {
        let settings = ListenerSettings {
            header_read_timeout: Duration::from_millis(300),
            ..ListenerSettings::default()
        };
        let (addr, stop) = start(Router::new().route("/", get(|| async { "ok" })), settings).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(b"GET /room HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Both are closed by the server; without a timeout these reads never end.
        let closed = tokio::time::timeout(Duration::from_secs(30), async {
            read_to_close(&mut silent).await;
            read_to_close(&mut half).await
        })
        .await;
        assert!(closed.is_ok(), "half-sent requests are held open");
        stop.cancel();
    }

    #[tokio::test]
    async fn past_the_handshake_bound_new_connections_wait() {
        let settings = ListenerSettings {
            header_read_timeout: Duration::from_secs(60),
            max_handshakes: 2,
        };
        let (addr, stop) = start(Router::new().route("/", get(|| async { "ok" })), settings).await;
        let request = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut second = TcpStream::connect(addr).await.unwrap();
        // Both are accepted and served (the answer proves it) ...
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        second
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // ... and a third is only served once one of them is done.
        let mut third = TcpStream::connect(addr).await.unwrap();
        third.write_all(request).await.unwrap();
        let mut byte = [0u8; 1];
        let waited = tokio::time::timeout(Duration::from_millis(500), third.read(&mut byte)).await;
        assert!(
            waited.is_err(),
            "a third handshake was served past the bound"
        );
        first.write_all(b"Connection: close\r\n\r\n").await.unwrap();
        let answer = String::from_utf8_lossy(&read_to_close(&mut first).await).to_string();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let answer = String::from_utf8_lossy(&read_to_close(&mut third).await).to_string();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        drop(second);
        stop.cancel();
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_the_tcp_stream_with_nodelay() {
        let (found, mut found_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
        let router = Router::new().route(
            "/",
            get(move |mut request: Request<Body>| {
                let found = found.clone();
                async move {
                    let on_upgrade = hyper::upgrade::on(&mut request);
                    tokio::spawn(async move {
                        let nodelay = match on_upgrade.await {
                            Ok(upgraded) => upgraded
                                .downcast::<TokioIo<TcpStream>>()
                                .ok()
                                .and_then(|parts| parts.io.inner().nodelay().ok())
                                .unwrap_or(false),
                            Err(_) => false,
                        };
                        let _ = found.send(nodelay);
                    });
                    (
                        StatusCode::SWITCHING_PROTOCOLS,
                        [("connection", "upgrade"), ("upgrade", "test")],
                    )
                        .into_response()
                }
            }),
        );
        let (addr, stop) = start(router, ListenerSettings::default()).await;
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: test\r\n\r\n")
            .await
            .unwrap();
        let nodelay = tokio::time::timeout(Duration::from_secs(10), found_rx.recv())
            .await
            .unwrap();
        assert_eq!(
            nodelay,
            Some(true),
            "the upgraded IO is not a TokioIo<TcpStream> with TCP_NODELAY"
        );
        stop.cancel();
    }
}
