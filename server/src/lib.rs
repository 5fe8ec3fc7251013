//! A y-redis compatible WebSocket server for Yjs collaborative editing.
//!
//! Clients speak the y-websocket protocol; every message goes through Redis
//! streams laid out exactly as y-redis 0.1.6 lays them out, so Rust and
//! JavaScript instances serve the same documents side by side. A worker
//! compacts streams into storage in y-redis's layouts.

#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod api;
pub mod app;
pub mod auth;
pub mod config;
pub mod connection;
pub mod control;
pub mod demo;
pub mod document;
pub mod gate;
pub mod inspector;
pub mod listener;
pub mod load;
pub mod log_text;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod restarts;
pub mod rooms;
pub mod socket;
pub mod storage;
pub mod streams;
pub mod subscriber;
pub mod upgrade;
pub mod versions;
pub mod worker;
