//! Where a fleet's workers persist documents: per-process memory, or a shared
//! PostgreSQL or S3 server started through `testkit`, configured in both
//! languages with y-redis's environment names.

use std::process::Command;

use anyhow::{bail, Context, Result};
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

/// The bucket both languages store in (y-redis's, and neither is told otherwise).
pub const BUCKET: &str = "ydocs";

/// One item found in a fleet's storage, read with the storage's own tools (`psql`,
/// boto3), never through either implementation's store: what one language wrote
/// is checked independently of how the other reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredItem {
    /// PostgreSQL: the `room` column as stored. S3: the first segment of the
    /// object name (the encoded room), or the whole name when it does not have
    /// y-redis's three segments.
    pub room: String,
    /// PostgreSQL: the `doc` column. S3: the second segment of the object name
    /// (the encoded docid), empty when the name does not have three segments.
    pub doc: String,
    /// PostgreSQL: `r` in decimal. S3: the object name.
    pub reference: String,
    /// The stored bytes (a v2 update when the layout is followed).
    pub update: Vec<u8>,
    /// PostgreSQL: the `sv` column (a v1 state vector). S3: `None`.
    pub sv: Option<Vec<u8>>,
}

/// Prints every object of a bucket as a JSON line `[name, hex bytes]`.
const DUMP_OBJECTS: &str = r#"
import sys, json, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                  config=Config(s3={"addressing_style": "path"}))
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[4]):
    for item in page.get("Contents", []):
        body = s3.get_object(Bucket=sys.argv[4], Key=item["Key"])["Body"].read()
        print(json.dumps([item["Key"], body.hex()]))
"#;

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

    /// Every stored item of y-redis's layout (versions kept under `$history/`
    /// are not), in storage order (PostgreSQL by `r`, S3 by name);
    /// memory storage is private to each process and has none to show.
    pub(crate) fn items(&self) -> Result<Vec<StoredItem>> {
        match self {
            Self::Memory => bail!("memory storage is per process: nothing to inspect"),
            Self::Postgres(pg) => postgres_items(pg),
            Self::S3(s3) => s3_items(s3),
        }
    }
}

fn postgres_items(pg: &PostgresServer) -> Result<Vec<StoredItem>> {
    // Text columns as hex too, so no value can break the `|`-separated output.
    let out = pg.psql(
        "SELECT r, encode(convert_to(room, 'UTF8'), 'hex'), encode(convert_to(doc, 'UTF8'), 'hex'), \
         encode(update, 'hex'), coalesce(encode(sv, 'hex'), '') FROM yredis_docs_v1 ORDER BY r",
    )?;
    out.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let cols: Vec<&str> = line.trim().split('|').collect();
            let [r, room, doc, update, sv] = cols[..] else {
                bail!("unexpected psql row {line:?}");
            };
            let text = |h: &str| -> Result<String> { Ok(String::from_utf8(hex::decode(h)?)?) };
            Ok(StoredItem {
                room: text(room)?,
                doc: text(doc)?,
                reference: r.to_string(),
                update: hex::decode(update)?,
                sv: Some(hex::decode(sv)?),
            })
        })
        .collect()
}

fn s3_items(s3: &S3Server) -> Result<Vec<StoredItem>> {
    let output = Command::new(testkit::python())
        .args([
            "-c",
            DUMP_OBJECTS,
            &s3.endpoint(),
            s3.access_key(),
            s3.secret_key(),
            BUCKET,
        ])
        .output()
        .context("reading S3 objects with boto3")?;
    if !output.status.success() {
        bail!(
            "reading S3 objects failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            serde_json::from_str::<(String, String)>(line)
                .with_context(|| format!("object line {line:?}"))
        })
        // Versions a Rust worker keeps (docs/storage.md, History) are not
        // items of y-redis's layout: y-redis never lists `$history/`.
        .filter(|object| !matches!(object, Ok((name, _)) if name.starts_with("$history/")))
        .map(|object| {
            let (name, bytes) = object?;
            let segments: Vec<&str> = name.split('/').collect();
            let (room, doc) = match segments[..] {
                [room, doc, _] => (room.to_string(), doc.to_string()),
                _ => (name.clone(), String::new()),
            };
            Ok(StoredItem {
                room,
                doc,
                reference: name.clone(),
                update: hex::decode(bytes)?,
                sv: None,
            })
        })
        .collect()
}
