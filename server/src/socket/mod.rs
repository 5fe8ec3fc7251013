//! The WebSocket layer under a connection: the opening handshake and its
//! permessage-deflate agreement, client frames in, server frames out (room
//! frames made once for every member), and the outbox that writes them
//! straight to a client's socket.

pub mod deflate;
pub mod frame;
pub mod handshake;
pub mod outbox;
pub mod room_frame;

pub use frame::{close, FrameDecoder, FrameError, Incoming};
pub use outbox::{Flushed, Outbox, Stopped};
pub use room_frame::{Delivery, RoomFrame};
