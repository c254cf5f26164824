//! DDP sessions: the per-connection state machine, message queue, subscriptions, mergebox,
//! heartbeat and outbound queue.
//!
//! A transport (in `server`) owns a [`Connection`], feeds it text frames and drains its
//! [`Outbound`]. Everything here is transport-agnostic and never waits on a client.
//!
//! ```text
//! AwaitingConnect --connect ok--> Connected --close/heartbeat/slow--> Closed
//!        \--connect bad (failed)-----------------------------------------^
//! ```
//! See `protocol-spec/behavior.md`.

pub mod error;
pub mod mergebox;
pub mod metrics;
pub mod outbound;

use crate::engine::connections::ConnectionHandle;
use crate::engine::rate_limit::{Call, CallKind};
use crate::engine::registry::{PublicationFn, PublicationSink, SharedAdded, SubKey};
use crate::engine::{MethodContext, Publish, Registry, Subscription};
use crate::model::{Document, MeteorError};
use crate::protocol::client::PingId;
use crate::protocol::server::{self as frames, MethodOutcome};
use crate::protocol::{decode_client_frame, negotiate_version, ClientMessage, Frame};
use error::Disposition;
use futures_util::FutureExt as _;
use mergebox::Mergebox;
use metrics::MethodOutcomeKind;
pub use metrics::{Metrics, Transport};
pub use outbound::{Batch, CloseReason, Outbound, OutboundLimits};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

/// Session limits and timings.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// Silence after which the server pings (Meteor: 15 s). Zero disables heartbeats.
    pub heartbeat_interval: Duration,
    /// Time allowed for any answer to that ping (Meteor: 15 s).
    pub heartbeat_timeout: Duration,
    /// Live subscriptions per session.
    pub max_subscriptions: usize,
    /// Live subscriptions of one user across all its connections.
    pub max_subscriptions_per_user: usize,
    /// Method calls waiting to run per session.
    pub max_queued_methods: usize,
    /// Messages of any kind waiting to run; beyond it the connection is closed.
    pub max_queued_messages: usize,
    /// The longest a method's `updated` waits for the live queries to see its writes.
    pub write_fence_timeout: Duration,
    pub outbound: OutboundLimits,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(15),
            max_subscriptions: 1000,
            max_subscriptions_per_user: 2000,
            max_queued_methods: 1000,
            max_queued_messages: 5000,
            write_fence_timeout: Duration::from_secs(5),
            outbound: OutboundLimits::default(),
        }
    }
}

/// What every connection shares: handlers, limits, counters, shutdown.
pub struct Hub {
    pub registry: Arc<Registry>,
    pub config: SessionConfig,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
    /// Tracks session tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Live queries, when a store is attached: method writes wait on it before `updated`.
    pub observe: Option<Arc<crate::observe::ObserveHub>>,
}

impl Hub {
    pub fn new(registry: Registry, config: SessionConfig) -> Arc<Self> {
        Self::build(registry, config, None)
    }

    fn build(
        registry: Registry,
        config: SessionConfig,
        observe: Option<Arc<crate::observe::ObserveHub>>,
    ) -> Arc<Self> {
        let metrics = Metrics::new(
            &registry.method_names(),
            &registry.publication_names(),
            observe.as_ref(),
        );
        Arc::new(Self {
            registry: Arc::new(registry),
            config,
            metrics: Arc::new(metrics),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            observe,
        })
    }

    /// Whether the hub can serve live data: no store attached, or its change feed is followed.
    pub fn is_healthy(&self) -> bool {
        self.observe.as_ref().is_none_or(|o| o.is_live())
    }

    /// A hub whose method writes are fenced by `observe`.
    pub fn with_observe(
        registry: Registry,
        config: SessionConfig,
        observe: Arc<crate::observe::ObserveHub>,
    ) -> Arc<Self> {
        Self::build(registry, config, Some(observe))
    }
}

/// The refusal of a subscription past `cap` per `holder` (a connection, a user).
fn too_many_subscriptions(cap: usize, holder: &str) -> MeteorError {
    MeteorError::new(
        "too-many-subscriptions",
        format!("At most {cap} subscriptions per {holder}"),
    )
}

/// Negotiated DDP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    Pre2,
    Pre1,
}

enum ConnectionState {
    AwaitingConnect,
    Connected(Arc<Session>),
    Closed,
}

/// One client connection, whatever its transport.
pub struct Connection {
    hub: Arc<Hub>,
    outbound: Arc<Outbound>,
    transport: Transport,
    state: ConnectionState,
    client_address: Option<std::net::IpAddr>,
}

impl Connection {
    pub fn new(
        hub: Arc<Hub>,
        transport: Transport,
        client_address: Option<std::net::IpAddr>,
    ) -> Self {
        hub.metrics.connection_opened(transport);
        let outbound = Arc::new(Outbound::new(hub.config.outbound));
        Self {
            hub,
            outbound,
            transport,
            state: ConnectionState::AwaitingConnect,
            client_address,
        }
    }

