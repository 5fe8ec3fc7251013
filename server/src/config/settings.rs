//! The one table of configuration keys: [`SETTINGS`]. It drives
//! [`Config::apply_env`](super::Config::apply_env) and the `--help` text
//! ([`help`]), and a test checks that the README's configuration table and
//! `docs/storage.md` list the same rows ([`markdown_rows`]).

use std::fmt::Display;
use std::str::FromStr;

use super::Config;

/// One configuration key: where it sits in the TOML file, the environment
/// variables that override it (the first one set wins), its default and what it
/// means, and how an environment value is written into a [`Config`].
pub struct Setting {
    /// `[section] key` in the TOML file; empty for a variable with no file key.
    pub key: &'static str,
    /// The environment variables, in order of precedence.
    pub env: &'static [&'static str],
    /// The default as the README shows it (Markdown).
    pub default: &'static str,
    /// What it means (Markdown, one line).
    pub meaning: &'static str,
    /// Write a (non-empty) environment value into the configuration; the error
    /// says what is wrong with the value.
    pub apply: fn(&mut Config, &str) -> Result<(), String>,
}

/// Every configuration key, in the order `--help` and the README list them.
pub const SETTINGS: &[Setting] = &[
    Setting {
        key: "[redis] url",
        env: &["REDIS_URL", "REDIS"],
        default: "unset",
        meaning: "Redis URL; unset = embedded single-instance bus",
        apply: |c, v| text(&mut c.redis.url, v),
    },
    Setting {
        key: "[redis] prefix",
        env: &["REDIS_PREFIX"],
        default: "`y`",
        meaning: "key prefix shared by the fleet",
        apply: |c, v| {
            c.redis.prefix = v.to_string();
            Ok(())
        },
    },
    Setting {
        key: "[redis] task_debounce",
        env: &["REDIS_TASK_DEBOUNCE"],
        default: "`10000`",
        meaning: "ms a compaction task waits before a worker claims it",
        apply: |c, v| parse(&mut c.redis.task_debounce, v),
    },
    Setting {
        key: "[redis] min_message_lifetime",
        env: &["REDIS_MIN_MESSAGE_LIFETIME"],
        default: "`60000`",
        meaning: "ms entries stay in a stream after compaction",
        apply: |c, v| parse(&mut c.redis.min_message_lifetime, v),
    },
    Setting {
        key: "[redis] fail_fast",
        env: &["REDIS_FAIL_FAST"],
        default: "`false`",
        meaning: "`true`: exit with status 1 when Redis does not answer at start; `false`: listen anyway, answer upgrades and `/readyz` with 503 and retry every 2 s until it does",
        apply: |c, v| parse(&mut c.redis.fail_fast, v),
    },
    Setting {
        key: "[redis] sentinels",
        env: &["REDIS_SENTINELS"],
        default: "unset",
        meaning: "`host:port` of Redis Sentinels, comma-separated: the master is the one they name, followed through failovers (`REDIS_URL` then gives only password and database)",
        apply: |c, v| text(&mut c.redis.sentinels, v),
    },
    Setting {
        key: "[redis] sentinel_master",
        env: &["REDIS_SENTINEL_MASTER"],
        default: "`mymaster`",
        meaning: "name of the master the Sentinels monitor",
        apply: |c, v| {
            c.redis.sentinel_master = v.to_string();
            Ok(())
        },
    },
    Setting {
        key: "[redis] sentinel_username",
        env: &["REDIS_SENTINEL_USERNAME"],
        default: "unset",
        meaning: "ACL user to log in to the Sentinels as (Sentinel's `user`); unset = the default user",
        apply: |c, v| text(&mut c.redis.sentinel_username, v),
    },
    Setting {
        key: "[redis] sentinel_password",
        env: &["REDIS_SENTINEL_PASSWORD"],
        default: "unset",
        meaning: "password of the Sentinels (their `requirepass`, or the ACL user's); never logged; the master's own password stays in `REDIS_URL`",
        apply: |c, v| text(&mut c.redis.sentinel_password, v),
    },
    Setting {
        key: "[redis] cluster",
        env: &["REDIS_CLUSTER"],
        default: "`false`",
        meaning: "`true`: Redis is a Redis Cluster and `REDIS_URL` names one or more of its nodes, comma-separated; keys take the cluster layout of docs/protocol.md, which y-redis (JavaScript) instances cannot share",
        apply: |c, v| parse(&mut c.redis.cluster, v),
    },
    Setting {
        key: "[redis] cluster_shards",
        env: &["REDIS_CLUSTER_SHARDS"],
        default: "`16`",
        meaning: "with `cluster`: how many shards (hash tags, each with its own worker queue) the rooms are spread over, 1 to 1024; must be the same on every instance of a fleet",
        apply: |c, v| parse(&mut c.redis.cluster_shards, v),
    },
    Setting {
        key: "[websocket] port",
        env: &["WS_PORT", "PORT"],
        default: "`3001`",
        meaning: "listen port (string or number)",
        apply: |c, v| parse(&mut c.websocket.port, v),
    },
    Setting {
        key: "[websocket] host",
        env: &["WS_HOST", "HOST"],
        default: "`0.0.0.0`",
        meaning: "listen address",
        apply: |c, v| parse(&mut c.websocket.host, v),
    },
    Setting {
        key: "[websocket] buffer_capacity",
        env: &["WS_BUFFER_CAPACITY"],
        default: "`512`",
        meaning: "messages queued per connection; a client further behind is disconnected and resyncs on reconnect",
        apply: |c, v| parse(&mut c.websocket.buffer_capacity, v),
    },
    Setting {
        key: "[websocket] max_message_size",
        env: &["WS_MAX_MESSAGE_SIZE"],
        default: "`104857600`",
        meaning: "largest accepted message (bytes)",
        apply: |c, v| parse(&mut c.websocket.max_message_size, v),
    },
    Setting {
        key: "[websocket] header_timeout",
        env: &["WS_HEADER_TIMEOUT"],
        default: "`10000`",
        meaning: "ms a connection may take to send its request headers; slower ones are closed",
        apply: |c, v| parse(&mut c.websocket.header_timeout, v),
    },
    Setting {
        key: "[websocket] max_handshakes",
        env: &["WS_MAX_HANDSHAKES"],
        default: "`1024`",
        meaning: "connections accepted and not yet upgraded (reading headers, waiting on the permission callback) at once; more wait in the listen backlog",
        apply: |c, v| parse(&mut c.websocket.max_handshakes, v),
    },
    Setting {
        key: "[websocket] idle_timeout",
        env: &["WS_IDLE_TIMEOUT"],
        default: "`60000`",
        meaning: "ms without a frame or pong from a client before it is closed (its awareness departure is appended); quiet clients are pinged at half of it; 0 = never",
        apply: |c, v| parse(&mut c.websocket.idle_timeout, v),
    },
    Setting {
        key: "[websocket] max_messages_per_second",
        env: &["WS_MAX_MESSAGES_PER_SECOND"],
        default: "`2000`",
        meaning: "messages one connection may send per second; over it the connection is closed with 1008 (what it sent before is kept); 0 = no limit",
        apply: |c, v| parse(&mut c.websocket.max_messages_per_second, v),
    },
    Setting {
        key: "[websocket] max_bytes_per_second",
        env: &["WS_MAX_BYTES_PER_SECOND"],
        default: "`16777216`",
        meaning: "bytes one connection may send per second (one larger message passes as the first of its second); closed with 1008 over it; 0 = no limit",
        apply: |c, v| parse(&mut c.websocket.max_bytes_per_second, v),
    },
    Setting {
        key: "[websocket] max_awareness_state",
        env: &["WS_MAX_AWARENESS_STATE"],
        default: "`65536`",
        meaning: "bytes of one client's awareness state; a larger one closes the connection with 1008; 0 = no limit",
        apply: |c, v| parse(&mut c.websocket.max_awareness_state, v),
    },
    Setting {
        key: "[websocket] max_awareness_clients",
        env: &["WS_MAX_AWARENESS_CLIENTS"],
        default: "`1000`",
        meaning: "client entries in one awareness message (clients relay their peers' states, so this is per message, not per connection); more closes the connection with 1008; 0 = no limit",
        apply: |c, v| parse(&mut c.websocket.max_awareness_clients, v),
    },
    Setting {
        key: "[websocket] permessage_deflate",
        env: &["WS_PERMESSAGE_DEFLATE"],
        default: "`true`",
        meaning: "negotiate permessage-deflate (RFC 7692) with clients that offer it, as y-redis does: each server message is compressed once and the same bytes go to every member that agreed; `false` = frames always go uncompressed",
        apply: |c, v| parse(&mut c.websocket.permessage_deflate, v),
    },
    Setting {
        key: "[websocket] deflate_min_size",
        env: &["WS_DEFLATE_MIN_SIZE"],
        default: "`128`",
        meaning: "messages shorter than this many bytes go uncompressed (compressing them costs more than it saves); so do messages that do not shrink",
        apply: |c, v| parse(&mut c.websocket.deflate_min_size, v),
    },
    Setting {
        key: "[websocket] deflate_level",
        env: &["WS_DEFLATE_LEVEL"],
        default: "`6`",
        meaning: "zlib level of server messages, 1 (fastest) to 9 (smallest)",
        apply: |c, v| parse(&mut c.websocket.deflate_level, v),
    },
    Setting {
        key: "[websocket] sync_chunk_size",
        env: &["WS_SYNC_CHUNK_SIZE"],
        default: "`1048576`",
        meaning: "bytes above which a document's initial sync is sent as several update messages each under it, then sync step 2, so that a client on a slow link keeps receiving messages and never hits y-websocket's 30 s silence timeout",
        apply: |c, v| parse(&mut c.websocket.sync_chunk_size, v),
    },
    Setting {
        key: "[websocket] coalesce_window",
        env: &["WS_COALESCE_WINDOW"],
        default: "`5`",
        meaning: "ms between stream reads while rooms are busy (a room getting an update per window, or reads returning an entry per 64 streams read, judged over the last 100 ms): what arrives meanwhile goes to each member merged, in one frame, and Redis serves fewer reads; at light load, and after a read that waited, the next read starts at once; 0 = never pace",
        apply: |c, v| parse(&mut c.websocket.coalesce_window, v),
    },
    Setting {
        key: "[websocket] threads",
        env: &["WS_THREADS"],
        default: "`0`",
        meaning: "threads serving connections: 0 = one per core, 1 = a single thread (docs/benchmark.md compares them)",
        apply: |c, v| parse(&mut c.websocket.threads, v),
    },
    Setting {
        key: "[websocket] shutdown_drain",
        env: &["SHUTDOWN_DRAIN_MS"],
        default: "`0`",
        meaning: "ms between a stop signal and closing connections, while `/readyz` answers 503 and clients are still served",
        apply: |c, v| parse(&mut c.websocket.shutdown_drain, v),
    },
    Setting {
        key: "[storage] backend",
        env: &["STORAGE_BACKEND"],
        default: "chosen",
        meaning: "`memory`, `fs`, `postgres`, `s3` or `gcs`; unset = chosen by the keys set (`docs/storage.md`)",
        apply: |c, v| parse_some(&mut c.storage.backend, v),
    },
    Setting {
        key: "[storage] dir",
        env: &["STORAGE_DIR"],
        default: "`./data`",
        meaning: "`fs` directory",
        apply: |c, v| {
            c.storage.dir = Some(v.into());
            Ok(())
        },
    },
    Setting {
        key: "[storage] bucket",
        env: &["GOOGLE_CLOUD_STORAGE_BUCKET"],
        default: "unset",
        meaning: "GCS bucket",
        apply: |c, v| text(&mut c.storage.bucket, v),
    },
    Setting {
        key: "[storage] gcs_endpoint",
        env: &["STORAGE_EMULATOR_HOST"],
        default: "unset",
        meaning: "GCS emulator, e.g. `http://127.0.0.1:4443` (no credentials are used with it)",
        apply: |c, v| text(&mut c.storage.gcs_endpoint, v),
    },
    Setting {
        key: "[storage] postgres",
        env: &["POSTGRES"],
        default: "unset",
        meaning: "PostgreSQL URL",
        apply: |c, v| text(&mut c.storage.postgres, v),
    },
    Setting {
        key: "[storage] s3_endpoint",
        env: &["S3_ENDPOINT"],
        default: "unset",
        meaning: "S3 host name, or a URL `http(s)://host:port`",
        apply: |c, v| text(&mut c.storage.s3_endpoint, v),
    },
    Setting {
        key: "[storage] s3_port",
        env: &["S3_PORT"],
        default: "443 with SSL, 80 without",
        meaning: "S3 port",
        apply: |c, v| parse_some(&mut c.storage.s3_port, v),
    },
    Setting {
        key: "[storage] s3_ssl",
        env: &["S3_SSL"],
        default: "`false`",
        meaning: "S3 over HTTPS (`true`/`false`), as y-redis",
        apply: |c, v| flag(&mut c.storage.s3_ssl, v),
    },
    Setting {
        key: "[storage] s3_access_key",
        env: &["S3_ACCESS_KEY"],
        default: "unset",
        meaning: "S3 access key id; unset = unsigned requests",
        apply: |c, v| text(&mut c.storage.s3_access_key, v),
    },
    Setting {
        key: "[storage] s3_secret_key",
        env: &["S3_SECRET_KEY"],
        default: "unset",
        meaning: "S3 secret access key",
        apply: |c, v| text(&mut c.storage.s3_secret_key, v),
    },
    Setting {
        key: "[storage] s3_session_token",
        env: &["S3_SESSION_TOKEN"],
        default: "unset",
        meaning: "S3 session token of temporary credentials (STS, IAM roles), sent signed",
        apply: |c, v| text(&mut c.storage.s3_session_token, v),
    },
    Setting {
        key: "[storage] s3_bucket",
        env: &["S3_BUCKET"],
        default: "`ydocs`",
        meaning: "S3 bucket",
        apply: |c, v| text(&mut c.storage.s3_bucket, v),
    },
    Setting {
        key: "[storage] s3_region",
        env: &["S3_REGION"],
        default: "`us-east-1`",
        meaning: "S3 region used in signatures",
        apply: |c, v| text(&mut c.storage.s3_region, v),
    },
    Setting {
        key: "[auth] public_key",
        env: &["AUTH_PUBLIC_KEY"],
        default: "unset",
        meaning: "ES384 public JWK; unset = no auth (a warning says so)",
        apply: |c, v| text(&mut c.auth.public_key, v),
    },
    Setting {
        key: "[auth] perm_callback",
        env: &["AUTH_PERM_CALLBACK"],
        default: "unset",
        meaning: "permission callback base URL",
        apply: |c, v| text(&mut c.auth.perm_callback, v),
    },
    Setting {
        key: "[auth] perm_timeout",
        env: &["AUTH_PERM_TIMEOUT"],
        default: "`5000`",
        meaning: "ms to wait for the callback",
        apply: |c, v| parse(&mut c.auth.perm_timeout, v),
    },
    Setting {
        key: "[worker] update_callback",
        env: &["YDOC_UPDATE_CALLBACK"],
        default: "unset",
        meaning: "`PUT {url}/{room}` with each compacted document",
        apply: |c, v| text(&mut c.worker.update_callback, v),
    },
    Setting {
        key: "[websocket] allowed_origins",
        env: &["WS_ALLOWED_ORIGINS"],
        default: "unset",
        meaning: "comma-separated `Origin`s WebSocket upgrades may come from, e.g. `https://app.example.com`; others get 403; unset = any (requests without `Origin` are not checked)",
        apply: |c, v| {
            c.websocket.allowed_origins = list(v);
            Ok(())
        },
    },
    Setting {
        key: "[api] enabled",
        env: &["WS_API"],
        default: "`true`",
        meaning: "serve the document HTTP API under `/api` (docs/api.md)",
        apply: |c, v| parse_flag(&mut c.api.enabled, v),
    },
    Setting {
        key: "[api] secret",
        env: &["WS_API_SECRET", "API_SECRET"],
        default: "unset",
        meaning: "shared secret of the document API, sent as `X-API-Secret` (or `Authorization: Bearer`); never logged; unset = no secret",
        apply: |c, v| text(&mut c.api.secret, v),
    },
    Setting {
        key: "[api] max_body",
        env: &["WS_API_MAX_BODY"],
        default: "`104857600`",
        meaning: "largest document API request body, bytes",
        apply: |c, v| parse(&mut c.api.max_body, v),
    },
    Setting {
        key: "[history] enabled",
        env: &["WS_HISTORY"],
        default: "`true`",
        meaning: "the worker keeps a version of each document per compaction that changed it",
        apply: |c, v| parse_flag(&mut c.history.enabled, v),
    },
    Setting {
        key: "[history] keep_all_hours",
        env: &["WS_HISTORY_KEEP_ALL_HOURS"],
        default: "`24`",
        meaning: "hours every version is kept",
        apply: |c, v| parse(&mut c.history.keep_all_hours, v),
    },
    Setting {
        key: "[history] hourly_days",
        env: &["WS_HISTORY_HOURLY_DAYS"],
        default: "`30`",
        meaning: "days after those during which one version an hour is kept",
        apply: |c, v| parse(&mut c.history.hourly_days, v),
    },
    Setting {
        key: "[history] daily_days",
        env: &["WS_HISTORY_DAILY_DAYS"],
        default: "`0`",
        meaning: "days after those during which one version a day is kept; `0` = forever (named snapshots and the latest version are always kept)",
        apply: |c, v| parse(&mut c.history.daily_days, v),
    },
    Setting {
        key: "[metrics] port",
        env: &["METRICS_PORT"],
        default: "unset",
        meaning: "port of `/metrics`, `/healthz`, `/readyz` and `/inspector`; unset = not served",
        apply: |c, v| parse_some(&mut c.metrics.port, v),
    },
    Setting {
        key: "",
        env: &["RUST_LOG"],
        default: "`info`",
        meaning: "log filter, e.g. `debug` or `websocket=debug` (read by the binary at start)",
        apply: |_, _| Ok(()),
    },
    Setting {
        key: "",
        env: &["LOG_FORMAT"],
        default: "`text`",
        meaning: "`json`: one JSON object per log line, a connection's lines carrying its room, id, peer address and user (read by the binary at start)",
        apply: |_, v| match v.trim() {
            "text" | "json" => Ok(()),
            _ => Err(format!("{v:?}: expected text or json")),
        },
    },
];

