//! A TCP relay in front of a service that can stall the connections it
//! carries: they stay open (no FIN, no RST) but nothing more crosses them, as
//! when a network path dies silently or a peer freezes. Connections made
//! after a stall pass normally, so a client that notices and reconnects
//! recovers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A relay on a free loopback port to `127.0.0.1:{target}`; stops on drop.
pub struct StallingRelay {
    port: u16,
    /// Connections numbered below this are stalled.
    stalled_below: Arc<AtomicU64>,
    /// The next connection's number.
    next: Arc<AtomicU64>,
    /// Dropped with the relay, which ends its accepting and every
    /// connection's task.
    _alive: watch::Sender<()>,
}

impl StallingRelay {
    /// Start relaying to `target` (a port on 127.0.0.1).
    pub async fn start(target: u16) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let stalled_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (alive, dropped) = watch::channel(());
        tokio::spawn({
            let stalled_below = stalled_below.clone();
            let next = next.clone();
            let mut relay_dropped = dropped.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        _ = relay_dropped.changed() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((client, _)) = accepted else { return };
                    let number = next.fetch_add(1, Ordering::SeqCst);
                    let stalled_below = stalled_below.clone();
                    let dropped = dropped.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await {
                            relay(client, server, number, stalled_below, dropped).await;
                        }
                    });
                }
            }
        });
        Ok(Self {
            port,
            stalled_below,
            next,
            _alive: alive,
        })
    }

    /// The relay's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stall every connection open now; later ones pass.
    pub fn stall_open_connections(&self) {
        self.stalled_below
            .store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Copy both ways until both sides closed. A stalled direction stops
/// reading and forwarding but keeps its sockets (so no FIN or RST reaches a
/// peer) until the relay is dropped.
async fn relay(
    client: TcpStream,
    server: TcpStream,
    number: u64,
    stalled: Arc<AtomicU64>,
    mut dropped: watch::Receiver<()>,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let is_stalled = move || number < stalled.load(Ordering::SeqCst);
    let both = async {
        tokio::join!(
            copy(client_read, server_write, is_stalled.clone()),
            copy(server_read, client_write, is_stalled),
        )
    };
    tokio::select! {
        _ = dropped.changed() => {}
        _ = both => {}
    }
}

/// One direction of [`relay`].
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, is_stalled: impl Fn() -> bool) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if is_stalled() {
            // Keep both halves, forward nothing, from now on.
            let _held = (from, to);
            std::future::pending::<()>().await;
            return;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