    /// The queue the transport drains.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// The DDP session id, once connected.
    pub fn session_id(&self) -> Option<&str> {
        match &self.state {
            ConnectionState::Connected(s) => Some(&s.id),
            _ => None,
        }
    }

    /// Whether the client has yet to send `connect` (and the connection is still open).
    pub fn awaiting_connect(&self) -> bool {
        matches!(self.state, ConnectionState::AwaitingConnect)
    }

    /// Handles one inbound DDP text. Never waits: work is queued to the session.
    pub fn on_text(&mut self, text: &str) {
        let session = match &self.state {
            ConnectionState::Closed => return,
            ConnectionState::Connected(s) => {
                s.seen_inbound.store(true, Ordering::Relaxed);
                Some(s.clone())
            }
            ConnectionState::AwaitingConnect => None,
        };
        let (message, raw) = match decode_client_frame(text) {
            Ok(decoded) => decoded,
            Err(err) => {
                self.hub.metrics.bad_request();
                self.apply(error::for_decode_error(&err));
                if let (Some(session), crate::protocol::DecodeError::BadParams { kind, id, .. }) =
                    (&session, &err)
                {
                    session.answer_undecodable(*kind, id);
                }
                return;
            }
        };
        match (session, message) {
            (
                None,
                ClientMessage::Connect {
                    version, support, ..
                },
            ) => self.handshake(version, support),
            (None, _) => self.reject("Must connect first", Some(&raw)),
            (Some(_), ClientMessage::Connect { .. }) => {
                self.reject("Already connected", Some(&raw))
            }
            (Some(s), message) => s.on_message(message, &raw),
        }
    }

    /// A binary WebSocket frame: DDP travels only in text, so it is answered like any other
    /// frame that is not a DDP message, and the connection stays.
    pub fn on_binary(&mut self) {
        if let ConnectionState::Connected(s) = &self.state {
            s.seen_inbound.store(true, Ordering::Relaxed);
        }
        if !matches!(self.state, ConnectionState::Closed) {
            self.reject("Bad request", None);
        }
    }

    fn reject(&self, reason: &'static str, offending: Option<&serde_json::Value>) {
        self.hub.metrics.bad_request();
        self.apply(Disposition::RejectMessage { reason, offending });
    }

    fn apply(&self, disposition: Disposition<'_>) {
        match disposition {
            Disposition::RejectMessage { reason, offending } => {
                self.outbound.push(frames::error(reason, offending));
            }
            Disposition::Close(reason) => self.outbound.close(reason),
            Disposition::ReplyToCall(_) => {}
        }
    }

    fn handshake(&mut self, version: Option<String>, support: Option<Vec<String>>) {
        let (Some(version), Some(support)) = (version, support) else {
            return self.fail("1");
        };
        if !support.contains(&version) {
            return self.fail("1");
        }
        let chosen = negotiate_version(&support);
        if chosen != version {
            return self.fail(chosen);
        }
        let version = match chosen {
            "pre2" => Version::Pre2,
            "pre1" => Version::Pre1,
            _ => Version::V1,
        };
        let session = Session::start(
            self.hub.clone(),
            self.outbound.clone(),
            version,
            self.client_address,
            self.transport,
        );
        self.state = ConnectionState::Connected(session);
    }

    fn fail(&mut self, version: &str) {
        self.outbound.push(frames::failed(version));
        self.outbound.close(CloseReason::HandshakeFailed);
        self.state = ConnectionState::Closed;
    }

    /// The transport is gone (or closing): end the session.
    pub fn close(&mut self, reason: CloseReason) {
        self.outbound.close(reason);
        if let ConnectionState::Connected(session) =
            std::mem::replace(&mut self.state, ConnectionState::Closed)
        {
            session.end(reason);
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.close(CloseReason::Normal);
        self.hub.metrics.connection_closed(self.transport);
    }
}

/// Work that runs in arrival order on the session's queue.
enum Work {
    Method {
        id: String,
        name: String,
        params: Vec<crate::model::Value>,
        random_seed: Option<String>,
    },
    Sub {
        id: String,
        name: String,
        params: Vec<crate::model::Value>,
    },
    Unsub {
        id: Option<String>,
    },
    /// Runs the universal publications (first thing after `connected`).
    StartUniversal,
    /// A service logged the session out (`ConnectionHandle::log_out`).
    LogOut,
}

/// A subscription's parameters as kept for a re-run when the user changes: EJSON text, a
/// third of the memory of the parsed values (a presence watch list holds thousands of ids).
struct SavedParams(Box<str>);

impl SavedParams {
    fn new(params: &[crate::model::Value]) -> Self {
        let mut text = String::from("[");
        for (i, p) in params.iter().enumerate() {
            if i > 0 {
                text.push(',');
            }
            crate::model::value::write_ejson(p, &mut text);
        }
        text.push(']');
        Self(text.into_boxed_str())
    }

