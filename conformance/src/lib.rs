//! Conformance harness: runs this project's Rust server next to a JavaScript
//! y-redis 0.1.6 implementation on one Redis and compares what they do.
//!
//! - [`fleet`]: one Redis, Rust and JavaScript servers and workers, a storage
//!   choice and optional auth, every process on a free loopback port and stopped
//!   on drop;
//! - [`sidecar`]: real yjs and real y-websocket providers, driven from Rust;
//! - [`dump`]: Redis contents normalised for comparison;
//! - [`wire`]: frames and messages read the way clients read them;
//! - [`handshake`]: upgrade requests by hand, reporting the HTTP status and the
//!   subprotocol a server answered;
//! - [`edit`] and [`content`]: the same edits and content checks on yrs and yjs;
//! - [`browser`]: scripts driving headless Chromium, run and read;
//! - [`wait`]: polling for what a test waits on.
//!
//! See `docs/conformance.md` for how to run the groups and what each proves.

#![deny(missing_docs)]

pub mod auth;
pub mod browser;
pub mod content;
pub mod dump;
pub mod edit;
pub mod fleet;
pub mod handshake;
pub mod member;
pub mod paths;
pub mod redis;
pub mod sidecar;
pub mod storage;
pub mod wait;
pub mod wire;

pub use auth::{Access, AuthService, Keys, Reply};
pub use edit::EditOp;
pub use fleet::{Fleet, FleetBuilder};
pub use member::{Lang, Member, Role};
pub use sidecar::{JsClient, Sidecar, YWebsocket};
pub use storage::{Storage, StoredItem};
