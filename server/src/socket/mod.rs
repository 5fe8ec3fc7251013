//! The WebSocket layer under a connection: the opening handshake, client
//! frames in, server frames out, and the outbox that writes room frames
//! straight to a client's socket.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod outbox;

pub use frame::{close, FrameDecoder, FrameError, Incoming};
pub use outbox::{Flushed, Outbox, Stopped};