    fn restore(&self) -> Vec<crate::model::Value> {
        match serde_json::from_str(&self.0).map(crate::model::Value::from_json) {
            Ok(Ok(crate::model::Value::Array(params))) => params,
            _ => {
                tracing::warn!("a subscription's saved parameters do not read back");
                Vec::new()
            }
        }
    }
}

struct SubEntry {
    /// The client's id; empty for a universal publication.
    id: Arc<str>,
    name: Arc<str>,
    params: SavedParams,
    ready_sent: bool,
    stopped: CancellationToken,
    /// A universal publication: no `ready`, no `nosub`.
    universal: bool,
}

#[derive(Default)]
struct SessionState {
    mergebox: Mergebox,
    subs: HashMap<SubKey, SubEntry>,
    subs_by_id: HashMap<Arc<str>, SubKey>,
    user_id: Option<String>,
}

/// A connected DDP session.
pub struct Session {
    id: Arc<str>,
    version: Version,
    hub: Arc<Hub>,
    outbound: Arc<Outbound>,
    state: Mutex<SessionState>,
    /// Messages waiting to run. A plain queue rather than a channel: an idle session then
    /// holds no preallocated slots.
    inbox: Mutex<std::collections::VecDeque<Work>>,
    inbox_ready: tokio::sync::Notify,
    queued_messages: AtomicUsize,
    queued_methods: AtomicUsize,
    seen_inbound: AtomicBool,
    next_sub_key: AtomicU64,
    ended: CancellationToken,
    sink: Arc<SinkRef>,
    client_address: Option<std::net::IpAddr>,
    transport: Transport,
    /// When the session started (ms since the epoch), for the operator's list.
    started_at_ms: f64,
    /// What services keep with the connection (`ConnectionHandle::attachment`).
    attachments: Mutex<HashMap<&'static str, String>>,
    /// The session as services see it.
    handle: Arc<dyn ConnectionHandle>,
    /// Set by the first `end`: the close hooks run once.
    closed: AtomicBool,
}

/// A subscription run to start again for a new user.
struct Rerun {
    old_key: SubKey,
    id: Arc<str>,
    name: Arc<str>,
    params: Vec<crate::model::Value>,
    universal: bool,
}

/// The session offered to services: a weak link, so a kept handle does not keep a closed
/// session alive.
struct SessionHandle {
    id: Arc<str>,
    session: Weak<Session>,
}

impl ConnectionHandle for SessionHandle {
    fn id(&self) -> &str {
        &self.id
    }

    fn user_id(&self) -> Option<String> {
        self.session
            .upgrade()
            .and_then(|s| s.lock().user_id.clone())
    }

    fn client_address(&self) -> Option<std::net::IpAddr> {
        self.session.upgrade().and_then(|s| s.client_address)
    }

    fn log_out(&self) {
        if let Some(session) = self.session.upgrade() {
            session.enqueue_internal(Work::LogOut);
        }
    }

    fn close(&self) {
        if let Some(session) = self.session.upgrade() {
            session.end(CloseReason::ClosedByServer);
        }
    }

    fn details(&self) -> Option<crate::engine::connections::ConnectionDetails> {
        let session = self.session.upgrade()?;
        Some(crate::engine::connections::ConnectionDetails {
            transport: session.transport.label(),
            opened_at_ms: session.started_at_ms,
            queued_bytes: session.outbound.queued_bytes(),
        })
    }

    fn subscription_count(&self) -> usize {
        self.session
            .upgrade()
            .map_or(0, |s| s.lock().subs_by_id.len())
    }

    fn attachment(&self, key: &'static str) -> Option<String> {
        let session = self.session.upgrade()?;
        let attachments = session
            .attachments
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        attachments.get(key).cloned()
    }

