//! Configuration: defaults, then a TOML file, then the environment (the seed's
//! names and y-redis's names), then command-line flags.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

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
    /// The stream bus; no URL means the embedded in-process bus.
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
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// Redis URL; `None` runs a single instance on the embedded bus.
    pub url: Option<String>,
    /// Key prefix shared by the fleet.
    pub prefix: String,
    /// Milliseconds a compaction task waits before a worker claims it.
    #[serde(deserialize_with = "number_or_string")]
    pub task_debounce: u64,
    /// Milliseconds entries stay in a stream after compaction.
    #[serde(deserialize_with = "number_or_string")]
    pub min_message_lifetime: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "y".to_string(),
            task_debounce: 10_000,
            min_message_lifetime: 60_000,
        }
    }
}

impl RedisConfig {
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
    /// TCP port (the seed's example writes it as a string; both are accepted).
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
}

impl Default for WebsocketConfig {
    fn default() -> Self {
        Self {
            port: 3001,
            host: IpAddr::from([0, 0, 0, 0]),
            buffer_capacity: 512,
            max_message_size: 100 * 1024 * 1024,
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

fn parse_env<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|err: T::Err| ConfigError::Invalid {
            name: name.to_string(),
            message: format!("{value:?}: {err}"),
        })
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

    /// Override with environment variables, read through `get`. The seed's names
    /// win over y-redis's when both are set.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let first = |names: &[&'static str]| -> Option<(&'static str, String)> {
            names
                .iter()
                .find_map(|name| get(name).filter(|v| !v.is_empty()).map(|v| (*name, v)))
        };
        if let Some((_, url)) = first(&["REDIS_URL", "REDIS"]) {
            self.redis.url = Some(url);
        }
        if let Some((_, prefix)) = first(&["REDIS_PREFIX"]) {
            self.redis.prefix = prefix;
        }
        if let Some((name, v)) = first(&["REDIS_TASK_DEBOUNCE"]) {
            self.redis.task_debounce = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["REDIS_MIN_MESSAGE_LIFETIME"]) {
            self.redis.min_message_lifetime = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["WS_PORT", "PORT"]) {
            self.websocket.port = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["WS_HOST", "HOST"]) {
            self.websocket.host = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["WS_BUFFER_CAPACITY"]) {
            self.websocket.buffer_capacity = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["WS_MAX_MESSAGE_SIZE"]) {
            self.websocket.max_message_size = parse_env(name, &v)?;
        }
        if let Some((_, v)) = first(&["AUTH_PUBLIC_KEY"]) {
            self.auth.public_key = Some(v);
        }
        if let Some((_, v)) = first(&["AUTH_PERM_CALLBACK"]) {
            self.auth.perm_callback = Some(v);
        }
        if let Some((name, v)) = first(&["AUTH_PERM_TIMEOUT"]) {
            self.auth.perm_timeout = parse_env(name, &v)?;
        }
        if let Some((name, v)) = first(&["METRICS_PORT"]) {
            self.metrics.port = Some(parse_env(name, &v)?);
        }
        if let Some((_, v)) = first(&["YDOC_UPDATE_CALLBACK"]) {
            self.worker.update_callback = Some(v);
        }
        self.storage
            .apply_env(&get)
            .map_err(|err| ConfigError::Invalid {
                name: "storage".to_string(),
                message: err.to_string(),
            })?;
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
        if self.websocket.buffer_capacity == 0 {
            return invalid("websocket.buffer_capacity", "must be at least 1");
        }
        if self.websocket.max_message_size < 1024 {
            return invalid("websocket.max_message_size", "must be at least 1024 bytes");
        }
        if self.auth.public_key.is_some() != self.auth.perm_callback.is_some() {
            return invalid(
                "auth",
                "AUTH_PUBLIC_KEY and AUTH_PERM_CALLBACK must be set together",
            );
        }
        Ok(())
    }

    /// The help text that lists every key and variable.
    pub const HELP: &'static str = "\
CONFIGURATION (file keys, then environment variables; environment overrides the file)
  [redis] url                   REDIS_URL, REDIS            Redis URL; unset = embedded single-instance bus
  [redis] prefix                REDIS_PREFIX                key prefix (default y)
  [redis] task_debounce         REDIS_TASK_DEBOUNCE         ms before a worker compacts a stream (default 10000)
  [redis] min_message_lifetime  REDIS_MIN_MESSAGE_LIFETIME  ms entries stay after compaction (default 60000)
  [websocket] port              WS_PORT, PORT               listen port (default 3001)
  [websocket] host              WS_HOST, HOST               listen address (default 0.0.0.0)
  [websocket] buffer_capacity   WS_BUFFER_CAPACITY          messages queued per connection (default 512)
  [websocket] max_message_size  WS_MAX_MESSAGE_SIZE         largest message in bytes (default 104857600)
  [storage] backend             STORAGE_BACKEND             memory | fs | postgres | s3 | gcs
  [storage] dir                 STORAGE_DIR                 fs backend directory (default ./data)
  [storage] bucket              GOOGLE_CLOUD_STORAGE_BUCKET GCS bucket (selects gcs)
  [storage] gcs_endpoint        STORAGE_EMULATOR_HOST       GCS endpoint override (emulators)
  [storage] postgres            POSTGRES                    PostgreSQL URL (selects postgres)
  [storage] s3_endpoint ...     S3_ENDPOINT S3_PORT S3_SSL S3_ACCESS_KEY S3_SECRET_KEY S3_BUCKET
  [auth] public_key             AUTH_PUBLIC_KEY             ES384 public JWK; unset = no auth
  [auth] perm_callback          AUTH_PERM_CALLBACK          permission callback URL
  [auth] perm_timeout           AUTH_PERM_TIMEOUT           ms to wait for the callback (default 5000)
  [worker] update_callback      YDOC_UPDATE_CALLBACK        PUT {url}/{room} with each compacted doc
  [metrics] port                METRICS_PORT                /metrics, /healthz, /readyz port; unset = off
  RUST_LOG                                                  log filter (default info)";
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
    fn seed_example_file_parses_with_string_port() {
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
        .expect("seed config parses");
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
    fn environment_overrides_file_and_seed_names_win() {
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
    fn invalid_values_are_clear_errors() {
        let mut config = Config::default();
        let err = config.apply_env(env(&[("WS_PORT", "abc")])).unwrap_err();
        assert!(err.to_string().contains("WS_PORT"), "{err}");
        let err = Config::from_toml("[websocket]\nport = 70000").unwrap_err();
        assert!(err.contains("out of range"), "{err}");
        let err = Config::from_toml("[nope]\nx = 1").unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }
}
