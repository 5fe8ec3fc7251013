//! One WebSocket connection: initial sync, then client messages to the stream
//! and room messages to the client (compat notes section 2).

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::auth::Access;
use crate::doc::load_doc;
use crate::metrics::{self, Metrics};
use crate::protocol::{self, ClientAction};
use crate::server::{AppState, DOC_ID};

/// WebSocket close codes this server sends.
mod close {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// A text frame: the protocol is binary.
    pub const UNSUPPORTED: u16 = 1003;
    /// A frame that does not decode as a y-websocket message.
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// The document could not be loaded or the bus refused a message.
    pub const INTERNAL: u16 = 1011;
    /// The connection fell behind its room; reconnecting resyncs it.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long one frame may take to leave before the client counts as stuck.
const SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Keeps the open-connections gauge right however the connection ends.
struct OpenConnection(Arc<Metrics>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        metrics::dec(&self.0.connections_open);
    }
}

/// Why a connection ended, for the close frame and the log line.
enum End {
    ClientClosed,
    Shutdown,
    FellBehind,
    Refused(u16, String),
}

fn close_frame(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

/// Serve one connection of `room` until the client leaves, the instance shuts
/// down, or the client misbehaves.
pub async fn serve(socket: WebSocket, state: Arc<AppState>, room: String, access: Access) {
    metrics::inc(&state.metrics.connections_total);
    metrics::inc(&state.metrics.connections_open);
    let _open = OpenConnection(Arc::clone(&state.metrics));
    let stream_key = protocol::stream_key(state.streams.prefix(), &room, DOC_ID);
    // Subscribe before loading (compat notes 2.3), so nothing falls between.
    let (membership, receiver) = state.rooms.join(&stream_key);
    let (mut sink, mut incoming) = socket.split();

    let loaded = state
        .rooms
        .initial_sync(&stream_key, || async {
            load_doc(
                state.streams.as_ref(),
                state.storage.as_ref(),
                &stream_key,
                &room,
                DOC_ID,
            )
            .await
            .and_then(|doc| doc.initial_messages())
            .map_err(|err| err.to_string())
        })
        .await;
    let sync = match loaded {
        Ok((sync, moved)) => {
            if moved {
                // The reader follows the room from its next read; waking it only
                // saves up to one block time, so it never delays this client.
                let streams = Arc::clone(&state.streams);
                tokio::spawn(async move {
                    if let Err(err) = streams.wake_reader().await {
                        tracing::debug!(%err, "could not wake the stream reader");
                    }
                });
            }
            tracing::debug!(%room, last_id = %sync.last_id, "document loaded");
            sync
        }
        Err(err) => {
            tracing::error!(%room, %err, "could not load the document");
            let _ = sink
                .send(close_frame(close::INTERNAL, "document unavailable"))
                .await;
            return;
        }
    };
    let initial = [Some(sync.step1), Some(sync.step2), sync.awareness];
    for message in initial.into_iter().flatten() {
        if sink.send(WsMessage::Binary(message)).await.is_err() {
            return;
        }
    }

    // Room messages go out on their own task, so a client that sends a lot is
    // never dropped for not reading while its messages are appended.
    let writer_stop = CancellationToken::new();
    let mut writer = tokio::spawn(write_loop(sink, receiver, writer_stop.clone()));

    // The client id and clock of this connection's awareness, to announce its
    // departure when it closes (compat notes 2.6).
    let mut awareness: Option<(u64, u64)> = None;
    let mut writer_end = None;
    let end = loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => break End::Shutdown,
            ended = &mut writer => {
                let (sink, end) = match ended {
                    Ok(ended) => ended,
                    Err(_) => return,
                };
                writer_end = Some(sink);
                break end.unwrap_or(End::ClientClosed);
            }
            frame = incoming.next() => match frame {
                None | Some(Ok(WsMessage::Close(_))) => break End::ClientClosed,
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                // Everything a reader sends is dropped unread, awareness included
                // (compat notes 2.5), so it never has a departure to announce.
                Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))) if access != Access::ReadWrite => {}
                Some(Ok(WsMessage::Text(_))) => {
                    break End::Refused(close::UNSUPPORTED, "text frames are not y-websocket messages".into())
                }
                Some(Ok(WsMessage::Binary(frame))) => {
                    if let Err(end) = handle_frame(&state, &stream_key, frame, &mut awareness).await {
                        break end;
                    }
                }
                Some(Err(err)) => {
                    let text = err.to_string();
                    if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                        break End::Refused(close::TOO_BIG, format!("message too big: {text}"));
                    }
                    break End::ClientClosed;
                }
            },
        }
    };
    let sink = match writer_end {
        Some(sink) => Some(sink),
        None => {
            writer_stop.cancel();
            writer.await.ok().map(|(sink, _)| sink)
        }
    };

    let close = match &end {
        End::ClientClosed => {
            tracing::debug!(%room, "client disconnected");
            None
        }
        End::Shutdown => Some(close_frame(close::GOING_AWAY, "server shutting down")),
        End::FellBehind => {
            metrics::inc(&state.metrics.connections_dropped_slow);
            tracing::info!(%room, "closing a connection that fell behind");
            Some(close_frame(
                close::TRY_AGAIN_LATER,
                "too far behind, reconnect",
            ))
        }
        End::Refused(code, reason) => {
            if *code != close::INTERNAL {
                metrics::inc(&state.metrics.messages_refused);
            }
            tracing::warn!(%room, code, %reason, "closing the connection");
            Some(close_frame(*code, reason))
        }
    };
    if let (Some(mut sink), Some(frame)) = (sink, close) {
        let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await;
    }
    drop(membership);
    if let Some((client_id, clock)) = awareness {
        let removal = protocol::encode_awareness_removal(client_id, clock);
        if let Err(err) = state.streams.append(&stream_key, &removal).await {
            tracing::warn!(%room, %err, "could not announce a client's departure");
        }
    }
}

