//! The Room service's DDP methods: creating rooms, the sync reads, joining and leaving,
//! members, mutes, room roles, archiving, erasing, room settings, and a member's own flags. Each reads its parameters with `check()` semantics and calls the typed
//! API; nothing here decides who may do what.

use super::members::{RoomSetting, ROOM_ROLES};
use super::{projected, NewRoom, RoomKind, Rooms, ROOM_FIELDS};
use crate::chat::call::Call;
use crate::chat::not_allowed;
use crate::engine::args::{check_all, Pattern};
use crate::engine::error::ServiceError;
use crate::engine::registry::{MethodContext, MethodResult, Registry};
use crate::model::{Document, MeteorError, Value};
use std::sync::Arc;

/// Names and usernames longer than this match nothing.
const MAX_NAME: usize = 256;

/// The `since` date of a sync call, when given.
fn since(params: &[Value]) -> Option<f64> {
    match params.first() {
        Some(Value::Date(ms)) => Some(*ms),
        _ => None,
    }
}

/// `[...docs]`, or `{update, remove}` for the "since" form.
fn delta(update: Vec<Document>, remove: Vec<Document>, since: Option<f64>) -> Value {
    let list = |docs: Vec<Document>| Value::Array(docs.into_iter().map(Value::Object).collect());
    match since {
        None => list(update),
        Some(_) => {
            let mut out = Document::default();
            out.insert("update".into(), list(update));
            out.insert("remove".into(), list(remove));
            Value::Object(out)
        }
    }
}

/// The result of a room creation: the room with `rid` (Rocket.Chat's `{rid, inserted, ...}`).
pub(crate) fn created(room: &Document) -> Value {
    let mut out = projected(room, ROOM_FIELDS);
    if let Some(id) = room.get("_id") {
        out.insert("rid".into(), id.clone());
    }
    out.insert("inserted".into(), Value::Bool(true));
    Value::Object(out)
}

