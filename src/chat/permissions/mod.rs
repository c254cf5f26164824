//! Roles and permissions: Rocket.Chat's `rocketchat_roles` and `rocketchat_permissions`, the
//! defaults written on first start, and the one check every method, stream rule and REST
//! route uses: [`Permissions::has_permission`].
//!
//! Owns the default role list (with scopes) and permission → roles map, an in-memory copy of
//! the permissions kept current from the store's change events, and `permissions/get`. A
//! user's roles are the user's own (`users.roles`) plus, for a room, those of the user's
//! subscription to it (`rocketchat_subscription.roles`: owner, moderator, leader). It must
//! not know about sessions or HTTP. A missing user has no role: nothing passes for lack of
//! one.

pub mod methods;
pub mod user_roles;

use crate::chat::collections::{PERMISSIONS, ROLES};
use crate::engine::build::{doc, now_ms, selector};
use crate::engine::cached::CachedCollection as _;
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Rocket.Chat's default roles and their scopes.
const DEFAULT_ROLES: &[(&str, &str, &str)] = &[
    ("admin", "Users", "Administrator"),
    (
        "user",
        "Users",
        "Normal user rights. Most users receive this role.",
    ),
    ("bot", "Users", "Bot"),
    ("guest", "Users", "Guest"),
    ("anonymous", "Users", "Anonymous"),
    ("app", "Users", "App"),
    ("owner", "Subscriptions", "Owner"),
    ("moderator", "Subscriptions", "Moderator"),
    ("leader", "Subscriptions", "Leader"),
];

/// Rocket.Chat's default permission → roles map, for every permission the core checks.
const DEFAULT_PERMISSIONS: &[(&str, &[&str])] = &[
    ("create-c", &["admin", "user", "bot", "app"]),
    ("create-p", &["admin", "user", "bot", "app"]),
    ("create-d", &["admin", "user", "bot", "app"]),
    ("view-d-room", &["admin", "user", "bot", "app", "guest"]),
    ("view-c-room", &["admin", "user", "bot", "app", "anonymous"]),
    ("view-p-room", &["admin", "user", "anonymous", "guest"]),
    ("preview-c-room", &["admin", "user", "anonymous"]),
    ("post-readonly", &["admin", "owner", "moderator"]),
    ("edit-message", &["admin", "owner", "moderator"]),
    ("delete-message", &["admin", "owner", "moderator"]),
    ("delete-own-message", &["admin", "user"]),
    ("bypass-time-limit-edit-and-delete", &["bot", "app"]),
    ("mention-all", &["admin", "owner", "moderator", "user"]),
    ("mention-here", &["admin", "owner", "moderator", "user"]),
    ("add-user-to-joined-room", &["admin", "owner", "moderator"]),
    ("add-user-to-any-c-room", &["admin"]),
    ("add-user-to-any-p-room", &[]),
    ("remove-user", &["admin", "owner", "moderator"]),
    ("mute-user", &["admin", "owner", "moderator"]),
    ("set-owner", &["admin", "owner"]),
    ("set-moderator", &["admin", "owner"]),
    ("set-leader", &["admin", "owner"]),
    ("archive-room", &["admin", "owner"]),
    ("unarchive-room", &["admin"]),
    ("edit-room", &["admin", "owner", "moderator"]),
    ("delete-c", &["admin", "owner"]),
    ("delete-p", &["admin", "owner"]),
    ("delete-d", &["admin"]),
    ("pin-message", &["admin", "owner", "moderator"]),
    ("message-impersonate", &["bot", "app"]),
    ("send-many-messages", &["admin", "bot", "app"]),
    ("join-without-join-code", &["admin", "bot", "app"]),
    ("leave-c", &["admin", "user", "bot", "anonymous", "app"]),
    ("leave-p", &["admin", "user", "bot", "anonymous", "app"]),
    ("create-team", &["admin", "user"]),
    ("create-team-channel", &["admin", "owner"]),
    ("add-team-member", &["admin", "owner", "moderator"]),
    ("edit-team-member", &["admin", "owner", "moderator"]),
    ("move-room-to-team", &["admin", "owner"]),
    ("remove-team-channel", &["admin", "owner"]),
    ("edit-team", &["admin", "owner"]),
    ("edit-team-channel", &["admin", "owner"]),
    ("delete-team", &["admin", "owner"]),
    ("convert-team", &["admin", "owner"]),
    ("view-all-teams", &["admin"]),
    ("view-all-team-channels", &["admin", "owner"]),
    ("view-privileged-setting", &["admin"]),
    ("edit-privileged-setting", &["admin"]),
    ("manage-selected-settings", &["admin"]),
    ("view-user-administration", &["admin"]),
    ("view-room-administration", &["admin"]),
    ("manage-emoji", &["admin"]),
    ("start-discussion", &["admin", "user", "guest", "app"]),
    (
        "start-discussion-other-user",
        &["admin", "user", "guest", "app"],
    ),
    ("view-moderation-console", &["admin"]),
    ("create-user", &["admin"]),
    ("delete-user", &["admin"]),
    ("edit-other-user-info", &["admin"]),
    ("edit-other-user-password", &["admin"]),
    ("view-statistics", &["admin"]),
    ("manage-apps", &["admin"]),
    ("view-full-other-user-info", &["admin"]),
    ("api-bypass-rate-limit", &["admin", "bot", "app"]),
];

