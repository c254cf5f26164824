//! Push tokens: the devices that want a user's notifications, in Rocket.Chat's
//! `_raix_push_app_tokens` (`{_id, token: {apn | gcm: value}, appName, userId, enabled,
//! createdAt, updatedAt}`). A token belongs to the user who registered it last (a phone
//! signed in as someone else moves to them). Sending is a later service: this module only
//! keeps the tokens. It must not know about sessions or HTTP.

use crate::chat::call::Call;
use crate::chat::collections::PUSH_TOKENS;
use crate::engine::build::{now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::{Document, MeteorError, Value};
use crate::storage::{FindOptions, RemoveOptions, Store, UpdateOptions};
use std::sync::Arc;

/// Longest token or app name kept.
const MAX_TEXT: usize = 4096;

/// A device's token, as the app registers it.
pub struct NewToken {
    /// The app's own id for its registration (newer apps send one).
    pub id: Option<String>,
    /// `apn` or `gcm`.
    pub kind: String,
    pub value: String,
    pub app_name: String,
}

/// The Push Tokens service.
pub struct PushTokens {
    store: Arc<dyn Store>,
}

fn invalid(reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new("error-invalid-params", reason))
}

impl PushTokens {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self { store })
    }

    /// Registers (or refreshes) `token` for the caller; the stored record.
    pub async fn register(
        &self,
        call: &Call<'_>,
        token: NewToken,
    ) -> Result<Document, ServiceError> {
        let user = call.require_user()?;
        if !matches!(token.kind.as_str(), "apn" | "gcm") {
            return Err(invalid("The token type must be apn or gcm"));
        }
        if token.value.is_empty() || token.value.len() > MAX_TEXT {
            return Err(invalid("The token value is required"));
        }
        if token.app_name.is_empty() || token.app_name.len() > MAX_TEXT {
            return Err(invalid("The appName is required"));
        }
        if token
            .id
            .as_ref()
            .is_some_and(|id| id.is_empty() || id.len() > 128)
        {
            return Err(invalid("Invalid id"));
        }
        let now = now_ms();
        let path = format!("token.{}", token.kind);
        // The same device: its id when it sends one, else the token itself.
        let same = match &token.id {
            Some(id) => serde_json::json!({"_id": id}),
            None => serde_json::json!({ path.clone(): token.value }),
        };
        let ack = self
            .store
            .update(
                PUSH_TOKENS,
                selector(same.clone())?,
                update(serde_json::json!({
                    "$set": {
                        "token": {token.kind.as_str(): token.value},
                        "appName": token.app_name, "userId": user, "enabled": true,
                        "updatedAt": {"$date": now},
                    },
                    "$setOnInsert": {"createdAt": {"$date": now}},
                }))?,
                UpdateOptions {
                    upsert: true,
                    ..UpdateOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        let selector_after = match (&token.id, &ack.upserted_id) {
            (Some(_), _) => same,
            (None, Some(id)) => serde_json::json!({"_id": crate::engine::build::to_json(id)}),
            (None, None) => same,
        };
        crate::engine::build::find_one(&*self.store, PUSH_TOKENS, selector_after)
            .await?
            .ok_or_else(|| ServiceError::internal("a push token just written is missing"))
    }

    /// Forgets the caller's `token` (of either kind); whether there was one.
    pub async fn unregister(&self, call: &Call<'_>, token: &str) -> Result<bool, ServiceError> {
        let user = call.require_user()?;
        if token.is_empty() || token.len() > MAX_TEXT {
            return Err(invalid("The token is required"));
        }
        let ack = self
            .store
            .remove(
                PUSH_TOKENS,
                selector(serde_json::json!({
                    "userId": user,
                    "$or": [{"token.apn": token}, {"token.gcm": token}],
                }))?,
                RemoveOptions { multi: true },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(ack.matched > 0)
    }

    /// How many tokens `user_id` has registered.
    pub async fn count_of(&self, user_id: &str) -> Result<usize, ServiceError> {
        Ok(self
            .store
            .find(
                PUSH_TOKENS,
                FindOptions {
                    selector: selector(serde_json::json!({"userId": user_id}))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?
            .len())
    }
}

/// A token record as REST shows it.
pub fn token_view(record: &Document) -> Value {
    let mut out = Document::default();
    for k in [
        "_id",
        "token",
        "appName",
        "userId",
        "enabled",
        "createdAt",
        "updatedAt",
    ] {
        if let Some(v) = record.get(k) {
            out.insert(k.into(), v.clone());
        }
    }
    if let Some(id) = record.get("_id") {
        out.insert("id".into(), id.clone());
    }
    Value::Object(out)
}