fn strings(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// Registers the room methods.
pub fn register(registry: &mut Registry, rooms: Arc<Rooms>) {
    registry.method_of("createChannel", &rooms, |rooms, ctx, params| {
        create_room(rooms, ctx, params, RoomKind::Channel)
    });
    registry.method_of("createPrivateGroup", &rooms, |rooms, ctx, params| {
        create_room(rooms, ctx, params, RoomKind::PrivateGroup)
    });
    registry.method_of("createDirectMessage", &rooms, create_direct_message);
    registry.method_of("subscriptions/get", &rooms, subscriptions_get);
    registry.method_of("rooms/get", &rooms, rooms_get);
    registry.method_of("getRoomIdByNameOrId", &rooms, get_room_id_by_name_or_id);
    register_members(registry, &rooms);
    registry.method_of("getRoomNameById", &rooms, get_room_name_by_id);
}

/// `{rid, <key>: string}`, the argument of several room methods.
fn rid_and(params: &[Value], key: &'static str) -> Result<(String, String), ServiceError> {
    check_all(
        &[Pattern::object_including(vec![
            ("rid", Pattern::string_up_to(MAX_NAME)),
            (key, Pattern::string_up_to(MAX_NAME)),
        ])],
        &params[..params.len().min(1)],
    )?;
    let o = params[0].as_object().cloned().unwrap_or_default();
    let get = |k: &str| {
        o.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok((get("rid"), get(key)))
}

fn one_string(params: &[Value]) -> Result<String, ServiceError> {
    check_all(
        &[Pattern::string_up_to(MAX_NAME)],
        &params[..params.len().min(1)],
    )?;
    Ok(params[0].as_str().unwrap_or_default().to_owned())
}

/// The `saveRoomSettings` changes: `(rid, name, value)` or `(rid, {name: value, ...})`.
fn room_settings(params: &[Value]) -> Result<Vec<RoomSetting>, ServiceError> {
    let pairs: Vec<(String, Value)> = match (params.get(1), params.get(2)) {
        (Some(Value::String(name)), Some(value)) => vec![(name.clone(), value.clone())],
        (Some(Value::Object(map)), None) => {
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        }
        _ => return Err(ServiceError::match_failed()),
    };
    let invalid = |name: &str| {
        ServiceError::Client(MeteorError::new(
            "error-invalid-settings",
            format!("Invalid settings provided: {name}"),
        ))
    };
    let mut out = Vec::new();
    for (name, value) in pairs {
        let text = || {
            value
                .as_str()
                .filter(|s| s.chars().count() <= 10_000)
                .map(str::to_owned)
        };
        let flag = || match value {
            Value::Bool(b) => Some(b),
            _ => None,
        };
        let setting = match name.as_str() {
            "roomName" => text().map(RoomSetting::Name),
            "roomTopic" => text().map(RoomSetting::Topic),
            "roomAnnouncement" => text().map(RoomSetting::Announcement),
            "roomDescription" => text().map(RoomSetting::Description),
            "readOnly" => flag().map(RoomSetting::ReadOnly),
            "joinCode" => text().map(RoomSetting::JoinCode),
            "roomType" => text().map(RoomSetting::Kind),
            "default" => flag().map(RoomSetting::Default),
            "roomAvatar" => match &value {
                Value::Null => Some(RoomSetting::Avatar(None)),
                // A data URI of up to 1 MiB of image.
                Value::String(uri) if uri.len() <= 1_500_000 => {
                    Some(RoomSetting::Avatar(Some(uri.clone())))
                }
                _ => None,
            },
            _ => None,
        };
        out.push(setting.ok_or_else(|| invalid(&name))?);
    }
    Ok(out)
}

fn role_method_name(role: &str, give: bool) -> String {
    let mut title = role.to_owned();
    if let Some(first) = title.get_mut(0..1) {
        first.make_ascii_uppercase();
    }
    format!("{}Room{title}", if give { "add" } else { "remove" })
}

fn register_members(registry: &mut Registry, rooms: &Arc<Rooms>) {
    registry.method_of("joinRoom", rooms, join_room);
    registry.method_of("leaveRoom", rooms, leave_room);
    registry.method_of("addUsersToRoom", rooms, add_users_to_room);
    registry.method_of("removeUserFromRoom", rooms, remove_user_from_room);
    for (name, muted) in [("muteUserInRoom", true), ("unmuteUserInRoom", false)] {
        registry.method_of(name, rooms, move |rooms, ctx, params| async move {
            let (rid, username) = rid_and(&params, "username")?;
            rooms
                .set_muted(&Call::method(&ctx), &rid, &username, muted)
                .await?;
            Ok(Some(Value::Bool(true)))
        });
    }
    for (name, archived) in [("archiveRoom", true), ("unarchiveRoom", false)] {
        registry.method_of(name, rooms, move |rooms, ctx, params| async move {
            let rid = one_string(&params)?;
            rooms
                .set_archived(&Call::method(&ctx), &rid, archived)
                .await?;
            Ok(Some(Value::Bool(true)))
        });
    }
    registry.method_of("eraseRoom", rooms, erase_room);
    registry.method_of("saveRoomSettings", rooms, save_room_settings);
    for (role, _) in ROOM_ROLES {
        for give in [true, false] {
            registry.method_of(
                &role_method_name(role, give),
                rooms,
                move |rooms, ctx, params| async move {
                    check_all(
                        &[
                            Pattern::string_up_to(MAX_NAME),
                            Pattern::string_up_to(MAX_NAME),
                        ],
                        &params,
                    )?;
                    let rid = params[0].as_str().unwrap_or_default();
                    let user = params[1].as_str().unwrap_or_default();
                    rooms
                        .set_role(&Call::method(&ctx), rid, user, role, give)
                        .await?;
                    Ok(Some(Value::Bool(true)))
                },
            );
        }
    }
    registry.method_of("getRoomRoles", rooms, get_room_roles);
    registry.method_of("getRoomByTypeAndName", rooms, get_room_by_type_and_name);
    for (name, open) in [("openRoom", true), ("hideRoom", false)] {
        registry.method_of(name, rooms, move |rooms, ctx, params| async move {
            let rid = one_string(&params)?;
            let changed = rooms.set_open(&Call::method(&ctx), &rid, open).await?;
            Ok(Some(Value::Number(if changed { 1.0 } else { 0.0 })))
        });
    }
    registry.method_of("toggleFavorite", rooms, toggle_favorite);
    registry.method_of("getUsersOfRoom", rooms, get_users_of_room);
    registry.method_of("spotlight", rooms, spotlight);
}

/// `spotlight(text, usernames to leave out, {users, rooms}, rid?)`: `{users, rooms}`.
async fn spotlight(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_NAME),
            Pattern::maybe(Pattern::array_of(Pattern::string_up_to(MAX_NAME))),
            Pattern::maybe(Pattern::OBJECT),
            Pattern::maybe(Pattern::string_up_to(MAX_NAME)),
        ],
        &params,
    )?;
    let typed = params[0].as_str().unwrap_or_default();
    let exclude: Vec<String> = match params.get(1) {
        Some(Value::Array(names)) => names
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let wants = |key: &str| match params.get(2) {
        Some(Value::Object(kinds)) => kinds.get(key) == Some(&Value::Bool(true)),
        _ => true,
    };
    let found = rooms
        .spotlight(
            ctx.user_id.as_deref(),
            typed,
            &exclude,
            wants("users"),
            wants("rooms"),
        )
        .await?;
    let mut out = Document::default();
    out.insert(
        "users".into(),
        Value::Array(found.users.into_iter().map(Value::Object).collect()),
    );
    out.insert(
        "rooms".into(),
        Value::Array(found.rooms.into_iter().map(Value::Object).collect()),
    );
    Ok(Some(Value::Object(out)))
}

