//! Rocket.Chat's chat routes: `chat.*`, `channels.*`, `groups.*`, `im.*`, `rooms.*`,
//! `subscriptions.*`. Each is a thin adapter: it reads the request, calls the service's
//! typed API as the caller (the messages' routes: the same send, edit, delete and reaction
//! paths DDP takes, with their checks and hook points) or, for the rest still, runs the DDP
//! method it stands for, and shapes the answer as Rocket.Chat does, lists with `offset`,
//! `count`, `sort` and `total`.

use super::accounts::{body, query_pairs};
use super::json::to_json;
use super::methods::run;
use super::{Caller, RestMethod, RestRequest, RestResponse};
use crate::chat::messages::Messages;
use crate::chat::rooms::Rooms;
use crate::engine::fence::NoFence;
use crate::engine::{Registry, ServiceError};
use crate::model::{Document, Value};
use std::collections::HashMap;

/// Most items one page of a list holds (Rocket.Chat's default `API_Upper_Count_Limit`).
const MAX_COUNT: usize = 100;

/// What the chat routes need.
pub(super) struct Chat<'a> {
    pub registry: &'a Registry,
    pub rooms: &'a Rooms,
    pub messages: &'a Messages,
    pub caller: &'a Caller,
    pub request: &'a RestRequest,
}

pub(super) fn query(request: &RestRequest) -> HashMap<String, String> {
    query_pairs(request).into_iter().collect()
}

fn params_missing(what: &str) -> RestResponse {
    RestResponse::failure(
        400,
        &format!("The parameter \"{what}\" is required"),
        Some("error-invalid-params"),
    )
}

pub(super) fn doc_json(doc: &Document) -> serde_json::Value {
    to_json(&Value::Object(doc.clone()))
}

/// A page of `items`: `offset` and `count` from the query (count at most 100), sorted by
/// the query's `sort` (`{"field": 1 | -1}`) when given.
pub(super) fn page(
    mut items: Vec<serde_json::Value>,
    q: &HashMap<String, String>,
    key: &str,
) -> RestResponse {
    if let Some(sort) = q
        .get("sort")
        .and_then(|s| serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(s).ok())
    {
        if let Some((field, direction)) = sort.iter().next() {
            let descending = direction.as_i64() == Some(-1);
            items.sort_by(|a, b| {
                let order = compare_json(&a[field.as_str()], &b[field.as_str()]);
                if descending {
                    order.reverse()
                } else {
                    order
                }
            });
        }
    }
    let total = items.len();
    let offset = q
        .get("offset")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let count = q
        .get("count")
        .and_then(|c| c.parse::<usize>().ok())
        .unwrap_or(50)
        .min(MAX_COUNT);
    let shown: Vec<serde_json::Value> = items.into_iter().skip(offset).take(count).collect();
    let n = shown.len();
    RestResponse::success(
        serde_json::json!({key: shown, "count": n, "offset": offset, "total": total}),
    )
}

fn compare_json(a: &serde_json::Value, b: &serde_json::Value) -> std::cmp::Ordering {
    match (a, b) {
        (serde_json::Value::Number(x), serde_json::Value::Number(y)) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        _ => a.to_string().cmp(&b.to_string()),
    }
}

