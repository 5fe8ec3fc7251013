//! Child processes that die with their handle, and port helpers.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A free TCP port on 127.0.0.1, as told by the kernel. Another process may take
/// it before it is used (the kernel hands the same free ports to every
/// `bind(0)` on the machine); services retry on a new port when that happens,
/// and readiness is checked with [`group_listens_on`], never by connecting,
/// which would take the other process's listener for the service's.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

/// Whether a process of the process group `group` (every [`ServiceProcess`]
/// leads its own group, so pass its pid) holds a listening TCP socket on
/// `port`. Linux only: read from `/proc/net/tcp{,6}` and the group's file
/// descriptors.
pub fn group_listens_on(group: u32, port: u16) -> bool {
    let inodes = listening_inodes(port);
    if inodes.is_empty() {
        return false;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return false;
    };
    processes.flatten().any(|process| {
        let dir = process.path();
        let in_group = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|stat| {
                // `pid (comm) state ppid pgrp ...`; comm may hold spaces.
                let rest = stat.rsplit_once(')')?.1;
                rest.split_whitespace().nth(2)?.parse::<u32>().ok()
            })
            == Some(group);
        in_group
            && std::fs::read_dir(dir.join("fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|target| {
                        let target = target.to_string_lossy();
                        target
                            .strip_prefix("socket:[")
                            .and_then(|rest| rest.strip_suffix(']'))
                            .and_then(|inode| inode.parse::<u64>().ok())
                            .is_some_and(|inode| inodes.contains(&inode))
                    })
                })
            })
    })
}

/// Inodes of the sockets listening on TCP `port` (any address).
fn listening_inodes(port: u16) -> std::collections::HashSet<u64> {
    let mut inodes = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok());
            if local_port == Some(port) && *state == "0A" {
                if let Ok(inode) = inode.parse() {
                    inodes.insert(inode);
                }
            }
        }
    }
    inodes
}

/// Wait until something accepts TCP connections on `127.0.0.1:port`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("nothing listens on port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (SIGKILL) and reaped when dropped, so a failing test
/// never leaves services behind.
pub struct ServiceProcess {
    name: String,
    child: Option<Child>,
}

impl ServiceProcess {
    /// Spawn `command` with its output discarded unless `TESTKIT_VERBOSE` is set.
    pub fn spawn(name: &str, mut command: Command) -> Result<Self> {
        if std::env::var_os("TESTKIT_VERBOSE").is_none() {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
        command.stdin(Stdio::null());
        // Its own process group, so that stopping it also stops whatever it
        // forked (PostgreSQL backends, Node workers).
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: is it installed? (run ci/setup.sh)"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// Spawn `command` keeping the standard streams the caller configured (for
    /// example piped, to read a readiness line or to keep a log), in its own
    /// process group like [`ServiceProcess::spawn`]. Take the piped streams with
    /// [`ServiceProcess::child_mut`].
    pub fn spawn_with_stdio(name: &str, mut command: Command) -> Result<Self> {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: is it installed? (run ci/setup.sh)"))?;
        Ok(Self {
            name: name.to_string(),
            child: Some(child),
        })
    }

    /// The child, while it has not been stopped through this handle.
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// The exit status if the process has exited on its own (a crash, or a clean
    /// exit), `None` while it runs or after it was stopped through this handle.
    pub fn try_exit_status(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(child) => Ok(child.try_wait()?),
            None => Ok(None),
        }
    }

    /// The operating system's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait until this process (or one of its group) listens on `port`; fail
    /// if it exits first (another process took the port, say) or `timeout`
    /// passes.
    pub fn wait_listening(&mut self, port: u16, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.check_running()?;
            if self.pid().is_some_and(|pid| group_listens_on(pid, port)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} does not listen on port {port} after {timeout:?}",
                    self.name
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fail if the process has already exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!("{} exited early with {status}", self.name);
            }
        }
        Ok(())
    }

    /// Send SIGTERM and wait up to `timeout` for a clean exit; returns the exit
    /// status, or kills the process and fails if it did not stop in time.
    pub fn terminate(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("{} already stopped", self.name);
        };
        let status = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()?;
        if !status.success() {
            bail!("could not signal {}", self.name);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{} did not stop within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill the process and its process group at once (SIGKILL), as a crash
    /// would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .stderr(Stdio::null())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The Python interpreter the Python-based services run with: `$PYTHON`, else
/// `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

#[cfg(test)]
mod listener_tests {
    use super::*;

    #[test]
    fn a_port_counts_only_for_the_group_that_listens_on_it() {
        let redis = crate::RedisServer::start().unwrap();
        let pid = redis.pid().expect("running");
        assert!(group_listens_on(pid, redis.port()));
        // A port this test process holds is not the redis-server's.
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = other.local_addr().unwrap().port();
        assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
        assert!(!group_listens_on(pid, port));
    }
}