/// `joinRoom`.
async fn join_room(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_NAME),
            Pattern::maybe(Pattern::string_up_to(MAX_NAME)),
        ],
        &params,
    )?;
    let rid = params[0].as_str().unwrap_or_default();
    let code = params.get(1).and_then(Value::as_str);
    let joined = rooms.join(&Call::method(&ctx), rid, code).await?;
    Ok(joined.then_some(Value::Bool(true)))
}

/// `leaveRoom`.
async fn leave_room(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    let rid = one_string(&params)?;
    rooms.leave(&Call::method(&ctx), &rid).await?;
    Ok(None)
}

/// `addUsersToRoom`.
async fn add_users_to_room(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[Pattern::object_including(vec![
            ("rid", Pattern::string_up_to(MAX_NAME)),
            ("users", Pattern::array_of(Pattern::string_up_to(MAX_NAME))),
        ])],
        &params[..params.len().min(1)],
    )?;
    let o = params[0].as_object().cloned().unwrap_or_default();
    let rid = o.get("rid").and_then(Value::as_str).unwrap_or_default();
    let users = strings(o.get("users"));
    if users.len() > 1000 {
        return Err(ServiceError::match_failed());
    }
    rooms.add_users(&Call::method(&ctx), rid, &users).await?;
    Ok(Some(Value::Bool(true)))
}

/// `removeUserFromRoom`.
async fn remove_user_from_room(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    let (rid, username) = rid_and(&params, "username")?;
    rooms
        .remove_user(&Call::method(&ctx), &rid, &username)
        .await?;
    Ok(Some(Value::Bool(true)))
}

/// `eraseRoom`.
async fn erase_room(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    let rid = one_string(&params)?;
    rooms.erase(&Call::method(&ctx), &rid).await?;
    Ok(Some(Value::Bool(true)))
}

/// `saveRoomSettings`.
async fn save_room_settings(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    let rid = one_string(&params)?;
    let changes = room_settings(&params)?;
    rooms
        .save_settings(&Call::method(&ctx), &rid, changes)
        .await?;
    let mut out = Document::default();
    out.insert("result".into(), Value::Bool(true));
    out.insert("rid".into(), Value::from(rid.as_str()));
    Ok(Some(Value::Object(out)))
}

/// `getRoomRoles`.
async fn get_room_roles(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    let rid = one_string(&params)?;
    let roles = rooms.room_roles(ctx.user_id.as_deref(), &rid).await?;
    Ok(Some(Value::Array(
        roles.into_iter().map(Value::Object).collect(),
    )))
}

/// `getRoomByTypeAndName`.
async fn get_room_by_type_and_name(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[Pattern::string_up_to(8), Pattern::string_up_to(MAX_NAME)],
        &params,
    )?;
    let room = rooms
        .by_type_and_name(
            ctx.user_id.as_deref(),
            params[0].as_str().unwrap_or_default(),
            params[1].as_str().unwrap_or_default(),
        )
        .await?;
    Ok(Some(Value::Object(room)))
}

/// `toggleFavorite`.
async fn toggle_favorite(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_NAME),
            Pattern::maybe(Pattern::BOOLEAN),
        ],
        &params,
    )?;
    let rid = params[0].as_str().unwrap_or_default();
    let favorite = params.get(1) != Some(&Value::Bool(false));
    let changed = rooms
        .set_favorite(&Call::method(&ctx), rid, favorite)
        .await?;
    Ok(Some(Value::Number(if changed { 1.0 } else { 0.0 })))
}

