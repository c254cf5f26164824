//! Rocket.Chat's `chat.*` routes, and what every chat route shares: the request's fields
//! and query, the room it names as the caller may see it, pages of lists, dates.
//!
//! Each route is one line of a table (method, name, handler); a handler reads the request,
//! calls the chat services' typed API as the caller (the same send, edit, delete and
//! reaction paths DDP takes, with their checks and hook points) and shapes the answer as
//! Rocket.Chat does. No route runs a DDP method: `method.call` is the only way REST does.
//! The room routes (`channels.*`, `groups.*`, `im.*`, `rooms.*`, `subscriptions.*`) are in
//! [`super::rooms`].

use super::accounts::{body, query_pairs};
use super::json::to_json;
use super::{Caller, RestMethod, RestRequest, RestResponse};
use crate::chat::call::Call;
use crate::chat::messages::Messages;
use crate::chat::rooms::Rooms;
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use std::collections::HashMap;

/// Most items one page of a list holds (Rocket.Chat's default `API_Upper_Count_Limit`).
pub(super) const MAX_COUNT: usize = 100;

/// One request to a chat route: the services, the caller, and what the request carries.
pub(super) struct Chat<'a> {
    /// Every service REST adapts (for routes beyond rooms and messages).
    pub services: &'a super::RestServices,
    pub rooms: &'a Rooms,
    pub messages: &'a Messages,
    pub caller: &'a Caller,
    pub request: &'a RestRequest,
    /// The part of the route's name before the dot (`channels`, `groups`, ...).
    pub family: &'static str,
    /// The body's fields (none for a GET).
    pub fields: Document,
    /// The query string's parameters.
    pub q: HashMap<String, String>,
}

/// Why a handler stops early: a service's refusal, or an answer already shaped.
pub(super) enum Stop {
    Service(ServiceError),
    Answer(RestResponse),
}

impl From<ServiceError> for Stop {
    fn from(err: ServiceError) -> Self {
        Stop::Service(err)
    }
}

impl From<RestResponse> for Stop {
    fn from(answer: RestResponse) -> Self {
        Stop::Answer(answer)
    }
}

/// What a handler gives back.
pub(super) type Reply = Result<RestResponse, Stop>;

/// A handler's answer to come.
pub(super) type ReplyFuture<'r> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Reply> + Send + 'r>>;

/// A handler: reads the request, calls the typed API, shapes the answer.
pub(super) type Handler = for<'r> fn(&'r Chat<'r>) -> ReplyFuture<'r>;

/// One chat route: `/api/v1/<name>` answered by `handler` for `methods` (one, mostly; a
/// route such as `push.token` takes a POST and a DELETE).
pub(super) struct ChatRoute {
    pub(super) name: &'static str,
    pub(super) methods: &'static [RestMethod],
    pub(super) handler: Handler,
}

impl std::fmt::Debug for ChatRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.methods, self.name)
    }
}

/// A route is its name: the table holds each once.
impl PartialEq for ChatRoute {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for ChatRoute {}

/// A table line: `route!(Post, "chat.sendMessage", send_message)`, or with several methods
/// `route!(Post | Delete, "push.token", push_token)`.
macro_rules! route {
    ($($method:ident)|+, $name:literal, $handler:path) => {
        $crate::rest::chat::ChatRoute {
            name: $name,
            methods: &[$($crate::rest::RestMethod::$method),+],
            handler: |chat| Box::pin($handler(chat)),
        }
    };
}
pub(super) use route;

/// The `chat.*` routes.
const ROUTES: &[ChatRoute] = &[
    route!(Post, "chat.sendMessage", send_message),
    route!(Post, "chat.postMessage", post_message),
    route!(Post, "chat.update", update),
    route!(Post, "chat.delete", delete),
    route!(Get, "chat.getMessage", get_message),
    route!(Get, "chat.syncMessages", sync_messages),
    route!(Post, "chat.react", react),
];

/// Every chat route: the messages' and the rooms'.
pub(super) fn routes() -> impl Iterator<Item = &'static ChatRoute> {
    ROUTES
        .iter()
        .chain(super::rooms::ROUTES)
        .chain(super::messages::ROUTES)
        .chain(super::users::ROUTES)
        .chain(super::workspace::ROUTES)
        .chain(super::uploads::ROUTES)
        .chain(super::plugins::ROUTES)
}

/// The query string's parameters.
pub(super) fn query(request: &RestRequest) -> HashMap<String, String> {
    query_pairs(request).into_iter().collect()
}

