//! The Presence service: who is online, from the connections each user has open, and the
//! status users choose.
//!
//! Owns the connection records of this process (`usersSessions`, Rocket.Chat's shape: one
//! document per user, `connections: [{id, instanceId, status, _createdAt, _updatedAt}]`),
//! this process's entry in `instances` (its heartbeat), the sweep that drops the records of
//! processes that are gone (at start and on a timer), and the users' `status`,
//! `statusConnection`, `statusDefault` and `statusText` fields, computed by Rocket.Chat's
//! rule ([`effective_status`]). Connection changes arrive through the connection hooks,
//! are noted in memory at once and written by one worker that coalesces bursts (a user is
//! written once however many of its connections changed meanwhile). What clients hear of a
//! status (`stream-user-presence`, `stream-notify-logged` `user-status`, `userData`) comes
//! from the users' change events, so a status set by another process is told alike. It must
//! not know about sessions beyond [`ConnectionHandle`].

pub mod watch;

use super::permissions::Permissions;
use crate::chat::collections::USERS;
use crate::chat::collections::{INSTANCES, USERS_SESSIONS};
use crate::engine::build::{doc, now_ms, selector, update};
use crate::engine::connections::{ConnectionHandle, ConnectionHooks};
use crate::engine::error::ServiceError;
use crate::engine::registry::Registry;
use crate::engine::streams::Stream;
use crate::model::{Document, MeteorError, Value};
use crate::storage::{
    ChangeEvent, FindOptions, OperationType, RemoveOptions, Store, UpdateOptions, WriteOp,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use watch::Watchers;

/// Users written at once by the worker.
const MAX_IN_FLIGHT: usize = 64;
/// Longest status text kept (Rocket.Chat cuts at 120 characters).
const MAX_STATUS_TEXT: usize = 120;

/// A user's status.
pub use crate::chat::records::UserStatus as Status;

/// Rocket.Chat's precedence: no connection is offline whatever was chosen; otherwise a
/// chosen status other than `online` wins over the connections' state.
pub fn effective_status(connection: Status, default: Option<Status>) -> Status {
    match (connection, default) {
        (Status::Offline, _) => Status::Offline,
        (_, None | Some(Status::Online)) => connection,
        (_, Some(chosen)) => chosen,
    }
}

/// The connections' state: online if any is, away if any is, else offline.
fn connections_status(connections: &[Value]) -> Status {
    let statuses: Vec<Option<Status>> = connections
        .iter()
        .map(|c| {
            c.as_object()
                .and_then(|c| c.get("status"))
                .and_then(Value::as_str)
                .and_then(Status::parse)
        })
        .collect();
    if statuses.contains(&Some(Status::Online)) {
        Status::Online
    } else if statuses.contains(&Some(Status::Away)) {
        Status::Away
    } else if connections.is_empty() {
        Status::Offline
    } else {
        // A record in a shape we do not know still says the user is connected.
        Status::Online
    }
}

/// How presence behaves.
#[derive(Clone, Debug)]
pub struct PresenceConfig {
    /// How long a user's closed connection still counts (a reconnect within it does not
    /// flap the status).
    pub grace: Duration,
    /// How often this process renews its heartbeat and sweeps records of processes gone.
    pub heartbeat: Duration,
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_millis(3_000),
            heartbeat: Duration::from_secs(10),
        }
    }
}

/// One connection of this process.
struct Record {
    status: Status,
    created: f64,
    updated: f64,
}

/// What this process knows of its own connections, and the users to write.
#[derive(Default)]
struct Local {
    users: HashMap<Arc<str>, HashMap<Arc<str>, Record>>,
    dirty: VecDeque<Arc<str>>,
    queued: HashSet<Arc<str>>,
    in_flight: HashSet<Arc<str>>,
}

impl Local {
    fn mark(&mut self, uid: &Arc<str>) {
        if self.queued.insert(uid.clone()) {
            self.dirty.push_back(uid.clone());
        }
    }

    /// The next queued users not being written now, at most `room` of them.
    fn take(&mut self, room: usize) -> Vec<Arc<str>> {
        let mut out = Vec::new();
        let mut skipped = VecDeque::new();
        while out.len() < room {
            let Some(uid) = self.dirty.pop_front() else {
                break;
            };
            if self.in_flight.contains(&uid) {
                skipped.push_back(uid);
                continue;
            }
            self.queued.remove(&uid);
            self.in_flight.insert(uid.clone());
            out.push(uid);
        }
        // Users still being written stay queued, in order, for after.
        while let Some(uid) = skipped.pop_back() {
            self.dirty.push_front(uid);
        }
        out
    }
}

