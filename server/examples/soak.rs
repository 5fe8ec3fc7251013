//! Soak: steady editing load on a fleet (two `websocket serve --no-worker`
//! instances and one `websocket worker` on one redis-server, documents in
//! PostgreSQL) with a fault every 1 to 3 minutes (every
//! kind once per round, in a random order), then a check that
//! nothing was lost. Run it through `scripts/soak.sh`.
//!
//! Every client owns a yrs document and, like a y-websocket provider, keeps it
//! across reconnects: it edits on, connected or not, by setting a unique key
//! (`room.client.n`) in the map `m`, and reconnects (alternating between the two
//! instances) whenever its connection closes. At the end the faults stop, the
//! clients settle, the worker stores everything, and the documents are read
//! back from storage with the server's own storage code. The run fails when an
//! edit made is missing from storage, or a client's document differs from the
//! stored one.
//!
//! Settings (environment): `SOAK_MINUTES` (30), `SOAK_FAULT_EVERY` (`60-180`
//! seconds between faults), `SOAK_ROOMS` (4), `SOAK_CLIENTS` (3 per room),
//! `WEBSOCKET_BIN` (the server binary; default: next to this program's
//! directory), `SOAK_DIR` (where logs and data go; default: a temporary
//! directory that is kept).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::Rng;
use testkit::{free_port, PostgresServer, RawClient, ServiceProcess, YClient};
use websocket::config::Config;
use websocket::protocol::encode_sync_update;
use websocket::storage::{open_storage, Storage};
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::{Doc, Map, ReadTxn, Transact, Update};

/// The kinds of fault, in the order they are reported.
const FAULTS: [&str; 9] = [
    "instance SIGKILL + restart",
    "instance SIGTERM + restart",
    "worker SIGKILL + restart",
    "Redis restart with persistence",
    "Redis restart without persistence",
    "storage (PostgreSQL) outage",
    "slow reader",
    "flood client",
    "connection burst",
];

