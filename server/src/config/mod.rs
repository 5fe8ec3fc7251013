//! Configuration: defaults, then a TOML file, then the environment (the run
//! guide's names and y-redis's names), then command-line flags.
//!
//! The *run guide* (the project's seed: what it started from) is the short guide this
//! server was first written to: it promised the environment names `REDIS_URL`,
//! `WS_PORT`, `GOOGLE_CLOUD_STORAGE_BUCKET` and `RUST_LOG`, and the example file of
//! the README (with `port = "3001"` written as a string). Where it and y-redis
//! name the same thing differently (`REDIS_URL`/`REDIS`, `WS_PORT`/`PORT`), both
//! are read and the run guide's name wins.
//!
//! # Adding a key
//!
//! 1. Add the field, with its default, to its section struct below (or to
//!    [`StorageConfig`]).
//! 2. Add one [`Setting`] row to [`SETTINGS`] (`settings.rs`): file key,
//!    environment variables, default, meaning, and how a value is applied. That
//!    row drives the environment ([`Config::apply_env`]) and `--help`.
//! 3. Add the same row to the README's configuration table (and to
//!    `docs/storage.md` for a `[storage]` key): the test
//!    `readme_lists_every_setting` fails until you do, and prints the rows to paste.
//!
//! Checks across keys go into [`Config::validate`].

mod settings;

pub use settings::{help, markdown_rows, Setting, SETTINGS};

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::connection::{ConnectionSettings, Limits};
use crate::socket::deflate::DeflateSettings;
use crate::storage::StorageConfig;

/// A configuration that cannot be used; reported as one line at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An environment variable or value is invalid.
    #[error("invalid {name}: {message}")]
    Invalid {
        /// The key or variable.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// Everything the server and worker need to start.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the streams live; no URL means the embedded in-process streams
    /// (the README's "embedded bus").
    pub redis: RedisConfig,
    /// The WebSocket listener.
    pub websocket: WebsocketConfig,
    /// Where documents are compacted to.
    pub storage: StorageConfig,
    /// Optional token auth (y-redis compatible).
    pub auth: AuthConfig,
    /// Compaction settings beyond the Redis timing.
    pub worker: WorkerConfig,
    /// Operations endpoints (metrics, health).
    pub metrics: MetricsConfig,
    /// The document HTTP API under `/api` (docs/api.md).
    pub api: ApiConfig,
    /// The versions the worker keeps of each document, and for how long.
    pub history: HistoryConfig,
}

/// `[api]`: the document HTTP API on the WebSocket port (docs/api.md).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve `/api/...` at all.
    pub enabled: bool,
    /// The shared secret every request must carry in `X-API-Secret` (or as a
    /// `Bearer` token); unset = no secret. Never logged.
    pub secret: Option<String>,
    /// Largest request body, in bytes.
    #[serde(deserialize_with = "number_or_string")]
    pub max_body: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            secret: None,
            max_body: 100 * 1024 * 1024,
        }
    }
}

impl std::fmt::Debug for ApiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiConfig")
            .field("enabled", &self.enabled)
            .field("secret", &crate::log_text::redacted(&self.secret))
            .field("max_body", &self.max_body)
            .finish()
    }
}

/// `[history]`: the versions a Rust worker keeps of every document it
/// compacts, and the retention `cleanup` applies (docs/api.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistoryConfig {
    /// Keep a version per compaction that changed a document.
    pub enabled: bool,
    /// Hours during which every version is kept.
    #[serde(deserialize_with = "number_or_string")]
    pub keep_all_hours: u64,
    /// Days, after those hours, during which one version an hour is kept.
    #[serde(deserialize_with = "number_or_string")]
    pub hourly_days: u64,
    /// Days, after those, during which one version a day is kept; 0 = forever.
    #[serde(deserialize_with = "number_or_string")]
    pub daily_days: u64,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            keep_all_hours: 24,
            hourly_days: 30,
            daily_days: 0,
        }
    }
}

