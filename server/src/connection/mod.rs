//! One WebSocket connection: initial sync, then client messages to the stream
//! and room messages to the client.
//!
//! One task per connection, and no task at all on the way out while the
//! client keeps up: the room's fan-out writes frames straight to the socket
//! (see [`Outbox`]); this task reads the client's frames, appends what must be
//! appended, drains the outbox when the socket blocked, answers pings, pings
//! a quiet client and closes a dead one.
//!
//! This module is the IO: the socket, the outbox, the stream. What each frame,
//! tick and end of the connection calls for is decided by its `Session`
//! (`session.rs`), which sees no socket.

mod limits;
mod session;

pub use limits::{ConnectionSettings, Limits};

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, Authenticator};
use crate::load::{load_doc, InitialSync};
use crate::log_text::bounded;
use crate::metrics::{self, Metrics};
use crate::rooms::{CloseSignal, Membership, Rooms};
use crate::socket::deflate::{Agreed, Inflater};
use crate::socket::{close, Delivery, Flushed, FrameDecoder, Incoming, Outbox, Stopped};
use crate::storage::Storage;
use crate::streams::{Streams, CLOSE_REVOKED, DOC_ID};
use session::{AfterClose, End, Reply, Rest, Session};

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
    /// Limits and timers of each connection.
    pub settings: ConnectionSettings,
    /// Every connection task, so shutdown can wait for them.
    pub connections: TaskTracker,
    /// Cancelled when connections must close (shutdown).
    pub shutdown: CancellationToken,
    /// Bumped when Redis restarted: connections close so that their clients
    /// send their documents again, restoring what Redis may have lost.
    pub bus_restarts: tokio::sync::watch::Sender<u64>,
    /// This instance's counters.
    pub metrics: Arc<Metrics>,
    /// The `Origin`s an upgrade may come from; empty: any.
    pub allowed_origins: Vec<String>,
}

/// Who a connection serves, as its upgrade established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// What it may do in the room.
    pub access: Access,
    /// The token's user id, with auth.
    pub user: Option<String>,
    /// When its token expires, in milliseconds since the epoch (the token's
    /// `exp`): the connection closes with 4401 once that instant passed.
    pub expires_at: Option<u64>,
}

impl Client {
    /// A client of a server without auth: it may write, and nothing expires.
    pub fn anonymous() -> Self {
        Self {
            access: Access::ReadWrite,
            user: None,
            expires_at: None,
        }
    }
}

/// The close reason of a connection whose token expired.
const TOKEN_EXPIRED: &str = "token expired";

/// How long the close frame may take to leave before the client counts as
/// stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Compressed messages up to this size are inflated on the connection's
/// thread (at most about a thousand times this much output, a few
/// milliseconds); larger ones on a blocking thread, so that one client's
/// large message never holds up the other connections of its thread.
const INFLATE_INLINE: usize = 16 * 1024;

/// How long a closed connection waits for the client to close its side, so
/// that the close frame is read before the socket goes.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Bytes a closing connection reads at most: more than a kernel's receive
/// buffer holds, so all a reset client had sent fits, while a client that keeps
/// sending after the close cannot hold its connection open.
const READ_REST_BUDGET: usize = 16 * 1024 * 1024;

/// A far instant for a timer that is never polled (a token that does not
/// expire).
const UNUSED_TIMER: Duration = Duration::from_secs(3600);

/// Bytes a read takes from the socket at most.
const READ_CHUNK: usize = 8 * 1024;

/// Keeps the open-connections gauge right however the connection ends.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::dec(&self.0.connections_open);
    }
}

