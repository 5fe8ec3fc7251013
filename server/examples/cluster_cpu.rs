//! Redis CPU per message on one Redis and on a 3-master Redis Cluster under
//! the same load: two instances (in this process), `--rooms` rooms each with a
//! writer on the first instance and a reader on the second, writers together
//! sending `--rate` updates a second. After a warm-up, the CPU time each
//! Redis process spent in the measured window (`/proc/PID/stat`) is divided by
//! the messages sent in it; printed per node.
//!
//! ```sh
//! cargo run --release -p websocket --example cluster_cpu
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use testkit::{RedisCluster, RedisServer, YClient};
use websocket::app::{Instance, Roles};
use websocket::config::Config;

#[derive(Parser)]
struct Options {
    /// Rooms, each with one writer and one reader.
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// Updates sent per second by all writers together.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Seconds of load before the measured window.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse();
    let data = tempfile::tempdir()?;

    let redis = RedisServer::start()?;
    let pid = redis.pid().context("redis has no pid")?;
    let single = run(
        &options,
        &redis.url(),
        false,
        &[(redis.port(), pid)],
        data.path(),
    )
    .await?;
    drop(redis);

    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await??;
    let masters = cluster.masters()?;
    let nodes: Vec<(u16, u32)> = cluster.pids();
    let clustered = run(&options, &cluster.urls(), true, &nodes, data.path()).await?;

    println!(
        "load: {} rooms, {} msg/s for {} s, 2 instances",
        options.rooms, options.rate, options.duration
    );
    print_run("one Redis", &single, &[]);
    print_run("3-master cluster", &clustered, &masters);
    Ok(())
}

/// What one run measured: messages sent in the window, and per node its
/// port and CPU seconds in the window.
struct Run {
    sent: u64,
    cpu: Vec<(u16, f64)>,
}

fn print_run(name: &str, run: &Run, masters: &[u16]) {
    let per = |seconds: f64| seconds * 1e6 / run.sent.max(1) as f64;
    println!("{name}: {} messages in the window", run.sent);
    for (port, seconds) in &run.cpu {
        let role = if masters.is_empty() {
            "redis"
        } else if masters.contains(port) {
            "master"
        } else {
            "replica"
        };
        println!(
            "  {role} :{port}: {seconds:.2} s CPU, {:.2} µs per message",
            per(*seconds)
        );
    }
    let total: f64 = run.cpu.iter().map(|(_, s)| s).sum();
    let busiest = run.cpu.iter().map(|(_, s)| *s).fold(0.0, f64::max);
    println!(
        "  all nodes: {:.2} µs per message; busiest node: {:.2} µs per message",
        per(total),
        per(busiest)
    );
}

async fn run(
    options: &Options,
    url: &str,
    cluster: bool,
    nodes: &[(u16, u32)],
    data: &Path,
) -> Result<Run> {
    let mut config = Config::from_toml(&format!(
        "[storage]\nbackend = \"fs\"\ndir = {:?}\n",
        data.join(if cluster { "cluster" } else { "single" })
            .display()
            .to_string()
    ))
    .map_err(anyhow::Error::msg)?;
    config.websocket.port = 0;
    config.websocket.host = [127, 0, 0, 1].into();
    config.websocket.max_messages_per_second = 0;
    config.redis.url = Some(url.to_string());
    config.redis.cluster = cluster;
    let roles = Roles {
        serve: true,
        worker: true,
    };
    let one = Instance::start(&config, roles).await?;
    let two = Instance::start(&config, roles).await?;
    let address = |instance: &Instance| instance.local_addr.context("instance serves");
    let (a, b) = (address(&one)?, address(&two)?);

    let mut clients = Vec::new();
    for room in 0..options.rooms {
        let writer = YClient::connect(&format!("ws://{a}/cpu-{room}")).await?;
        let reader = YClient::connect(&format!("ws://{b}/cpu-{room}")).await?;
        writer.wait_synced(Duration::from_secs(10)).await?;
        reader.wait_synced(Duration::from_secs(10)).await?;
        clients.push((writer, reader));
    }

    let sent = Arc::new(AtomicU64::new(0));
    let period = Duration::from_secs_f64(options.rooms as f64 / options.rate as f64);
    let total = Duration::from_secs(options.warmup + options.duration);
    let rooms = options.rooms;
    let mut writers = Vec::new();
    for (i, (writer, reader)) in clients.into_iter().enumerate() {
        let sent = Arc::clone(&sent);
        writers.push(tokio::spawn(async move {
            // Writers start spread over one period.
            tokio::time::sleep(period.mul_f64(i as f64 / rooms as f64)).await;
            let mut tick = tokio::time::interval(period);
            let started = tokio::time::Instant::now();
            while started.elapsed() < total {
                tick.tick().await;
                writer.text_insert("t", 0, "0123456789abcdef");
                sent.fetch_add(1, Ordering::Relaxed);
            }
            drop(reader);
        }));
    }
    tokio::time::sleep(Duration::from_secs(options.warmup)).await;
    let before = cpu_seconds(nodes)?;
    let sent_before = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(options.duration)).await;
    let after = cpu_seconds(nodes)?;
    let sent_in_window = sent.load(Ordering::Relaxed) - sent_before;
    for writer in writers {
        writer.await?;
    }
    let _ = one.shutdown().await;
    let _ = two.shutdown().await;
    Ok(Run {
        sent: sent_in_window,
        cpu: nodes
            .iter()
            .zip(before.iter().zip(after.iter()))
            .map(|((port, _), (b, a))| (*port, a - b))
            .collect(),
    })
}

/// CPU seconds (user and system) each process has used so far.
fn cpu_seconds(nodes: &[(u16, u32)]) -> Result<Vec<f64>> {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    nodes
        .iter()
        .map(|(_, pid)| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
            let rest = stat.rsplit_once(')').context("stat")?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let user: f64 = fields.get(11).context("utime")?.parse()?;
            let system: f64 = fields.get(12).context("stime")?.parse()?;
            Ok((user + system) / ticks)
        })
        .collect()
}
