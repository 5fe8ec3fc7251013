//! A connection storm: many WebSocket connections opened at once, each waiting
//! for the server's sync answer (step 1, then step 2).

use std::time::{Duration, Instant};

use crate::client::RawClient;

/// What a storm saw, and the connections it opened, still open.
pub struct Storm {
    /// Connections that received sync step 1 and step 2 in time.
    pub answered: usize,
    /// From the first connect to the last sync answer.
    pub elapsed: Duration,
    /// The answered connections, open until dropped.
    pub clients: Vec<RawClient>,
}

/// Open a connection to every URL at once (one task each) and wait up to
/// `timeout` for each one's sync step 1 and step 2. The answered connections
/// stay open in the result.
pub async fn open_at_once(urls: Vec<String>, timeout: Duration) -> Storm {
    let started = Instant::now();
    let tasks: Vec<_> = urls
        .into_iter()
        .map(|url| {
            tokio::spawn(async move {
                let mut client = tokio::time::timeout(timeout, RawClient::connect(&url))
                    .await
                    .ok()?
                    .ok()?;
                let step1 = client.recv(timeout).await?;
                let step2 = client.recv(timeout).await?;
                (step1.starts_with(&[0, 0]) && step2.starts_with(&[0, 1]))
                    .then(|| (Instant::now(), client))
            })
        })
        .collect();
    let mut clients = Vec::new();
    let mut last = started;
    for task in tasks {
        if let Ok(Some((at, client))) = task.await {
            last = last.max(at);
            clients.push(client);
        }
    }
    Storm {
        answered: clients.len(),
        elapsed: last - started,
        clients,
    }
}