/// Say in the log how the connection of `room` ended, each end at the level
/// an operator needs it. Logged here rather than in the session so that the
/// lines keep this module's target, which log filters name.
fn log_end(end: &End, room: &str) {
    match end {
        End::ClientClosed(_) => tracing::debug!(%room, "client disconnected"),
        End::ClientGone => tracing::debug!(%room, "client went away"),
        End::Silent => {
            tracing::info!(%room, "closing a connection silent for the idle timeout")
        }
        End::Shutdown => {}
        End::FellBehind => tracing::info!(%room, "closing a connection that fell behind"),
        End::BusRestarted => {
            tracing::info!(%room, "closing a connection after a redis restart")
        }
        End::Refused(code, reason) => {
            tracing::warn!(%room, code, %reason, "closing the connection")
        }
        End::Ordered(code, reason) => {
            tracing::info!(%room, code, reason = %bounded(reason), "closing the connection by order")
        }
    }
}

/// One client's connection while it lives.
struct Connection {
    state: Arc<AppState>,
    socket: Arc<TcpStream>,
    outbox: Arc<Outbox>,
    room: String,
    stream_key: String,
    decoder: FrameDecoder,
    /// Inflates the client's compressed messages, when it agreed to
    /// permessage-deflate.
    inflater: Option<Inflater>,
    /// Bytes read and not yet decoded; empty (no allocation) between frames.
    incoming: BytesMut,
    /// What the client's frames, the ticks and the end call for.
    session: Session,
    /// Where a close of this connection is ordered.
    close_signal: Arc<CloseSignal>,
    /// When the client's token expires.
    expires: Option<tokio::time::Instant>,
    /// Redis restarts (or data losses) noticed since before this connection
    /// joined its room: one noticed while the document loads closes it too.
    bus_restarts: tokio::sync::watch::Receiver<u64>,
}

/// The instant `expires_at` (milliseconds since the epoch, valid up to and
/// including that millisecond) passes; `None` when it is too far off to tell.
fn expiry(expires_at: u64) -> Option<tokio::time::Instant> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let left = Duration::from_millis(expires_at.saturating_sub(now_ms).saturating_add(1));
    tokio::time::Instant::now().checked_add(left)
}

/// Serve one upgraded connection of `room` until the client leaves, the
/// instance shuts down, or the client misbehaves. `read_ahead` holds bytes the
/// client sent right behind its upgrade request; `deflate` is what the
/// handshake agreed to, if the client offered permessage-deflate.
pub async fn serve(
    socket: TcpStream,
    read_ahead: Bytes,
    state: Arc<AppState>,
    room: String,
    client: Client,
    deflate: Option<Agreed>,
) {
    metrics::inc(&state.metrics.connections_total);
    metrics::inc(&state.metrics.connections_open);
    let _open = OpenConnection(Arc::clone(&state.metrics));
    let stream_key = state.streams.stream_key(&room, DOC_ID);
    let socket = Arc::new(socket);
    let delivery = Delivery {
        agreed: deflate,
        settings: state.settings.deflate,
    };
    let outbox = Arc::new(Outbox::new(
        Arc::clone(&socket),
        state.settings.buffer_capacity,
        delivery,
        Arc::clone(&state.metrics),
    ));
    // Watched from before the join: a restart noticed while the document
    // loads means the load may hold what Redis lost, and this client must send
    // its document again like every other.
    let bus_restarts = state.bus_restarts.subscribe();
    // Join before loading (docs/protocol.md section 2.3), so that nothing
    // falls between the load and the live read; room frames wait in the outbox
    // until the initial sync is out.
    let membership = state
        .rooms
        .join(&stream_key, Arc::clone(&outbox), client.user.as_deref());
    // Copied out, and let go: the bytes share hyper's whole read buffer.
    metrics::add(&state.metrics.received_bytes, read_ahead.len() as u64);
    let incoming = BytesMut::from(&read_ahead[..]);
    drop(read_ahead);
    let mut connection = Connection {
        decoder: FrameDecoder::new(state.settings.max_message_size, deflate.is_some()),
        inflater: deflate.as_ref().map(Inflater::new),
        session: Session::new(&state.settings, client.access, Instant::now()),
        close_signal: membership.close_signal(),
        expires: client.expires_at.and_then(expiry),
        bus_restarts,
        state,
        socket,
        outbox,
        room,
        stream_key,
        incoming,
    };
    // The opening and the closing are boxed: they run once, and inline they
    // would make every connection's task as large as the largest of them for
    // its whole life.
    let end = match Box::pin(connection.initial_sync()).await {
        Ok(()) => connection.run().await,
        Err(end) => end,
    };
    Box::pin(connection.close(end, membership)).await;
}

