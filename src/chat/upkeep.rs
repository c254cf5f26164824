//! The deployment's upkeep, run by one instance at a time under the `upkeep` lease: login
//! tokens past their lifetime, deleted messages' records in the trash past
//! [`TRASH_KEPT_DAYS`], and `rooms.media` uploads never confirmed within their day.
//!
//! Owns what each round removes and its log line. It must not decide who runs it (the
//! lease does) and never touches what a client can still use. The embedded store's change
//! log needs no round: it is trimmed as it is written, by whichever process writes.

use crate::chat::accounts::Accounts;
use crate::chat::collections::TRASH;
use crate::chat::leases::Leases;
use crate::chat::uploads::Uploads;
use crate::engine::build::{now_ms, selector};
use crate::storage::{RemoveOptions, Store};
use std::sync::Arc;
use std::time::Duration;

/// The lease the upkeep runs under.
pub const UPKEEP_LEASE: &str = "upkeep";

/// How long a deleted message's record stays in the trash, for clients that sync
/// deletions (`messages/get`, `loadMissedMessages`) after being away.
pub const TRASH_KEPT_DAYS: f64 = 90.0;

/// What one round of upkeep works on.
pub struct Upkeep {
    pub store: Arc<dyn Store>,
    pub accounts: Arc<Accounts>,
    pub uploads: Arc<Uploads>,
}

impl Upkeep {
    /// Runs every `every` on whichever instance holds the upkeep lease.
    pub fn start(self, leases: &Arc<Leases>, every: Duration) {
        let upkeep = Arc::new(self);
        leases.every(
            UPKEEP_LEASE,
            every,
            Arc::new(move || {
                let upkeep = upkeep.clone();
                Box::pin(async move { upkeep.round().await })
            }),
        );
    }

    /// One round; what cannot be done now is logged and tried at the next.
    pub async fn round(&self) {
        let now = now_ms();
        let tokens = self.accounts.remove_expired_tokens().await;
        let trash = async {
            let cutoff = now - TRASH_KEPT_DAYS * 24.0 * 3600.0 * 1000.0;
            self.store
                .remove(
                    TRASH,
                    selector(serde_json::json!({"_deletedAt": {"$lt": {"$date": cutoff}}}))?,
                    RemoveOptions { multi: true },
                )
                .await
                .map_err(|e| crate::engine::error::ServiceError::from_store(&e))
        }
        .await;
        self.uploads.remove_expired(now).await;
        match (tokens, trash) {
            (Ok(users), Ok(trash)) => tracing::info!(
                users_with_expired_tokens = users,
                trash_removed = trash.modified,
                "upkeep done"
            ),
            (tokens, trash) => tracing::warn!(
                tokens = ?tokens.err().map(|e| e.to_string()),
                trash = ?trash.err().map(|e| e.to_string()),
                "upkeep could not finish; it runs again at the next round"
            ),
        }
    }
}
