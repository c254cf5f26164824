//! Server plugins: programs in any language that comet starts as subprocesses and talks
//! JSON-RPC with over their standard streams (`protocol-spec/plugins.md`). A plugin stands
//! at the chat core's hook points, answers slash commands and HTTP requests under
//! `/plugins/<id>/`, and calls back into comet through a checked, rate-limited API.
//!
//! Owns the Plugins service: what is installed (folders under `COMET_PLUGIN_DIR`, state in
//! `comet_plugins`), installing, enabling, disabling, configuring and removing (for
//! holders of `manage-apps` only), each plugin's bot user, configuration, counters and
//! status, and its HTTP and cluster-event entries. The process is [`runner`]'s, the wire
//! [`wire`]'s, the hook points [`bridge`]'s, the calls into comet [`api`]'s, the
//! administrators' changes `admin`'s, the figures [`figures`]', the HTTP values
//! [`http`]'s. It must not know about sockets or HTTP servers: a request reaches it as an
//! [`HttpRequest`] value.

mod admin;
pub mod api;
pub mod bridge;
pub mod bundle;
pub mod figures;
pub mod http;
pub mod kv;
pub mod manifest;
pub mod methods;
pub mod runner;
pub mod wire;

use crate::chat::accounts::{Accounts, NewUser, UserSelector};
use crate::chat::call::Call;
use crate::chat::collections::PLUGINS;
use crate::chat::hooks::Hooks;
use crate::chat::messages::Messages;
use crate::chat::permissions::Permissions;
use crate::chat::rooms::Rooms;
use crate::chat::settings::Settings;
use crate::engine::build::{doc, find_one, now_ms, selector, update};
use crate::engine::bus::{Bus, BusEvent, StreamSink};
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{Store, UpdateOptions};
use manifest::Manifest;
use serde_json::{json, Value as Json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use wire::Peer;

pub use figures::{Counters, Figure};
use http::read_http_answer;
pub use http::{visible_headers, HttpAnswer, HttpRequest};

/// The wire protocol's version, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;
/// The permission that installs, configures and removes plugins (Rocket.Chat's for apps).
pub const PERMISSION: &str = "manage-apps";
/// The bus stream that carries plugins' cluster events between instances.
pub const CLUSTER_STREAM: &str = "comet-plugin-cluster";
/// How long a disable or a removal waits for the process to end.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// Where plugins live and how they run.
#[derive(Clone, Debug, Default)]
pub struct PluginConfig {
    /// `COMET_PLUGIN_DIR`; default `<data dir>/plugins`.
    pub dir: Option<PathBuf>,
    /// `COMET_PLUGIN_DEV`: reload on change, lenient health checks.
    pub dev_mode: bool,
}

/// The resolved configuration.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub dir: PathBuf,
    pub dev_mode: bool,
}

/// The services a plugin's calls are answered from.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub accounts: Arc<Accounts>,
    pub rooms: Arc<Rooms>,
    pub messages: Arc<Messages>,
    pub settings: Arc<Settings>,
    pub permissions: Arc<Permissions>,
    pub bus: Arc<dyn Bus>,
    /// A plugin's scheduled job runs on the one instance holding its lease.
    pub leases: Arc<crate::chat::leases::Leases>,
}

/// Where a plugin is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Disabled,
    Starting,
    Running,
    Restarting,
    /// Disabled by comet (a crash loop, an invalid manifest): the reason says why.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Disabled => "disabled",
            State::Starting => "starting",
            State::Running => "running",
            State::Restarting => "restarting",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug)]
struct Status {
    state: State,
    reason: Option<String>,
    pid: Option<u32>,
    since: f64,
}

/// A token bucket for a plugin's calls into comet: [`api::BURST`] at once, refilled at
/// [`api::CALLS_PER_SECOND`].
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    counted_at: Instant,
}