/// Load `room`'s document and make its initial sync: encoded, cut into
/// messages under the sync chunk size, framed and compressed once, off the
/// connection's thread (a large document takes a while), for every joiner
/// that opens the room meanwhile.
async fn load_initial_sync(
    state: &AppState,
    stream_key: &str,
    room: &str,
) -> Result<InitialSync, String> {
    let doc = load_doc(
        state.streams.as_ref(),
        state.storage.as_ref(),
        stream_key,
        room,
        DOC_ID,
    )
    .await
    .map_err(|err| err.to_string())?;
    metrics::inc(&state.metrics.document_loads);
    let settings = state.settings.clone();
    tokio::task::spawn_blocking(move || {
        let sync = doc
            .initial_messages(settings.sync_chunk_size)
            .map_err(|err| err.to_string())?;
        for frame in &sync.frames {
            frame.prepare(&settings.deflate);
        }
        Ok(sync)
    })
    .await
    .map_err(|err| format!("making the initial sync failed: {err}"))?
}

impl Connection {
    /// Load the document (shared with whoever opens the room meanwhile) and
    /// queue step 1, step 2 and the awareness states ahead of room frames;
    /// [`Connection::run`] writes them out while it reads the client, so a
    /// client taking a large document slowly is served like any other.
    async fn initial_sync(&mut self) -> Result<(), End> {
        let state = &self.state;
        let (room, stream_key) = (&self.room, &self.stream_key);
        // Boxed: the load is large and lives only now, so it stays out of the
        // connection's future for the rest of its life.
        let loaded = Box::pin(
            state
                .rooms
                .initial_sync(stream_key, || load_initial_sync(state, stream_key, room)),
        )
        .await;
        let sync = match loaded {
            Ok((sync, moved)) => {
                if moved {
                    // The reader follows the room from its next read; waking it
                    // only saves up to one block time, so it never delays this
                    // client.
                    let streams = Arc::clone(&state.streams);
                    tokio::spawn(async move {
                        if let Err(err) = streams.wake_reader().await {
                            tracing::debug!(%err, "could not wake the stream reader");
                        }
                    });
                }
                tracing::debug!(room = %bounded(room), last_id = %sync.last_id, "document loaded");
                sync
            }
            Err(err) => {
                tracing::error!(room = %bounded(room), %err, "could not load the document");
                return Err(End::document_unavailable());
            }
        };
        self.outbox.release(&sync.frames);
        Ok(())
    }