/// The Presence service.
pub struct Presence {
    store: Arc<dyn Store>,
    permissions: Arc<Permissions>,
    /// This process's id in `instances` and in its connection records.
    instance: Arc<str>,
    config: PresenceConfig,
    local: Mutex<Local>,
    wake: tokio::sync::Notify,
    pub watchers: Arc<Watchers>,
    /// `stream-notify-logged`, for `user-status`.
    logged: Arc<Stream>,
    /// How other instances and operators reach this one (`host:port`), once it listens.
    address: Mutex<Option<String>>,
    /// This process's streams (how many keys it listens to is one of its figures).
    local_streams: Arc<crate::engine::bus::LocalStreams>,
    /// When this process started, in ms.
    started: f64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn store_error(e: crate::storage::StoreError) -> ServiceError {
    ServiceError::from_store(&e)
}

use crate::chat::text;

/// The machine's name, to tell this machine's processes from others' in `instances`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

impl Presence {
    /// The service: its instance registered, the records of processes gone swept, its
    /// worker and timer started, its hooks on every connection.
    pub async fn start(
        store: Arc<dyn Store>,
        permissions: Arc<Permissions>,
        registry: &mut Registry,
        config: PresenceConfig,
        logged: Arc<Stream>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let presence = Arc::new(Self {
            store: store.clone(),
            permissions,
            instance: registry.instance_id().clone(),
            config,
            local: Mutex::new(Local::default()),
            wake: tokio::sync::Notify::new(),
            watchers: Arc::new(Watchers::default()),
            logged,
            address: Mutex::new(None),
            local_streams: registry.local_streams().clone(),
            started: now_ms(),
        });
        let sort = crate::model::query::Sort::parse(&doc(
            serde_json::json!({"connections.instanceId": 1}),
        )?)
        .map_err(|e| ServiceError::internal(e.0))?;
        store
            .ensure_index(USERS_SESSIONS, sort)
            .await
            .map_err(store_error)?;
        presence.heartbeat().await?;
        presence.sweep(true).await?;
        store.follow_collection(USERS);
        follower.add_service(&presence);
        tokio::spawn(work(Arc::downgrade(&presence)));
        tokio::spawn(keep_alive(Arc::downgrade(&presence)));
        registry
            .connections()
            .add_hooks(Arc::new(Hooks(Arc::downgrade(&presence))));
        presence.watchers.register(registry);
        methods(registry, &presence);
        Ok(presence)
    }

    /// This process's id in `instances`.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Names where this instance listens (`host:port`), shown in `instances` from the next
    /// heartbeat on.
    pub async fn set_address(&self, address: String) {
        *lock(&self.address) = Some(address);
        if let Err(err) = self.heartbeat().await {
            tracing::warn!(cause = %err, "this instance's entry could not be renewed");
        }
    }

    /// Every instance's entry in `instances` with whether it is alive (its heartbeat is
    /// recent and, on this machine, its process runs) and whether it is this one; for
    /// holders of `view-statistics`.
    pub async fn instances(
        &self,
        call: &crate::chat::call::Call<'_>,
    ) -> Result<Vec<(Document, bool, bool)>, ServiceError> {
        let uid = call.require_user()?;
        self.permissions
            .require(uid, "view-statistics", None)
            .await?;
        let (now, host) = (now_ms(), host_name());
        Ok(self
            .find(INSTANCES, serde_json::json!({}))
            .await?
            .into_iter()
            .map(|i| {
                let alive = self.alive(&i, now, &host);
                let this = text(&i, "_id") == Some(&*self.instance);
                (i, alive, this)
            })
            .collect())
    }

