//! Side-by-side benchmark of the Rust server and the JavaScript reference
//! server on the same workloads and the same machine: CPU per message (server
//! and its Redis), delivery latency, memory per idle connection and the initial
//! sync of a large document, against the project's targets.
//!
//! ```sh
//! cargo run --release -p conformance --example bench
//! cargo run --release -p conformance --example bench -- --only rust --scenario rate5000 --hold 60
//! ```
//!
//! Each scenario runs on a fresh fleet (its own `redis-server` and one server),
//! the Rust server's scenarios first, then the JavaScript server's, so the two
//! never share traffic or compete for the cores. The numbers are printed, never
//! asserted: the program fails only when something does not run. See
//! `docs/benchmark.md`.

mod client;
mod idle;
mod load;
mod procfs;
mod storm;
mod sync;
mod table;
mod text_sync;

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use conformance::{Fleet, Lang, Member};

use crate::load::{Shape, Timing};
use crate::procfs::Measured;
use crate::table::{Metric, Results, Target};

/// Open files needed: 10 000 idle connections, each an open file in this
/// process and in the server, plus some for everything else.
const OPEN_FILES_NEEDED: u64 = 10_500;

/// One row group of the table.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scenario {
    /// 20 rooms × 10 sending clients and 1 observer each, at `rate` updates
    /// per second in total.
    Rate { rate: u32, deflate: bool },
    /// 1 000 rooms × 2 clients, each sending 1 update per second and observing
    /// the other.
    Rooms1000,
    /// Memory per idle connection at 1 000, 5 000 and 10 000 connections.
    Memory,
    /// Initial sync of a 5 MB document.
    Sync5Mb,
    /// Bytes on the wire of the initial sync of a 1.28 MB text, to a client
    /// offering permessage-deflate.
    SyncText,
    /// 150 clients opening a closed room with a 20 MB document at once.
    JoinStorm,
}

const SCENARIOS: [Scenario; 9] = [
    Scenario::Rate {
        rate: 2000,
        deflate: false,
    },
    Scenario::Rate {
        rate: 2000,
        deflate: true,
    },
    Scenario::Rate {
        rate: 5000,
        deflate: false,
    },
    Scenario::Rate {
        rate: 5000,
        deflate: true,
    },
    Scenario::Rooms1000,
    Scenario::Memory,
    Scenario::Sync5Mb,
    Scenario::SyncText,
    Scenario::JoinStorm,
];

impl Scenario {
    fn name(&self) -> String {
        match self {
            Scenario::Rate { rate, deflate } => {
                format!("rate{rate}{}", if *deflate { "-deflate" } else { "" })
            }
            Scenario::Rooms1000 => "rooms1000".into(),
            Scenario::Memory => "memory".into(),
            Scenario::Sync5Mb => "sync5mb".into(),
            Scenario::SyncText => "synctext".into(),
            Scenario::JoinStorm => "joinstorm".into(),
        }
    }

    /// How many times less server CPU per message than the reference's the
    /// target asks for: 3× at 5 000 msg/s and 1 000 rooms, 1.5× at 2 000.
    fn cpu_ratio(&self) -> f64 {
        match self {
            Scenario::Rate { rate: 2000, .. } => 1.5,
            _ => 3.0,
        }
    }

    fn shape(&self) -> Option<Shape> {
        match *self {
            Scenario::Rate { rate, deflate } => Some(Shape {
                rooms: 20,
                senders: 10,
                observers: 1,
                senders_observe: false,
                rate: f64::from(rate),
                deflate,
            }),
            Scenario::Rooms1000 => Some(Shape {
                rooms: 1000,
                senders: 2,
                observers: 0,
                senders_observe: true,
                rate: 2000.0,
                deflate: false,
            }),
            Scenario::Memory | Scenario::Sync5Mb | Scenario::SyncText | Scenario::JoinStorm => None,
        }
    }
}

/// Command-line flags.
#[derive(Debug, Clone)]
struct Options {
    langs: Vec<Lang>,
    scenarios: Vec<Scenario>,
    timing: Timing,
    /// Set by `--hold`: the measured window of load scenarios lasts this long.
    hold: Option<f64>,
}