    fn set_attachment(&self, key: &'static str, value: Option<String>) {
        if let Some(session) = self.session.upgrade() {
            let mut attachments = session
                .attachments
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match value {
                Some(v) => attachments.insert(key, v),
                None => attachments.remove(key),
            };
        }
    }
}

/// What subscriptions hold: a weak link, so a kept `Subscription` does not keep a closed
/// session alive.
struct SinkRef(Weak<Session>);

impl Session {
    fn start(
        hub: Arc<Hub>,
        outbound: Arc<Outbound>,
        version: Version,
        client_address: Option<std::net::IpAddr>,
        transport: Transport,
    ) -> Arc<Self> {
        let id: Arc<str> = crate::model::random::random_id().into();
        let session = Arc::new_cyclic(|weak: &Weak<Session>| Session {
            id: id.clone(),
            version,
            hub: hub.clone(),
            outbound,
            state: Mutex::new(SessionState::default()),
            inbox: Mutex::new(std::collections::VecDeque::new()),
            inbox_ready: tokio::sync::Notify::new(),
            queued_messages: AtomicUsize::new(0),
            queued_methods: AtomicUsize::new(0),
            seen_inbound: AtomicBool::new(false),
            next_sub_key: AtomicU64::new(1),
            ended: hub.shutdown.child_token(),
            sink: Arc::new(SinkRef(weak.clone())),
            client_address,
            transport,
            started_at_ms: crate::engine::build::now_ms(),
            attachments: Mutex::new(HashMap::new()),
            handle: Arc::new(SessionHandle {
                id: id.clone(),
                session: weak.clone(),
            }),
            closed: AtomicBool::new(false),
        });
        hub.metrics.session_delta(1);
        session.send(frames::connected(&id));
        hub.registry.connections().opened(&session.handle);
        if !hub.registry.universal_publications().is_empty() {
            session.enqueue_internal(Work::StartUniversal);
        }
        let span = tracing::debug_span!("session", session_id = %id);
        tracing::debug!(parent: &span, ?version, "session started");
        hub.tasks
            .spawn(Session::run_queue(session.clone()).instrument(span.clone()));
        if version != Version::Pre1 && !hub.config.heartbeat_interval.is_zero() {
            hub.tasks
                .spawn(Session::run_heartbeat(Arc::downgrade(&session)).instrument(span));
        }
        session
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues work the session gave itself; it runs in order with the client's messages and
    /// does not count against the client's limits.
    fn enqueue_internal(&self, work: Work) {
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(work);
        self.queued_messages.fetch_add(1, Ordering::Relaxed);
        self.inbox_ready.notify_one();
    }

    /// Queues a frame; a slow consumer ends the session.
    fn send(&self, frame: Frame) {
        if self.outbound.push(frame) == Some(CloseReason::SlowConsumer) {
            self.slow_consumer();
        }
    }

    /// Queues frames in order; `false` when the queue overflowed (call `slow_consumer` after
    /// releasing the state lock). Called with the state lock held so that frames leave in
    /// the order the mergebox produced them.
    fn push_all(&self, frames: Vec<Frame>) -> bool {
        let mut ok = true;
        for frame in frames {
            ok &= self.outbound.push(frame) != Some(CloseReason::SlowConsumer);
        }
        ok
    }

    /// Counts a call against the registry's limits (`too-many-requests` when over one).
    fn check_call_limits(
        &self,
        kind: CallKind,
        name: &str,
        user_id: Option<&str>,
    ) -> Result<(), MeteorError> {
        self.hub.registry.call_limits().check(&Call {
            kind,
            name,
            user_id,
            connection_id: &self.id,
            address: self.client_address,
        })
    }

    /// Ends a call whose parameters could not be decoded: Meteor's `Parse error` alone would
    /// leave the client waiting on it for ever.
    fn answer_undecodable(&self, kind: crate::protocol::client::CallKind, id: &str) {
        let err = MeteorError::new(400, "Parse error: the parameters are not valid EJSON");
        match kind {
            crate::protocol::client::CallKind::Method => {
                self.hub.metrics.method_call(MethodOutcomeKind::Rejected);
                self.send(frames::result(id, MethodOutcome::Error(&err)));
                self.send(frames::updated(id));
            }
            crate::protocol::client::CallKind::Sub => {
                self.send(frames::nosub(Some(id), Some(&err)));
            }
        }
    }

    fn slow_consumer(&self) {
        tracing::warn!(session_id = %self.id, "slow consumer closed: outbound queue over limit");
        self.hub.metrics.slow_consumer_closed();
        self.end(CloseReason::SlowConsumer);
    }

    fn on_message(self: &Arc<Self>, message: ClientMessage, raw: &serde_json::Value) {
        let work = match message {
            ClientMessage::Ping { id } if self.version != Version::Pre1 => {
                match id {
                    PingId::Absent => self.send(frames::pong(None)),
                    PingId::Text(id) => self.send(frames::pong(Some(&id))),
                    // Meteor cannot build a pong for a non-string id and sends nothing.
                    PingId::Invalid => tracing::debug!("ping with a non-string id ignored"),
                }
                return;
            }
            ClientMessage::Pong if self.version != Version::Pre1 => return,
            ClientMessage::Disconnect => {
                self.outbound.close(CloseReason::Normal);
                self.end(CloseReason::Normal);
                return;
            }
            ClientMessage::Method {
                id,
                method,
                params,
                random_seed,
            } => {
                if self.queued_methods.load(Ordering::Relaxed) >= self.hub.config.max_queued_methods
                {
                    self.hub.metrics.method_call(MethodOutcomeKind::Rejected);
                    let err = MeteorError::new(
                        "too-many-requests",
                        "Too many method calls waiting on this connection",
                    );
                    self.send(frames::result(&id, MethodOutcome::Error(&err)));
                    self.send(frames::updated(&id));
                    return;
                }
                self.queued_methods.fetch_add(1, Ordering::Relaxed);
                Work::Method {
                    id,
                    name: method,
                    params,
                    random_seed,
                }
            }
            ClientMessage::Sub { id, name, params } => Work::Sub { id, name, params },
            ClientMessage::Unsub { id } => Work::Unsub { id },
            ClientMessage::Ping { .. }
            | ClientMessage::Pong
            | ClientMessage::Unknown
            | ClientMessage::Connect { .. } => {
                self.hub.metrics.bad_request();
                self.send(frames::error("Bad request", Some(raw)));
                return;
            }
        };
        if self.queued_messages.fetch_add(1, Ordering::Relaxed)
            >= self.hub.config.max_queued_messages
        {
            tracing::warn!(session_id = %self.id, "message flood: closing connection");
            self.end(CloseReason::Flood);
            return;
        }
        self.inbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(work);
        self.inbox_ready.notify_one();
    }

    /// Runs queued messages one at a time, in arrival order.
    async fn run_queue(self: Arc<Self>) {
        loop {
            let notified = self.inbox_ready.notified();
            let next = self
                .inbox
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(work) = next else {
                tokio::select! {
                    biased;
                    _ = self.ended.cancelled() => break,
                    _ = notified => continue,
                }
            };
            if self.ended.is_cancelled() {
                break;
            }
            self.queued_messages.fetch_sub(1, Ordering::Relaxed);
            match work {
                Work::Method {
                    id,
                    name,
                    params,
                    random_seed,
                } => {
                    self.queued_methods.fetch_sub(1, Ordering::Relaxed);
                    self.run_method(id, name, params, random_seed).await;
                }
                Work::Sub { id, name, params } => self.run_sub(id, name, params).await,
                Work::Unsub { id } => self.unsub(id),
                Work::StartUniversal => self.start_universal().await,
                Work::LogOut => self.change_user(None).await,
            }
        }
        // The queue ends with the session; on shutdown, say so to the client.
        let reason = if self.hub.shutdown.is_cancelled() {
            CloseReason::Shutdown
        } else {
            CloseReason::Normal
        };
        self.end(reason);
    }

    async fn run_method(
        self: &Arc<Self>,
        id: String,
        name: String,
        params: Vec<crate::model::Value>,
        random_seed: Option<String>,
    ) {
        let started = std::time::Instant::now();
        let Some(handler) = self.hub.registry.find_method(&name).cloned() else {
            self.hub.metrics.method_call(MethodOutcomeKind::NotFound);
            self.hub
                .metrics
                .method_duration(&name, started.elapsed().as_secs_f64());
            let err = MeteorError::new(404, format!("Method '{name}' not found"));
            self.send(frames::result(&id, MethodOutcome::Error(&err)));
            self.send(frames::updated(&id));
            return;
        };
        let user_id = self.lock().user_id.clone();
        if let Err(err) = self.check_call_limits(CallKind::Method, &name, user_id.as_deref()) {
            self.hub.metrics.method_call(MethodOutcomeKind::Rejected);
            self.send(frames::result(&id, MethodOutcome::Error(&err)));
            self.send(frames::updated(&id));
            return;
        }
        let (unblock_tx, mut unblock_rx) = oneshot::channel();
        let ctx = MethodContext::new(user_id, self.id.clone(), random_seed, unblock_tx)
            .with_connection(self.handle.clone());
        let fence = ctx.write_fence();
        let user_change = ctx.user_change();
        let span = tracing::debug_span!("method", id = %id, name = %name);
        let mut call = AssertUnwindSafe(handler(ctx, params))
            .catch_unwind()
            .instrument(span);
        tokio::select! {
            biased;
            outcome = &mut call => {
                self.apply_user_change(&user_change).await;
                self.finish_method(&id, &name, outcome, &fence, started).await
            }
            Ok(()) = &mut unblock_rx => {
                // Unblocked: the rest runs beside the queue.
                let session = self.clone();
                self.hub.tasks.spawn(async move {
                    let outcome = call.await;
                    session.apply_user_change(&user_change).await;
                    session.finish_method(&id, &name, outcome, &fence, started).await;
                });
            }
            _ = self.ended.cancelled() => {}
        }
    }

    async fn apply_user_change(self: &Arc<Self>, change: &crate::engine::registry::UserChange) {
        let change = change.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(user_id) = change {
            self.change_user(user_id).await;
        }
    }

    /// Takes on a new user (or none), as Meteor's `setUserId` does: every subscription and
    /// universal publication runs again with it, each new run under the same id before the
    /// old one is stopped, so the client gets the difference rather than everything again;
    /// the re-run subscriptions send `ready` again.
    async fn change_user(self: &Arc<Self>, user_id: Option<String>) {
        let (old, runs) = {
            let mut state = self.lock();
            if state.user_id == user_id {
                return;
            }
            let old = std::mem::replace(&mut state.user_id, user_id.clone());
            let runs: Vec<Rerun> = state
                .subs
                .iter()
                .map(|(key, e)| Rerun {
                    old_key: *key,
                    id: e.id.clone(),
                    name: e.name.clone(),
                    params: e.params.restore(),
                    universal: e.universal,
                })
                .collect();
            (old, runs)
        };
        self.hub.registry.connections().user_changed(
            &self.handle,
            old.as_deref(),
            user_id.as_deref(),
        );
        let mut runs = runs;
        runs.sort_by_key(|run| run.old_key);
        for Rerun {
            old_key,
            id,
            name,
            params,
            universal,
        } in runs
        {
            let handler = if universal {
                self.hub
                    .registry
                    .universal_publications()
                    .iter()
                    .find(|(n, _)| **n == *name)
                    .map(|(_, h)| h.clone())
            } else {
                self.hub.registry.find_publication(&name).cloned()
            };
            if let Some(handler) = handler {
                self.start_run(handler, id, name, params, universal).await;
            }
            self.retire_run(old_key);
        }
    }

    /// Runs the universal publications with the session's current user.
    async fn start_universal(self: &Arc<Self>) {
        let universal: Vec<(String, PublicationFn)> =
            self.hub.registry.universal_publications().to_vec();
        for (name, handler) in universal {
            self.start_run(handler, "".into(), name.as_str().into(), Vec::new(), true)
                .await;
        }
    }

    /// Stops a subscription's run that a newer run under the same id replaced: its
    /// publisher ends and its documents leave the mergebox (only those the new run did not
    /// publish reach the client as `removed`); no `nosub`.
    fn retire_run(&self, key: SubKey) {
        let mut out = Vec::new();
        let pushed = {
            let mut state = self.lock();
            let Some(entry) = state.subs.remove(&key) else {
                return;
            };
            entry.stopped.cancel();
            state.mergebox.remove_subscription(key, &mut out);
            self.push_all(out)
        };
        self.hub.metrics.subscription_delta(-1);
        if !pushed {
            self.slow_consumer();
        }
    }

    /// Sends the call's `result` at once, and its `updated` once the live queries have seen
    /// its writes (the write fence), without holding up the session's queue meanwhile.
    async fn finish_method(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        outcome: Result<crate::engine::registry::MethodResult, Box<dyn std::any::Any + Send>>,
        fence: &std::sync::atomic::AtomicU64,
        started: std::time::Instant,
    ) {
        let frame = match outcome {
            Ok(Ok(value)) => {
                self.hub.metrics.method_call(MethodOutcomeKind::Ok);
                match &value {
                    Some(v) => frames::result(id, MethodOutcome::Value(v)),
                    None => frames::result(id, MethodOutcome::Nothing),
                }
            }
            Ok(Err(err)) => {
                let kind = match err {
                    crate::engine::ServiceError::Client(_) => MethodOutcomeKind::ClientError,
                    crate::engine::ServiceError::Internal(_) => MethodOutcomeKind::InternalError,
                };
                self.hub.metrics.method_call(kind);
                let reply = error::for_service_error(err, name).into_reply();
                frames::result(id, MethodOutcome::Error(&reply))
            }
            Err(_panic) => {
                self.hub
                    .metrics
                    .method_call(MethodOutcomeKind::InternalError);
                let reply = error::for_panic(name).into_reply();
                frames::result(id, MethodOutcome::Error(&reply))
            }
        };
        self.hub
            .metrics
            .method_duration(name, started.elapsed().as_secs_f64());
        self.send(frame);
        let written = fence.load(Ordering::Relaxed);
        let observe = match &self.hub.observe {
            Some(observe) if written > 0 => observe.clone(),
            _ => return self.send(frames::updated(id)),
        };
        // Write fence: the frames of this call's writes go out before its `updated`. A write
        // whose change never comes (a source that lost it) is released after the bound.
        let (session, id) = (self.clone(), id.to_owned());
        self.hub.tasks.spawn(async move {
            let bound = session.hub.config.write_fence_timeout;
            tokio::select! {
                passed = tokio::time::timeout(bound, observe.wait_processed(written)) => {
                    if passed.is_err() {
                        session.hub.metrics.write_fence_timed_out();
                        tracing::warn!(
                            session_id = %session.id,
                            method_id = %id,
                            bound_ms = bound.as_millis() as u64,
                            "write fence not passed in time: updated sent without the change"
                        );
                    }
                    session.send(frames::updated(&id));
                }
                _ = session.ended.cancelled() => {}
            }
        });
    }

    async fn run_sub(self: &Arc<Self>, id: String, name: String, params: Vec<crate::model::Value>) {
        let Some(handler) = self.hub.registry.find_publication(&name).cloned() else {
            let err = MeteorError::new(404, format!("Subscription '{name}' not found"));
            self.send(frames::nosub(Some(&id), Some(&err)));
            return;
        };
        let id: Arc<str> = id.into();
        let user_id = {
            let state = self.lock();
            if state.subs_by_id.contains_key(&id) {
                // A live subscription id again (a reconnecting client re-sends): ignored.
                return;
            }
            if state.subs_by_id.len() >= self.hub.config.max_subscriptions {
                drop(state);
                let err = too_many_subscriptions(self.hub.config.max_subscriptions, "connection");
                self.send(frames::nosub(Some(&id), Some(&err)));
                return;
            }
            state.user_id.clone()
        };
        if let Err(err) = self.check_call_limits(CallKind::Subscription, &name, user_id.as_deref())
        {
            self.send(frames::nosub(Some(&id), Some(&err)));
            return;
        }
        if let Some(user) = &user_id {
            // Counted outside this session's lock: the count reads every session of the user.
            let held: usize = self
                .hub
                .registry
                .connections()
                .of_user(user)
                .iter()
                .map(|c| c.subscription_count())
                .sum();
            if held >= self.hub.config.max_subscriptions_per_user {
                let err =
                    too_many_subscriptions(self.hub.config.max_subscriptions_per_user, "user");
                self.send(frames::nosub(Some(&id), Some(&err)));
                return;
            }
        }
        self.start_run(handler, id, name.as_str().into(), params, false)
            .await;
    }

    /// Starts one run of a publication for the session's current user: a subscription the
    /// client asked for (filed under its id, which from now on leads to this run) or a
    /// universal publication.
    async fn start_run(
        self: &Arc<Self>,
        handler: PublicationFn,
        id: Arc<str>,
        name: Arc<str>,
        params: Vec<crate::model::Value>,
        universal: bool,
    ) {
        let (key, stopped, user_id) = {
            let mut state = self.lock();
            if self.ended.is_cancelled() {
                return;
            }
            let key = self.next_sub_key.fetch_add(1, Ordering::Relaxed);
            let stopped = self.ended.child_token();
            state.subs.insert(
                key,
                SubEntry {
                    id: id.clone(),
                    name: name.clone(),
                    params: SavedParams::new(&params),
                    ready_sent: false,
                    stopped: stopped.clone(),
                    universal,
                },
            );
            if !universal {
                state.subs_by_id.insert(id.clone(), key);
            }
            (key, stopped, state.user_id.clone())
        };
        self.hub.metrics.subscription_delta(1);
        let sub = Subscription::new(
            id.clone(),
            name.clone(),
            user_id,
            self.id.clone(),
            key,
            self.sink.clone(),
            stopped,
        );
        let span = tracing::debug_span!("sub", id = %id, name = %name);
        let started = std::time::Instant::now();
        let outcome = AssertUnwindSafe(handler(sub, params))
            .catch_unwind()
            .instrument(span)
            .await;
        self.hub
            .metrics
            .publication_start(&name, started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(Publish::Ready)) => self.sub_ready(key),
            Ok(Ok(Publish::Manual)) => {}
            Ok(Err(err)) => {
                let reply = error::for_service_error(err, &name).into_reply();
                self.stop_sub(key, Some(reply));
            }
            Err(_panic) => {
                let reply = error::for_panic(&name).into_reply();
                self.stop_sub(key, Some(reply));
            }
        }
    }

