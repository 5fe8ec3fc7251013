//! PostgreSQL storage in y-redis's table, so JavaScript and Rust servers share rows:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS yredis_docs_v1 (
//!     room text, doc text, r SERIAL, update bytea, sv bytea,
//!     PRIMARY KEY (room, doc, r)
//! );
//! ```
//!
//! Room and document names are stored as they are (not percent-encoded); an item's
//! reference is its `r` in decimal.
//!
//! Versions (history) live in a table of their own, which y-redis never reads:
//!
//! ```sql
//! CREATE TABLE IF NOT EXISTS yws_history_v1 (
//!     room text, doc text, version bigint, ts bigint, name text, update bytea,
//!     PRIMARY KEY (room, doc, version)
//! );
//! ```

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use super::history::check_name;
use super::http::error_chain;
use super::{names, Storage, StorageError, StoredItem, Version};

/// How long establishing a connection may take before the call fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may take (a 10 MB document is written well within it).
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of a room or docid stored as is. Longer names are stored shortened
/// (`names`): the primary key's index row cannot exceed about 2700 bytes.
const NAME_MAX: usize = 1024;

/// The name (room or docid) new rows get.
fn stored_name(name: &str) -> String {
    names::bounded(name, NAME_MAX)
}

/// The names rows of `name` may have: the shortened one, and the name itself,
/// which another instance may have managed to store (a compressible long name
/// fits the index).
fn row_names(name: &str) -> Vec<String> {
    let stored = stored_name(name);
    if stored == name {
        vec![stored]
    } else {
        vec![stored, name.to_string()]
    }
}

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS yredis_docs_v1 (
    room text,
    doc text,
    r SERIAL,
    update bytea,
    sv bytea,
    PRIMARY KEY (room, doc, r)
)";

const CREATE_HISTORY_TABLE: &str = "CREATE TABLE IF NOT EXISTS yws_history_v1 (
    room text,
    doc text,
    version bigint,
    ts bigint,
    name text,
    update bytea,
    PRIMARY KEY (room, doc, version)
)";

/// A version number or timestamp as a `bigint`.
fn bigint(value: u64) -> Result<i64, StorageError> {
    i64::try_from(value).map_err(|_| backend(format!("{value} does not fit a bigint")))
}

/// A stored `bigint` as a version number or timestamp.
fn unsigned(value: i64) -> Result<u64, StorageError> {
    u64::try_from(value)
        .map_err(|_| StorageError::Corrupt(format!("negative history value {value}")))
}

/// Documents in the `yredis_docs_v1` table. Holds one connection, shared by all
/// tasks (tokio-postgres pipelines concurrent statements on it). A lost connection
/// is dropped and re-established by the next call, which is retried once on it.
pub struct PostgresStorage {
    config: tokio_postgres::Config,
    client: Mutex<Option<Arc<Client>>>,
}

impl std::fmt::Debug for PostgresStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStorage")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .finish_non_exhaustive()
    }
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(format!("postgres: {e}"))
}

impl PostgresStorage {
    /// Connect to `url` (`postgres://user:password@host:port/db`, or the key=value
    /// form) and create the table if it is missing, so a wrong URL or an unreachable
    /// server fails at start. TLS is not supported: the server must accept plain
    /// connections (`sslmode=prefer`, the default, or `disable`).
    pub async fn connect(url: &str) -> Result<Self, StorageError> {
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| StorageError::Config(format!("invalid postgres URL: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        if config.get_application_name().is_none() {
            config.application_name("y-websocket");
        }
        let storage = Self {
            config,
            client: Mutex::new(None),
        };
        for table in [CREATE_TABLE, CREATE_HISTORY_TABLE] {
            let client = storage.client().await?;
            if let Err(first) = timed(client.batch_execute(table)).await {
                // Two servers creating the table at once can collide on the
                // catalog; the second attempt then finds the table.
                let client = storage.client().await?;
                timed(client.batch_execute(table)).await.map_err(|e| {
                    backend(format!("creating table: {e} (first attempt: {first})"))
                })?;
            }
        }
        Ok(storage)
    }

    /// The shared connection, (re)connecting when there is none or it was lost.
    async fn client(&self) -> Result<Arc<Client>, StorageError> {
        let mut slot = self.client.lock().await;
        if let Some(client) = slot.as_ref() {
            if !client.is_closed() {
                return Ok(client.clone());
            }
        }
        *slot = None;
        let connecting = self.config.connect(NoTls);
        let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting)
            .await
            .map_err(|_| backend("connecting timed out"))?
            .map_err(|e| backend(format!("connecting: {}", error_chain(&e))))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "postgres storage connection lost");
            }
        });
        let client = Arc::new(client);
        *slot = Some(client.clone());
        Ok(client)
    }
}

