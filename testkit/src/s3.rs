//! A throwaway S3 server: moto's server (`python3 -m moto.server`, from the PyPI
//! package `moto[server]`), in memory.
//!
//! moto accepts any access key and does not check signatures here: its optional
//! signature check recomputes the canonical query from the decoded URL, so it
//! rejects correctly signed requests whose query holds encoded characters (every
//! prefix listing). Signatures are verified separately against botocore.

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::process::{free_port, wait_for_port, ServiceProcess};

/// Lists every object name of a bucket, one per line.
const LIST_KEYS: &str = r#"
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                  config=Config(s3={"addressing_style": "path"}))
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[4]):
    for item in page.get("Contents", []):
        print(item["Key"])
"#;

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// moto's S3 server on a free port; stopped on drop.
pub struct S3Server {
    port: u16,
    _process: ServiceProcess,
}

impl S3Server {
    /// Start the server and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(python());
        command.args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ]);
        let mut process =
            ServiceProcess::spawn("moto server (pip install 'moto[server]')", command)?;
        wait_for_port(port, Duration::from_secs(60))
            .and_then(|()| process.check_running())
            .context("moto's S3 server did not start: run ci/setup.sh")?;
        Ok(Self {
            port,
            _process: process,
        })
    }

    /// `http://127.0.0.1:{port}`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// An access key id for requests (any is accepted).
    pub fn access_key(&self) -> &str {
        "testing-access-key"
    }

    /// The secret of [`S3Server::access_key`].
    pub fn secret_key(&self) -> &str {
        "testing-secret-key"
    }

    /// Every object name in `bucket`, listed independently of the code under test.
    pub fn object_names(&self, bucket: &str) -> Result<Vec<String>> {
        let output = Command::new(python())
            .args([
                "-c",
                LIST_KEYS,
                &self.endpoint(),
                self.access_key(),
                self.secret_key(),
                bucket,
            ])
            .output()
            .context("listing S3 objects with boto3")?;
        if !output.status.success() {
            bail!(
                "listing S3 objects failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(str::to_string)
            .collect())
    }
}
