//! Group c, cross-instance sync: random edit scripts (text, map and array edits,
//! offline edits then reconnects) run by clients spread over two Rust and two
//! JavaScript servers on one Redis, both real y-websocket providers (through the
//! sidecar; every script has a 2.1.0 and a 3.1.0 provider) and Rust clients
//! (`testkit::YClient`). Every client converges to the same content, read with yrs
//! and with yjs. The providers offer permessage-deflate, as browsers do, and every
//! server agrees to it, so the group runs compressed between providers and servers.

mod common;

use std::time::Duration;

use anyhow::{bail, Context, Result};
use common::op;
use conformance::{content, edit, EditOp, Fleet, JsClient, Lang, Member, Sidecar, YWebsocket};
use proptest::prelude::*;
use serde_json::{json, Value};
use testkit::YClient;
use yrs::Doc;

const SOON: Duration = Duration::from_secs(10);
/// How long all clients may take to converge after the script.
const CONVERGE: Duration = Duration::from_secs(20);

/// Which client library a script client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `testkit::YClient` (yrs).
    Rust,
    /// A y-websocket provider of this version in the sidecar (yjs).
    Js(YWebsocket),
}

/// A client of the script: its library and the server it connects to
/// (0 and 1 are Rust servers, 2 and 3 JavaScript servers).
#[derive(Debug, Clone, Copy)]
struct ClientSpec {
    kind: Kind,
    server: usize,
}

#[derive(Debug, Clone)]
enum Step {
    /// Client edits its doc (sent at once when online).
    Edit { client: usize, ops: Vec<EditOp> },
    /// Client goes offline; its edits stay local.
    Offline { client: usize },
    /// Client comes back (no-op when online) and syncs.
    Online { client: usize },
    /// Let messages travel for a while.
    Pause { ms: u64 },
}

#[derive(Debug, Clone)]
struct Script {
    clients: Vec<ClientSpec>,
    steps: Vec<Step>,
}

fn script() -> impl Strategy<Value = Script> {
    // The first two clients make sure both libraries meet both server languages;
    // the third that both y-websocket majors are in every script.
    let first = (2usize..4).prop_map(|server| ClientSpec {
        kind: Kind::Rust,
        server,
    });
    let second = (0usize..2).prop_map(|server| ClientSpec {
        kind: Kind::Js(YWebsocket::V2),
        server,
    });
    let third = (0usize..4).prop_map(|server| ClientSpec {
        kind: Kind::Js(YWebsocket::V3),
        server,
    });
    let kind = prop_oneof![
        Just(Kind::Rust),
        Just(Kind::Js(YWebsocket::V2)),
        Just(Kind::Js(YWebsocket::V3)),
    ];
    let more = prop::collection::vec(
        (kind, 0usize..4).prop_map(|(kind, server)| ClientSpec { kind, server }),
        0..3,
    );
    (first, second, third, more)
        .prop_flat_map(|(a, b, c, more)| {
            let mut clients = vec![a, b, c];
            clients.extend(more);
            let n = clients.len();
            let step = prop_oneof![
                8 => (0..n, prop::collection::vec(op(), 1..4))
                    .prop_map(|(client, ops)| Step::Edit { client, ops }),
                1 => (0..n).prop_map(|client| Step::Offline { client }),
                1 => (0..n).prop_map(|client| Step::Online { client }),
                1 => (0u64..150).prop_map(|ms| Step::Pause { ms }),
            ];
            (Just(clients), prop::collection::vec(step, 4..30))
        })
        .prop_map(|(clients, steps)| Script { clients, steps })
}

/// A running script client.
enum Client<'a> {
    Rust {
        doc: Doc,
        url: String,
        connection: Option<YClient>,
    },
    Js {
        client: JsClient<'a>,
        online: bool,
    },
}

impl Client<'_> {
    async fn edit(&self, ops: &[EditOp]) -> Result<()> {
        match self {
            Client::Rust { doc, .. } => {
                edit::apply_ops(doc, ops);
                Ok(())
            }
            Client::Js { client, .. } => client.edit(ops).await,
        }
    }

    async fn offline(&mut self) -> Result<()> {
        match self {
            Client::Rust { connection, .. } => {
                connection.take();
            }
            Client::Js { client, online } => {
                if *online {
                    client.disconnect().await?;
                    *online = false;
                }
            }
        }
        Ok(())
    }

    async fn online(&mut self) -> Result<()> {
        match self {
            Client::Rust {
                doc,
                url,
                connection,
            } => {
                if connection.is_none() {
                    let client = YClient::connect_with(url, doc.clone(), None).await?;
                    client.wait_synced(SOON).await?;
                    *connection = Some(client);
                }
            }
            Client::Js { client, online } => {
                if !*online {
                    client.connect().await?;
                    *online = true;
                }
            }
        }
        Ok(())
    }

    /// The content as this client's own library reads it, and as the other one
    /// reads the same state (yjs for a Rust client's doc). A JavaScript client's
    /// state stays inside the sidecar, so it is read by yjs only.
    async fn contents(&self, sidecar: &Sidecar) -> Result<Vec<Value>> {
        Ok(match self {
            Client::Rust { doc, .. } => {
                let yjs = sidecar.content_async(&[content::state_v1(doc)]).await?;
                vec![content::of_doc(doc), content::normalize(&yjs)]
            }
            Client::Js { client, .. } => vec![content::normalize(&client.content().await?)],
        })
    }
}

