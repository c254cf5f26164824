//! Rocket.Chat's broadcast streams for settings, permissions and roles: `stream-notify-all`
//! (`public-settings-changed`, anyone), `stream-notify-logged` (`private-settings-changed`
//! for those who may see private settings; `permissions-changed` and `roles-change`, a role
//! given to or taken from a user, `Users:NameChanged` and `Users:Deleted`, for any logged-in
//! user) and
//! `stream-roles` (`roles`, logged-in users).
//!
//! Every event comes from the store's change events, so a setting, permission or role
//! changed by another writer (another comet, Rocket.Chat itself) reaches clients exactly as
//! one changed here; each change is emitted once, by the services' one follower of the
//! store (`engine::feed`). Hidden settings never go out. It must not write anything.

use super::permissions::user_roles::UserEvent;
use super::permissions::Permissions;
use crate::chat::collections::SETTINGS;
use crate::chat::collections::{PERMISSIONS, ROLES};
use crate::engine::registry::Registry;
use crate::engine::streams::{self, ReadRule, Stream, StreamRequest};
use crate::model::{Document, Value};
use crate::storage::{ChangeEvent, OperationType, Store};
use std::sync::Arc;

/// The permissions that let a user see private settings (Rocket.Chat's rule).
const SETTING_READERS: &[&str] = &[
    "view-privileged-setting",
    "edit-privileged-setting",
    "manage-selected-settings",
];

/// The broadcast streams.
pub struct Notify {
    /// Where a resync reads from; held weakly, as the follower holds this service until the
    /// store's feed closes with the store.
    store: std::sync::Weak<dyn Store>,
    pub all: Arc<Stream>,
    pub logged: Arc<Stream>,
    pub roles: Arc<Stream>,
}

/// Who may read an event of `stream-notify-logged`: a logged-in user, and for private
/// settings one holding a permission to see them.
fn logged_rule(permissions: Arc<Permissions>) -> ReadRule {
    Arc::new(move |request: StreamRequest| {
        let permissions = permissions.clone();
        Box::pin(async move {
            let Some(user) = request.user_id.as_deref() else {
                return Ok(false);
            };
            if request.event != "private-settings-changed" {
                return Ok(true);
            }
            for permission in SETTING_READERS {
                if permissions
                    .has_permission(Some(user), permission, None)
                    .await?
                {
                    return Ok(true);
                }
            }
            Ok(false)
        })
    })
}

impl Notify {
    /// Defines the streams and starts following the store for their events.
    pub fn start(
        registry: &mut Registry,
        store: &Arc<dyn Store>,
        permissions: Arc<Permissions>,
        follower: &crate::engine::feed::Follower,
    ) -> Arc<Self> {
        let notify = Arc::new(Self {
            store: Arc::downgrade(store),
            all: streams::define(registry, "notify-all", streams::anyone()),
            logged: streams::define(registry, "notify-logged", logged_rule(permissions.clone())),
            roles: streams::define(registry, "roles", streams::logged_in()),
        });
        let logged = notify.logged.clone();
        permissions.user_roles().on_change(move |changes| {
            for change in changes {
                logged.emit("roles-change", &[role_change(change)]);
            }
        });
        let logged = notify.logged.clone();
        permissions
            .user_roles()
            .on_user_event(move |event| match event {
                UserEvent::Renamed {
                    user_id,
                    username,
                    name,
                } => {
                    let mut d = Document::default();
                    d.insert("_id".into(), Value::from(user_id.as_str()));
                    for (field, value) in [("username", username), ("name", name)] {
                        if let Some(v) = value {
                            d.insert(field.into(), Value::from(v.as_str()));
                        }
                    }
                    logged.emit("Users:NameChanged", &[Value::Object(d)]);
                }
                UserEvent::Removed { user_id } => {
                    let mut d = Document::default();
                    d.insert("userId".into(), Value::from(user_id.as_str()));
                    logged.emit("Users:Deleted", &[Value::Object(d)]);
                }
            });
        for collection in [SETTINGS, PERMISSIONS, ROLES] {
            store.follow_collection(collection);
        }
        // Held by the follower: nothing else keeps the streams' emitter.
        follower.add_kept(notify.clone());
        notify
    }

