//! The load scenarios: the Node load generator (`js-reference/bench/load.js`)
//! sends a fixed aggregate rate of small updates to one server and measures
//! delivery latency on observer connections; this side reads the server's and
//! its Redis's CPU time at the edges of the generator's measured window.
//!
//! The generator is in Node because `ws` offers permessage-deflate as browsers
//! do (tokio-tungstenite cannot). It prints one JSON object per line: events
//! `connected`, `start`, `end`, then the `result`.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use conformance::paths;
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

use crate::procfs::{CpuReading, Measured};

/// How long the generator may stay silent (connecting thousands of clients
/// included) before the run counts as stuck.
const SILENCE_LIMIT: Duration = Duration::from_secs(180);

/// The shape of one load: who sends, who observes, how fast.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub rooms: usize,
    /// Sending connections per room.
    pub senders: usize,
    /// Connections per room that only observe.
    pub observers: usize,
    /// Whether senders also observe the other senders of their room.
    pub senders_observe: bool,
    /// Updates per second, over all senders.
    pub rate: f64,
    /// Whether clients offer permessage-deflate (and compress what they send).
    pub deflate: bool,
}

/// Seconds of warm-up load, then of measured load.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub warmup: f64,
    pub duration: f64,
}

/// What the generator reports (see `load.js`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub connections: u64,
    /// Updates sent in the measured window.
    pub sent: u64,
    /// Seconds of sending in the measured window.
    pub window_secs: f64,
    /// Seconds from the last send until the observers saw every measured
    /// update (or gave up waiting); the CPU window includes them.
    pub drain_secs: f64,
    /// Measured updates the observers should have seen, and saw.
    pub expected: u64,
    pub seen: u64,
    pub delivery_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// How far the generator fell behind its schedule (a busy generator
    /// inflates latencies).
    pub max_send_lag_ms: f64,
    pub frames: u64,
    /// Frames the clients received, and bytes their sockets read (frame
    /// headers included, compressed where deflate was agreed), in the
    /// measured window.
    #[serde(default)]
    pub window_frames: u64,
    #[serde(default)]
    pub window_bytes: u64,
    /// Connections the server closed during the run.
    pub closed: u64,
    /// Connections on which the server accepted permessage-deflate.
    pub deflated: u64,
    pub client_cpu_secs: f64,
}

/// A finished load: the generator's report and the CPU spent in its window.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: Report,
    pub cpu: CpuReading,
}

/// Run the generator against `base` (`ws://host:port`) and read `measured`'s
/// CPU time at the start and end of the measured window.
pub async fn run(
    base: &str,
    room_prefix: &str,
    shape: &Shape,
    timing: &Timing,
    measured: &Measured,
) -> Result<Outcome> {
    let dir = paths::js_reference_dir();
    let config = serde_json::json!({
        "url": base,
        "roomPrefix": room_prefix,
        "rooms": shape.rooms,
        "senders": shape.senders,
        "observers": shape.observers,
        "sendersObserve": shape.senders_observe,
        "rate": shape.rate,
        "warmup": timing.warmup,
        "duration": timing.duration,
        "deflate": shape.deflate,
    });
    let mut child = Command::new("node")
        .arg("bench/load.js")
        .arg(config.to_string())
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting node bench/load.js in {}", dir.display()))?;
    let stdout = child.stdout.take().context("the generator's stdout")?;
    let mut stderr = child.stderr.take().context("the generator's stderr")?;
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });

    let mut lines = BufReader::new(stdout).lines();
    let mut start = None;
    let mut end = None;
    let mut report = None;
    loop {
        let line = match tokio::time::timeout(SILENCE_LIMIT, lines.next_line()).await {
            Ok(line) => line.context("reading the generator's output")?,
            Err(_) => bail!("the load generator said nothing for {SILENCE_LIMIT:?}"),
        };
        let Some(line) = line else { break };
        let message: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("the load generator printed {line:?}"))?;
        match message["event"].as_str() {
            Some("start") => start = Some(measured.read()?),
            Some("end") => end = Some(measured.read()?),
            _ => {}
        }
        if let Some(result) = message.get("result") {
            report = Some(Report::deserialize(result).context("the generator's result")?);
        }
    }
    let status = child.wait().await?;
    let errors = errors.await.unwrap_or_default();
    if !status.success() {
        bail!("the load generator failed ({status}):\n{}", errors.trim());
    }
    match (start, end, report) {
        (Some(start), Some(end), Some(report)) => Ok(Outcome {
            report,
            cpu: end.since(&start),
        }),
        _ => bail!(
            "the load generator ended without a measured window:\n{}",
            errors.trim()
        ),
    }
}