/// The parameter a request lacks, as Rocket.Chat words it.
pub(super) fn params_missing(what: &str) -> RestResponse {
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

pub(super) fn text_of(d: &Document, key: &str) -> Option<String> {
    d.get(key).and_then(Value::as_str).map(str::to_owned)
}

impl<'a> Chat<'a> {
    /// A request to `route` as `caller`; the refusal of a body that cannot be read.
    pub(super) fn new(
        services: &'a super::RestServices,
        caller: &'a Caller,
        request: &'a RestRequest,
        route: &'static ChatRoute,
    ) -> Result<Self, RestResponse> {
        // A streamed body is its handler's to read.
        let fields =
            if request.method == RestMethod::Get || super::uploads::streams_body(&request.path) {
                Document::default()
            } else {
                body(request)?
            };
        Ok(Self {
            services,
            rooms: &services.rooms,
            messages: &services.messages,
            caller,
            request,
            family: route.name.split_once('.').map_or(route.name, |(f, _)| f),
            fields,
            q: query(request),
        })
    }

    /// Answers with `route`'s handler, or 405 for another method.
    pub(super) async fn handle(&self, route: &ChatRoute) -> RestResponse {
        if !route.methods.contains(&self.request.method) {
            return RestResponse::failure(405, "Method not allowed", None);
        }
        match (route.handler)(self).await {
            Ok(answer) | Err(Stop::Answer(answer)) => answer,
            Err(Stop::Service(err)) => RestResponse::from_service(&err),
        }
    }

    /// The caller as the chat services see them: no write fence over REST.
    pub(super) fn acting(&self) -> Call<'_> {
        Call::unfenced(self.me()).from_address(self.request.client_address)
    }

    pub(super) fn me(&self) -> Option<&str> {
        Some(self.caller.user_id.as_str())
    }

    /// A string field of the body.
    pub(super) fn field(&self, key: &str) -> Option<String> {
        text_of(&self.fields, key)
    }

    /// The room a request names (`roomId`, or `roomName` / `channel`), when the caller may
    /// see it; the refusal otherwise (the same for a room that does not exist).
    pub(super) async fn room(&self) -> Result<Document, Stop> {
        let pick = |k: &str| self.field(k).or_else(|| self.q.get(k).cloned());
        let found = match (pick("roomId").or_else(|| pick("rid")), pick("roomName")) {
            (Some(id), _) => self.rooms.room(&id).await?,
            (None, Some(name)) => self.rooms.room_by_name(&name).await?,
            _ => return Err(params_missing("roomId").into()),
        };
        // A room the caller may not see gets the answer a missing room gets: a stranger
        // cannot tell a private room that exists from one that does not.
        let not_found = || {
            Stop::Answer(RestResponse::failure(
                400,
                "The required \"roomId\" or \"roomName\" param provided does not match any channel",
                Some("error-room-not-found"),
            ))
        };
        let room = found.ok_or_else(not_found)?;
        if self.rooms.can_access(&room, self.me()).await? {
            Ok(room)
        } else {
            Err(not_found())
        }
    }

    /// Sends `message` (`sendMessage`'s argument) as the caller, through the Messaging
    /// service's one send path, with the argument check `sendMessage` makes.
    pub(super) async fn send(&self, message: Value) -> Result<Document, ServiceError> {
        let out = crate::chat::messages::methods::outgoing(&[message])?;
        self.messages.send(&self.acting(), out).await
    }
}

async fn send_message(c: &Chat<'_>) -> Reply {
    let Some(message) = c.fields.get("message").cloned() else {
        return Ok(params_missing("message"));
    };
    let stored = c.send(message).await?;
    Ok(RestResponse::success(
        serde_json::json!({"message": doc_json(&stored)}),
    ))
}

fn invalid_room() -> RestResponse {
    RestResponse::failure(400, "Invalid room", Some("error-invalid-room"))
}

