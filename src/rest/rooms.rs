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
    route!(Get, "channels.messages", messages),
    route!(Get, "channels.counters", counters),
    route!(Get, "channels.roles", roles),
    route!(Get, "groups.messages", messages),
    route!(Get, "groups.counters", counters),
    route!(Get, "groups.roles", roles),
    route!(Post, "im.create", create_dm),
    route!(Get, "im.list", list_mine),
    route!(Get, "im.history", history),
    route!(Get, "im.messages", messages),
    route!(Get, "im.members", members),
    route!(Get, "im.counters", counters),
    route!(Post, "rooms.favorite", favorite),
    route!(Post, "rooms.createDiscussion", create_discussion),
    route!(Get, "spotlight", spotlight),
    route!(Get, "directory", directory),
    route!(Post, "rooms.saveNotification", save_notification),
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
/// `im.create`: `username`, or `usernames` (comma-separated) for a group DM.
async fn create_dm(c: &Chat<'_>) -> Reply {
    let usernames: Vec<String> = match (bounded_string(c, "username")?, c.field("usernames")) {
        (Some(one), _) => vec![one],
        (None, Some(list)) => list
            .split(',')
            .map(|n| n.trim().trim_start_matches('@').to_owned())
            .filter(|n| !n.is_empty())
            .collect(),
        (None, None) => Vec::new(),
    };
    if usernames.is_empty() {
        return Ok(params_missing("username or usernames"));
    }
    let max = c
        .services
        .settings
        .number("DirectMesssage_maxUsers", 8.0)
        .max(2.0) as usize;
    if usernames.iter().any(|n| n.chars().count() > MAX_NAME) || usernames.len() + 1 > max {
        return Ok(RestResponse::failure(
            400,
            "Too many users in one direct message",
            Some("error-invalid-params"),
        ));
    }
    let dm = c.rooms.direct_message(&c.acting(), &usernames).await?;
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

/// `*.messages`: a page of the room's messages, newest first (`pinned=true` for the
/// pinned ones only).
async fn messages(c: &Chat<'_>) -> Reply {
    let listing = if c.q.get("pinned").map(String::as_str) == Some("true") {
        crate::chat::messages::lists::Listing::Pinned
    } else {
        crate::chat::messages::lists::Listing::All
    };
    super::messages::list(c, listing, "messages").await
}

/// `*.counters`: the caller's own counts for the room (another user's need not be told).
async fn counters(c: &Chat<'_>) -> Reply {
    if c.q.get("userId").is_some_and(|id| *id != c.caller.user_id) {
        return Ok(RestResponse::failure(
            403,
            "Not allowed",
            Some("error-not-allowed"),
        ));
    }
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let sub = c.rooms.subscription(&rid, &c.caller.user_id).await?;
    let number = |d: Option<&Document>, key: &str| {
        d.and_then(|d| d.get(key))
            .and_then(Value::as_f64)
            .unwrap_or(0.0) as u64
    };
    let date = |d: Option<&Document>, key: &str| d.and_then(|d| d.get(key)).map(to_json);
    Ok(RestResponse::success(serde_json::json!({
        "joined": sub.is_some(),
        "members": number(Some(&room), "usersCount"),
        "unreads": number(sub.as_ref(), "unread"),
        "unreadsFrom": date(sub.as_ref(), "ls"),
        "msgs": number(Some(&room), "msgs"),
        "latest": date(Some(&room), "lm"),
        "userMentions": number(sub.as_ref(), "userMentions"),
    })))
}

/// `rooms.favorite`: `{roomId | roomName, favorite}`.
async fn favorite(c: &Chat<'_>) -> Reply {
    let Some(Value::Bool(favorite)) = c.fields.get("favorite") else {
        return Ok(params_missing("favorite"));
    };
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    c.rooms.set_favorite(&c.acting(), &rid, *favorite).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `rooms.saveNotification`: `{roomId, notifications: {key: value, ...}}`, each key saved
/// in turn as Rocket.Chat does; a refused key stops the ones after it.
async fn save_notification(c: &Chat<'_>) -> Reply {
    let Some(Value::Object(notifications)) = c.fields.get("notifications") else {
        return Ok(params_missing("notifications"));
    };
    let room = c.room().await?;
    let rid = text_of(&room, "_id").unwrap_or_default();
    let call = c.acting();
    for (key, value) in notifications.iter() {
        c.rooms.save_notification(&call, &rid, key, value).await?;
    }
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `spotlight?query=`: users and rooms named like the text (`@name` for users only, `#name`
/// for rooms only).
async fn spotlight(c: &Chat<'_>) -> Reply {
    let Some(query) = c.q.get("query") else {
        return Ok(params_missing("query"));
    };
    let (typed, users, rooms) = match (query.strip_prefix('@'), query.strip_prefix('#')) {
        (Some(name), _) => (name, true, false),
        (_, Some(name)) => (name, false, true),
        _ => (query.as_str(), true, true),
    };
    let found = c.rooms.spotlight(c.me(), typed, &[], users, rooms).await?;
    Ok(RestResponse::success(serde_json::json!({
        "users": found.users.iter().map(doc_json).collect::<Vec<_>>(),
        "rooms": found.rooms.iter().map(doc_json).collect::<Vec<_>>(),
    })))
}

/// `directory?type=channels|users|teams&text=&sort={"name":1}`: a page of the list.
async fn directory(c: &Chat<'_>) -> Reply {
    use crate::chat::rooms::directory::DirectoryKind;
    let kind = match c.q.get("type").map(String::as_str).unwrap_or("channels") {
        "channels" => DirectoryKind::Channels,
        "users" => DirectoryKind::Users,
        "teams" => DirectoryKind::Teams,
        _ => {
            return Ok(RestResponse::failure(
                400,
                "Invalid type",
                Some("error-invalid-type"),
            ))
        }
    };
    let sort = match c.q.get("sort") {
        None => None,
        Some(text) => {
            let parsed: Option<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_str(text).ok();
            let Some((key, direction)) = parsed.and_then(|m| m.into_iter().next()) else {
                return Ok(RestResponse::failure(
                    400,
                    "Invalid sort",
                    Some("error-invalid-sort"),
                ));
            };
            let key: &'static str = match key.as_str() {
                "name" => "name",
                "username" => "username",
                "usersCount" => "usersCount",
                "createdAt" => "createdAt",
                "ts" => "ts",
                _ => {
                    return Ok(RestResponse::failure(
                        400,
                        "Invalid sort",
                        Some("error-invalid-sort"),
                    ))
                }
            };
            Some((key, direction.as_i64() == Some(-1)))
        }
    };
    let typed = c.q.get("text").cloned().unwrap_or_default();
    let found = c.rooms.directory(c.me(), kind, &typed, sort).await?;
    let (offset, count) = super::settings::paging(&c.q, &c.services.settings);
    let total = found.len();
    let result: Vec<serde_json::Value> = found
        .iter()
        .skip(offset)
        .take(count)
        .map(doc_json)
        .collect();
    Ok(RestResponse::success(serde_json::json!({
        "result": result, "count": result.len(), "offset": offset, "total": total,
    })))
}

/// `rooms.createDiscussion`: `{prid, t_name, users?, reply?}`; the reply is the first
/// message of the discussion, sent by the caller.
async fn create_discussion(c: &Chat<'_>) -> Reply {
    let (Some(prid), Some(title)) = (c.field("prid"), c.field("t_name")) else {
        return Ok(params_missing("prid, t_name"));
    };
    let members: Vec<String> = match c.fields.get("users") {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .take(1000)
            .collect(),
        _ => Vec::new(),
    };
    let enabled = c.services.settings.flag("Discussion_enabled", true);
    let room = c
        .rooms
        .create_discussion(
            &c.acting(),
            crate::chat::rooms::discussions::NewDiscussion {
                prid,
                title,
                members,
            },
            enabled,
        )
        .await?;
    if let Some(reply) = c.field("reply").filter(|r| !r.trim().is_empty()) {
        let mut message = Document::default();
        message.insert(
            "rid".into(),
            room.get("_id").cloned().unwrap_or(Value::Null),
        );
        message.insert("msg".into(), Value::from(reply.as_str()));
        c.send(Value::Object(message)).await?;
    }
    Ok(RestResponse::success(
        serde_json::json!({"discussion": doc_json(&room)}),
    ))
}
