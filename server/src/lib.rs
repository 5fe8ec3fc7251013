//! A y-redis compatible WebSocket server for Yjs collaborative editing.

pub mod auth;
pub mod protocol;
pub mod storage;
