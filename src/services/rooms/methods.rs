//! The Room service's DDP methods: `createChannel`, `createPrivateGroup`,
//! `createDirectMessage`, `rooms/get`, `subscriptions/get`, `getRoomIdByNameOrId`,
//! `getRoomNameById`. Each reads its parameters with `check()` semantics and calls the typed
//! API; nothing here decides who may do what.

use super::{projected, NewRoom, RoomKind, Rooms, ROOM_FIELDS};
use crate::model::{Document, MeteorError, Value};
use crate::services::args::{check_all, Pattern};
use crate::services::error::ServiceError;
use crate::services::registry::Registry;
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
fn created(room: &Document) -> Value {
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
    for (method, kind) in [
        ("createChannel", RoomKind::Channel),
        ("createPrivateGroup", RoomKind::PrivateGroup),
    ] {
        let r = rooms.clone();
        registry.method(method, move |ctx, params| {
            let rooms = r.clone();
            async move {
                check_all(
                    &[
                        Pattern::string_up_to(MAX_NAME),
                        Pattern::Optional(Box::new(Pattern::array_of(Pattern::string_up_to(
                            MAX_NAME,
                        )))),
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
                let new = NewRoom {
                    kind,
                    name: params[0].as_str().unwrap_or_default().to_owned(),
                    members: strings(params.get(1)),
                    read_only,
                };
                let room = rooms.create(ctx.user_id.as_deref(), new, &ctx).await?;
                Ok(Some(created(&room)))
            }
        });
    }
    let r = rooms.clone();
    registry.method("createDirectMessage", move |ctx, params| {
        let rooms = r.clone();
        async move {
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
                .direct_message(ctx.user_id.as_deref(), &usernames, &ctx)
                .await?;
            let mut out = projected(&room, ROOM_FIELDS);
            if let Some(id) = out.shift_remove("_id") {
                out.insert("rid".into(), id);
            }
            Ok(Some(Value::Object(out)))
        }
    });
    let r = rooms.clone();
    registry.method("subscriptions/get", move |ctx, params| {
        let rooms = r.clone();
        async move {
            let since = since(&params);
            let (update, remove) = rooms
                .subscriptions_of(ctx.user_id.as_deref(), since)
                .await?;
            Ok(Some(delta(update, remove, since)))
        }
    });
    let r = rooms.clone();
    registry.method("rooms/get", move |ctx, params| {
        let rooms = r.clone();
        async move {
            let since = since(&params);
            let (update, remove) = rooms.rooms_of(ctx.user_id.as_deref(), since).await?;
            Ok(Some(delta(update, remove, since)))
        }
    });
    let r = rooms.clone();
    registry.method("getRoomIdByNameOrId", move |ctx, params| {
        let rooms = r.clone();
        async move {
            check_all(&[Pattern::string_up_to(MAX_NAME)], &params)?;
            let key = params[0].as_str().unwrap_or_default();
            let room = match rooms.room(key).await? {
                Some(room) => Some(room),
                None => rooms.room_by_name(key).await?,
            };
            let Some(room) = room else {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-not-allowed",
                    "Not allowed",
                )));
            };
            // A room the caller may not see is one it cannot learn of.
            if !rooms.can_access(&room, ctx.user_id.as_deref()).await? {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-not-allowed",
                    "Not allowed",
                )));
            }
            Ok(room.get("_id").cloned())
        }
    });
    registry.method("getRoomNameById", move |ctx, params| {
        let rooms = rooms.clone();
        async move {
            check_all(&[Pattern::string_up_to(MAX_NAME)], &params)?;
            let Some(user) = ctx.user_id.as_deref() else {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-invalid-user",
                    "Invalid user",
                )));
            };
            let rid = params[0].as_str().unwrap_or_default();
            let Some(room) = rooms.room(rid).await? else {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-not-allowed",
                    "Not allowed",
                )));
            };
            if !rooms.can_access(&room, Some(user)).await? {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-not-allowed",
                    "Not allowed",
                )));
            }
            Ok(room.get("name").cloned())
        }
    });
}
