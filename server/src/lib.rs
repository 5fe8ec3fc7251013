//! A y-redis compatible WebSocket server for Yjs collaborative editing.

pub mod protocol;
pub mod storage;
