//! Every user's own roles (`users.roles`), kept in memory from the users' change events, so
//! that a permission check reads no user from the store, and a role given or taken by any
//! writer is told to logged-in clients (`roles-change`).
//!
//! Owns the roles, usernames and names of users, and an index of usernames and addresses
//! ignoring case (so that finding a user by a name in another case reads no other user);
//! it must not decide permissions.

use crate::chat::collections::USERS;
use crate::engine::cached::CachedCollection;
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::Store;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

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
    /// Addresses, in lower case.
    emails: Vec<String>,
}

fn known(doc: &Document) -> Known {
    let text = |k: &str| doc.get(k).and_then(Value::as_str).map(str::to_owned);
    let emails = match doc.get("emails") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|e| e.as_object()?.get("address")?.as_str())
            .map(str::to_lowercase)
            .collect(),
        _ => Vec::new(),
    };
    Known {
        roles: super::roles_of(doc),
        username: text("username"),
        name: text("name"),
        emails,
    }
}

/// What a user is found by, ignoring case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Username,
    Email,
}

/// The index keys of `user`: `u:<username>` and `e:<address>`, in lower case.
fn name_keys(user: &Known) -> Vec<String> {
    let mut keys: Vec<String> = user.emails.iter().map(|e| format!("e:{e}")).collect();
    if let Some(name) = &user.username {
        keys.push(format!("u:{}", name.to_lowercase()));
    }
    keys
}

fn name_key(kind: NameKind, text: &str) -> String {
    match kind {
        NameKind::Username => format!("u:{}", text.to_lowercase()),
        NameKind::Email => format!("e:{}", text.to_lowercase()),
    }
}

/// User ids by lower-case username and address.
#[derive(Default)]
struct NameIndex(HashMap<String, Vec<String>>);

impl NameIndex {
    fn add(&mut self, id: &str, user: &Known) {
        for key in name_keys(user) {
            let ids = self.0.entry(key).or_default();
            if !ids.iter().any(|i| i == id) {
                ids.push(id.to_owned());
            }
        }
    }

    fn remove(&mut self, id: &str, user: &Known) {
        for key in name_keys(user) {
            if let Some(ids) = self.0.get_mut(&key) {
                ids.retain(|i| i != id);
                if ids.is_empty() {
                    self.0.remove(&key);
                }
            }
        }
    }
}

type Listener = Arc<dyn Fn(&[RoleChange]) + Send + Sync>;

/// A user renamed or removed, as the change events tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserEvent {
    Renamed {
        user_id: String,
        username: Option<String>,
        name: Option<String>,
    },
    Removed {
        user_id: String,
    },
}

type UserListener = Arc<dyn Fn(&UserEvent) + Send + Sync>;

/// Users' own roles.
pub struct UserRoles {
    store: Arc<dyn Store>,
    users: RwLock<HashMap<String, Known>>,
    names: RwLock<NameIndex>,
    /// The store's change events are applied up to here (of every collection).
    seen: tokio::sync::watch::Sender<u64>,
    /// Told of role changes and of renames and removals; added by the services that
    /// follow users (notify), called on the change follower's task.
    listeners: RwLock<Vec<Listener>>,
    user_listeners: RwLock<Vec<UserListener>>,
}

impl UserRoles {
    /// Reads every user's roles and follows the changes from then on.
    pub async fn start(
        store: Arc<dyn Store>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let roles = Arc::new(Self {
            store: store.clone(),
            users: RwLock::new(HashMap::new()),
            names: RwLock::new(NameIndex::default()),
            seen: tokio::sync::watch::Sender::new(0),
            listeners: RwLock::new(Vec::new()),
            user_listeners: RwLock::new(Vec::new()),
        });
        crate::engine::cached::watch(&roles, &*store, follower);
        roles.reload().await?;
        Ok(roles)
    }

