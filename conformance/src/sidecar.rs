//! The JavaScript sidecar (`js-reference/bin/sidecar.js`): real yjs for reference
//! merges and content checks, and real y-websocket 2.1.0 client providers, driven
//! over JSON lines. Requests may overlap; answers are matched by id.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use testkit::ServiceProcess;
use tokio::sync::oneshot;

use crate::edit::EditOp;
use crate::paths;

/// How long any request may take before the call fails.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

type Answer = Result<Value, String>;
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// A running sidecar process; killed on drop.
pub struct Sidecar {
    stdin: Mutex<ChildStdin>,
    waiting: Waiting,
    next_id: AtomicU64,
    stderr: Arc<Mutex<VecDeque<String>>>,
    process: Mutex<ServiceProcess>,
}

impl Sidecar {
    /// Start `node js-reference/bin/sidecar.js` and check that it answers. The
    /// sidecar always comes from this workspace's `js-reference`, whatever
    /// `CONFORMANCE_JS_DIR` says (other implementations have no sidecar).
    pub fn start() -> Result<Self> {
        let dir = paths::js_reference_dir();
        let mut command = Command::new("node");
        command
            .arg("bin/sidecar.js")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut process = ServiceProcess::spawn_with_stdio("sidecar (node)", command)?;
        let child = process.child_mut().context("sidecar process")?;
        let stdin = child.stdin.take().context("sidecar stdin")?;
        let stdout = child.stdout.take().context("sidecar stdout")?;
        let stderr_pipe = child.stderr.take().context("sidecar stderr")?;
        let waiting: Waiting = Arc::default();
        let stderr = Arc::new(Mutex::new(VecDeque::new()));

        let readers = Arc::clone(&waiting);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(response) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let Some(id) = response["id"].as_u64() else {
                    continue;
                };
                let answer = match response.get("error") {
                    Some(error) => Err(error.as_str().unwrap_or("error").to_string()),
                    None => Ok(response.get("ok").cloned().unwrap_or(Value::Null)),
                };
                let sender = readers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
                if let Some(sender) = sender {
                    let _ = sender.send(answer);
                }
            }
            // The sidecar is gone: fail whoever still waits.
            readers.lock().unwrap_or_else(|p| p.into_inner()).clear();
        });
        let log = Arc::clone(&stderr);
        let verbose = std::env::var_os("CONFORMANCE_VERBOSE").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr_pipe).lines() {
                let Ok(line) = line else { break };
                if verbose {
                    eprintln!("[sidecar] {line}");
                }
                let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
                if log.len() == 2000 {
                    log.pop_front();
                }
                log.push_back(line);
            }
        });
        let sidecar = Self {
            stdin: Mutex::new(stdin),
            waiting,
            next_id: AtomicU64::new(1),
            stderr,
            process: Mutex::new(process),
        };
        let pong = sidecar.call_blocking("ping", json!({}))?;
        if pong != "pong" {
            bail!("the sidecar answered {pong} to ping");
        }
        Ok(sidecar)
    }

    fn send(&self, cmd: &str, args: Value) -> Result<oneshot::Receiver<Answer>> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = match args {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => bail!("sidecar arguments must be an object, not {other}"),
        };
        request.insert("id".into(), json!(id));
        request.insert("cmd".into(), json!(cmd));
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, tx);
        let mut line = serde_json::to_vec(&Value::Object(request))?;
        line.push(b'\n');
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        stdin
            .write_all(&line)
            .and_then(|()| stdin.flush())
            .with_context(|| format!("sending {cmd} to the sidecar: {}", self.stderr_tail()))?;
        Ok(rx)
    }

    fn finish(
        &self,
        cmd: &str,
        answer: Option<Result<Answer, oneshot::error::RecvError>>,
    ) -> Result<Value> {
        match answer {
            None => bail!("sidecar {cmd}: no answer within {CALL_TIMEOUT:?}"),
            Some(Err(_)) => bail!("sidecar {cmd}: the sidecar exited; {}", self.stderr_tail()),
            Some(Ok(Err(error))) => bail!("sidecar {cmd}: {error}"),
            Some(Ok(Ok(value))) => Ok(value),
        }
    }

    /// Send one request and wait for its answer (`ok` value, or the error text as
    /// an error).
    pub async fn call(&self, cmd: &str, args: Value) -> Result<Value> {
        let rx = self.send(cmd, args)?;
        let answer = tokio::time::timeout(CALL_TIMEOUT, rx).await.ok();
        self.finish(cmd, answer)
    }

    /// [`Sidecar::call`] for code outside an async runtime.
    pub fn call_blocking(&self, cmd: &str, args: Value) -> Result<Value> {
        let rx = self.send(cmd, args)?;
        let (tx, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(rx.blocking_recv());
        });
        let answer = done.recv_timeout(CALL_TIMEOUT).ok();
        self.finish(cmd, answer)
    }

    /// The last lines the sidecar wrote to stderr.
    pub fn stderr_tail(&self) -> String {
        let log = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        let skip = log.len().saturating_sub(40);
        log.iter()
            .skip(skip)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Whether the sidecar process still runs.
    pub fn is_running(&self) -> bool {
        let mut process = self.process.lock().unwrap_or_else(|p| p.into_inner());
        process.try_exit_status().ok().flatten().is_none()
    }

    /// y-redis 0.1.6's merge of one stream read (`mergeMessages`): the frames the
    /// server would send (none, or one frame holding every merged message back to
    /// back).
    pub fn merge_messages(&self, messages: &[Vec<u8>]) -> Result<Vec<Vec<u8>>> {
        let hexes: Vec<String> = messages.iter().map(hex::encode).collect();
        let frames = self.call_blocking("mergeMessages", json!({ "messages": hexes }))?;
        hex_list(&frames)
    }

    /// The content `{t, m, a}` of a fresh yjs doc with these v1 updates applied.
    pub fn content(&self, updates: &[Vec<u8>]) -> Result<Value> {
        let hexes: Vec<String> = updates.iter().map(hex::encode).collect();
        self.call_blocking("content", json!({ "updates": hexes }))
    }

    /// [`Sidecar::content`] from async code.
    pub async fn content_async(&self, updates: &[Vec<u8>]) -> Result<Value> {
        let hexes: Vec<String> = updates.iter().map(hex::encode).collect();
        self.call("content", json!({ "updates": hexes })).await
    }

    /// yjs's v1 `mergeUpdates`.
    pub fn merge_updates(&self, updates: &[Vec<u8>]) -> Result<Vec<u8>> {
        let hexes: Vec<String> = updates.iter().map(hex::encode).collect();
        let merged = self.call_blocking("mergeUpdates", json!({ "updates": hexes }))?;
        let text = merged.as_str().context("mergeUpdates answers hex")?;
        Ok(hex::decode(text)?)
    }

    /// Open a y-websocket 2.1.0 provider named `name` on `{base}/{room}`; returns
    /// once it synced. `token` is sent as the `yauth` query parameter.
    pub async fn open_client<'a>(
        &'a self,
        name: &str,
        base: &str,
        room: &str,
        token: Option<&str>,
    ) -> Result<JsClient<'a>> {
        self.open_provider(name, base, room, token, YWebsocket::V2)
            .await
    }

    /// [`Sidecar::open_client`] with a provider of the given y-websocket version.
    pub async fn open_provider<'a>(
        &'a self,
        name: &str,
        base: &str,
        room: &str,
        token: Option<&str>,
        version: YWebsocket,
    ) -> Result<JsClient<'a>> {
        let mut args = json!({
            "client": name,
            "url": base,
            "room": room,
            "ywsMajor": version.major(),
        });
        if let Some(token) = token {
            args["token"] = json!(token);
        }
        self.call("clientOpen", args).await?;
        Ok(JsClient {
            sidecar: self,
            name: name.to_string(),
        })
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("sidecar stderr at the failure:\n{}", self.stderr_tail());
        }
    }
}

