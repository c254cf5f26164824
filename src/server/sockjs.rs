//! SockJS as Meteor's client uses it: `/sockjs/info`, and the `xhr_streaming`, `xhr`
//! (polling) and `xhr_send` transports, with their session table and the reaping of sessions
//! no receiver came back for. The framed websocket lives in `websocket.rs`.
//!
//! It must not interpret DDP: payloads go to the session's [`Connection`] as text.

use super::framing::{array_frame, parse_client_payload, sockjs_close_frame};
use super::{text_response, Body, ServerConfig};
use crate::session::metrics::{Refusal, Timeout};
use crate::session::{Batch, CloseReason, Connection, Hub, Metrics, Outbound, Transport};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::{Request, Response, StatusCode};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One SockJS session of the HTTP transports.
struct XhrSession {
    conn: Mutex<Connection>,
    outbound: Arc<Outbound>,
    receiver: Mutex<ReceiverState>,
    /// The client's address, for the per-address cap.
    address: IpAddr,
    created: Instant,
}

struct ReceiverState {
    attached: bool,
    /// Whether a receiver ever came (the request that opened a polling session is none).
    ever_attached: bool,
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
        r.ever_attached = true;
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

/// Every live SockJS HTTP session, and how many each client address holds.
#[derive(Default)]
pub struct SockJsSessions {
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    sessions: HashMap<String, Arc<XhrSession>>,
    per_address: HashMap<IpAddr, usize>,
}

impl Table {
    fn remove(&mut self, id: &str) -> Option<Arc<XhrSession>> {
        let session = self.sessions.remove(id)?;
        if let Some(n) = self.per_address.get_mut(&session.address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&session.address);
            }
        }
        Some(session)
    }
}

/// Why a reaped session went.
enum Reaped {
    /// Its receiver left and did not come back in time.
    Abandoned,
    /// No receiver ever came.
    NoReceiver,
    /// The client never sent `connect`.
    NoConnect,
}

impl SockJsSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get(&self, id: &str) -> Option<Arc<XhrSession>> {
        self.lock().sessions.get(id).cloned()
    }

    /// A new session for `address`, unless a cap says no.
    fn create(
        &self,
        id: &str,
        address: IpAddr,
        hub: &Arc<Hub>,
        config: &ServerConfig,
        transport: Transport,
    ) -> Result<Arc<XhrSession>, Refusal> {
        let mut table = self.lock();
        if table.sessions.len() >= config.sockjs_max_sessions {
            return Err(Refusal::SockJsSessionCap);
        }
        let from_address = table.per_address.get(&address).copied().unwrap_or(0);
        if from_address >= config.sockjs_max_sessions_per_address {
            return Err(Refusal::SockJsSessionsPerAddress);
        }
        let conn = Connection::new(hub.clone(), transport, Some(address));
        let outbound = conn.outbound().clone();
        let now = Instant::now();
        let session = Arc::new(XhrSession {
            conn: Mutex::new(conn),
            outbound,
            receiver: Mutex::new(ReceiverState {
                attached: false,
                ever_attached: false,
                detached_since: now,
            }),
            address,
            created: now,
        });
        table.sessions.insert(id.to_owned(), session.clone());
        *table.per_address.entry(address).or_default() += 1;
        hub.metrics.sockjs_sessions(table.sessions.len());
        Ok(session)
    }

    /// Number of live sessions (for tests and metrics).
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops sessions no receiver has come back for within `disconnect_delay`, sessions no
    /// receiver ever came for and sessions that never sent `connect`, both within
    /// `connect_timeout`.
    pub fn reap(&self, config: &ServerConfig, metrics: &Metrics) {
        let mut gone = Vec::new();
        let mut table = self.lock();
        for (id, s) in &table.sessions {
            let r = s.receiver.lock().unwrap_or_else(|p| p.into_inner());
            let young = s.created.elapsed() < config.connect_timeout;
            let why = if !r.attached && r.detached_since.elapsed() >= config.sockjs_disconnect_delay
            {
                Some(Reaped::Abandoned)
            } else if !r.ever_attached && !young {
                Some(Reaped::NoReceiver)
            } else if !young && s.lock_conn().awaiting_connect() {
                Some(Reaped::NoConnect)
            } else {
                None
            };
            if let Some(why) = why {
                gone.push((id.clone(), why));
            }
        }
        let gone: Vec<_> = gone
            .into_iter()
            .filter_map(|(id, why)| table.remove(&id).map(|s| (id, s, why)))
            .collect();
        metrics.sockjs_sessions(table.sessions.len());
        drop(table);
        for (id, s, why) in gone {
            let reason = match why {
                Reaped::Abandoned => {
                    tracing::debug!(sockjs_session = %id, "abandoned SockJS session reaped");
                    CloseReason::Normal
                }
                Reaped::NoReceiver => {
                    tracing::debug!(sockjs_session = %id, "SockJS session without a receiver reaped");
                    metrics.timed_out(Timeout::SockJsReceiver);
                    CloseReason::Normal
                }
                Reaped::NoConnect => {
                    tracing::debug!(sockjs_session = %id, "SockJS session without connect reaped");
                    metrics.timed_out(Timeout::Connect);
                    CloseReason::ConnectTimeout
                }
            };
            s.lock_conn().close(reason);
        }
    }

    /// Closes every session (server shutdown); waiting receivers get the close frame.
    pub fn close_all(&self) {
        let all: Vec<_> = self.lock().sessions.values().cloned().collect();
        for s in all {
            s.lock_conn().close(CloseReason::Shutdown);
        }
    }
}

