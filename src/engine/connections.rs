//! The live DDP connections as services see them: who is connected, as which user, and
//! hooks that run when a connection opens, closes or changes its user.
//!
//! Owns the directory of connections (by id and by user) and the hook list. Sessions report
//! to it; services read it (`logoutOtherClients`, a forced logout, per-user streams,
//! presence). It must not know how sessions work: a connection is a [`ConnectionHandle`].

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, RwLock, Weak};

/// One live connection, as the session behind it offers it to services.
pub trait ConnectionHandle: Send + Sync {
    /// The DDP session id.
    fn id(&self) -> &str;
    /// The logged-in user, if any.
    fn user_id(&self) -> Option<String>;
    /// The client's address (for rate limits and presence), when the transport knows it.
    fn client_address(&self) -> Option<IpAddr>;
    /// Logs the connection out, as its own `logout` would: its subscriptions re-run without
    /// a user.
    fn log_out(&self);
    /// Closes the connection.
    fn close(&self);
    /// A value a service keeps with the connection (the login token it used, say).
    fn attachment(&self, key: &'static str) -> Option<String>;
    fn set_attachment(&self, key: &'static str, value: Option<String>);
    /// What the operator sees of the connection, while it is open.
    fn details(&self) -> Option<ConnectionDetails> {
        None
    }
    /// The subscriptions the client holds on this connection.
    fn subscription_count(&self) -> usize {
        0
    }
}

/// A connection as the operator's page lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectionDetails {
    /// `websocket`, `sockjs-websocket`, `xhr-streaming` or `xhr-polling`.
    pub transport: &'static str,
    /// When the session started, in milliseconds since the epoch.
    pub opened_at_ms: f64,
    /// Bytes waiting to be sent to the client.
    pub queued_bytes: usize,
}

/// What services may do when connections come and go. Every method has a default that does
/// nothing; hooks run on the session's task and must not block.
pub trait ConnectionHooks: Send + Sync {
    fn opened(&self, _connection: &Arc<dyn ConnectionHandle>) {}
    /// Runs exactly once per connection, with the user it had last.
    fn closed(&self, _connection_id: &str, _user_id: Option<&str>) {}
    fn user_changed(
        &self,
        _connection: &Arc<dyn ConnectionHandle>,
        _old: Option<&str>,
        _new: Option<&str>,
    ) {
    }
}

#[derive(Default)]
struct Directory {
    by_id: HashMap<Arc<str>, Weak<dyn ConnectionHandle>>,
    by_user: HashMap<String, HashSet<Arc<str>>>,
}

/// Every live connection, and the hooks services registered.
#[derive(Default)]
pub struct Connections {
    directory: Mutex<Directory>,
    hooks: RwLock<Vec<Arc<dyn ConnectionHooks>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connections {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Adds hooks for every connection from now on.
    pub fn add_hooks(&self, hooks: Arc<dyn ConnectionHooks>) {
        self.hooks
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(hooks);
    }

    fn each_hook(&self, run: impl Fn(&dyn ConnectionHooks)) {
        let hooks = self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone();
        for hook in hooks {
            run(hook.as_ref());
        }
    }

    /// The connection with this session id, while it is open.
    pub fn get(&self, id: &str) -> Option<Arc<dyn ConnectionHandle>> {
        lock(&self.directory).by_id.get(id).and_then(Weak::upgrade)
    }

    /// The open connections logged in as `user_id`.
    pub fn of_user(&self, user_id: &str) -> Vec<Arc<dyn ConnectionHandle>> {
        let directory = lock(&self.directory);
        directory
            .by_user
            .get(user_id)
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| directory.by_id.get(id).and_then(Weak::upgrade))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every open connection.
    pub fn all(&self) -> Vec<Arc<dyn ConnectionHandle>> {
        lock(&self.directory)
            .by_id
            .values()
            .filter_map(Weak::upgrade)
            .collect()
    }

    /// Number of open connections.
    pub fn count(&self) -> usize {
        lock(&self.directory).by_id.len()
    }

    /// A session opened (called by the session layer).
    pub fn opened(&self, connection: &Arc<dyn ConnectionHandle>) {
        let id: Arc<str> = connection.id().into();
        lock(&self.directory)
            .by_id
            .insert(id, Arc::downgrade(connection));
        self.each_hook(|h| h.opened(connection));
    }

    /// A session's user changed (called by the session layer, once the change is in place).
    pub fn user_changed(
        &self,
        connection: &Arc<dyn ConnectionHandle>,
        old: Option<&str>,
        new: Option<&str>,
    ) {
        {
            let mut directory = lock(&self.directory);
            let id: Arc<str> = connection.id().into();
            if let Some(old) = old {
                unfile(&mut directory, old, &id);
            }
            if let Some(new) = new {
                directory
                    .by_user
                    .entry(new.to_owned())
                    .or_default()
                    .insert(id);
            }
        }
        self.each_hook(|h| h.user_changed(connection, old, new));
    }

    /// A session closed (called by the session layer exactly once).
    pub fn closed(&self, connection_id: &str, user_id: Option<&str>) {
        {
            let mut directory = lock(&self.directory);
            directory.by_id.remove(connection_id);
            if let Some(user) = user_id {
                unfile(&mut directory, user, connection_id);
            }
        }
        self.each_hook(|h| h.closed(connection_id, user_id));
    }
}

fn unfile(directory: &mut Directory, user: &str, id: &str) {
    if let Some(ids) = directory.by_user.get_mut(user) {
        ids.remove(id);
        if ids.is_empty() {
            directory.by_user.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        id: String,
        user: Mutex<Option<String>>,
    }

    impl ConnectionHandle for Fake {
        fn id(&self) -> &str {
            &self.id
        }
        fn user_id(&self) -> Option<String> {
            lock(&self.user).clone()
        }
        fn client_address(&self) -> Option<IpAddr> {
            None
        }
        fn log_out(&self) {}
        fn close(&self) {}
        fn attachment(&self, _key: &'static str) -> Option<String> {
            None
        }
        fn set_attachment(&self, _key: &'static str, _value: Option<String>) {}
    }

    #[derive(Default)]
    struct Log(Mutex<Vec<String>>);

    impl ConnectionHooks for Log {
        fn opened(&self, c: &Arc<dyn ConnectionHandle>) {
            lock(&self.0).push(format!("opened {}", c.id()));
        }
        fn closed(&self, id: &str, user: Option<&str>) {
            lock(&self.0).push(format!("closed {id} {user:?}"));
        }
        fn user_changed(
            &self,
            c: &Arc<dyn ConnectionHandle>,
            old: Option<&str>,
            new: Option<&str>,
        ) {
            lock(&self.0).push(format!("user {} {old:?} -> {new:?}", c.id()));
        }
    }

    #[test]
    fn connections_are_found_by_user_until_they_close_and_hooks_see_each_step() {
        let connections = Connections::new();
        let log = Arc::new(Log::default());
        connections.add_hooks(log.clone());
        let a: Arc<dyn ConnectionHandle> = Arc::new(Fake {
            id: "a".into(),
            user: Mutex::new(None),
        });
        connections.opened(&a);
        assert!(connections.of_user("u1").is_empty());
        connections.user_changed(&a, None, Some("u1"));
        assert_eq!(connections.of_user("u1").len(), 1);
        connections.user_changed(&a, Some("u1"), Some("u2"));
        assert!(connections.of_user("u1").is_empty());
        assert_eq!(connections.of_user("u2")[0].id(), "a");
        connections.closed("a", Some("u2"));
        assert!(connections.of_user("u2").is_empty() && connections.get("a").is_none());
        assert_eq!(
            *lock(&log.0),
            vec![
                "opened a",
                "user a None -> Some(\"u1\")",
                "user a Some(\"u1\") -> Some(\"u2\")",
                "closed a Some(\"u2\")"
            ]
        );
    }
}
