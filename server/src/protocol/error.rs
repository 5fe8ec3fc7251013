//! The one error of the protocol layer: why bytes are not a protocol message or value.

use super::codec::ReadError;

/// Why bytes could not be read as a protocol message or value. Every decoder of this
/// module reports through it, so callers can log one readable reason and drop the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The input ended before the message did (this includes an empty frame).
    #[error("truncated message")]
    Truncated,
    /// A variable-length integer does not fit in 64 bits.
    #[error("integer out of range")]
    IntegerOverflow,
    /// The frame holds more bytes after one complete message.
    #[error("trailing bytes")]
    TrailingBytes,
    /// The first varuint names no known message type.
    #[error("unknown message type {0}")]
    UnknownMessageType(u64),
    /// A sync message with a subtype other than step1, step2 or update.
    #[error("unknown sync message type {0}")]
    UnknownSyncType(u64),
    /// A sync step2 or update payload is not a readable Yjs v1 update.
    #[error("invalid update: {0}")]
    InvalidUpdate(String),
    /// A sync step1 payload is not a readable v1 state vector.
    #[error("invalid state vector: {0}")]
    InvalidStateVector(String),
    /// An awareness payload is malformed (bad framing, bad UTF-8 or bad JSON).
    #[error("invalid awareness update: {0}")]
    InvalidAwareness(String),
}

impl From<ReadError> for ProtocolError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated => ProtocolError::Truncated,
            ReadError::Overflow => ProtocolError::IntegerOverflow,
            // Only awareness JSON texts are read as strings at the message level.
            ReadError::Utf8 => ProtocolError::InvalidAwareness(e.to_string()),
        }
    }
}
