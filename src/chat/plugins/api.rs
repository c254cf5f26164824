//! The API back into comet: what a plugin may call, each call answered from the chat
//! services' typed API as the plugin's bot user (or, for messages, as a user the plugin
//! names), so every write passes the same checks and hook points as a client's, and every
//! call is rate-limited.
//!
//! Owns the method table, reading each call's parameters as values (a parameter never
//! becomes a selector), and the shapes plugins read: user documents without their
//! `services`, settings without the secret ones. The plugin's identity comes from the
//! process that called, never from the call, so a plugin reaches only its own keys,
//! configuration and jobs. It must not know about processes or frames.

use super::figures::Figure;
use super::wire::{codes, RpcError};
use super::{Plugin, Plugins};
use crate::chat::call::Call;
use crate::chat::messages::Outgoing;
use crate::chat::records::RoomKind;
use crate::chat::rooms::NewRoom;
use crate::engine::build::to_json;
use crate::engine::bus::BusEvent;
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use serde_json::{json, Value as Json};
use std::sync::Arc;
use std::time::Duration;

/// Calls a plugin may make a second, and at once.
pub const CALLS_PER_SECOND: f64 = 200.0;
pub const BURST: f64 = 400.0;
/// Shortest interval of a scheduled job.
const MIN_JOB_INTERVAL: Duration = Duration::from_secs(1);
/// Most jobs a plugin schedules.
const MAX_JOBS: usize = 32;

/// The fields of a user a plugin reads (never `services`: password hashes, tokens).
const USER_FIELDS: &[&str] = &[
    "_id",
    "username",
    "name",
    "roles",
    "type",
    "active",
    "status",
    "statusText",
    "utcOffset",
    "createdAt",
    "_updatedAt",
    "emails",
    "customFields",
];

/// A user document as plugins see it.
pub fn user_view(user: &Document) -> Json {
    let mut out = Document::default();
    for field in USER_FIELDS {
        if let Some(value) = user.get(*field) {
            out.insert((*field).into(), value.clone());
        }
    }
    to_json(&Value::Object(out))
}

/// A stored document as plugins see it (EJSON: dates as `{"$date": ms}`).
pub fn doc_view(doc: &Document) -> Json {
    to_json(&Value::Object(doc.clone()))
}

fn invalid(reason: impl Into<String>) -> RpcError {
    RpcError::new(codes::INVALID_PARAMS, reason)
}

/// A service's refusal as the plugin reads it: Rocket.Chat's code in `data.error`.
fn refused(err: ServiceError) -> RpcError {
    if let ServiceError::Internal(cause) = &err {
        tracing::error!(%cause, "a plugin's call failed");
    }
    let shown = err.client_view();
    let code = shown.error.to_string();
    let reason = shown.reason.clone().unwrap_or_else(|| code.clone());
    RpcError {
        code: codes::REFUSED,
        message: reason.clone(),
        data: Some(json!({"error": code, "reason": reason})),
    }
}

/// The parameters of one call.
struct Params(serde_json::Map<String, Json>);

impl Params {
    fn of(params: Json) -> Result<Self, RpcError> {
        match params {
            Json::Object(map) => Ok(Self(map)),
            Json::Null => Ok(Self(Default::default())),
            _ => Err(invalid("params must be an object")),
        }
    }

    /// A required string of at most `max` bytes.
    fn text(&self, key: &str, max: usize) -> Result<String, RpcError> {
        self.maybe_text(key, max)?
            .ok_or_else(|| invalid(format!("{key} is required")))
    }

