//! The limits and timers of a connection, and the meter that holds a client to
//! its rates. Plain values and arithmetic, so the session applies them to
//! instants it is given.

use std::time::{Duration, Instant};

use crate::socket::deflate::DeflateSettings;

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
    /// permessage-deflate: whether it is negotiated, and how frames are
    /// compressed.
    pub deflate: DeflateSettings,
    /// A document whose initial sync is larger than this many bytes is sent
    /// as several update messages each under it, then sync step 2, so that
    /// a client on a slow link keeps receiving messages (y-websocket clients
    /// reconnect after 30 s without one).
    pub sync_chunk_size: usize,
    /// While the rooms are busy (`subscriber.rs` says when), the next stream
    /// read starts this long after the previous one, so that what arrives
    /// meanwhile goes out merged, one frame per member, instead of a frame
    /// per update. At light load nothing waits. Zero: never.
    pub coalesce_window: Duration,
    /// How long entries stay in a stream after compaction
    /// (`REDIS_MIN_MESSAGE_LIFETIME`). Stream reads that failed for half of it
    /// may have missed entries trimmed meanwhile: the subscriber then closes
    /// every connection, so that clients load the document again.
    pub message_lifetime: Duration,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self {
            max_message_size: 100 * 1024 * 1024,
            buffer_capacity: 512,
            idle_timeout: Duration::from_secs(60),
            limits: Limits::default(),
            deflate: DeflateSettings::default(),
            sync_chunk_size: 1024 * 1024,
            coalesce_window: Duration::from_millis(5),
            message_lifetime: Duration::from_secs(60),
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
#[derive(Debug)]
pub(super) struct Meter {
    since: Instant,
    messages: u64,
    bytes: u64,
}

impl Meter {
    /// A meter whose first second starts at `now`.
    pub(super) fn new(now: Instant) -> Self {
        Self {
            since: now,
            messages: 0,
            bytes: 0,
        }
    }

    /// Count one message of `len` bytes arrived at `now`; why it goes over a
    /// limit, if it does.
    pub(super) fn count(&mut self, len: usize, limits: &Limits, now: Instant) -> Option<String> {
        if now.saturating_duration_since(self.since) >= Duration::from_secs(1) {
            *self = Self::new(now);
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