impl Bucket {
    fn full(now: Instant) -> Self {
        Self {
            tokens: api::BURST,
            counted_at: now,
        }
    }

    /// Takes a token at `now`; `false` when none is left.
    fn take(&mut self, now: Instant) -> bool {
        let refill =
            now.saturating_duration_since(self.counted_at).as_secs_f64() * api::CALLS_PER_SECOND;
        self.tokens = (self.tokens + refill).min(api::BURST);
        self.counted_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The supervisor of a running plugin.
struct Run {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

/// One installed plugin.
pub struct Plugin {
    pub id: String,
    pub dir: PathBuf,
    manifest: RwLock<Arc<Manifest>>,
    status: Mutex<Status>,
    peer: RwLock<Option<Arc<Peer>>>,
    pub counters: Counters,
    bot: RwLock<Option<String>>,
    /// The configuration values set by administrators (defaults are added when read).
    config: RwLock<serde_json::Map<String, Json>>,
    pub kv: kv::KvStore,
    /// Tokens for calls into comet, and when they were last counted.
    bucket: Mutex<Bucket>,
    jobs: Mutex<HashMap<String, CancellationToken>>,
    run: Mutex<Option<Run>>,
    /// When a failure was last logged (ms since the epoch).
    last_warning: std::sync::atomic::AtomicU64,
}

impl Plugin {
    fn new(dir: PathBuf, manifest: Manifest, store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            id: manifest.id.clone(),
            kv: kv::KvStore::new(store, &manifest.id),
            dir,
            manifest: RwLock::new(Arc::new(manifest)),
            status: Mutex::new(Status {
                state: State::Disabled,
                reason: None,
                pid: None,
                since: now_ms(),
            }),
            peer: RwLock::new(None),
            counters: Counters::default(),
            bot: RwLock::new(None),
            config: RwLock::new(Default::default()),
            bucket: Mutex::new(Bucket::full(Instant::now())),
            jobs: Mutex::new(HashMap::new()),
            run: Mutex::new(None),
            last_warning: Default::default(),
        })
    }

    pub fn manifest(&self) -> Arc<Manifest> {
        self.manifest
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reads the manifest again from the folder (a development-mode reload).
    pub fn reload_manifest(&self) -> Result<(), manifest::ManifestError> {
        let fresh = Manifest::read(&self.dir)?;
        if fresh.id != self.id {
            return Err(manifest::ManifestError("its id changed".into()));
        }
        *self.manifest.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        Ok(())
    }

    pub fn peer(&self) -> Option<Arc<Peer>> {
        self.peer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_peer(&self, peer: Option<Arc<Peer>>) {
        *self.peer.write().unwrap_or_else(|p| p.into_inner()) = peer;
    }

    pub fn bot_id(&self) -> Option<String> {
        let bot = self.bot.read().unwrap_or_else(|p| p.into_inner());
        bot.clone()
    }

    pub fn state(&self) -> (State, Option<String>) {
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        (status.state, status.reason.clone())
    }

    pub(crate) fn set_state(&self, state: State, reason: Option<String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if status.state != state {
            status.since = now_ms();
        }
        status.state = state;
        status.reason = reason;
    }

    pub(crate) fn set_pid(&self, pid: Option<u32>) {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).pid = pid;
    }

    /// The configuration: each setting's value, or its default.
    pub fn config(&self) -> Json {
        let set = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut out = serde_json::Map::new();
        for setting in &self.manifest().settings {
            let value = set
                .get(&setting.key)
                .cloned()
                .or_else(|| setting.default.clone())
                .unwrap_or(Json::Null);
            out.insert(setting.key.clone(), value);
        }
        Json::Object(out)
    }

    /// Takes one token for a call into comet; `false` when the plugin calls too fast.
    pub fn take_token(&self) -> bool {
        self.bucket
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(Instant::now())
    }

    /// Whether a failure may be logged now: one a second at most.
    pub(crate) fn may_warn(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = now_ms() as u64;
        let last = self.last_warning.load(Ordering::Relaxed);
        now.saturating_sub(last) >= 1000
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn stop_jobs(&self) {
        for (_, job) in self.jobs.lock().unwrap_or_else(|p| p.into_inner()).drain() {
            job.cancel();
        }
    }

    pub(crate) fn cancel_job(&self, name: &str) {
        if let Some(job) = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
        {
            job.cancel();
        }
    }

    /// What administrators see of the plugin.
    fn view(&self, enabled: bool) -> Json {
        let manifest = self.manifest();
        let status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let set = self
            .config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let config: serde_json::Map<String, Json> = manifest
            .settings
            .iter()
            .map(|s| {
                let value = set.get(&s.key).cloned().or_else(|| s.default.clone());
                let shown = match (s.kind.as_str(), value) {
                    ("secret", Some(v)) if !v.is_null() => json!("********"),
                    (_, v) => v.unwrap_or(Json::Null),
                };
                (s.key.clone(), shown)
            })
            .collect();
        json!({
            "id": self.id, "name": manifest.name, "version": manifest.version,
            "description": manifest.description, "enabled": enabled,
            "state": status.state.as_str(), "reason": status.reason, "pid": status.pid,
            "since": {"$date": status.since}, "hooks": manifest.hooks,
            "hookPolicy": manifest.policy.as_str(), "priority": manifest.priority,
            "hookDeadlineMs": manifest.hook_deadline.as_millis() as u64,
            "httpDeadlineMs": manifest.http_deadline.as_millis() as u64,
            "memoryLimitMb": manifest.memory_limit_mb,
            "settings": manifest.settings, "config": config,
            "commands": manifest.commands, "botUsername": manifest.bot_username(),
            "counters": self.counters.view(),
        })
    }
}

/// The Plugins service.
pub struct Plugins {
    pub config: Resolved,
    pub services: Services,
    hooks: Arc<Hooks>,
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Which plugins are enabled (what administrators asked; a failed one is not).
    enabled: RwLock<std::collections::HashSet<String>>,
    /// This process's id on the bus: its own cluster events do not come back to it.
    instance: Arc<str>,
    this: std::sync::Weak<Plugins>,
    /// Where other instances' cluster events arrive (the bus's directory holds it weakly).
    cluster_sink: Mutex<Option<Arc<dyn StreamSink>>>,
}

fn not_allowed() -> ServiceError {
    crate::chat::not_allowed()
}

fn no_plugin() -> ServiceError {
    crate::chat::client_error("error-plugin-not-found", "No such plugin")
}

fn invalid(reason: impl AsRef<str>) -> ServiceError {
    crate::chat::client_error("error-invalid-plugin", reason.as_ref())
}

impl Plugins {
    /// The service: its folder made, its DDP methods and commands registered. Nothing runs
    /// until [`Plugins::start_all`].
    pub fn new(
        config: PluginConfig,
        data_dir: &std::path::Path,
        services: Services,
        hooks: Arc<Hooks>,
        registry: &mut crate::engine::Registry,
        commands: &crate::chat::commands::Commands,
    ) -> Result<Arc<Self>, ServiceError> {
        let dir = config.dir.unwrap_or_else(|| data_dir.join("plugins"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServiceError::internal(format!("cannot create {}: {e}", dir.display())))?;
        let plugins = Arc::new_cyclic(|this| Self {
            this: this.clone(),
            cluster_sink: Mutex::new(None),
            config: Resolved {
                dir,
                dev_mode: config.dev_mode,
            },
            services,
            hooks,
            plugins: RwLock::new(BTreeMap::new()),
            enabled: RwLock::new(Default::default()),
            instance: registry.instance_id().clone(),
        });
        methods::register(registry, &plugins);
        commands.add_provider(Arc::new(bridge::PluginCommands {
            plugins: Arc::downgrade(&plugins),
        }));
        let sink: Arc<dyn StreamSink> = Arc::new(ClusterSink {
            plugins: Arc::downgrade(&plugins),
        });
        // The directory holds the sink weakly; the service keeps it alive.
        registry
            .local_streams()
            .add_whole(CLUSTER_STREAM, Arc::downgrade(&sink));
        *plugins
            .cluster_sink
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(sink);
        Ok(plugins)
    }

    fn get(&self, id: &str) -> Option<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    fn is_enabled(&self, id: &str) -> bool {
        self.enabled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(id)
    }

    /// The enabled plugins.
    pub fn enabled(&self) -> Vec<Arc<Plugin>> {
        let enabled = self
            .enabled
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| enabled.contains(&p.id))
            .cloned()
            .collect()
    }

    /// Installs what the folder holds (unpacking bundles dropped there) and starts every
    /// plugin not disabled by an administrator. A plugin found for the first time is
    /// enabled: putting it in the folder is the operator's say-so.
    pub async fn start_all(self: &Arc<Self>) {
        let Ok(entries) = std::fs::read_dir(&self.config.dir) else {
            return;
        };
        let mut folders = Vec::new();
        let mut bundles = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                folders.push(path);
            } else if name.ends_with(".tar.gz") || name.ends_with(".tgz") {
                bundles.push(path);
            }
        }
        for bundle in bundles {
            let outcome = match std::fs::read(&bundle) {
                Ok(bytes) => self.install_bundle(&bytes).await.map(|_| ()),
                Err(err) => Err(invalid(err.to_string())),
            };
            match outcome {
                Ok(()) => {
                    let done = bundle.with_extension("gz.installed");
                    if let Err(err) = std::fs::rename(&bundle, &done) {
                        tracing::warn!(bundle = %bundle.display(), cause = %err, "installed bundle not renamed");
                    }
                }
                Err(err) => {
                    tracing::error!(bundle = %bundle.display(), cause = %err.client_view().reason.unwrap_or_default(), "plugin bundle not installed")
                }
            }
        }
        for folder in folders {
            if self
                .plugins
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .values()
                .any(|p| p.dir == folder)
            {
                continue;
            }
            match Manifest::read(&folder) {
                Ok(manifest) => {
                    if let Err(err) = self.register(folder.clone(), manifest).await {
                        tracing::error!(folder = %folder.display(), cause = ?err, "plugin not registered");
                    }
                }
                Err(err) => {
                    tracing::error!(folder = %folder.display(), cause = %err, "not a plugin")
                }
            }
        }
    }

    /// Adds an installed plugin, reads its stored state, and starts it if enabled.
    async fn register(
        self: &Arc<Self>,
        dir: PathBuf,
        manifest: Manifest,
    ) -> Result<Arc<Plugin>, ServiceError> {
        let id = manifest.id.clone();
        if self.get(&id).is_some() {
            return Err(invalid(format!(
                "two folders hold plugin {id}; {} is ignored",
                dir.display()
            )));
        }
        let plugin = Plugin::new(dir, manifest, self.services.store.clone());
        let stored = self.stored(&id).await?;
        let enabled = match &stored {
            Some(doc) => doc.get("enabled") != Some(&Value::Bool(false)),
            None => true,
        };
        if let Some(Value::Object(config)) = stored.as_ref().and_then(|d| d.get("config")) {
            let json = crate::engine::build::to_json(&Value::Object(config.clone()));
            if let Json::Object(map) = json {
                *plugin.config.write().unwrap_or_else(|p| p.into_inner()) = map;
            }
        }
        if let Some(reason) = stored
            .as_ref()
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
        {
            plugin.set_state(State::Failed, Some(reason.to_owned()));
        }
        self.persist(&plugin, enabled, None).await?;
        self.plugins
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), plugin.clone());
        if enabled {
            self.activate(&plugin).await?;
        }
        Ok(plugin)
    }

    async fn stored(&self, id: &str) -> Result<Option<Document>, ServiceError> {
        find_one(&*self.services.store, PLUGINS, json!({"_id": id})).await
    }

    /// Writes the plugin's state: enabled, the reason it was disabled by comet, its
    /// configuration.
    async fn persist(
        &self,
        plugin: &Plugin,
        enabled: bool,
        reason: Option<&str>,
    ) -> Result<(), ServiceError> {
        let manifest = plugin.manifest();
        let config = Json::Object(
            plugin
                .config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        );
        self.services
            .store
            .update(
                PLUGINS,
                selector(json!({"_id": plugin.id}))?,
                update(json!({"$set": {
                    "enabled": enabled, "reason": reason, "version": manifest.version,
                    "name": manifest.name, "config": config, "_updatedAt": {"$date": now_ms()},
                }}))?,
                UpdateOptions {
                    upsert: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        Ok(())
    }

    /// A user by name, created as a bot when there is none; its id.
    pub async fn ensure_user(&self, username: &str, name: &str) -> Result<String, ServiceError> {
        let who = UserSelector::Username(username.to_owned());
        let find = || self.services.accounts.find_user(&who);
        if let Some(user) = find().await? {
            return Ok(crate::chat::text(&user, "_id")
                .unwrap_or_default()
                .to_owned());
        }
        let created = self
            .services
            .accounts
            .create_user(
                &Call::server(),
                NewUser {
                    username: Some(username.to_owned()),
                    email: None,
                    password_digest: None,
                    name: Some(name.to_owned()),
                    roles: vec!["bot".into()],
                },
            )
            .await;
        match created {
            Ok(id) => Ok(id),
            // Another start took the name meanwhile.
            Err(err) => match find().await? {
                Some(user) => Ok(crate::chat::text(&user, "_id")
                    .unwrap_or_default()
                    .to_owned()),
                None => Err(err),
            },
        }
    }

    /// Starts a plugin: its bot user, its hook points, its supervisor.
    async fn activate(self: &Arc<Self>, plugin: &Arc<Plugin>) -> Result<(), ServiceError> {
        let manifest = plugin.manifest();
        let bot = self
            .ensure_user(&manifest.bot_username(), &manifest.name)
            .await?;
        *plugin.bot.write().unwrap_or_else(|p| p.into_inner()) = Some(bot);
        self.enabled
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(plugin.id.clone());
        self.hooks.remove(&plugin.id);
        self.hooks.add(bridge::PluginHooks::new(plugin.clone()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(runner::supervise(
            self.clone(),
            plugin.clone(),
            stop.clone(),
        ));
        let old = plugin
            .run
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Run { stop, task });
        if let Some(old) = old {
            old.stop.cancel();
        }
        Ok(())
    }

    /// Stops a plugin and waits (bounded) for its process to end.
    async fn deactivate(&self, plugin: &Plugin) {
        self.enabled
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&plugin.id);
        self.hooks.remove(&plugin.id);
        let run = plugin.run.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(run) = run {
            run.stop.cancel();
            if tokio::time::timeout(STOP_WAIT, run.task).await.is_err() {
                tracing::warn!(plugin = %plugin.id, "plugin did not stop in time");
            }
        }
        let (state, reason) = plugin.state();
        if state != State::Failed {
            plugin.set_state(State::Disabled, reason.filter(|_| false));
        }
    }

    /// Disables a plugin comet cannot keep running; the reason is shown to
    /// administrators and kept across restarts (no crash loop across restarts either).
    pub(crate) async fn fail(&self, plugin: &Plugin, reason: String) {
        tracing::error!(plugin = %plugin.id, %reason, "plugin disabled");
        self.enabled
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&plugin.id);
        self.hooks.remove(&plugin.id);
        plugin.set_state(State::Failed, Some(reason.clone()));
        // Called from the supervisor itself: its task ends on its own.
        drop(plugin.run.lock().unwrap_or_else(|p| p.into_inner()).take());
        if let Err(err) = self.persist(plugin, false, Some(&reason)).await {
            tracing::error!(plugin = %plugin.id, cause = ?err, "plugin state not stored");
        }
    }

    /// Every installed plugin, by id.
    fn all(&self) -> Vec<Arc<Plugin>> {
        self.plugins
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Ends every plugin: `OnDeactivate`, a grace period, then the kill.
    pub async fn stop_all(&self) {
        let all = self.all();
        let stops = all.iter().map(|p| async move {
            let run = p.run.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(run) = run {
                run.stop.cancel();
                let _ = tokio::time::timeout(STOP_WAIT, run.task).await;
            }
        });
        futures_util::future::join_all(stops).await;
    }

    /// Hands an HTTP request under `/plugins/<id>/` to the plugin, within its deadline.
    pub async fn serve_http(&self, id: &str, request: HttpRequest) -> HttpAnswer {
        use base64::Engine as _;
        let Some(plugin) = self.get(id).filter(|p| self.is_enabled(&p.id)) else {
            return HttpAnswer::text(404, "No such plugin");
        };
        let manifest = plugin.manifest();
        if !manifest.implements("ServeHTTP") {
            return HttpAnswer::text(404, "This plugin serves no HTTP");
        }
        plugin.counters.count(Figure::HttpRequests);
        let Some(peer) = plugin.peer() else {
            return HttpAnswer::text(503, "The plugin is not running");
        };
        let headers: serde_json::Map<String, Json> = request
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Json::String(v.clone())))
            .collect();
        let params = json!({
            "method": request.method, "path": request.path, "query": request.query,
            "headers": headers, "userId": request.user_id,
            "body": std::str::from_utf8(&request.body).ok(),
            "bodyBase64": base64::engine::general_purpose::STANDARD.encode(&request.body),
        });
        match peer.call("ServeHTTP", params, manifest.http_deadline).await {
            Ok(answer) => {
                plugin.counters.count(Figure::HooksAnswered);
                read_http_answer(&answer).unwrap_or_else(|| {
                    plugin.counters.count(Figure::HooksFailed);
                    HttpAnswer::text(502, "The plugin's answer could not be read")
                })
            }
            Err(wire::CallError::Timeout(_)) => {
                plugin.counters.count(Figure::HooksMissed);
                HttpAnswer::text(504, "The plugin did not answer in time")
            }
            Err(err) => {
                plugin.counters.count(Figure::HooksFailed);
                tracing::warn!(plugin = %id, cause = %err, "ServeHTTP failed");
                HttpAnswer::text(502, "The plugin failed to answer")
            }
        }
    }

    /// A message only `uid` sees, in `rid`, from the plugin's bot (Rocket.Chat's
    /// ephemeral message on the user's `message` event).
    pub fn ephemeral(&self, plugin: &Plugin, uid: &str, rid: &str, msg: &str) {
        let manifest = plugin.manifest();
        let message = doc(json!({
            "_id": crate::model::random::random_id(), "rid": rid, "msg": msg,
            "ts": {"$date": now_ms()}, "_updatedAt": {"$date": now_ms()},
            "u": {"_id": plugin.bot_id(), "username": manifest.bot_username(), "name": manifest.name},
            "private": true,
        }));
        if let Ok(message) = message {
            self.services.bus.publish(BusEvent {
                stream: "stream-notify-user".into(),
                event: format!("{uid}/message"),
                args: vec![Value::Object(message)],
                except: None,
            });
        }
    }

    /// Sends a cluster event to the same plugin on every other instance.
    pub fn publish_cluster_event(&self, plugin: &Plugin, event: &str, data: Json) {
        self.services.bus.publish(BusEvent {
            stream: CLUSTER_STREAM.into(),
            event: plugin.id.clone(),
            args: vec![Value::from(event), Value::from_plain_json(data)],
            except: Some(self.instance.clone()),
        });
    }

    /// Runs `RunJob {name}` on the plugin every `every`; `false` over the plugin's limit.
    /// One instance runs a deployment's job: the one holding its lease
    /// (`plugin:<id>:<name>`), another once that one dies.
    pub fn schedule_job(
        &self,
        plugin: &Arc<Plugin>,
        name: &str,
        every: Duration,
        max: usize,
    ) -> bool {
        let token = CancellationToken::new();
        {
            let mut jobs = plugin.jobs.lock().unwrap_or_else(|p| p.into_inner());
            if !jobs.contains_key(name) && jobs.len() >= max {
                return false;
            }
            if let Some(old) = jobs.insert(name.to_owned(), token.clone()) {
                old.cancel();
            }
        }
        let lease = format!("plugin:{}:{name}", plugin.id);
        let leases = self.services.leases.clone();
        let (plugin, name) = (Arc::downgrade(plugin), name.to_owned());
        tokio::spawn(async move {
            leases.want_now(&lease).await;
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if !leases.holds(&lease) {
                    continue;
                }
                leases.count_run(&lease);
                let Some(plugin) = plugin.upgrade() else {
                    break;
                };
                let Some(peer) = plugin.peer() else { continue };
                let deadline = plugin.manifest().http_deadline;
                if let Err(err) = peer.call("RunJob", json!({"name": name}), deadline).await {
                    tracing::warn!(plugin = %plugin.id, job = %name, cause = %err, "scheduled job failed");
                }
            }
            leases.forget(&lease).await;
        });
        true
    }

    /// The plugins' figures in the exposition format `/metrics` serves.
    pub fn metrics_text(&self) -> String {
        figures::render(&self.all())
    }
}

