//! Which user holds a login token, kept in memory from the `users` collection's change
//! events: a resume login finds its user by primary key instead of searching every user's
//! token array (an array field no embedded-store index can serve, and the path every client
//! takes on each reconnect).
//!
//! The index is a hint, never the authority: the caller reads the user it names and checks
//! the token is still in the document. A token too new for the index (written a moment ago
//! by another writer whose change has not arrived) is looked for in the store, one such
//! search at a time, so a flood of unknown tokens cannot multiply full scans.

use super::{str_at, USERS};
use crate::model::{Document, Value};
use crate::services::cached::CachedCollection;
use crate::services::error::ServiceError;
use crate::services::registry::BoxFuture;
use crate::storage::{FindOptions, Store};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

#[derive(Default)]
struct Maps {
    /// Token hash → user id.
    owner: HashMap<Box<str>, Box<str>>,
    /// User id → that user's token hashes, to drop the ones a change removed.
    held: HashMap<Box<str>, Vec<Box<str>>>,
}

/// Token hashes to user ids.
pub struct TokenIndex {
    store: Arc<dyn Store>,
    maps: RwLock<Maps>,
    /// Serializes the store searches for tokens the index does not know.
    search: tokio::sync::Mutex<()>,
}

/// The `hashedToken`s of `user`'s resume tokens.
fn hashes_of(user: &Document) -> Vec<Box<str>> {
    match str_at(user, &["services", "resume", "loginTokens"]) {
        Some(Value::Array(tokens)) => tokens
            .iter()
            .filter_map(|t| t.as_object()?.get("hashedToken")?.as_str().map(Box::from))
            .collect(),
        _ => Vec::new(),
    }
}

impl TokenIndex {
    /// Reads every user's tokens and follows the changes from then on.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<Self>, ServiceError> {
        let index = Arc::new(Self {
            store: store.clone(),
            maps: RwLock::new(Maps::default()),
            search: tokio::sync::Mutex::new(()),
        });
        // Follow first, so no token written between the read and the subscription is lost.
        crate::services::cached::watch(&index, &*store);
        index.clone().reload().await?;
        Ok(index)
    }

    /// The user holding the token whose hash is `hash`, as far as the index knows.
    pub fn owner(&self, hash: &str) -> Option<String> {
        self.maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .owner
            .get(hash)
            .map(|id| id.to_string())
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
            self.put(user.clone());
        }
        Ok(user)
    }

    /// How many token hashes the index holds (for tests and metrics).
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

    fn set_user(&self, id: &str, hashes: Vec<Box<str>>) {
        let mut maps = self.maps.write().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = maps.held.remove(id) {
            for hash in old {
                if maps.owner.get(&hash).is_some_and(|owner| &**owner == id) {
                    maps.owner.remove(&hash);
                }
            }
        }
        if hashes.is_empty() {
            return;
        }
        let id: Box<str> = Box::from(id);
        for hash in &hashes {
            maps.owner.insert(hash.clone(), id.clone());
        }
        maps.held.insert(id, hashes);
    }
}

impl CachedCollection for TokenIndex {
    fn collection(&self) -> &'static str {
        USERS
    }

    fn put(&self, doc: Document) {
        if let Some(Value::String(id)) = doc.get("_id") {
            self.set_user(id, hashes_of(&doc));
        }
    }

    fn forget(&self, id: &str) {
        self.set_user(id, Vec::new());
    }

    fn reload(self: Arc<Self>) -> BoxFuture<Result<(), ServiceError>> {
        Box::pin(async move {
            let projection = crate::model::query::Projection::parse(&super::doc(
                serde_json::json!({"services.resume.loginTokens.hashedToken": 1}),
            )?)
            .map_err(|e| ServiceError::internal(e.0))?;
            let users = self
                .store
                .find(
                    USERS,
                    FindOptions {
                        projection,
                        ..FindOptions::default()
                    },
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
            let mut fresh = Maps::default();
            for user in users {
                let (Some(Value::String(id)), hashes) = (user.get("_id"), hashes_of(&user)) else {
                    continue;
                };
                if hashes.is_empty() {
                    continue;
                }
                let id: Box<str> = Box::from(id.as_str());
                for hash in &hashes {
                    fresh.owner.insert(hash.clone(), id.clone());
                }
                fresh.held.insert(id, hashes);
            }
            *self.maps.write().unwrap_or_else(|p| p.into_inner()) = fresh;
            Ok(())
        })
    }
}
