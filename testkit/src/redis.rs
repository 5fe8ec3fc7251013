//! A throwaway `redis-server`.

use std::process::Command;
use std::time::Duration;

use anyhow::Result;

use crate::process::{free_port, ServiceProcess};

/// A `redis-server` without persistence on a free port; stopped on drop.
pub struct RedisServer {
    port: u16,
    process: ServiceProcess,
}

impl RedisServer {
    /// Start a new server and wait until it listens; on another port when
    /// another process took the first one.
    pub fn start() -> Result<Self> {
        let mut last = None;
        for _ in 0..3 {
            let port = free_port()?;
            match Self::spawn(port) {
                Ok(process) => return Ok(Self { port, process }),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("redis-server did not start")))
    }

    fn spawn(port: u16) -> Result<ServiceProcess> {
        spawn_redis(port, Command::new("redis-server"))
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id while it runs, for reading its resource use from `/proc`.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Stop the server (its data is lost, as after a crash without persistence).
    pub fn stop(&mut self) {
        self.process.kill();
    }

    /// Start it again on the same port after [`RedisServer::stop`].
    pub fn restart(&mut self) -> Result<()> {
        self.process.kill();
        self.process = Self::spawn(self.port)?;
        Ok(())
    }

    /// Run `redis-cli` against this server and return its stdout.
    pub fn cli(&self, args: &[&str]) -> Result<String> {
        let output = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Append each of `messages` to stream `key` as an entry with field `m`, as
/// servers do, in pipelines of 10 000: the fast way to build a long stream.
pub async fn xadd_all(
    conn: &mut ::redis::aio::MultiplexedConnection,
    key: &str,
    messages: &[Vec<u8>],
) -> ::redis::RedisResult<()> {
    for chunk in messages.chunks(10_000) {
        let mut pipe = ::redis::pipe();
        for message in chunk {
            pipe.cmd("XADD")
                .arg(key)
                .arg("*")
                .arg("m")
                .arg(message.as_slice())
                .ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// `XLEN` of a stream (0 when it does not exist), for tests that watch what
/// servers and workers do to it.
pub async fn xlen(conn: &mut ::redis::aio::MultiplexedConnection, key: &str) -> u64 {
    ::redis::cmd("XLEN")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap_or_else(|err| panic!("XLEN {key}: {err}"))
}

/// Start `command` (a `redis-server` with any arguments of the caller's) on
/// `port` of loopback, without persistence, and wait until it listens.
pub(crate) fn spawn_redis(port: u16, mut command: Command) -> Result<ServiceProcess> {
    command.args([
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
    ]);
    let mut process = ServiceProcess::spawn("redis-server", command)?;
    process.wait_listening(port, Duration::from_secs(10))?;
    Ok(process)
}