/// `chat.postMessage`: `roomId`, or `channel` (`#name`, `@username` for a DM, or an id),
/// with `text` and the optional message fields.
async fn post_message(c: &Chat<'_>) -> Reply {
    let Some(target) = c.field("roomId").or_else(|| c.field("channel")) else {
        return Ok(params_missing("roomId or channel"));
    };
    let rid = if let Some(name) = target.strip_prefix('#') {
        match c.rooms.room_by_name(name).await? {
            Some(room) => text_of(&room, "_id").unwrap_or_default(),
            None => return Ok(invalid_room()),
        }
    } else if let Some(username) = target.strip_prefix('@') {
        let dm = c
            .rooms
            .direct_message(&c.acting(), &[username.to_owned()])
            .await?;
        text_of(&dm, "_id").unwrap_or_default()
    } else {
        // A bare target is a room id, else a room name (Rocket.Chat tries both).
        let found = match c.rooms.room(&target).await? {
            Some(room) => Some(room),
            None => c.rooms.room_by_name(&target).await?,
        };
        match found {
            Some(room) => text_of(&room, "_id").unwrap_or_default(),
            None => return Ok(invalid_room()),
        }
    };
    let mut message = Document::default();
    message.insert("rid".into(), Value::from(rid.as_str()));
    message.insert(
        "msg".into(),
        c.fields.get("text").cloned().unwrap_or(Value::from("")),
    );
    for key in ["alias", "emoji", "avatar", "attachments", "tmid"] {
        if let Some(v) = c.fields.get(key) {
            message.insert(key.into(), v.clone());
        }
    }
    let stored = c.send(Value::Object(message)).await?;
    let ts = crate::chat::messages::ts_of(&stored);
    Ok(RestResponse::success(serde_json::json!({
        "ts": ts as u64, "channel": target, "message": doc_json(&stored),
    })))
}

async fn update(c: &Chat<'_>) -> Reply {
    let (Some(rid), Some(id), Some(text)) = (c.field("roomId"), c.field("msgId"), c.field("text"))
    else {
        return Ok(params_missing("roomId, msgId, text"));
    };
    let mut edit = Document::default();
    edit.insert("_id".into(), Value::from(id.as_str()));
    edit.insert("rid".into(), Value::from(rid.as_str()));
    edit.insert("msg".into(), Value::from(text.as_str()));
    c.messages.update(&c.acting(), &edit).await?;
    let message = c.messages.single(c.me(), &id).await?;
    Ok(RestResponse::success(
        serde_json::json!({"message": message.as_ref().map(doc_json)}),
    ))
}

async fn delete(c: &Chat<'_>) -> Reply {
    let Some(id) = c.field("msgId") else {
        return Ok(params_missing("msgId"));
    };
    c.messages.delete(&c.acting(), &id).await?;
    Ok(RestResponse::success(
        serde_json::json!({"_id": id, "ts": crate::engine::build::now_ms() as u64}),
    ))
}

async fn get_message(c: &Chat<'_>) -> Reply {
    let Some(id) = c.q.get("msgId") else {
        return Ok(params_missing("msgId"));
    };
    Ok(match c.messages.single(c.me(), id).await? {
        Some(m) => RestResponse::success(serde_json::json!({"message": doc_json(&m)})),
        None => RestResponse::failure(400, "Message not found", Some("error-not-allowed")),
    })
}

async fn sync_messages(c: &Chat<'_>) -> Reply {
    let (Some(rid), Some(since)) = (c.q.get("roomId"), c.q.get("lastUpdate")) else {
        return Ok(params_missing("roomId, lastUpdate"));
    };
    let Some(since) = parse_date(since) else {
        return Ok(RestResponse::failure(
            400,
            "The \"lastUpdate\" query parameter must be a valid date.",
            Some("error-invalid-params"),
        ));
    };
    Ok(match c.messages.changed_since(c.me(), rid, since).await? {
        Some((updated, deleted)) => RestResponse::success(serde_json::json!({"result": {
            "updated": updated.iter().map(doc_json).collect::<Vec<_>>(),
            "deleted": deleted.iter().map(doc_json).collect::<Vec<_>>(),
        }})),
        None => RestResponse::failure(403, "Not allowed", Some("error-not-allowed")),
    })
}

async fn react(c: &Chat<'_>) -> Reply {
    let (Some(id), Some(emoji)) = (
        c.field("messageId"),
        c.field("emoji").or_else(|| c.field("reaction")),
    ) else {
        return Ok(params_missing("messageId, emoji"));
    };
    let should_react = match c.fields.get("shouldReact") {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    c.messages
        .react(&c.acting(), &emoji, &id, should_react)
        .await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// A date in a query: ISO 8601 (`2024-01-02T03:04:05.678Z`) or milliseconds.
/// A date given as milliseconds since the epoch or as an ISO string; `None` for anything a
/// JavaScript `Date` cannot hold (±8.64e15 ms), so `1e308` is a bad parameter, not a failure
/// further in.
pub(super) fn parse_date(text: &str) -> Option<f64> {
    const LARGEST_DATE_MS: f64 = 8.64e15;
    let ms = match text.parse::<f64>() {
        Ok(ms) => ms,
        Err(_) => super::json::parse_iso_date(text)?,
    };
    (ms.is_finite() && ms.abs() <= LARGEST_DATE_MS).then_some(ms)
}