/// Connections opened at once by a connection burst.
const BURST: usize = 500;
/// Updates a flood client sends as fast as it can.
const FLOOD: usize = 5_000;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn millis(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

/// The services of the fleet, each restartable on its own port.
struct Fleet {
    bin: PathBuf,
    dir: PathBuf,
    redis_port: u16,
    redis: Option<ServiceProcess>,
    postgres: PostgresServer,
    ports: [u16; 2],
    servers: [Option<ServiceProcess>; 2],
    worker: Option<ServiceProcess>,
}

impl Fleet {
    fn start(bin: PathBuf, dir: PathBuf) -> Result<Self> {
        let postgres = PostgresServer::start()?;
        let mut fleet = Self {
            bin,
            dir,
            redis_port: free_port()?,
            redis: None,
            postgres,
            ports: [free_port()?, free_port()?],
            servers: [None, None],
            worker: None,
        };
        fleet.start_redis()?;
        fleet.start_server(0)?;
        fleet.start_server(1)?;
        fleet.start_worker()?;
        Ok(fleet)
    }

    fn log(&self, name: &str) -> Result<File> {
        Ok(File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))?)
    }

    fn start_redis(&mut self) -> Result<()> {
        let data = self.dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let mut command = Command::new("redis-server");
        command
            .args([
                "--port",
                &self.redis_port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(&data)
            .stdout(self.log("redis")?)
            .stderr(Stdio::null());
        let mut process = ServiceProcess::spawn_with_stdio("redis-server", command)?;
        process.wait_listening(self.redis_port, Duration::from_secs(20))?;
        self.redis = Some(process);
        Ok(())
    }

    fn command(&self, name: &str) -> Result<Command> {
        let mut command = Command::new(&self.bin);
        command
            .env(
                "REDIS_URL",
                format!("redis://127.0.0.1:{}", self.redis_port),
            )
            .env_remove("REDIS")
            .env("STORAGE_BACKEND", "postgres")
            .env("POSTGRES", self.postgres.url())
            .env("REDIS_TASK_DEBOUNCE", "2000")
            .env("REDIS_MIN_MESSAGE_LIFETIME", "10000")
            .env("WS_HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(self.log(name)?);
        Ok(command)
    }

    fn start_server(&mut self, i: usize) -> Result<()> {
        let mut command = self.command(&format!("server-{i}"))?;
        command
            .env("WS_PORT", self.ports[i].to_string())
            .args(["serve", "--no-worker"]);
        let mut process = ServiceProcess::spawn_with_stdio("websocket", command)?;
        process.wait_listening(self.ports[i], Duration::from_secs(30))?;
        self.servers[i] = Some(process);
        Ok(())
    }

    fn start_worker(&mut self) -> Result<()> {
        let mut command = self.command("worker")?;
        command.arg("worker");
        self.worker = Some(ServiceProcess::spawn_with_stdio("websocket", command)?);
        Ok(())
    }

    fn url(&self, i: usize, room: &str) -> String {
        format!("ws://127.0.0.1:{}/{room}", self.ports[i % 2])
    }

    /// Fail when a service exited without being told to.
    fn check(&mut self) -> Result<()> {
        let mut services: Vec<(&str, &mut ServiceProcess)> = Vec::new();
        if let Some(p) = self.redis.as_mut() {
            services.push(("redis-server", p));
        }
        for (i, server) in self.servers.iter_mut().enumerate() {
            if let Some(p) = server.as_mut() {
                services.push((if i == 0 { "server 0" } else { "server 1" }, p));
            }
        }
        if let Some(p) = self.worker.as_mut() {
            services.push(("worker", p));
        }
        for (name, process) in services {
            if let Some(status) = process.try_exit_status()? {
                bail!("{name} exited on its own with {status}");
            }
        }
        Ok(())
    }
}

/// What the clients of the run share: the edits made per room, and figures.
#[derive(Default)]
struct Ledger {
    made: Mutex<BTreeMap<String, BTreeSet<String>>>,
    edits: AtomicU64,
    reconnects: AtomicU64,
    max_reconnect: Mutex<Duration>,
    /// `false` once the faults stopped and the clients should stop editing.
    editing: AtomicBool,
    /// Set when the run is over and the clients should leave.
    done: AtomicBool,
}

/// One client: edits its document and keeps it connected. Returns the document.
async fn client(
    urls: [String; 2],
    room: String,
    id: usize,
    ledger: Arc<Ledger>,
    synced: Arc<AtomicU64>,
) -> Doc {
    let doc = Doc::new();
    let map = doc.get_or_insert_map("m");
    let mut connection: Option<YClient> = None;
    let mut down_since: Option<Instant> = None;
    let mut target = id % 2;
    let mut n = 0u64;
    let mut was_synced = false;
    while !ledger.done.load(Ordering::SeqCst) {
        let open = connection.as_ref().is_some_and(|c| c.closed().is_none());
        if !open {
            if connection.take().is_some() {
                down_since.get_or_insert_with(Instant::now);
                ledger.reconnects.fetch_add(1, Ordering::Relaxed);
            }
            if was_synced {
                synced.fetch_sub(1, Ordering::SeqCst);
                was_synced = false;
            }
            let url = &urls[target];
            let attempt = async {
                let c = YClient::connect_with(url, doc.clone(), None).await?;
                c.wait_synced(Duration::from_secs(5)).await?;
                anyhow::Ok(c)
            };
            match tokio::time::timeout(Duration::from_secs(6), attempt).await {
                Ok(Ok(c)) => {
                    if let Some(since) = down_since.take() {
                        let took = since.elapsed();
                        let mut max = ledger
                            .max_reconnect
                            .lock()
                            .unwrap_or_else(|p| p.into_inner());
                        *max = (*max).max(took);
                    }
                    connection = Some(c);
                    synced.fetch_add(1, Ordering::SeqCst);
                    was_synced = true;
                }
                _ => {
                    // Try the other instance next.
                    target = (target + 1) % 2;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        if ledger.editing.load(Ordering::SeqCst) {
            let token = format!("{room}.{id}.{n}");
            n += 1;
            map.insert(&mut doc.transact_mut(), token.as_str(), true);
            ledger
                .made
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(room.clone())
                .or_default()
                .insert(token);
            ledger.edits.fetch_add(1, Ordering::Relaxed);
        }
        let pause = rand::rng().random_range(100..300);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    if was_synced {
        synced.fetch_sub(1, Ordering::SeqCst);
    }
    doc
}

/// The maps `m` (edits) and `f` (flood clients' keys) of a document, as JSON.
fn content(doc: &Doc) -> serde_json::Value {
    let m = doc.get_or_insert_map("m");
    let f = doc.get_or_insert_map("f");
    let txn = doc.transact();
    let mut text = String::new();
    m.to_json(&txn).to_json(&mut text);
    let mut flood = String::new();
    f.to_json(&txn).to_json(&mut flood);
    serde_json::json!({
        "m": serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
        "f": serde_json::from_str::<serde_json::Value>(&flood).unwrap_or_default(),
    })
}

/// The document of `room` as storage holds it (every stored item merged), and
/// how many stored items do not decode.
async fn stored(storage: &Arc<dyn Storage>, room: &str) -> Result<(Doc, usize)> {
    let doc = Doc::new();
    let mut unreadable = 0;
    for item in storage.load(room, "index").await? {
        match Update::decode_v2(&item.update) {
            Ok(update) => doc.transact_mut().apply_update(update)?,
            Err(_) => unreadable += 1,
        }
    }
    Ok((doc, unreadable))
}

/// Keys of the map `m` of a document.
fn keys(doc: &Doc) -> BTreeSet<String> {
    let m = doc.get_or_insert_map("m");
    let txn = doc.transact();
    m.keys(&txn).map(str::to_string).collect()
}

/// A client that stops reading for 30 s on a slow link.
async fn slow_reader(url: String) {
    if let Ok(client) = RawClient::connect_slow(&url).await {
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(client);
    }
}

/// A client sending updates as fast as it can, without reading, then leaving.
async fn flood(url: String, tag: u64) -> Result<usize> {
    let mut client = RawClient::connect(&url).await?;
    let doc = Doc::new();
    let map = doc.get_or_insert_map("f");
    let mut sent = 0;
    for i in 0..FLOOD {
        let before = doc.transact().state_vector();
        map.insert(&mut doc.transact_mut(), format!("{tag}.{i}"), true);
        let update = doc.transact().encode_state_as_update_v1(&before);
        if client.send(&encode_sync_update(&update)).await.is_err() {
            break;
        }
        sent += 1;
    }
    client.close().await;
    Ok(sent)
}

/// `BURST` connections opened at once; returns how many got their sync answer
/// and the time until the last did.
async fn burst(urls: Vec<String>) -> (usize, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            tokio::spawn(async move {
                let mut client = RawClient::connect(&url).await.ok()?;
                let first = client.recv(Duration::from_secs(20)).await?;
                let second = client.recv(Duration::from_secs(20)).await?;
                let answered = first.starts_with(&[0, 0]) && second.starts_with(&[0, 1]);
                client.close().await;
                answered.then(Instant::now)
            })
        })
        .collect();
    let mut answered = 0;
    let mut last = started;
    for task in tasks {
        if let Ok(Some(at)) = task.await {
            answered += 1;
            last = last.max(at);
        }
    }
    (answered, last - started)
}

/// Inject fault `kind`; returns a line describing it.
async fn inject(fleet: &mut Fleet, kind: usize, rooms: &[String], tag: u64) -> Result<String> {
    let mut rng = rand::rng();
    let which = rng.random_range(0..2usize);
    let pause = Duration::from_millis(rng.random_range(1000..3000));
    let room = rooms[rng.random_range(0..rooms.len())].clone();
    Ok(match kind {
        0 | 1 => {
            let mut server = fleet.servers[which].take().context("server running")?;
            if kind == 0 {
                server.kill();
            } else {
                let status =
                    tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(15)))
                        .await??;
                if !status.success() {
                    bail!("server {which} stopped with {status} after SIGTERM");
                }
            }
            tokio::time::sleep(pause).await;
            fleet.start_server(which)?;
            format!("server {which} back after {}", millis(pause))
        }
        2 => {
            if let Some(mut worker) = fleet.worker.take() {
                worker.kill();
            }
            tokio::time::sleep(pause).await;
            fleet.start_worker()?;
            format!("worker back after {}", millis(pause))
        }
        3 => {
            // SHUTDOWN writes the append-only file; the new process reads it.
            let out = Command::new("redis-cli")
                .args(["-p", &fleet.redis_port.to_string(), "shutdown"])
                .output()?;
            let mut redis = fleet.redis.take().context("redis running")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while redis.try_exit_status()?.is_none() && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if redis.try_exit_status()?.is_none() {
                bail!(
                    "redis did not shut down: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
            }
            redis.kill();
            tokio::time::sleep(pause).await;
            fleet.start_redis()?;
            format!("redis back with its data after {}", millis(pause))
        }
        4 => {
            if let Some(mut redis) = fleet.redis.take() {
                redis.kill();
            }
            std::fs::remove_dir_all(fleet.dir.join("redis"))?;
            tokio::time::sleep(pause).await;
            fleet.start_redis()?;
            format!("redis back empty after {}", millis(pause))
        }
        5 => {
            let outage = Duration::from_millis(rng.random_range(5_000..20_000));
            fleet.postgres.stop();
            tokio::time::sleep(outage).await;
            fleet.postgres.restart()?;
            format!("PostgreSQL back after {}", millis(outage))
        }
        6 => {
            tokio::spawn(slow_reader(fleet.url(which, &room)));
            format!("slow reader on server {which}, room {room}, for 30 s")
        }
        7 => {
            let sent = flood(fleet.url(which, &room), tag).await?;
            format!("flood of {sent} updates on server {which}, room {room}")
        }
        _ => {
            let urls = (0..BURST)
                .map(|i| fleet.url(i, &rooms[i % rooms.len()]))
                .collect();
            let (answered, took) = burst(urls).await;
            format!(
                "{answered} of {BURST} connections opened at once answered within {}",
                millis(took)
            )
        }
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let minutes: f64 = env_or("SOAK_MINUTES", 30.0);
    let every = std::env::var("SOAK_FAULT_EVERY").unwrap_or_else(|_| "60-180".into());
    let (min_gap, max_gap) = every
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b)
        .context("SOAK_FAULT_EVERY: expected MIN-MAX seconds")?;
    let room_count: usize = env_or("SOAK_ROOMS", 4);
    let per_room: usize = env_or("SOAK_CLIENTS", 3);
    let bin = match std::env::var_os("WEBSOCKET_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above this program")?
            .join("websocket"),
    };
    let dir = match std::env::var_os("SOAK_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => tempfile::Builder::new().prefix("soak-").tempdir()?.keep(),
    };
    std::fs::create_dir_all(&dir)?;
    println!(
        "soak: {minutes} min, a fault every {min_gap}-{max_gap} s, {room_count} rooms x {per_room} clients, logs in {}",
        dir.display()
    );

    let mut fleet = Fleet::start(bin, dir)?;
    let storage = {
        let config = Config::from_toml(&format!(
            "[storage]\nbackend = \"postgres\"\npostgres = {:?}\n",
            fleet.postgres.url()
        ))
        .map_err(anyhow::Error::msg)?;
        open_storage(&config.storage).await?
    };

    let ledger = Arc::new(Ledger::default());
    ledger.editing.store(true, Ordering::SeqCst);
    let synced = Arc::new(AtomicU64::new(0));
    let rooms: Vec<String> = (0..room_count).map(|r| format!("soak{r}")).collect();
    let mut clients = Vec::new();
    for room in &rooms {
        for id in 0..per_room {
            let urls = [fleet.url(0, room), fleet.url(1, room)];
            clients.push((
                room.clone(),
                tokio::spawn(client(
                    urls,
                    room.clone(),
                    id,
                    Arc::clone(&ledger),
                    Arc::clone(&synced),
                )),
            ));
        }
    }

    let started = Instant::now();
    let length = Duration::from_secs_f64(minutes * 60.0);
    let mut counts = [0usize; FAULTS.len()];
    let mut tag = 0;
    let mut deck: Vec<usize> = Vec::new();
    loop {
        let gap = Duration::from_secs(rand::rng().random_range(min_gap..=max_gap));
        if started.elapsed() + gap >= length {
            tokio::time::sleep(length.saturating_sub(started.elapsed())).await;
            break;
        }
        tokio::time::sleep(gap).await;
        fleet.check()?;
        // Every kind once per round, in a random order.
        if deck.is_empty() {
            deck = (0..FAULTS.len()).collect();
            deck.shuffle(&mut rand::rng());
        }
        let Some(kind) = deck.pop() else {
            continue;
        };
        tag += 1;
        let line = inject(&mut fleet, kind, &rooms, tag).await?;
        counts[kind] += 1;
        println!(
            "[{:>7.1} s] {}: {line} ({} edits so far)",
            started.elapsed().as_secs_f64(),
            FAULTS[kind],
            ledger.edits.load(Ordering::Relaxed)
        );
    }
    fleet.check()?;
    let duration = started.elapsed();

    // Settle: no more edits; every client connected and holding every edit of
    // its room.
    ledger.editing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let made = ledger
        .made
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let total = clients.len() as u64;
    let settle = Instant::now();
    while synced.load(Ordering::SeqCst) < total && settle.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "{} of {total} clients connected after {}",
        synced.load(Ordering::SeqCst),
        millis(settle.elapsed())
    );

    // The final worker passes: wait until storage holds every edit made.
    let pass = Instant::now();
    loop {
        let mut complete = true;
        for room in &rooms {
            let (doc, _) = stored(&storage, room).await?;
            let have = keys(&doc);
            if made.get(room).is_some_and(|m| !m.is_subset(&have)) {
                complete = false;
            }
        }
        if complete || pass.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let the clients receive what the last passes saw, then stop them.
    tokio::time::sleep(Duration::from_secs(3)).await;
    ledger.done.store(true, Ordering::SeqCst);
    let mut docs: BTreeMap<String, Vec<Doc>> = BTreeMap::new();
    for (room, task) in clients {
        docs.entry(room).or_default().push(task.await?);
    }
    // Storage again, now that nothing edits: it must equal every client.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut lost = 0;
    let mut mismatched = 0;
    let mut unreadable = 0;
    for room in &rooms {
        let (doc, bad) = stored(&storage, room).await?;
        if bad > 0 {
            println!("room {room}: {bad} stored items do not decode");
        }
        unreadable += bad;
        let have = keys(&doc);
        let room_made = made.get(room).cloned().unwrap_or_default();
        let missing: Vec<&String> = room_made.difference(&have).collect();
        if !missing.is_empty() {
            println!(
                "room {room}: {} of {} edits missing from storage, e.g. {:?}",
                missing.len(),
                room_made.len(),
                missing.iter().take(5).collect::<Vec<_>>()
            );
        }
        lost += missing.len();
        let expected = content(&doc);
        for (i, client) in docs[room].iter().enumerate() {
            let got = content(client);
            if got != expected {
                mismatched += 1;
                let theirs = keys(client);
                println!(
                    "room {room}: client {i} differs from storage: {} keys of m only in the client, {} only in storage",
                    theirs.difference(&have).count(),
                    have.difference(&theirs).count()
                );
            }
        }
    }

    println!("duration: {}", millis(duration));
    println!("faults injected: {}", counts.iter().sum::<usize>());
    for (kind, count) in FAULTS.iter().zip(counts) {
        println!("  {kind}: {count}");
    }
    println!("edits made: {}", ledger.edits.load(Ordering::Relaxed));
    println!("edits lost: {lost}");
    println!("clients whose document differs from storage: {mismatched}");
    println!("reconnects: {}", ledger.reconnects.load(Ordering::Relaxed));
    println!(
        "max reconnect time: {}",
        millis(
            *ledger
                .max_reconnect
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        )
    );
    println!("stored items that do not decode: {unreadable}");
    if lost > 0 || mismatched > 0 || unreadable > 0 {
        bail!(
            "{lost} edits lost, {mismatched} clients differ from storage, {unreadable} stored items unreadable"
        );
    }
    Ok(())
}
