//! Upgrade requests written by hand, so that a test sees exactly what a server
//! answered: the HTTP status of a refusal, the subprotocol of an acceptance, or no
//! answer at all (a server still waiting for something). WebSocket client
//! libraries hide these: they turn refusals into errors and fail handshakes whose
//! subprotocol they did not expect, which is precisely what auth tests compare.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Largest response head read before giving up (a handshake answer is tiny).
const MAX_HEAD: usize = 64 * 1024;

/// How a wait for frames on an upgraded connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The frames were all there.
    Done,
    /// The time ran out with the connection still open: a slow server.
    TimedOut,
    /// The server closed the connection: with a close frame (its code, if it
    /// gave one) or, `code: None`, by ending the stream.
    Closed {
        /// The close code of the server's close frame.
        code: Option<u16>,
    },
    /// The connection broke: reset without a close frame, or a frame the
    /// client could not accept (the error says which).
    Broken(String),
}

/// What a server answered to one upgrade request.
pub struct Handshake {
    status: u16,
    headers: Vec<(String, String)>,
    socket: Option<WebSocketStream<TcpStream>>,
}

impl std::fmt::Debug for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handshake")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .finish_non_exhaustive()
    }
}

/// Send an upgrade request for `url` (`ws://host:port/path?query`) with one
/// `Sec-WebSocket-Protocol` header line per entry of `protocol_lines` (none, one
/// or several lines, each sent as given), and read the answer. `Ok(None)` means
/// the server had not answered within `timeout`; any other failure (nothing
/// listening, a response that is not HTTP) is an error.
pub async fn upgrade(
    url: &str,
    protocol_lines: &[&str],
    timeout: Duration,
) -> Result<Option<Handshake>> {
    let uri: Uri = url.parse().with_context(|| format!("parsing {url}"))?;
    let host = uri.host().ok_or_else(|| anyhow!("{url} has no host"))?;
    let port = uri.port_u16().unwrap_or(80);
    let target = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut stream = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    let mut request = format!(
        "GET {target} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    for line in protocol_lines {
        request.push_str(&format!("Sec-WebSocket-Protocol: {line}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await?;

    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            break end;
        }
        if buf.len() > MAX_HEAD {
            bail!("{url}: response head larger than {MAX_HEAD} bytes");
        }
        let mut chunk = [0u8; 4096];
        let read = match tokio::time::timeout(timeout, stream.read(&mut chunk)).await {
            Err(_) => return Ok(None),
            Ok(read) => read.with_context(|| format!("{url}: reading the answer"))?,
        };
        if read == 0 {
            bail!(
                "{url}: connection closed without an answer (got {:?})",
                String::from_utf8_lossy(&buf)
            );
        }
        buf.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let rest = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("{url}: not an HTTP status line: {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let socket = if status == 101 {
        Some(WebSocketStream::from_partially_read(stream, rest, Role::Client, None).await)
    } else {
        None
    };
    Ok(Some(Handshake {
        status,
        headers,
        socket,
    }))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Handshake {
    /// The HTTP status: 101 when the server upgraded, e.g. 401 when it refused.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of a response header (`name` in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The subprotocol the server selected (`Sec-WebSocket-Protocol` of the answer).
    pub fn subprotocol(&self) -> Option<&str> {
        self.header("sec-websocket-protocol")
    }

    /// Whether the connection was upgraded.
    pub fn is_open(&self) -> bool {
        self.socket.is_some()
    }

    fn socket(&mut self) -> Result<&mut WebSocketStream<TcpStream>> {
        let status = self.status;
        self.socket
            .as_mut()
            .ok_or_else(|| anyhow!("the server answered {status}, there is no connection"))
    }

    /// Send one binary frame on the upgraded connection.
    pub async fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.socket()?
            .send(Message::Binary(frame.to_vec().into()))
            .await?;
        Ok(())
    }

    /// The binary frames that arrive until `done` holds for the frames so far, or
    /// `timeout` passes, or the server closes the connection.
    pub async fn recv_until(
        &mut self,
        timeout: Duration,
        done: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(self.recv_until_ended(timeout, done).await?.0)
    }

    /// [`Handshake::recv_until`], also telling how the wait ended: a slow server
    /// ([`Ended::TimedOut`]) and one that closed the connection ([`Ended::Closed`],
    /// [`Ended::Broken`]) are different findings.
    pub async fn recv_until_ended(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Result<(Vec<Vec<u8>>, Ended)> {
        let socket = self.socket()?;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut frames = Vec::new();
        let ended = loop {
            if done(&frames) {
                break Ended::Done;
            }
            match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => break Ended::TimedOut,
                Ok(None) => break Ended::Closed { code: None },
                Ok(Some(Ok(Message::Close(frame)))) => {
                    break Ended::Closed {
                        code: frame.map(|f| u16::from(f.code)),
                    }
                }
                Ok(Some(Err(e))) => break Ended::Broken(e.to_string()),
                Ok(Some(Ok(Message::Binary(frame)))) => frames.push(frame.to_vec()),
                Ok(Some(Ok(_))) => {}
            }
        };
        Ok((frames, ended))
    }

    /// Close the connection normally (nothing to do after a refusal).
    pub async fn close(mut self) {
        if let Some(socket) = self.socket.as_mut() {
            let _ = socket.close(None).await;
            // Wait for the server's close frame, so that its side has seen the end.
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                while let Some(Ok(_)) = socket.next().await {}
            })
            .await;
        }
    }
}
