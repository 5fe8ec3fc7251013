//! One WebSocket connection: initial sync, then client messages to the stream
//! and room messages to the client.
//!
//! One task per connection, and no task at all on the way out while the
//! client keeps up: the room's fan-out writes frames straight to the socket
//! (see [`Outbox`]); this task reads the client's frames, appends what must be
//! appended, drains the outbox when the socket blocked, answers pings, pings
//! a quiet client and closes a dead one.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{Access, Authenticator};
use crate::load::load_doc;
use crate::log_text::bounded;
use crate::metrics::{self, CloseReason, Metrics};
use crate::protocol::{self, ClientAction};
use crate::rooms::{Membership, Rooms};
use crate::socket::{close, frame, Flushed, FrameDecoder, Incoming, Outbox, Stopped};
use crate::storage::Storage;
use crate::streams::{self, Streams, DOC_ID};

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
}

/// Limits and timers of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
    /// Largest accepted message in bytes.
    pub max_message_size: usize,
    /// Room frames queued for a client that does not keep up before it is
    /// dropped from the room.
    pub buffer_capacity: usize,
    /// A client heard from neither frame nor pong for this long is closed; one
    /// quiet for half of it is pinged. Zero: never.
    pub idle_timeout: Duration,
    /// What one client may send.
    pub limits: Limits,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_message_size: 100 * 1024 * 1024,
            buffer_capacity: 512,
            idle_timeout: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

/// What one connection may send; a client over a limit is closed with 1008
/// after everything it sent before has been appended. Zero means no limit.
///
/// The defaults leave room for what editors really do: y-websocket clients
/// send one message per edit and per awareness change, and also send back
/// every awareness change they receive, so a client in a busy room sends
/// about as many awareness messages as the whole room makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Messages per second.
    pub messages_per_second: u64,
    /// Bytes per second (a single larger message still passes when it is the
    /// first of its second).
    pub bytes_per_second: u64,
    /// Bytes of one client's awareness state (its JSON text).
    pub awareness_state: usize,
    /// Client entries in one awareness message.
    pub awareness_clients: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            messages_per_second: 2000,
            bytes_per_second: 16 * 1024 * 1024,
            awareness_state: 64 * 1024,
            awareness_clients: 1000,
        }
    }
}

/// Counts what a client sent in the current second, against [`Limits`].
struct Meter {
    since: Instant,
    messages: u64,
    bytes: u64,
}

impl Meter {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            messages: 0,
            bytes: 0,
        }
    }

    /// Count one message of `len` bytes; why it goes over a limit, if it does.
    fn count(&mut self, len: usize, limits: &Limits) -> Option<String> {
        let now = Instant::now();
        if now.duration_since(self.since) >= Duration::from_secs(1) {
            *self = Self {
                since: now,
                messages: 0,
                bytes: 0,
            };
        }
        let bytes_before = self.bytes;
        self.messages += 1;
        self.bytes += len as u64;
        if limits.messages_per_second > 0 && self.messages > limits.messages_per_second {
            return Some(format!(
                "over {} messages per second",
                limits.messages_per_second
            ));
        }
        if limits.bytes_per_second > 0 && bytes_before >= limits.bytes_per_second {
            return Some(format!("over {} bytes per second", limits.bytes_per_second));
        }
        None
    }
}

/// How long the initial sync and the close frame may take to leave before the
/// client counts as stuck.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a closed connection waits for the client to close its side, so
/// that the close frame is read before the socket goes.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Bytes a closing connection reads at most: more than a kernel's receive
/// buffer holds, so all a reset client had sent fits, while a client that keeps
/// sending after the close cannot hold its connection open.
const READ_REST_BUDGET: usize = 16 * 1024 * 1024;

/// Bytes a read takes from the socket at most.
const READ_CHUNK: usize = 8 * 1024;

/// Keeps the open-connections gauge right however the connection ends.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::dec(&self.0.connections_open);
    }
}

