//! Settings: Rocket.Chat's `rocketchat_settings`, with the defaults the core services read,
//! kept in memory and current from the store's change events (a setting another writer
//! changes is seen too), so hot paths never read the store for one.
//!
//! Owns the default list (id, value, type, `public`, `hidden`), writing the missing defaults
//! on start (a second start changes nothing), reads with Rocket.Chat's "since" form
//! (`{update, remove}`, removals from the trash), and the administrator's write path. It
//! must not know about sessions or HTTP.

mod defaults;
pub mod methods;

use crate::chat::call::Call;
use crate::chat::collections::SETTINGS;
use crate::engine::cached::CachedCollection as _;
use crate::engine::error::ServiceError;
use crate::model::query::Update;
use crate::model::{Document, MeteorError, Value};
use crate::storage::{Store, UpdateOptions};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Where Rocket.Chat moves removed documents, each with `__collection__` and `_deletedAt`.
pub use crate::chat::collections::TRASH;

use crate::engine::build::{doc as json_doc, now_ms, selector};

/// An environment variable's text read as a value of the setting's type: `true`/`false` for
/// booleans, an integer for `int`, a JSON array for `multiSelect`, the text itself otherwise.
fn value_from_text(kind: Option<&str>, text: &str) -> Option<Value> {
    match kind {
        Some("boolean") => match text.trim() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Some("int") => text
            .trim()
            .parse::<i64>()
            .ok()
            .map(|n| Value::Number(n as f64)),
        Some("multiSelect") => {
            let json: serde_json::Value = serde_json::from_str(text).ok()?;
            if json.is_array() {
                Value::from_json(json).ok()
            } else {
                None
            }
        }
        _ => Some(Value::String(text.to_owned())),
    }
}

/// A setting's client view: everything but `hidden` settings' values is shown as stored.
fn is_public(doc: &Document) -> bool {
    doc.get("public") == Some(&Value::Bool(true)) && !is_hidden(doc)
}

fn is_hidden(doc: &Document) -> bool {
    doc.get("hidden") == Some(&Value::Bool(true))
}

fn updated_at(doc: &Document) -> f64 {
    match doc.get("_updatedAt") {
        Some(Value::Date(ms)) => *ms,
        _ => 0.0,
    }
}

/// The Settings service.
pub struct Settings {
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<String, Arc<Document>>>,
}

impl crate::engine::cached::CachedCollection for Settings {
    fn collection(&self) -> &'static str {
        SETTINGS
    }

    fn put(&self, doc: Document) {
        if let Some(Value::String(id)) = doc.get("_id") {
            let id = id.clone();
            self.cache
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id, Arc::new(doc));
        }
    }

    fn forget(&self, id: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn reload(&self) -> crate::engine::cached::ReloadFuture<'_> {
        Box::pin(async move {
            let held: Vec<String> = self
                .cache
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            crate::engine::cached::reread(&*self, &*self.store, held).await
        })
    }
}

/// What a "since" read returns: Rocket.Chat's `{update, remove}`.
pub struct Delta {
    pub update: Vec<Arc<Document>>,
    pub remove: Vec<Document>,
}

impl Settings {
    /// Loads the settings, writes the defaults that are missing, forces the operator's
    /// `overrides` (`OVERWRITE_SETTING_<id>`, given as text and read by the setting's type),
    /// and follows changes.
    pub async fn start(
        store: Arc<dyn Store>,
        overrides: &[(String, String)],
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let service = Arc::new(Self {
            store: store.clone(),
            cache: RwLock::new(HashMap::new()),
        });
        // Follow first, so nothing written between the read and the subscription is lost.
        crate::engine::cached::watch(&service, &*store, follower);
        service.reload().await?;
        let missing: Vec<&defaults::Default> = {
            let cache = service.cache.read().unwrap_or_else(|p| p.into_inner());
            defaults::DEFAULTS
                .iter()
                .filter(|d| !cache.contains_key(d.id))
                .collect()
        };
        for d in missing {
            let value: serde_json::Value = serde_json::from_str(d.value)
                .map_err(|e| ServiceError::internal(format!("default of {}: {e}", d.id)))?;
            service
                .insert_default(d.id, value, d.kind, d.public)
                .await?;
        }
        // The workspace's identity: made once, then kept (clients key their data by it).
        let has_identity = service
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(defaults::UNIQUE_ID);
        if !has_identity {
            let id = serde_json::Value::String(crate::model::random::random_id());
            service
                .insert_default(defaults::UNIQUE_ID, id, "string", true)
                .await?;
        }
        for (id, text) in overrides {
            let kind = {
                let cache = service.cache.read().unwrap_or_else(|p| p.into_inner());
                match cache.get(id.as_str()) {
                    Some(doc) => doc.get("type").and_then(Value::as_str).map(str::to_owned),
                    None => {
                        tracing::warn!(setting = %id, "OVERWRITE_SETTING_ names no known setting; ignored");
                        continue;
                    }
                }
            };
            let value = value_from_text(kind.as_deref(), text).ok_or_else(|| {
                ServiceError::internal(format!(
                    "OVERWRITE_SETTING_{id}: {text:?} is not a valid {} value",
                    kind.as_deref().unwrap_or("setting")
                ))
            })?;
            if service.value(id) != Some(value.clone()) {
                service.save(&Call::server(), id, value).await?;
                tracing::info!(setting = %id, "setting overwritten from the environment");
            }
        }
        Ok(service)
    }