async fn run_script(
    fleet: &Fleet,
    sidecar: &Sidecar,
    servers: &[&Member],
    room: &str,
    script: &Script,
) -> Result<()> {
    let mut clients = Vec::new();
    for (i, spec) in script.clients.iter().enumerate() {
        let server = servers[spec.server];
        clients.push(match spec.kind {
            Kind::Rust => {
                let doc = Doc::new();
                let url = server.url(room);
                let connection = YClient::connect_with(&url, doc.clone(), None).await?;
                connection
                    .wait_synced(SOON)
                    .await
                    .with_context(|| format!("client {i} on {}", server.name()))?;
                Client::Rust {
                    doc,
                    url,
                    connection: Some(connection),
                }
            }
            Kind::Js(version) => {
                let name = format!("{room}-{i}");
                let client = sidecar
                    .open_provider(&name, &server.ws_base(), room, None, version)
                    .await
                    .with_context(|| format!("client {i} on {}", server.name()))?;
                // Every provider offers permessage-deflate, and servers of
                // both languages agree to it.
                let extensions = client.extensions().await?.unwrap_or_default();
                if !extensions.starts_with("permessage-deflate") {
                    bail!("client {i} on {}: extensions {extensions:?}", server.name());
                }
                Client::Js {
                    client,
                    online: true,
                }
            }
        });
    }

    for step in &script.steps {
        match step {
            Step::Edit { client, ops } => clients[*client].edit(ops).await?,
            Step::Offline { client } => clients[*client].offline().await?,
            Step::Online { client } => clients[*client].online().await?,
            Step::Pause { ms } => tokio::time::sleep(Duration::from_millis(*ms)).await,
        }
    }

    // Everyone back online; each leaves a marker, so convergence means every
    // client's last edit went everywhere.
    for (i, client) in clients.iter_mut().enumerate() {
        client.online().await?;
        client
            .edit(&[EditOp::MapSet {
                key: format!("done-{i}"),
                value: json!(true),
            }])
            .await?;
    }
    let deadline = tokio::time::Instant::now() + CONVERGE;
    loop {
        let mut all = Vec::new();
        for client in &clients {
            all.push(client.contents(sidecar).await?);
        }
        let flat: Vec<&Value> = all.iter().flatten().collect();
        let markers = |v: &Value| (0..clients.len()).all(|i| v["m"][format!("done-{i}")] == true);
        if flat.iter().all(|v| markers(v)) && flat.windows(2).all(|w| w[0] == w[1]) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let mut report = String::new();
            for (i, (spec, contents)) in script.clients.iter().zip(&all).enumerate() {
                report.push_str(&format!(
                    "\n  client {i} ({:?} on {}): {}",
                    spec.kind,
                    servers[spec.server].name(),
                    contents
                        .iter()
                        .map(Value::to_string)
                        .collect::<Vec<_>>()
                        .join(" | yjs: ")
                ));
            }
            bail!("clients did not converge within {CONVERGE:?}:{report}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for client in clients {
        if let Client::Js { client, .. } = client {
            client.close().await?;
        }
    }
    for server in servers {
        if let Some(status) = server.exit_status() {
            bail!("{} exited with {status}:\n{}", server.name(), fleet.logs());
        }
    }
    Ok(())
}

#[test]
fn clients_on_rust_and_js_servers_converge() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let fleet = runtime
        .block_on(Fleet::builder().rust_servers(2).js_servers(2).start())
        .expect("fleet starts");
    let sidecar = Sidecar::start().expect("the sidecar starts");
    let servers: Vec<&Member> = [
        fleet.server(Lang::Rust, 0),
        fleet.server(Lang::Rust, 1),
        fleet.server(Lang::Js, 0),
        fleet.server(Lang::Js, 1),
    ]
    .into_iter()
    .collect::<Result<_>>()
    .unwrap();
    let case = std::sync::atomic::AtomicUsize::new(0);
    common::check("cross_sync", 48, 4, script(), |script| {
        let n = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let room = format!("cross-{n}");
        let started = std::time::Instant::now();
        let result = runtime.block_on(run_script(&fleet, &sidecar, &servers, &room, &script));
        println!(
            "case {n}: {} clients, {} steps, {:?}",
            script.clients.len(),
            script.steps.len(),
            started.elapsed()
        );
        result.map_err(common::fail)
    });
}
