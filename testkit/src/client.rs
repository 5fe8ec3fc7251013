//! Test clients that speak y-websocket on their own (independent of the
//! server's protocol code): a raw frame client and a Yjs client with a yrs doc.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use yrs::types::ToJson;
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, Map, MapRef, ReadTxn, StateVector, Text, TextRef,
    Transact, Update,
};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// lib0 varuint.
pub fn write_var(buf: &mut Vec<u8>, mut n: u64) {
    while n > 0x7f {
        buf.push(0x80 | (n as u8 & 0x7f));
        n >>= 7;
    }
    buf.push(n as u8);
}

/// lib0 varUint8Array.
pub fn write_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    write_var(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
}

/// A reader over lib0-encoded bytes.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Read from the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }
    /// A varuint.
    pub fn var(&mut self) -> Result<u64> {
        let mut n = 0u64;
        let mut shift = 0;
        loop {
            let b = *self
                .bytes
                .get(self.pos)
                .ok_or_else(|| anyhow!("truncated"))?;
            self.pos += 1;
            n |= ((b & 0x7f) as u64) << shift;
            if b < 0x80 {
                return Ok(n);
            }
            shift += 7;
            if shift > 63 {
                bail!("varuint too long");
            }
        }
    }
    /// A varUint8Array.
    pub fn bytes(&mut self) -> Result<&'a [u8]> {
        let len = self.var()? as usize;
        let end = self.pos.checked_add(len).filter(|e| *e <= self.bytes.len());
        let end = end.ok_or_else(|| anyhow!("truncated"))?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    /// Whether everything was read.
    pub fn done(&self) -> bool {
        self.pos == self.bytes.len()
    }
    /// How many bytes were read so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

/// A sync message `00 sub payload`.
pub fn sync_message(sub: u64, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0];
    write_var(&mut buf, sub);
    write_bytes(&mut buf, payload);
    buf
}

/// An awareness message with the given (client, clock, json) entries.
pub fn awareness_message(entries: &[(u64, u64, &str)]) -> Vec<u8> {
    let mut inner = Vec::new();
    write_var(&mut inner, entries.len() as u64);
    for (client, clock, json) in entries {
        write_var(&mut inner, *client);
        write_var(&mut inner, *clock);
        write_bytes(&mut inner, json.as_bytes());
    }
    let mut buf = vec![1];
    write_bytes(&mut buf, &inner);
    buf
}

/// Decode an awareness payload into (client, clock, json) entries.
pub fn decode_awareness(payload: &[u8]) -> Result<Vec<(u64, u64, String)>> {
    let mut r = Reader::new(payload);
    let n = r.var()?;
    let mut out = Vec::new();
    for _ in 0..n {
        let client = r.var()?;
        let clock = r.var()?;
        let json = String::from_utf8(r.bytes()?.to_vec())?;
        out.push((client, clock, json));
    }
    Ok(out)
}

async fn connect_socket(url: &str, protocols: Option<&str>) -> Result<Socket> {
    let mut request = url.into_client_request()?;
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(protocols)?);
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    Ok(socket)
}

/// The outcome of a handshake that the server may refuse.
pub enum Handshake {
    /// The server upgraded the connection.
    Accepted {
        /// The connection.
        client: Box<RawClient>,
        /// The `Sec-WebSocket-Protocol` value of the server's 101 response, if any.
        protocol: Option<String>,
    },
    /// The server answered the upgrade request with another HTTP status.
    Refused {
        /// The HTTP status code (for instance 401).
        status: u16,
        /// Whether the refusal carried an `Upgrade` header (it must not).
        upgrade_header: bool,
    },
}

/// A client that sends and receives raw frames, for byte-level checks.
pub struct RawClient {
    socket: Socket,
    /// The close code received, once the server closed.
    pub close_code: Option<u16>,
    /// The reason of the server's close frame, once it closed with one.
    pub close_reason: Option<String>,
}

impl RawClient {
    /// Connect to `url` (`ws://host:port/room`).
    pub async fn connect(url: &str) -> Result<Self> {
        Ok(Self {
            socket: connect_socket(url, None).await?,
            close_code: None,
            close_reason: None,
        })
    }