impl HistoryConfig {
    /// The retention these settings describe.
    pub fn retention(&self) -> crate::storage::Retention {
        const HOUR: u64 = 3_600_000;
        crate::storage::Retention {
            keep_all_ms: self.keep_all_hours * HOUR,
            hourly_ms: self.hourly_days * 24 * HOUR,
            daily_ms: (self.daily_days > 0).then(|| self.daily_days * 24 * HOUR),
        }
    }
}

/// `[metrics]`: `/metrics`, `/healthz` and `/readyz` on their own port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Port of the operations endpoints; unset = not served.
    #[serde(default, deserialize_with = "optional_port")]
    pub port: Option<u16>,
}

/// Accept a port as a number or a string, or nothing.
fn optional_port<'de, D>(deserializer: D) -> Result<Option<u16>, D::Error>
where
    D: Deserializer<'de>,
{
    number_or_string(deserializer).map(Some)
}

/// `[redis]`: the y-redis stream layout.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL; `None` runs a single instance on the embedded streams.
    pub url: Option<String>,
    /// Key prefix shared by the fleet.
    pub prefix: String,
    /// Milliseconds a compaction task waits before a worker claims it.
    #[serde(deserialize_with = "number_or_string")]
    pub task_debounce: u64,
    /// Milliseconds entries stay in a stream after compaction.
    #[serde(deserialize_with = "number_or_string")]
    pub min_message_lifetime: u64,
    /// Exit at start when Redis does not answer, instead of waiting for it.
    pub fail_fast: bool,
    /// `host:port` of the Sentinels to ask for the master, comma-separated;
    /// `None`: the Redis of `url`.
    pub sentinels: Option<String>,
    /// The master's name as the Sentinels monitor it.
    pub sentinel_master: String,
    /// The ACL user to log in to the Sentinels as; `None`: the default user.
    pub sentinel_username: Option<String>,
    /// The Sentinels' password (`requirepass`); `None`: they ask for none.
    /// Never logged.
    pub sentinel_password: Option<String>,
    /// Redis is a Redis Cluster: `url` names seed nodes (comma-separated) and
    /// keys take the cluster layout (docs/protocol.md, "Redis Cluster layout").
    pub cluster: bool,
    /// How many shards the cluster layout spreads rooms over; equal fleet-wide.
    #[serde(deserialize_with = "number_or_string")]
    pub cluster_shards: u16,
}

/// Passwords (in `url`, and the Sentinels') never reach a log line.
impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field(
                "url",
                &self
                    .url
                    .as_deref()
                    .map(crate::log_text::redact_url_password),
            )
            .field("prefix", &self.prefix)
            .field("task_debounce", &self.task_debounce)
            .field("min_message_lifetime", &self.min_message_lifetime)
            .field("fail_fast", &self.fail_fast)
            .field("sentinels", &self.sentinels)
            .field("sentinel_master", &self.sentinel_master)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &crate::log_text::redacted(&self.sentinel_password),
            )
            .field("cluster", &self.cluster)
            .field("cluster_shards", &self.cluster_shards)
            .finish()
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "y".to_string(),
            task_debounce: 10_000,
            min_message_lifetime: 60_000,
            fail_fast: false,
            sentinels: None,
            sentinel_master: "mymaster".to_string(),
            sentinel_username: None,
            sentinel_password: None,
            cluster: false,
            cluster_shards: 16,
        }
    }
}

impl RedisConfig {
    /// Where the fleet's Redis is; `None` without a Redis URL or Sentinels
    /// (the embedded bus).
    pub fn target(
        &self,
    ) -> Result<Option<crate::streams::RedisTarget>, crate::streams::StreamError> {
        use crate::streams::{RedisTarget, Sentinels};
        if self.cluster {
            return Ok(self.url.as_ref().map(|seeds| RedisTarget::Cluster {
                seeds: seeds.clone(),
                shards: self.cluster_shards,
            }));
        }
        Ok(match (&self.sentinels, &self.url) {
            (Some(list), url) => Some(RedisTarget::Sentinel(Box::new(
                Sentinels::new(list, &self.sentinel_master, url.as_deref())?.with_login(
                    self.sentinel_username.as_deref(),
                    self.sentinel_password.as_deref(),
                ),
            ))),
            (None, Some(url)) => Some(RedisTarget::Url(url.clone())),
            (None, None) => None,
        })
    }