    /// Adds `listener`, called with the roles each later change of a user gives or takes.
    pub fn on_change(&self, listener: impl Fn(&[RoleChange]) + Send + Sync + 'static) {
        self.listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(listener));
    }

    /// Adds `listener`, called with each later rename (username or name) and removal of a
    /// user.
    pub fn on_user_event(&self, listener: impl Fn(&UserEvent) + Send + Sync + 'static) {
        self.user_listeners
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::new(listener));
    }

    fn tell_user_event(&self, event: &UserEvent) {
        let listeners = self
            .user_listeners
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for listener in listeners {
            listener(event);
        }
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

    /// The ids of the users whose username (or address) is `text` ignoring case, as far as
    /// the change events seen so far tell.
    pub fn ids_named(&self, kind: NameKind, text: &str) -> Vec<String> {
        self.names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .get(&name_key(kind, text))
            .cloned()
            .unwrap_or_default()
    }

    /// Waits (at most `within`) until every change the store has told of so far is applied
    /// here; `false` when that took longer.
    pub async fn caught_up(&self, within: std::time::Duration) -> bool {
        let target = self.store.last_seq();
        let mut seen = self.seen.subscribe();
        let waited = tokio::time::timeout(within, seen.wait_for(|s| *s >= target))
            .await
            .is_ok_and(|r| r.is_ok());
        waited
    }

    /// Records `user` as read from the store just now (no change is told).
    pub fn remember(&self, user: &Document) {
        if let Some(Value::String(id)) = user.get("_id") {
            self.record(id, known(user));
        }
    }

    /// Files `after` as what is known of `id`; returns what was known before.
    fn record(&self, id: &str, after: Known) -> Option<Known> {
        let before = self
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), after.clone());
        let mut names = self.names.write().unwrap_or_else(|p| p.into_inner());
        if let Some(before) = &before {
            names.remove(id, before);
        }
        names.add(id, &after);
        before
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
        let before = self.record(id, after.clone());
        if let Some(before) = &before {
            if before.username != after.username || before.name != after.name {
                self.tell_user_event(&UserEvent::Renamed {
                    user_id: id.clone(),
                    username: after.username.clone(),
                    name: after.name.clone(),
                });
            }
        }
        // A new user's first roles are not a change anyone is told of (Rocket.Chat tells
        // role grants, not registrations).
        if let Some(before) = before {
            let changes = differences(id, &before, &after);
            if !changes.is_empty() {
                let listeners = self
                    .listeners
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                for listener in listeners {
                    listener(&changes);
                }
            }
        }
    }

    fn saw(&self, seq: u64) {
        self.seen.send_if_modified(|s| {
            let later = seq > *s;
            *s = (*s).max(seq);
            later
        });
    }

    fn forget(&self, id: &str) {
        let before = self
            .users
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(before) = before {
            self.names
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id, &before);
            self.tell_user_event(&UserEvent::Removed {
                user_id: id.to_owned(),
            });
        }
    }

    fn reload(&self) -> crate::engine::cached::ReloadFuture<'_> {
        Box::pin(async move {
            // What the read below shows includes every change up to here.
            let at = self.store.last_seq();
            let users = crate::engine::cached::read_all(
                &*self.store,
                USERS,
                &["roles", "username", "name", "emails"],
            )
            .await?;
            let fresh: HashMap<String, Known> = users
                .iter()
                .filter_map(|u| match u.get("_id") {
                    Some(Value::String(id)) => Some((id.clone(), known(u))),
                    _ => None,
                })
                .collect();
            let mut names = NameIndex::default();
            for (id, user) in &fresh {
                names.add(id, user);
            }
            *self.users.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            *self.names.write().unwrap_or_else(|p| p.into_inner()) = names;
            self.saw(at);
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
            emails: Vec::new(),
        };
        let changes = differences("u1", &before, &after);
        let summary: Vec<(&str, &str)> =
            changes.iter().map(|c| (c.kind, c.role.as_str())).collect();
        assert_eq!(summary, vec![("added", "admin"), ("removed", "bot")]);
        assert_eq!(changes[0].username.as_deref(), Some("ann"));
        assert!(differences("u1", &after, &after).is_empty());
    }

    #[test]
    fn the_name_index_follows_renames_and_ignores_case() {
        let mut index = NameIndex::default();
        let ann = Known {
            username: Some("Ann".into()),
            emails: vec!["ann@example.com".into()],
            ..Known::default()
        };
        index.add("u1", &ann);
        let look = |index: &NameIndex, kind, text| {
            index
                .0
                .get(&name_key(kind, text))
                .cloned()
                .unwrap_or_default()
        };
        assert_eq!(look(&index, NameKind::Username, "aNN"), vec!["u1"]);
        assert_eq!(look(&index, NameKind::Email, "ANN@example.com"), vec!["u1"]);
        let renamed = Known {
            username: Some("anna".into()),
            ..ann.clone()
        };
        index.remove("u1", &ann);
        index.add("u1", &renamed);
        assert!(look(&index, NameKind::Username, "ann").is_empty());
        assert_eq!(look(&index, NameKind::Username, "ANNA"), vec!["u1"]);
        index.remove("u1", &renamed);
        assert!(index.0.is_empty(), "nothing left behind: {:?}", index.0);
    }
}