    fn unsub(&self, id: Option<String>) {
        let key = id
            .as_deref()
            .and_then(|id| self.lock().subs_by_id.get(id).copied());
        match key {
            Some(key) => self.stop_sub(key, None),
            None => self.send(frames::nosub(id.as_deref(), None)),
        }
    }

    fn sub_ready(&self, key: SubKey) {
        let mut state = self.lock();
        let Some(entry) = state.subs.get_mut(&key) else {
            return;
        };
        if entry.ready_sent || entry.universal {
            return;
        }
        entry.ready_sent = true;
        let frame = frames::ready(&[&entry.id]);
        let pushed = self.push_all(vec![frame]);
        drop(state);
        if !pushed {
            self.slow_consumer();
        }
    }

    /// Ends one subscription: its documents leave the mergebox, then `nosub` (none for a
    /// universal publication, whose failure is only logged).
    fn stop_sub(&self, key: SubKey, error: Option<MeteorError>) {
        let mut out = Vec::new();
        let pushed = {
            let mut state = self.lock();
            let Some(entry) = state.subs.remove(&key) else {
                return;
            };
            if state.subs_by_id.get(&entry.id) == Some(&key) {
                state.subs_by_id.remove(&entry.id);
            }
            entry.stopped.cancel();
            state.mergebox.remove_subscription(key, &mut out);
            if entry.universal {
                if let Some(err) = &error {
                    tracing::warn!(publication = %entry.name, reason = err.reason.as_deref().unwrap_or(""), "universal publication failed");
                }
            } else {
                out.push(frames::nosub(Some(&entry.id), error.as_ref()));
            }
            self.push_all(out)
        };
        self.hub.metrics.subscription_delta(-1);
        if !pushed {
            self.slow_consumer();
        }
    }