    fn maybe_text(&self, key: &str, max: usize) -> Result<Option<String>, RpcError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) if s.len() <= max => Ok(Some(s.clone())),
            Some(Json::String(_)) => Err(invalid(format!("{key} is over {max} bytes"))),
            Some(_) => Err(invalid(format!("{key} must be a string"))),
        }
    }

    fn number(&self, key: &str) -> Result<Option<u64>, RpcError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(n) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{key} must be a whole number"))),
        }
    }

    fn flag(&self, key: &str) -> Result<bool, RpcError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(false),
            Some(Json::Bool(b)) => Ok(*b),
            Some(_) => Err(invalid(format!("{key} must be true or false"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, RpcError> {
        match self.0.get(key) {
            None | Some(Json::Null) => Ok(Vec::new()),
            Some(Json::Array(items)) if items.len() <= 1000 => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .filter(|s| s.len() <= 256)
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(format!("{key} must hold names")))
                })
                .collect(),
            Some(_) => Err(invalid(format!("{key} must be a list of names"))),
        }
    }

    fn value(&self, key: &str) -> Json {
        self.0.get(key).cloned().unwrap_or(Json::Null)
    }
}

/// Longest id, name or key a call names.
const MAX_NAME: usize = 256;
/// Longest message text.
const MAX_TEXT: usize = 64 * 1024;

/// Logs a plugin's `log` call at its level.
pub fn log(plugin: &Plugin, params: &Json) {
    let message: String = params
        .get("message")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .chars()
        .take(2000)
        .collect();
    match params.get("level").and_then(Json::as_str) {
        Some("error") => tracing::error!(plugin = %plugin.id, "{message}"),
        Some("warn") => tracing::warn!(plugin = %plugin.id, "{message}"),
        Some("debug") => tracing::debug!(plugin = %plugin.id, "{message}"),
        _ => tracing::info!(plugin = %plugin.id, "{message}"),
    }
}