    /// Serve the client until the connection ends.
    async fn run(&mut self) -> End {
        let period = self.session.tick_period();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut write_blocked = false;
        // A clone keeps what the original has seen: a restart during the
        // initial sync is still unseen here.
        let mut bus_restarts = self.bus_restarts.clone();
        let close_signal = Arc::clone(&self.close_signal);
        let ordered = close_signal.ordered();
        tokio::pin!(ordered);
        let expired = tokio::time::sleep_until(
            self.expires
                .unwrap_or_else(|| tokio::time::Instant::now() + UNUSED_TIMER),
        );
        tokio::pin!(expired);
        loop {
            let step = tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => return End::Shutdown,
                _ = bus_restarts.changed() => return End::BusRestarted,
                (code, reason) = &mut ordered => return End::Ordered(code, reason),
                _ = &mut expired, if self.expires.is_some() => {
                    return End::Ordered(CLOSE_REVOKED, TOKEN_EXPIRED.into())
                }
                _ = self.outbox.woken() => self.write_out(&mut write_blocked),
                ready = self.outbox.writable(), if write_blocked => match ready {
                    Ok(()) => self.write_out(&mut write_blocked),
                    Err(_) => Err(End::ClientGone),
                },
                ready = self.socket.readable() => match ready {
                    Ok(()) => self.read().await,
                    Err(_) => Err(End::ClientGone),
                },
                _ = tick.tick() => self.session.tick(Instant::now()).map(|reply| self.carry_out(reply)),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    /// Write what waits in the outbox; end the connection when it stopped.
    fn write_out(&mut self, blocked: &mut bool) -> Result<(), End> {
        match self.outbox.stopped() {
            Some(Stopped::FellBehind) => return Err(End::FellBehind),
            Some(Stopped::Broken) => return Err(End::ClientGone),
            Some(Stopped::Closing) | None => {}
        }
        match self.outbox.flush() {
            Ok(Flushed::Empty) => *blocked = false,
            Ok(Flushed::Pending) => *blocked = true,
            Err(_) => return Err(End::ClientGone),
        }
        Ok(())
    }

    /// Write everything queued, waiting for the socket up to `limit`.
    async fn flush_within(&self, limit: Duration) -> Result<(), End> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match self.outbox.flush() {
                Ok(Flushed::Empty) => return Ok(()),
                Ok(Flushed::Pending) => {}
                Err(_) => return Err(End::ClientGone),
            }
            match tokio::time::timeout_at(deadline, self.outbox.writable()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(End::ClientGone),
                Err(_) => return Err(End::FellBehind),
            }
        }
    }

    /// Send what the session asks to send (a reply that needs no append).
    fn carry_out(&self, reply: Reply) {
        if let Reply::Send(frame) = reply {
            self.outbox.push(frame);
        }
    }

    /// Read what the socket has and act on every complete frame.
    async fn read(&mut self) -> Result<(), End> {
        match self.fill() {
            Ok(0) => return Err(End::ClientGone),
            Ok(_) => self.session.heard(Instant::now()),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => return Err(End::ClientGone),
        }
        loop {
            let incoming = match self.decoder.decode(&mut self.incoming) {
                Ok(Some(incoming)) => self.inflated(incoming).await?,
                Ok(None) => break,
                Err(err) => return Err(End::from(err)),
            };
            match self.session.receive(incoming, Instant::now())? {
                Reply::Append(message) => self.append(&message).await?,
                reply => self.carry_out(reply),
            }
        }
        self.release_idle_buffer();
        Ok(())
    }

    /// `incoming` with a compressed message inflated, within the message size
    /// limit (a larger one ends the connection with 1009).
    async fn inflated(&mut self, incoming: Incoming) -> Result<Incoming, End> {
        let Incoming::Compressed(compressed) = &incoming else {
            return Ok(incoming);
        };
        // The decoder takes compressed messages only where an inflater exists.
        let Some(mut inflater) = self.inflater.take() else {
            return Err(End::Refused(
                close::PROTOCOL_ERROR,
                "reserved bits set".into(),
            ));
        };
        let limit = self.state.settings.max_message_size;
        let (inflater, inflated) = if compressed.len() <= INFLATE_INLINE {
            let inflated = inflater.inflate(compressed, limit);
            (inflater, inflated)
        } else {
            let compressed = compressed.clone();
            tokio::task::spawn_blocking(move || {
                let inflated = inflater.inflate(&compressed, limit);
                (inflater, inflated)
            })
            .await
            .map_err(|_| End::Refused(close::INTERNAL, "inflating failed".into()))?
        };
        self.inflater = Some(inflater);
        Ok(Incoming::Binary(inflated?))
    }

