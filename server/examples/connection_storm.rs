//! Connection storm: N WebSocket connections (5 000 by default, `--connections`)
//! opened at once on one `websocket` server process with a throwaway
//! redis-server; each waits for its sync answer. Prints how many were answered,
//! the time until the last answer, and the server's resident memory before and
//! with every connection open. Run it through `scripts/connection_storm.sh`
//! (it raises the open-file limit and builds the server).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use testkit::{free_port, open_at_once, RedisServer, ServiceProcess};

#[derive(Parser)]
struct Options {
    /// Connections opened at once.
    #[arg(long, default_value_t = 5_000)]
    connections: usize,
    /// Rooms they are spread over.
    #[arg(long, default_value_t = 10)]
    rooms: usize,
    /// The server binary (default: `$WEBSOCKET_BIN`, else `websocket` in the
    /// directory above this program's, where cargo puts it).
    #[arg(long)]
    server: Option<PathBuf>,
}

/// Resident memory of a process in kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .context("VmRSS missing")
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse();
    let bin = match options
        .server
        .or_else(|| std::env::var_os("WEBSOCKET_BIN").map(PathBuf::from))
    {
        Some(bin) => bin,
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above this program")?
            .join("websocket"),
    };
    let data = tempfile::tempdir()?;
    let redis = RedisServer::start()?;
    let port = free_port()?;
    let mut command = Command::new(&bin);
    command
        .args(["serve", "--no-worker"])
        .env("REDIS_URL", redis.url())
        .env_remove("REDIS")
        .env("STORAGE_BACKEND", "fs")
        .env("STORAGE_DIR", data.path())
        .env("WS_HOST", "127.0.0.1")
        .env("WS_PORT", port.to_string())
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    let mut server = ServiceProcess::spawn_with_stdio("websocket", command)?;
    server.wait_listening(port, Duration::from_secs(30))?;
    let pid = server.pid().context("server pid")?;
    let before = rss_kb(pid)?;

    let urls = (0..options.connections)
        .map(|i| format!("ws://127.0.0.1:{port}/storm{}", i % options.rooms.max(1)))
        .collect();
    let storm = open_at_once(urls, Duration::from_secs(60)).await;
    let during = rss_kb(pid)?;
    println!(
        "{} of {} connections opened at once answered; the last after {:.2} s",
        storm.answered,
        options.connections,
        storm.elapsed.as_secs_f64()
    );
    println!(
        "server RSS: {:.1} MB before, {:.1} MB with them open ({:.1} kB per connection)",
        before as f64 / 1024.0,
        during as f64 / 1024.0,
        (during.saturating_sub(before)) as f64 / options.connections.max(1) as f64
    );
    let answered = storm.answered;
    drop(storm);
    server.check_running()?;
    if answered != options.connections {
        bail!("{answered} of {} connections answered", options.connections);
    }
    Ok(())
}
