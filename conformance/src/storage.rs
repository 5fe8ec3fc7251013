//! Where a fleet's workers persist documents: per-process memory, or a shared
//! PostgreSQL or S3 server started through `testkit`, configured in both
//! languages with y-redis's environment names.

use anyhow::Result;
use testkit::{PostgresServer, S3Server};

use crate::member::Lang;

/// The storage a fleet uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// Each process keeps its own documents in memory. Nothing is shared, so a
    /// worker's compaction is invisible to servers: fine for fleets whose streams
    /// are never trimmed under a reader, refused for fleets that mix languages
    /// and run workers.
    Memory,
    /// One PostgreSQL server (`POSTGRES`, y-redis's table `yredis_docs_v1`).
    Postgres,
    /// One S3 server (moto; `S3_ENDPOINT`, `S3_PORT`, … and bucket `ydocs`).
    S3,
}

/// The running storage service of a fleet, if any.
pub(crate) enum StorageService {
    Memory,
    Postgres(PostgresServer),
    S3(S3Server),
}

impl StorageService {
    /// Start the service `storage` needs (nothing for memory).
    pub(crate) fn start(storage: Storage) -> Result<Self> {
        Ok(match storage {
            Storage::Memory => Self::Memory,
            Storage::Postgres => Self::Postgres(PostgresServer::start()?),
            Storage::S3 => Self::S3(S3Server::start()?),
        })
    }

    /// The environment selecting this storage in a process of `lang`: y-redis's
    /// names for both, plus `STORAGE_BACKEND` for the Rust server, whose default
    /// would be a local directory.
    pub(crate) fn env(&self, lang: Lang) -> Vec<(String, String)> {
        let mut env: Vec<(&str, String)> = Vec::new();
        match self {
            Self::Memory => {
                if lang == Lang::Rust {
                    env.push(("STORAGE_BACKEND", "memory".into()));
                }
            }
            Self::Postgres(pg) => {
                env.push(("POSTGRES", pg.url()));
                if lang == Lang::Rust {
                    env.push(("STORAGE_BACKEND", "postgres".into()));
                }
            }
            Self::S3(s3) => {
                env.extend([
                    ("S3_ENDPOINT", "127.0.0.1".to_string()),
                    ("S3_PORT", s3.port().to_string()),
                    ("S3_SSL", "false".to_string()),
                    ("S3_ACCESS_KEY", s3.access_key().to_string()),
                    ("S3_SECRET_KEY", s3.secret_key().to_string()),
                ]);
                if lang == Lang::Rust {
                    env.push(("STORAGE_BACKEND", "s3".into()));
                }
            }
        }
        env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
    }
}