fn hex_list(value: &Value) -> Result<Vec<Vec<u8>>> {
    value
        .as_array()
        .ok_or_else(|| anyhow!("expected a list of hex strings, got {value}"))?
        .iter()
        .map(|h| {
            let text = h.as_str().ok_or_else(|| anyhow!("not hex: {h}"))?;
            Ok(hex::decode(text)?)
        })
        .collect()
}

/// The y-websocket release a sidecar provider comes from: 2.1.0, the one y-redis
/// 0.1.6 was captured with, or 3.1.0, what applications use today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum YWebsocket {
    /// y-websocket 2.1.0.
    V2,
    /// y-websocket 3.1.0.
    V3,
}

impl YWebsocket {
    fn major(self) -> u8 {
        match self {
            YWebsocket::V2 => 2,
            YWebsocket::V3 => 3,
        }
    }
}

/// A y-websocket provider with its own yjs doc, living in the sidecar.
pub struct JsClient<'a> {
    sidecar: &'a Sidecar,
    name: String,
}

impl JsClient<'_> {
    /// The provider's name in the sidecar.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Apply `ops` to the doc in one transaction (sent by the provider if online).
    pub async fn edit(&self, ops: &[EditOp]) -> Result<()> {
        let ops: Vec<Value> = ops.iter().map(EditOp::to_sidecar).collect();
        self.sidecar
            .call("clientEdit", json!({ "client": self.name, "ops": ops }))
            .await?;
        Ok(())
    }

    /// The WebSocket extensions the server agreed to on the provider's
    /// connection (empty when none), `None` while it has no connection.
    pub async fn extensions(&self) -> Result<Option<String>> {
        let answer = self
            .sidecar
            .call("clientExtensions", json!({ "client": self.name }))
            .await?;
        Ok(answer.as_str().map(str::to_string))
    }

    /// The doc's content `{t, m, a}` as yjs sees it.
    pub async fn content(&self) -> Result<Value> {
        self.sidecar
            .call("clientContent", json!({ "client": self.name }))
            .await
    }

    /// Set the local awareness state (`null` clears it).
    pub async fn set_awareness(&self, state: Value) -> Result<()> {
        self.sidecar
            .call(
                "clientAwareness",
                json!({ "client": self.name, "state": state }),
            )
            .await?;
        Ok(())
    }

    /// The awareness states the provider knows, by client id.
    pub async fn awareness(&self) -> Result<HashMap<u64, Value>> {
        let states = self
            .sidecar
            .call("clientAwarenessStates", json!({ "client": self.name }))
            .await?;
        let map = states
            .as_object()
            .ok_or_else(|| anyhow!("awareness states: {states}"))?;
        map.iter()
            .map(|(id, state)| Ok((id.parse::<u64>()?, state.clone())))
            .collect()
    }

    /// Go offline (edits stay local until [`JsClient::connect`]).
    pub async fn disconnect(&self) -> Result<()> {
        self.sidecar
            .call("clientDisconnect", json!({ "client": self.name }))
            .await?;
        Ok(())
    }

    /// Come back online; returns once synced again.
    pub async fn connect(&self) -> Result<()> {
        self.sidecar
            .call("clientConnect", json!({ "client": self.name }))
            .await?;
        Ok(())
    }

    /// Close the provider and forget the client.
    pub async fn close(self) -> Result<()> {
        self.sidecar
            .call("clientClose", json!({ "client": self.name }))
            .await?;
        Ok(())
    }
}
