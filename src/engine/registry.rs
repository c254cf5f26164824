//! The registry of DDP methods and publications, and the handles their handlers receive.
//!
//! Owns the Rust API services use to expose methods and publications. It must not know how
//! sessions merge or send data: a [`Subscription`] only forwards to a [`PublicationSink`].

use super::error::ServiceError;
use crate::model::{Document, MeteorError, SharedDocument, Value};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a method returns: `None` is JavaScript's `undefined` (no `result` member).
pub type MethodResult = Result<Option<Value>, ServiceError>;

/// A method handler.
pub type MethodFn = Arc<dyn Fn(MethodContext, Vec<Value>) -> BoxFuture<MethodResult> + Send + Sync>;

/// How a publication finished its start.
#[derive(Debug, PartialEq, Eq)]
pub enum Publish {
    /// The initial documents are out: send `ready` now.
    Ready,
    /// The handler will call [`Subscription::ready`] itself (or never, as Meteor allows).
    Manual,
}

/// A publication handler.
pub type PublicationFn =
    Arc<dyn Fn(Subscription, Vec<Value>) -> BoxFuture<Result<Publish, ServiceError>> + Send + Sync>;

/// Methods and publications by name, and the directory of live connections services may
/// consult. Built at start-up, then shared read-only.
#[derive(Clone)]
pub struct Registry {
    methods: HashMap<String, MethodFn>,
    publications: HashMap<String, PublicationFn>,
    /// Publications every session runs without being asked (Meteor's `Meteor.publish(null)`):
    /// again whenever its user changes; they never send `ready` or `nosub`.
    universal: Vec<(String, PublicationFn)>,
    connections: Arc<super::connections::Connections>,
    /// The limits every call passes before its handler runs.
    call_limits: Arc<super::rate_limit::CallLimiter>,
    /// This process's streams, where events from the bus are delivered.
    local_streams: Arc<super::bus::LocalStreams>,
    /// Where events that mirror no data travel (this process alone, or every instance).
    bus: Arc<dyn super::bus::Bus>,
    /// This process's id among the deployment's instances (`instances`, connection
    /// records, the bus, leases).
    instance: Arc<str>,
}

