//! Every collection the chat services read or write, named once, and the trash that keeps
//! what was removed (Rocket.Chat's `rocketchat_trash`).
//!
//! Owns the names only (and reading the trash back); which service writes what is said in
//! each service's module header.

use crate::engine::build::selector;
use crate::engine::ServiceError;
use crate::model::Document;

/// Rocket.Chat's users (Meteor's accounts collection).
pub const USERS: &str = "users";
/// comet's unique claims (a name taken by a user or a room, case-folded).
pub const CLAIMS: &str = "comet_unique_claims";
/// Rooms and their members' subscriptions.
pub const ROOMS: &str = "rocketchat_room";
pub const SUBSCRIPTIONS: &str = "rocketchat_subscription";
/// Messages.
pub const MESSAGES: &str = "rocketchat_message";
/// Teams and their members.
pub const TEAMS: &str = "rocketchat_team";
pub const TEAM_MEMBERS: &str = "rocketchat_team_member";
/// Where Rocket.Chat moves removed documents, each with `__collection__` and `_deletedAt`.
pub const TRASH: &str = "rocketchat_trash";
/// Settings.
pub const SETTINGS: &str = "rocketchat_settings";
/// Roles and permissions.
pub const ROLES: &str = "rocketchat_roles";
pub const PERMISSIONS: &str = "rocketchat_permissions";
/// Connections of each user, per instance (Rocket.Chat's presence records).
pub const USERS_SESSIONS: &str = "usersSessions";
/// The running instances.
pub const INSTANCES: &str = "instances";
/// Custom emoji.
pub const CUSTOM_EMOJI: &str = "rocketchat_custom_emoji";
/// Devices' push tokens (the collection Rocket.Chat's push service keeps).
pub const PUSH_TOKENS: &str = "_raix_push_app_tokens";
/// Users' own avatars (until the upload service stores files).
pub const AVATARS: &str = "comet_avatars";
/// Messages reported to the administrators.
pub const REPORTS: &str = "rocketchat_reports";
/// Uploaded files' records (their bytes are in the file storage).
pub const UPLOADS: &str = "rocketchat_uploads";
/// Installed server plugins: enabled or not, their configuration, why one was disabled.
pub const PLUGINS: &str = "comet_plugins";
/// Each plugin's key-value store (`_id`: `<plugin id>/<key>`).
pub const PLUGIN_KV: &str = "comet_plugin_kv";

/// The documents of `collection` removed after `since` (ms), as `{_id, _deletedAt}`, from
/// the trash; `also` narrows them further (a user's own subscriptions, say).
pub async fn removed_since(
    store: &dyn crate::storage::Store,
    collection: &str,
    since: f64,
    also: serde_json::Value,
) -> Result<Vec<Document>, ServiceError> {
    let mut filter = serde_json::json!({
        "__collection__": collection, "_deletedAt": {"$gt": {"$date": since}},
    });
    if let (Some(filter), serde_json::Value::Object(extra)) = (filter.as_object_mut(), also) {
        filter.extend(extra);
    }
    let removed = store
        .find(
            TRASH,
            crate::storage::FindOptions {
                selector: selector(filter)?,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| ServiceError::from_store(&e))?;
    Ok(removed
        .into_iter()
        .map(|d| {
            let mut out = Document::default();
            for k in ["_id", "_deletedAt"] {
                if let Some(v) = d.get(k) {
                    out.insert(k.into(), v.clone());
                }
            }
            out
        })
        .collect())
}

/// Failed logins counted per user and per address, shared by every instance (comet's own).
pub const LOGIN_FAILURES: &str = "comet_login_failures";

/// Who holds each deployment-wide job, until when (comet's own).
pub const LEASES: &str = "comet_leases";

/// Each room's last message time, claimed by whichever instance stamps a message, so times
/// stay unique in a room across instances (comet's own).
pub const ROOM_CLOCKS: &str = "comet_room_clocks";
