//! Real services for tests, each started on a free loopback port in a private
//! temporary directory and stopped when its handle is dropped.
//!
//! A missing program is an error, never a skip: tests that need a service fail
//! loudly where it is not installed (`ci/setup.sh` installs everything).

pub mod client;
pub mod process;
pub mod redis;

pub use client::{doc_content, RawClient, YClient};
pub use process::{free_port, wait_for_port, ServiceProcess};
pub use redis::RedisServer;