/// Why a connection ended, for the close frame and the log line.
enum End {
    /// The client sent a close frame (with this code).
    ClientClosed(Option<u16>),
    /// The client's socket ended or failed.
    ClientGone,
    /// Nothing was heard from the client within the idle timeout.
    Silent,
    /// The instance is shutting down.
    Shutdown,
    /// The client did not keep up with its room.
    FellBehind,
    /// Redis restarted and may have lost what the client sent: it must
    /// reconnect and send its document again.
    BusRestarted,
    /// The client or the bus failed it: close with this code and reason.
    Refused(u16, String),
}

/// The metrics label of an end.
fn close_reason(end: &End) -> CloseReason {
    match end {
        End::ClientClosed(_) | End::ClientGone => CloseReason::Client,
        End::Silent => CloseReason::Silent,
        End::Shutdown => CloseReason::Shutdown,
        End::FellBehind => CloseReason::SlowConsumer,
        End::Refused(close::INTERNAL, _) | End::BusRestarted => CloseReason::Error,
        End::Refused(close::TOO_BIG | close::POLICY, _) => CloseReason::TooLarge,
        End::Refused(..) => CloseReason::InvalidFrame,
    }
}

/// One client's connection while it lives.
struct Connection {
    state: Arc<AppState>,
    socket: Arc<TcpStream>,
    outbox: Arc<Outbox>,
    room: String,
    stream_key: String,
    access: Access,
    decoder: FrameDecoder,
    /// Bytes read and not yet decoded; empty (no allocation) between frames.
    incoming: BytesMut,
    /// The client id and clock of this connection's awareness, to announce its
    /// departure when it closes (docs/protocol.md section 2.6).
    awareness: Option<(u64, u64)>,
    /// When the client last sent anything.
    heard: Instant,
    /// Whether a ping is out, unanswered.
    pinged: bool,
    /// What the client sent in the current second.
    meter: Meter,
}

