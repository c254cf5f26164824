//! Rocket.Chat's room routes: `channels.*`, `groups.*`, `im.*`, `rooms.*`,
//! `subscriptions.*`. One table line each; a handler reads the request, calls the Room or
//! Messaging service's typed API as the caller and shapes the answer as Rocket.Chat does,
//! lists with `offset`, `count`, `sort` and `total`.
//!
//! A room the caller may not see answers as a room that does not exist.

use super::chat::{
    doc_json, page, params_missing, parse_date, route, text_of, Chat, ChatRoute, Reply, MAX_COUNT,
};
use super::json::to_json;
use super::RestResponse;
use crate::chat::rooms::{projected, NewRoom, RoomKind, ROOM_FIELDS};
use crate::engine::ServiceError;
use crate::model::{Document, Value};

/// The longest room name or username a request may give (as the DDP methods check).
const MAX_NAME: usize = 256;

/// The room routes.
pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Post, "channels.create", create),
    route!(Get, "channels.info", info),
    route!(Get, "channels.list", list_channels),
    route!(Post, "channels.join", join),
    route!(Post, "channels.leave", leave),
    route!(Get, "channels.history", history),
    route!(Get, "channels.members", members),
    route!(Post, "channels.invite", invite_or_kick),
    route!(Post, "channels.kick", invite_or_kick),
    route!(Post, "channels.archive", archive),
    route!(Post, "channels.unarchive", unarchive),
    route!(Post, "groups.create", create),
    route!(Get, "groups.info", info),
    route!(Get, "groups.list", list_mine),
    route!(Post, "groups.leave", leave),
    route!(Get, "groups.history", history),
    route!(Get, "groups.members", members),
    route!(Post, "groups.invite", invite_or_kick),
    route!(Post, "groups.kick", invite_or_kick),
    route!(Post, "groups.archive", archive),
    route!(Post, "groups.unarchive", unarchive),
    route!(Post, "im.create", create_dm),
    route!(Get, "im.list", list_mine),
    route!(Get, "im.history", history),
    route!(Get, "rooms.get", changed_since),
    route!(Get, "rooms.info", info),
    route!(Get, "rooms.roles", roles),
    route!(Get, "subscriptions.get", changed_since),
    route!(Post, "subscriptions.read", read),
];

/// The key a family's answer puts its room under.
fn room_key(family: &str) -> &'static str {
    match family {
        "channels" => "channel",
        "groups" => "group",
        _ => "room",
    }
}

/// A room as the info routes show it.
fn shown(room: &Document) -> serde_json::Value {
    doc_json(&projected(room, ROOM_FIELDS))
}

/// The string `key` of the body, or `None` when absent; a refusal when it is there but
/// not a string of at most `MAX_NAME` characters (what the DDP method's check refuses).
fn bounded_string(c: &Chat<'_>, key: &str) -> Result<Option<String>, ServiceError> {
    match c.fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.chars().count() <= MAX_NAME => Ok(Some(s.clone())),
        Some(_) => Err(ServiceError::match_failed()),
    }
}

/// `channels.create` / `groups.create`: `name`, `members` (usernames), `readOnly`.
async fn create(c: &Chat<'_>) -> Reply {
    let Some(name) = bounded_string(c, "name")? else {
        return Ok(params_missing("name"));
    };
    let members = match c.fields.get("members") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) if s.chars().count() <= MAX_NAME => Ok(s.clone()),
                _ => Err(ServiceError::match_failed()),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ServiceError::match_failed().into()),
    };
    let read_only = match c.fields.get("readOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ServiceError::match_failed().into()),
    };
    let kind = if c.family == "channels" {
        RoomKind::Channel
    } else {
        RoomKind::PrivateGroup
    };
    let new = NewRoom {
        kind,
        name,
        members,
        read_only,
        team_id: None,
    };
    let room = c.rooms.create(&c.acting(), new).await?;
    // The same shape `createChannel` answers with.
    let created = crate::chat::rooms::methods::created(&room);
    Ok(RestResponse::success(
        serde_json::json!({room_key(c.family): to_json(&created)}),
    ))
}

async fn info(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    Ok(RestResponse::success(
        serde_json::json!({room_key(c.family): shown(&room)}),
    ))
}

async fn list_channels(c: &Chat<'_>) -> Reply {
    let rooms = c.rooms.public_channels(c.me()).await?;
    Ok(page(rooms.iter().map(doc_json).collect(), &c.q, "channels"))
}

/// `groups.list` / `im.list`: the caller's own private groups or direct messages.
async fn list_mine(c: &Chat<'_>) -> Reply {
    let (kind, key) = if c.family == "groups" {
        (RoomKind::PrivateGroup, "groups")
    } else {
        (RoomKind::Direct, "ims")
    };
    let (rooms, _) = c.rooms.rooms_of(c.me(), None).await?;
    let mine: Vec<serde_json::Value> = rooms
        .iter()
        .filter(|r| RoomKind::of(r) == Some(kind))
        .map(doc_json)
        .collect();
    Ok(page(mine, &c.q, key))
}