fn text_of(d: &Document, key: &str) -> Option<String> {
    d.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl Chat<'_> {
    async fn call(&self, method: &str, params: Vec<Value>) -> Result<Option<Value>, ServiceError> {
        run(
            self.registry,
            Some(self.caller),
            self.request.client_address,
            method,
            params,
        )
        .await
    }

    /// Sends `message` (`sendMessage`'s argument) as the caller, through the Messaging
    /// service's one send path, with the argument check `sendMessage` makes.
    async fn send(&self, message: Value) -> Result<Document, ServiceError> {
        let out = crate::chat::messages::methods::outgoing(&[message])?;
        self.messages.send(self.me(), out, &NoFence).await
    }

    fn me(&self) -> Option<&str> {
        Some(self.caller.user_id.as_str())
    }

    /// The room a request names (`roomId`, or `roomName` / `channel`), when the caller may
    /// see it; the refusal otherwise (the same for a room that does not exist).
    async fn room(&self, fields: &Document) -> Result<Document, RestResponse> {
        let q = query(self.request);
        let pick = |k: &str| text_of(fields, k).or_else(|| q.get(k).cloned());
        let found = match (pick("roomId").or_else(|| pick("rid")), pick("roomName")) {
            (Some(id), _) => self.rooms.room(&id).await,
            (None, Some(name)) => self.rooms.room_by_name(&name).await,
            _ => return Err(params_missing("roomId")),
        };
        // A room the caller may not see gets the answer a missing room gets: a stranger
        // cannot tell a private room that exists from one that does not.
        let not_found = || {
            RestResponse::failure(
                400,
                "The required \"roomId\" or \"roomName\" param provided does not match any channel",
                Some("error-room-not-found"),
            )
        };
        let room = match found {
            Ok(Some(room)) => room,
            Ok(None) => return Err(not_found()),
            Err(err) => return Err(RestResponse::from_service(&err)),
        };
        match self.rooms.can_access(&room, self.me()).await {
            Ok(true) => Ok(room),
            Ok(false) => Err(not_found()),
            Err(err) => Err(RestResponse::from_service(&err)),
        }
    }

    fn fields(&self) -> Result<Document, RestResponse> {
        if self.request.method == RestMethod::Get {
            return Ok(Document::default());
        }
        body(self.request)
    }

    /// Answers `route` (`chat.sendMessage`, `channels.list`, ...).
    pub(super) async fn handle(&self, route: &str) -> RestResponse {
        let fields = match self.fields() {
            Ok(f) => f,
            Err(refused) => return refused,
        };
        match self.dispatch(route, &fields).await {
            Ok(response) => response,
            Err(err) => RestResponse::from_service(&err),
        }
    }

    async fn dispatch(&self, route: &str, fields: &Document) -> Result<RestResponse, ServiceError> {
        let q = query(self.request);
        let (family, action) = route.split_once('.').unwrap_or((route, ""));
        let post = self.request.method == RestMethod::Post;
        let get = self.request.method == RestMethod::Get;
        let wrong_method = || RestResponse::failure(405, "Method not allowed", None);
        Ok(match (family, action) {
            ("chat", "sendMessage") if post => {
                let Some(message) = fields.get("message").cloned() else {
                    return Ok(params_missing("message"));
                };
                let stored = self.send(message).await?;
                RestResponse::success(serde_json::json!({"message": doc_json(&stored)}))
            }
            ("chat", "postMessage") if post => return self.post_message(fields).await,
            ("chat", "update") if post => {
                let (Some(rid), Some(id), Some(text)) = (
                    text_of(fields, "roomId"),
                    text_of(fields, "msgId"),
                    text_of(fields, "text"),
                ) else {
                    return Ok(params_missing("roomId, msgId, text"));
                };
                let mut edit = Document::default();
                edit.insert("_id".into(), Value::from(id.as_str()));
                edit.insert("rid".into(), Value::from(rid.as_str()));
                edit.insert("msg".into(), Value::from(text.as_str()));
                self.messages.update(self.me(), &edit, &NoFence).await?;
                let message = self.messages.single(self.me(), &id).await?;
                RestResponse::success(
                    serde_json::json!({"message": message.as_ref().map(doc_json)}),
                )
            }
            ("chat", "delete") if post => {
                let Some(id) = text_of(fields, "msgId") else {
                    return Ok(params_missing("msgId"));
                };
                let mut target = Document::default();
                target.insert("_id".into(), Value::from(id.as_str()));
                self.messages.delete(self.me(), &id, &NoFence).await?;
                RestResponse::success(
                    serde_json::json!({"_id": id, "ts": crate::engine::build::now_ms() as u64}),
                )
            }
            ("chat", "getMessage") if get => {
                let Some(id) = q.get("msgId") else {
                    return Ok(params_missing("msgId"));
                };
                match self.messages.single(self.me(), id).await? {
                    Some(m) => RestResponse::success(serde_json::json!({"message": doc_json(&m)})),
                    None => {
                        RestResponse::failure(400, "Message not found", Some("error-not-allowed"))
                    }
                }
            }
            ("chat", "syncMessages") if get => {
                let (Some(rid), Some(since)) = (q.get("roomId"), q.get("lastUpdate")) else {
                    return Ok(params_missing("roomId, lastUpdate"));
                };
                let Some(since) = parse_date(since) else {
                    return Ok(RestResponse::failure(
                        400,
                        "The \"lastUpdate\" query parameter must be a valid date.",
                        Some("error-invalid-params"),
                    ));
                };
                match self.messages.changed_since(self.me(), rid, since).await? {
                    Some((updated, deleted)) => {
                        RestResponse::success(serde_json::json!({"result": {
                            "updated": updated.iter().map(doc_json).collect::<Vec<_>>(),
                            "deleted": deleted.iter().map(doc_json).collect::<Vec<_>>(),
                        }}))
                    }
                    None => RestResponse::failure(403, "Not allowed", Some("error-not-allowed")),
                }
            }
            ("chat", "react") if post => {
                let (Some(id), Some(emoji)) = (
                    text_of(fields, "messageId"),
                    text_of(fields, "emoji").or_else(|| text_of(fields, "reaction")),
                ) else {
                    return Ok(params_missing("messageId, emoji"));
                };
                let should_react = match fields.get("shouldReact") {
                    Some(Value::Bool(b)) => Some(*b),
                    _ => None,
                };
                self.messages
                    .react(self.me(), &emoji, &id, should_react, &NoFence)
                    .await?;
                RestResponse::success(serde_json::json!({}))
            }
            ("channels" | "groups", "create") if post => {
                let Some(name) = text_of(fields, "name") else {
                    return Ok(params_missing("name"));
                };
                let members = fields
                    .get("members")
                    .cloned()
                    .unwrap_or(Value::Array(vec![]));
                let read_only = fields
                    .get("readOnly")
                    .cloned()
                    .unwrap_or(Value::Bool(false));
                let method = if family == "channels" {
                    "createChannel"
                } else {
                    "createPrivateGroup"
                };
                let created = self
                    .call(method, vec![Value::from(name.as_str()), members, read_only])
                    .await?;
                let key = if family == "channels" {
                    "channel"
                } else {
                    "group"
                };
                RestResponse::success(serde_json::json!({key: created.as_ref().map(to_json)}))
            }
            ("channels" | "groups" | "rooms", "info") if get => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let key = match family {
                    "channels" => "channel",
                    "groups" => "group",
                    _ => "room",
                };
                RestResponse::success(
                    serde_json::json!({key: doc_json(&crate::chat::rooms::projected(&room, crate::chat::rooms::ROOM_FIELDS))}),
                )
            }
            ("channels", "list") if get => {
                let rooms = self.rooms.public_channels(self.me()).await?;
                page(rooms.iter().map(doc_json).collect(), &q, "channels")
            }
            ("groups" | "im", "list") if get => {
                let kind = if family == "groups" { "p" } else { "d" };
                let (rooms, _) = self.rooms.rooms_of(self.me(), None).await?;
                let mine: Vec<serde_json::Value> = rooms
                    .iter()
                    .filter(|r| r.get("t").and_then(Value::as_str) == Some(kind))
                    .map(doc_json)
                    .collect();
                page(mine, &q, if family == "groups" { "groups" } else { "ims" })
            }
            ("channels", "join") if post => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let mut params = vec![room.get("_id").cloned().unwrap_or(Value::Null)];
                if let Some(code) = fields.get("joinCode") {
                    params.push(code.clone());
                }
                self.call("joinRoom", params).await?;
                RestResponse::success(
                    serde_json::json!({"channel": doc_json(&crate::chat::rooms::projected(&room, crate::chat::rooms::ROOM_FIELDS))}),
                )
            }
            ("channels" | "groups", "leave") if post => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                self.call(
                    "leaveRoom",
                    vec![room.get("_id").cloned().unwrap_or(Value::Null)],
                )
                .await?;
                RestResponse::success(serde_json::json!({}))
            }
            ("channels" | "groups" | "im", "history") if get => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let rid = text_of(&room, "_id").unwrap_or_default();
                let latest = q.get("latest").and_then(|d| parse_date(d));
                let count = q
                    .get("count")
                    .and_then(|c| c.parse::<usize>().ok())
                    .unwrap_or(20)
                    .min(MAX_COUNT);
                let offset = q
                    .get("offset")
                    .and_then(|o| o.parse::<usize>().ok())
                    .unwrap_or(0);
                let oldest = q.get("oldest").and_then(|d| parse_date(d));
                let history = self
                    .messages
                    .history(self.me(), &rid, latest, offset + count, None, true)
                    .await?
                    .map(|h| h.messages)
                    .unwrap_or_default();
                let shown: Vec<serde_json::Value> = history
                    .iter()
                    .skip(offset)
                    .filter(|m| oldest.is_none_or(|o| crate::chat::messages::ts_of(m) > o))
                    .map(doc_json)
                    .collect();
                RestResponse::success(serde_json::json!({"messages": shown}))
            }
            ("channels" | "groups", "members") if get => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let rid = text_of(&room, "_id").unwrap_or_default();
                let (_, records) = self.rooms.users_of(self.me(), &rid, 0, None).await?;
                page(records.iter().map(doc_json).collect(), &q, "members")
            }
            ("channels" | "groups", "invite" | "kick") if post => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let rid = room.get("_id").cloned().unwrap_or(Value::Null);
                let username = match text_of(fields, "userId") {
                    Some(id) => self
                        .rooms
                        .user(&id)
                        .await?
                        .and_then(|u| text_of(&u, "username")),
                    None => text_of(fields, "username"),
                };
                let Some(username) = username else {
                    return Ok(RestResponse::failure(
                        400,
                        "The required \"userId\" param is invalid",
                        Some("error-invalid-user"),
                    ));
                };
                let mut args = Document::default();
                args.insert("rid".into(), rid);
                if action == "invite" {
                    args.insert(
                        "users".into(),
                        Value::Array(vec![Value::from(username.as_str())]),
                    );
                    self.call("addUsersToRoom", vec![Value::Object(args)])
                        .await?;
                } else {
                    args.insert("username".into(), Value::from(username.as_str()));
                    self.call("removeUserFromRoom", vec![Value::Object(args)])
                        .await?;
                }
                let key = if family == "channels" {
                    "channel"
                } else {
                    "group"
                };
                let now = self
                    .rooms
                    .room(&text_of(&room, "_id").unwrap_or_default())
                    .await?
                    .unwrap_or(room);
                RestResponse::success(
                    serde_json::json!({key: doc_json(&crate::chat::rooms::projected(&now, crate::chat::rooms::ROOM_FIELDS))}),
                )
            }
            ("channels" | "groups", "archive" | "unarchive") if post => {
                let room = match self.room(fields).await {
                    Ok(r) => r,
                    Err(refused) => return Ok(refused),
                };
                let method = if action == "archive" {
                    "archiveRoom"
                } else {
                    "unarchiveRoom"
                };
                self.call(
                    method,
                    vec![room.get("_id").cloned().unwrap_or(Value::Null)],
                )
                .await?;
                RestResponse::success(serde_json::json!({}))
            }
            ("im", "create") if post => {
                let Some(username) = text_of(fields, "username") else {
                    return Ok(params_missing("username"));
                };
                let dm = self
                    .call("createDirectMessage", vec![Value::from(username.as_str())])
                    .await?;
                let mut room = dm.as_ref().map(to_json).unwrap_or_default();
                if let Some(rid) = room.get("rid").cloned() {
                    room["_id"] = rid;
                }
                RestResponse::success(serde_json::json!({"room": room}))
            }
            ("rooms" | "subscriptions", "get") if get => {
                let since = q.get("updatedSince").and_then(|d| parse_date(d));
                let (update, remove) = if family == "rooms" {
                    self.rooms.rooms_of(self.me(), since).await?
                } else {
                    self.rooms.subscriptions_of(self.me(), since).await?
                };
                RestResponse::success(serde_json::json!({
                    "update": update.iter().map(doc_json).collect::<Vec<_>>(),
                    "remove": remove.iter().map(doc_json).collect::<Vec<_>>(),
                }))
            }
            ("rooms", "roles") if get => {
                let Some(rid) = q.get("rid").or_else(|| q.get("roomId")) else {
                    return Ok(params_missing("rid"));
                };
                let roles = self.rooms.room_roles(self.me(), rid).await?;
                RestResponse::success(
                    serde_json::json!({"roles": roles.iter().map(doc_json).collect::<Vec<_>>()}),
                )
            }
            ("subscriptions", "read") if post => {
                let Some(rid) = text_of(fields, "rid").or_else(|| text_of(fields, "roomId")) else {
                    return Ok(params_missing("rid"));
                };
                self.call("readMessages", vec![Value::from(rid.as_str())])
                    .await?;
                RestResponse::success(serde_json::json!({}))
            }
            _ => wrong_method(),
        })
    }

    /// `chat.postMessage`: `roomId`, or `channel` (`#name`, `@username` for a DM, or an id),
    /// with `text` and the optional message fields.
    async fn post_message(&self, fields: &Document) -> Result<RestResponse, ServiceError> {
        let target = text_of(fields, "roomId").or_else(|| text_of(fields, "channel"));
        let Some(target) = target else {
            return Ok(params_missing("roomId or channel"));
        };
        let rid = if let Some(name) = target.strip_prefix('#') {
            match self.rooms.room_by_name(name).await? {
                Some(room) => text_of(&room, "_id").unwrap_or_default(),
                None => {
                    return Ok(RestResponse::failure(
                        400,
                        "Invalid room",
                        Some("error-invalid-room"),
                    ))
                }
            }
        } else if let Some(username) = target.strip_prefix('@') {
            let dm = self
                .call("createDirectMessage", vec![Value::from(username)])
                .await?;
            dm.as_ref()
                .and_then(Value::as_object)
                .and_then(|d| text_of(d, "rid"))
                .unwrap_or_default()
        } else {
            target.clone()
        };
        let mut message = Document::default();
        message.insert("rid".into(), Value::from(rid.as_str()));
        message.insert(
            "msg".into(),
            fields.get("text").cloned().unwrap_or(Value::from("")),
        );
        for key in ["alias", "emoji", "avatar", "attachments", "tmid"] {
            if let Some(v) = fields.get(key) {
                message.insert(key.into(), v.clone());
            }
        }
        let stored = self.send(Value::Object(message)).await?;
        let ts = crate::chat::messages::ts_of(&stored);
        Ok(RestResponse::success(serde_json::json!({
            "ts": ts as u64, "channel": target, "message": doc_json(&stored),
        })))
    }
}

/// A date in a query: ISO 8601 (`2024-01-02T03:04:05.678Z`) or milliseconds.
/// A date given as milliseconds since the epoch or as an ISO string; `None` for anything a
/// JavaScript `Date` cannot hold (±8.64e15 ms), so `1e308` is a bad parameter, not a failure
/// further in.
fn parse_date(text: &str) -> Option<f64> {
    const LARGEST_DATE_MS: f64 = 8.64e15;
    let ms = match text.parse::<f64>() {
        Ok(ms) => ms,
        Err(_) => super::json::parse_iso_date(text)?,
    };
    (ms.is_finite() && ms.abs() <= LARGEST_DATE_MS).then_some(ms)
}