/// The answer when a cap refuses a new session.
fn refused(hub: &Hub, why: Refusal) -> Response<Body> {
    hub.metrics.refused(why);
    tracing::debug!(?why, "SockJS session refused");
    text_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "Too many SockJS sessions\n",
    )
}

fn frame_body(text: &str) -> Bytes {
    let mut b = Vec::with_capacity(text.len() + 1);
    b.extend_from_slice(text.as_bytes());
    b.push(b'\n');
    Bytes::from(b)
}

fn js_response(body: Body) -> Response<Body> {
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
            let close = sockjs_close_frame(code, text);
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
    session_id: &str,
    from: IpAddr,
    hub: &Arc<Hub>,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let Some(session) = sessions.get(session_id) else {
        return match sessions.create(session_id, from, hub, config, Transport::SockJsXhrPolling) {
            Ok(_) => js_response(full(frame_body("o"))),
            Err(why) => refused(hub, why),
        };
    };
    if !session.attach() {
        return js_response(full(frame_body(&sockjs_close_frame(
            2010,
            "Another connection still open",
        ))));
    }
    let attached = Attached(session.clone());
    let text = tokio::select! {
        batch = session.outbound.next_batch() => batch_frame(batch).0,
        _ = tokio::time::sleep(config.sockjs_heartbeat) => "h".to_owned(),
    };
    drop(attached);
    js_response(full(frame_body(&text)))
}

/// `POST .../xhr_streaming`: a prelude, then frames until 128 KiB were written.
pub async fn xhr_streaming(
    session_id: &str,
    from: IpAddr,
    hub: &Arc<Hub>,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let mut prelude = vec![b'h'; 2048];
    prelude.push(b'\n');
    let (session, opened) = match sessions.get(session_id) {
        Some(s) => (s, false),
        None => match sessions.create(session_id, from, hub, config, Transport::SockJsXhrStreaming)
        {
            Ok(s) => (s, true),
            Err(why) => return refused(hub, why),
        },
    };
    if !session.attach() {
        prelude.extend_from_slice(&frame_body(&sockjs_close_frame(
            2010,
            "Another connection still open",
        )));
        return js_response(full(Bytes::from(prelude)));
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
    js_response(http_body_util::StreamBody::new(stream).boxed())
}

/// `POST .../xhr_send`: a JSON array of DDP texts for the session.
pub async fn xhr_send(
    req: Request<hyper::body::Incoming>,
    session_id: &str,
    hub: &Hub,
    config: &ServerConfig,
    sessions: &SockJsSessions,
) -> Response<Body> {
    let Some(session) = sessions.get(session_id) else {
        return text_response(StatusCode::NOT_FOUND, "Not found");
    };
    let body = match super::read_body(req, config.max_message_bytes, config, hub).await {
        Ok(body) => body,
        Err(refused) => return refused,
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
    resp
}