/// Serve one upgraded connection of `room` until the client leaves, the
/// instance shuts down, or the client misbehaves. `read_ahead` holds bytes the
/// client sent right behind its upgrade request.
pub async fn serve(
    socket: TcpStream,
    read_ahead: Bytes,
    state: Arc<AppState>,
    room: String,
    access: Access,
) {
    metrics::inc(&state.metrics.connections_total);
    metrics::inc(&state.metrics.connections_open);
    let _open = OpenConnection(Arc::clone(&state.metrics));
    let stream_key = streams::stream_key(state.streams.prefix(), &room, DOC_ID);
    let socket = Arc::new(socket);
    let outbox = Arc::new(Outbox::new(
        Arc::clone(&socket),
        state.settings.buffer_capacity,
        Arc::clone(&state.metrics),
    ));
    // Join before loading (docs/protocol.md section 2.3), so that nothing
    // falls between the load and the live read; room frames wait in the outbox
    // until the initial sync is out.
    let membership = state.rooms.join(&stream_key, Arc::clone(&outbox));
    // Copied out, and let go: the bytes share hyper's whole read buffer.
    metrics::add(&state.metrics.received_bytes, read_ahead.len() as u64);
    let incoming = BytesMut::from(&read_ahead[..]);
    drop(read_ahead);
    let mut connection = Connection {
        decoder: FrameDecoder::new(state.settings.max_message_size),
        state,
        socket,
        outbox,
        room,
        stream_key,
        access,
        incoming,
        awareness: None,
        heard: Instant::now(),
        pinged: false,
        meter: Meter::new(),
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

impl Connection {
    /// Load the document (shared with whoever opens the room meanwhile) and
    /// send step 1, step 2 and the awareness states ahead of room frames.
    async fn initial_sync(&mut self) -> Result<(), End> {
        let state = &self.state;
        let (room, stream_key) = (&self.room, &self.stream_key);
        // Boxed: the load is large and lives only now, so it stays out of the
        // connection's future for the rest of its life.
        let loaded = Box::pin(state.rooms.initial_sync(stream_key, || async {
            load_doc(
                state.streams.as_ref(),
                state.storage.as_ref(),
                stream_key,
                room,
                DOC_ID,
            )
            .await
            .and_then(|doc| doc.initial_messages())
            .map_err(|err| err.to_string())
        }))
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
                return Err(End::Refused(close::INTERNAL, "document unavailable".into()));
            }
        };
        let initial = [Some(sync.step1), Some(sync.step2), sync.awareness];
        self.outbox
            .release(initial.iter().flatten().map(|m| frame::binary(m)));
        self.flush_within(SEND_TIMEOUT).await
    }

    /// Serve the client until the connection ends.
    async fn run(&mut self) -> End {
        let idle = self.state.settings.idle_timeout;
        let period = if idle.is_zero() {
            Duration::from_secs(3600)
        } else {
            idle / 2
        };
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut write_blocked = false;
        let mut bus_restarts = self.state.bus_restarts.subscribe();
        loop {
            let step = tokio::select! {
                biased;
                _ = self.state.shutdown.cancelled() => return End::Shutdown,
                _ = bus_restarts.changed() => return End::BusRestarted,
                _ = self.outbox.woken() => self.write_out(&mut write_blocked),
                ready = self.outbox.writable(), if write_blocked => match ready {
                    Ok(()) => self.write_out(&mut write_blocked),
                    Err(_) => Err(End::ClientGone),
                },
                ready = self.socket.readable() => match ready {
                    Ok(()) => self.read().await,
                    Err(_) => Err(End::ClientGone),
                },
                _ = tick.tick() => self.check_idle(idle),
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

    /// Ping a client quiet for half the idle timeout; close one quiet for all
    /// of it that left the ping unanswered (a peer that vanished without
    /// closing its socket).
    fn check_idle(&mut self, idle: Duration) -> Result<(), End> {
        if idle.is_zero() {
            return Ok(());
        }
        let quiet = self.heard.elapsed();
        // Only a client that left a ping unanswered is silent: one that
        // answers each ping is heard from at every other tick.
        if quiet >= idle && self.pinged {
            return Err(End::Silent);
        }
        if quiet >= idle / 2 && !self.pinged {
            self.pinged = true;
            self.outbox.push(frame::ping(b""));
        }
        Ok(())
    }

    /// Read what the socket has and act on every complete frame.
    async fn read(&mut self) -> Result<(), End> {
        match self.fill() {
            Ok(0) => return Err(End::ClientGone),
            Ok(_) => {
                self.heard = Instant::now();
                self.pinged = false;
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => return Ok(()),
            Err(_) => return Err(End::ClientGone),
        }
        loop {
            let incoming = match self.decoder.decode(&mut self.incoming) {
                Ok(Some(incoming)) => incoming,
                Ok(None) => break,
                Err(err) => return Err(End::Refused(err.close_code(), err.to_string())),
            };
            match incoming {
                Incoming::Close(code) => return Err(End::ClientClosed(code)),
                Incoming::Ping(payload) => self.outbox.push(frame::pong(&payload)),
                Incoming::Pong => {}
                // Everything a reader sends is dropped unread, awareness
                // included (docs/protocol.md section 2.5), so it never
                // has a departure to announce.
                Incoming::Text | Incoming::Binary(_) if self.access != Access::ReadWrite => {}
                Incoming::Text => {
                    return Err(End::Refused(
                        close::UNSUPPORTED,
                        "text frames are not y-websocket messages".into(),
                    ))
                }
                Incoming::Binary(message) => self.append(message).await?,
            }
        }
        self.release_idle_buffer();
        Ok(())
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

    /// Validate one message from a writer and append what must be appended.
    async fn append(&mut self, frame: Bytes) -> Result<(), End> {
        let limits = self.state.settings.limits;
        if let Some(reason) = self.meter.count(frame.len(), &limits) {
            return Err(End::Refused(close::POLICY, reason));
        }
        let action = protocol::client_action(&frame).map_err(|err| {
            End::Refused(close::INVALID_PAYLOAD, format!("invalid message: {err}"))
        })?;
        let ClientAction::Append {
            message,
            awareness: entry,
            awareness_size,
        } = action
        else {
            return Ok(());
        };
        if let Some(size) = awareness_size {
            if limits.awareness_clients > 0 && size.clients > limits.awareness_clients {
                return Err(End::Refused(
                    close::POLICY,
                    format!(
                        "awareness message with over {} clients",
                        limits.awareness_clients
                    ),
                ));
            }
            if limits.awareness_state > 0 && size.largest_state > limits.awareness_state {
                return Err(End::Refused(
                    close::POLICY,
                    format!("awareness state over {} bytes", limits.awareness_state),
                ));
            }
        }
        if let Some((client_id, clock)) = entry {
            match &mut self.awareness {
                None => self.awareness = Some((client_id, clock)),
                Some((known, last)) if *known == client_id => *last = clock,
                Some(_) => {}
            }
        }
        let state = &self.state;
        let started = Instant::now();
        state
            .streams
            .append(&self.stream_key, &message)
            .await
            .map(|()| {
                metrics::inc(&state.metrics.messages_appended);
                metrics::observe(&state.metrics.append_seconds, started.elapsed());
            })
            .map_err(|err| {
                metrics::inc(&state.metrics.append_errors);
                tracing::error!(room = %bounded(&self.room), %err, "could not append a message");
                End::Refused(close::INTERNAL, "message not stored, reconnect".into())
            })
    }

    /// Leave the room, say goodbye as the end requires, and announce the
    /// client's awareness departure.
    async fn close(mut self, end: End, membership: Membership) {
        self.outbox.close();
        drop(membership);
        if matches!(end, End::ClientGone) {
            // A write failed or the socket ended: what the client sent before
            // may still wait in the kernel; it is appended all the same.
            self.read_rest(true, Duration::from_millis(100)).await;
        }
        let room = bounded(&self.room).to_string();
        self.state.metrics.closed(close_reason(&end));
        let frame = match &end {
            End::ClientClosed(code) => {
                tracing::debug!(%room, "client disconnected");
                Some(frame::close(code.unwrap_or(close::NORMAL), ""))
            }
            End::ClientGone => {
                tracing::debug!(%room, "client went away");
                None
            }
            End::Silent => {
                tracing::info!(%room, "closing a connection silent for the idle timeout");
                None
            }
            End::Shutdown => Some(frame::close(close::GOING_AWAY, "server shutting down")),
            End::FellBehind => {
                metrics::inc(&self.state.metrics.connections_dropped_slow);
                tracing::info!(%room, "closing a connection that fell behind");
                self.outbox.discard();
                Some(frame::close(
                    close::TRY_AGAIN_LATER,
                    "too far behind, reconnect",
                ))
            }
            End::BusRestarted => {
                tracing::info!(%room, "closing a connection after a redis restart");
                Some(frame::close(close::INTERNAL, "redis restarted, reconnect"))
            }
            End::Refused(code, reason) => {
                if *code != close::INTERNAL {
                    metrics::inc(&self.state.metrics.messages_refused);
                }
                tracing::warn!(%room, code, %reason, "closing the connection");
                Some(frame::close(*code, reason))
            }
        };
        if let Some(frame) = frame {
            self.outbox.push(frame);
            if self.flush_within(SEND_TIMEOUT).await.is_ok() {
                // A refused client's further messages are dropped; anyone
                // else's, sent before it saw the close, are appended.
                let keep = !matches!(end, End::Refused(..));
                self.read_rest(keep, CLOSE_LINGER).await;
            }
        }
        if let Some((client_id, clock)) = self.awareness {
            let removal = protocol::encode_awareness_removal(client_id, clock);
            if let Err(err) = self.state.streams.append(&self.stream_key, &removal).await {
                tracing::warn!(%room, %err, "could not announce a client's departure");
            }
        }
    }

    /// Read what the client still sends until it closes its side, sends its
    /// close frame, or goes quiet for `quiet`; with `keep`, every complete
    /// message from a writer is appended on the way (what a client sent before
    /// it saw the close, or before its reset, is not lost: a reset does not
    /// take back what this kernel received). Without it the bytes are dropped.
    /// Either way the close frame is read before the socket goes, so closing
    /// with unread bytes does not reset the connection under it.
    async fn read_rest(&mut self, keep: bool, quiet: Duration) {
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
                let message = match incoming {
                    Incoming::Binary(message) if keep && self.access == Access::ReadWrite => {
                        message
                    }
                    Incoming::Close(_) => return,
                    _ => continue,
                };
                if self.append(message).await.is_err() {
                    return;
                }
            }
        }
    }
}
