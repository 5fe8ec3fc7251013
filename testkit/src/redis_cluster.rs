//! A throwaway Redis Cluster: three masters with a replica each, on free
//! ports, for tests of the cluster layout and of a master failing over.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{free_port, ServiceProcess};

/// How many nodes the cluster has: three masters, one replica each.
const NODES: usize = 6;

/// A node as `CLUSTER NODES` lists it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The node's port on 127.0.0.1.
    pub port: u16,
    /// Whether it is a master (and not marked failed).
    pub master: bool,
    /// The slot ranges it serves (masters only), inclusive.
    pub slots: Vec<(u16, u16)>,
}

/// Six `redis-server --cluster-enabled yes` without persistence, joined by
/// `redis-cli --cluster create`; every process is stopped on drop.
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Vec<(u16, Option<ServiceProcess>)>,
}

impl RedisCluster {
    /// Start the nodes, create the cluster and wait until every node sees
    /// every slot served and every replica is in sync with its master.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut nodes = Vec::with_capacity(NODES);
        while nodes.len() < NODES {
            let mut started = None;
            for _ in 0..3 {
                let port = free_port()?;
                if nodes.iter().any(|(p, _)| *p == port) {
                    continue;
                }
                match spawn(dir.path(), port) {
                    Ok(process) => {
                        started = Some((port, Some(process)));
                        break;
                    }
                    Err(err) => tracing_warn(&format!("redis cluster node on {port}: {err}")),
                }
            }
            nodes.push(started.context("a cluster node did not start")?);
        }
        let cluster = Self { dir, nodes };
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (port, _) in &cluster.nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        let output = create
            .output()
            .context("running redis-cli --cluster create")?;
        if !output.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// The seed URLs of every node, comma-separated, as `REDIS_URL` takes them.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|(port, _)| format!("redis://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The ports of the nodes still running.
    pub fn running_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|(_, process)| process.is_some())
            .map(|(port, _)| *port)
            .collect()
    }

    /// The pids of the nodes still running, by port, for reading their CPU
    /// time from `/proc`.
    pub fn pids(&self) -> Vec<(u16, u32)> {
        self.nodes
            .iter()
            .filter_map(|(port, process)| Some((*port, process.as_ref()?.pid()?)))
            .collect()
    }

    /// Run `redis-cli -p port args…` and return its stdout.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// The cluster as a running node sees it.
    pub fn nodes(&self) -> Result<Vec<ClusterNode>> {
        let mut last = None;
        for port in self.running_ports() {
            match self.cli(port, &["CLUSTER", "NODES"]) {
                Ok(text) if !text.trim().is_empty() => return Ok(parse_nodes(&text)),
                Ok(_) => last = Some(anyhow::anyhow!("empty CLUSTER NODES on {port}")),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no node runs")))
    }

    /// The ports of the masters.
    pub fn masters(&self) -> Result<Vec<u16>> {
        Ok(self
            .nodes()?
            .into_iter()
            .filter(|node| node.master && !node.slots.is_empty())
            .map(|node| node.port)
            .collect())
    }

    /// The port of the master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> Result<u16> {
        self.nodes()?
            .into_iter()
            .find(|node| {
                node.master
                    && node
                        .slots
                        .iter()
                        .any(|(low, high)| (*low..=*high).contains(&slot))
            })
            .map(|node| node.port)
            .with_context(|| format!("no master serves slot {slot}"))
    }

    /// Kill the master on `port` (SIGKILL, as a crash) and wait until its
    /// replica has been promoted and the cluster serves every slot again.
    pub fn kill_master(&mut self, port: u16) -> Result<()> {
        let slots = self
            .nodes()?
            .into_iter()
            .find(|node| node.port == port && node.master)
            .with_context(|| format!("{port} is no master"))?
            .slots;
        let Some((_, process)) = self.nodes.iter_mut().find(|(p, _)| *p == port) else {
            bail!("no node on {port}");
        };
        if let Some(mut process) = process.take() {
            process.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let promoted = self.nodes().ok().is_some_and(|nodes| {
                slots.iter().all(|(low, _)| {
                    nodes.iter().any(|node| {
                        node.master
                            && node.port != port
                            && node.slots.iter().any(|(l, h)| (*l..=*h).contains(low))
                    })
                })
            });
            if promoted && self.all_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the replica of {port} was not promoted within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Whether every running node reports `cluster_state:ok`.
    fn all_ok(&self) -> bool {
        self.running_ports().iter().all(|port| {
            self.cli(*port, &["CLUSTER", "INFO"])
                .is_ok_and(|info| info.contains("cluster_state:ok"))
        })
    }

    /// Wait until every node reports `cluster_state:ok` with all slots
    /// assigned, and every replica's link to its master is up.
    fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let slots_ok = self.running_ports().iter().all(|port| {
                self.cli(*port, &["CLUSTER", "INFO"]).is_ok_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info.contains(&format!("cluster_known_nodes:{NODES}"))
                })
            });
            let replicas_ok = slots_ok
                && self.running_ports().iter().all(|port| {
                    self.cli(*port, &["INFO", "replication"]).is_ok_and(|info| {
                        info.contains("role:master") || info.contains("master_link_status:up")
                    })
                });
            let masters_ok = replicas_ok && self.masters().is_ok_and(|m| m.len() == NODES / 2);
            if masters_ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the cluster in {} is not healthy after {timeout:?}",
                    self.dir.path().display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// One cluster node on `port`, its cluster state file under `dir`.
fn spawn(dir: &std::path::Path, port: u16) -> Result<ServiceProcess> {
    let mut command = Command::new("redis-server");
    command.args([
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        &dir.join(format!("nodes-{port}.conf")).display().to_string(),
        "--cluster-node-timeout",
        "1000",
        "--dir",
        &dir.display().to_string(),
    ]);
    crate::redis::spawn_redis(port, command)
}

/// `CLUSTER NODES` text: `id ip:port@cport flags master ping pong epoch link slots…`.
fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let address = fields.get(1)?;
            let port = address
                .split('@')
                .next()?
                .rsplit_once(':')?
                .1
                .parse()
                .ok()?;
            let flags = fields.get(2)?;
            let master = flags.contains("master") && !flags.contains("fail");
            let slots = fields
                .iter()
                .skip(8)
                .filter(|range| !range.starts_with('['))
                .filter_map(|range| match range.split_once('-') {
                    Some((low, high)) => Some((low.parse().ok()?, high.parse().ok()?)),
                    None => {
                        let slot = range.parse().ok()?;
                        Some((slot, slot))
                    }
                })
                .collect();
            Some(ClusterNode {
                port,
                master,
                slots,
            })
        })
        .collect()
}

/// A warning on stderr (the testkit has no logger).
fn tracing_warn(message: &str) {
    eprintln!("testkit: {message}");
}
