//! Custom emoji: Rocket.Chat's `rocketchat_custom_emoji` (`{_id, name, aliases, extension,
//! _updatedAt}`), listed to anyone signed in (whole, or changed since a date with the
//! removals from the trash), added, changed and removed by holders of `manage-emoji`.
//!
//! The image itself is a file of the upload service; this module owns the records only. It
//! must not know about sessions or HTTP.

use crate::chat::call::Call;
use crate::chat::collections::{CUSTOM_EMOJI, TRASH};
use crate::chat::permissions::Permissions;
use crate::engine::build::{doc, now_ms, selector};
use crate::engine::error::ServiceError;
use crate::model::{Document, MeteorError, Value};
use crate::storage::{FindOptions, RemoveOptions, Store};
use std::sync::Arc;

/// Longest name or alias.
const MAX_NAME: usize = 64;
/// Most aliases one emoji has.
const MAX_ALIASES: usize = 32;

/// What a "since" read returns: Rocket.Chat's `{update, remove}`.
pub struct EmojiList {
    pub update: Vec<Document>,
    pub remove: Vec<Document>,
}

/// A new or changed emoji, as an administrator gives it.
pub struct EmojiChange {
    /// The emoji changed; none for a new one.
    pub id: Option<String>,
    pub name: String,
    pub aliases: Vec<String>,
    pub extension: String,
}

/// The Custom Emoji service.
pub struct CustomEmoji {
    store: Arc<dyn Store>,
    permissions: Arc<Permissions>,
}

fn invalid(error: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(error, reason))
}

/// An emoji name: letters, digits, `_` and `-` (Rocket.Chat's rule), after trimming colons.
fn clean_name(text: &str) -> Option<String> {
    let name = text.trim().trim_matches(':');
    let fits = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    fits.then(|| name.to_owned())
}

impl CustomEmoji {
    pub fn new(store: Arc<dyn Store>, permissions: Arc<Permissions>) -> Arc<Self> {
        Arc::new(Self { store, permissions })
    }

    async fn find(&self, filter: serde_json::Value) -> Result<Vec<Document>, ServiceError> {
        self.store
            .find(
                CUSTOM_EMOJI,
                FindOptions {
                    selector: selector(filter)?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// Every emoji, or those changed after `since` with the ones removed after it.
    pub async fn list(&self, since: Option<f64>) -> Result<EmojiList, ServiceError> {
        let Some(since) = since else {
            return Ok(EmojiList {
                update: self.find(serde_json::json!({})).await?,
                remove: Vec::new(),
            });
        };
        let update = self
            .find(serde_json::json!({"_updatedAt": {"$gt": {"$date": since}}}))
            .await?;
        let remove = crate::chat::collections::removed_since(
            &*self.store,
            CUSTOM_EMOJI,
            since,
            serde_json::json!({}),
        )
        .await?;
        Ok(EmojiList { update, remove })
    }

    /// Adds or changes an emoji; its name and aliases must be free.
    pub async fn save(&self, call: &Call<'_>, change: EmojiChange) -> Result<String, ServiceError> {
        let user = call.require_user()?;
        self.permissions.require(user, "manage-emoji", None).await?;
        let name = clean_name(&change.name)
            .ok_or_else(|| invalid("error-input-is-not-a-valid-field", "Invalid name"))?;
        let mut aliases = Vec::new();
        for alias in change.aliases.iter().take(MAX_ALIASES + 1) {
            let alias = clean_name(alias)
                .ok_or_else(|| invalid("error-input-is-not-a-valid-field", "Invalid alias"))?;
            if alias != name && !aliases.contains(&alias) {
                aliases.push(alias);
            }
        }
        if aliases.len() > MAX_ALIASES {
            return Err(invalid(
                "error-input-is-not-a-valid-field",
                "Too many aliases",
            ));
        }
        let extension = change.extension.trim().to_ascii_lowercase();
        if !matches!(extension.as_str(), "png" | "gif" | "jpg" | "jpeg" | "webp") {
            return Err(invalid(
                "error-input-is-not-a-valid-field",
                "Invalid extension",
            ));
        }
        let mut taken: Vec<String> = vec![name.clone()];
        taken.extend(aliases.iter().cloned());
        let clashes = self
            .find(
                serde_json::json!({"$or": [{"name": {"$in": taken}}, {"aliases": {"$in": taken}}]}),
            )
            .await?;
        if clashes
            .iter()
            .any(|d| d.get("_id").and_then(Value::as_str) != change.id.as_deref())
        {
            return Err(invalid(
                "Custom_Emoji_Error_Name_Or_Alias_Already_In_Use",
                "The custom emoji or one of its aliases is already in use",
            ));
        }
        let now = now_ms();
        let fields = serde_json::json!({
            "name": name, "aliases": aliases, "extension": extension,
            "_updatedAt": {"$date": now},
        });
        let id = match &change.id {
            Some(id) => {
                let ack = self
                    .store
                    .update(
                        CUSTOM_EMOJI,
                        selector(serde_json::json!({"_id": id}))?,
                        crate::engine::build::update(serde_json::json!({"$set": fields}))?,
                        Default::default(),
                    )
                    .await
                    .map_err(|e| ServiceError::from_store(&e))?;
                if ack.matched == 0 {
                    return Err(invalid("Custom_Emoji_Error_Invalid_Emoji", "Invalid emoji"));
                }
                call.record_write(ack.seq);
                id.clone()
            }
            None => {
                let id = crate::model::random::random_id();
                let mut record = doc(fields)?;
                record.insert("_id".into(), Value::String(id.clone()));
                let ack = self
                    .store
                    .insert(CUSTOM_EMOJI, record)
                    .await
                    .map_err(|e| ServiceError::from_store(&e))?;
                call.record_write(ack.seq);
                id
            }
        };
        Ok(id)
    }

    /// Removes an emoji (kept in the trash so "since" readers learn of it).
    pub async fn delete(&self, call: &Call<'_>, id: &str) -> Result<(), ServiceError> {
        let user = call.require_user()?;
        self.permissions.require(user, "manage-emoji", None).await?;
        let Some(mut found) = self.find(serde_json::json!({"_id": id})).await?.pop() else {
            return Err(invalid("Custom_Emoji_Error_Invalid_Emoji", "Invalid emoji"));
        };
        let ack = self
            .store
            .remove(
                CUSTOM_EMOJI,
                selector(serde_json::json!({"_id": id}))?,
                RemoveOptions { multi: false },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        found.insert("__collection__".into(), Value::from(CUSTOM_EMOJI));
        found.insert("_deletedAt".into(), Value::Date(now_ms()));
        let ack = self
            .store
            .insert(TRASH, found)
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_of_colons_and_refused_with_anything_but_word_characters() {
        assert_eq!(
            clean_name(":party_parrot:").as_deref(),
            Some("party_parrot")
        );
        assert_eq!(clean_name("a-b").as_deref(), Some("a-b"));
        assert_eq!(clean_name("a b"), None);
        assert_eq!(clean_name("../x"), None);
        assert_eq!(clean_name(""), None);
        assert_eq!(clean_name(&"x".repeat(65)), None);
    }
}