    /// Ends the session: subscriptions stop (their publishers see `stopped()`), the queue
    /// and heartbeat end, and the outbound queue is closed.
    fn end(&self, reason: CloseReason) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.ended.cancel();
        self.outbound.close(reason);
        let state = std::mem::take(&mut *self.lock());
        self.hub
            .registry
            .connections()
            .closed(&self.id, state.user_id.as_deref());
        for entry in state.subs.values() {
            entry.stopped.cancel();
        }
        self.hub
            .metrics
            .subscription_delta(-(state.subs.len() as i64));
        self.hub.metrics.session_delta(-1);
        tracing::debug!(session_id = %self.id, ?reason, "session ended");
    }

    /// Pings after a quiet interval; closes when the ping goes unanswered.
    async fn run_heartbeat(session: Weak<Session>) {
        let Some(s) = session.upgrade() else { return };
        let (interval, timeout, ended) = (
            s.hub.config.heartbeat_interval,
            s.hub.config.heartbeat_timeout,
            s.ended.clone(),
        );
        drop(s);
        loop {
            tokio::select! {
                _ = ended.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            let Some(s) = session.upgrade() else { return };
            if s.outbound.check_stalled() {
                s.slow_consumer();
                return;
            }
            if s.seen_inbound.swap(false, Ordering::Relaxed) {
                continue;
            }
            s.send(frames::ping());
            drop(s);
            tokio::select! {
                _ = ended.cancelled() => return,
                _ = tokio::time::sleep(timeout) => {}
            }
            let Some(s) = session.upgrade() else { return };
            if !s.seen_inbound.load(Ordering::Relaxed) {
                tracing::debug!(session_id = %s.id, "heartbeat timeout");
                s.end(CloseReason::HeartbeatTimeout);
                return;
            }
        }
    }
}

impl PublicationSink for SinkRef {
    fn added(&self, sub: SubKey, doc: Arc<SharedAdded>) {
        let Some(s) = self.0.upgrade() else { return };
        let mut out = Vec::with_capacity(1);
        {
            let mut state = s.lock();
            if !state.subs.contains_key(&sub) {
                return;
            }
            state.mergebox.added(sub, &doc, &mut out);
            if s.push_all(out) {
                return;
            }
        }
        s.slow_consumer();
    }

