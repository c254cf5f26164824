//! Which user holds a login token, and since when, kept in memory: from the `users`
//! collection's change events (whoever wrote them) and at once from this process's own
//! token writes. A resume login is answered from here without reading the store, and no
//! search of every user's token array is made (an array field no embedded-store index can
//! serve, and the path every client takes on each reconnect).
//!
//! A token is honoured only while the index holds it: a token this process removed leaves at
//! once, and change events older than this process's last write for a user are skipped, so
//! a late event can never bring a revoked token back. A token the index does not know (one
//! another writer stored a moment ago) is looked for in the store, one such search at a
//! time, so a flood of unknown tokens cannot multiply full scans.

use super::str_at;

use crate::chat::collections::USERS;
use crate::engine::cached::CachedCollection;
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// What the index knows of one token.
#[derive(Clone, Debug, PartialEq)]
pub struct KnownToken {
    pub user_id: String,
    /// When the token was issued (ms since the epoch).
    pub when: f64,
    /// The user's `active` flag is not `false`.
    pub active: bool,
}

struct Held {
    hashes: Vec<Box<str>>,
    active: bool,
    /// The store position of this process's last token write for the user: change events
    /// at or before it are already reflected here.
    written_at: u64,
}

#[derive(Default)]
struct Maps {
    /// Token hash → (user id, issued at).
    owner: HashMap<Box<str>, (Box<str>, f64)>,
    /// User id → that user's token hashes, to drop the ones a change removed.
    held: HashMap<Box<str>, Held>,
}

impl Maps {
    /// Replaces what is known of `id` with `tokens` (hash, issued at); returns the hashes
    /// it held that `tokens` no longer has (revoked).
    fn set_user(
        &mut self,
        id: &str,
        tokens: Vec<(Box<str>, f64)>,
        active: bool,
        written_at: u64,
    ) -> Vec<Box<str>> {
        let mut revoked = Vec::new();
        if let Some(old) = self.held.remove(id) {
            for hash in old.hashes {
                if self
                    .owner
                    .get(&hash)
                    .is_some_and(|(owner, _)| &**owner == id)
                {
                    self.owner.remove(&hash);
                }
                if !tokens.iter().any(|(kept, _)| *kept == hash) {
                    revoked.push(hash);
                }
            }
        }
        if tokens.is_empty() && written_at == 0 {
            return revoked;
        }
        let id: Box<str> = Box::from(id);
        let mut hashes = Vec::with_capacity(tokens.len());
        for (hash, when) in tokens {
            self.owner.insert(hash.clone(), (id.clone(), when));
            hashes.push(hash);
        }
        self.held.insert(
            id,
            Held {
                hashes,
                active,
                written_at,
            },
        );
        revoked
    }
}

/// Told of a user's tokens that a change removed, whoever wrote it (another instance, a
/// script): the sessions logged in with them are logged out, as Meteor's accounts do.
pub type Revoked = Arc<dyn Fn(&str, &[Box<str>]) + Send + Sync>;

/// Token hashes to their users.
pub struct TokenIndex {
    store: Arc<dyn Store>,
    maps: RwLock<Maps>,
    /// Serializes the store searches for tokens the index does not know.
    search: tokio::sync::Mutex<()>,
    revoked: std::sync::OnceLock<Revoked>,
}

