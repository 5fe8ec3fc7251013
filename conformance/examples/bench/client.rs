//! The benchmark's own WebSocket client (tokio-tungstenite) for the scenarios
//! without load: idle connections and the initial sync of a large document.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A sync step 1 with an empty state vector, as a new client sends first.
const SYNC_STEP_1: [u8; 4] = [0, 0, 1, 0];

/// How long a connection may take to finish its initial sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

/// A client's buffers: a small read buffer, so that thousands of idle
/// connections cost the benchmark process little (tungstenite's default is
/// 128 KiB each), and room for documents of several megabytes.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .max_message_size(Some(256 << 20))
        .max_frame_size(Some(256 << 20))
}

/// Connect, send sync step 1 and wait for the server's sync step 2: the
/// initial sync of a new y-websocket client. Returns the socket and the bytes
/// of the document's messages: step 2, and the sync updates a server sends
/// before it when it cuts a large document into several messages.
pub async fn connect_synced(url: &str) -> Result<(Socket, usize)> {
    let work = async {
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(url, Some(config()), true)
                .await
                .with_context(|| format!("connecting to {url}"))?;
        socket
            .send(Message::Binary(SYNC_STEP_1.to_vec().into()))
            .await?;
        let mut document = 0;
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(frame))) if frame.starts_with(&[0, 1]) => {
                    return Ok((socket, document + frame.len()));
                }
                Some(Ok(Message::Binary(frame))) if frame.starts_with(&[0, 2]) => {
                    document += frame.len();
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => bail!("{url}: {err} before the initial sync"),
                None => bail!("{url}: closed before the initial sync"),
            }
        }
    };
    tokio::time::timeout(SYNC_TIMEOUT, work)
        .await
        .with_context(|| format!("{url}: no sync step 2 within {SYNC_TIMEOUT:?}"))?
}

/// Connect to `url`, send `update` as a sync update and wait up to `within`
/// for the server to send it back, which it does once the update is in the
/// room's stream. Returns the writer's socket, still open.
pub async fn write_document(url: &str, update: &[u8], within: Duration) -> Result<Socket> {
    let (mut writer, _) = connect_synced(url).await?;
    writer
        .send(Message::Binary(update_message(update).into()))
        .await
        .context("sending the document")?;
    tokio::time::timeout(within, async {
        loop {
            match writer.next().await {
                Some(Ok(Message::Binary(frame)))
                    if frame.starts_with(&[0, 2]) && frame.len() >= update.len() =>
                {
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => bail!("writing the document: {err}"),
                None => bail!("the server closed the writer's connection"),
            }
        }
    })
    .await
    .with_context(|| format!("the document did not come back within {within:?}"))??;
    Ok(writer)
}

/// Keep a connection open and read (and drop) whatever arrives, until it closes
/// or the returned task is aborted.
pub fn hold(mut socket: Socket) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move { while let Some(Ok(_)) = socket.next().await {} })
}

/// `00 02 <varuint length> <update>`: a y-websocket sync update message.
pub fn update_message(update: &[u8]) -> Vec<u8> {
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
