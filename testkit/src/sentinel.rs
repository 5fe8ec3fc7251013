//! A Redis master with a replica, watched by three Sentinels: what a fleet
//! behind Sentinel runs on, with a failover on demand.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{free_port, ServiceProcess};
use crate::redis::spawn_redis;

/// The master's name the Sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server` of the set, without persistence.
struct Node {
    port: u16,
    process: ServiceProcess,
}

/// A master, one replica and three Sentinels (`redis-sentinel`), on free
/// loopback ports, with a
/// quorum of two and a one-second down-after time so that a failover takes a
/// few seconds. Everything is stopped on drop.
pub struct SentinelSet {
    nodes: Vec<Node>,
    sentinels: Vec<Node>,
    /// The Sentinels' `requirepass`, when they have one.
    password: Option<String>,
    _dir: tempfile::TempDir,
}

impl SentinelSet {
    /// Start the master, its replica and the Sentinels; returns once the
    /// replica is in sync and every Sentinel knows the replica.
    pub fn start() -> Result<Self> {
        Self::start_with_password(None)
    }

    /// As [`SentinelSet::start`], with Sentinels that ask every client (and
    /// each other) for `password` when one is given.
    pub fn start_with_password(password: Option<&str>) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let master = spawn_node(dir.path(), None)?;
        let replica = spawn_node(dir.path(), Some(master.port))?;
        let mut sentinels = Vec::new();
        for i in 0..3 {
            sentinels.push(spawn_sentinel(dir.path(), i, master.port, password)?);
        }
        let set = Self {
            nodes: vec![master, replica],
            sentinels,
            password: password.map(str::to_string),
            _dir: dir,
        };
        set.wait_ready(Duration::from_secs(30))?;
        Ok(set)
    }

    /// `127.0.0.1:port` of every Sentinel, comma-separated (`REDIS_SENTINELS`).
    pub fn sentinel_list(&self) -> String {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The port of the server the Sentinels name as master now.
    pub fn master_port(&self) -> Result<u16> {
        for sentinel in &self.sentinels {
            let out = self.ask_sentinel(
                sentinel.port,
                &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
            )?;
            if let Some(port) = out.lines().nth(1).and_then(|p| p.trim().parse().ok()) {
                return Ok(port);
            }
        }
        bail!("no Sentinel names a master")
    }

    /// Run `redis-cli` against the server on `port`.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        cli(port, None, args)
    }

    /// Run `redis-cli` against the Sentinel on `port`, with its password.
    fn ask_sentinel(&self, port: u16, args: &[&str]) -> Result<String> {
        cli(port, self.password.as_deref(), args)
    }

    /// Kill the current master (SIGKILL, as a crash) and wait until the
    /// Sentinels promoted the replica and it says it is a master; returns the
    /// new master's port.
    pub fn fail_master(&mut self, timeout: Duration) -> Result<u16> {
        let old = self.master_port()?;
        let index = self
            .nodes
            .iter()
            .position(|n| n.port == old)
            .context("the master is one of the set")?;
        self.nodes[index].process.kill();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(port) = self.master_port() {
                if port != old && role(port).as_deref() == Some("master") {
                    return Ok(port);
                }
            }
            if Instant::now() > deadline {
                bail!("no failover within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let replica = self.nodes[1].port;
        loop {
            let synced =
                cli(replica, None, &["INFO", "replication"])?.contains("master_link_status:up");
            let known = self.sentinels.iter().all(|s| {
                self.ask_sentinel(s.port, &["SENTINEL", "replicas", MASTER_NAME])
                    .map(|out| out.contains(&replica.to_string()))
                    .unwrap_or(false)
            });
            let peers = self.sentinels.iter().all(|s| {
                self.ask_sentinel(s.port, &["SENTINEL", "master", MASTER_NAME])
                    .map(|out| num_other_sentinels(&out) >= 2)
                    .unwrap_or(false)
            });
            if synced && known && peers {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the Sentinel set is not ready after {timeout:?} (replica synced: {synced}, known to every Sentinel: {known}, Sentinels see each other: {peers})");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// `num-other-sentinels` in `SENTINEL master` output (field/value lines).
fn num_other_sentinels(out: &str) -> u32 {
    let lines: Vec<&str> = out.lines().collect();
    lines
        .windows(2)
        .find(|w| w[0].trim() == "num-other-sentinels")
        .and_then(|w| w[1].trim().parse().ok())
        .unwrap_or(0)
}

/// The first line of `ROLE` on `port`.
fn role(port: u16) -> Option<String> {
    cli(port, None, &["ROLE"])
        .ok()
        .and_then(|out| out.lines().next().map(|l| l.trim().to_string()))
}

fn cli(port: u16, password: Option<&str>, args: &[&str]) -> Result<String> {
    let mut command = Command::new("redis-cli");
    command.args(["-p", &port.to_string()]);
    if let Some(password) = password {
        command.args(["--no-auth-warning", "-a", password]);
    }
    let output = command
        .args(args)
        .output()
        .context("running redis-cli: is it installed? (run ci/setup.sh)")?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn spawn_node(dir: &Path, master: Option<u16>) -> Result<Node> {
    let port = free_port()?;
    let mut command = Command::new("redis-server");
    command.args([
        "--repl-diskless-sync",
        "yes",
        "--repl-diskless-sync-delay",
        "0",
    ]);
    // A full resync writes nothing here with a diskless sync; the directory
    // keeps anything else out of the caller's.
    command.arg("--dir").arg(dir);
    if let Some(master) = master {
        command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
    }
    let process = spawn_redis(port, command)?;
    Ok(Node { port, process })
}

fn spawn_sentinel(dir: &Path, index: usize, master: u16, password: Option<&str>) -> Result<Node> {
    let port = free_port()?;
    let conf = dir.join(format!("sentinel-{index}.conf"));
    // Sentinels with a password give it to each other too (`sentinel-pass`).
    let login = password
        .map(|p| format!("requirepass \"{p}\"\nsentinel sentinel-pass \"{p}\"\n"))
        .unwrap_or_default();
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {dir}\n{login}\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 1\n",
            dir = dir.display()
        ),
    )?;
    let mut command = Command::new("redis-sentinel");
    command.arg(&conf);
    let mut process = ServiceProcess::spawn("redis-sentinel", command)?;
    process.wait_listening(port, Duration::from_secs(10))?;
    Ok(Node { port, process })
}