    fn changed(
        &self,
        sub: SubKey,
        collection: &str,
        id: &str,
        fields: Document,
        cleared: Vec<String>,
        after: Option<crate::model::SharedDocument>,
    ) {
        let Some(s) = self.0.upgrade() else { return };
        let mut out = Vec::with_capacity(1);
        {
            let mut state = s.lock();
            if !state.subs.contains_key(&sub) {
                return;
            }
            state.mergebox.changed(
                sub,
                collection,
                id,
                fields,
                &cleared,
                after.as_ref(),
                &mut out,
            );
            if s.push_all(out) {
                return;
            }
        }
        s.slow_consumer();
    }

    fn removed(&self, sub: SubKey, collection: &str, id: &str) {
        let Some(s) = self.0.upgrade() else { return };
        let mut out = Vec::with_capacity(1);
        {
            let mut state = s.lock();
            if !state.subs.contains_key(&sub) {
                return;
            }
            state.mergebox.removed(sub, collection, id, &mut out);
            if s.push_all(out) {
                return;
            }
        }
        s.slow_consumer();
    }

    fn stream(
        &self,
        sub: SubKey,
        event: Arc<crate::model::shared::StreamEvent>,
        revoked: Option<Arc<std::sync::atomic::AtomicBool>>,
    ) {
        let Some(s) = self.0.upgrade() else { return };
        let mut frame = Frame::from_shared(event.frame(|e| {
            let built = match (&e.args, &e.presence_of) {
                (Some(args), Some(uid)) => frames::presence_event(&e.collection, uid, args),
                (Some(args), None) => frames::stream_event(&e.collection, &e.event, args),
                (None, _) => frames::stream_added(&e.collection, &e.event),
            };
            built.bytes().clone()
        }));
        if let Some(revoked) = revoked {
            frame = frame.revocable(revoked);
        }
        {
            let state = s.lock();
            if !state.subs.contains_key(&sub) {
                return;
            }
            if s.push_all(vec![frame]) {
                return;
            }
        }
        s.slow_consumer();
    }