/// Store a text value as it is.
fn text(slot: &mut Option<String>, value: &str) -> Result<(), String> {
    *slot = Some(value.to_string());
    Ok(())
}

/// Parse a value (surrounding spaces ignored) into `slot`.
fn parse<T: FromStr>(slot: &mut T, value: &str) -> Result<(), String>
where
    T::Err: Display,
{
    *slot = value
        .trim()
        .parse()
        .map_err(|err| format!("{value:?}: {err}"))?;
    Ok(())
}

/// Parse a value (surrounding spaces ignored) into an optional `slot`.
fn parse_some<T: FromStr>(slot: &mut Option<T>, value: &str) -> Result<(), String>
where
    T::Err: Display,
{
    *slot = Some(
        value
            .trim()
            .parse()
            .map_err(|err| format!("{value:?}: {err}"))?,
    );
    Ok(())
}

/// A comma-separated list, entries trimmed, empty entries dropped.
fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(str::to_string)
        .collect()
}

/// [`flag`] into a plain `bool`.
fn parse_flag(slot: &mut bool, value: &str) -> Result<(), String> {
    let mut parsed = None;
    flag(&mut parsed, value)?;
    *slot = parsed.unwrap_or(*slot);
    Ok(())
}

/// `true`/`1`/`yes` or `false`/`0`/`no`, any case.
fn flag(slot: &mut Option<bool>, value: &str) -> Result<(), String> {
    *slot = Some(match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => true,
        "false" | "0" | "no" => false,
        _ => return Err(format!("{value:?}: expected true or false")),
    });
    Ok(())
}