    /// Emits what one change means to clients.
    fn on_change(&self, event: &ChangeEvent) {
        let action = match event.operation {
            OperationType::Insert => "inserted",
            OperationType::Update | OperationType::Replace => "updated",
            OperationType::Delete => "removed",
            _ => return,
        };
        let Some(id) = event.id.clone() else { return };
        match &*event.collection {
            SETTINGS => self.setting_changed(action, id, event.full_document.as_deref()),
            PERMISSIONS => {
                let permission = event
                    .full_document
                    .as_deref()
                    .map_or_else(|| only_id(id), |doc| Value::Object(doc.clone()));
                self.logged
                    .emit("permissions-changed", &[Value::from(action), permission]);
            }
            ROLES => {
                let kind = if action == "removed" {
                    "removed"
                } else {
                    "changed"
                };
                let mut role = match event.full_document.as_deref() {
                    Some(doc) => doc.clone(),
                    None => match only_id(id) {
                        Value::Object(d) => d,
                        _ => return,
                    },
                };
                role.insert("type".into(), Value::from(kind));
                self.roles.emit("roles", &[Value::Object(role)]);
            }
            _ => {}
        }
    }

    fn setting_changed(&self, action: &str, id: Value, doc: Option<&Document>) {
        let Some(doc) = doc else {
            // A removal carries no document: only the readers of every setting hear of it.
            self.logged.emit(
                "private-settings-changed",
                &[Value::from(action), only_id(id)],
            );
            return;
        };
        if doc.get("hidden") == Some(&Value::Bool(true)) {
            return;
        }
        let mut setting = Document::default();
        setting.insert("_id".into(), id);
        for field in [
            "value",
            "editor",
            "properties",
            "enterprise",
            "requiredOnWizard",
        ] {
            if let Some(v) = doc.get(field) {
                setting.insert(field.into(), v.clone());
            }
        }
        let args = [Value::from(action), Value::Object(setting)];
        if doc.get("public") == Some(&Value::Bool(true)) {
            self.all.emit("public-settings-changed", &args);
        }
        self.logged.emit("private-settings-changed", &args);
    }
}

/// Rocket.Chat's `roles-change` argument: `{type, _id: role, u: {_id, username, name}}`.
fn role_change(change: &super::permissions::user_roles::RoleChange) -> Value {
    let mut user = Document::default();
    user.insert("_id".into(), Value::from(change.user_id.as_str()));
    if let Some(username) = &change.username {
        user.insert("username".into(), Value::from(username.as_str()));
    }
    if let Some(name) = &change.name {
        user.insert("name".into(), Value::from(name.as_str()));
    }
    let mut d = Document::default();
    d.insert("type".into(), Value::from(change.kind));
    d.insert("_id".into(), Value::from(change.role.as_str()));
    d.insert("u".into(), Value::Object(user));
    Value::Object(d)
}

fn only_id(id: Value) -> Value {
    let mut d = Document::default();
    d.insert("_id".into(), id);
    Value::Object(d)
}

impl crate::engine::feed::FeedHandler for Notify {
    fn name(&self) -> &'static str {
        "notify streams"
    }

    fn wants(&self, collection: &str) -> bool {
        [SETTINGS, PERMISSIONS, ROLES].contains(&collection)
    }

    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> crate::engine::feed::FeedFuture<'a> {
        self.on_change(event);
        Box::pin(std::future::ready(()))
    }

    /// Changes may have been lost: every setting, permission and role is told again as it
    /// is now (clients take each as an update).
    fn resync(&self) -> crate::engine::feed::FeedFuture<'_> {
        Box::pin(async move {
            let Some(store) = self.store.upgrade() else {
                return;
            };
            for collection in [SETTINGS, PERMISSIONS, ROLES] {
                let docs = match crate::engine::cached::read_all(&*store, collection, &[]).await {
                    Ok(docs) => docs,
                    Err(err) => {
                        tracing::warn!(
                            %collection,
                            error = %err,
                            "cannot read again what the notify streams tell"
                        );
                        continue;
                    }
                };
                for doc in docs {
                    let event = ChangeEvent::for_document(
                        0,
                        OperationType::Update,
                        collection.into(),
                        doc.get("_id").cloned(),
                        Some(Arc::new(doc)),
                        None,
                    );
                    self.on_change(&event);
                }
            }
        })
    }
}
