//! A throwaway PostgreSQL cluster: `initdb` into a temporary directory, then
//! `postgres` on a free loopback port. When the tests run as root, both run as the
//! unprivileged `postgres` user (PostgreSQL refuses to run as root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{free_port, wait_for_port, ServiceProcess};

/// The database superuser the cluster is initialised with.
const USER: &str = "yredis";

/// A PostgreSQL server with its data in a temporary directory; stopped and deleted
/// on drop.
pub struct PostgresServer {
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    run_as: Option<(u32, u32)>,
    process: ServiceProcess,
}

/// The directory holding `initdb`, `postgres`, `pg_isready` and `psql`: where the
/// `initdb` on PATH really lives (links resolved), else the newest
/// `/usr/lib/postgresql/*/bin`.
fn bin_dir() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let Ok(initdb) = dir.join("initdb").canonicalize() else {
                continue;
            };
            if let Some(real) = initdb.parent() {
                if real.join("postgres").is_file() && real.join("pg_isready").is_file() {
                    return Ok(real.to_path_buf());
                }
            }
        }
    }
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    candidates.sort();
    match candidates.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!("PostgreSQL is not installed (no initdb found): run ci/setup.sh"),
    }
}

fn id_of(flag: &str, user: &str) -> Result<u32> {
    let output = Command::new("id").args([flag, user]).output()?;
    if !output.status.success() {
        bail!("user {user} does not exist: run ci/setup.sh");
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

fn running_as_root() -> Result<bool> {
    let output = Command::new("id").arg("-u").output()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim() == "0")
}

impl PostgresServer {
    /// Create a cluster and start the server; returns once it accepts queries.
    pub fn start() -> Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("testkit-pg").tempdir()?;
        let run_as = if running_as_root()? {
            let ids = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
            let status = Command::new("chown")
                .arg(format!("{}:{}", ids.0, ids.1))
                .arg(dir.path())
                .status()?;
            if !status.success() {
                bail!("cannot hand {} to the postgres user", dir.path().display());
            }
            Some(ids)
        } else {
            None
        };
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .current_dir(dir.path());
        if let Some((uid, gid)) = run_as {
            initdb.uid(uid).gid(gid);
        }
        let output = initdb.output().context("running initdb")?;
        if !output.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Self::spawn(&bin, dir.path(), run_as, port) {
                Ok(process) => {
                    return Ok(Self {
                        port,
                        bin,
                        dir,
                        run_as,
                        process,
                    })
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("postgres did not start")))
    }

    fn spawn(
        bin: &Path,
        dir: &Path,
        run_as: Option<(u32, u32)>,
        port: u16,
    ) -> Result<ServiceProcess> {
        let mut command = Command::new(bin.join("postgres"));
        command
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ])
            .current_dir(dir);
        if let Some((uid, gid)) = run_as {
            command.uid(uid).gid(gid);
        }
        let mut process = ServiceProcess::spawn("postgres", command)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        wait_for_port(port, Duration::from_secs(30)).inspect_err(|_| process.kill())?;
        loop {
            process.check_running()?;
            let ready = Command::new(bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", USER, "-q"])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ready {
                return Ok(process);
            }
            if Instant::now() > deadline {
                process.kill();
                bail!("postgres on port {port} did not become ready");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `postgres://yredis@127.0.0.1:{port}/postgres` (no password needed).
    pub fn url(&self) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/postgres", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Run one SQL statement with `psql` and return its unaligned, tuples-only
    /// output (columns separated by `|`), for checking what was stored.
    pub fn psql(&self, sql: &str) -> Result<String> {
        let output = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", USER])
            .args([
                "-d",
                "postgres",
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ])
            .env("PGCLIENTENCODING", "UTF8")
            .output()
            .context("running psql")?;
        if !output.status.success() {
            bail!(
                "psql failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Kill the server at once, as a crash of the machine would: the postmaster
    /// and every backend, so no open connection is answered any more. Committed
    /// data stays (`fsync` is off, which only matters if the machine really
    /// crashes).
    pub fn stop(&mut self) {
        if let Some(pid) = self.process.pid() {
            // Each backend is a session leader of its own (PostgreSQL makes it
            // one), so killing the postmaster's process group leaves backends
            // answering their connections until they notice. Freeze the
            // postmaster so it forks no more, then kill its children and it.
            signal("STOP", pid);
            let children = children_of(pid);
            for &child in &children {
                signal("KILL", child);
            }
            self.process.kill();
            let deadline = Instant::now() + Duration::from_secs(10);
            while children.iter().any(|&child| is_alive(child)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.process.kill();
    }

    /// Start it again on the same port and data after [`PostgresServer::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(&self.bin, self.dir.path(), self.run_as, self.port)?;
        Ok(())
    }

    /// Fast shutdown (SIGINT), so no shared memory or processes are left behind.
    fn shut_down(&mut self) {
        if let Some(pid) = self.process.pid() {
            let signalled = Command::new("kill")
                .args(["-INT", &pid.to_string()])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if signalled {
                let deadline = Instant::now() + Duration::from_secs(10);
                while self.process.check_running().is_ok() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
        self.process.kill();
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Send `kill -{name}` to one process.
fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The state letter and parent of a process, from `/proc/{pid}/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&candidate| stat(candidate).is_some_and(|(_, parent)| parent == pid))
        .collect()
}

/// Whether a process still runs (a zombie waiting to be reaped does not).
fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}