    /// Connect with a tiny TCP receive buffer, to play a client on a slow link.
    pub async fn connect_slow(url: &str) -> Result<Self> {
        let request = url.into_client_request()?;
        let host = request
            .uri()
            .host()
            .ok_or_else(|| anyhow!("no host"))?
            .to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await?
            .next()
            .ok_or_else(|| anyhow!("no address for {host}"))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_recv_buffer_size(4096)?;
        let stream = socket.connect(addr).await?;
        let (socket, _) =
            tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)).await?;
        Ok(Self {
            socket,
            close_code: None,
            close_reason: None,
        })
    }

    /// Connect offering the given `Sec-WebSocket-Protocol` value.
    pub async fn connect_with_protocols(url: &str, protocols: &str) -> Result<Self> {
        Ok(Self {
            socket: connect_socket(url, Some(protocols)).await?,
            close_code: None,
            close_reason: None,
        })
    }

    /// Attempt a handshake, optionally offering a `Sec-WebSocket-Protocol` value,
    /// and report either the open connection with the protocol the server chose,
    /// or the HTTP status of the refusal. Other failures (nothing listening, a
    /// broken response) are errors.
    pub async fn try_connect(url: &str, protocols: Option<&str>) -> Result<Handshake> {
        let headers: &[(&str, &str)] = match protocols {
            Some(protocols) => &[("Sec-WebSocket-Protocol", protocols)],
            None => &[],
        };
        Self::try_connect_with_headers(url, headers).await
    }

    /// [`RawClient::try_connect`] with these extra request headers (an
    /// `Origin`, say).
    pub async fn try_connect_with_headers(
        url: &str,
        headers: &[(&str, &str)],
    ) -> Result<Handshake> {
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())?,
                HeaderValue::from_str(value)?,
            );
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, response)) => {
                let protocol = response
                    .headers()
                    .get("Sec-WebSocket-Protocol")
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
                Ok(Handshake::Accepted {
                    client: Box::new(Self {
                        socket,
                        close_code: None,
                        close_reason: None,
                    }),
                    protocol,
                })
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => Ok(Handshake::Refused {
                status: response.status().as_u16(),
                upgrade_header: response.headers().contains_key("Upgrade"),
            }),
            Err(err) => Err(anyhow!(err).context(format!("connecting to {url}"))),
        }
    }

    /// Send one binary frame.
    pub async fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.socket
            .send(Message::Binary(frame.to_vec().into()))
            .await?;
        Ok(())
    }

    /// Send one text frame.
    pub async fn send_text(&mut self, text: &str) -> Result<()> {
        self.socket.send(Message::Text(text.into())).await?;
        Ok(())
    }

    /// The next binary frame, `None` on timeout or close.
    pub async fn recv(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()??;
            match next {
                Ok(Message::Binary(b)) => return Some(b.to_vec()),
                Ok(Message::Close(frame)) => {
                    self.close_code =
                        Some(frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005));
                    self.close_reason = frame.map(|f| f.reason.to_string());
                    return None;
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Every frame arriving within `window`.
    pub async fn recv_all(&mut self, window: Duration) -> Vec<Vec<u8>> {
        let deadline = tokio::time::Instant::now() + window;
        let mut out = Vec::new();
        while let Some(frame) = self
            .recv(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
        {
            out.push(frame);
        }
        out
    }

    /// Wait until the server closes the connection; returns its close code.
    pub async fn wait_closed(&mut self, timeout: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + timeout;
        while tokio::time::Instant::now() < deadline {
            if self.close_code.is_some() {
                break;
            }
            match tokio::time::timeout_at(deadline, self.socket.next()).await {
                Ok(Some(Ok(Message::Close(frame)))) => {
                    self.close_code =
                        Some(frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005));
                    self.close_reason = frame.map(|f| f.reason.to_string());
                }
                Ok(Some(Ok(_))) => continue,
                Ok(Some(Err(_))) | Ok(None) => {
                    self.close_code.get_or_insert(1006);
                }
                Err(_) => break,
            }
        }
        self.close_code
    }

    /// Close normally.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// Shared state of a [`YClient`], updated by its reader task.
#[derive(Default)]
struct Shared {
    synced: bool,
    closed: Option<u16>,
    awareness: HashMap<u64, (u64, String)>,
    frames: usize,
}

/// A Yjs client: a yrs doc kept in sync with a room over y-websocket, like a
/// y-websocket provider (it answers step 1 with step 2, applies updates, sends
/// its own edits as updates).
pub struct YClient {
    /// The client's document.
    pub doc: Doc,
    outbound: mpsc::UnboundedSender<Vec<u8>>,
    shared: Arc<Mutex<Shared>>,
    changed: Arc<Notify>,
    awareness_clock: u64,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Drop for YClient {
    fn drop(&mut self) {
        self.reader.abort();
        self.writer.abort();
    }
}

impl YClient {
    /// Connect to `url` (`ws://host:port/room`) with a fresh doc.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, Doc::new(), None).await
    }

    /// Connect with a given doc (e.g. one with offline edits) and optional
    /// `Sec-WebSocket-Protocol` value.
    pub async fn connect_with(url: &str, doc: Doc, protocols: Option<&str>) -> Result<Self> {
        let socket = connect_socket(url, protocols).await?;
        let (mut sink, mut stream) = socket.split();
        let (outbound, mut outbound_rx) = mpsc::unbounded_channel::<Vec<u8>>();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let changed = Arc::new(Notify::new());

        let writer = tokio::spawn(async move {
            while let Some(frame) = outbound_rx.recv().await {
                if sink.send(Message::Binary(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });

        // Local edits go out as updates; remote ones are applied with an origin
        // so they are not echoed.
        let tx = outbound.clone();
        doc.observe_update_v1(
            "testkit-client",
            move |txn: &yrs::TransactionMut, event: &yrs::UpdateEvent| {
                if txn.origin().is_none() {
                    let _ = tx.send(sync_message(2, &event.update));
                }
            },
        )
        .map_err(|e| anyhow!("observing the doc: {e}"))?;

        // Announce our state like a provider does.
        let sv = doc.transact().state_vector().encode_v1();
        outbound.send(sync_message(0, &sv))?;

        let reader_doc = doc.clone();
        let reader_shared = Arc::clone(&shared);
        let reader_changed = Arc::clone(&changed);
        let reader_tx = outbound.clone();
        let reader = tokio::spawn(async move {
            while let Some(message) = stream.next().await {
                match message {
                    Ok(Message::Binary(frame)) => {
                        if let Err(err) =
                            handle_frame(&reader_doc, &reader_shared, &reader_tx, &frame)
                        {
                            eprintln!("test client: bad frame from server: {err}");
                        }
                        reader_changed.notify_waiters();
                    }
                    Ok(Message::Close(frame)) => {
                        if let Ok(mut s) = reader_shared.lock() {
                            s.closed = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            if let Ok(mut s) = reader_shared.lock() {
                s.closed.get_or_insert(1006);
            }
            reader_changed.notify_waiters();
        });

        Ok(Self {
            doc,
            outbound,
            shared,
            changed,
            awareness_clock: 0,
            reader,
            writer,
        })
    }

    fn with_shared<T>(&self, f: impl FnOnce(&Shared) -> T) -> T {
        let guard = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Wait until `check` holds, re-checking after each received frame.
    pub async fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if check(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                if check(self) {
                    return Ok(());
                }
                let content = self.content().to_string();
                let shown: String = content.chars().take(300).collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what}; content ({} chars) {shown}",
                    content.len()
                );
            }
        }
    }

    /// Wait for the server's sync step 2.
    pub async fn wait_synced(&self, timeout: Duration) -> Result<()> {
        self.wait_until("sync", timeout, |c| c.with_shared(|s| s.synced))
            .await
    }

    /// Whether the server closed the connection, and with which code.
    pub fn closed(&self) -> Option<u16> {
        self.with_shared(|s| s.closed)
    }

    /// Number of frames received so far.
    pub fn frames(&self) -> usize {
        self.with_shared(|s| s.frames)
    }

    /// Insert into text `name`.
    pub fn text_insert(&self, name: &str, index: u32, text: &str) {
        let t: TextRef = self.doc.get_or_insert_text(name);
        let mut txn = self.doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, index.min(len), text);
    }

    /// Delete from text `name`.
    pub fn text_delete(&self, name: &str, index: u32, len: u32) {
        let t: TextRef = self.doc.get_or_insert_text(name);
        let mut txn = self.doc.transact_mut();
        let total = t.len(&txn);
        let index = index.min(total);
        t.remove_range(&mut txn, index, len.min(total - index));
    }

    /// Set `key` in map `name`.
    pub fn map_set(&self, name: &str, key: &str, value: impl Into<Any>) {
        let m: MapRef = self.doc.get_or_insert_map(name);
        let mut txn = self.doc.transact_mut();
        m.insert(&mut txn, key, value.into());
    }

    /// Push onto array `name`.
    pub fn array_push(&self, name: &str, value: impl Into<Any>) {
        let a: ArrayRef = self.doc.get_or_insert_array(name);
        let mut txn = self.doc.transact_mut();
        a.push_back(&mut txn, value.into());
    }

    /// Length in bytes of the text `name`.
    pub fn text_len(&self, name: &str) -> u32 {
        let t: TextRef = self.doc.get_or_insert_text(name);
        let txn = self.doc.transact();
        t.len(&txn)
    }

    /// The text `name`.
    pub fn text(&self, name: &str) -> String {
        let t: TextRef = self.doc.get_or_insert_text(name);
        let txn = self.doc.transact();
        t.get_string(&txn)
    }

    /// `{"t": text t, "m": map m, "a": array a}` as JSON.
    pub fn content(&self) -> serde_json::Value {
        doc_content(&self.doc)
    }

    /// Publish our awareness state (JSON text, `null` to leave).
    pub fn set_awareness(&mut self, json: &str) -> Result<()> {
        self.awareness_clock += 1;
        let id = self.doc.client_id().get();
        self.outbound
            .send(awareness_message(&[(id, self.awareness_clock, json)]))?;
        Ok(())
    }

    /// Awareness states known to this client (removed ones excluded).
    pub fn awareness(&self) -> HashMap<u64, String> {
        self.with_shared(|s| {
            s.awareness
                .iter()
                .filter(|(_, (_, state))| state != "null")
                .map(|(id, (_, state))| (*id, state.clone()))
                .collect()
        })
    }

    /// Send a raw frame.
    pub fn send_raw(&self, frame: Vec<u8>) -> Result<()> {
        self.outbound.send(frame)?;
        Ok(())
    }
}

/// `{"t": text t, "m": map m, "a": array a}` of a doc, as JSON.
pub fn doc_content(doc: &Doc) -> serde_json::Value {
    let t: TextRef = doc.get_or_insert_text("t");
    let m: MapRef = doc.get_or_insert_map("m");
    let a: ArrayRef = doc.get_or_insert_array("a");
    let txn = doc.transact();
    let to_json = |any: Any| -> serde_json::Value {
        let mut s = String::new();
        any.to_json(&mut s);
        serde_json::from_str(&s).unwrap_or(serde_json::Value::Null)
    };
    serde_json::json!({
        "t": t.get_string(&txn),
        "m": to_json(m.to_json(&txn)),
        "a": to_json(a.to_json(&txn)),
    })
}

/// Origin marking updates that came from the server.
const REMOTE: &str = "remote";

fn handle_frame(
    doc: &Doc,
    shared: &Mutex<Shared>,
    outbound: &mpsc::UnboundedSender<Vec<u8>>,
    frame: &[u8],
) -> Result<()> {
    let mut shared = shared.lock().map_err(|_| anyhow!("poisoned"))?;
    shared.frames += 1;
    // Like y-websocket clients, read only the first message of a frame.
    let mut r = Reader::new(frame);
    match r.var()? {
        0 => {
            let sub = r.var()?;
            let payload = r.bytes()?;
            match sub {
                0 => {
                    let sv = StateVector::decode_v1(payload)?;
                    let update = doc.transact().encode_state_as_update_v1(&sv);
                    let _ = outbound.send(sync_message(1, &update));
                }
                1 | 2 => {
                    let update = Update::decode_v1(payload)?;
                    doc.transact_mut_with(REMOTE).apply_update(update)?;
                    if sub == 1 {
                        shared.synced = true;
                    }
                }
                other => bail!("unknown sync message {other}"),
            }
        }
        1 => {
            for (client, clock, json) in decode_awareness(r.bytes()?)? {
                let known = shared.awareness.get(&client).map(|(c, _)| *c);
                let accept = match known {
                    None => true,
                    Some(c) => c < clock || (c == clock && json == "null"),
                };
                if accept {
                    shared.awareness.insert(client, (clock, json));
                }
            }
        }
        other => bail!("unknown message type {other}"),
    }
    Ok(())
}