const USAGE: &str = "usage: bench [--only rust|js] [--scenario NAME]... [--duration SECONDS] [--warmup SECONDS] [--hold SECONDS]
scenarios: rate2000 rate2000-deflate rate5000 rate5000-deflate rooms1000 memory sync5mb synctext joinstorm (default: all)
--hold SECONDS: the measured window of load scenarios lasts SECONDS (attach a profiler to the printed server pid)";

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            langs: vec![Lang::Rust, Lang::Js],
            scenarios: Vec::new(),
            timing: Timing {
                warmup: 2.0,
                duration: 10.0,
            },
            hold: None,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let seconds = || -> Result<f64> {
                match value.parse::<f64>() {
                    Ok(s) if s > 0.0 => Ok(s),
                    _ => bail!("{flag} {value}: not a positive number of seconds"),
                }
            };
            match flag.as_str() {
                "--only" => {
                    options.langs = match value.as_str() {
                        "rust" => vec![Lang::Rust],
                        "js" => vec![Lang::Js],
                        _ => bail!("--only {value}: expected rust or js"),
                    }
                }
                "--scenario" => {
                    for name in value.split(',') {
                        let scenario = SCENARIOS
                            .iter()
                            .find(|s| s.name() == name)
                            .with_context(|| format!("unknown scenario {name}\n{USAGE}"))?;
                        options.scenarios.push(*scenario);
                    }
                }
                "--duration" => options.timing.duration = seconds()?,
                "--warmup" => options.timing.warmup = seconds()?,
                "--hold" => options.hold = Some(seconds()?),
                _ => bail!("unknown flag {flag}\n{USAGE}"),
            }
        }
        if options.scenarios.is_empty() {
            options.scenarios = SCENARIOS.to_vec();
        }
        if let Some(hold) = options.hold {
            options.timing.duration = hold;
        }
        Ok(options)
    }
}

fn ms(value: f64) -> String {
    format!("{value:.1} ms")
}

fn us(value: f64) -> String {
    format!("{value:.1} µs")
}

/// Run one load scenario and turn its outcome into metrics.
async fn measure_load(
    server: &Member,
    measured: &Measured,
    scenario: &Scenario,
    shape: &Shape,
    timing: &Timing,
) -> Result<Vec<Metric>> {
    let outcome = load::run(
        &server.ws_base(),
        &format!("{}-", scenario.name()),
        shape,
        timing,
        measured,
    )
    .await?;
    let report = &outcome.report;
    let cpu = &outcome.cpu;
    let sent = report.sent.max(1) as f64;
    // Every update reaches every connection of its room, its sender included.
    let deliveries = sent * (shape.senders + shape.observers) as f64;
    eprintln!(
        "  {} connections, {} updates sent in {:.1} s, observers done {:.2} s after the last; \
         server CPU {:.2} s (user {:.2}, system {:.2}; {:.1} µs per delivered update), Redis CPU {:.2} s; \
         load generator CPU {:.2} s, max send lag {:.1} ms; {} frames; latency max {}; {} connections closed by the server; \
         permessage-deflate accepted on {} of {} connections",
        report.connections,
        report.sent,
        report.window_secs,
        report.drain_secs,
        cpu.server.total(),
        cpu.server.user,
        cpu.server.system,
        cpu.server.total() * 1e6 / deliveries,
        cpu.redis.total(),
        report.client_cpu_secs,
        report.max_send_lag_ms,
        report.frames,
        report.max_ms.map_or_else(|| "-".into(), ms),
        report.closed,
        report.deflated,
        report.connections,
    );
    let server_us = cpu.server.total() * 1e6 / sent;
    let redis_us = cpu.redis.total() * 1e6 / sent;
    let latency = |name: &str, target, value: Option<f64>| match value {
        Some(v) => Metric::new(name, target, v, ms(v)),
        None => Metric::missing(name, target),
    };
    let delivery = report.delivery_ratio.unwrap_or(0.0);
    let bytes_per_delivery = report.window_bytes as f64 / deliveries;
    let frames_per_sent = report.window_frames as f64 / sent;
    Ok(vec![
        Metric::new(
            "bytes on the wire per delivered update",
            Target::AtMostJsOver(1.0),
            bytes_per_delivery,
            format!("{bytes_per_delivery:.1} B"),
        ),
        Metric::new(
            "frames received per sent message",
            Target::None,
            frames_per_sent,
            format!("{frames_per_sent:.2}"),
        ),
        Metric::new(
            "CPU per sent message, server",
            Target::AtMostJsOver(scenario.cpu_ratio()),
            server_us,
            us(server_us),
        ),
        Metric::new(
            "CPU per sent message, its Redis",
            match scenario {
                Scenario::Rooms1000 => Target::AtMostJsOver(3.0),
                _ => Target::None,
            },
            redis_us,
            us(redis_us),
        ),
        latency("latency p50", Target::AtMost(5.0), report.p50_ms),
        latency("latency p99", Target::AtMostJsOver(1.0), report.p99_ms),
        Metric::new(
            "delivery ratio",
            Target::Equals(1.0),
            delivery,
            format!("{delivery:.4} ({}/{})", report.seen, report.expected),
        ),
    ])
}

