//! Real services for tests, each started on a free loopback port in a private
//! temporary directory and stopped when its handle is dropped.
//!
//! A missing program is an error, never a skip: tests that need a service fail
//! loudly where it is not installed (`ci/setup.sh` installs everything).

pub mod callback;
pub mod client;
pub mod gcs;
pub mod postgres;
pub mod process;
pub mod redis;
pub mod redis_cluster;
pub mod s3;
pub mod sentinel;
pub mod stall;
pub mod storm;
pub mod values;

pub use self::redis::{xadd_all, xlen, RedisServer};
pub use self::redis_cluster::{ClusterNode, RedisCluster};
pub use callback::PermissionCallback;
pub use client::{doc_content, Handshake, RawClient, YClient};
pub use gcs::FakeGcsServer;
pub use postgres::PostgresServer;
pub use process::{free_port, group_listens_on, python, wait_for_port, ServiceProcess};
pub use s3::S3Server;
pub use sentinel::{SentinelSet, MASTER_NAME};
pub use stall::StallingRelay;
pub use storm::{open_at_once, Storm};
pub use values::{hex, now_ms};
