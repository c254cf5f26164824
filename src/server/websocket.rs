//! WebSocket transports: raw DDP (`/websocket`, one DDP message per text frame) and SockJS's
//! framed websocket (`/sockjs/<server>/<session>/websocket`: `o`, `h`, `a[...]`, `c[...]`).
//!
//! Owns the socket's read/write loop. It must not interpret DDP: text goes to the session's
//! [`Connection`], frames come from its outbound queue.

use super::ServerConfig;
use crate::session::{Batch, CloseReason, Connection, Hub, Transport};
use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;

/// How DDP messages are wrapped on this socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    Raw,
    SockJs,
}

/// The tungstenite configuration: small buffers (an idle socket must stay cheap) and a
/// maximum inbound message size.
pub fn websocket_config(config: &ServerConfig) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(config.ws_read_buffer_bytes)
        .write_buffer_size(config.ws_write_buffer_bytes)
        .max_write_buffer_size(config.max_message_bytes.max(1 << 20) * 2)
        .max_message_size(Some(config.max_message_bytes))
        .max_frame_size(Some(config.max_message_bytes))
}

/// Serves one upgraded socket until either side closes.
pub async fn serve_socket(
    upgraded: hyper::upgrade::Upgraded,
    hub: Arc<Hub>,
    config: Arc<ServerConfig>,
    framing: Framing,
    client_address: std::net::IpAddr,
) {
    let ws = WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        Role::Server,
        Some(websocket_config(&config)),
    )
    .await;
    let transport = match framing {
        Framing::Raw => Transport::WebSocket,
        Framing::SockJs => Transport::SockJsWebSocket,
    };
    let mut conn = Connection::new(hub.clone(), transport, Some(client_address));
    let outbound = conn.outbound().clone();
    let (mut sink, mut stream) = ws.split();
    let write_timeout = hub.config.outbound.max_drain_delay;
    if framing == Framing::SockJs && sink.send(Message::text("o")).await.is_err() {
        return;
    }
    let sockjs_heartbeat = config.sockjs_heartbeat;
    let mut shutting_down = false;
    let connect_deadline = tokio::time::sleep(config.connect_timeout);
    let mut connect_deadline = std::pin::pin!(connect_deadline);
    let close_reason = loop {
        let heartbeat = async {
            if framing == Framing::SockJs {
                tokio::time::sleep(sockjs_heartbeat).await
            } else {
                std::future::pending().await
            }
        };
        tokio::select! {
            biased;
            batch = outbound.next_batch() => {
                let (frames, closed) = match batch {
                    Batch::Frames(f) => (f, None),
                    Batch::Closed(reason, f) => (f, Some(reason)),
                };
                let write = write_frames(&mut sink, &frames, framing, &hub);
                match tokio::time::timeout(write_timeout, write).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break None,
                    Err(_) => {
                        tracing::warn!("slow consumer closed: socket not writable in time");
                        hub.metrics.slow_consumer_closed();
                        break Some(CloseReason::SlowConsumer);
                    }
                }
                if let Some(reason) = closed {
                    break Some(reason);
                }
            }
            _ = &mut connect_deadline, if conn.awaiting_connect() => {
                tracing::debug!("no connect message in time: closing");
                hub.metrics.timed_out(crate::session::metrics::Timeout::Connect);
                conn.close(CloseReason::ConnectTimeout);
            }
            _ = hub.shutdown.cancelled(), if !shutting_down => {
                shutting_down = true;
                conn.close(CloseReason::Shutdown);
            }
            _ = heartbeat => {
                if sink.send(Message::text("h")).await.is_err() {
                    break None;
                }
            }
            incoming = stream.next() => match incoming {
                Some(Ok(Message::Text(text))) => on_text(&mut conn, &text, framing),
                Some(Ok(Message::Binary(_))) => {
                    tracing::debug!("binary frame refused");
                    conn.on_binary();
                }
                Some(Ok(Message::Close(_))) | None => break None,
                Some(Ok(_)) => {}
                Some(Err(err)) => {
                    let reason = describe_read_error(&err);
                    tracing::debug!(error = %err, "websocket read failed");
                    if let Some((code, text)) = reason {
                        let _ = tokio::time::timeout(write_timeout, sink.send(close_message(code, text))).await;
                    }
                    break None;
                }
            },
        }
    };
    conn.close(close_reason.unwrap_or(CloseReason::Normal));
    if let Some(reason) = close_reason {
        let (code, text) = reason.code_and_text();
        let message = match framing {
            Framing::Raw => close_message(code, text),
            Framing::SockJs => Message::text(super::framing::sockjs_close_frame(code, text)),
        };
        let _ = tokio::time::timeout(write_timeout, async {
            let _ = sink.send(message).await;
            if framing == Framing::SockJs {
                let _ = sink.send(close_message(code, text)).await;
            }
            let _ = sink.close().await;
        })
        .await;
    }
}

fn close_message(code: u16, text: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: Utf8Bytes::from_static(text),
    }))
}

/// What the client is told when its frame could not be read.
fn describe_read_error(err: &WsError) -> Option<(u16, &'static str)> {
    match err {
        WsError::Capacity(_) => Some((1009, "Message too big")),
        WsError::Utf8(_) => Some((1007, "Invalid UTF-8 in text frame")),
        WsError::Protocol(_) => Some((1002, "WebSocket protocol error")),
        _ => None,
    }
}

fn on_text(conn: &mut Connection, text: &str, framing: Framing) {
    match framing {
        Framing::Raw => conn.on_text(text),
        Framing::SockJs => {
            if text.is_empty() {
                return;
            }
            match super::framing::parse_client_payload(text) {
                Some(messages) => {
                    for m in messages {
                        conn.on_text(&m);
                    }
                }
                None => {
                    tracing::debug!("broken SockJS framing");
                    conn.close(CloseReason::ProtocolViolation);
                }
            }
        }
    }
}

async fn write_frames<S>(
    sink: &mut S,
    frames: &[crate::protocol::Frame],
    framing: Framing,
    hub: &Hub,
) -> Result<(), WsError>
where
    S: futures_util::Sink<Message, Error = WsError> + Unpin,
{
    if frames.is_empty() {
        return Ok(());
    }
    let bytes: usize = frames.iter().map(|f| f.len()).sum();
    hub.metrics.frames_sent(frames.len() as u64, bytes as u64);
    match framing {
        Framing::Raw => {
            for frame in frames {
                let text = Utf8Bytes::try_from(frame.bytes().clone())
                    .map_err(|_| WsError::Utf8(String::from("frame")))?;
                sink.feed(Message::Text(text)).await?;
            }
        }
        Framing::SockJs => {
            sink.feed(Message::text(super::framing::array_frame(frames)))
                .await?;
        }
    }
    sink.flush().await
}
