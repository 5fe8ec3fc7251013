//! Side-by-side benchmark of the Rust server and the JavaScript reference
//! (y-redis 0.1.6) on the same workload and the same machine: memory per
//! connection and CPU per message, read from `/proc` for each server process.
//!
//! ```sh
//! cargo run --release -p conformance --example bench -- \
//!     --connections 500 --rooms 20 --messages 2000
//! ```
//!
//! Each server gets its own `redis-server`, so the two never share traffic, and
//! they run one after the other, so they never compete for the cores. The numbers
//! are printed, never asserted: the program fails only when something does not
//! run. See `docs/benchmark.md`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use conformance::{Fleet, Lang};
use futures_util::stream::{SplitSink, StreamExt};
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::{Doc, GetString, Map, Text, Transact};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Sink = SplitSink<Socket, Message>;
/// An open connection: the sending half and the task counting what arrives.
type Opened = (Sink, JoinHandle<()>);

/// The targets the Rust server is held to: at most a fifth of the JavaScript
/// server's CPU per message and half its memory per connection.
const CPU_TARGET: f64 = 5.0;
const MEMORY_TARGET: f64 = 2.0;

/// Connections opened at once: enough to be quick, few enough that neither
/// server's accept backlog overflows.
const OPEN_CONCURRENCY: usize = 32;

/// Quiet time before each RSS reading, so that allocations of the previous step
/// (and, for Node, a garbage collection) have settled.
const SETTLE: Duration = Duration::from_secs(2);

/// The key prefix of the Yjs map entry that ends a phase; it survives update
/// merging verbatim (map keys are never squashed), so a byte search finds it.
const MARKER: &[u8] = b"bench-end-";

/// Run parameters (`--name value` flags).
#[derive(Debug, Clone)]
struct Options {
    /// WebSocket connections per server (writers included).
    connections: usize,
    /// Rooms the connections spread over (connection `i` joins room `i % rooms`).
    rooms: usize,
    /// Updates appended in the measured phase, spread over the rooms.
    messages: usize,
    /// Updates appended per second, over all rooms: a steady, bounded load.
    rate: f64,
    /// Updates appended before measuring, so that JIT and caches are warm.
    warmup: usize,
}

impl Options {
    fn parse() -> Result<Self> {
        let mut options = Self {
            connections: 500,
            rooms: 20,
            messages: 2000,
            rate: 200.0,
            warmup: 200,
        };
        let mut args = std::env::args().skip(1);
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                println!(
                    "usage: bench [--connections N] [--rooms R] [--messages M] [--rate PER_SEC] [--warmup W]"
                );
                std::process::exit(0);
            }
            let value = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?;
            let number = || -> Result<usize> {
                value
                    .parse()
                    .with_context(|| format!("{flag} {value}: not a number"))
            };
            match flag.as_str() {
                "--connections" => options.connections = number()?,
                "--rooms" => options.rooms = number()?,
                "--messages" => options.messages = number()?,
                "--warmup" => options.warmup = number()?,
                "--rate" => {
                    options.rate = value
                        .parse()
                        .with_context(|| format!("--rate {value}: not a number"))?
                }
                _ => bail!("unknown flag {flag}"),
            }
        }
        if options.rooms == 0 || options.connections < options.rooms {
            bail!("need at least one room and one connection per room (the room's writer)");
        }
        if options.messages == 0 || options.rate <= 0.0 {
            bail!("--messages and --rate must be positive");
        }
        Ok(options)
    }
}

/// What was measured on one server.
#[derive(Debug, Clone)]
struct Measurement {
    rss_before_kib: u64,
    rss_after_kib: u64,
    /// Server CPU over the measured message phase, in seconds.
    cpu_secs: f64,
    /// The part of `cpu_secs` spent in the kernel (on loopback, a send also
    /// runs the receiving side's TCP processing in the sender's time).
    system_secs: f64,
    /// Its Redis's CPU over the same phase, in seconds.
    redis_cpu_secs: f64,
    /// Updates appended in the phase (end markers included).
    appended: u64,
    /// Updates that reached a client: appended updates times the connections of
    /// their room (a server may merge several into one frame).
    delivered: u64,
    /// WebSocket frames the clients received in the phase.
    frames: u64,
    wall_secs: f64,
}

impl Measurement {
    fn memory_per_connection_kib(&self, connections: usize) -> f64 {
        self.rss_after_kib.saturating_sub(self.rss_before_kib) as f64 / connections as f64
    }

    fn cpu_ms_per_1000_delivered(&self) -> f64 {
        self.cpu_secs * 1000.0 * 1000.0 / self.delivered as f64
    }