/// Bound a statement in time; a timeout counts as a lost connection.
async fn timed<T>(
    fut: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
) -> Result<T, TimedError> {
    match tokio::time::timeout(STATEMENT_TIMEOUT, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(TimedError::Postgres(e)),
        Err(_) => Err(TimedError::Timeout),
    }
}

/// A statement's failure: its own error, or running out of time.
#[derive(Debug)]
enum TimedError {
    Postgres(tokio_postgres::Error),
    Timeout,
}

impl TimedError {
    fn is_closed(&self) -> bool {
        match self {
            TimedError::Postgres(e) => e.is_closed(),
            TimedError::Timeout => true,
        }
    }
}

impl std::fmt::Display for TimedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimedError::Postgres(e) => match e.as_db_error() {
                Some(db) => write!(f, "{db}"),
                None => write!(f, "{}", error_chain(e)),
            },
            TimedError::Timeout => write!(f, "statement timed out after {STATEMENT_TIMEOUT:?}"),
        }
    }
}

impl PostgresStorage {
    /// Run `op` on the shared connection; when the connection turns out to be lost,
    /// reconnect and run it once more. Retrying an insert whose answer was lost may
    /// store the same document twice, which merges harmlessly.
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, StorageError>
    where
        F: Fn(Arc<Client>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    {
        let client = self.client().await?;
        match timed(op(client.clone())).await {
            Ok(value) => Ok(value),
            Err(e) if e.is_closed() || client.is_closed() => {
                tracing::info!(error = %e, "postgres storage reconnecting");
                self.drop_client(&client).await;
                let client = self.client().await?;
                timed(op(client)).await.map_err(backend)
            }
            Err(e) => Err(backend(e)),
        }
    }

    /// Forget `client` (when it is still the shared one) so the next call reconnects.
    async fn drop_client(&self, client: &Arc<Client>) {
        let mut slot = self.client.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, client)) {
            *slot = None;
        }
    }
}

