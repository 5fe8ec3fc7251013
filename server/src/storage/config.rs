//! The `[storage]` table of the configuration file, the environment variables that
//! override it (y-redis's names where y-redis has one), and opening the backend.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use super::fs::FsStorage;
use super::gcs::{GcsOptions, GcsStorage};
use super::memory::MemoryStorage;
use super::postgres::PostgresStorage;
use super::s3::{S3Options, S3Storage};
use super::{Storage, StorageError};

/// Default directory of the `fs` backend.
pub const DEFAULT_DIR: &str = "./data";

/// Default S3 bucket, y-redis's.
pub const DEFAULT_S3_BUCKET: &str = "ydocs";

/// Default S3 region (used in request signatures).
pub const DEFAULT_S3_REGION: &str = "us-east-1";

/// Which kind of storage documents are compacted into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// In the server's memory, lost on exit.
    Memory,
    /// Files under a directory.
    Fs,
    /// y-redis's PostgreSQL table.
    Postgres,
    /// An S3-compatible bucket in y-redis's layout.
    S3,
    /// A Google Cloud Storage bucket, same layout as S3.
    Gcs,
}

impl FromStr for StorageBackend {
    type Err = StorageError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Self::Memory),
            "fs" => Ok(Self::Fs),
            "postgres" => Ok(Self::Postgres),
            "s3" => Ok(Self::S3),
            "gcs" => Ok(Self::Gcs),
            other => Err(StorageError::Config(format!(
                "unknown storage backend {other:?} (expected memory, fs, postgres, s3 or gcs)"
            ))),
        }
    }
}

impl StorageBackend {
    /// The name used in configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Fs => "fs",
            Self::Postgres => "postgres",
            Self::S3 => "s3",
            Self::Gcs => "gcs",
        }
    }
}

/// The `[storage]` configuration table. Every field is optional; see
/// [`StorageConfig::backend_kind`] for how the backend is chosen when `backend` is
/// absent.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    /// `memory`, `fs`, `postgres`, `s3` or `gcs` (env `STORAGE_BACKEND`).
    pub backend: Option<StorageBackend>,
    /// GCS bucket (env `GOOGLE_CLOUD_STORAGE_BUCKET`).
    pub bucket: Option<String>,
    /// Directory of the `fs` backend, default `./data` (env `STORAGE_DIR`).
    pub dir: Option<PathBuf>,
    /// PostgreSQL URL (env `POSTGRES`).
    pub postgres: Option<String>,
    /// S3 host name or URL (env `S3_ENDPOINT`).
    pub s3_endpoint: Option<String>,
    /// S3 port (env `S3_PORT`).
    pub s3_port: Option<u16>,
    /// S3 over HTTPS (env `S3_SSL`, `true`/`false`; default false as in y-redis).
    pub s3_ssl: Option<bool>,
    /// S3 access key id (env `S3_ACCESS_KEY`).
    pub s3_access_key: Option<String>,
    /// S3 secret access key (env `S3_SECRET_KEY`).
    pub s3_secret_key: Option<String>,
    /// S3 bucket, default `ydocs` (env `S3_BUCKET`).
    pub s3_bucket: Option<String>,
    /// S3 region, default `us-east-1` (env `S3_REGION`).
    pub s3_region: Option<String>,
    /// GCS emulator endpoint such as `http://127.0.0.1:4443` (env
    /// `STORAGE_EMULATOR_HOST`); no credentials are used with it.
    pub gcs_endpoint: Option<String>,
}