async fn join(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let code = match c.fields.get("joinCode") {
        None | Some(Value::Null) => None,
        Some(Value::String(code)) if code.chars().count() <= MAX_NAME => Some(code.as_str()),
        Some(_) => return Err(ServiceError::match_failed().into()),
    };
    c.rooms.join(&c.acting(), &rid, code).await?;
    Ok(RestResponse::success(
        serde_json::json!({"channel": shown(&room)}),
    ))
}

async fn leave(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    c.rooms.leave(&c.acting(), &rid).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `*.history`: newest first, before `latest` and after `oldest`, paged.
async fn history(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let number = |key: &str, default: usize| {
        c.q.get(key)
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(default)
    };
    let count = number("count", 20).min(MAX_COUNT);
    let offset = number("offset", 0);
    let latest = c.q.get("latest").and_then(|d| parse_date(d));
    let oldest = c.q.get("oldest").and_then(|d| parse_date(d));
    let history = c
        .messages
        .history(c.me(), &rid, latest, offset + count, None, true)
        .await?
        .map(|h| h.messages)
        .unwrap_or_default();
    let shown: Vec<serde_json::Value> = history
        .iter()
        .skip(offset)
        .filter(|m| oldest.is_none_or(|o| crate::chat::messages::ts_of(m) > o))
        .map(doc_json)
        .collect();
    Ok(RestResponse::success(
        serde_json::json!({"messages": shown}),
    ))
}

async fn members(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let (_, records) = c.rooms.users_of(c.me(), &rid, 0, None).await?;
    Ok(page(
        records.iter().map(doc_json).collect(),
        &c.q,
        "members",
    ))
}

/// `*.invite` / `*.kick`: the user named by `userId` (or `username`) added or removed.
async fn invite_or_kick(c: &Chat<'_>) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let username = match c.field("userId") {
        Some(id) => c
            .rooms
            .user(&id)
            .await?
            .and_then(|u| text_of(&u, "username")),
        None => c.field("username"),
    };
    let Some(username) = username else {
        return Ok(RestResponse::failure(
            400,
            "The required \"userId\" param is invalid",
            Some("error-invalid-user"),
        ));
    };
    if c.request.path.ends_with(".invite") {
        c.rooms.add_users(&c.acting(), &rid, &[username]).await?;
    } else {
        c.rooms.remove_user(&c.acting(), &rid, &username).await?;
    }
    let now = c.rooms.room(&rid).await?.unwrap_or(room);
    Ok(RestResponse::success(
        serde_json::json!({room_key(c.family): shown(&now)}),
    ))
}

async fn archive(c: &Chat<'_>) -> Reply {
    set_archived(c, true).await
}

async fn unarchive(c: &Chat<'_>) -> Reply {
    set_archived(c, false).await
}

async fn set_archived(c: &Chat<'_>, archived: bool) -> Reply {
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    c.rooms.set_archived(&c.acting(), &rid, archived).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `im.create`: the direct message with `username`, as Rocket.Chat shapes it (`_id` and
/// `rid` both the room's id).
async fn create_dm(c: &Chat<'_>) -> Reply {
    let Some(username) = bounded_string(c, "username")? else {
        return Ok(params_missing("username"));
    };
    let dm = c.rooms.direct_message(&c.acting(), &[username]).await?;
    let mut room = projected(&dm, ROOM_FIELDS);
    if let Some(id) = room.get("_id").cloned() {
        room.insert("rid".into(), id);
    }
    Ok(RestResponse::success(
        serde_json::json!({"room": doc_json(&room)}),
    ))
}

/// `rooms.get` / `subscriptions.get`: the caller's rooms or subscriptions changed since
/// `updatedSince` (all of them without it), and those removed.
async fn changed_since(c: &Chat<'_>) -> Reply {
    let since = c.q.get("updatedSince").and_then(|d| parse_date(d));
    let (update, remove) = if c.family == "rooms" {
        c.rooms.rooms_of(c.me(), since).await?
    } else {
        c.rooms.subscriptions_of(c.me(), since).await?
    };
    Ok(RestResponse::success(serde_json::json!({
        "update": update.iter().map(doc_json).collect::<Vec<_>>(),
        "remove": remove.iter().map(doc_json).collect::<Vec<_>>(),
    })))
}

async fn roles(c: &Chat<'_>) -> Reply {
    let Some(rid) = c.q.get("rid").or_else(|| c.q.get("roomId")) else {
        return Ok(params_missing("rid"));
    };
    let roles = c.rooms.room_roles(c.me(), rid).await?;
    Ok(RestResponse::success(
        serde_json::json!({"roles": roles.iter().map(doc_json).collect::<Vec<_>>()}),
    ))
}

/// `subscriptions.read`: the caller has read the room `rid` (or `roomId`).
async fn read(c: &Chat<'_>) -> Reply {
    let Some(rid) = c.field("rid").or_else(|| c.field("roomId")) else {
        return Ok(params_missing("rid"));
    };
    c.messages.mark_read(&c.acting(), &rid, false).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}