#[async_trait]
impl Storage for PostgresStorage {
    async fn load(&self, room: &str, docid: &str) -> Result<Vec<StoredItem>, StorageError> {
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let rows = self
            .run(|client| async move {
                client
                    .query(
                        "SELECT update, r FROM yredis_docs_v1 \
                         WHERE room = ANY($1) AND doc = ANY($2) ORDER BY r",
                        &[rooms, docs],
                    )
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| {
                let update: Option<Vec<u8>> = row.try_get(0).map_err(backend)?;
                let r: i32 = row.try_get(1).map_err(backend)?;
                Ok(StoredItem {
                    reference: r.to_string(),
                    update: update.unwrap_or_default(),
                })
            })
            .collect()
    }

    async fn put(
        &self,
        room: &str,
        docid: &str,
        update: &[u8],
        state_vector: &[u8],
    ) -> Result<String, StorageError> {
        let (room, docid) = (&stored_name(room), &stored_name(docid));
        let row = self
            .run(|client| async move {
                client
                    .query_one(
                        "INSERT INTO yredis_docs_v1 (room, doc, r, update, sv) \
                         VALUES ($1, $2, DEFAULT, $3, $4) RETURNING r",
                        &[&room, &docid, &update, &state_vector],
                    )
                    .await
            })
            .await?;
        let r: i32 = row.try_get(0).map_err(backend)?;
        Ok(r.to_string())
    }

    async fn delete(
        &self,
        room: &str,
        docid: &str,
        references: &[String],
    ) -> Result<(), StorageError> {
        let rs: Vec<i32> = references
            .iter()
            .filter_map(|r| r.parse::<i32>().ok())
            .collect();
        if rs.is_empty() {
            return Ok(());
        }
        let rs = &rs;
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        self.run(|client| async move {
            client
                .execute(
                    "DELETE FROM yredis_docs_v1 \
                     WHERE room = ANY($1) AND doc = ANY($2) AND r = ANY($3)",
                    &[rooms, docs, rs],
                )
                .await
        })
        .await?;
        Ok(())
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn put_version(
        &self,
        room: &str,
        docid: &str,
        version: &Version,
        update: &[u8],
    ) -> Result<(), StorageError> {
        if let Some(name) = &version.name {
            check_name(name)?;
        }
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let (room, docid) = (&stored_name(room), &stored_name(docid));
        let (number, ts) = (&bigint(version.version)?, &bigint(version.timestamp)?);
        let name = &version.name;
        self.run(|client| async move {
            // A version stored under the other spelling of a long name is
            // replaced too.
            client
                .execute(
                    "DELETE FROM yws_history_v1 WHERE room = ANY($1) AND doc = ANY($2) \
                     AND version = $3 AND NOT (room = $4 AND doc = $5)",
                    &[rooms, docs, number, room, docid],
                )
                .await?;
            client
                .execute(
                    "INSERT INTO yws_history_v1 (room, doc, version, ts, name, update) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room, doc, version) \
                     DO UPDATE SET ts = EXCLUDED.ts, name = EXCLUDED.name, \
                     update = EXCLUDED.update",
                    &[room, docid, number, ts, name, &update],
                )
                .await
        })
        .await?;
        Ok(())
    }

    async fn versions(&self, room: &str, docid: &str) -> Result<Vec<Version>, StorageError> {
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let rows = self
            .run(|client| async move {
                client
                    .query(
                        "SELECT version, ts, name FROM yws_history_v1 \
                         WHERE room = ANY($1) AND doc = ANY($2) ORDER BY version",
                        &[rooms, docs],
                    )
                    .await
            })
            .await?;
        let mut versions: Vec<Version> = Vec::with_capacity(rows.len());
        for row in &rows {
            let version = Version {
                version: unsigned(row.try_get(0).map_err(backend)?)?,
                timestamp: unsigned(row.try_get(1).map_err(backend)?)?,
                name: row.try_get(2).map_err(backend)?,
            };
            // Both spellings of a long name may hold the number: one is enough.
            if versions.last().map(|v| v.version) != Some(version.version) {
                versions.push(version);
            }
        }
        Ok(versions)
    }

    async fn load_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let number = &bigint(version)?;
        let row = self
            .run(|client| async move {
                client
                    .query_opt(
                        "SELECT update FROM yws_history_v1 \
                         WHERE room = ANY($1) AND doc = ANY($2) AND version = $3 LIMIT 1",
                        &[rooms, docs, number],
                    )
                    .await
            })
            .await?;
        match row {
            Some(row) => {
                let update: Option<Vec<u8>> = row.try_get(0).map_err(backend)?;
                Ok(Some(update.unwrap_or_default()))
            }
            None => Ok(None),
        }
    }

    async fn name_version(
        &self,
        room: &str,
        docid: &str,
        version: u64,
        name: &str,
    ) -> Result<bool, StorageError> {
        check_name(name)?;
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let number = &bigint(version)?;
        let named = self
            .run(|client| async move {
                client
                    .execute(
                        "UPDATE yws_history_v1 SET name = $4 \
                         WHERE room = ANY($1) AND doc = ANY($2) AND version = $3",
                        &[rooms, docs, number, &name],
                    )
                    .await
            })
            .await?;
        Ok(named > 0)
    }

    async fn delete_versions(
        &self,
        room: &str,
        docid: &str,
        versions: &[u64],
    ) -> Result<(), StorageError> {
        let numbers: Vec<i64> = versions
            .iter()
            .filter_map(|&v| i64::try_from(v).ok())
            .collect();
        if numbers.is_empty() {
            return Ok(());
        }
        let numbers = &numbers;
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        self.run(|client| async move {
            client
                .execute(
                    "DELETE FROM yws_history_v1 \
                     WHERE room = ANY($1) AND doc = ANY($2) AND version = ANY($3)",
                    &[rooms, docs, numbers],
                )
                .await
        })
        .await?;
        Ok(())
    }

    /// Shortened names are returned as stored: passed back, they address the
    /// same rows.
    async fn documents_with_history(&self) -> Result<Vec<(String, String)>, StorageError> {
        let rows = self
            .run(|client| async move {
                client
                    .query(
                        "SELECT DISTINCT room, doc FROM yws_history_v1 ORDER BY room, doc",
                        &[],
                    )
                    .await
            })
            .await?;
        rows.iter()
            .map(|row| {
                let room: String = row.try_get(0).map_err(backend)?;
                let doc: String = row.try_get(1).map_err(backend)?;
                Ok((room, doc))
            })
            .collect()
    }

    /// Answered from the `sv` column when the document is a single row (the normal
    /// state after a compaction); merged from all rows otherwise.
    async fn state_vector(&self, room: &str, docid: &str) -> Result<Option<Vec<u8>>, StorageError> {
        let (rooms, docs) = (&row_names(room), &row_names(docid));
        let rows = self
            .run(|client| async move {
                client
                    .query(
                        "SELECT sv FROM yredis_docs_v1 \
                         WHERE room = ANY($1) AND doc = ANY($2) LIMIT 2",
                        &[rooms, docs],
                    )
                    .await
            })
            .await?;
        match rows.as_slice() {
            [] => Ok(None),
            [row] => {
                let sv: Option<Vec<u8>> = row.try_get(0).map_err(backend)?;
                match sv {
                    Some(sv) if !sv.is_empty() => Ok(Some(sv)),
                    _ => self.merged_state_vector(room, docid).await,
                }
            }
            _ => self.merged_state_vector(room, docid).await,
        }
    }
}

impl PostgresStorage {
    async fn merged_state_vector(
        &self,
        room: &str,
        docid: &str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        let items = self.load(room, docid).await?;
        match super::merge_items(&items)? {
            Some(update) => Ok(Some(super::state_vector_of_update(&update)?)),
            None => Ok(None),
        }
    }
}