    /// The task debounce as a duration.
    pub fn task_debounce(&self) -> Duration {
        Duration::from_millis(self.task_debounce)
    }

    /// The minimum message lifetime as a duration.
    pub fn min_message_lifetime(&self) -> Duration {
        Duration::from_millis(self.min_message_lifetime)
    }
}

/// `[websocket]`: the listener and per-connection limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebsocketConfig {
    /// TCP port (the run guide's example writes it as a string; both are accepted).
    #[serde(deserialize_with = "number_or_string")]
    pub port: u16,
    /// Address to listen on.
    pub host: IpAddr,
    /// Messages queued per connection before a slow client is disconnected.
    #[serde(deserialize_with = "number_or_string")]
    pub buffer_capacity: usize,
    /// Largest accepted WebSocket message, in bytes.
    #[serde(deserialize_with = "number_or_string")]
    pub max_message_size: usize,
    /// Milliseconds a connection may take to send its request headers.
    #[serde(deserialize_with = "number_or_string")]
    pub header_timeout: u64,
    /// Connections accepted and not yet upgraded at once (reading headers,
    /// waiting on the permission callback); more wait in the listen backlog.
    #[serde(deserialize_with = "number_or_string")]
    pub max_handshakes: usize,
    /// Milliseconds without anything from a client (frame or pong) before it
    /// is closed; a client quiet for half of it is pinged. 0: never.
    #[serde(deserialize_with = "number_or_string")]
    pub idle_timeout: u64,
    /// Messages one connection may send per second (0: no limit).
    #[serde(deserialize_with = "number_or_string")]
    pub max_messages_per_second: u64,
    /// Bytes one connection may send per second (0: no limit).
    #[serde(deserialize_with = "number_or_string")]
    pub max_bytes_per_second: u64,
    /// Bytes of one client's awareness state (0: no limit).
    #[serde(deserialize_with = "number_or_string")]
    pub max_awareness_state: usize,
    /// Client entries in one awareness message (0: no limit).
    #[serde(deserialize_with = "number_or_string")]
    pub max_awareness_clients: usize,
    /// Threads running connections: 0 = one per core, 1 = everything on one
    /// thread (a current-thread runtime).
    #[serde(deserialize_with = "number_or_string")]
    pub threads: usize,
    /// Milliseconds between a stop signal and closing connections, during which
    /// `/readyz` answers 503 so that a load balancer stops sending new clients.
    #[serde(deserialize_with = "number_or_string")]
    pub shutdown_drain: u64,
    /// Negotiate permessage-deflate with clients that offer it.
    pub permessage_deflate: bool,
    /// Messages shorter than this many bytes go uncompressed.
    #[serde(deserialize_with = "number_or_string")]
    pub deflate_min_size: usize,
    /// zlib level of server messages, 1 (fastest) to 9 (smallest).
    #[serde(deserialize_with = "number_or_string")]
    pub deflate_level: u32,
    /// Bytes above which a document's initial sync is sent in several
    /// messages.
    #[serde(deserialize_with = "number_or_string")]
    pub sync_chunk_size: usize,
    /// Milliseconds between stream reads while they find entries waiting.
    #[serde(deserialize_with = "number_or_string")]
    pub coalesce_window: u64,
    /// The `Origin`s a WebSocket upgrade may come from; empty = any. An
    /// upgrade without an `Origin` header (not a browser) is not checked.
    pub allowed_origins: Vec<String>,
}

