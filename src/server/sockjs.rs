//! SockJS as Meteor's client uses it: `/sockjs/info`, and the `xhr_streaming`, `xhr`
//! (polling) and `xhr_send` transports, with their session table and the reaping of sessions
//! no receiver came back for. The framed websocket lives in `websocket.rs`.
//!
//! It must not interpret DDP: payloads go to the session's [`Connection`] as text.

use super::{cors, text_response, Body, ServerConfig};
use crate::protocol::Frame;
use crate::session::{Batch, CloseReason, Connection, Hub, Outbound, Transport};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// `a[...]`: DDP texts as a JSON array of strings.
pub fn array_frame(frames: &[Frame]) -> String {
    let mut out = String::with_capacity(frames.iter().map(|f| f.len() + 8).sum::<usize>() + 3);
    out.push_str("a[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        crate::model::value::write_str(frame.as_str(), &mut out);
    }
    out.push(']');
    out
}

/// A client payload: a JSON array of strings, or one JSON string. `None` is broken framing.
pub fn parse_client_payload(text: &str) -> Option<Vec<String>> {
    match serde_json::from_str::<serde_json::Value>(text).ok()? {
        serde_json::Value::String(s) => Some(vec![s]),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}

/// One SockJS session of the HTTP transports.
struct XhrSession {
    conn: Mutex<Connection>,
    outbound: Arc<Outbound>,
    receiver: Mutex<ReceiverState>,
}

struct ReceiverState {
    attached: bool,
    /// When the last receiver left (or the session was created).
    detached_since: Instant,
}

impl XhrSession {
    fn lock_conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims the receiver slot; false when another request holds it.
    fn attach(&self) -> bool {
        let mut r = self.receiver.lock().unwrap_or_else(|p| p.into_inner());
        if r.attached {
            return false;
        }
        r.attached = true;
        true
    }

    fn detach(&self) {
        let mut r = self.receiver.lock().unwrap_or_else(|p| p.into_inner());
        r.attached = false;
        r.detached_since = Instant::now();
    }
}

/// Releases the receiver slot however the request ends (including a dropped response).
struct Attached(Arc<XhrSession>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// Every live SockJS HTTP session.
#[derive(Default)]
pub struct SockJsSessions {
    sessions: Mutex<HashMap<String, Arc<XhrSession>>>,
}

impl SockJsSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<XhrSession>>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<XhrSession>> {
        self.lock().get(id).cloned()
    }

    fn create(&self, id: &str, hub: &Arc<Hub>, transport: Transport) -> Arc<XhrSession> {
        let conn = Connection::new(hub.clone(), transport);
        let outbound = conn.outbound().clone();
        let session = Arc::new(XhrSession {
            conn: Mutex::new(conn),
            outbound,
            receiver: Mutex::new(ReceiverState {
                attached: false,
                detached_since: Instant::now(),
            }),
        });
        self.lock().insert(id.to_owned(), session.clone());
        session
    }

    /// Number of live sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops sessions that no receiver has come back for within `disconnect_delay`, and
    /// sessions already closed whose last frame was delivered.
    pub fn reap(&self, config: &ServerConfig) {
        let mut gone = Vec::new();
        self.lock().retain(|id, s| {
            let r = s.receiver.lock().unwrap_or_else(|p| p.into_inner());
            let abandoned =
                !r.attached && r.detached_since.elapsed() >= config.sockjs_disconnect_delay;
            if abandoned {
                gone.push((id.clone(), s.clone()));
            }
            !abandoned
        });
        for (id, s) in gone {
            tracing::debug!(sockjs_session = %id, "abandoned SockJS session reaped");
            s.lock_conn().close(CloseReason::Normal);
        }
    }

    /// Closes every session (server shutdown); waiting receivers get the close frame.
    pub fn close_all(&self) {
        let all: Vec<_> = self.lock().values().cloned().collect();
        for s in all {
            s.lock_conn().close(CloseReason::Shutdown);
        }
    }
}

fn frame_body(text: &str) -> Bytes {
    let mut b = Vec::with_capacity(text.len() + 1);
    b.extend_from_slice(text.as_bytes());
    b.push(b'\n');
    Bytes::from(b)
}

fn js_response(req_origin: Option<&hyper::header::HeaderValue>, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/javascript; charset=UTF-8"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static(
            "no-store, no-cache, no-transform, must-revalidate, max-age=0",
        ),
    );
    cors(resp.headers_mut(), req_origin);
    resp
}

fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|never| match never {})
        .boxed()
}

