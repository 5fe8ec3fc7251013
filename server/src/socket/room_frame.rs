//! One server message as every member of a room receives it: framed once, and
//! compressed at most once, whoever and however many the members are.
//!
//! A merged room message (and each message of an initial sync shared by
//! joiners opening a room together) is built into a [`RoomFrame`] and handed
//! to every member's outbox. A member that agreed to permessage-deflate gets
//! the compressed frame, the others the plain one; both are made on first
//! need and then shared (`Bytes` clones, no copy), so a room of a thousand
//! members costs one frame, one compression and a thousand writes.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::deflate::{self, Agreed, DeflateSettings};
use super::frame;

/// A server message framed once for every member of a room.
#[derive(Debug)]
pub struct RoomFrame {
    /// The y-websocket message.
    message: Bytes,
    /// The plain binary frame, made on first need.
    plain: OnceLock<Bytes>,
    /// The compressed frame for members whose client allowed the full 15-bit
    /// window (every browser and y-websocket client), made on first need;
    /// `None` when compressing did not make the frame smaller.
    deflated: OnceLock<Option<Bytes>>,
}

/// How one member receives room frames: plain, or compressed as agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// What the member's client agreed to, if it agreed to permessage-deflate.
    pub agreed: Option<Agreed>,
    /// The instance's compression settings.
    pub settings: DeflateSettings,
}

impl Delivery {
    /// Plain frames only.
    pub fn plain() -> Self {
        Self {
            agreed: None,
            settings: DeflateSettings::default(),
        }
    }
}

impl RoomFrame {
    /// A frame of `message`, shared by every member it goes to.
    pub fn new(message: Bytes) -> Arc<Self> {
        Arc::new(Self {
            message,
            plain: OnceLock::new(),
            deflated: OnceLock::new(),
        })
    }

    /// A frame of the message made of `pieces` (a message header and a large
    /// payload, say), framed at once: the message is the frame's own bytes,
    /// so it is held once, not twice.
    pub fn of_pieces(pieces: &[&[u8]]) -> Arc<Self> {
        let (plain, start) = frame::binary_of(pieces);
        Arc::new(Self {
            message: plain.slice(start..),
            plain: OnceLock::from(plain),
            deflated: OnceLock::new(),
        })
    }

    /// The y-websocket message the frame carries.
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// The plain binary frame.
    pub fn plain(&self) -> Bytes {
        self.plain
            .get_or_init(|| frame::binary(&self.message))
            .clone()
    }

    /// The frame a member receiving as `delivery` says is written to it.
    /// Messages under the size threshold, and messages that do not shrink,
    /// go plain (RFC 7692 lets a sender compress message by message).
    pub fn for_member(&self, delivery: &Delivery) -> Bytes {
        let Some(agreed) = delivery.agreed else {
            return self.plain();
        };
        let settings = &delivery.settings;
        if self.message.len() < settings.min_size {
            return self.plain();
        }
        let deflated = if agreed.server_window_bits == deflate::MAX_WINDOW_BITS {
            self.deflated
                .get_or_init(|| self.compress(deflate::MAX_WINDOW_BITS, settings.level))
                .clone()
        } else {
            // A client that limited the server's window: rare, compressed for it.
            self.compress(agreed.server_window_bits, settings.level)
        };
        deflated.unwrap_or_else(|| self.plain())
    }

    /// The compressed frame, when it is smaller than the plain one.
    fn compress(&self, window_bits: u8, level: u32) -> Option<Bytes> {
        let compressed = deflate::compress(&self.message, window_bits, level);
        (compressed.len() < self.message.len()).then(|| frame::compressed_binary(&compressed))
    }

    /// Make the compressed copy now (for example off the fan-out's thread,
    /// for a large initial sync) rather than when the first member needs it.
    pub fn prepare(&self, settings: &DeflateSettings) {
        if settings.enabled && self.message.len() >= settings.min_size {
            self.deflated
                .get_or_init(|| self.compress(deflate::MAX_WINDOW_BITS, settings.level));
        }
        self.plain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agreed(bits: u8) -> Delivery {
        Delivery {
            agreed: Some(Agreed {
                server_window_bits: bits,
                client_no_context_takeover: true,
                client_window_bits: None,
            }),
            settings: DeflateSettings::default(),
        }
    }

    #[test]
    fn members_share_one_plain_and_one_compressed_copy() {
        let text = b"the quick brown fox jumps over the lazy dog ".repeat(20);
        let room_frame = RoomFrame::new(Bytes::from(text.clone()));
        let plain = room_frame.for_member(&Delivery::plain());
        assert_eq!(plain, frame::binary(&text));
        let first = room_frame.for_member(&agreed(15));
        let second = room_frame.for_member(&agreed(15));
        assert_eq!(first[0], 0xC2, "FIN, RSV1 and binary");
        assert!(first.len() < plain.len() / 4);
        // The same allocation, not an equal copy.
        assert_eq!(first.as_ptr(), second.as_ptr());
        assert_eq!(
            room_frame.for_member(&Delivery::plain()).as_ptr(),
            plain.as_ptr()
        );
        // A smaller window gets its own compression.
        let limited = room_frame.for_member(&agreed(10));
        assert_eq!(limited[0], 0xC2);
    }

    #[test]
    fn small_and_incompressible_messages_go_plain() {
        let small = RoomFrame::new(Bytes::from_static(b"\x00\x02\x01\x00"));
        assert_eq!(small.for_member(&agreed(15))[0], 0x82);
        let mut seed = 1u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (seed >> 16) as u8
            })
            .collect();
        let noisy = RoomFrame::new(Bytes::from(noise));
        assert_eq!(noisy.for_member(&agreed(15))[0], 0x82);
    }
}
