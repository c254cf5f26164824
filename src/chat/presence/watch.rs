//! `stream-user-presence`: who watches whose status, and the frames a status change sends.
//!
//! Rocket.Chat's special stream: a connection's first subscription (`["", {added, removed}]`)
//! is its one watch list and gets `ready`; later subscriptions only add or remove users from
//! that list and end at once (a `nosub` without error). The list lives until that first
//! subscription or the connection ends. Owns the watch lists, kept twice: by watched user
//! (one look-up per status change) and by connection (to forget a list at its end). It
//! must not read or write the store: status changes are told to [`Watchers::deliver`].

use crate::engine::registry::{Publish, Registry, Subscription};
use crate::engine::ServiceError;
use crate::model::shared::StreamEvent;
use crate::model::{MeteorError, Value};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// The stream's publication and the collection of its frames.
pub const STREAM: &str = "stream-user-presence";

/// Most users one connection may watch (a bound on what one client can make us hold).
pub const MAX_WATCHED: usize = 10_000;

/// One connection's watch list.
struct Watch {
    sub: Arc<Subscription>,
    /// Sorted, without repeats: 16 bytes a user (a hash set would take twice that).
    watched: Vec<Arc<str>>,
}

#[derive(Default)]
struct Lists {
    /// Watched user -> the subscriptions watching it (a pointer each: a pair costs tens
    /// of bytes, not a copy of the subscription).
    by_user: HashMap<Arc<str>, Vec<Arc<Subscription>>>,
    /// Connection -> its list.
    by_connection: HashMap<Arc<str>, Watch>,
    /// One shared copy of each watched user's id.
    ids: HashSet<Arc<str>>,
}

impl Lists {
    fn intern(&mut self, uid: &str) -> Arc<str> {
        if let Some(id) = self.ids.get(uid) {
            return id.clone();
        }
        let id: Arc<str> = uid.into();
        self.ids.insert(id.clone());
        id
    }

    /// Adds `uids` to `connection`'s list (up to [`MAX_WATCHED`]), each watched once.
    fn watch_all(&mut self, connection: &str, uids: &[String]) {
        let Some(watch) = self.by_connection.get(connection) else {
            return;
        };
        let room = MAX_WATCHED.saturating_sub(watch.watched.len());
        let mut fresh: Vec<&str> = uids
            .iter()
            .map(String::as_str)
            .filter(|u| watch.watched.binary_search_by(|w| (**w).cmp(u)).is_err())
            .collect();
        fresh.sort_unstable();
        fresh.dedup();
        fresh.truncate(room);
        if fresh.is_empty() {
            return;
        }
        let fresh: Vec<Arc<str>> = fresh.into_iter().map(|u| self.intern(u)).collect();
        let Some(watch) = self.by_connection.get_mut(connection) else {
            return;
        };
        let sub = watch.sub.clone();
        watch.watched.extend(fresh.iter().cloned());
        watch.watched.sort_unstable();
        watch.watched.shrink_to_fit();
        for uid in fresh {
            self.by_user.entry(uid).or_default().push(sub.clone());
        }
    }

    fn unwatch(&mut self, connection: &str, uid: &str) {
        let Some(watch) = self.by_connection.get_mut(connection) else {
            return;
        };
        let Ok(at) = watch.watched.binary_search_by(|w| (**w).cmp(uid)) else {
            return;
        };
        watch.watched.remove(at);
        let sub = watch.sub.clone();
        self.drop_watcher(uid, &sub);
    }

    fn drop_watcher(&mut self, uid: &str, sub: &Arc<Subscription>) {
        if let Some(list) = self.by_user.get_mut(uid) {
            list.retain(|s| !Arc::ptr_eq(s, sub));
            if list.is_empty() {
                self.by_user.remove(uid);
                self.ids.remove(uid);
            }
        }
    }

    /// Forgets `connection`'s list if it is the one of subscription `sub_id`.
    fn end(&mut self, connection: &str, sub_id: &str) {
        match self.by_connection.get(connection) {
            Some(watch) if *watch.sub.id == *sub_id => {}
            _ => return,
        }
        let Some(watch) = self.by_connection.remove(connection) else {
            return;
        };
        for uid in &watch.watched {
            self.drop_watcher(uid, &watch.sub);
        }
    }
}

/// Every connection's watch list.
#[derive(Default)]
pub struct Watchers {
    lists: Mutex<Lists>,
}