/// Send room messages to the client until the room drops it (it fell behind),
/// the client stops taking them, or `stop`. Hands the sink back for the close.
async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut receiver: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) -> (SplitSink<WebSocket, WsMessage>, Option<End>) {
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => return (sink, None),
            message = receiver.recv() => message,
        };
        let Some(message) = message else {
            return (sink, Some(End::FellBehind));
        };
        // Every message already queued goes out with this one, in one flush:
        // still one frame per message, but fewer writes under bursts.
        let mut batch = vec![message];
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(_) => break,
            }
        }
        let send = async {
            for message in batch {
                sink.feed(WsMessage::Binary(message)).await?;
            }
            sink.flush().await
        };
        match tokio::time::timeout(SEND_TIMEOUT, send).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return (sink, Some(End::ClientClosed)),
            Err(_) => return (sink, Some(End::FellBehind)),
        }
    }
}

/// Most messages written in one flush.
const MAX_BATCH: usize = 64;

/// Validate one frame from a writer and append what must be appended.
async fn handle_frame(
    state: &AppState,
    stream_key: &str,
    frame: Bytes,
    awareness: &mut Option<(u64, u64)>,
) -> Result<(), End> {
    let action = protocol::client_action(&frame)
        .map_err(|err| End::Refused(close::INVALID_PAYLOAD, format!("invalid message: {err}")))?;
    let ClientAction::Append {
        message,
        awareness: entry,
    } = action
    else {
        return Ok(());
    };
    if let Some((client_id, clock)) = entry {
        match awareness {
            None => *awareness = Some((client_id, clock)),
            Some((known, last)) if *known == client_id => *last = clock,
            Some(_) => {}
        }
    }
    state
        .streams
        .append(stream_key, &message)
        .await
        .map(|()| metrics::inc(&state.metrics.messages_appended))
        .map_err(|err| {
            metrics::inc(&state.metrics.append_errors);
            tracing::error!(stream = stream_key, %err, "could not append a message");
            End::Refused(close::INTERNAL, "message not stored, reconnect".into())
        })
}
