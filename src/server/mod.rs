//! The HTTP server: listener, routes, WebSocket upgrades, SockJS, health and metrics, and
//! graceful shutdown (stop accepting, close sessions with a close frame, drain, exit).
//!
//! It must not know about services or storage: it hands text to sessions and writes what
//! their outbound queues hold.

pub mod assets;
pub mod framing;
pub mod sockjs;
pub mod websocket;

use crate::session::Hub;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use websocket::Framing;

/// Response body type of every route.
pub type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

/// Transport settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Largest inbound DDP message (WebSocket message or `xhr_send` body).
    pub max_message_bytes: usize,
    pub ws_read_buffer_bytes: usize,
    pub ws_write_buffer_bytes: usize,
    /// Serve SockJS (`/sockjs/...`); off with `DISABLE_SOCKJS`.
    pub sockjs_enabled: bool,
    /// SockJS `h` frame after this much send inactivity (Meteor: 45 s).
    pub sockjs_heartbeat: Duration,
    /// A SockJS session with no receiver for this long is destroyed (Meteor: 60 s).
    pub sockjs_disconnect_delay: Duration,
    /// Bytes after which an `xhr_streaming` response ends (SockJS: 128 KiB).
    pub sockjs_response_limit: usize,
    /// How long shutdown waits for sessions to drain.
    pub shutdown_grace: Duration,
    /// The Rocket.Chat version reported by `/api/info`.
    pub rocketchat_version: String,
    /// Time for a complete request head, counted from the connection's start or, on a
    /// kept-alive connection, from the end of the last response (so it is also the idle
    /// keep-alive timeout).
    pub request_head_timeout: Duration,
    /// Time for a request body to arrive whole.
    pub request_body_timeout: Duration,
    /// Time for a DDP connection (WebSocket or SockJS session) to send `connect`; Meteor's
    /// clients send it at once.
    pub connect_timeout: Duration,
    /// Concurrent TCP connections served; beyond it, `/health` and `/metrics` still answer
    /// and everything else gets 503.
    pub max_connections: usize,
    /// SockJS sessions of the HTTP transports, in total.
    pub sockjs_max_sessions: usize,
    /// SockJS sessions of the HTTP transports from one client address.
    pub sockjs_max_sessions_per_address: usize,
    /// Proxies in front of comet (`HTTP_FORWARDED_COUNT`): the client's address is then read
    /// from `X-Forwarded-For`, that many entries from the right.
    pub forwarded_count: usize,
    /// DDP sessions (WebSocket and SockJS) from one client address; 0: no cap.
    pub max_sessions_per_address: usize,
    /// The bearer token `/metrics` asks for; without one, only this host's own unforwarded
    /// requests are answered.
    pub metrics_token: Option<crate::model::secret::Secret>,
}

/// The client's address: the socket's peer, or behind `forwarded_count` proxies the entry
/// they recorded in `X-Forwarded-For` (counted from the right, so addresses a client puts in
/// the header itself are never taken). A request that passed fewer proxies than configured
/// reached comet directly: its peer is the client.
pub fn client_address(
    headers: &hyper::HeaderMap,
    remote: SocketAddr,
    forwarded_count: usize,
) -> std::net::IpAddr {
    if forwarded_count == 0 {
        return remote.ip();
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.len() < forwarded_count {
        return remote.ip();
    }
    entries[entries.len() - forwarded_count]
        .parse()
        .unwrap_or(remote.ip())
}

/// Says once per process that requests carry `X-Forwarded-For` while `HTTP_FORWARDED_COUNT`
/// is 0: every client then has the proxy's address, and limits by address hit them together.
fn warn_unconfigured_proxy() {
    static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
        tracing::warn!(
            "requests arrive with X-Forwarded-For but HTTP_FORWARDED_COUNT is 0: every client \
             counts as the proxy's address (login blocks, rate limits, session caps); set \
             HTTP_FORWARDED_COUNT to the number of proxies in front of comet"
        );
    }
}

/// File descriptors kept free below the process's limit when the connection cap is
/// derived from it: the store's files, logs, and the connections served at capacity.
pub const RESERVED_FILES: usize = 128;

/// Connections served while at the cap, for `/health` and a 503 to the rest.
const AT_CAPACITY_SLOTS: usize = 32;