async fn measure_memory(server: &Member, pid: u32) -> Result<Vec<Metric>> {
    let outcome = idle::run(server, pid).await?;
    if let Some(failure) = &outcome.failure {
        eprintln!("  opening connections stopped: {failure}");
    }
    let levels: Vec<String> = outcome
        .levels
        .iter()
        .map(|(n, kib)| format!("{:.1} MiB at {n}", *kib as f64 / 1024.0))
        .collect();
    eprintln!(
        "  resident memory {:.1} MiB before connections, {}",
        outcome.rss_before_kib as f64 / 1024.0,
        levels.join(", ")
    );
    if let (Some((n0, kib0)), Some((n1, kib1))) = (outcome.levels.first(), outcome.levels.last()) {
        if n1 > n0 {
            eprintln!(
                "  marginal memory per connection from {n0} to {n1}: {:.1} KiB",
                kib1.saturating_sub(*kib0) as f64 / (n1 - n0) as f64
            );
        }
    }
    let before = outcome.rss_before_kib as f64 / 1024.0;
    let mut metrics = vec![Metric::new(
        "resident memory before connections",
        Target::None,
        before,
        format!("{before:.1} MiB"),
    )];
    for level in idle::LEVELS {
        let name = format!("memory per idle connection, {level} connections");
        metrics.push(match outcome.per_connection_kib(level) {
            Some(kib) => Metric::new(
                name,
                Target::AtMostJsOver(2.0),
                kib,
                format!("{kib:.1} KiB"),
            ),
            None => Metric::missing(name, Target::AtMostJsOver(2.0)),
        });
    }
    let target = idle::LEVELS[idle::LEVELS.len() - 1];
    metrics.push(Metric::new(
        "connections held",
        Target::AtLeast(target as f64),
        outcome.held as f64,
        outcome.held.to_string(),
    ));
    Ok(metrics)
}

async fn measure_sync(server: &Member) -> Result<Vec<Metric>> {
    let outcome = sync::run(server).await?;
    eprintln!(
        "  document: {:.1} MB v1 update, {} connects per variant",
        outcome.document_bytes as f64 / 1e6,
        sync::REPETITIONS
    );
    let row = |name: &str, times: &sync::Times| {
        Metric::new(
            name,
            Target::AtMostJsOver(3.0),
            times.median(),
            format!(
                "{:.0} / {:.0} / {:.0} ms",
                times.min(),
                times.median(),
                times.max()
            ),
        )
    };
    Ok(vec![
        row(
            "5 MB initial sync, room open (min / median / max)",
            &outcome.room_open,
        ),
        row(
            "5 MB initial sync, room closed (min / median / max)",
            &outcome.room_closed,
        ),
    ])
}

async fn measure_text_sync(server: &Member) -> Result<Vec<Metric>> {
    let outcome = text_sync::run(server).await?;
    eprintln!(
        "  {} document bytes as messages, {} bytes read, extensions {:?}",
        outcome.document_bytes, outcome.bytes_read, outcome.extensions
    );
    Ok(vec![Metric::new(
        "1.28 MB text initial sync, bytes on the wire (deflate offered)",
        Target::AtMostJsOver(1.0),
        outcome.bytes_read as f64,
        format!("{} B", outcome.bytes_read),
    )])
}

async fn measure_storm(server: &Member, pid: u32) -> Result<Vec<Metric>> {
    let outcome = storm::run(server, pid).await?;
    let mb = outcome.document_bytes as f64 / 1e6;
    eprintln!(
        "  document {mb:.1} MB; {} of {} synced; peak RSS {:.0} MiB before the storm, {} after{}",
        outcome.synced,
        storm::JOINERS,
        outcome.peak_before_kib as f64 / 1024.0,
        outcome.peak_after_kib.map_or_else(
            || "- (the server is gone)".into(),
            |k| format!("{:.0} MiB", k as f64 / 1024.0)
        ),
        outcome
            .failure
            .as_ref()
            .map_or_else(String::new, |f| format!("; first failure: {f}")),
    );
    let pick = |q: f64| {
        let times = &outcome.times_ms;
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
    };
    let mut metrics = vec![Metric::new(
        "join storm: clients synced",
        Target::AtLeast(storm::JOINERS as f64),
        outcome.synced as f64,
        format!("{} of {}", outcome.synced, storm::JOINERS),
    )];
    let p50 = pick(0.5);
    metrics.push(match (p50, pick(1.0)) {
        (Some(p50), Some(max)) => Metric::new(
            "join storm: sync time p50 / max",
            Target::AtMostJsOver(2.0),
            p50,
            format!("{:.1} / {:.1} s", p50 / 1000.0, max / 1000.0),
        ),
        _ => Metric::missing("join storm: sync time p50 / max", Target::AtMostJsOver(2.0)),
    });
    let limit_mib = 3.0 * mb * 1e6 / 1_048_576.0 + 64.0;
    metrics.push(match outcome.peak_after_kib {
        Some(kib) => Metric::new(
            "join storm: server peak RSS (VmHWM)",
            Target::AtMost(limit_mib),
            kib as f64 / 1024.0,
            format!("{:.0} MiB", kib as f64 / 1024.0),
        ),
        None => Metric::missing(
            "join storm: server peak RSS (VmHWM)",
            Target::AtMost(limit_mib),
        ),
    });
    Ok(metrics)
}