    /// Read what the socket has into `incoming`, without waiting; `Ok(0)` at
    /// the end of the client's stream.
    fn fill(&mut self) -> io::Result<usize> {
        self.incoming.reserve(READ_CHUNK);
        let read = self.socket.try_read_buf(&mut self.incoming);
        if let Ok(n) = read {
            metrics::add(&self.state.metrics.received_bytes, n as u64);
        }
        self.release_idle_buffer();
        read
    }

    /// An idle connection keeps no read buffer.
    fn release_idle_buffer(&mut self) {
        if self.incoming.is_empty() {
            self.incoming = BytesMut::new();
        }
    }

    /// Append one message the session accepted to the room's stream.
    async fn append(&self, message: &[u8]) -> Result<(), End> {
        let state = &self.state;
        let started = Instant::now();
        state
            .streams
            .append(&self.stream_key, message)
            .await
            .map(|()| {
                metrics::inc(&state.metrics.messages_appended);
                metrics::observe(&state.metrics.append_seconds, started.elapsed());
            })
            .map_err(|err| {
                metrics::inc(&state.metrics.append_errors);
                tracing::error!(room = %bounded(&self.room), %err, "could not append a message");
                End::not_stored()
            })
    }

    /// Leave the room, say goodbye as the end requires, and announce the
    /// client's awareness departure.
    async fn close(mut self, end: End, membership: Membership) {
        self.outbox.close();
        drop(membership);
        let ending = self.session.ending(&end);
        if ending.rest == Rest::Received {
            // A write failed or the socket ended: what the client sent before
            // may still wait in the kernel; it is appended all the same.
            self.read_rest(Duration::from_millis(100)).await;
        }
        let room = bounded(&self.room).to_string();
        self.state.metrics.closed(ending.reason);
        log_end(&end, &room);
        if ending.refused {
            metrics::inc(&self.state.metrics.messages_refused);
        }
        if ending.fell_behind {
            metrics::inc(&self.state.metrics.connections_dropped_slow);
            self.outbox.discard();
        }
        if let Rest::CloseFrame { frame, .. } = ending.rest {
            self.outbox.push(frame);
            if self.flush_within(SEND_TIMEOUT).await.is_ok() {
                self.read_rest(CLOSE_LINGER).await;
            }
        }
        if let Some(removal) = self.session.departure() {
            if let Err(err) = self.state.streams.append(&self.stream_key, &removal).await {
                tracing::warn!(%room, %err, "could not announce a client's departure");
            }
        }
    }

    /// Read what the client still sends until it closes its side, sends its
    /// close frame, or goes quiet for `quiet`, appending what the session
    /// keeps (see [`Session::after_close`]). Either way the close frame is read
    /// before the socket goes, so closing with unread bytes does not reset the
    /// connection under it.
    async fn read_rest(&mut self, quiet: Duration) {
        // Only the time spent waiting for bytes is bounded (by `CLOSE_LINGER`),
        // not the time spent appending what arrived: after a reset everything
        // this kernel holds is appended, however slowly Redis answers. A client
        // that keeps sending after the close is bounded by bytes instead.
        let mut waited = Duration::ZERO;
        let mut read = 0;
        while read <= READ_REST_BUDGET {
            let left = CLOSE_LINGER.saturating_sub(waited);
            let started = tokio::time::Instant::now();
            let ready = tokio::time::timeout(quiet.min(left), self.socket.readable()).await;
            waited += started.elapsed();
            if !matches!(ready, Ok(Ok(()))) {
                return;
            }
            match self.fill() {
                Ok(0) => return,
                Ok(n) => read += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            }
            while let Ok(Some(incoming)) = self.decoder.decode(&mut self.incoming) {
                let Ok(incoming) = self.inflated(incoming).await else {
                    return;
                };
                let message = match self.session.after_close(incoming, Instant::now()) {
                    AfterClose::Append(message) => message,
                    AfterClose::Skip => continue,
                    AfterClose::Stop => return,
                };
                if self.append(&message).await.is_err() {
                    return;
                }
            }
        }
    }
}