/// Answers one call of `plugin`.
pub async fn handle(
    plugins: &Arc<Plugins>,
    plugin: &Arc<Plugin>,
    method: &str,
    params: Json,
) -> Result<Json, RpcError> {
    plugin.counters.count(Figure::ApiCalls);
    if !plugin.take_token() {
        plugin.counters.count(Figure::ApiLimited);
        return Err(RpcError {
            code: codes::LIMITED,
            message: "Too many calls: slow down".into(),
            data: Some(json!({"error": "too-many-requests"})),
        });
    }
    let p = Params::of(params)?;
    let s = &plugins.services;
    let bot = plugin.bot_id().unwrap_or_default();
    match method {
        "log" => {
            log(plugin, &Json::Object(p.0));
            Ok(Json::Null)
        }
        "users.get" => {
            let id = p.text("userId", MAX_NAME)?;
            let user = s.rooms.user(&id).await.map_err(refused)?;
            Ok(user.as_ref().map_or(Json::Null, user_view))
        }
        "users.getByUsername" => {
            let name = p.text("username", MAX_NAME)?;
            let user = s.rooms.user_by_username(&name).await.map_err(refused)?;
            Ok(user.as_ref().map_or(Json::Null, user_view))
        }
        "users.createBot" => {
            let username = p.text("username", 64)?;
            let name = p.maybe_text("name", 128)?;
            let id = plugins
                .ensure_user(&username, name.as_deref().unwrap_or(&username))
                .await
                .map_err(refused)?;
            Ok(json!({"userId": id}))
        }
        "rooms.get" => {
            let room = match (
                p.maybe_text("roomId", MAX_NAME)?,
                p.maybe_text("name", MAX_NAME)?,
            ) {
                (Some(id), _) => s.rooms.room(&id).await,
                (None, Some(name)) => s.rooms.room_by_name(&name).await,
                (None, None) => return Err(invalid("roomId or name is required")),
            }
            .map_err(refused)?;
            Ok(room.as_ref().map_or(Json::Null, doc_view))
        }
        "rooms.create" => {
            let kind = match p.maybe_text("type", 1)?.as_deref() {
                None | Some("c") => RoomKind::Channel,
                Some("p") => RoomKind::PrivateGroup,
                Some(_) => return Err(invalid("type is c or p")),
            };
            let new = NewRoom {
                kind,
                name: p.text("name", MAX_NAME)?,
                members: p.strings("members")?,
                read_only: p.flag("readOnly")?,
                team_id: None,
            };
            let room = s
                .rooms
                .create(&Call::unfenced(Some(&bot)), new)
                .await
                .map_err(refused)?;
            Ok(doc_view(&room))
        }
        "rooms.join" => {
            let rid = p.text("roomId", MAX_NAME)?;
            let joined = s
                .rooms
                .join(&Call::unfenced(Some(&bot)), &rid, None)
                .await
                .map_err(refused)?;
            Ok(json!({"joined": joined}))
        }
        "rooms.addMembers" => {
            let rid = p.text("roomId", MAX_NAME)?;
            let usernames = p.strings("usernames")?;
            s.rooms
                .add_users(&Call::unfenced(Some(&bot)), &rid, &usernames)
                .await
                .map_err(refused)?;
            Ok(Json::Null)
        }
        "rooms.removeMember" => {
            let rid = p.text("roomId", MAX_NAME)?;
            let username = p.text("username", MAX_NAME)?;
            s.rooms
                .remove_user(&Call::unfenced(Some(&bot)), &rid, &username)
                .await
                .map_err(refused)?;
            Ok(Json::Null)
        }
        "messages.create" => {
            let actor = p.maybe_text("asUserId", MAX_NAME)?.unwrap_or(bot);
            let out = Outgoing {
                rid: p.text("roomId", MAX_NAME)?,
                msg: p.maybe_text("msg", MAX_TEXT)?.unwrap_or_default(),
                tmid: p.maybe_text("tmid", MAX_NAME)?,
                alias: p.maybe_text("alias", MAX_NAME)?,
                emoji: p.maybe_text("emoji", MAX_NAME)?,
                avatar: p.maybe_text("avatar", 2048)?,
                attachments: match p.value("attachments") {
                    Json::Null => None,
                    Json::Array(items) => Some(Value::from_plain_json(Json::Array(items))),
                    _ => return Err(invalid("attachments must be a list")),
                },
                ..Default::default()
            };
            let message = s
                .messages
                .send(&Call::unfenced(Some(&actor)), out)
                .await
                .map_err(refused)?;
            Ok(doc_view(&message))
        }
        "messages.update" => {
            let actor = p.maybe_text("asUserId", MAX_NAME)?.unwrap_or(bot);
            let id = p.text("messageId", MAX_NAME)?;
            let Some(stored) = s.messages.message(&id).await.map_err(refused)? else {
                return Err(refused(crate::chat::client_error(
                    "error-invalid-message",
                    "No such message",
                )));
            };
            let mut edited = Document::default();
            edited.insert("_id".into(), Value::from(id.as_str()));
            if let Some(rid) = stored.get("rid") {
                edited.insert("rid".into(), rid.clone());
            }
            edited.insert("msg".into(), Value::from(p.text("msg", MAX_TEXT)?.as_str()));
            s.messages
                .update(&Call::unfenced(Some(&actor)), &edited)
                .await
                .map_err(refused)?;
            let after = s.messages.message(&id).await.map_err(refused)?;
            Ok(after.as_ref().map_or(Json::Null, doc_view))
        }
        "messages.delete" => {
            let actor = p.maybe_text("asUserId", MAX_NAME)?.unwrap_or(bot);
            let id = p.text("messageId", MAX_NAME)?;
            s.messages
                .delete(&Call::unfenced(Some(&actor)), &id)
                .await
                .map_err(refused)?;
            Ok(Json::Null)
        }
        "messages.get" => {
            let id = p.text("messageId", MAX_NAME)?;
            let message = s.messages.message(&id).await.map_err(refused)?;
            Ok(message.as_ref().map_or(Json::Null, doc_view))
        }
        "messages.ephemeral" => {
            let uid = p.text("userId", MAX_NAME)?;
            let rid = p.text("roomId", MAX_NAME)?;
            let msg = p.text("msg", MAX_TEXT)?;
            plugins.ephemeral(plugin, &uid, &rid, &msg);
            Ok(Json::Null)
        }
        "settings.get" => {
            let id = p.text("id", MAX_NAME)?;
            if crate::chat::settings::is_secret(&id) {
                return Err(refused(crate::chat::not_allowed()));
            }
            Ok(s.settings.value(&id).map_or(Json::Null, |v| to_json(&v)))
        }
        "config.get" => Ok(plugin.config()),
        "kv.get" => Ok(plugin
            .kv
            .get(&p.text("key", MAX_NAME)?)
            .await
            .map_err(refused)?
            .unwrap_or(Json::Null)),
        "kv.set" => {
            plugin
                .kv
                .set(
                    &p.text("key", MAX_NAME)?,
                    &p.value("value"),
                    p.number("expireInMs")?,
                )
                .await
                .map_err(refused)?;
            Ok(Json::Null)
        }
        "kv.compareAndSet" => {
            let done = plugin
                .kv
                .compare_and_set(
                    &p.text("key", MAX_NAME)?,
                    &p.value("old"),
                    &p.value("new"),
                    p.number("expireInMs")?,
                )
                .await
                .map_err(refused)?;
            Ok(json!({"ok": done}))
        }
        "kv.delete" => {
            plugin
                .kv
                .delete(&p.text("key", MAX_NAME)?)
                .await
                .map_err(refused)?;
            Ok(Json::Null)
        }
        "kv.list" => {
            let keys = plugin
                .kv
                .list(
                    &p.maybe_text("prefix", MAX_NAME)?.unwrap_or_default(),
                    p.number("offset")?.unwrap_or(0) as usize,
                    p.number("count")?.unwrap_or(100) as usize,
                )
                .await
                .map_err(refused)?;
            Ok(json!({"keys": keys}))
        }
        "streams.publish" => {
            let to = p.text("to", 8)?;
            let id = p.text("id", MAX_NAME)?;
            let event = p.text("event", 64)?;
            if !event
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(invalid("event must be a plain name"));
            }
            let stream = match to.as_str() {
                "user" => "stream-notify-user",
                "room" => "stream-notify-room",
                _ => return Err(invalid("to is user or room")),
            };
            let args = match p.value("args") {
                Json::Array(items) => items.into_iter().map(Value::from_plain_json).collect(),
                Json::Null => Vec::new(),
                _ => return Err(invalid("args must be a list")),
            };
            // A plugin's events are named under its id, so none passes for comet's own.
            s.bus.publish(BusEvent {
                stream: stream.into(),
                event: format!("{id}/{}.{event}", plugin.id),
                args,
                except: None,
            });
            Ok(Json::Null)
        }
        "cluster.publish" => {
            let event = p.text("event", 64)?;
            plugins.publish_cluster_event(plugin, &event, p.value("data"));
            Ok(Json::Null)
        }
        "jobs.schedule" => {
            let name = p.text("name", 64)?;
            let every = Duration::from_millis(p.number("intervalMs")?.unwrap_or(60_000));
            if every < MIN_JOB_INTERVAL {
                return Err(invalid("intervalMs is at least 1000"));
            }
            if !plugin.manifest().implements("RunJob") {
                return Err(invalid("a plugin with jobs declares the RunJob hook"));
            }
            if !plugins.schedule_job(plugin, &name, every, MAX_JOBS) {
                return Err(invalid(format!("at most {MAX_JOBS} jobs")));
            }
            Ok(Json::Null)
        }
        "jobs.cancel" => {
            plugin.cancel_job(&p.text("name", 64)?);
            Ok(Json::Null)
        }
        _ => Err(RpcError::new(
            codes::NO_METHOD,
            format!("no method {method:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_reaches_a_plugin_without_its_secrets() {
        let user = crate::engine::build::doc(json!({
            "_id": "u1", "username": "ann", "roles": ["user"],
            "services": {"password": {"bcrypt": "$2b$10$..."}, "resume": {"loginTokens": []}},
        }))
        .unwrap();
        let seen = user_view(&user);
        assert_eq!(seen["username"], "ann");
        assert!(seen.get("services").is_none(), "{seen}");
    }

    #[test]
    fn parameters_are_values_of_the_kind_asked() {
        let p = Params::of(json!({"key": {"$gt": ""}, "n": -1, "names": ["a", 1]})).unwrap();
        assert!(p.text("key", 10).is_err());
        assert!(p.number("n").is_err());
        assert!(p.strings("names").is_err());
        assert!(p.text("missing", 10).is_err());
        assert!(Params::of(json!([1])).is_err());
    }
}