impl WebsocketConfig {
    /// The header read timeout as a duration.
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout)
    }

    /// The shutdown drain as a duration.
    pub fn shutdown_drain(&self) -> Duration {
        Duration::from_millis(self.shutdown_drain)
    }

    /// What each connection may do, and when a quiet one is closed.
    pub fn connection_settings(&self) -> ConnectionSettings {
        ConnectionSettings {
            max_message_size: self.max_message_size,
            buffer_capacity: self.buffer_capacity,
            idle_timeout: Duration::from_millis(self.idle_timeout),
            limits: Limits {
                messages_per_second: self.max_messages_per_second,
                bytes_per_second: self.max_bytes_per_second,
                awareness_state: self.max_awareness_state,
                awareness_clients: self.max_awareness_clients,
            },
            deflate: DeflateSettings {
                enabled: self.permessage_deflate,
                min_size: self.deflate_min_size,
                level: self.deflate_level,
                ..DeflateSettings::default()
            },
            sync_chunk_size: self.sync_chunk_size,
            coalesce_window: Duration::from_millis(self.coalesce_window),
            ..ConnectionSettings::default()
        }
    }
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        let limits = Limits::default();
        let deflate = DeflateSettings::default();
        Self {
            port: 3001,
            host: IpAddr::from([0, 0, 0, 0]),
            buffer_capacity: 512,
            max_message_size: 100 * 1024 * 1024,
            header_timeout: 10_000,
            max_handshakes: 1024,
            idle_timeout: 60_000,
            max_messages_per_second: limits.messages_per_second,
            max_bytes_per_second: limits.bytes_per_second,
            max_awareness_state: limits.awareness_state,
            max_awareness_clients: limits.awareness_clients,
            threads: 0,
            shutdown_drain: 0,
            permessage_deflate: deflate.enabled,
            deflate_min_size: deflate.min_size,
            deflate_level: deflate.level,
            sync_chunk_size: ConnectionSettings::default().sync_chunk_size,
            coalesce_window: ConnectionSettings::default().coalesce_window.as_millis() as u64,
            allowed_origins: Vec::new(),
        }
    }
}

/// `[auth]`: y-redis's token auth; off when no public key is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// P-384 public key as a JWK (JSON text), as y-redis's `AUTH_PUBLIC_KEY`.
    pub public_key: Option<String>,
    /// Permission callback base URL, as y-redis's `AUTH_PERM_CALLBACK`.
    pub perm_callback: Option<String>,
    /// Milliseconds to wait for the permission callback.
    #[serde(deserialize_with = "number_or_string")]
    pub perm_timeout: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            public_key: None,
            perm_callback: None,
            perm_timeout: 5_000,
        }
    }
}

/// `[worker]`: what compaction calls besides storage.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// y-redis's `YDOC_UPDATE_CALLBACK`: `PUT {url}/{room}` with the new state.
    pub update_callback: Option<String>,
}

/// Accept `3001` as well as `"3001"`.
fn number_or_string<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: std::str::FromStr + TryFrom<i64>,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Number(n) => {
            T::try_from(n).map_err(|_| serde::de::Error::custom(format!("{n} is out of range")))
        }
        Raw::Text(text) => text
            .trim()
            .parse()
            .map_err(|err| serde::de::Error::custom(format!("{text:?}: {err}"))),
    }
}