/// Renders what a receiver takes from the queue as one SockJS frame, or `None` when the
/// queue had nothing (never for a batch).
fn batch_frame(batch: Batch) -> (String, bool) {
    match batch {
        Batch::Frames(frames) => (array_frame(&frames), false),
        Batch::Closed(reason, frames) => {
            let (code, text) = reason.code_and_text();
            let close = super::websocket::sockjs_close_frame(code, text);
            if frames.is_empty() {
                (close, true)
            } else {
                // The remaining data first; the close follows on the next request.
                (array_frame(&frames), false)
            }
        }
    }
}

/// `POST .../xhr`: one frame per response.
pub async fn xhr_polling(
    req: Request<hyper::body::Incoming>,
    session_id: &str,
    hub: &Arc<Hub>,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let Some(session) = sessions.get(session_id) else {
        sessions.create(session_id, hub, Transport::SockJsXhrPolling);
        return js_response(origin.as_ref(), full(frame_body("o")));
    };
    if !session.attach() {
        return js_response(
            origin.as_ref(),
            full(frame_body(&super::websocket::sockjs_close_frame(
                2010,
                "Another connection still open",
            ))),
        );
    }
    let attached = Attached(session.clone());
    let text = tokio::select! {
        batch = session.outbound.next_batch() => batch_frame(batch).0,
        _ = tokio::time::sleep(config.sockjs_heartbeat) => "h".to_owned(),
    };
    drop(attached);
    js_response(origin.as_ref(), full(frame_body(&text)))
}

/// `POST .../xhr_streaming`: a prelude, then frames until 128 KiB were written.
pub async fn xhr_streaming(
    req: Request<hyper::body::Incoming>,
    session_id: &str,
    hub: &Arc<Hub>,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    let (session, opened) = match sessions.get(session_id) {
        Some(s) => (s, false),
        None => (
            sessions.create(session_id, hub, Transport::SockJsXhrStreaming),
            true,
        ),
    };
    if !session.attach() {
        prelude.extend_from_slice(&frame_body(&super::websocket::sockjs_close_frame(
            2010,
            "Another connection still open",
        )));
        return js_response(origin.as_ref(), full(Bytes::from(prelude)));
    }
    if opened {
        prelude.extend_from_slice(b"o\n");
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let heartbeat = config.sockjs_heartbeat;
    let limit = config.sockjs_response_limit;
    let shutdown = hub.shutdown.clone();
    hub.tasks.spawn(async move {
        let attached = Attached(session.clone());
        if tx.send(Bytes::from(prelude)).await.is_err() {
            return;
        }
        let mut written = 0usize;
        loop {
            let (text, closed) = tokio::select! {
                batch = session.outbound.next_batch() => batch_frame(batch),
                _ = tokio::time::sleep(heartbeat) => ("h".to_owned(), false),
                _ = shutdown.cancelled() => {
                    session.lock_conn().close(CloseReason::Shutdown);
                    continue;
                }
            };
            written += text.len() + 1;
            if tx.send(frame_body(&text)).await.is_err() || closed || written >= limit {
                break;
            }
        }
        drop(attached);
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| {
            (
                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk)),
                rx,
            )
        })
    });
    js_response(
        origin.as_ref(),
        http_body_util::StreamBody::new(stream).boxed(),
    )
}

/// `POST .../xhr_send`: a JSON array of DDP texts for the session.
pub async fn xhr_send(
    req: Request<hyper::body::Incoming>,
    session_id: &str,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let Some(session) = sessions.get(session_id) else {
        return text_response(StatusCode::NOT_FOUND, "Not found");
    };
    let limited = http_body_util::Limited::new(req.into_body(), config.max_message_bytes);
    let body = match limited.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return text_response(StatusCode::PAYLOAD_TOO_LARGE, "Payload too large.");
        }
    };
    if body.is_empty() {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "Payload expected.");
    }
    let Some(messages) = std::str::from_utf8(&body)
        .ok()
        .and_then(parse_client_payload)
    else {
        return text_response(StatusCode::INTERNAL_SERVER_ERROR, "Broken JSON encoding.");
    };
    {
        let mut conn = session.lock_conn();
        for m in &messages {
            conn.on_text(m);
        }
    }
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::NO_CONTENT;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    cors(resp.headers_mut(), origin.as_ref());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::server as frames;

    #[test]
    fn array_frames_double_encode_ddp() {
        let text = array_frame(&[frames::connected("abc")]);
        assert_eq!(text, r#"a["{\"msg\":\"connected\",\"session\":\"abc\"}"]"#);
    }

    #[test]
    fn client_payloads_are_arrays_of_strings_or_one_string() {
        assert_eq!(
            parse_client_payload(r#"["a","b"]"#),
            Some(vec!["a".into(), "b".into()])
        );
        assert_eq!(parse_client_payload(r#""a""#), Some(vec!["a".into()]));
        assert_eq!(parse_client_payload(r#"[1]"#), None);
        assert_eq!(parse_client_payload("nope"), None);
    }
}