    fn cpu_ms_per_1000_appended(&self) -> f64 {
        self.cpu_secs * 1000.0 * 1000.0 / self.appended as f64
    }

    fn redis_ms_per_1000_delivered(&self) -> f64 {
        self.redis_cpu_secs * 1000.0 * 1000.0 / self.delivered as f64
    }
}

/// Counters the connections' readers share.
struct Counters {
    frames: AtomicU64,
    /// Per phase, the connections that saw the phase's end marker of their room.
    done: [AtomicU64; 2],
}

/// `VmRSS` of a process, in KiB: what the process holds in memory now.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in /proc/{pid}/status"))
}

/// User and system CPU time of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name may hold spaces; fields after its closing parenthesis
    // start at field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("malformed /proc/pid/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("malformed /proc/pid/stat")
    };
    Ok((field(11)?, field(12)?))
}

/// Clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot run).
fn clock_ticks_per_sec() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A sync step 1 with an empty state vector, as a new client sends first.
const SYNC_STEP_1: [u8; 4] = [0, 0, 1, 0];

/// A y-websocket update message `00 02 <update>`.
fn update_message(update: &[u8]) -> Vec<u8> {
    let mut message = vec![0, 2];
    let mut n = update.len() as u64;
    while n > 0x7f {
        message.push(0x80 | (n as u8 & 0x7f));
        n >>= 7;
    }
    message.push(n as u8);
    message.extend_from_slice(update);
    message
}

/// The phase whose end marker `frame` carries, if any.
fn marker_phase(frame: &[u8]) -> Option<usize> {
    let at = frame.windows(MARKER.len()).position(|w| w == MARKER)?;
    match frame.get(at + MARKER.len())? {
        b'0' => Some(0),
        b'1' => Some(1),
        _ => None,
    }
}

