//! Rocket.Chat's routes on the caller's own account: `users.getPreferences`,
//! `users.setPreferences`. Each acts on the caller alone: an id in the body naming someone
//! else is refused, not followed.

use super::chat::{route, Chat, ChatRoute, Reply};
use super::json::to_json;
use super::RestResponse;
use crate::model::Value;

/// The routes on the caller's own account.
pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Get, "users.getPreferences", get_preferences),
    route!(Post, "users.setPreferences", set_preferences),
];

/// A name as one path segment: letters, digits and `-._~` as they are, the rest
/// percent-encoded.
pub(super) fn path_part(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

async fn get_preferences(c: &Chat<'_>) -> Reply {
    let preferences = crate::chat::accounts::preferences::effective(&c.caller.user);
    Ok(RestResponse::success(
        serde_json::json!({"preferences": to_json(&Value::Object(preferences))}),
    ))
}

/// `{userId?, data: {...}}`: `userId`, when given, must be the caller's own.
async fn set_preferences(c: &Chat<'_>) -> Reply {
    if c.field("userId").is_some_and(|id| id != c.caller.user_id) {
        return Ok(RestResponse::failure(
            403,
            "Editing another user's preferences is not allowed",
            Some("error-action-not-allowed"),
        ));
    }
    let Some(Value::Object(data)) = c.fields.get("data") else {
        return Ok(super::chat::params_missing("data"));
    };
    c.services
        .accounts
        .set_preferences(&c.acting(), &c.caller.user_id, data)
        .await?;
    let user = c
        .services
        .accounts
        .find_user(&crate::chat::accounts::UserSelector::Id(
            c.caller.user_id.clone(),
        ))
        .await?
        .unwrap_or_else(|| c.caller.user.clone());
    let site = c
        .services
        .settings
        .value("Site_Url")
        .and_then(|v| v.as_str().map(str::to_owned));
    Ok(RestResponse::success(serde_json::json!({
        "user": super::accounts::own_view(&user, site.as_deref()),
    })))
}