/// `getUsersOfRoom`.
async fn get_users_of_room(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_NAME),
            Pattern::maybe(Pattern::BOOLEAN),
            Pattern::maybe(Pattern::OBJECT),
            Pattern::maybe(Pattern::STRING),
        ],
        &params,
    )?;
    let rid = params[0].as_str().unwrap_or_default();
    let options = params.get(2).and_then(Value::as_object);
    let number = |k: &str| {
        options
            .and_then(|o| o.get(k))
            .and_then(Value::as_f64)
            .filter(|n| *n >= 0.0)
            .map(|n| n as usize)
    };
    let (total, records) = rooms
        .users_of(
            ctx.user_id.as_deref(),
            rid,
            number("skip").unwrap_or(0),
            number("limit"),
        )
        .await?;
    let mut out = Document::default();
    out.insert("total".into(), Value::Number(total as f64));
    out.insert(
        "records".into(),
        Value::Array(records.into_iter().map(Value::Object).collect()),
    );
    Ok(Some(Value::Object(out)))
}

/// `createDirectMessage`.
async fn create_direct_message(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    if params.is_empty() {
        return Err(ServiceError::match_failed());
    }
    let patterns = vec![Pattern::string_up_to(MAX_NAME); params.len()];
    check_all(&patterns, &params)?;
    let usernames: Vec<String> = params
        .iter()
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    let room = rooms
        .direct_message(&Call::method(&ctx), &usernames)
        .await?;
    let mut out = projected(&room, ROOM_FIELDS);
    if let Some(id) = out.shift_remove("_id") {
        out.insert("rid".into(), id);
    }
    Ok(Some(Value::Object(out)))
}

/// `subscriptions/get`.
async fn subscriptions_get(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    let since = since(&params);
    let (update, remove) = rooms
        .subscriptions_of(ctx.user_id.as_deref(), since)
        .await?;
    Ok(Some(delta(update, remove, since)))
}

/// `rooms/get`.
async fn rooms_get(rooms: Arc<Rooms>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    let since = since(&params);
    let (update, remove) = rooms.rooms_of(ctx.user_id.as_deref(), since).await?;
    Ok(Some(delta(update, remove, since)))
}

/// `getRoomIdByNameOrId`.
async fn get_room_id_by_name_or_id(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(&[Pattern::string_up_to(MAX_NAME)], &params)?;
    let key = params[0].as_str().unwrap_or_default();
    let room = match rooms.room(key).await? {
        Some(room) => Some(room),
        None => rooms.room_by_name(key).await?,
    };
    let Some(room) = room else {
        return Err(not_allowed());
    };
    // A room the caller may not see is one it cannot learn of.
    if !rooms.can_access(&room, ctx.user_id.as_deref()).await? {
        return Err(not_allowed());
    }
    Ok(room.get("_id").cloned())
}

/// `getRoomNameById`.
async fn get_room_name_by_id(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(&[Pattern::string_up_to(MAX_NAME)], &params)?;
    let Some(user) = ctx.user_id.as_deref() else {
        return Err(ServiceError::Client(MeteorError::new(
            "error-invalid-user",
            "Invalid user",
        )));
    };
    let rid = params[0].as_str().unwrap_or_default();
    let Some(room) = rooms.room(rid).await? else {
        return Err(not_allowed());
    };
    if !rooms.can_access(&room, Some(user)).await? {
        return Err(not_allowed());
    }
    Ok(room.get("name").cloned())
}

/// `createChannel` / `createPrivateGroup`: name, members, read-only, extra data (team).
async fn create_room(
    rooms: Arc<Rooms>,
    ctx: MethodContext,
    params: Vec<Value>,
    kind: RoomKind,
) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_NAME),
            Pattern::Optional(Box::new(Pattern::array_of(Pattern::string_up_to(MAX_NAME)))),
            Pattern::Optional(Box::new(Pattern::BOOLEAN)),
            Pattern::Optional(Box::new(Pattern::OBJECT)),
            Pattern::Optional(Box::new(Pattern::OBJECT)),
        ],
        &params,
    )?;
    let read_only = matches!(params.get(2), Some(Value::Bool(true)))
        || matches!(
            params
                .get(4)
                .and_then(Value::as_object)
                .and_then(|e| e.get("broadcast")),
            Some(Value::Bool(true))
        );
    let team_id = match params
        .get(4)
        .and_then(Value::as_object)
        .and_then(|e| e.get("teamId"))
    {
        None | Some(Value::Null) => None,
        Some(Value::String(t)) if !t.is_empty() && t.len() <= MAX_NAME => Some(t.clone()),
        Some(_) => return Err(ServiceError::match_failed()),
    };
    let new = NewRoom {
        kind,
        name: params[0].as_str().unwrap_or_default().to_owned(),
        members: strings(params.get(1)),
        read_only,
        team_id,
    };
    let room = rooms.create(&Call::method(&ctx), new).await?;
    Ok(Some(created(&room)))
}
