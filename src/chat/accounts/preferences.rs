//! A user's preferences: Rocket.Chat's `users.settings.preferences`, seen merged over the
//! defaults (`Accounts_Default_User_Preferences_*`) as clients read them at login, and
//! written one known key at a time, each of the default's type. It must not know about HTTP.

use super::Accounts;
use crate::chat::call::Call;
use crate::engine::build::now_ms;
use crate::engine::error::ServiceError;
use crate::model::{Document, MeteorError, Value};

/// Each preference with Rocket.Chat's default, as JSON text.
#[rustfmt::skip]
const DEFAULTS: &[(&str, &str)] = &[
    ("enableAutoAway", "true"),
    ("idleTimeLimit", "300"),
    ("desktopNotificationRequireInteraction", "false"),
    ("desktopNotifications", r#""all""#),
    ("pushNotifications", r#""all""#),
    ("emailNotificationMode", r#""mentions""#),
    ("unreadAlert", "true"),
    ("useEmojis", "true"),
    ("convertAsciiEmoji", "true"),
    ("autoImageLoad", "true"),
    ("saveMobileBandwidth", "true"),
    ("collapseMediaByDefault", "false"),
    ("hideUsernames", "false"),
    ("hideRoles", "false"),
    ("hideFlexTab", "false"),
    ("displayAvatars", "true"),
    ("sidebarGroupByType", "true"),
    ("sidebarViewMode", r#""medium""#),
    ("sidebarDisplayAvatar", "true"),
    ("sidebarShowUnread", "false"),
    ("sidebarSortby", r#""activity""#),
    ("sidebarShowFavorites", "true"),
    ("themeAppearence", r#""auto""#),
    ("alsoSendThreadToChannel", r#""default""#),
    ("sendOnEnter", r#""normal""#),
    ("messageViewMode", "0"),
    ("newRoomNotification", r#""door""#),
    ("newMessageNotification", r#""chime""#),
    ("muteFocusedConversations", "true"),
    ("notificationsSoundVolume", "100"),
    ("showThreadsInMainChannel", "false"),
    ("enableMessageParserEarlyAdoption", "false"),
    ("language", r#""""#),
];

fn default_of(key: &str) -> Option<Value> {
    let (_, text) = DEFAULTS.iter().find(|(k, _)| *k == key)?;
    Value::from_json(serde_json::from_str(text).ok()?).ok()
}

/// The user's own preferences (`settings.preferences`), as stored.
fn stored(user: &Document) -> Option<&Document> {
    match user.get("settings") {
        Some(Value::Object(settings)) => match settings.get("preferences") {
            Some(Value::Object(p)) => Some(p),
            _ => None,
        },
        _ => None,
    }
}

/// Every preference: the user's value where one is stored, else the default.
pub fn effective(user: &Document) -> Document {
    let mut out = Document::default();
    for (key, _) in DEFAULTS {
        if let Some(v) = default_of(key) {
            out.insert((*key).into(), v);
        }
    }
    if let Some(own) = stored(user) {
        for (k, v) in own.iter() {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn same_kind(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Bool(_), Value::Bool(_))
            | (Value::Number(_), Value::Number(_))
            | (Value::String(_), Value::String(_))
    )
}

impl Accounts {
    /// Sets some of `user_id`'s preferences: each key must be known and its value of the
    /// default's type; nothing is written when one is not.
    pub async fn set_preferences(
        &self,
        call: &Call<'_>,
        user_id: &str,
        changes: &Document,
    ) -> Result<(), ServiceError> {
        let mut set = serde_json::Map::new();
        for (key, value) in changes.iter() {
            let fits = default_of(key).is_some_and(|d| same_kind(&d, value));
            let bounded = value.as_str().is_none_or(|s| s.len() <= 64);
            if !fits || !bounded {
                return Err(ServiceError::Client(MeteorError::new(
                    "invalid-preference",
                    format!("Invalid value for preference {key}"),
                )));
            }
            // Booleans, numbers and strings: their EJSON text is plain JSON.
            let json = serde_json::from_str(&value.to_ejson_string())
                .map_err(|e| ServiceError::internal(e.to_string()))?;
            set.insert(format!("settings.preferences.{key}"), json);
        }
        if set.is_empty() {
            return Ok(());
        }
        set.insert("_updatedAt".into(), serde_json::json!({"$date": now_ms()}));
        let ack = self
            .update_user(user_id, serde_json::json!({"$set": set}))
            .await?;
        call.record_write(ack.seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_preference_wins_over_the_default_and_the_rest_are_defaults() {
        let user = crate::engine::build::doc(serde_json::json!({
            "_id": "u1", "settings": {"preferences": {"hideRoles": true}},
        }))
        .expect("a document");
        let seen = effective(&user);
        assert_eq!(seen.get("hideRoles"), Some(&Value::Bool(true)));
        assert_eq!(seen.get("useEmojis"), Some(&Value::Bool(true)));
        assert_eq!(seen.len(), DEFAULTS.len());
    }

    #[test]
    fn every_default_parses() {
        for (key, _) in DEFAULTS {
            assert!(default_of(key).is_some(), "{key}");
        }
    }
}