/// The resume tokens of `user`: (hash, issued at).
fn tokens_of(user: &Document) -> Vec<(Box<str>, f64)> {
    match str_at(user, &["services", "resume", "loginTokens"]) {
        Some(Value::Array(tokens)) => tokens
            .iter()
            .filter_map(|t| {
                let t = t.as_object()?;
                let hash = t.get("hashedToken")?.as_str()?;
                let when = match t.get("when") {
                    Some(Value::Date(ms)) => *ms,
                    _ => 0.0,
                };
                Some((Box::from(hash), when))
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn is_active(user: &Document) -> bool {
    user.get("active") != Some(&Value::Bool(false))
}

impl TokenIndex {
    /// Reads every user's tokens and follows the changes from then on.
    pub async fn start(
        store: Arc<dyn Store>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let index = Arc::new(Self {
            store: store.clone(),
            maps: RwLock::new(Maps::default()),
            search: tokio::sync::Mutex::new(()),
            revoked: std::sync::OnceLock::new(),
        });
        // Follow first, so no token written between the read and the subscription is lost.
        crate::engine::cached::watch(&index, &*store, follower);
        index.reload().await?;
        Ok(index)
    }

    /// Whom to tell of tokens removed by a change (set once).
    pub fn on_revoked(&self, told: Revoked) {
        let _ = self.revoked.set(told);
    }

    /// Tells of `hashes` that a change of `user_id` no longer has, once the store confirms
    /// they are gone: an event can be older than what this index already read (a token
    /// found by a search before the event of its user's creation arrived), and only the
    /// user's current document may log a session out.
    fn tell_revoked(&self, user_id: &str, hashes: Vec<Box<str>>) {
        let (Some(told), false) = (self.revoked.get().cloned(), hashes.is_empty()) else {
            return;
        };
        let (store, user_id) = (self.store.clone(), user_id.to_owned());
        let confirm = async move {
            let current = crate::engine::build::find_one(
                &*store,
                USERS,
                serde_json::json!({"_id": &user_id}),
            )
            .await;
            let kept: Vec<Box<str>> = match current {
                Ok(Some(user)) => tokens_of(&user).into_iter().map(|(h, _)| h).collect(),
                Ok(None) => Vec::new(),
                Err(err) => {
                    tracing::warn!(cause = %err, "a removed token could not be confirmed");
                    return;
                }
            };
            let gone: Vec<Box<str>> = hashes.into_iter().filter(|h| !kept.contains(h)).collect();
            if !gone.is_empty() {
                told(&user_id, &gone);
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(confirm);
            }
            Err(_) => tracing::warn!("no runtime to confirm a removed token on"),
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Maps> {
        self.maps.write().unwrap_or_else(|p| p.into_inner())
    }

    /// What the index knows of the token whose hash is `hash`.
    pub fn lookup(&self, hash: &str) -> Option<KnownToken> {
        let maps = self.maps.read().unwrap_or_else(|p| p.into_inner());
        let (user, when) = maps.owner.get(hash)?;
        let active = maps.held.get(user).is_none_or(|h| h.active);
        Some(KnownToken {
            user_id: user.to_string(),
            when: *when,
            active,
        })
    }

    /// Records a token this process just stored (at store position `seq`).
    pub fn added(&self, user_id: &str, hash: &str, when: f64, seq: u64) {
        let mut maps = self.write();
        let id: Box<str> = Box::from(user_id);
        maps.owner.insert(Box::from(hash), (id.clone(), when));
        let held = maps.held.entry(id).or_insert(Held {
            hashes: Vec::new(),
            active: true,
            written_at: 0,
        });
        held.hashes.push(Box::from(hash));
        held.written_at = held.written_at.max(seq);
    }

    /// Records tokens this process just removed (at store position `seq`): the one with
    /// `hash`, or every one but it when `all_but`.
    pub fn removed(&self, user_id: &str, hash: &str, all_but: bool, seq: u64) {
        let mut maps = self.write();
        let Some(held) = maps.held.get_mut(user_id) else {
            return;
        };
        held.written_at = held.written_at.max(seq);
        let (gone, kept): (Vec<Box<str>>, Vec<Box<str>>) = std::mem::take(&mut held.hashes)
            .into_iter()
            .partition(|h| (&**h == hash) != all_but);
        held.hashes = kept;
        for h in gone {
            maps.owner.remove(&h);
        }
    }

    /// The user holding `hash` when the index does not know it: a search of the store,
    /// one at a time.
    pub async fn search(&self, hash: &str) -> Result<Option<Document>, ServiceError> {
        let _one_at_a_time = self.search.lock().await;
        let selector =
            super::selector(serde_json::json!({"services.resume.loginTokens.hashedToken": hash}))?;
        let mut found = self
            .store
            .find(
                USERS,
                FindOptions {
                    selector,
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let user = found.pop();
        if let Some(user) = &user {
            // Read just now: newer than anything the index holds for this user.
            self.put(user.clone());
        }
        Ok(user)
    }

    /// How many token hashes the index holds.
    pub fn len(&self) -> usize {
        self.maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .owner
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl CachedCollection for TokenIndex {
    fn collection(&self) -> &'static str {
        USERS
    }

    fn put(&self, doc: Document) {
        if let Some(Value::String(id)) = doc.get("_id") {
            let revoked = {
                let mut maps = self.write();
                let written_at = maps.held.get(id.as_str()).map_or(0, |h| h.written_at);
                maps.set_user(id, tokens_of(&doc), is_active(&doc), written_at)
            };
            self.tell_revoked(id, revoked);
        }
    }

    fn put_at(&self, doc: Document, seq: u64) {
        let Some(Value::String(id)) = doc.get("_id") else {
            return;
        };
        let revoked = {
            let mut maps = self.write();
            let written_at = maps.held.get(id.as_str()).map_or(0, |h| h.written_at);
            if seq <= written_at {
                // Already reflected: this process wrote the user's tokens at or after it.
                return;
            }
            maps.set_user(id, tokens_of(&doc), is_active(&doc), written_at)
        };
        self.tell_revoked(id, revoked);
    }

    fn forget(&self, id: &str) {
        let revoked = self.write().set_user(id, Vec::new(), true, 0);
        self.tell_revoked(id, revoked);
    }

    fn reload(&self) -> crate::engine::cached::ReloadFuture<'_> {
        Box::pin(async move {
            let users = crate::engine::cached::read_all(
                &*self.store,
                USERS,
                &["services.resume.loginTokens", "active"],
            )
            .await?;
            let mut fresh = Maps::default();
            for user in users {
                if let Some(Value::String(id)) = user.get("_id") {
                    let _ = fresh.set_user(id, tokens_of(&user), is_active(&user), 0);
                }
            }
            *self.write() = fresh;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(id: &str, tokens: &[(&str, f64)], active: bool) -> Document {
        let tokens: Vec<serde_json::Value> = tokens
            .iter()
            .map(|(h, w)| serde_json::json!({"hashedToken": h, "when": {"$date": w}}))
            .collect();
        super::super::doc(serde_json::json!({
            "_id": id, "active": active, "services": {"resume": {"loginTokens": tokens}},
        }))
        .unwrap()
    }

    fn index() -> TokenIndex {
        let dir = std::env::temp_dir().join(format!(
            "comet-tokens-{}",
            crate::model::random::random_id()
        ));
        let store = crate::storage::embedded::EmbeddedStore::open(&dir).unwrap();
        TokenIndex {
            store,
            maps: RwLock::new(Maps::default()),
            search: tokio::sync::Mutex::new(()),
            revoked: std::sync::OnceLock::new(),
        }
    }

    #[tokio::test]
    async fn a_token_another_writer_removed_is_told_once_and_one_written_here_is_not() {
        let index = index();
        let told = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let into = told.clone();
        index.on_revoked(Arc::new(move |uid, hashes| {
            for h in hashes {
                into.lock().unwrap().push(format!("{uid}:{h}"));
            }
        }));
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(150));
        // The store holds `u` with `b` only, and `v` with `k`.
        for (id, tokens) in [("u", vec![("b", 2.0)]), ("v", vec![("k", 1.0)])] {
            index
                .store
                .insert(USERS, user(id, &tokens, true))
                .await
                .unwrap();
        }
        index.put_at(user("u", &[("a", 1.0), ("b", 2.0)], true), 5);
        // Another instance removed `a` (logoutOtherClients there).
        index.put_at(user("u", &[("b", 2.0)], true), 6);
        settle().await;
        assert_eq!(*told.lock().unwrap(), ["u:a"]);
        // A late event (older than what a search read) shows `v` without `k`; the store
        // still has it, so nobody is logged out.
        index.put(user("v", &[("k", 1.0)], true));
        index.put_at(user("v", &[], true), 7);
        settle().await;
        assert_eq!(*told.lock().unwrap(), ["u:a"]);
        // This process removed `b` itself (and logged its sessions out then): the late
        // event of its own write tells nothing again.
        index.removed("u", "b", false, 8);
        index.put_at(user("u", &[], true), 8);
        // A deleted user's remaining tokens are all revoked.
        index.put_at(user("w", &[("c", 1.0)], true), 9);
        index.forget("w");
        settle().await;
        assert_eq!(*told.lock().unwrap(), ["u:a", "w:c"]);
    }

    #[test]
    fn a_late_event_never_brings_back_a_token_removed_here() {
        let index = index();
        index.put_at(user("u", &[("a", 1.0)], true), 5);
        index.added("u", "b", 2.0, 7);
        assert_eq!(index.lookup("b").unwrap().when, 2.0);
        index.removed("u", "a", false, 8);
        assert!(index.lookup("a").is_none());
        // The event of the write that added "b" (seq 7) still shows "a": skipped.
        index.put_at(user("u", &[("a", 1.0), ("b", 2.0)], true), 7);
        assert!(index.lookup("a").is_none(), "revoked stays revoked");
        // A later change by another writer counts.
        index.put_at(user("u", &[("b", 2.0), ("c", 3.0)], false), 9);
        assert_eq!(
            index.lookup("c"),
            Some(KnownToken {
                user_id: "u".into(),
                when: 3.0,
                active: false
            })
        );
        index.removed("u", "c", true, 10);
        assert!(index.lookup("b").is_none() && index.lookup("c").is_some());
        index.forget("u");
        assert!(index.is_empty());
    }
}