/// The Permissions service.
pub struct Permissions {
    store: Arc<dyn Store>,
    /// Permission id → the roles that have it.
    granted: RwLock<HashMap<String, Vec<String>>>,
    /// Every permission document, for `permissions/get`.
    documents: RwLock<HashMap<String, Arc<Document>>>,
    /// Every user's own roles.
    user_roles: Arc<user_roles::UserRoles>,
}

fn roles_of(doc: &Document) -> Vec<String> {
    match doc.get("roles") {
        Some(Value::Array(roles)) => roles
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

impl crate::engine::cached::CachedCollection for Permissions {
    fn collection(&self) -> &'static str {
        PERMISSIONS
    }

    fn put(&self, permission: Document) {
        let Some(Value::String(id)) = permission.get("_id") else {
            return;
        };
        let id = id.clone();
        self.granted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), roles_of(&permission));
        self.documents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, Arc::new(permission));
    }

    fn forget(&self, id: &str) {
        self.granted
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        self.documents
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn reload(&self) -> crate::engine::cached::ReloadFuture<'_> {
        Box::pin(async move {
            let held: Vec<String> = self
                .documents
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .keys()
                .cloned()
                .collect();
            crate::engine::cached::reread(&*self, &*self.store, held).await
        })
    }
}

impl Permissions {
    /// Loads permissions, writes the missing default roles and permissions, follows changes.
    pub async fn start(
        store: Arc<dyn Store>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let service = Arc::new(Self {
            store: store.clone(),
            granted: RwLock::new(HashMap::new()),
            documents: RwLock::new(HashMap::new()),
            user_roles: user_roles::UserRoles::start(store.clone(), follower).await?,
        });
        crate::engine::cached::watch(&service, &*store, follower);
        service.reload().await?;
        let now = now_ms();
        for (id, scope, description) in DEFAULT_ROLES {
            let role = doc(serde_json::json!({
                "_id": id, "name": id, "scope": scope, "description": description,
                "protected": true, "mandatory2fa": false, "_updatedAt": {"$date": now},
            }))?;
            crate::engine::build::insert_default(&*store, ROLES, role).await?;
        }
        let missing: Vec<&(&str, &[&str])> = {
            let granted = service.granted.read().unwrap_or_else(|p| p.into_inner());
            DEFAULT_PERMISSIONS
                .iter()
                .filter(|(id, _)| !granted.contains_key(*id))
                .collect()
        };
        for (id, roles) in missing {
            let permission = doc(serde_json::json!({
                "_id": id, "roles": roles, "_updatedAt": {"$date": now},
            }))?;
            crate::engine::build::insert_default(&*store, PERMISSIONS, permission.clone()).await?;
            service.put(permission);
        }
        Ok(service)
    }