/// The connection cap when none is set: the open-file limit less [`RESERVED_FILES`].
pub fn default_max_connections() -> usize {
    crate::session::metrics::max_open_files()
        .map_or(4096, |n| n as usize)
        .saturating_sub(RESERVED_FILES)
        .max(16)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 1024 * 1024,
            ws_read_buffer_bytes: 2048,
            ws_write_buffer_bytes: 8192,
            sockjs_enabled: true,
            sockjs_heartbeat: Duration::from_secs(45),
            sockjs_disconnect_delay: Duration::from_secs(60),
            sockjs_response_limit: 128 * 1024,
            shutdown_grace: Duration::from_secs(5),
            rocketchat_version: "7.0.0".to_owned(),
            request_head_timeout: Duration::from_secs(10),
            request_body_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
            sockjs_max_sessions: 10_000,
            sockjs_max_sessions_per_address: 100,
            forwarded_count: 0,
            max_sessions_per_address: default_max_connections() / 4,
            metrics_token: None,
        }
    }
}

struct App {
    hub: Arc<Hub>,
    rest: Arc<crate::rest::Rest>,
    config: Arc<ServerConfig>,
    sockjs: sockjs::SockJsSessions,
    sockets: Arc<SocketsByAddress>,
}

/// Live WebSocket sessions by client address, so one address cannot take every slot.
#[derive(Default)]
struct SocketsByAddress {
    counts: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One WebSocket session's place in its address's count, given back when dropped.
struct AddressSlot {
    table: Arc<SocketsByAddress>,
    address: std::net::IpAddr,
}

impl SocketsByAddress {
    /// A slot for one more session from `address`; `None` when it holds `cap` already
    /// (`cap` 0: no cap).
    fn admit(self: &Arc<Self>, address: std::net::IpAddr, cap: usize) -> Option<AddressSlot> {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let held = counts.entry(address).or_insert(0);
        if cap > 0 && *held >= cap {
            return None;
        }
        *held += 1;
        Some(AddressSlot {
            table: self.clone(),
            address,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut counts = self.table.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(held) = counts.get_mut(&self.address) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// Holds one of the capped connection slots: the HTTP connection, then the WebSocket it
/// was upgraded to, each hold a clone, and the slot is free when both are gone.
pub(crate) type ConnectionSlot = Arc<tokio::sync::OwnedSemaphorePermit>;

/// A log line that says something at most once per period, counting what it left out.
pub struct RateLimitedLog {
    period: Duration,
    last: Option<std::time::Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(how many were left out since the last one)` when a line may be written now.
    pub fn ready(&mut self) -> Option<u64> {
        let now = std::time::Instant::now();
        if self.last.is_some_and(|last| now - last < self.period) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Connections served while at the cap. When all slots are taken the oldest is dropped:
/// a probe of `/health` sends its request at once and is done long before that.
#[derive(Default)]
struct AtCapacity {
    slots: std::sync::Mutex<std::collections::VecDeque<(u64, tokio_util::sync::CancellationToken)>>,
    next: std::sync::atomic::AtomicU64,
}

impl AtCapacity {
    fn admit(&self) -> (u64, tokio_util::sync::CancellationToken) {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let token = tokio_util::sync::CancellationToken::new();
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.len() >= AT_CAPACITY_SLOTS {
            if let Some((_, oldest)) = slots.pop_front() {
                oldest.cancel();
            }
        }
        slots.push_back((id, token.clone()));
        (id, token)
    }

    fn release(&self, id: u64) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(i, _)| *i != id);
    }
}

/// Serves on `listener` until `hub.shutdown` is cancelled, then drains and returns.
pub async fn serve(
    listener: TcpListener,
    hub: Arc<Hub>,
    rest: Arc<crate::rest::Rest>,
    config: ServerConfig,
) {
    let app = Arc::new(App {
        hub: hub.clone(),
        rest,
        config: Arc::new(config),
        sockjs: sockjs::SockJsSessions::default(),
        sockets: Arc::default(),
    });
    let reaper = {
        let app = app.clone();
        tokio::spawn(async move {
            let period = (app.config.sockjs_disconnect_delay / 4)
                .min(app.config.connect_timeout / 4)
                .clamp(Duration::from_millis(50), Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = app.hub.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(period) => app.sockjs.reap(&app.config, &app.hub.metrics),
                }
            }
        })
    };
    let connections = tokio_util::task::TaskTracker::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(app.config.max_connections));
    let at_capacity = Arc::new(AtCapacity::default());
    let mut accept_log = RateLimitedLog::new(Duration::from_secs(5));
    let mut cap_log = RateLimitedLog::new(Duration::from_secs(5));
    loop {
        let accepted = tokio::select! {
            _ = hub.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Out of file descriptors and the like: back off instead of spinning.
                if let Some(suppressed) = accept_log.ready() {
                    tracing::warn!(cause = %err, suppressed, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                connections.spawn(serve_connection(stream, remote, app, Arc::new(permit)));
            }
            Err(_) => {
                hub.metrics
                    .refused(crate::session::metrics::Refusal::ConnectionCap);
                if let Some(suppressed) = cap_log.ready() {
                    tracing::warn!(
                        cap = app.config.max_connections,
                        suppressed,
                        "connection cap reached: new connections get 503 until others close \
                         (COMET_MAX_CONNECTIONS)"
                    );
                }
                let (id, evicted) = at_capacity.admit();
                let at_capacity = at_capacity.clone();
                connections.spawn(async move {
                    serve_at_capacity(stream, app, evicted).await;
                    at_capacity.release(id);
                });
            }
        }
    }
    tracing::info!("shutting down: no longer accepting connections");
    drop(listener);
    app.sockjs.close_all();
    connections.close();
    hub.tasks.close();
    let grace = app.config.shutdown_grace;
    let drained = tokio::time::timeout(grace, async {
        connections.wait().await;
        hub.tasks.wait().await;
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            grace_ms = grace.as_millis() as u64,
            "shutdown grace elapsed with connections still open"
        );
    }
    reaper.abort();
}

fn http1(config: &ServerConfig) -> hyper::server::conn::http1::Builder {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.request_head_timeout)
        .keep_alive(true);
    builder
}

fn note_connection_error(app: &App, remote: SocketAddr, err: &hyper::Error) {
    if err.is_timeout() {
        app.hub
            .metrics
            .timed_out(crate::session::metrics::Timeout::RequestHead);
        tracing::debug!(%remote, "no complete request head in time: connection closed");
    } else {
        tracing::debug!(%remote, cause = %err, "http connection ended with an error");
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Arc<App>,
    slot: ConnectionSlot,
) {
    let service = hyper::service::service_fn({
        let app = app.clone();
        move |req| {
            let (app, slot) = (app.clone(), slot.clone());
            async move { Ok::<_, Infallible>(route(req, app, remote, slot).await) }
        }
    });
    let conn = http1(&app.config)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(err) = result {
                note_connection_error(&app, remote, &err);
            }
        }
        _ = app.hub.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(app.config.shutdown_grace, conn).await;
        }
    }
}

/// A connection beyond the cap: `/health` and `/metrics` answer, the rest is told to come
/// back later; one request, a short head timeout, and it may be dropped for a newer one.
async fn serve_at_capacity(
    stream: tokio::net::TcpStream,
    app: Arc<App>,
    evicted: tokio_util::sync::CancellationToken,
) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    let service = hyper::service::service_fn({
        let app = app.clone();
        move |req: Request<hyper::body::Incoming>| {
            let app = app.clone();
            async move {
                let resp = match (req.method(), req.uri().path()) {
                    (&Method::GET | &Method::HEAD, "/health") => health(&app),
                    (&Method::GET, "/metrics") => metrics(&app, req.headers(), peer),
                    _ => retry_later("Server at capacity, retry later\n"),
                };
                Ok::<_, Infallible>(resp)
            }
        }
    });
    let mut builder = http1(&app.config);
    builder
        .keep_alive(false)
        .header_read_timeout(app.config.request_head_timeout.min(Duration::from_secs(2)));
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = conn => {}
        _ = evicted.cancelled() => {}
        _ = app.hub.shutdown.cancelled() => {}
    }
}

fn health(app: &App) -> Response<Body> {
    if app.hub.shutdown.is_cancelled() {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
    } else if !app.hub.is_healthy() {
        text_response(StatusCode::SERVICE_UNAVAILABLE, "change feed lost\n")
    } else if app.hub.registry.bus().degraded().is_some() {
        // Still serving its own sessions: a balancer keeps sending clients here.
        text_response(StatusCode::OK, "degraded: the broker is unreachable\n")
    } else {
        text_response(StatusCode::OK, "ok\n")
    }
}

/// `/metrics` for whoever may read it: the bearer of `COMET_METRICS_TOKEN` when one is set,
/// else a request from this host (`peer`, the socket's) that no proxy forwarded, as a
/// Prometheus on the same host scrapes. Everyone else learns nothing of the figures.
fn metrics(app: &App, headers: &HeaderMap, peer: SocketAddr) -> Response<Body> {
    let allowed = match &app.config.metrics_token {
        Some(token) => headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|given| crate::model::secret::same_secret(given.trim(), &token.0)),
        None => {
            peer.ip().is_loopback()
                && !headers.contains_key("x-forwarded-for")
                && !headers.contains_key(hyper::header::FORWARDED)
        }
    };
    if !allowed {
        let mut resp = text_response(
            StatusCode::UNAUTHORIZED,
            "Metrics need COMET_METRICS_TOKEN as a bearer token, or a request from this host\n",
        );
        resp.headers_mut().insert(
            hyper::header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"metrics\""),
        );
        return resp;
    }
    owned_response(
        StatusCode::OK,
        crate::session::metrics::CONTENT_TYPE,
        app.hub.metrics.render(),
    )
}

/// 503 with `Retry-After: 5`: a refusal for now, not for ever.
fn retry_later(text: &'static str) -> Response<Body> {
    let mut resp = text_response(StatusCode::SERVICE_UNAVAILABLE, text);
    resp.headers_mut()
        .insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("5"));
    resp
}

pub(crate) fn text_response(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=UTF-8"),
    );
    resp
}

/// A 200 with `body` and fixed `headers`.
fn fixed_response(
    body: String,
    headers: &[(hyper::header::HeaderName, &'static str)],
) -> Response<Body> {
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    for (name, value) in headers {
        resp.headers_mut()
            .insert(name.clone(), HeaderValue::from_static(value));
    }
    resp
}

/// `/avatar/<username>`: the image the user gave; else (and for `/avatar/room/<rid>`) the
/// initials picture.
async fn avatar(rest: &crate::rest::Rest, path: &str) -> Response<Body> {
    use hyper::header::{
        CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, ETAG, X_CONTENT_TYPE_OPTIONS,
    };
    let tail = &path["/avatar/".len()..];
    let (name, of_room) = match tail.strip_prefix("room/") {
        Some(rid) => (rid, true),
        None => (tail, false),
    };
    let name = crate::rest::percent_decoded(name.split('?').next().unwrap_or(""));
    {
        if let Some(image) = rest.avatar(&name, of_room).await {
            let mut resp = Response::new(
                http_body_util::Full::new(Bytes::from(image.bytes))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            let headers = resp.headers_mut();
            for (header, value) in [
                (CONTENT_TYPE, image.content_type),
                (ETAG, format!("\"{}\"", image.etag)),
                (
                    CONTENT_SECURITY_POLICY,
                    "default-src 'none'; sandbox".to_owned(),
                ),
                (X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
                (
                    CACHE_CONTROL,
                    "public, max-age=0, must-revalidate".to_owned(),
                ),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(header, value);
                }
            }
            return resp;
        }
    }
    fixed_response(
        crate::rest::avatar::initials_svg(&name),
        &[
            (CONTENT_TYPE, "image/svg+xml"),
            // An SVG can carry script: nothing in this one may run or load.
            (
                CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; sandbox",
            ),
            (X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
    )
}

/// Meteor's `/_timesync`: the server's clock in milliseconds, as a bare JSON number, never
/// cached (clients measure their offset with it).
fn timesync() -> Response<Body> {
    use hyper::header::{ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    fixed_response(
        now.to_string(),
        &[
            (CONTENT_TYPE, "application/json"),
            (CACHE_CONTROL, "no-cache, no-store, must-revalidate"),
            (ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
        ],
    )
}

/// A request's whole body, at most `limit` bytes, within the body timeout; else the
/// response that refuses it (413, or 408 and the connection closed).
pub(crate) async fn read_body(
    req: Request<hyper::body::Incoming>,
    limit: usize,
    config: &ServerConfig,
    hub: &Hub,
) -> Result<Bytes, Response<Body>> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    match tokio::time::timeout(config.request_body_timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(text_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Payload too large.",
        )),
        Err(_) => {
            hub.metrics
                .timed_out(crate::session::metrics::Timeout::RequestBody);
            let mut resp = text_response(
                StatusCode::REQUEST_TIMEOUT,
                "Request body not received in time.",
            );
            resp.headers_mut()
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
            Err(resp)
        }
    }
}

/// Hands an `/api` request to the REST layer: method, path, query, Rocket.Chat's auth
/// headers and the body (bounded like a DDP message) in; its JSON answer out.
async fn rest_route(
    req: Request<hyper::body::Incoming>,
    app: &App,
    remote: SocketAddr,
) -> Response<Body> {
    use crate::rest::{RestMethod, RestRequest};
    let method = match *req.method() {
        Method::GET | Method::HEAD => RestMethod::Get,
        Method::POST => RestMethod::Post,
        Method::PUT => RestMethod::Put,
        Method::DELETE => RestMethod::Delete,
        Method::OPTIONS => return preflight(&req),
        _ => RestMethod::Other,
    };
    let credentials = credentials_of(req.headers());
    let content_type = header_text(req.headers(), "content-type");
    let (path, query) = (
        req.uri().path().to_owned(),
        req.uri().query().map(str::to_owned),
    );
    let streamed = method == RestMethod::Post && crate::rest::uploads::streams_body(&path);
    let (body, stream) = if streamed {
        let chunks = body_chunks(req.into_body(), app.config.request_body_timeout);
        (Bytes::new(), crate::rest::BodyStream::new(chunks))
    } else {
        match read_body(req, app.config.max_message_bytes, &app.config, &app.hub).await {
            Ok(body) => (body, crate::rest::BodyStream::default()),
            Err(refused) => return refused,
        }
    };
    let answer = app
        .rest
        .handle(RestRequest {
            method,
            path,
            query,
            credentials,
            body,
            client_address: Some(remote.ip()),
            content_type,
            stream,
        })
        .await;
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = owned_response(status, "application/json", answer.body.to_string());
    for (name, value) in &answer.headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            resp.headers_mut().insert(*name, v);
        }
    }
    resp
}

/// A header's value as text, when it is text.
fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Rocket.Chat's `X-User-Id` and `X-Auth-Token`, when both were sent.
fn credentials_of(headers: &HeaderMap) -> Option<(String, String)> {
    header_text(headers, "x-user-id").zip(header_text(headers, "x-auth-token"))
}

/// Largest body handed to a plugin's HTTP route.
const MAX_PLUGIN_BODY: usize = 4 << 20;

/// `/plugins/<id>/...`: the request, as values, for the plugin's `ServeHTTP`.
async fn plugin_route(req: Request<hyper::body::Incoming>, app: &App) -> Response<Body> {
    let credentials = credentials_of(req.headers());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let body = match read_body(req, MAX_PLUGIN_BODY, &app.config, &app.hub).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let answer = app
        .rest
        .plugin_http(crate::rest::PluginCall {
            method,
            path,
            query,
            headers,
            body: body.to_vec(),
            credentials,
        })
        .await;
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from(answer.body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            hyper::header::HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}

/// A request body as a stream of chunks, for routes that handle it as it arrives
/// (uploads): each chunk must come within `idle` of the last, however long the whole takes.
fn body_chunks(body: hyper::body::Incoming, idle: Duration) -> crate::rest::uploads::BodyChunks {
    let state = (body, false);
    Box::pin(futures_util::stream::unfold(
        state,
        move |(mut body, done)| async move {
            if done {
                return None;
            }
            loop {
                match tokio::time::timeout(idle, body.frame()).await {
                    Err(_) => {
                        return Some((Err("the body stopped arriving".to_owned()), (body, true)))
                    }
                    Ok(None) => return None,
                    Ok(Some(Err(err))) => return Some((Err(err.to_string()), (body, true))),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            if !data.is_empty() {
                                return Some((Ok(data), (body, false)));
                            }
                        }
                    }
                }
            }
        },
    ))
}

/// `/file-upload/<id>/<name>`: an uploaded file for a reader the REST layer lets in, with
/// its headers, ranges and conditional reads.
async fn file_upload(
    rest: &crate::rest::Rest,
    req: &Request<hyper::body::Incoming>,
) -> Response<Body> {
    use crate::rest::uploads::{Download, DownloadRequest};
    let header = |name: hyper::header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let credentials = header(hyper::header::HeaderName::from_static("x-user-id")).zip(header(
        hyper::header::HeaderName::from_static("x-auth-token"),
    ));
    let answer = rest
        .download(DownloadRequest {
            path: req.uri().path().to_owned(),
            query: req.uri().query().map(str::to_owned),
            cookies: header(hyper::header::COOKIE),
            credentials,
            range: header(hyper::header::RANGE),
            if_none_match: header(hyper::header::IF_NONE_MATCH),
        })
        .await;
    match answer {
        Download::Refused(status, text) => text_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::FORBIDDEN),
            text,
        ),
        Download::NotModified { etag } => {
            let mut resp = text_response(StatusCode::NOT_MODIFIED, "");
            if let Ok(v) = HeaderValue::from_str(&etag) {
                resp.headers_mut().insert(hyper::header::ETAG, v);
            }
            resp
        }
        Download::Redirect(url) => {
            let mut resp = text_response(StatusCode::FOUND, "");
            if let Ok(v) = HeaderValue::from_str(&url) {
                resp.headers_mut().insert(hyper::header::LOCATION, v);
            }
            resp
        }
        Download::Unsatisfiable { size } => {
            let mut resp =
                text_response(StatusCode::RANGE_NOT_SATISFIABLE, "Range not satisfiable");
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{size}")) {
                resp.headers_mut().insert(hyper::header::CONTENT_RANGE, v);
            }
            resp
        }
        Download::Content {
            status,
            headers,
            body,
        } => {
            use futures_util::StreamExt as _;
            // A read that fails midway ends the body short of its length: the client
            // sees a broken transfer, never other bytes.
            let frames = body
                .take_while(|chunk| std::future::ready(chunk.is_ok()))
                .filter_map(|chunk| {
                    std::future::ready(
                        chunk
                            .ok()
                            .map(|b| Ok::<_, Infallible>(hyper::body::Frame::data(b))),
                    )
                });
            let frames = sync_wrapper::SyncStream::new(frames);
            let mut resp = Response::new(BodyExt::boxed(http_body_util::StreamBody::new(frames)));
            *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            for (name, value) in headers {
                if let Ok(v) = HeaderValue::from_str(&value) {
                    resp.headers_mut().insert(name, v);
                }
            }
            resp
        }
    }
}

fn owned_response(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(
        http_body_util::Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    resp
}

/// Cross-origin access as the settings allow it (`API_Enable_CORS`, `API_CORS_Origin`), for
/// REST and SockJS alike: answered here once for every response of theirs, so no handler
/// grants it by itself. Off by default: a page elsewhere cannot read these answers.
///
/// SockJS's HTTP transports send credentials (`withCredentials`), which `*` does not admit:
/// for them an allowed origin is always answered with itself.
fn apply_cors(app: &App, origin: Option<&HeaderValue>, sockjs: bool, resp: &mut Response<Body>) {
    use crate::rest::CorsAnswer;
    let headers = resp.headers_mut();
    let mut answer = app.rest.cors_for(
        origin
            .and_then(|o| o.to_str().ok())
            .filter(|o| *o != "null"),
    );
    if sockjs && answer == CorsAnswer::AnyOrigin {
        answer = CorsAnswer::ThisOrigin;
    }
    match (answer, origin) {
        (CorsAnswer::AnyOrigin, _) => {
            headers.insert(
                hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        }
        (CorsAnswer::ThisOrigin, Some(origin)) => {
            headers.insert(hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                hyper::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
            headers.append(hyper::header::VARY, HeaderValue::from_static("Origin"));
        }
        _ => {
            for name in [
                hyper::header::ACCESS_CONTROL_ALLOW_ORIGIN,
                hyper::header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
                hyper::header::ACCESS_CONTROL_ALLOW_HEADERS,
                hyper::header::ACCESS_CONTROL_MAX_AGE,
            ] {
                headers.remove(name);
            }
        }
    }
}

fn preflight(req: &Request<hyper::body::Incoming>) -> Response<Body> {
    let mut resp = text_response(StatusCode::NO_CONTENT, "");
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("OPTIONS, GET, POST, PUT, DELETE"),
    );
    if let Some(h) = req
        .headers()
        .get(hyper::header::ACCESS_CONTROL_REQUEST_HEADERS)
    {
        headers.insert(hyper::header::ACCESS_CONTROL_ALLOW_HEADERS, h.clone());
    }
    headers.insert(
        hyper::header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    resp
}

async fn route(
    req: Request<hyper::body::Incoming>,
    app: Arc<App>,
    remote: SocketAddr,
    slot: ConnectionSlot,
) -> Response<Body> {
    let peer = remote;
    if app.config.forwarded_count == 0 && req.headers().contains_key("x-forwarded-for") {
        warn_unconfigured_proxy();
    }
    // Behind proxies, everything downstream (rate limits, per-address caps, the
    // connection's address) sees the client's address, not the proxy's.
    let remote = SocketAddr::new(
        client_address(req.headers(), remote, app.config.forwarded_count),
        remote.port(),
    );
    let path = req.uri().path().to_owned();
    if matches!(req.method(), &Method::GET | &Method::HEAD) {
        let held = req
            .headers()
            .get(hyper::header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok());
        if let Some(page) = assets::find(&path, held) {
            return page;
        }
    }
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    match (req.method(), path.as_str()) {
        // HEAD answers as GET does; hyper leaves the body out.
        (&Method::GET | &Method::HEAD, "/health") => health(&app),
        (&Method::GET, "/metrics") => metrics(&app, req.headers(), peer),
        (&Method::GET | &Method::HEAD, "/_timesync") => timesync(),
        (&Method::GET | &Method::HEAD, _) if path.starts_with("/avatar/") => {
            avatar(&app.rest, &path).await
        }
        (&Method::GET | &Method::HEAD, _) if path.starts_with("/file-upload/") => {
            file_upload(&app.rest, &req).await
        }
        _ if path.starts_with("/plugins/") => plugin_route(req, &app).await,
        _ if crate::rest::Rest::owns(&path) => {
            let mut resp = rest_route(req, &app, remote).await;
            apply_cors(&app, origin.as_ref(), false, &mut resp);
            resp
        }
        (_, "/websocket" | "/websocket/") => upgrade(req, app, Framing::Raw, slot, remote),
        _ if path == "/sockjs" || path.starts_with("/sockjs/") => {
            if !app.config.sockjs_enabled {
                return text_response(StatusCode::NOT_FOUND, "Not found");
            }
            let cors_app = app.clone();
            let mut resp = sockjs_route(req, &path["/sockjs".len()..], app, remote, slot).await;
            if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
                apply_cors(&cors_app, origin.as_ref(), true, &mut resp);
            }
            resp
        }
        _ => text_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

async fn sockjs_route(
    req: Request<hyper::body::Incoming>,
    rest: &str,
    app: Arc<App>,
    remote: SocketAddr,
    slot: ConnectionSlot,
) -> Response<Body> {
    let segments: Vec<&str> = rest.trim_start_matches('/').split('/').collect();
    match (req.method(), segments.as_slice()) {
        (&Method::GET, [""]) => text_response(StatusCode::OK, "Welcome to SockJS!\n"),
        (&Method::OPTIONS, ["info"]) => preflight(&req),
        (&Method::GET, ["info"]) => {
            let entropy: u32 = rand::random();
            let mut resp = owned_response(
                StatusCode::OK,
                "application/json; charset=UTF-8",
                format!(
                    "{{\"websocket\":true,\"origins\":[\"*:*\"],\"cookie_needed\":false,\"entropy\":{entropy}}}"
                ),
            );
            resp.headers_mut().insert(
                hyper::header::CACHE_CONTROL,
                HeaderValue::from_static(
                    "no-store, no-cache, no-transform, must-revalidate, max-age=0",
                ),
            );
            resp
        }
        (_, ["websocket"]) => upgrade(req, app, Framing::Raw, slot, remote),
        (_, [server, session, transport]) if valid_segment(server) && valid_segment(session) => {
            let session = (*session).to_owned();
            match (req.method(), *transport) {
                (_, "websocket") => upgrade(req, app, Framing::SockJs, slot, remote),
                (&Method::OPTIONS, "xhr" | "xhr_streaming" | "xhr_send") => preflight(&req),
                (&Method::POST, "xhr") => {
                    let from = remote.ip();
                    sockjs::xhr_polling(&session, from, &app.hub, &app.config, &app.sockjs).await
                }
                (&Method::POST, "xhr_streaming") => {
                    let from = remote.ip();
                    sockjs::xhr_streaming(&session, from, &app.hub, &app.config, &app.sockjs).await
                }
                (&Method::POST, "xhr_send") => {
                    sockjs::xhr_send(req, &session, &app.hub, &app.config, &app.sockjs).await
                }
                _ => text_response(StatusCode::NOT_FOUND, "Not found"),
            }
        }
        _ => text_response(StatusCode::NOT_FOUND, "Not found"),
    }
}

/// SockJS's `[^/.]+`.
fn valid_segment(s: &str) -> bool {
    !s.is_empty() && !s.contains('.')
}

/// Answers a WebSocket upgrade and serves the socket in its own task.
fn upgrade(
    req: Request<hyper::body::Incoming>,
    app: Arc<App>,
    framing: Framing,
    slot: ConnectionSlot,
    remote: SocketAddr,
) -> Response<Body> {
    let headers = req.headers();
    let is_upgrade = headers
        .get(hyper::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if req.method() != Method::GET || !is_upgrade {
        return if framing == Framing::Raw && app.config.sockjs_enabled {
            text_response(StatusCode::OK, "Welcome to SockJS!\n")
        } else {
            text_response(StatusCode::BAD_REQUEST, "Not a valid websocket request")
        };
    }
    let version_ok = headers
        .get(hyper::header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13" || v == "8");
    if !version_ok {
        return text_response(
            StatusCode::BAD_REQUEST,
            "Only supported WebSocket protocol is RFC 6455.",
        );
    }
    let Some(key) = headers.get(hyper::header::SEC_WEBSOCKET_KEY) else {
        return text_response(StatusCode::BAD_REQUEST, "Not a valid websocket request");
    };
    let Some(address_slot) = app
        .sockets
        .admit(remote.ip(), app.config.max_sessions_per_address)
    else {
        app.hub
            .metrics
            .refused(crate::session::metrics::Refusal::SessionsPerAddress);
        return retry_later("Too many sessions from this address, retry later\n");
    };
    let accept = derive_accept_key(key.as_bytes());
    let hub = app.hub.clone();
    let config = app.config.clone();
    app.hub.tasks.spawn(async move {
        // The socket keeps its connection slot, and its address's, for as long as it lives.
        let _slot = slot;
        let _address_slot = address_slot;
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                websocket::serve_socket(upgraded, hub, config, framing, remote.ip()).await
            }
            Err(err) => tracing::debug!(cause = %err, "websocket upgrade failed"),
        }
    });
    let mut resp = text_response(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = resp.headers_mut();
    h.remove(hyper::header::CONTENT_TYPE);
    h.insert(
        hyper::header::UPGRADE,
        HeaderValue::from_static("websocket"),
    );
    h.insert(
        hyper::header::CONNECTION,
        HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(hyper::header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_limited_log_speaks_once_per_period_and_counts_the_rest() {
        let mut log = RateLimitedLog::new(Duration::from_millis(50));
        assert_eq!(log.ready(), Some(0));
        assert_eq!(log.ready(), None);
        assert_eq!(log.ready(), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(log.ready(), Some(2));
    }

    #[test]
    fn at_capacity_drops_the_oldest_when_full() {
        let slots = AtCapacity::default();
        let first = slots.admit();
        let rest: Vec<_> = (1..AT_CAPACITY_SLOTS).map(|_| slots.admit()).collect();
        assert!(!first.1.is_cancelled());
        let newest = slots.admit();
        assert!(first.1.is_cancelled(), "the oldest made room");
        assert!(rest.iter().all(|(_, t)| !t.is_cancelled()));
        slots.release(newest.0);
        assert_eq!(
            slots.slots.lock().unwrap_or_else(|p| p.into_inner()).len(),
            AT_CAPACITY_SLOTS - 1
        );
    }
}

#[cfg(test)]
mod forwarded_tests {
    use super::*;

    #[test]
    fn the_client_address_is_counted_from_the_right_behind_proxies() {
        let peer: SocketAddr = "10.0.0.9:4000".parse().unwrap_or_else(|_| unreachable!());
        let mut headers = hyper::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4, 10.0.0.2"),
        );
        let ip = |s: &str| {
            s.parse::<std::net::IpAddr>()
                .unwrap_or_else(|_| unreachable!())
        };
        assert_eq!(
            client_address(&headers, peer, 0),
            ip("10.0.0.9"),
            "no proxies: the peer"
        );
        assert_eq!(client_address(&headers, peer, 1), ip("10.0.0.2"));
        assert_eq!(
            client_address(&headers, peer, 2),
            ip("1.2.3.4"),
            "what the client wrote itself (6.6.6.6) is never taken"
        );
        assert_eq!(
            client_address(&headers, peer, 4),
            ip("10.0.0.9"),
            "fewer entries than proxies: it came straight in"
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("not-an-ip"));
        assert_eq!(client_address(&headers, peer, 1), ip("10.0.0.9"));
    }
}
