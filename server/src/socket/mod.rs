//! The WebSocket layer under a connection: the opening handshake, client
//! frames in, server frames out, and the outbox that writes room frames
//! straight to a client's socket.

pub mod frame;
pub mod handshake;
pub mod outbox;

pub use frame::{FrameDecoder, FrameError, Incoming};
pub use outbox::{Flushed, Outbox, Stopped};

/// WebSocket close codes this server sends.
pub mod close {
    /// The client closed normally (echoed back when it gave no code).
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// The client broke the WebSocket framing rules.
    pub const PROTOCOL_ERROR: u16 = 1002;
    /// A text frame: the protocol is binary.
    pub const UNSUPPORTED: u16 = 1003;
    /// A frame that does not decode as a y-websocket message.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The client went over a per-connection limit.
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The document could not be loaded or the bus refused a message.
    pub const INTERNAL: u16 = 1011;
    /// The connection fell behind its room; reconnecting resyncs it.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}
