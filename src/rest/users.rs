//! Rocket.Chat's routes on the caller's own account: `users.getPreferences`,
//! `users.setPreferences`, `users.updateOwnBasicInfo`, `users.resetAvatar`,
//! `users.getAvatarSuggestion`. Each acts on the caller alone: an id in the body naming
//! someone else is refused, not followed.

use super::chat::{route, Chat, ChatRoute, Reply};
use super::json::to_json;
use super::RestResponse;
use crate::model::Value;

/// The routes on the caller's own account.
pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Get, "users.getPreferences", get_preferences),
    route!(Post, "users.setPreferences", set_preferences),
    route!(Post, "users.updateOwnBasicInfo", update_own_basic_info),
    route!(Post, "users.resetAvatar", reset_avatar),
    route!(Get, "users.getAvatarSuggestion", avatar_suggestion),
];

/// A name as one path segment: letters, digits and `-._~` as they are, the rest
/// percent-encoded.
pub(super) fn path_part(name: &str) -> String {
    crate::chat::percent_encoded(name)
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
    let user = own_user(c).await?;
    Ok(RestResponse::success(serde_json::json!({"user": user})))
}

/// `{data: {name?, username?, email?, statusText?, nickname?, bio?, currentPassword?
/// (its SHA-256, as the apps send it), newPassword?}}`.
async fn update_own_basic_info(c: &Chat<'_>) -> Reply {
    let Some(Value::Object(data)) = c.fields.get("data") else {
        return Ok(super::chat::params_missing("data"));
    };
    let text = |k: &str| match data.get(k) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(_) => Err(crate::engine::ServiceError::match_failed()),
    };
    let changes = crate::chat::accounts::profile::OwnChanges {
        name: text("name")?,
        username: text("username")?,
        email: text("email")?,
        status_text: text("statusText")?,
        nickname: text("nickname")?,
        bio: text("bio")?,
        new_password: text("newPassword")?
            .filter(|p| !p.is_empty())
            .map(|p| crate::chat::accounts::secrets::password_digest(&p)),
        current_password: text("currentPassword")?.map(|p| p.to_ascii_lowercase()),
    };
    c.services.accounts.update_own(&c.acting(), changes).await?;
    let user = own_user(c).await?;
    Ok(RestResponse::success(serde_json::json!({"user": user})))
}

/// The caller's own view as stored now.
async fn own_user(c: &Chat<'_>) -> Result<serde_json::Value, crate::engine::ServiceError> {
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
    Ok(super::accounts::own_view(&user, site.as_deref()))
}

/// The caller's avatar back to the initials.
async fn reset_avatar(c: &Chat<'_>) -> Reply {
    if c.field("userId").is_some_and(|id| id != c.caller.user_id) {
        return Ok(RestResponse::failure(
            403,
            "Not allowed",
            Some("error-not-allowed"),
        ));
    }
    c.services.accounts.reset_avatar(&c.acting()).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// Suggestions come from sign-in services (none configured).
async fn avatar_suggestion(_c: &Chat<'_>) -> Reply {
    Ok(RestResponse::success(
        serde_json::json!({"suggestions": {}}),
    ))
}
