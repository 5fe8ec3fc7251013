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

use crate::process::{free_port, python, wait_for_port, ServiceProcess};

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

/// Creates a bucket.
const CREATE_BUCKET: &str = r#"
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1",
                  aws_access_key_id=sys.argv[2], aws_secret_access_key=sys.argv[3],
                  config=Config(s3={"addressing_style": "path"}))
s3.create_bucket(Bucket=sys.argv[4])
"#;

/// moto's S3 server on a free port; stopped on drop. Its data lives in memory:
/// [`S3Server::restart`] comes back empty, without buckets.
pub struct S3Server {
    port: u16,
    process: ServiceProcess,
}

impl S3Server {
    /// Start the server and wait until it accepts connections.
    pub fn start() -> Result<Self> {
        let port = free_port()?;
        let process = Self::spawn(port)?;
        Ok(Self { port, process })
    }

    fn spawn(port: u16) -> Result<ServiceProcess> {
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
        Ok(process)
    }

    /// Kill the server at once, as a crash would; requests fail until
    /// [`S3Server::restart`].
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Start it again on the same port after [`S3Server::stop`]. moto keeps
    /// nothing: every bucket and object is gone.
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.port)?;
        Ok(())
    }

    /// Create a bucket.
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        self.boto3(CREATE_BUCKET, bucket).map(|_| ())
    }

    fn boto3(&self, script: &str, bucket: &str) -> Result<String> {
        let output = Command::new(python())
            .args([
                "-c",
                script,
                &self.endpoint(),
                self.access_key(),
                self.secret_key(),
                bucket,
            ])
            .output()
            .context("running boto3")?;
        if !output.status.success() {
            bail!(
                "boto3 against moto failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
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
        Ok(self
            .boto3(LIST_KEYS, bucket)?
            .lines()
            .map(str::to_string)
            .collect())
    }
}
