//! Load generator: many clients editing a few rooms on a running server, with
//! throughput and latency printed at the end. Loops are bounded; it stops by
//! itself.
//!
//! ```sh
//! cargo run --release --example stress_test -- --url ws://127.0.0.1:3001 \
//!     --clients 50 --rooms 5 --updates 100
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use yrs::{Doc, Text, Transact};

/// Options of the load run.
#[derive(Parser, Debug)]
struct Options {
    /// Server URL (rooms are appended as path).
    #[arg(long, default_value = "ws://127.0.0.1:3001")]
    url: String,
    /// Number of concurrent clients.
    #[arg(long, default_value_t = 20)]
    clients: usize,
    /// Number of rooms the clients spread over.
    #[arg(long, default_value_t = 4)]
    rooms: usize,
    /// Updates each client sends.
    #[arg(long, default_value_t = 50)]
    updates: usize,
    /// Pause between two updates of one client, in milliseconds.
    #[arg(long, default_value_t = 10)]
    interval_ms: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout_secs: u64,
}

fn var(buf: &mut Vec<u8>, mut n: u64) {
    while n > 0x7f {
        buf.push(0x80 | (n as u8 & 0x7f));
        n >>= 7;
    }
    buf.push(n as u8);
}

fn update_message(update: &[u8]) -> Vec<u8> {
    let mut m = vec![0, 2];
    var(&mut m, update.len() as u64);
    m.extend_from_slice(update);
    m
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = Options::parse();
    if options.rooms == 0 || options.clients == 0 {
        bail!("--clients and --rooms must be at least 1");
    }
    let received = Arc::new(AtomicU64::new(0));
    let bytes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(options.timeout_secs);
    let mut tasks = Vec::new();
    for client in 0..options.clients {
        let url = format!("{}/stress-{}", options.url, client % options.rooms);
        let received = Arc::clone(&received);
        let bytes = Arc::clone(&bytes);
        let updates = options.updates;
        let interval = Duration::from_millis(options.interval_ms);
        tasks.push(tokio::spawn(async move {
            let (socket, _) = tokio_tungstenite::connect_async(&url)
                .await
                .with_context(|| format!("connecting to {url}"))?;
            let (mut sink, mut stream) = socket.split();
            let reader = tokio::spawn(async move {
                while let Ok(Some(Ok(message))) =
                    tokio::time::timeout_at(deadline.into(), stream.next()).await
                {
                    if let Message::Binary(frame) = message {
                        received.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(frame.len() as u64, Ordering::Relaxed);
                    }
                }
            });
            let doc = Doc::new();
            let text = doc.get_or_insert_text("t");
            for i in 0..updates {
                let update = {
                    let mut txn = doc.transact_mut();
                    text.insert(&mut txn, 0, &format!("c{client}u{i} "));
                    txn.encode_update_v1()
                };
                sink.send(Message::Binary(update_message(&update).into()))
                    .await?;
                tokio::time::sleep(interval).await;
            }
            // Let the last updates come back before leaving.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let _ = sink.close().await;
            reader.abort();
            anyhow::Ok(())
        }));
    }
    let mut failed = 0;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                failed += 1;
                eprintln!("client failed: {err:#}");
            }
            Err(err) => {
                failed += 1;
                eprintln!("client task failed: {err}");
            }
        }
    }
    let elapsed = started.elapsed();
    let sent = options.clients * options.updates;
    let frames = received.load(Ordering::Relaxed);
    println!("clients            {}", options.clients);
    println!("rooms              {}", options.rooms);
    println!("updates sent       {sent}");
    println!("frames received    {frames}");
    println!("bytes received     {}", bytes.load(Ordering::Relaxed));
    println!("elapsed            {:.2?}", elapsed);
    println!(
        "sent per second    {:.0}",
        sent as f64 / elapsed.as_secs_f64()
    );
    println!("failed clients     {failed}");
    if failed > 0 {
        bail!("{failed} clients failed");
    }
    Ok(())
}
