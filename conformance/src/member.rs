//! One process of a fleet (a Rust or JavaScript server or worker): started with
//! y-redis's environment names, its output kept for failure reports, killed on drop.

use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Result};
use testkit::ServiceProcess;

/// The implementation a process comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    /// This project's `websocket` binary.
    Rust,
    /// The JavaScript implementation (`CONFORMANCE_JS_DIR`).
    Js,
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
        })
    }
}

/// What a process does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Serves WebSocket clients (never compacts: Rust servers run `--no-worker`).
    Server,
    /// Compacts streams into storage.
    Worker,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Worker => "worker",
        })
    }
}

/// How long a process may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// A worker that never prints a readiness line counts as ready once it has run
/// this long without exiting (for JavaScript implementations other than ours).
const WORKER_GRACE: Duration = Duration::from_secs(2);

/// Lines of output kept per process.
const LOG_LINES: usize = 5000;

/// What to start: program, arguments, working directory and full environment.
pub(crate) struct Launch {
    pub lang: Lang,
    pub role: Role,
    pub index: usize,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
}

/// A running server or worker of the fleet.
pub struct Member {
    lang: Lang,
    role: Role,
    name: String,
    port: Option<u16>,
    process: Mutex<ServiceProcess>,
    log: Arc<Mutex<VecDeque<String>>>,
}

impl Member {
    /// Start the process; servers get a free port in `PORT` (retried on another
    /// port if the process exits before it listens), and the call returns once a
    /// server process listens on its port, or once a worker printed `worker started`
    /// (or ran for 2 s without exiting, for implementations that print nothing).
    pub(crate) async fn start(launch: &Launch) -> Result<Self> {
        let mut last_error = None;
        for _ in 0..3 {
            match Self::try_start(launch).await {
                Ok(member) => return Ok(member),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("could not start")))
    }

    async fn try_start(launch: &Launch) -> Result<Self> {
        let name = format!("{}-{}-{}", launch.lang, launch.role, launch.index);
        let port = match launch.role {
            Role::Server => Some(testkit::free_port()?),
            Role::Worker => None,
        };
        let mut command = Command::new(&launch.program);
        command
            .args(&launch.args)
            .current_dir(&launch.cwd)
            .env_clear()
            .envs(inherited_env())
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(port) = port {
            command.env("PORT", port.to_string());
        }
        let mut process = ServiceProcess::spawn_with_stdio(&name, command)?;
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (lines_tx, lines) = mpsc::channel();
        if let Some(child) = process.child_mut() {
            if let Some(out) = child.stdout.take() {
                collect(&name, "out", out, Arc::clone(&log), lines_tx.clone());
            }
            if let Some(err) = child.stderr.take() {
                collect(&name, "err", err, Arc::clone(&log), lines_tx);
            }
        }
        let member = Self {
            lang: launch.lang,
            role: launch.role,
            name,
            port,
            process: Mutex::new(process),
            log,
        };
        member.wait_ready(&lines).await?;
        Ok(member)
    }

    async fn wait_ready(&self, lines: &mpsc::Receiver<String>) -> Result<()> {
        let started = tokio::time::Instant::now();
        loop {
            let mut said_ready = false;
            while let Ok(line) = lines.try_recv() {
                said_ready |= line.to_ascii_lowercase().contains("worker started");
            }
            if let Some(status) = self.exit_status() {
                bail!(
                    "{} exited with {status} before it was ready; output:\n{}",
                    self.name,
                    self.logs()
                );
            }
            match (self.role, self.port) {
                // The port must be held by this process: a connection alone
                // may reach another process that took the port first (free
                // ports are handed to every `bind(0)` on the machine), while
                // this one fails to bind and exits.
                (Role::Server, Some(port)) => {
                    if self
                        .pid()
                        .is_some_and(|pid| testkit::group_listens_on(pid, port))
                    {
                        return Ok(());
                    }
                }
                _ => {
                    if said_ready || started.elapsed() > WORKER_GRACE {
                        return Ok(());
                    }
                }
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}; output:\n{}",
                    self.name,
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Which implementation this is.
    pub fn lang(&self) -> Lang {
        self.lang
    }

    /// Server or worker.
    pub fn role(&self) -> Role {
        self.role
    }

    /// A name for messages, e.g. `js-server-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The port a server listens on (`None` for workers).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// `ws://127.0.0.1:{port}`, the base a y-websocket provider is given.
    pub fn ws_base(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port.unwrap_or(0))
    }

    /// `ws://127.0.0.1:{port}/{room}` (the room as the raw path segment).
    pub fn url(&self, room: &str) -> String {
        format!("{}/{room}", self.ws_base())
    }

    /// The exit status if the process ended by itself (a crash included).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        process.try_exit_status().ok().flatten()
    }

    /// The operating system's process id while it runs, so that tools such as
    /// the benchmark can read its CPU time and memory from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        let process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        process.pid()
    }

    /// Whether the process still runs.
    pub fn is_running(&self) -> bool {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        process.child_mut().is_some() && process.try_exit_status().ok().flatten().is_none()
    }

    /// Kill it at once (SIGKILL), as a crash would.
    pub fn kill(&self) {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        process.kill();
    }

    /// Everything it printed so far (stdout lines marked `out|`, stderr `err|`).
    pub fn logs(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The variables passed through from the test's environment; everything else is
/// cleared so that settings of the machine (e.g. `REDIS_URL`) cannot leak in.
fn inherited_env() -> Vec<(String, String)> {
    ["PATH", "HOME", "LANG", "TMPDIR", "RUST_BACKTRACE"]
        .iter()
        .filter_map(|name| std::env::var(name).ok().map(|v| (name.to_string(), v)))
        .collect()
}

/// Copy a process stream into the log (and to stderr with `CONFORMANCE_VERBOSE`),
/// forwarding each line to `lines` for the readiness check.
fn collect(
    name: &str,
    stream: &'static str,
    source: impl Read + Send + 'static,
    log: Arc<Mutex<VecDeque<String>>>,
    lines: mpsc::Sender<String>,
) {
    let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some();
    let name = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(source).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(&line);
            if verbose {
                eprintln!("[{name} {stream}] {line}");
            }
            let _ = lines.send(line.clone());
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() == LOG_LINES {
                log.pop_front();
            }
            log.push_back(format!("{stream}| {line}"));
        }
    });
}

/// The text of a line without terminal colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