impl std::fmt::Debug for StorageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StorageConfig")
            .field("backend", &self.backend)
            .field("bucket", &self.bucket)
            .field("dir", &self.dir)
            .field(
                "postgres",
                &self.postgres.as_deref().map(redact_url_password),
            )
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_port", &self.s3_port)
            .field("s3_ssl", &self.s3_ssl)
            .field("s3_access_key", &self.s3_access_key)
            .field(
                "s3_secret_key",
                &self.s3_secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("gcs_endpoint", &self.gcs_endpoint)
            .finish()
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`, so logs never show it.
fn redact_url_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    match rest[..at].find(':') {
        Some(colon) => format!(
            "{}{}:***{}",
            &url[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        ),
        None => url.to_string(),
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, StorageError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(StorageError::Config(format!(
            "{name} must be true or false, not {value:?}"
        ))),
    }
}

impl StorageConfig {
    /// Override the file's values with environment variables, read through `get`
    /// (pass `|name| std::env::var(name).ok()`). Empty variables count as unset, as
    /// in y-redis. Fails on values that cannot be parsed (`S3_PORT`, `S3_SSL`,
    /// `STORAGE_BACKEND`).
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), StorageError> {
        let var = |name: &str| get(name).filter(|value| !value.trim().is_empty());
        if let Some(value) = var("STORAGE_BACKEND") {
            self.backend = Some(value.parse()?);
        }
        if let Some(value) = var("GOOGLE_CLOUD_STORAGE_BUCKET") {
            self.bucket = Some(value);
        }
        if let Some(value) = var("STORAGE_EMULATOR_HOST") {
            self.gcs_endpoint = Some(value);
        }
        if let Some(value) = var("STORAGE_DIR") {
            self.dir = Some(PathBuf::from(value));
        }
        if let Some(value) = var("POSTGRES") {
            self.postgres = Some(value);
        }
        if let Some(value) = var("S3_ENDPOINT") {
            self.s3_endpoint = Some(value);
        }
        if let Some(value) = var("S3_PORT") {
            let port = value.trim().parse::<u16>().map_err(|_| {
                StorageError::Config(format!("S3_PORT must be a port number, not {value:?}"))
            })?;
            self.s3_port = Some(port);
        }
        if let Some(value) = var("S3_SSL") {
            self.s3_ssl = Some(parse_bool("S3_SSL", &value)?);
        }
        if let Some(value) = var("S3_ACCESS_KEY") {
            self.s3_access_key = Some(value);
        }
        if let Some(value) = var("S3_SECRET_KEY") {
            self.s3_secret_key = Some(value);
        }
        if let Some(value) = var("S3_BUCKET") {
            self.s3_bucket = Some(value);
        }
        if let Some(value) = var("S3_REGION") {
            self.s3_region = Some(value);
        }
        Ok(())
    }

    /// The backend to open: `backend` when set, else `gcs` when a bucket is set,
    /// else `postgres` when a URL is set, else `s3` when an endpoint is set, else
    /// `fs`.
    pub fn backend_kind(&self) -> StorageBackend {
        let set = |value: &Option<String>| value.as_deref().is_some_and(|v| !v.is_empty());
        if let Some(backend) = self.backend {
            backend
        } else if set(&self.bucket) {
            StorageBackend::Gcs
        } else if set(&self.postgres) {
            StorageBackend::Postgres
        } else if set(&self.s3_endpoint) {
            StorageBackend::S3
        } else {
            StorageBackend::Fs
        }
    }

    /// The options of the S3 backend, defaults filled in.
    pub fn s3_options(&self) -> Result<S3Options, StorageError> {
        let endpoint = self
            .s3_endpoint
            .clone()
            .filter(|e| !e.is_empty())
            .ok_or_else(|| StorageError::Config("S3 storage needs S3_ENDPOINT".into()))?;
        Ok(S3Options {
            endpoint,
            port: self.s3_port,
            ssl: self.s3_ssl.unwrap_or(false),
            access_key: self.s3_access_key.clone(),
            secret_key: self.s3_secret_key.clone(),
            bucket: self
                .s3_bucket
                .clone()
                .filter(|b| !b.is_empty())
                .unwrap_or_else(|| DEFAULT_S3_BUCKET.to_string()),
            region: self
                .s3_region
                .clone()
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| DEFAULT_S3_REGION.to_string()),
        })
    }
}

/// How long opening a backend (connecting, the start-up check) may take in all,
/// so a server that accepts connections but never answers stops the start too.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Open the configured backend and check it can be used (reachable, bucket present
/// or created), so a bad configuration stops the server at start with a clear
/// message instead of failing at its first compaction. Gives up after
/// [`OPEN_TIMEOUT`].
pub async fn open_storage(cfg: &StorageConfig) -> Result<Arc<dyn Storage>, StorageError> {
    let kind = cfg.backend_kind();
    match tokio::time::timeout(OPEN_TIMEOUT, open_backend(cfg, kind)).await {
        Ok(result) => result,
        Err(_) => Err(StorageError::Backend(format!(
            "{} storage did not answer within {} s",
            kind.as_str(),
            OPEN_TIMEOUT.as_secs()
        ))),
    }
}

async fn open_backend(
    cfg: &StorageConfig,
    kind: StorageBackend,
) -> Result<Arc<dyn Storage>, StorageError> {
    let storage: Arc<dyn Storage> = match kind {
        StorageBackend::Memory => Arc::new(MemoryStorage::new()),
        StorageBackend::Fs => Arc::new(
            FsStorage::open(
                cfg.dir
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR)),
            )
            .await?,
        ),
        StorageBackend::Postgres => {
            let url = cfg
                .postgres
                .as_deref()
                .filter(|url| !url.is_empty())
                .ok_or_else(|| {
                    StorageError::Config("postgres storage needs a URL (POSTGRES)".into())
                })?;
            Arc::new(PostgresStorage::connect(url).await?)
        }
        StorageBackend::S3 => Arc::new(S3Storage::open(cfg.s3_options()?).await?),
        StorageBackend::Gcs => {
            let bucket = cfg
                .bucket
                .clone()
                .filter(|bucket| !bucket.is_empty())
                .ok_or_else(|| {
                    StorageError::Config(
                        "gcs storage needs a bucket (GOOGLE_CLOUD_STORAGE_BUCKET)".into(),
                    )
                })?;
            Arc::new(
                GcsStorage::open(GcsOptions {
                    bucket,
                    emulator: cfg.gcs_endpoint.clone(),
                })
                .await?,
            )
        }
    };
    tracing::info!(backend = storage.name(), "document storage ready");
    Ok(storage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_env as env;

    #[test]
    fn backend_is_inferred_in_order() {
        let mut cfg = StorageConfig::default();
        assert_eq!(cfg.backend_kind(), StorageBackend::Fs);
        cfg.s3_endpoint = Some("minio".into());
        assert_eq!(cfg.backend_kind(), StorageBackend::S3);
        cfg.postgres = Some("postgres://x@y/z".into());
        assert_eq!(cfg.backend_kind(), StorageBackend::Postgres);
        cfg.bucket = Some("b".into());
        assert_eq!(cfg.backend_kind(), StorageBackend::Gcs);
        cfg.backend = Some(StorageBackend::Memory);
        assert_eq!(cfg.backend_kind(), StorageBackend::Memory);
    }

    #[test]
    fn toml_table_parses() {
        let cfg: StorageConfig = toml::from_str(
            "backend = \"s3\"\ns3_endpoint = \"minio\"\ns3_port = 9000\ns3_ssl = true\ndir = \"/var/y\"",
        )
        .unwrap();
        assert_eq!(cfg.backend, Some(StorageBackend::S3));
        assert_eq!(cfg.s3_port, Some(9000));
        assert_eq!(cfg.s3_ssl, Some(true));
        assert_eq!(cfg.dir, Some(PathBuf::from("/var/y")));
        assert!(toml::from_str::<StorageConfig>("backend = \"floppy\"").is_err());
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut cfg = StorageConfig {
            bucket: Some("file-bucket".into()),
            s3_port: Some(1),
            ..StorageConfig::default()
        };
        cfg.apply_env(env(&[
            ("GOOGLE_CLOUD_STORAGE_BUCKET", "env-bucket"),
            ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:4443"),
            ("POSTGRES", "postgres://u@h/d"),
            ("S3_ENDPOINT", "minio"),
            ("S3_PORT", "9000"),
            ("S3_SSL", "false"),
            ("S3_ACCESS_KEY", "a"),
            ("S3_SECRET_KEY", "s"),
            ("S3_BUCKET", "b2"),
            ("S3_REGION", "eu-west-1"),
            ("STORAGE_DIR", "/tmp/x"),
            ("STORAGE_BACKEND", "s3"),
        ]))
        .unwrap();
        assert_eq!(cfg.bucket.as_deref(), Some("env-bucket"));
        assert_eq!(cfg.gcs_endpoint.as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(cfg.postgres.as_deref(), Some("postgres://u@h/d"));
        assert_eq!(cfg.s3_port, Some(9000));
        assert_eq!(cfg.s3_ssl, Some(false));
        assert_eq!(cfg.dir, Some(PathBuf::from("/tmp/x")));
        assert_eq!(cfg.backend_kind(), StorageBackend::S3);
        let s3 = cfg.s3_options().unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("b2", "eu-west-1")
        );
    }

    #[test]
    fn bad_environment_values_are_config_errors() {
        for (name, value) in [
            ("S3_PORT", "http"),
            ("S3_SSL", "maybe"),
            ("STORAGE_BACKEND", "x"),
        ] {
            let mut cfg = StorageConfig::default();
            let result = cfg.apply_env(env(&[(name, value)]));
            assert!(
                matches!(result, Err(StorageError::Config(_))),
                "{name}={value}"
            );
        }
        let mut cfg = StorageConfig::default();
        cfg.apply_env(env(&[("POSTGRES", "")])).unwrap();
        assert_eq!(cfg.backend_kind(), StorageBackend::Fs);
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = StorageConfig {
            postgres: Some("postgres://user:hunter2@db:5432/y".into()),
            s3_secret_key: Some("topsecret".into()),
            ..StorageConfig::default()
        };
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("topsecret"),
            "{text}"
        );
        assert!(text.contains("postgres://user:***@db:5432/y"), "{text}");
    }

    #[tokio::test]
    async fn missing_settings_are_config_errors() {
        for backend in [
            StorageBackend::Postgres,
            StorageBackend::S3,
            StorageBackend::Gcs,
        ] {
            let cfg = StorageConfig {
                backend: Some(backend),
                ..StorageConfig::default()
            };
            assert!(
                matches!(open_storage(&cfg).await, Err(StorageError::Config(_))),
                "{backend:?}"
            );
        }
    }
}
