//! The `[storage]` table of the configuration file and how the backend is chosen
//! from it. The environment variables that override it are rows of
//! [`crate::config::SETTINGS`].

use std::path::PathBuf;
use std::str::FromStr;

use super::s3::S3Options;
use super::StorageError;

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
#[serde(default, deny_unknown_fields)]
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
    /// S3 session token of temporary credentials (env `S3_SESSION_TOKEN`).
    pub s3_session_token: Option<String>,
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
                &self
                    .postgres
                    .as_deref()
                    .map(crate::log_text::redact_url_password),
            )
            .field("s3_endpoint", &self.s3_endpoint)
            .field("s3_port", &self.s3_port)
            .field("s3_ssl", &self.s3_ssl)
            .field("s3_access_key", &self.s3_access_key)
            .field(
                "s3_secret_key",
                &crate::log_text::redacted(&self.s3_secret_key),
            )
            .field(
                "s3_session_token",
                &crate::log_text::redacted(&self.s3_session_token),
            )
            .field("s3_bucket", &self.s3_bucket)
            .field("s3_region", &self.s3_region)
            .field("gcs_endpoint", &self.gcs_endpoint)
            .finish()
    }
}

impl StorageConfig {
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
            session_token: self.s3_session_token.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
        let typo = toml::from_str::<StorageConfig>("s3_bukcet = \"b\"").err();
        assert!(
            typo.is_some_and(|err| err.message().contains("s3_bukcet")),
            "an unknown [storage] key is an error"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let cfg = StorageConfig {
            postgres: Some("postgres://user:hunter2@db:5432/y".into()),
            s3_secret_key: Some("topsecret".into()),
            s3_session_token: Some("temporary".into()),
            ..StorageConfig::default()
        };
        let text = format!("{cfg:?}");
        assert!(
            !text.contains("hunter2") && !text.contains("topsecret") && !text.contains("temporary"),
            "{text}"
        );
        assert!(text.contains("postgres://user:***@db:5432/y"), "{text}");
    }
}
