//! Every storage call timed and its failures counted, by backend and
//! operation, whatever the backend: one decorator around the opened storage
//! instead of the same lines in each backend.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;

use super::{Storage, StorageError, StoredItem, Version};
use crate::metrics::{self, Metrics, StorageMetrics, StorageOperation};

/// A storage that observes `yws_storage_operation_seconds` and counts
/// `yws_storage_errors_total` for each call before answering as the storage
/// it wraps.
pub struct Metered {
    inner: Arc<dyn Storage>,
    series: StorageMetrics,
}

impl Metered {
    /// Wrap `inner`, counting into `metrics` under its backend name.
    pub fn wrap(inner: Arc<dyn Storage>, metrics: &Metrics) -> Arc<dyn Storage> {
        let series = metrics.storage(inner.name());
        Arc::new(Self { inner, series })
    }

    async fn measure<T>(
        &self,
        operation: StorageOperation,
        call: impl Future<Output = Result<T, StorageError>>,
    ) -> Result<T, StorageError> {
        let started = Instant::now();
        let result = call.await;
        let series = self.series.of(operation);
        metrics::observe(&series.seconds, started.elapsed());
        if result.is_err() {
            metrics::inc(&series.errors);
        }
        result
    }
}

#[async_trait]
impl Storage for Metered {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        self.measure(StorageOperation::Load, self.inner.load(room, docid))
            .await
    }

    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        state_vector: &[u8],
    ) -> Result<String, StorageError> {
        self.measure(
            StorageOperation::Put,
            self.inner.put(room, docid, update, state_vector),
        )
        .await
    }

    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        self.measure(
            StorageOperation::Delete,
            self.inner.delete(room, docid, references),
        )
        .await
    }

    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn state_vector(&self, room: &str, docid: &str) -> Result<Option<Vec<u8>>, StorageError> {
        self.measure(
            StorageOperation::StateVector,
            self.inner.state_vector(room, docid),
        )
        .await
    }

    async fn put_version(
        &self,
        room: &str,
        docid: &str,
        version: &Version,
        update: &[u8],
    ) -> Result<(), StorageError> {
        self.measure(
            StorageOperation::History,
            self.inner.put_version(room, docid, version, update),
        )
        .await
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        self.measure(StorageOperation::History, self.inner.versions(room, docid))
            .await
    }

    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        self.measure(
            StorageOperation::History,
            self.inner.load_version(room, docid, version),
        )
        .await
    }

    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        self.measure(
            StorageOperation::History,
            self.inner.name_version(room, docid, version, name),
        )
        .await
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        self.measure(
            StorageOperation::History,
            self.inner.delete_versions(room, docid, versions),
        )
        .await
    }

    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        self.measure(
            StorageOperation::History,
            self.inner.documents_with_history(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::memory::MemoryStorage;

    #[tokio::test]
    async fn each_call_is_observed_under_its_backend_and_operation() {
        let metrics = Metrics::default();
        let storage = Metered::wrap(Arc::new(MemoryStorage::new()), &metrics);
        assert_eq!(storage.name(), "memory");
        storage.load("r", "index").await.unwrap();
        storage.state_vector("r", "index").await.unwrap();
        storage.delete("r", "index", &[]).await.unwrap();
        let text = metrics.render(0);
        for (operation, count) in [("load", 1), ("put", 0), ("delete", 1), ("state_vector", 1)] {
            let labels = format!("{{backend=\"memory\",operation=\"{operation}\"}}");
            assert!(
                text.contains(&format!(
                    "yws_storage_operation_seconds_count{labels} {count}\n"
                )),
                "{operation}: {text}"
            );
            assert!(
                text.contains(&format!("yws_storage_errors_total{labels} 0\n")),
                "{operation}: {text}"
            );
        }
    }

    /// A backend whose every call fails.
    struct Broken;

    #[async_trait]
    impl Storage for Broken {
        async fn load(&self, _: &str, _: &str) -> Result<Vec<StoredItem>, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn put(&self, _: &str, _: &str, _: &[u8], _: &[u8]) -> Result<String, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn delete(&self, _: &str, _: &str, _: &[String]) -> Result<(), StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        fn name(&self) -> &'static str {
            "postgres"
        }
        async fn put_version(
            &self,
            _: &str,
            _: &str,
            _: &Version,
            _: &[u8],
        ) -> Result<(), StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn versions(&self, _: &str, _: &str) -> Result<Vec<Version>, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn load_version(
            &self,
            _: &str,
            _: &str,
            _: u64,
        ) -> Result<Option<Vec<u8>>, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn name_version(
            &self,
            _: &str,
            _: &str,
            _: u64,
            _: &str,
        ) -> Result<bool, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn delete_versions(&self, _: &str, _: &str, _: &[u64]) -> Result<(), StorageError> {
            Err(StorageError::Backend("down".into()))
        }
        async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
            Err(StorageError::Backend("down".into()))
        }
    }

    #[tokio::test]
    async fn each_failure_is_counted_under_its_backend_and_operation() {
        let metrics = Metrics::default();
        let storage = Metered::wrap(Arc::new(Broken), &metrics);
        assert!(storage.put("r", "index", b"u", b"sv").await.is_err());
        assert!(storage.put("r", "index", b"u", b"sv").await.is_err());
        assert!(storage.delete("r", "index", &["a".into()]).await.is_err());
        assert!(storage.state_vector("r", "index").await.is_err());
        let text = metrics.render(0);
        for (operation, errors) in [("load", 0), ("put", 2), ("delete", 1), ("state_vector", 1)] {
            let labels = format!("{{backend=\"postgres\",operation=\"{operation}\"}}");
            assert!(
                text.contains(&format!("yws_storage_errors_total{labels} {errors}\n")),
                "{operation}: {text}"
            );
            assert!(
                text.contains(&format!(
                    "yws_storage_operation_seconds_count{labels} {errors}\n"
                )),
                "failed calls are timed too: {text}"
            );
        }
    }
}