/// Where other instances' cluster events for a plugin arrive.
struct ClusterSink {
    plugins: std::sync::Weak<Plugins>,
}

impl StreamSink for ClusterSink {
    fn deliver(&self, event: &str, args: &[Value], except: Option<&str>) -> usize {
        let Some(plugins) = self.plugins.upgrade() else {
            return 0;
        };
        // This instance's own events are for the others.
        if except == Some(&*plugins.instance) {
            return 0;
        }
        let Some(plugin) = plugins
            .get(event)
            .filter(|p| p.manifest().implements("OnPluginClusterEvent"))
        else {
            return 0;
        };
        let (name, data) = match args {
            [Value::String(name), data, ..] => (name.clone(), crate::engine::build::to_json(data)),
            _ => return 0,
        };
        let sent = plugin.peer().is_some_and(|peer| {
            peer.notify("OnPluginClusterEvent", json!({"event": name, "data": data}))
        });
        if !sent {
            plugin.counters.count(Figure::EventsDropped);
        }
        usize::from(sent)
    }
}

/// A fresh folder for a test, removed when it ends.
#[cfg(test)]
pub(crate) struct TestDir(pub PathBuf);

#[cfg(test)]
impl TestDir {
    pub(crate) fn new(name: &str) -> Self {
        Self(std::env::temp_dir().join(format!(
            "comet-{name}-{}",
            crate::model::random::random_id()
        )))
    }
}

#[cfg(test)]
impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_calling_too_fast_is_limited_and_gets_its_rate_back() {
        let start = Instant::now();
        let mut bucket = Bucket::full(start);
        let burst = (0..1000).take_while(|_| bucket.take(start)).count();
        assert_eq!(burst, api::BURST as usize);
        assert!(!bucket.take(start));
        // A tenth of a second later, a tenth of a second's calls again.
        let later = start + Duration::from_millis(100);
        let refilled = (0..1000).take_while(|_| bucket.take(later)).count();
        assert_eq!(refilled, (api::CALLS_PER_SECOND / 10.0) as usize);
    }
}