    fn ready(&self, sub: SubKey) {
        if let Some(s) = self.0.upgrade() {
            s.sub_ready(sub);
        }
    }

    fn stop(&self, sub: SubKey, error: Option<MeteorError>) {
        if let Some(s) = self.0.upgrade() {
            s.stop_sub(sub, error);
        }
    }

    fn backlog(&self) -> usize {
        self.0.upgrade().map_or(0, |s| s.outbound.queued_bytes())
    }

    fn backlog_limit(&self) -> usize {
        self.0
            .upgrade()
            .map_or(0, |s| s.hub.config.outbound.max_queued_bytes)
    }

    fn drained(&self, bytes: usize) -> crate::engine::registry::BoxFuture<()> {
        let outbound = self.0.upgrade().map(|s| s.outbound.clone());
        Box::pin(async move {
            if let Some(outbound) = outbound {
                outbound.drained_to(bytes).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::SavedParams;
    use crate::model::Value;

    #[test]
    fn saved_parameters_read_back_as_they_came() {
        let params = vec![
            Value::from(""),
            Value::Date(1_700_000_000_123.0),
            Value::binary(vec![1, 2, 3]),
            Value::Array(vec![Value::from("a"), Value::Number(2.5), Value::Null]),
        ];
        assert_eq!(SavedParams::new(&params).restore(), params);
        assert!(SavedParams::new(&[]).restore().is_empty());
    }
}