/// The configuration part of `--help`: one line per [`Setting`].
pub fn help() -> String {
    let mut out = String::from(
        "CONFIGURATION (file keys, then environment variables; environment overrides the file,\n\
         an empty variable counts as unset; details in the README)\n",
    );
    for setting in SETTINGS {
        let line = format!(
            "  {:<30} {:<28} {} [default: {}]",
            setting.key,
            setting.env.join(", "),
            setting.meaning,
            setting.default
        );
        out.push_str(line.replace('`', "").trim_end());
        out.push('\n');
    }
    out
}

/// The Markdown table rows (header included) of the settings `select` keeps, as
/// the README and `docs/storage.md` show them.
pub fn markdown_rows(select: impl Fn(&Setting) -> bool) -> String {
    let mut out =
        String::from("| file key | environment | default | meaning |\n|---|---|---|---|\n");
    for setting in SETTINGS.iter().filter(|s| select(s)) {
        let key = if setting.key.is_empty() {
            "| |".to_string()
        } else {
            format!("| `{}` |", setting.key)
        };
        let env: Vec<String> = setting.env.iter().map(|name| format!("`{name}`")).collect();
        out.push_str(&format!(
            "{key} {} | {} | {} |\n",
            env.join(", "),
            setting.default,
            setting.meaning
        ));
    }
    out
}
