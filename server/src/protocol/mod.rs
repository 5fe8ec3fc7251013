//! The y-websocket wire protocol as y-redis 0.1.6 speaks it.
//!
//! Everything here is pure (no I/O): decoding and encoding of client messages, the
//! decision of what a client message turns into in Redis, awareness state handling,
//! the merge applied to messages read from a stream before they are relayed, and the
//! split of a large update into smaller ones, each under a message size bound.
//! Byte layouts follow the y-redis 0.1.6 captures in `fixtures/yredis-0.1.6/`.

mod awareness;
mod codec;
mod error;
mod guard;
mod merge;
mod message;
mod split;
mod update;

#[cfg(test)]
mod test_util;

pub use awareness::{AwarenessEntry, AwarenessStates, AwarenessUpdate};
pub use error::ProtocolError;
pub use guard::guard_yrs;
pub use merge::merge_messages;
pub use message::{
    client_action, decode_message, decode_stream_entry, encode_awareness_message,
    encode_awareness_removal, encode_sync_step1, encode_sync_step2, encode_sync_update,
    sync_message_prefix, AwarenessSize, ClientAction, Message, SyncMessage, MESSAGE_AUTH,
    MESSAGE_AWARENESS, MESSAGE_QUERY_AWARENESS, MESSAGE_SYNC, SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE,
};
pub use split::split_update_v1;
pub use update::has_gap_v1;

/// Check that `update` is a Yjs v1 update that both Yjs and yrs read, as a
/// client's updates are checked before they are appended.
pub fn check_update(update: &[u8]) -> Result<(), String> {
    update::check_update_v1(update)
}