/// Open one connection, complete the initial sync (send step 1, wait for the
/// server's step 2), then leave a reader that only counts frames and end
/// markers: clients stay as cheap as possible, so the client process disturbs
/// the measured server little.
async fn open(url: String, counters: Arc<Counters>) -> Result<Opened> {
    let (socket, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(&url),
    )
    .await
    .with_context(|| format!("connecting to {url}: timed out"))?
    .with_context(|| format!("connecting to {url}"))?;
    let (mut sink, mut stream) = socket.split();
    sink.send(Message::Binary(SYNC_STEP_1.to_vec().into()))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Binary(frame)))) if frame.starts_with(&[0, 1]) => break,
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(err))) => bail!("{url}: {err} before the initial sync"),
            Ok(None) => bail!("{url}: closed before the initial sync"),
            Err(_) => bail!("{url}: no sync step 2 within 30 s"),
        }
    }
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(frame) = message {
                counters.frames.fetch_add(1, Ordering::Relaxed);
                if let Some(phase) = marker_phase(&frame) {
                    counters.done[phase].fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    Ok((sink, reader))
}

/// One room's writer: a connection of the room and the Yjs document its updates
/// come from.
struct Writer {
    sink: Sink,
    doc: Doc,
}

impl Writer {
    /// A small valid v1 update: one character appended to a text.
    fn next_update(&self) -> Vec<u8> {
        let text = self.doc.get_or_insert_text("t");
        let mut txn = self.doc.transact_mut();
        let len = text.get_string(&txn).len() as u32;
        text.insert(&mut txn, len, "x");
        txn.encode_update_v1()
    }

    /// The update ending `phase`: a map entry whose key readers look for.
    fn marker_update(&self, phase: usize) -> Vec<u8> {
        let map = self.doc.get_or_insert_map("m");
        let mut txn = self.doc.transact_mut();
        map.insert(&mut txn, format!("bench-end-{phase}"), true);
        txn.encode_update_v1()
    }
}

/// Send `messages` updates round-robin over the writers at `rate` per second,
/// then one end marker per room, and wait until every connection saw its room's
/// marker. Returns the updates appended (markers included).
async fn run_phase(
    writers: &mut [Writer],
    counters: &Counters,
    options: &Options,
    phase: usize,
    messages: usize,
) -> Result<u64> {
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..messages {
        ticker.tick().await;
        let writer = &mut writers[i % options.rooms];
        let update = writer.next_update();
        writer
            .sink
            .send(Message::Binary(update_message(&update).into()))
            .await
            .context("sending an update")?;
    }
    for writer in writers.iter_mut() {
        ticker.tick().await;
        let update = writer.marker_update(phase);
        writer
            .sink
            .send(Message::Binary(update_message(&update).into()))
            .await
            .context("sending an end marker")?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = options.connections as u64;
    loop {
        let done = counters.done[phase].load(Ordering::Relaxed);
        if done >= expected {
            break;
        }
        if Instant::now() > deadline {
            bail!("phase {phase}: only {done} of {expected} connections received every update within 60 s of the last send");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((messages + options.rooms) as u64)
}

/// Updates that reach clients when `appended` updates spread round-robin over
/// the rooms (markers: one per room) and each reaches every connection of its
/// room.
fn deliveries(options: &Options, messages: usize) -> u64 {
    (0..options.rooms)
        .map(|room| {
            let members = (options.connections - room).div_ceil(options.rooms);
            let sent = messages / options.rooms + usize::from(room < messages % options.rooms) + 1;
            (members * sent) as u64
        })
        .sum()
}

/// Start one server of `lang` on its own Redis and measure it.
async fn measure(lang: Lang, options: &Options, ticks_per_sec: f64) -> Result<Measurement> {
    let builder = Fleet::builder();
    let builder = match lang {
        Lang::Rust => builder.rust_servers(1),
        Lang::Js => builder.js_servers(1),
    };
    let fleet = builder
        .start()
        .await
        .with_context(|| format!("starting the {lang} server"))?;
    let result = measure_fleet(&fleet, lang, options, ticks_per_sec).await;
    result.with_context(|| {
        let logs = fleet.logs();
        let tail: Vec<&str> = logs.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("{lang} server output (last lines):\n{}", tail.join("\n"))
    })
}

async fn measure_fleet(
    fleet: &Fleet,
    lang: Lang,
    options: &Options,
    ticks_per_sec: f64,
) -> Result<Measurement> {
    let server = fleet.server(lang, 0)?;
    let pid = server.pid().context("the server has no process id")?;
    let redis_pid = fleet.redis().pid().context("Redis has no process id")?;
    tokio::time::sleep(SETTLE).await;
    let rss_before_kib = rss_kib(pid)?;

    let counters = Arc::new(Counters {
        frames: AtomicU64::new(0),
        done: [AtomicU64::new(0), AtomicU64::new(0)],
    });
    let urls: Vec<String> = (0..options.connections)
        .map(|i| server.url(&format!("bench-{}", i % options.rooms)))
        .collect();
    let opened: Vec<(usize, Result<Opened>)> =
        futures_util::stream::iter(urls.into_iter().enumerate())
            .map(|(i, url)| {
                let counters = Arc::clone(&counters);
                async move { (i, open(url, counters).await) }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await;
    let mut sinks: Vec<Option<Sink>> = (0..options.connections).map(|_| None).collect();
    let mut readers = Vec::with_capacity(options.connections);
    for (i, result) in opened {
        let (sink, reader) = result?;
        sinks[i] = Some(sink);
        readers.push(reader);
    }
    tokio::time::sleep(SETTLE).await;
    let rss_after_kib = rss_kib(pid)?;

    // Connection `r` is in room `r`: the first connection of each room writes.
    let mut writers: Vec<Writer> = sinks
        .iter_mut()
        .take(options.rooms)
        .map(|sink| Writer {
            sink: sink.take().expect("every connection opened"),
            doc: Doc::new(),
        })
        .collect();

    if options.warmup > 0 {
        run_phase(&mut writers, &counters, options, 0, options.warmup)
            .await
            .context("warm-up")?;
    } else {
        counters.done[0].store(options.connections as u64, Ordering::Relaxed);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let frames_before = counters.frames.load(Ordering::Relaxed);
    let cpu_before = cpu_ticks(pid)?;
    let redis_before = cpu_ticks(redis_pid)?;
    let started = Instant::now();
    let appended = run_phase(&mut writers, &counters, options, 1, options.messages).await?;
    let wall_secs = started.elapsed().as_secs_f64();
    let cpu_after = cpu_ticks(pid)?;
    let redis_after = cpu_ticks(redis_pid)?;
    let frames = counters.frames.load(Ordering::Relaxed) - frames_before;

    for writer in &mut writers {
        let _ = writer.sink.close().await;
    }
    drop(sinks);
    for reader in readers {
        reader.abort();
    }
    if !server.is_running() {
        bail!("the {lang} server stopped during the run");
    }
    Ok(Measurement {
        rss_before_kib,
        rss_after_kib,
        cpu_secs: ((cpu_after.0 + cpu_after.1) - (cpu_before.0 + cpu_before.1)) as f64
            / ticks_per_sec,
        system_secs: (cpu_after.1 - cpu_before.1) as f64 / ticks_per_sec,
        redis_cpu_secs: ((redis_after.0 + redis_after.1) - (redis_before.0 + redis_before.1))
            as f64
            / ticks_per_sec,
        appended,
        delivered: deliveries(options, options.messages),
        frames,
        wall_secs,
    })
}

/// JS divided by Rust, or infinity when Rust measured zero.
fn ratio(js: f64, rust: f64) -> f64 {
    if rust > 0.0 {
        js / rust
    } else {
        f64::INFINITY
    }
}

fn print_table(options: &Options, rust: &Measurement, js: &Measurement) {
    let n = options.connections;
    let rows: Vec<(&str, f64, f64, bool)> = vec![
        (
            "memory per connection (KiB)",
            rust.memory_per_connection_kib(n),
            js.memory_per_connection_kib(n),
            true,
        ),
        (
            "CPU per 1000 messages delivered (ms)",
            rust.cpu_ms_per_1000_delivered(),
            js.cpu_ms_per_1000_delivered(),
            true,
        ),
        (
            "CPU per 1000 messages appended (ms)",
            rust.cpu_ms_per_1000_appended(),
            js.cpu_ms_per_1000_appended(),
            true,
        ),
        (
            "Redis CPU per 1000 delivered (ms)",
            rust.redis_ms_per_1000_delivered(),
            js.redis_ms_per_1000_delivered(),
            true,
        ),
        (
            "RSS before connections (MiB)",
            rust.rss_before_kib as f64 / 1024.0,
            js.rss_before_kib as f64 / 1024.0,
            true,
        ),
        (
            "RSS with connections (MiB)",
            rust.rss_after_kib as f64 / 1024.0,
            js.rss_after_kib as f64 / 1024.0,
            true,
        ),
        (
            "server CPU in message phase (s)",
            rust.cpu_secs,
            js.cpu_secs,
            true,
        ),
        (
            "  of which system (s)",
            rust.system_secs,
            js.system_secs,
            true,
        ),
        (
            "message phase wall time (s)",
            rust.wall_secs,
            js.wall_secs,
            false,
        ),
        (
            "messages appended",
            rust.appended as f64,
            js.appended as f64,
            false,
        ),
        (
            "messages delivered",
            rust.delivered as f64,
            js.delivered as f64,
            false,
        ),
        (
            "frames received",
            rust.frames as f64,
            js.frames as f64,
            false,
        ),
    ];
    println!();
    println!(
        "{} connections, {} rooms, {} messages at {}/s (after {} warm-up messages); {} cores",
        options.connections,
        options.rooms,
        options.messages,
        options.rate,
        options.warmup,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| {:<38} | {:>10} | {:>10} | {:>13} |",
        "metric", "Rust", "JS", "ratio JS/Rust"
    );
    println!("|{:-<40}|{:->12}|{:->12}|{:->15}|", "", "", "", "");
    for (name, r, j, with_ratio) in rows {
        let format = |v: f64| {
            if v.fract() == 0.0 && v.abs() >= 1.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        };
        let shown = if with_ratio {
            format!("{:.2}", ratio(j, r))
        } else {
            String::new()
        };
        println!(
            "| {:<38} | {:>10} | {:>10} | {:>13} |",
            name,
            format(r),
            format(j),
            shown
        );
    }
    println!();
    let cpu = ratio(
        js.cpu_ms_per_1000_delivered(),
        rust.cpu_ms_per_1000_delivered(),
    );
    let memory = ratio(
        js.memory_per_connection_kib(n),
        rust.memory_per_connection_kib(n),
    );
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!(
        "CPU per message:       JS/Rust = {cpu:.2}, target >= {CPU_TARGET}: {}",
        verdict(cpu >= CPU_TARGET)
    );
    println!(
        "memory per connection: JS/Rust = {memory:.2}, target >= {MEMORY_TARGET}: {}",
        verdict(memory >= MEMORY_TARGET)
    );
}

async fn run(options: Options) -> Result<()> {
    if !Path::new("/proc/self/stat").exists() {
        bail!("the benchmark reads /proc: Linux only");
    }
    let ticks_per_sec = clock_ticks_per_sec();
    eprintln!("measuring the Rust server …");
    let rust = measure(Lang::Rust, &options, ticks_per_sec).await?;
    eprintln!("measuring the JavaScript server …");
    let js = measure(Lang::Js, &options, ticks_per_sec).await?;
    print_table(&options, &rust, &js);
    Ok(())
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
    // the signal).
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
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}