impl Default for Registry {
    fn default() -> Self {
        let local_streams = Arc::new(super::bus::LocalStreams::default());
        Self {
            methods: HashMap::new(),
            publications: HashMap::new(),
            universal: Vec::new(),
            connections: Arc::default(),
            call_limits: Arc::default(),
            bus: super::bus::LocalBus::new(local_streams.clone()),
            local_streams,
            instance: crate::model::random::random_id().into(),
        }
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// This process's streams by collection (what a bus delivers to).
    pub fn local_streams(&self) -> &Arc<super::bus::LocalStreams> {
        &self.local_streams
    }

    /// This process's id among the deployment's instances.
    pub fn instance_id(&self) -> &Arc<str> {
        &self.instance
    }

    /// The bus events that mirror no data are published on.
    pub fn bus(&self) -> &Arc<dyn super::bus::Bus> {
        &self.bus
    }

    /// Publishes events that mirror no data on `bus` from now on (a broker between
    /// instances, delivering to [`Registry::local_streams`]); before the services start.
    pub fn use_bus(&mut self, bus: Arc<dyn super::bus::Bus>) {
        self.bus = bus;
    }

    /// Registers a method; a later registration under the same name replaces it.
    pub fn method<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(MethodContext, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResult> + Send + 'static,
    {
        self.methods.insert(
            name.to_owned(),
            Arc::new(move |ctx, params| Box::pin(handler(ctx, params))),
        );
        self
    }

    /// Registers a method of `service`: `handler` gets the service with each call.
    pub fn method_of<S, F, Fut>(&mut self, name: &str, service: &Arc<S>, handler: F) -> &mut Self
    where
        S: Send + Sync + 'static,
        F: Fn(Arc<S>, MethodContext, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResult> + Send + 'static,
    {
        let service = service.clone();
        self.method(name, move |ctx, params| {
            handler(service.clone(), ctx, params)
        })
    }

    /// Registers a publication.
    pub fn publication<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(Subscription, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Publish, ServiceError>> + Send + 'static,
    {
        self.publications.insert(
            name.to_owned(),
            Arc::new(move |sub, params| Box::pin(handler(sub, params))),
        );
        self
    }

    /// Registers a universal publication (Meteor's `Meteor.publish(null, ...)`).
    pub fn universal_publication<F, Fut>(&mut self, name: &str, handler: F) -> &mut Self
    where
        F: Fn(Subscription, Vec<Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Publish, ServiceError>> + Send + 'static,
    {
        self.universal.push((
            name.to_owned(),
            Arc::new(move |sub, params| Box::pin(handler(sub, params))),
        ));
        self
    }

    /// The universal publications, in registration order.
    pub fn universal_publications(&self) -> &[(String, PublicationFn)] {
        &self.universal
    }

    /// The live connections (sessions report to it; services read it).
    pub fn connections(&self) -> &Arc<super::connections::Connections> {
        &self.connections
    }

    /// The limits on calls (methods and subscriptions), checked by every way a call comes in.
    pub fn call_limits(&self) -> &Arc<super::rate_limit::CallLimiter> {
        &self.call_limits
    }

    pub fn find_method(&self, name: &str) -> Option<&MethodFn> {
        self.methods.get(name)
    }

    pub fn find_publication(&self, name: &str) -> Option<&PublicationFn> {
        self.publications.get(name)
    }

    /// Every registered method name (a fixed set once the server runs).
    pub fn method_names(&self) -> Vec<String> {
        self.methods.keys().cloned().collect()
    }

    /// Every registered publication name.
    pub fn publication_names(&self) -> Vec<String> {
        self.publications.keys().cloned().collect()
    }
}

/// What a method handler knows about its call.
pub struct MethodContext {
    /// The logged-in user, if any.
    pub user_id: Option<String>,
    /// The DDP session id of the caller.
    pub connection_id: Arc<str>,
    /// The client's `randomSeed`, from which ids the client simulated are derived.
    pub random_seed: Option<String>,
    unblock: Mutex<Option<oneshot::Sender<()>>>,
    /// Highest change sequence this call wrote: the session holds `updated` until observers
    /// have seen it (Meteor's write fence).
    write_fence: Arc<std::sync::atomic::AtomicU64>,
    /// The user the call asked the session to take on (`Some(None)`: log out).
    user_change: UserChange,
    /// The calling connection, when the call came over DDP.
    connection: Option<Arc<dyn super::connections::ConnectionHandle>>,
    /// The caller's address when the call came without a connection (REST's `method.call`).
    address: Option<std::net::IpAddr>,
}

/// A change of the session's user asked for by a method, applied before its `result`.
pub type UserChange = Arc<Mutex<Option<Option<String>>>>;

impl MethodContext {
    pub fn new(
        user_id: Option<String>,
        connection_id: Arc<str>,
        random_seed: Option<String>,
        unblock: oneshot::Sender<()>,
    ) -> Self {
        Self {
            user_id,
            connection_id,
            random_seed,
            unblock: Mutex::new(Some(unblock)),
            write_fence: Arc::new(std::sync::atomic::AtomicU64::new(0)),
            user_change: UserChange::default(),
            connection: None,
            address: None,
        }
    }

    /// The same context, for a call made over `connection`.
    pub fn with_connection(
        mut self,
        connection: Arc<dyn super::connections::ConnectionHandle>,
    ) -> Self {
        self.connection = Some(connection);
        self
    }

    /// The same context, for a call that came from `address` without a connection (REST):
    /// limits keyed by address apply to it as to a socket's calls.
    pub fn with_client_address(mut self, address: Option<std::net::IpAddr>) -> Self {
        self.address = address;
        self
    }

    /// The calling connection (`None` for a call that came over REST).
    pub fn connection(&self) -> Option<&Arc<dyn super::connections::ConnectionHandle>> {
        self.connection.as_ref()
    }

    /// The caller's address, when known.
    pub fn client_address(&self) -> Option<std::net::IpAddr> {
        match &self.connection {
            Some(c) => c.client_address(),
            None => self.address,
        }
    }

    /// Sets the session's user from the end of this call on (Meteor's `this.setUserId`;
    /// `None` logs out).
    pub fn set_user_id(&self, user_id: Option<String>) {
        *self.user_change.lock().unwrap_or_else(|p| p.into_inner()) = Some(user_id);
    }

    /// Where the session finds a user change once the call is over.
    pub fn user_change(&self) -> UserChange {
        self.user_change.clone()
    }

    /// Records a write this call made (its change sequence number).
    pub fn record_write(&self, seq: u64) {
        self.write_fence
            .fetch_max(seq, std::sync::atomic::Ordering::Relaxed);
    }

    /// The fence the session waits on before `updated`.
    pub fn write_fence(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.write_fence.clone()
    }

    /// Lets the session start its next message before this method returns (Meteor's
    /// `this.unblock()`). Calling it twice is harmless.
    pub fn unblock(&self) {
        let sender = match self.unblock.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(sender) = sender {
            let _ = sender.send(());
        }
    }

    /// A stream of Meteor random values seeded from `randomSeed` for `name`
    /// (`"/collection/<name>"` for inserted ids).
    pub fn random_stream(&self, name: &str) -> crate::model::random::Alea {
        match &self.random_seed {
            Some(seed) => crate::model::random::Alea::stream(seed, name),
            None => crate::model::random::Alea::stream(&crate::model::random::random_id(), name),
        }
    }
}

/// Identifies one run of one subscription within a session. A handle kept after `unsub`
/// (or after the same id is reused) no longer reaches the session.
pub type SubKey = u64;

pub use crate::model::shared::SharedAdded;

/// Where a subscription's data goes: implemented by the session's mergebox.
pub trait PublicationSink: Send + Sync {
    fn added(&self, sub: SubKey, doc: Arc<SharedAdded>);
    /// `after`, when given, is the publisher's whole document after the change: the
    /// mergebox may keep it by reference instead of copying its own.
    fn changed(
        &self,
        sub: SubKey,
        collection: &str,
        id: &str,
        fields: Document,
        cleared: Vec<String>,
        after: Option<SharedDocument>,
    );
    fn removed(&self, sub: SubKey, collection: &str, id: &str);
    /// Sends a stream event beside the mergebox: Rocket.Chat's stream events repeat one
    /// document id (`"id"`) with every event, which merging would swallow.
    /// A set `revoked` withdraws the event while it still waits in the queue.
    fn stream(
        &self,
        sub: SubKey,
        event: Arc<crate::model::shared::StreamEvent>,
        revoked: Option<Arc<std::sync::atomic::AtomicBool>>,
    );
    fn ready(&self, sub: SubKey);
    /// Ends the subscription: its documents go, then `nosub` (with the error, if any).
    fn stop(&self, sub: SubKey, error: Option<MeteorError>);
    /// Bytes waiting for the client: queued and not yet taken by the transport.
    fn backlog(&self) -> usize;
    /// The most bytes that may wait before the client is closed as a slow consumer.
    fn backlog_limit(&self) -> usize;
    /// Completes once the backlog is at most `bytes`, or the session has ended.
    fn drained(&self, bytes: usize) -> BoxFuture<()>;
}

/// The handle a publication handler publishes through. Cheap to clone; keep it to push
/// changes later (Rocket.Chat's streams do).
#[derive(Clone)]
pub struct Subscription {
    pub id: Arc<str>,
    pub name: Arc<str>,
    pub user_id: Option<String>,
    pub connection_id: Arc<str>,
    key: SubKey,
    sink: Arc<dyn PublicationSink>,
    stopped: CancellationToken,
}

impl Subscription {
    pub fn new(
        id: Arc<str>,
        name: Arc<str>,
        user_id: Option<String>,
        connection_id: Arc<str>,
        key: SubKey,
        sink: Arc<dyn PublicationSink>,
        stopped: CancellationToken,
    ) -> Self {
        Self {
            id,
            name,
            user_id,
            connection_id,
            key,
            sink,
            stopped,
        }
    }

    /// Publishes a document; `fields` may hold `_id`, which is never sent as a field.
    pub fn added(
        &self,
        collection: &str,
        id: &Value,
        fields: Document,
    ) -> Result<(), ServiceError> {
        let wire = crate::model::id_to_wire(id).map_err(ServiceError::internal)?;
        self.added_shared(SharedAdded::new(
            collection.into(),
            wire.into(),
            Arc::new(fields),
        ));
        Ok(())
    }

    /// Publishes a document shared with other sessions (its frame is serialized once).
    pub fn added_shared(&self, doc: Arc<SharedAdded>) {
        if !self.stopped.is_cancelled() {
            self.sink.added(self.key, doc);
        }
    }

    /// Changes fields and clears others of a published document.
    pub fn changed(
        &self,
        collection: &str,
        id: &Value,
        fields: Document,
        cleared: Vec<String>,
    ) -> Result<(), ServiceError> {
        let wire = crate::model::id_to_wire(id).map_err(ServiceError::internal)?;
        if !self.stopped.is_cancelled() {
            self.sink
                .changed(self.key, collection, &wire, fields, cleared, None);
        }
        Ok(())
    }

    /// Like [`Subscription::changed`], with the id already in wire form.
    pub fn changed_wire(
        &self,
        collection: &str,
        wire_id: &str,
        fields: Document,
        cleared: Vec<String>,
    ) {
        if !self.stopped.is_cancelled() {
            self.sink
                .changed(self.key, collection, wire_id, fields, cleared, None);
        }
    }

    /// Like [`Subscription::changed_wire`], from a publisher that keeps each document as a
    /// shared one: `doc` is the whole document after the change, which the mergebox then
    /// holds by reference rather than copying.
    pub fn changed_shared(&self, doc: &Arc<SharedAdded>, fields: Document, cleared: Vec<String>) {
        if !self.stopped.is_cancelled() {
            self.sink.changed(
                self.key,
                &doc.collection,
                &doc.id,
                fields,
                cleared,
                Some(doc.fields.clone()),
            );
        }
    }

    /// Like [`Subscription::removed`], with the id already in wire form.
    pub fn removed_wire(&self, collection: &str, wire_id: &str) {
        if !self.stopped.is_cancelled() {
            self.sink.removed(self.key, collection, wire_id);
        }
    }

    pub fn removed(&self, collection: &str, id: &Value) -> Result<(), ServiceError> {
        let wire = crate::model::id_to_wire(id).map_err(ServiceError::internal)?;
        if !self.stopped.is_cancelled() {
            self.sink.removed(self.key, collection, &wire);
        }
        Ok(())
    }

    /// Sends a stream event (shared by every receiver, serialized once) outside the
    /// mergebox; nothing once the subscription has ended.
    pub fn send_event(&self, event: Arc<crate::model::shared::StreamEvent>) {
        if !self.stopped.is_cancelled() {
            self.sink.stream(self.key, event, None);
        }
    }

    /// Like [`Subscription::send_event`]; setting `revoked` later withdraws the event if it
    /// has not been written yet.
    pub fn send_revocable_event(
        &self,
        event: Arc<crate::model::shared::StreamEvent>,
        revoked: Arc<std::sync::atomic::AtomicBool>,
    ) {
        if !self.stopped.is_cancelled() {
            self.sink.stream(self.key, event, Some(revoked));
        }
    }

    /// Marks the initial data as sent (`ready`); only the first call counts.
    pub fn ready(&self) {
        if !self.stopped.is_cancelled() {
            self.sink.ready(self.key);
        }
    }

    /// Ends the subscription from the server side with an error for the client.
    pub fn error(&self, error: MeteorError) {
        if !self.stopped.is_cancelled() {
            self.sink.stop(self.key, Some(error));
        }
    }

    /// Ends the subscription from the server side: documents removed, then `nosub`.
    pub fn stop(&self) {
        if !self.stopped.is_cancelled() {
            self.sink.stop(self.key, None);
        }
    }

    /// Bytes waiting for the client of this subscription's session: a publisher with much
    /// to send paces itself by it.
    pub fn backlog(&self) -> usize {
        self.sink.backlog()
    }

    /// The most bytes that may wait for the client before it is cut as a slow consumer.
    pub fn backlog_limit(&self) -> usize {
        self.sink.backlog_limit()
    }

    /// Completes once the session's backlog is at most `bytes`, or the subscription ended.
    pub async fn drained(&self, bytes: usize) {
        tokio::select! {
            _ = self.sink.drained(bytes) => {}
            _ = self.stopped.cancelled() => {}
        }
    }

    /// Completes when the subscription ends (unsub, stop, error or session close), so
    /// background publishers can finish.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }
}