    /// The roles `user_id` holds: its own, and in `room_id` those of its subscription.
    pub async fn roles(
        &self,
        user_id: &str,
        room_id: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        let mut roles = match self.user_roles.of(user_id) {
            Some(roles) => roles,
            // Not known yet (written a moment ago elsewhere): read, and remember.
            None => {
                let user = self
                    .store
                    .find(
                        crate::chat::collections::USERS,
                        FindOptions {
                            selector: selector(serde_json::json!({"_id": user_id}))?,
                            limit: Some(1),
                            ..FindOptions::default()
                        },
                    )
                    .await
                    .map_err(|e| ServiceError::from_store(&e))?;
                let Some(user) = user.first() else {
                    return Ok(Vec::new());
                };
                self.user_roles.remember(user);
                roles_of(user)
            }
        };
        if let Some(rid) = room_id {
            let subscription = self
                .store
                .find(
                    crate::chat::collections::SUBSCRIPTIONS,
                    FindOptions {
                        selector: selector(serde_json::json!({"rid": rid, "u._id": user_id}))?,
                        limit: Some(1),
                        ..FindOptions::default()
                    },
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
            if let Some(s) = subscription.first() {
                roles.extend(roles_of(s));
            }
        }
        Ok(roles)
    }

    /// Whether `user_id` holds `permission` (in room `rid`).
    pub async fn may(
        &self,
        user_id: &str,
        permission: &str,
        rid: Option<&str>,
    ) -> Result<bool, ServiceError> {
        self.has_permission(Some(user_id), permission, rid).await
    }

    /// `Ok` when `user_id` holds `permission` (in room `rid`), else `error-not-allowed`.
    pub async fn require(
        &self,
        user_id: &str,
        permission: &str,
        rid: Option<&str>,
    ) -> Result<(), ServiceError> {
        if self.may(user_id, permission, rid).await? {
            Ok(())
        } else {
            Err(crate::chat::not_allowed())
        }
    }

    /// Whether `user_id` (none: an anonymous caller, who holds no role) has `permission`,
    /// in `room_id` when given.
    pub async fn has_permission(
        &self,
        user_id: Option<&str>,
        permission: &str,
        room_id: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let Some(user_id) = user_id else {
            return Ok(false);
        };
        let allowed = self
            .granted
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(permission)
            .cloned()
            .unwrap_or_default();
        if allowed.is_empty() {
            return Ok(false);
        }
        let roles = self.roles(user_id, room_id).await?;
        Ok(roles.iter().any(|r| allowed.contains(r)))
    }

    /// Every role (`rocketchat_roles`), by id.
    pub async fn role_documents(&self) -> Result<Vec<Document>, ServiceError> {
        self.store
            .find(
                ROLES,
                FindOptions {
                    selector: selector(serde_json::json!({}))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// Rocket.Chat's `getUserRoles`: `{_id, username, roles}` of every user who holds a
    /// user-wide role besides `user`, by username.
    pub async fn users_with_roles(&self) -> Result<Vec<Document>, ServiceError> {
        let special: Vec<String> = self
            .role_documents()
            .await?
            .iter()
            .filter(|r| r.get("scope").and_then(Value::as_str).unwrap_or("Users") == "Users")
            .filter_map(|r| r.get("_id").and_then(Value::as_str).map(str::to_owned))
            .filter(|id| id != "user")
            .collect();
        let found = self
            .store
            .find(
                crate::chat::collections::USERS,
                FindOptions {
                    selector: selector(serde_json::json!({"roles": {"$in": special}}))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let mut out: Vec<Document> = found
            .iter()
            .map(|u| {
                let mut d = Document::default();
                for k in ["_id", "username", "roles"] {
                    if let Some(v) = u.get(k) {
                        d.insert(k.into(), v.clone());
                    }
                }
                d
            })
            .collect();
        out.sort_by_key(|d| d.get("username").and_then(Value::as_str).map(str::to_owned));
        Ok(out)
    }

    /// Every user's own roles, and who is told when they change.
    pub fn user_roles(&self) -> &Arc<user_roles::UserRoles> {
        &self.user_roles
    }

    /// Every permission document changed after `since` (all when `None`).
    pub fn documents(&self, since: Option<f64>) -> Vec<Arc<Document>> {
        let mut out: Vec<Arc<Document>> = self
            .documents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|d| {
                since
                    .is_none_or(|s| matches!(d.get("_updatedAt"), Some(Value::Date(ms)) if *ms > s))
            })
            .cloned()
            .collect();
        out.sort_by_key(|d| d.get("_id").and_then(Value::as_str).map(str::to_owned));
        out
    }
}