    /// Writes a setting that is missing, with `value` as its value and package value.
    async fn insert_default(
        &self,
        id: &str,
        value: serde_json::Value,
        kind: &str,
        public: bool,
    ) -> Result<(), ServiceError> {
        let now = now_ms();
        let doc = json_doc(serde_json::json!({
            "_id": id, "value": value, "packageValue": value, "type": kind,
            "public": public, "hidden": false, "blocked": false,
            "ts": {"$date": now}, "_updatedAt": {"$date": now},
        }))?;
        crate::engine::build::insert_default(&*self.store, SETTINGS, doc.clone()).await?;
        self.put(doc);
        Ok(())
    }

    /// A setting's value, from memory.
    pub fn value(&self, id: &str) -> Option<Value> {
        self.cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .and_then(|d| d.get("value").cloned())
    }

    /// A numeric setting, or `default`.
    pub fn number(&self, id: &str, default: f64) -> f64 {
        self.value(id).and_then(|v| v.as_f64()).unwrap_or(default)
    }

    /// A boolean setting, or `default`.
    pub fn flag(&self, id: &str, default: bool) -> bool {
        match self.value(id) {
            Some(Value::Bool(b)) => b,
            _ => default,
        }
    }

    /// Rocket.Chat's DDP rate limiter as its `DDP_Rate_Limit_<name>_*` settings say now
    /// (`IP`, `User`, `Connection`, `User_By_Method`, `Connection_By_Method`; each with
    /// `_Enabled`, `_Requests_Allowed`, `_Interval_Time` in milliseconds).
    pub fn call_rules(&self) -> crate::engine::rate_limit::CallRules {
        let rule = |name: &str| {
            if !self.flag(&format!("DDP_Rate_Limit_{name}_Enabled"), true) {
                return None;
            }
            crate::engine::rate_limit::Rule::from_numbers(
                self.number(&format!("DDP_Rate_Limit_{name}_Requests_Allowed"), 0.0),
                self.number(&format!("DDP_Rate_Limit_{name}_Interval_Time"), 0.0),
            )
        };
        crate::engine::rate_limit::CallRules {
            per_address: rule("IP"),
            per_user: rule("User"),
            per_connection: rule("Connection"),
            per_user_and_name: rule("User_By_Method"),
            per_connection_and_name: rule("Connection_By_Method"),
        }
    }

    /// The settings a reader may see (`public` ones, or every one not hidden), changed after
    /// `since` when given, with the removals after it from the trash.
    pub async fn read(&self, only_public: bool, since: Option<f64>) -> Result<Delta, ServiceError> {
        let mut update: Vec<Arc<Document>> = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| {
                if only_public {
                    is_public(d)
                } else {
                    !is_hidden(d)
                }
            })
            .filter(|d| since.is_none_or(|s| updated_at(d) > s))
            .cloned()
            .collect();
        update.sort_by(|a, b| {
            a.get("_id")
                .map(|v| v.to_ejson_string())
                .cmp(&b.get("_id").map(|v| v.to_ejson_string()))
        });
        let remove = match since {
            None => Vec::new(),
            Some(s) => {
                crate::chat::collections::removed_since(
                    &*self.store,
                    SETTINGS,
                    s,
                    serde_json::json!({}),
                )
                .await?
            }
        };
        Ok(Delta { update, remove })
    }

    /// Changes a setting's value (the caller's permission already checked). A value of
    /// another type than the default's is refused.
    pub async fn save(&self, call: &Call<'_>, id: &str, value: Value) -> Result<(), ServiceError> {
        let current = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| {
                ServiceError::Client(MeteorError::new(
                    "error-setting-not-found",
                    "Setting not found",
                ))
            })?;
        let fits = match (current.get("type").and_then(Value::as_str), &value) {
            (Some("boolean"), Value::Bool(_)) => true,
            (Some("int"), Value::Number(n)) => n.fract() == 0.0,
            (Some("string" | "select" | "code" | "language" | "password"), Value::String(_)) => {
                true
            }
            (Some("multiSelect"), Value::Array(_)) => true,
            (Some("asset"), Value::Object(_)) => true,
            (None, _) => true,
            _ => false,
        };
        if !fits {
            return Err(ServiceError::Client(MeteorError::new(
                "invalid-setting-value",
                "Invalid setting value",
            )));
        }
        let now = now_ms();
        let mut set = Document::default();
        set.insert("value".into(), value.clone());
        set.insert("_updatedAt".into(), Value::Date(now));
        let mut modifier = Document::default();
        modifier.insert("$set".into(), Value::Object(set));
        let update = Update::parse(&modifier).map_err(|e| ServiceError::internal(e.0))?;
        let ack = self
            .store
            .update(
                SETTINGS,
                selector(serde_json::json!({"_id": id}))?,
                update,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        // Read-your-call in this process: the change event brings the same document.
        let mut updated = (*current).clone();
        updated.insert("value".into(), value);
        updated.insert("_updatedAt".into(), Value::Date(now));
        self.put(updated);
        Ok(())
    }
}

/// Whether setting `id` holds a secret (a `password` setting, or one whose name says it
/// holds a key, a password or a token): never handed to a plugin.
pub fn is_secret(id: &str) -> bool {
    defaults::DEFAULTS
        .iter()
        .any(|d| d.id == id && d.kind == "password")
        || [
            "Secret",
            "Password",
            "Token",
            "PrivateKey",
            "AccessKey",
            "_Key",
        ]
        .iter()
        .any(|w| id.contains(w))
}
