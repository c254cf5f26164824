//! Every user's own roles (`users.roles`), kept in memory from the users' change events, so
//! that a permission check reads no user from the store, and a role given or taken by any
//! writer is told to logged-in clients (`roles-change`).
//!
//! Owns the roles, usernames and names of users; it must not decide permissions.

use crate::model::{Document, Value};
use crate::services::accounts::USERS;
use crate::services::cached::CachedCollection;
use crate::services::error::ServiceError;
use crate::services::registry::BoxFuture;
use crate::storage::Store;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

/// A role given to or taken from a user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleChange {
    /// `added` or `removed`.
    pub kind: &'static str,
    pub role: String,
    pub user_id: String,
    pub username: Option<String>,
    pub name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Known {
    roles: Vec<String>,
    username: Option<String>,
    name: Option<String>,
}

fn known(doc: &Document) -> Known {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    Known {
        roles: super::roles_of(doc),
        username: text("username"),
        name: text("name"),
    }
}

type Listener = Arc<dyn Fn(&[RoleChange]) + Send + Sync>;

/// Users' own roles.
pub struct UserRoles {
    store: Arc<dyn Store>,
    users: RwLock<HashMap<String, Known>>,
    listener: OnceLock<Listener>,
}

impl UserRoles {
    /// Reads every user's roles and follows the changes from then on.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, ServiceError> {
        let roles = Arc::new(Self {
            store: store.clone(),
            users: RwLock::new(HashMap::new()),
            listener: OnceLock::new(),
        });
        crate::services::cached::watch(&roles, &*store);
        roles.clone().reload().await?;
        Ok(roles)
    }

    /// Calls `listener` with the roles each later change of a user gives or takes.
    pub fn on_change(&self, listener: impl Fn(&[RoleChange]) + Send + Sync + 'static) {
        let _ = self.listener.set(Arc::new(listener));
    }

    /// `user_id`'s own roles; `None` for a user not (yet) known here.
    pub fn of(&self, user_id: &str) -> Option<Vec<String>> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .map(|k| k.roles.clone())
    }

    /// `user_id`'s username, when the user is known here.
    pub fn username_of(&self, user_id: &str) -> Option<String> {
        self.users
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(user_id)
            .and_then(|k| k.username.clone())
    }

    /// Records `user` as read from the store just now (no change is told).
    pub fn remember(&self, user: &Document) {
        if let Some(Value::String(id)) = user.get("_id") {
            self.users
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(id.clone(), known(user));
        }
    }
}

/// The roles `before` lacks and `after` has (`added`), and the reverse (`removed`).
fn differences(user_id: &str, before: &Known, after: &Known) -> Vec<RoleChange> {
    let change = |kind, role: &String| RoleChange {
        kind,
        role: role.clone(),
        user_id: user_id.to_owned(),
        username: after.username.clone(),
        name: after.name.clone(),
    };
    let added = after
        .roles
        .iter()
        .filter(|r| !before.roles.contains(r))
        .map(|r| change("added", r));
    let removed = before
        .roles
        .iter()
        .filter(|r| !after.roles.contains(r))
        .map(|r| change("removed", r));
    added.chain(removed).collect()
}

impl CachedCollection for UserRoles {
    fn collection(&self) -> &'static str {
        USERS
    }

    fn put(&self, doc: Document) {
        let Some(Value::String(id)) = doc.get("_id") else {
            return;
        };
        let after = known(&doc);
        let before = self
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), after.clone());
        // A new user's first roles are not a change anyone is told of (Rocket.Chat tells
        // role grants, not registrations).
        if let (Some(before), Some(listener)) = (before, self.listener.get()) {
            let changes = differences(id, &before, &after);
            if !changes.is_empty() {
                listener(&changes);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    fn reload(self: Arc<Self>) -> BoxFuture<Result<(), ServiceError>> {
        Box::pin(async move {
            let users = crate::services::cached::read_all(
                &*self.store,
                USERS,
                &["roles", "username", "name"],
            )
            .await?;
            let fresh: HashMap<String, Known> = users
                .iter()
                .filter_map(|u| match u.get("_id") {
                    Some(Value::String(id)) => Some((id.clone(), known(u))),
                    _ => None,
                })
                .collect();
            *self.users.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_what_was_given_and_taken() {
        let before = Known {
            roles: vec!["user".into(), "bot".into()],
            ..Known::default()
        };
        let after = Known {
            roles: vec!["user".into(), "admin".into()],
            username: Some("ann".into()),
            name: None,
        };
        let changes = differences("u1", &before, &after);
        let summary: Vec<(&str, &str)> =
            changes.iter().map(|c| (c.kind, c.role.as_str())).collect();
        assert_eq!(summary, vec![("added", "admin"), ("removed", "bot")]);
        assert_eq!(changes[0].username.as_deref(), Some("ann"));
        assert!(differences("u1", &after, &after).is_empty());
    }
}