    async fn find(
        &self,
        collection: &str,
        filter: serde_json::Value,
    ) -> Result<Vec<Document>, ServiceError> {
        self.store
            .find(
                collection,
                FindOptions {
                    selector: selector(filter)?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(store_error)
    }

    async fn user(&self, uid: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(USERS, serde_json::json!({"_id": uid}))
            .await?
            .pop())
    }

    /// Notes that `uid`'s records changed: the worker writes them.
    fn mark(&self, uid: &Arc<str>) {
        lock(&self.local).mark(uid);
        self.wake.notify_one();
    }

    fn connection_opened(&self, uid: &str, connection: &str) {
        let now = now_ms();
        let uid: Arc<str> = uid.into();
        lock(&self.local)
            .users
            .entry(uid.clone())
            .or_default()
            .insert(
                connection.into(),
                Record {
                    status: Status::Online,
                    created: now,
                    updated: now,
                },
            );
        self.mark(&uid);
    }

    fn connection_gone(&self, uid: &str, connection: &str) {
        let uid: Arc<str> = uid.into();
        {
            let mut local = lock(&self.local);
            let Some(records) = local.users.get_mut(&uid) else {
                return;
            };
            if records.remove(connection).is_none() {
                return;
            }
            if records.is_empty() {
                local.users.remove(&uid);
            }
        }
        self.mark(&uid);
    }

    /// `UserPresence:online` / `UserPresence:away`: the state of one connection.
    pub fn set_connection_status(&self, uid: &str, connection: &str, status: Status) {
        let uid: Arc<str> = uid.into();
        {
            let mut local = lock(&self.local);
            let Some(record) = local
                .users
                .get_mut(&uid)
                .and_then(|records| records.get_mut(connection))
            else {
                return;
            };
            if record.status == status {
                return;
            }
            record.status = status;
            record.updated = now_ms();
        }
        self.mark(&uid);
    }

    /// How many connection records this process holds (for tests and the operator).
    pub fn local_connections(&self) -> usize {
        lock(&self.local).users.values().map(HashMap::len).sum()
    }

    /// Writes `uid`'s records of this process, then its status from every process's
    /// records; returns the last change's sequence number.
    async fn sync_user(&self, uid: &str) -> Result<u64, ServiceError> {
        let mine: Vec<serde_json::Value> = {
            let local = lock(&self.local);
            local
                .users
                .get(uid)
                .map(|records| {
                    records
                        .iter()
                        .map(|(id, r)| {
                            serde_json::json!({
                                "id": &**id, "instanceId": &*self.instance,
                                "status": r.status.as_str(),
                                "_createdAt": {"$date": r.created},
                                "_updatedAt": {"$date": r.updated},
                            })
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let mut ops = vec![WriteOp::Update {
            collection: USERS_SESSIONS.into(),
            selector: selector(serde_json::json!({"_id": uid}))?,
            update: update(
                serde_json::json!({"$pull": {"connections": {"instanceId": &*self.instance}}}),
            )?,
            options: UpdateOptions::default(),
        }];
        if mine.is_empty() {
            // A user with no connection left keeps no record.
            ops.push(WriteOp::Remove {
                collection: USERS_SESSIONS.into(),
                selector: selector(serde_json::json!({"_id": uid, "connections": {"$size": 0}}))?,
                options: RemoveOptions::default(),
            });
        } else {
            ops.push(WriteOp::Update {
                collection: USERS_SESSIONS.into(),
                selector: selector(serde_json::json!({"_id": uid}))?,
                update: update(serde_json::json!({"$push": {"connections": {"$each": mine}}}))?,
                options: UpdateOptions {
                    upsert: true,
                    multi: false,
                },
            });
        }
        let mut seq = self
            .store
            .write_all(ops)
            .await
            .map_err(store_error)?
            .iter()
            .map(crate::storage::WriteOutcome::seq)
            .max()
            .unwrap_or(0);
        seq = seq.max(self.update_status(uid, None, None).await?);
        Ok(seq)
    }

    /// Recomputes `uid`'s status from its records, with `default` and `status_text` when
    /// given as the user's new choices; writes what changed. The write is made only if the
    /// user's choice and connection state are still those read (another writer may be
    /// at the same user): otherwise it reads again.
    async fn update_status(
        &self,
        uid: &str,
        default: Option<Status>,
        status_text: Option<&str>,
    ) -> Result<u64, ServiceError> {
        for _ in 0..8 {
            let Some(user) = self.user(uid).await? else {
                return Ok(0);
            };
            let connections = self
                .find(USERS_SESSIONS, serde_json::json!({"_id": uid}))
                .await?
                .pop()
                .and_then(|s| match s.get("connections") {
                    Some(Value::Array(list)) => Some(list.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let connection = connections_status(&connections);
            let stored_default = text(&user, "statusDefault").and_then(Status::parse);
            let chosen = default.or(stored_default);
            let status = effective_status(connection, chosen);
            let mut set = serde_json::Map::new();
            if text(&user, "status") != Some(status.as_str()) {
                set.insert("status".into(), status.as_str().into());
            }
            if text(&user, "statusConnection") != Some(connection.as_str()) {
                set.insert("statusConnection".into(), connection.as_str().into());
            }
            if let Some(chosen) = default.filter(|d| Some(*d) != stored_default) {
                set.insert("statusDefault".into(), chosen.as_str().into());
            }
            if let Some(t) = status_text.filter(|t| text(&user, "statusText") != Some(*t)) {
                set.insert("statusText".into(), t.into());
            }
            if set.is_empty() {
                return Ok(0);
            }
            set.insert("_updatedAt".into(), serde_json::json!({"$date": now_ms()}));
            let guard = serde_json::json!({
                "_id": uid,
                "statusDefault": text(&user, "statusDefault"),
                "statusConnection": text(&user, "statusConnection"),
            });
            let ack = self
                .store
                .update(
                    USERS,
                    selector(guard)?,
                    update(serde_json::json!({"$set": set}))?,
                    UpdateOptions::default(),
                )
                .await
                .map_err(store_error)?;
            if ack.matched > 0 {
                return Ok(ack.seq);
            }
        }
        Err(ServiceError::internal(
            "the user's status kept changing under us",
        ))
    }

    /// `UserPresence:setDefaultStatus` and `setUserStatus`: the status `uid` chooses
    /// (`None`: unchanged) and its text; returns the change's sequence number.
    pub async fn choose_status(
        &self,
        uid: &str,
        status: Option<Status>,
        status_text: Option<&str>,
    ) -> Result<u64, ServiceError> {
        let status_text = status_text.map(|t| {
            let t = t.trim();
            t.chars().take(MAX_STATUS_TEXT).collect::<String>()
        });
        if self.user(uid).await?.is_none() {
            return Err(ServiceError::Client(MeteorError::new(
                "error-invalid-user",
                "Invalid user",
            )));
        }
        self.update_status(uid, status, status_text.as_deref())
            .await
    }

    /// Renews this process's entry in `instances`.
    async fn heartbeat(&self) -> Result<(), ServiceError> {
        let now = now_ms();
        self.store
            .update(
                INSTANCES,
                selector(serde_json::json!({"_id": &*self.instance}))?,
                update(serde_json::json!({
                    "$set": {
                        "_updatedAt": {"$date": now}, "name": "comet",
                        "pid": std::process::id(),
                        "extraInformation": {
                            "host": host_name(),
                            "address": lock(&self.address).clone(),
                            "version": env!("CARGO_PKG_VERSION"),
                            "startedAt": {"$date": self.started},
                            "connections": self.connection_count(),
                            "listenedKeys": self.local_streams.interest_count(),
                        },
                    },
                    "$setOnInsert": {"_createdAt": {"$date": now}},
                }))?,
                UpdateOptions {
                    upsert: true,
                    multi: false,
                },
            )
            .await
            .map_err(store_error)?;
        Ok(())
    }

    /// How many connections of logged-in users this process holds.
    fn connection_count(&self) -> usize {
        lock(&self.local).users.values().map(HashMap::len).sum()
    }

    /// Whether the process of an `instances` entry still runs: its heartbeat is recent,
    /// and on this machine its process exists (a process killed outright is known gone at
    /// once, not after the heartbeat times out).
    fn alive(&self, instance: &Document, now: f64, host: &str) -> bool {
        if text(instance, "_id") == Some(&*self.instance) {
            return true;
        }
        let stale = self.config.heartbeat.as_millis() as f64 * 3.0;
        let fresh = matches!(instance.get("_updatedAt"), Some(Value::Date(at)) if now - at < stale);
        if !fresh {
            return false;
        }
        let same_host = instance
            .get("extraInformation")
            .and_then(Value::as_object)
            .and_then(|e| text(e, "host"))
            == Some(host);
        match instance.get("pid").and_then(Value::as_f64) {
            Some(pid) if same_host && !host.is_empty() => {
                let pid = pid as u32;
                pid != std::process::id() && std::path::Path::new(&format!("/proc/{pid}")).exists()
            }
            _ => true,
        }
    }

    /// Drops the records of processes that are gone (and their `instances` entries) and
    /// recomputes those users' status; at start, also every user shown connected.
    async fn sweep(&self, at_start: bool) -> Result<usize, ServiceError> {
        let (now, host) = (now_ms(), host_name());
        let instances = self.find(INSTANCES, serde_json::json!({})).await?;
        let (live, dead): (Vec<Document>, Vec<Document>) = instances
            .into_iter()
            .partition(|i| self.alive(i, now, &host));
        let live: Vec<&str> = live.iter().filter_map(|i| text(i, "_id")).collect();
        let stale_records = self
            .find(
                USERS_SESSIONS,
                serde_json::json!({"connections": {"$elemMatch": {"instanceId": {"$nin": live}}}}),
            )
            .await?;
        let mut users: HashSet<Arc<str>> = HashSet::new();
        for record in &stale_records {
            let Some(uid) = text(record, "_id") else {
                continue;
            };
            self.store
                .update(
                    USERS_SESSIONS,
                    selector(serde_json::json!({"_id": uid}))?,
                    update(serde_json::json!({
                        "$pull": {"connections": {"instanceId": {"$nin": live}}}
                    }))?,
                    UpdateOptions::default(),
                )
                .await
                .map_err(store_error)?;
            users.insert(uid.into());
        }
        for instance in &dead {
            if let Some(id) = text(instance, "_id") {
                self.store
                    .remove(
                        INSTANCES,
                        selector(serde_json::json!({"_id": id}))?,
                        RemoveOptions::default(),
                    )
                    .await
                    .map_err(store_error)?;
            }
        }
        if at_start {
            for user in self
                .find(
                    USERS,
                    serde_json::json!({"status": {"$in": ["online", "away", "busy"]}}),
                )
                .await?
            {
                if let Some(uid) = text(&user, "_id") {
                    users.insert(uid.into());
                }
            }
        }
        let swept = users.len();
        if at_start {
            // Before any connection: done now, so the server starts with the truth.
            for uid in &users {
                self.sync_user(uid).await?;
            }
        } else {
            for uid in &users {
                self.mark(uid);
            }
        }
        if swept > 0 {
            tracing::info!(
                users = swept,
                instances_gone = dead.len(),
                "presence: swept connections of processes gone"
            );
        }
        Ok(swept)
    }

    /// What a user's status change sends: `stream-user-presence` to its watchers and
    /// `user-status` to logged-in listeners.
    fn tell(&self, user: &Document) {
        let (Some(uid), Some(status)) = (
            text(user, "_id"),
            text(user, "status").and_then(Status::parse),
        ) else {
            return;
        };
        let username = text(user, "username").unwrap_or_default();
        let status_text = text(user, "statusText").unwrap_or_default();
        let number = Value::Number(f64::from(status.number()));
        self.watchers.deliver(
            uid,
            Value::Array(vec![
                Value::from(username),
                number.clone(),
                Value::from(status_text),
            ]),
        );
        let entry = vec![
            Value::from(uid),
            Value::from(username),
            number,
            Value::from(status_text),
            user.get("name").cloned().unwrap_or(Value::Null),
            user.get("roles")
                .cloned()
                .unwrap_or(Value::Array(Vec::new())),
        ];
        self.logged.emit("user-status", &[Value::Array(entry)]);
    }

    async fn on_change(&self, event: &ChangeEvent) {
        if &*event.collection != USERS
            || !matches!(
                event.operation,
                OperationType::Update | OperationType::Replace
            )
        {
            return;
        }
        if let Some(changes) = &event.update_description {
            let touched = changes
                .updated_fields
                .keys()
                .chain(changes.removed_fields.iter())
                .any(|k| k == "status" || k == "statusText");
            if !touched {
                return;
            }
        }
        let user = match &event.full_document {
            Some(user) => (**user).clone(),
            None => {
                let Some(Value::String(uid)) = &event.id else {
                    return;
                };
                match self.user(uid).await {
                    Ok(Some(user)) => user,
                    _ => return,
                }
            }
        };
        self.tell(&user);
    }

    /// `users.presence`: the status fields of the users `ids` (all users shown connected
    /// when none are named), for a logged-in caller.
    pub async fn users_presence(
        &self,
        ids: Option<&[String]>,
    ) -> Result<Vec<Document>, ServiceError> {
        let filter = match ids {
            Some(ids) => serde_json::json!({"_id": {"$in": ids}}),
            None => serde_json::json!({"status": {"$in": ["online", "away", "busy"]}}),
        };
        let fields = [
            "_id",
            "username",
            "name",
            "status",
            "utcOffset",
            "statusText",
            "avatarETag",
        ];
        Ok(self
            .find(USERS, filter)
            .await?
            .iter()
            .map(|u| super::rooms::projected(u, &fields))
            .collect())
    }

    /// Whether `caller` may change `target`'s status: its own, or anyone's with
    /// `edit-other-user-info`.
    pub async fn may_set_status_of(
        &self,
        caller: &str,
        target: &str,
    ) -> Result<bool, ServiceError> {
        if caller == target {
            return Ok(true);
        }
        self.permissions
            .has_permission(Some(caller), "edit-other-user-info", None)
            .await
    }

    /// The user's stored status, as `users.getPresence` tells it.
    pub async fn presence_of(&self, uid: &str) -> Result<Option<Document>, ServiceError> {
        self.user(uid).await
    }
}

/// The connection hooks: a login adds a record, a logout removes it at once, a closed
/// connection's record goes after the grace.
struct Hooks(Weak<Presence>);

impl ConnectionHooks for Hooks {
    fn user_changed(
        &self,
        connection: &Arc<dyn ConnectionHandle>,
        old: Option<&str>,
        new: Option<&str>,
    ) {
        let Some(presence) = self.0.upgrade() else {
            return;
        };
        if let Some(old) = old {
            presence.connection_gone(old, connection.id());
        }
        if let Some(new) = new {
            presence.connection_opened(new, connection.id());
        }
    }

    fn closed(&self, connection_id: &str, user_id: Option<&str>) {
        let (Some(presence), Some(uid)) = (self.0.upgrade(), user_id) else {
            return;
        };
        let grace = presence.config.grace;
        if grace.is_zero() {
            presence.connection_gone(uid, connection_id);
            return;
        }
        let (weak, uid, connection) = (self.0.clone(), uid.to_owned(), connection_id.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if let Some(presence) = weak.upgrade() {
                presence.connection_gone(&uid, &connection);
            }
        });
    }
}

/// The worker: writes queued users, up to [`MAX_IN_FLIGHT`] at once, each user by one
/// write at a time.
async fn work(presence: Weak<Presence>) {
    let mut running = tokio::task::JoinSet::new();
    loop {
        let Some(strong) = presence.upgrade() else {
            return;
        };
        let batch = lock(&strong.local).take(MAX_IN_FLIGHT.saturating_sub(running.len()));
        for uid in batch {
            let worker = strong.clone();
            running.spawn(async move {
                if let Err(err) = worker.sync_user(&uid).await {
                    tracing::warn!(user = %uid, error = %err, "presence: cannot write the user's connections");
                }
                uid
            });
        }
        let wake = strong.clone();
        drop(strong);
        tokio::select! {
            _ = wake.wake.notified() => {}
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Ok(uid) = done {
                    lock(&wake.local).in_flight.remove(&uid);
                }
            }
        }
    }
}

/// Renews the heartbeat and sweeps, every [`PresenceConfig::heartbeat`].
async fn keep_alive(presence: Weak<Presence>) {
    let every = match presence.upgrade() {
        Some(p) => p.config.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(presence) = presence.upgrade() else {
            return;
        };
        if let Err(err) = presence.heartbeat().await {
            tracing::warn!(error = %err, "presence: cannot renew this process's heartbeat");
        }
        if let Err(err) = presence.sweep(false).await {
            tracing::warn!(error = %err, "presence: cannot sweep connections of processes gone");
        }
    }
}

impl crate::engine::feed::FeedHandler for Presence {
    fn name(&self) -> &'static str {
        "presence"
    }

    fn wants(&self, collection: &str) -> bool {
        collection == USERS
    }

    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> crate::engine::feed::FeedFuture<'a> {
        Box::pin(self.on_change(event))
    }

    /// Status changes may have been lost: every watched or shown-connected user's status is
    /// told again as it is now.
    fn resync(&self) -> crate::engine::feed::FeedFuture<'_> {
        Box::pin(async move {
            let watched: Vec<String> = self
                .watchers
                .watched()
                .iter()
                .map(|u| u.to_string())
                .collect();
            let filter = serde_json::json!({"$or": [
                {"_id": {"$in": watched}},
                {"status": {"$in": ["online", "away", "busy"]}},
            ]});
            match self.find(USERS, filter).await {
                Ok(users) => users.iter().for_each(|user| self.tell(user)),
                Err(err) => {
                    tracing::warn!(error = %err, "presence: cannot read the statuses again")
                }
            }
        })
    }
}

fn status_param(params: &[Value], at: usize) -> Result<Option<Status>, ServiceError> {
    match params.get(at) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Status::parse(s).map(Some).ok_or_else(|| {
            ServiceError::Client(MeteorError::new("error-invalid-status", "Invalid status"))
        }),
        Some(_) => Err(ServiceError::match_failed()),
    }
}

/// `UserPresence:*` and `setUserStatus`. Anonymous calls do nothing (Rocket.Chat's rule).
fn methods(registry: &mut Registry, presence: &Arc<Presence>) {
    // The operator's page lists the deployment's instances (`view-statistics`), as
    // REST's `instances.get` does.
    registry.method_of(
        "comet.instances",
        presence,
        |presence, ctx, _params| async move {
            let call = crate::chat::call::Call::method(&ctx);
            let list = presence.instances(&call).await?;
            Ok(Some(Value::Array(
                list.into_iter()
                    .map(|(mut record, alive, local)| {
                        record.insert("alive".into(), Value::Bool(alive));
                        record.insert("local".into(), Value::Bool(local));
                        Value::Object(record)
                    })
                    .collect(),
            )))
        },
    );
    for (name, status) in [
        ("UserPresence:online", Status::Online),
        ("UserPresence:away", Status::Away),
    ] {
        registry.method_of(name, presence, move |presence, ctx, _params| async move {
            if let Some(uid) = ctx.user_id.as_deref() {
                presence.set_connection_status(uid, &ctx.connection_id, status);
            }
            Ok(None)
        });
    }
    registry.method_of(
        "UserPresence:setDefaultStatus",
        presence,
        |presence, ctx, params| async move {
            let status = status_param(&params, 0)?.ok_or_else(ServiceError::match_failed)?;
            let Some(uid) = ctx.user_id.as_deref() else {
                return Ok(None);
            };
            let seq = presence.choose_status(uid, Some(status), None).await?;
            ctx.record_write(seq);
            Ok(Some(Value::Bool(true)))
        },
    );
    registry.method_of(
        "setUserStatus",
        presence,
        |presence, ctx, params| async move {
            let status = status_param(&params, 0)?;
            let status_text = match params.get(1) {
                None | Some(Value::Null) => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(_) => return Err(ServiceError::match_failed()),
            };
            let Some(uid) = ctx.user_id.as_deref() else {
                return Ok(None);
            };
            let seq = presence
                .choose_status(uid, status, status_text.as_deref())
                .await?;
            ctx.record_write(seq);
            Ok(None)
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chosen_status_beats_the_connections_but_not_their_absence() {
        use Status::*;
        assert_eq!(effective_status(Online, None), Online);
        assert_eq!(effective_status(Away, None), Away);
        assert_eq!(effective_status(Away, Some(Online)), Away);
        assert_eq!(effective_status(Online, Some(Busy)), Busy);
        assert_eq!(effective_status(Away, Some(Busy)), Busy);
        assert_eq!(effective_status(Online, Some(Offline)), Offline);
        assert_eq!(effective_status(Offline, Some(Busy)), Offline);
    }

    #[test]
    fn the_connections_state_is_the_liveliest_of_them() {
        let conn = |s: &str| {
            let mut d = Document::default();
            d.insert("status".into(), Value::from(s));
            Value::Object(d)
        };
        assert_eq!(connections_status(&[]), Status::Offline);
        assert_eq!(connections_status(&[conn("away")]), Status::Away);
        assert_eq!(
            connections_status(&[conn("away"), conn("online")]),
            Status::Online
        );
        assert_eq!(connections_status(&[Value::Null]), Status::Online);
    }

    #[test]
    fn a_user_queued_twice_is_written_once_and_never_twice_at_once() {
        let mut local = Local::default();
        let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
        local.mark(&a);
        local.mark(&b);
        local.mark(&a);
        assert_eq!(local.take(10), vec![a.clone(), b.clone()]);
        local.mark(&a);
        assert!(local.take(10).is_empty(), "a is still being written");
        local.in_flight.remove(&a);
        assert_eq!(local.take(10), vec![a]);
    }

    #[test]
    fn statuses_and_their_numbers_are_rocketchats() {
        for (name, n) in [("offline", 0), ("online", 1), ("away", 2), ("busy", 3)] {
            let s = Status::parse(name).unwrap();
            assert_eq!((s.as_str(), s.number()), (name, n));
        }
        assert!(Status::parse("invisible").is_none());
    }
}