impl Config {
    /// Read a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parse TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| err.message().to_string())
    }

    /// Override with environment variables, read through `get` (pass
    /// `|name| std::env::var(name).ok()`), as [`SETTINGS`] lists them. Of the
    /// variables of one key, the first set wins; an empty variable counts as unset.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            let found = setting.env.iter().find_map(|name| {
                get(name)
                    .filter(|value| !value.trim().is_empty())
                    .map(|value| (*name, value))
            });
            if let Some((name, value)) = found {
                (setting.apply)(self, &value).map_err(|message| ConfigError::Invalid {
                    name: name.to_string(),
                    message,
                })?;
            }
        }
        self.validate()
    }

    /// Reject values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name: &str, message: &str| {
            Err(ConfigError::Invalid {
                name: name.to_string(),
                message: message.to_string(),
            })
        };
        if self.redis.prefix.is_empty() {
            return invalid("redis.prefix", "must not be empty");
        }
        if !(1..=1024).contains(&self.redis.cluster_shards) {
            return invalid("redis.cluster_shards", "must be 1 to 1024");
        }
        if self.redis.cluster && self.redis.prefix.contains(['{', '}']) {
            return invalid(
                "redis.prefix",
                "must not contain `{` or `}` with `cluster` (they would change the hash tag)",
            );
        }
        if self.websocket.buffer_capacity == 0 {
            return invalid("websocket.buffer_capacity", "must be at least 1");
        }
        if self.websocket.max_message_size < 1024 {
            return invalid("websocket.max_message_size", "must be at least 1024 bytes");
        }
        if self.websocket.sync_chunk_size < 1024 {
            return invalid("websocket.sync_chunk_size", "must be at least 1024 bytes");
        }
        if !(1..=9).contains(&self.websocket.deflate_level) {
            return invalid("websocket.deflate_level", "must be 1 to 9");
        }
        if self.websocket.header_timeout == 0 {
            return invalid("websocket.header_timeout", "must be at least 1 ms");
        }
        if self.websocket.max_handshakes == 0 {
            return invalid("websocket.max_handshakes", "must be at least 1");
        }
        if self.api.max_body < 1024 {
            return invalid("api.max_body", "must be at least 1024 bytes");
        }
        if self.api.secret.as_deref().is_some_and(str::is_empty) {
            return invalid("api.secret", "must not be empty");
        }
        if self.auth.public_key.is_some() != self.auth.perm_callback.is_some() {
            return invalid(
                "auth",
                "AUTH_PUBLIC_KEY and AUTH_PERM_CALLBACK must be set together",
            );
        }
        Ok(())
    }
}