/// The user ids of an `added` or `removed` list: strings of sensible length only.
fn user_ids(options: Option<&Value>, key: &str) -> Result<Vec<String>, MeteorError> {
    let Some(Value::Object(options)) = options else {
        return Ok(Vec::new());
    };
    match options.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(ids)) if ids.len() <= MAX_WATCHED => ids
            .iter()
            .map(|id| match id {
                Value::String(s) if !s.is_empty() && s.len() <= 128 => Ok(s.clone()),
                _ => Err(MeteorError::new(400, "Match failed")),
            })
            .collect(),
        Some(_) => Err(MeteorError::new(400, "Match failed")),
    }
}

impl Watchers {
    /// Registers the stream's publication: logged-in users only (a stranger learns nobody's
    /// status).
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        let watchers = self.clone();
        registry.publication(STREAM, move |sub, params| {
            let watchers = watchers.clone();
            async move {
                if sub.user_id.is_none() {
                    return Err(ServiceError::Client(MeteorError {
                        error: "not-allowed".into(),
                        reason: None,
                        details: None,
                    }));
                }
                let added = user_ids(params.get(1), "added")?;
                let removed = user_ids(params.get(1), "removed")?;
                let main = watchers.edit(&sub, &added, &removed);
                if !main {
                    // Rocket.Chat's rule: a later subscription only edits the list.
                    sub.stop();
                    return Ok(Publish::Manual);
                }
                let (watchers, ending) = (watchers.clone(), sub.clone());
                tokio::spawn(async move {
                    ending.stopped().await;
                    watchers.end(&ending);
                });
                Ok(Publish::Ready)
            }
        });
    }

    /// Applies `added` and `removed` to the list of `sub`'s connection, making `sub` the
    /// list's subscription when the connection has none; `true` when it did.
    fn edit(&self, sub: &Subscription, added: &[String], removed: &[String]) -> bool {
        let mut lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        let connection = sub.connection_id.clone();
        let main = match lists.by_connection.get(&connection) {
            Some(watch) if !watch.sub.is_stopped() => false,
            _ => {
                if let Some(old) = lists
                    .by_connection
                    .get(&connection)
                    .map(|w| w.sub.id.clone())
                {
                    lists.end(&connection, &old);
                }
                lists.by_connection.insert(
                    connection.clone(),
                    Watch {
                        sub: Arc::new(sub.clone()),
                        watched: Vec::new(),
                    },
                );
                true
            }
        };
        lists.watch_all(&connection, added);
        for uid in removed {
            lists.unwatch(&connection, uid);
        }
        main
    }

    fn end(&self, sub: &Subscription) {
        self.lists
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .end(&sub.connection_id, &sub.id);
    }

    /// Sends `[[username, status, statusText]]` of user `uid` to everyone watching it (one
    /// frame, serialized once); returns how many.
    pub fn deliver(&self, uid: &str, args: Value) -> usize {
        let (id, receivers): (Arc<str>, Vec<Arc<Subscription>>) = {
            let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
            match lists.by_user.get_key_value(uid) {
                Some((id, list)) => (id.clone(), list.clone()),
                None => return 0,
            }
        };
        let event = StreamEvent::presence(STREAM.into(), id, vec![args]);
        for sub in &receivers {
            sub.send_event(event.clone());
        }
        receivers.len()
    }

    /// How many (watcher, watched user) pairs are held, and how many connections watch.
    /// The users someone watches now.
    pub fn watched(&self) -> Vec<Arc<str>> {
        let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        lists.by_user.keys().cloned().collect()
    }

    pub fn size(&self) -> (usize, usize) {
        let lists = self.lists.lock().unwrap_or_else(|p| p.into_inner());
        (
            lists.by_user.values().map(Vec::len).sum(),
            lists.by_connection.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watched_lists_accept_only_short_strings() {
        let mut options = crate::model::Document::default();
        options.insert(
            "added".into(),
            Value::Array(vec![Value::from("a"), Value::from("b")]),
        );
        let options = Value::Object(options);
        assert_eq!(user_ids(Some(&options), "added").unwrap(), vec!["a", "b"]);
        assert!(user_ids(Some(&options), "removed").unwrap().is_empty());
        assert!(user_ids(None, "added").unwrap().is_empty());
        let mut bad = crate::model::Document::default();
        bad.insert("added".into(), Value::Array(vec![Value::Number(1.0)]));
        assert!(user_ids(Some(&Value::Object(bad)), "added").is_err());
        let mut long = crate::model::Document::default();
        long.insert(
            "added".into(),
            Value::Array(vec![Value::from("x".repeat(129))]),
        );
        assert!(user_ids(Some(&Value::Object(long)), "added").is_err());
        let mut not_list = crate::model::Document::default();
        not_list.insert("added".into(), Value::from("a"));
        assert!(user_ids(Some(&Value::Object(not_list)), "added").is_err());
    }
}