/// Start a fresh fleet of one `lang` server and run `scenario` on it.
async fn measure(lang: Lang, scenario: &Scenario, options: &Options) -> Result<Vec<Metric>> {
    let builder = match lang {
        Lang::Rust => {
            // `WS_*` settings of the benchmark's environment reach the Rust
            // server (to compare settings; the default run sets none).
            std::env::vars()
                .filter(|(name, _)| name.starts_with("WS_"))
                .fold(
                    Fleet::builder().rust_servers(1),
                    |builder, (name, value)| builder.env(&name, &value),
                )
        }
        Lang::Js => Fleet::builder().js_servers(1),
    };
    let fleet = builder
        .start()
        .await
        .with_context(|| format!("starting the {lang} server"))?;
    let server = fleet.server(lang, 0)?;
    let pid = server.pid().context("the server has no process id")?;
    let redis = fleet.redis().pid().context("Redis has no process id")?;
    eprintln!(
        "{lang} {}: server pid {pid}, Redis pid {redis}",
        scenario.name()
    );
    let measured = Measured::new(pid, redis);
    let result = match (scenario, scenario.shape()) {
        (_, Some(shape)) => {
            measure_load(server, &measured, scenario, &shape, &options.timing).await
        }
        (Scenario::Memory, None) => measure_memory(server, pid).await,
        (Scenario::SyncText, None) => measure_text_sync(server).await,
        // A server that falls over in the storm is a result, not a failure.
        (Scenario::JoinStorm, None) => return measure_storm(server, pid).await,
        _ => measure_sync(server).await,
    };
    let result = result.and_then(|metrics| {
        if server.is_running() {
            Ok(metrics)
        } else {
            bail!("the {lang} server stopped during the run")
        }
    });
    result.with_context(|| {
        let logs = fleet.logs();
        let tail: Vec<&str> = logs.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{lang} server output (last lines):\n{}", tail.join("\n"))
    })
}

async fn run(options: Options) -> Result<bool> {
    if !std::path::Path::new("/proc/self/stat").exists() {
        bail!("the benchmark reads /proc: Linux only");
    }
    if options.scenarios.contains(&Scenario::Memory) {
        procfs::raise_open_files_limit(OPEN_FILES_NEEDED)?;
    }
    let mut results = Results::default();
    for lang in &options.langs {
        for scenario in &options.scenarios {
            let outcome = measure(*lang, scenario, &options)
                .await
                .map_err(|err| format!("{err:#}"));
            if let Err(err) = &outcome {
                eprintln!("  failed: {err}");
            }
            results.add(&scenario.name(), *lang, outcome);
        }
    }
    let order: Vec<String> = options.scenarios.iter().map(Scenario::name).collect();
    let order: Vec<&str> = order.iter().map(String::as_str).collect();
    println!();
    println!(
        "{} cores; load scenarios: {:.0} s warm-up, {:.0} s measured",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        options.timing.warmup,
        options.timing.duration,
    );
    println!();
    println!("{}", results.render(&order));
    let failures = results.failures();
    for failure in &failures {
        eprintln!("failed: {failure}");
    }
    Ok(failures.is_empty())
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse() {
        Ok(options) => options,
        Err(err) => {
            eprintln!("bench: {err:#}");
            return ExitCode::from(2);
        }
    };
    // Dropping the run on SIGINT or SIGTERM drops its fleet, which kills the
    // servers and Redis (they run in their own process groups and would not see
    // the signal), and the load generator.
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                eprintln!("bench: cannot watch SIGTERM: {err}");
                return ExitCode::FAILURE;
            }
        };
    let outcome = tokio::select! {
        outcome = run(options) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = terminate.recv() => Err(anyhow::anyhow!("terminated")),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