/// An environment made of `pairs`, for tests of `apply_env`.
#[cfg(test)]
pub(crate) fn test_env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_env as env;

    #[test]
    fn run_guide_example_file_parses_with_string_port() {
        let config = Config::from_toml(
            r#"
[redis]
url = "redis://localhost:6379"
prefix = "y"
task_debounce = 10000
min_message_lifetime = 60000

[websocket]
port = "3001"
buffer_capacity = 512

[storage]
bucket = "your-gcs-bucket"
"#,
        )
        .expect("the run guide's example parses");
        assert_eq!(config.websocket.port, 3001);
        assert_eq!(config.websocket.buffer_capacity, 512);
        assert_eq!(config.redis.url.as_deref(), Some("redis://localhost:6379"));
        assert_eq!(config.storage.bucket.as_deref(), Some("your-gcs-bucket"));
    }

    #[test]
    fn defaults() {
        let config = Config::default();
        assert_eq!(config.websocket.port, 3001);
        assert_eq!(config.redis.prefix, "y");
        assert_eq!(config.redis.task_debounce, 10_000);
        assert_eq!(config.redis.min_message_lifetime, 60_000);
        assert_eq!(config.websocket.buffer_capacity, 512);
        assert_eq!(config.websocket.max_message_size, 100 * 1024 * 1024);
        assert!(config.redis.url.is_none());
    }

    #[test]
    fn environment_overrides_file_and_run_guide_names_win() {
        let mut config =
            Config::from_toml("[websocket]\nport = 4000\n[redis]\nprefix = \"a\"").unwrap();
        config
            .apply_env(env(&[
                ("PORT", "5000"),
                ("WS_PORT", "6000"),
                ("REDIS", "redis://b"),
                ("REDIS_PREFIX", "z"),
                ("REDIS_TASK_DEBOUNCE", "200"),
            ]))
            .unwrap();
        assert_eq!(config.websocket.port, 6000);
        assert_eq!(config.redis.url.as_deref(), Some("redis://b"));
        assert_eq!(config.redis.prefix, "z");
        assert_eq!(config.redis.task_debounce, 200);
        config.apply_env(env(&[("PORT", "5000")])).unwrap();
        assert_eq!(config.websocket.port, 5000);
    }

    #[test]
    fn sentinel_login_from_the_environment_and_never_in_debug_output() {
        let mut config = Config::default();
        config
            .apply_env(env(&[
                ("REDIS_URL", "redis://:master-pass@ignored:6379/2"),
                ("REDIS_SENTINELS", "127.0.0.1:26379"),
                ("REDIS_SENTINEL_USERNAME", "watcher"),
                ("REDIS_SENTINEL_PASSWORD", "sentinel-pass"),
            ]))
            .unwrap();
        assert_eq!(config.redis.sentinel_username.as_deref(), Some("watcher"));
        assert_eq!(
            config.redis.sentinel_password.as_deref(),
            Some("sentinel-pass")
        );
        assert!(matches!(
            config.redis.target(),
            Ok(Some(crate::streams::RedisTarget::Sentinel(_)))
        ));
        let text = format!("{:?}", config.redis);
        assert!(
            !text.contains("sentinel-pass") && !text.contains("master-pass"),
            "{text}"
        );
        assert!(text.contains("redis://:***@ignored:6379/2"), "{text}");
    }

    #[test]
    fn invalid_values_are_clear_errors() {
        let mut config = Config::default();
        let err = config.apply_env(env(&[("WS_PORT", "abc")])).unwrap_err();
        assert!(err.to_string().contains("WS_PORT"), "{err}");
        let err = Config::from_toml("[websocket]\nport = 70000").unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = Config::from_toml("[nope]\nx = 1").unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn storage_variables_override_the_file() {
        let mut config = Config::default();
        config.storage.bucket = Some("file-bucket".into());
        config.storage.s3_port = Some(1);
        config
            .apply_env(env(&[
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
        let cfg = &config.storage;
        assert_eq!(cfg.bucket.as_deref(), Some("env-bucket"));
        assert_eq!(cfg.gcs_endpoint.as_deref(), Some("http://127.0.0.1:4443"));
        assert_eq!(cfg.postgres.as_deref(), Some("postgres://u@h/d"));
        assert_eq!(cfg.s3_port, Some(9000));
        assert_eq!(cfg.s3_ssl, Some(false));
        assert_eq!(cfg.dir, Some(std::path::PathBuf::from("/tmp/x")));
        assert_eq!(cfg.backend_kind(), crate::storage::StorageBackend::S3);
        let s3 = cfg.s3_options().unwrap();
        assert_eq!(
            (s3.bucket.as_str(), s3.region.as_str()),
            ("b2", "eu-west-1")
        );
    }

    #[test]
    fn bad_storage_values_name_the_variable() {
        for (name, value) in [
            ("S3_PORT", "http"),
            ("S3_SSL", "maybe"),
            ("STORAGE_BACKEND", "x"),
        ] {
            let mut config = Config::default();
            let err = config.apply_env(env(&[(name, value)])).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { name: n, .. } if n == name),
                "{name}={value}: {err}"
            );
        }
        let mut config = Config::default();
        config
            .apply_env(env(&[("POSTGRES", ""), ("REDIS_URL", " ")]))
            .unwrap();
        assert_eq!(
            config.storage.backend_kind(),
            crate::storage::StorageBackend::Fs
        );
        assert!(config.redis.url.is_none(), "an empty variable is unset");
    }

    #[test]
    fn readme_lists_every_setting() {
        let expected = markdown_rows(|_| true);
        let readme = include_str!("../../../README.md");
        assert!(
            readme.contains(&expected),
            "README.md's configuration table must read:\n{expected}"
        );
        let expected = markdown_rows(|s| s.key.starts_with("[storage]"));
        let storage = include_str!("../../../docs/storage.md");
        assert!(
            storage.contains(&expected),
            "docs/storage.md's table must read:\n{expected}"
        );
        let expected = markdown_rows(|s| s.key.starts_with("[history]"));
        assert!(
            storage.contains(&expected),
            "docs/storage.md's history table must read:\n{expected}"
        );
    }

    #[test]
    fn help_lists_every_setting() {
        let help = help();
        for setting in SETTINGS {
            let line = help
                .lines()
                .find(|line| {
                    line.trim_start().starts_with(setting.key) && line.contains(setting.env[0])
                })
                .unwrap_or_else(|| panic!("--help has a line for {:?}:\n{help}", setting.env));
            for name in setting.env {
                assert!(line.contains(name), "{line}");
            }
        }
    }
}
