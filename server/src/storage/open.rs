//! Opening the configured storage backend, checked at start.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::config::{StorageBackend, StorageConfig, DEFAULT_DIR};
use super::fs::FsStorage;
use super::gcs::{GcsOptions, GcsStorage};
use super::memory::MemoryStorage;
use super::metered::Metered;
use super::postgres::PostgresStorage;
use super::s3::S3Storage;
use super::{Storage, StorageError};
use crate::metrics::Metrics;

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

/// [`open_storage`], every call of the opened storage timed and its failures
/// counted into `metrics` (the instance's storage series).
pub async fn open_metered(
    cfg: &StorageConfig,
    metrics: &Metrics,
) -> Result<Arc<dyn Storage>, StorageError> {
    Ok(Metered::wrap(open_storage(cfg).await?, metrics))
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
