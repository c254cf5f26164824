//! The Messaging service's DDP methods, in Rocket.Chat's parameter shapes. Each reads its
//! parameters with `check()` semantics and calls the typed API; nothing here decides who
//! may do what.
//!
//! A refused `sendMessage` is a method error (see `protocol-spec/messages.md`): recent
//! Rocket.Chat swallows most refusals and sends an ephemeral message instead, which leaves
//! a bot's `await` with no way to tell a stored message from a refused one.

use super::{Messages, Outgoing, MAX_PAGE};
use crate::chat::call::Call;
use crate::engine::args::{check_all, is_id, Pattern};
use crate::engine::error::ServiceError;
use crate::engine::registry::{MethodContext, MethodResult, Registry};
use crate::model::{Document, Value};
use std::sync::Arc;

/// Ids and room ids longer than this match nothing.
const MAX_ID: usize = 128;

fn date(value: Option<&Value>) -> Option<f64> {
    match value {
        Some(Value::Date(ms)) => Some(*ms),
        _ => None,
    }
}

fn string(value: Option<&Value>) -> Option<String> {
    value.and_then(Value::as_str).map(str::to_owned)
}

fn messages_value(messages: Vec<Document>) -> Value {
    Value::Array(messages.into_iter().map(Value::Object).collect())
}

fn object(pairs: Vec<(&str, Value)>) -> Value {
    Value::Object(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn limit(value: Option<&Value>, default: usize) -> usize {
    value
        .and_then(Value::as_f64)
        .filter(|n| *n >= 1.0)
        .map_or(default, |n| (n as usize).min(MAX_PAGE))
}

/// The `_id` of the first argument (`{_id, ...}`), once `check_all` has passed.
fn first_id(params: &[Value]) -> String {
    params
        .first()
        .and_then(Value::as_object)
        .and_then(|o| o.get("_id"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// A client-chosen message id: Meteor's id characters, not too long.
fn valid_message_id(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.len() <= 64 && is_id(s))
}

/// The `sendMessage` argument read into an [`Outgoing`].
pub(crate) fn outgoing(params: &[Value]) -> Result<Outgoing, ServiceError> {
    let opt = |p: Pattern| Pattern::maybe(p);
    check_all(
        &[Pattern::object_including(vec![
            (
                "_id",
                opt(Pattern::Where(Box::new(Pattern::STRING), valid_message_id)),
            ),
            ("rid", Pattern::string_up_to(MAX_ID)),
            ("msg", opt(Pattern::STRING)),
            ("tmid", opt(Pattern::string_up_to(MAX_ID))),
            ("tshow", opt(Pattern::BOOLEAN)),
            ("ts", opt(Pattern::DATE)),
            ("t", opt(Pattern::STRING)),
            ("alias", opt(Pattern::string_up_to(256))),
            ("avatar", opt(Pattern::string_up_to(2048))),
            ("emoji", opt(Pattern::string_up_to(256))),
            ("attachments", opt(Pattern::array_of(Pattern::OBJECT))),
            ("customFields", opt(Pattern::OBJECT)),
            ("groupable", opt(Pattern::BOOLEAN)),
        ])],
        &params[..params.len().min(1)],
    )?;
    let m = params[0].as_object().cloned().unwrap_or_default();
    if m.get("t")
        .and_then(Value::as_str)
        .is_some_and(|t| !t.is_empty())
    {
        return Err(ServiceError::Client(crate::model::MeteorError::new(
            "error-invalid-message-type",
            "A client may not send system messages",
        )));
    }
    let nonnull = |k: &str| m.get(k).filter(|v| !matches!(v, Value::Null)).cloned();
    Ok(Outgoing {
        id: string(m.get("_id")),
        rid: string(m.get("rid")).unwrap_or_default(),
        msg: string(m.get("msg")).unwrap_or_default(),
        tmid: string(m.get("tmid")),
        tshow: m.get("tshow") == Some(&Value::Bool(true)),
        ts: date(m.get("ts")),
        alias: string(m.get("alias")),
        avatar: string(m.get("avatar")),
        emoji: string(m.get("emoji")),
        attachments: nonnull("attachments"),
        custom_fields: nonnull("customFields"),
        groupable: m.get("groupable").and_then(|g| match g {
            Value::Bool(b) => Some(*b),
            _ => None,
        }),
        files: None,
    })
}

/// Registers the messaging methods.
pub fn register(registry: &mut Registry, messages: Arc<Messages>) {
    // Limited per user by its own rule (5 a second), not by the rules per method.
    registry.call_limits().has_own_limit("sendMessage");
    registry.method_of("sendMessage", &messages, send_message);
    registry.method_of("updateMessage", &messages, update_message);
    registry.method_of("deleteMessage", &messages, delete_message);
    registry.method_of("setReaction", &messages, set_reaction);
    for (name, pinned) in [("pinMessage", true), ("unpinMessage", false)] {
        registry.method_of(name, &messages, move |m, ctx, params| async move {
            check_all(
                &[
                    Pattern::object_including(vec![("_id", Pattern::string_up_to(MAX_ID))]),
                    Pattern::optional(Pattern::ANY),
                ],
                &params,
            )?;
            let id = first_id(&params);
            let message = m.pin(&Call::method(&ctx), &id, pinned).await?;
            Ok(Some(Value::Object(message)))
        });
    }
    registry.method_of("starMessage", &messages, star_message);
    registry.method_of("readMessages", &messages, read_messages);
    registry.method_of("loadHistory", &messages, load_history);
    registry.method_of("loadNextMessages", &messages, load_next_messages);
    registry.method_of("loadMissedMessages", &messages, load_missed_messages);
    registry.method_of(
        "loadSurroundingMessages",
        &messages,
        load_surrounding_messages,
    );
    registry.method_of("getSingleMessage", &messages, get_single_message);
    registry.method_of("getThreadMessages", &messages, get_thread_messages);
    registry.method_of("readThreads", &messages, |m, ctx, params| async move {
        check_all(&[Pattern::string_up_to(MAX_ID)], &params)?;
        let tmid = params[0].as_str().unwrap_or_default();
        m.read_thread(&Call::method(&ctx), tmid).await?;
        Ok(None)
    });
    for (name, follow) in [("followMessage", true), ("unfollowMessage", false)] {
        registry.method_of(name, &messages, move |m, ctx, params| async move {
            check_all(
                &[Pattern::object_including(vec![(
                    "mid",
                    Pattern::string_up_to(MAX_ID),
                )])],
                &params,
            )?;
            let mid = match params.first() {
                Some(Value::Object(d)) => string(d.get("mid")).unwrap_or_default(),
                _ => String::new(),
            };
            m.follow(&Call::method(&ctx), &mid, follow).await?;
            Ok(Some(Value::Bool(true)))
        });
    }
    registry.method_of("reportMessage", &messages, |m, ctx, params| async move {
        check_all(&[Pattern::string_up_to(MAX_ID), Pattern::STRING], &params)?;
        let (mid, why) = (params[0].as_str(), params[1].as_str());
        m.report(
            &Call::method(&ctx),
            mid.unwrap_or_default(),
            why.unwrap_or_default(),
        )
        .await?;
        Ok(Some(Value::Bool(true)))
    });
    registry.method_of("unreadMessages", &messages, |m, ctx, params| async move {
        check_all(
            &[
                Pattern::maybe(Pattern::object_including(vec![(
                    "_id",
                    Pattern::string_up_to(MAX_ID),
                )])),
                Pattern::maybe(Pattern::string_up_to(MAX_ID)),
            ],
            &params,
        )?;
        let from = match (params.first(), params.get(1)) {
            (_, Some(Value::String(rid))) => {
                crate::chat::messages::lists::UnreadFrom::Room(rid.clone())
            }
            (Some(Value::Object(first)), _) => crate::chat::messages::lists::UnreadFrom::Message(
                string(first.get("_id")).unwrap_or_default(),
            ),
            _ => return Err(ServiceError::match_failed()),
        };
        m.mark_unread(&Call::method(&ctx), from).await?;
        Ok(None)
    });
}

/// `sendMessage`.
async fn send_message(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    if params.is_empty() {
        return Err(ServiceError::match_failed());
    }
    let out = outgoing(&params)?;
    let stored = m.send(&Call::method(&ctx), out).await?;
    Ok(Some(Value::Object(stored)))
}

/// `updateMessage`.
async fn update_message(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[Pattern::object_including(vec![
            ("_id", Pattern::string_up_to(MAX_ID)),
            ("rid", Pattern::string_up_to(MAX_ID)),
            ("msg", Pattern::STRING),
        ])],
        &params[..params.len().min(1)],
    )?;
    let edited = params[0].as_object().cloned().unwrap_or_default();
    m.update(&Call::method(&ctx), &edited).await?;
    Ok(None)
}

/// `deleteMessage`.
async fn delete_message(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[Pattern::object_including(vec![(
            "_id",
            Pattern::string_up_to(MAX_ID),
        )])],
        &params[..params.len().min(1)],
    )?;
    let id = first_id(&params);
    m.delete(&Call::method(&ctx), &id).await?;
    Ok(None)
}

/// `setReaction`.
async fn set_reaction(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(128),
            Pattern::string_up_to(MAX_ID),
            Pattern::maybe(Pattern::BOOLEAN),
        ],
        &params,
    )?;
    let react = match params.get(2) {
        Some(Value::Bool(b)) => Some(*b),
        _ => None,
    };
    m.react(
        &Call::method(&ctx),
        params[0].as_str().unwrap_or_default(),
        params[1].as_str().unwrap_or_default(),
        react,
    )
    .await?;
    Ok(None)
}

/// `starMessage`.
async fn star_message(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[Pattern::object_including(vec![
            ("_id", Pattern::string_up_to(MAX_ID)),
            ("starred", Pattern::BOOLEAN),
        ])],
        &params[..params.len().min(1)],
    )?;
    let o = params[0].as_object().cloned().unwrap_or_default();
    let id = string(o.get("_id")).unwrap_or_default();
    let starred = o.get("starred") == Some(&Value::Bool(true));
    m.star(&Call::method(&ctx), &id, starred).await?;
    Ok(Some(Value::Bool(true)))
}

/// `readMessages`.
async fn read_messages(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_ID),
            Pattern::maybe(Pattern::BOOLEAN),
        ],
        &params,
    )?;
    let read_threads = params.get(1) == Some(&Value::Bool(true));
    m.mark_read(
        &Call::method(&ctx),
        params[0].as_str().unwrap_or_default(),
        read_threads,
    )
    .await?;
    Ok(None)
}

/// `loadHistory`.
async fn load_history(m: Arc<Messages>, ctx: MethodContext, params: Vec<Value>) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_ID),
            Pattern::maybe(Pattern::DATE),
            Pattern::maybe(Pattern::NUMBER),
            Pattern::maybe(Pattern::DATE),
            Pattern::maybe(Pattern::BOOLEAN),
        ],
        &params,
    )?;
    let rid = params[0].as_str().unwrap_or_default();
    let history = m
        .history(
            ctx.user_id.as_deref(),
            rid,
            date(params.get(1)),
            limit(params.get(2), 20),
            date(params.get(3)),
            params.get(4) != Some(&Value::Bool(false)),
        )
        .await?;
    let Some(history) = history else {
        return Ok(Some(Value::Bool(false)));
    };
    let mut out = vec![
        ("messages", messages_value(history.messages)),
        (
            "unreadNotLoaded",
            Value::Number(history.unread_not_loaded as f64),
        ),
    ];
    if let Some(first) = history.first_unread {
        out.push(("firstUnread", Value::Object(first)));
    }
    Ok(Some(object(out)))
}

/// `loadNextMessages`.
async fn load_next_messages(
    m: Arc<Messages>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[
            Pattern::string_up_to(MAX_ID),
            Pattern::maybe(Pattern::DATE),
            Pattern::maybe(Pattern::NUMBER),
        ],
        &params,
    )?;
    let rid = params[0].as_str().unwrap_or_default();
    let found = m
        .after(
            ctx.user_id.as_deref(),
            rid,
            date(params.get(1)),
            limit(params.get(2), 20),
        )
        .await?;
    Ok(Some(match found {
        Some(messages) => object(vec![("messages", messages_value(messages))]),
        None => Value::Bool(false),
    }))
}

/// `loadMissedMessages`.
async fn load_missed_messages(
    m: Arc<Messages>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(&[Pattern::string_up_to(MAX_ID), Pattern::DATE], &params)?;
    let rid = params[0].as_str().unwrap_or_default();
    let found = m
        .after(ctx.user_id.as_deref(), rid, date(params.get(1)), MAX_PAGE)
        .await?;
    Ok(Some(match found {
        Some(messages) => messages_value(messages),
        None => Value::Bool(false),
    }))
}

/// `loadSurroundingMessages`.
async fn load_surrounding_messages(
    m: Arc<Messages>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[
            Pattern::object_including(vec![("_id", Pattern::string_up_to(MAX_ID))]),
            Pattern::maybe(Pattern::NUMBER),
        ],
        &params,
    )?;
    let id = first_id(&params);
    let found = m
        .surrounding(ctx.user_id.as_deref(), &id, limit(params.get(1), 50))
        .await?;
    Ok(Some(match found {
        Some((messages, before, after)) => object(vec![
            ("messages", messages_value(messages)),
            ("moreBefore", Value::Bool(before)),
            ("moreAfter", Value::Bool(after)),
        ]),
        None => Value::Bool(false),
    }))
}

/// `getSingleMessage`.
async fn get_single_message(
    m: Arc<Messages>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(&[Pattern::string_up_to(MAX_ID)], &params)?;
    let found = m
        .single(
            ctx.user_id.as_deref(),
            params[0].as_str().unwrap_or_default(),
        )
        .await?;
    Ok(found.map(Value::Object))
}

/// `getThreadMessages`.
async fn get_thread_messages(
    m: Arc<Messages>,
    ctx: MethodContext,
    params: Vec<Value>,
) -> MethodResult {
    check_all(
        &[Pattern::object_including(vec![
            ("tmid", Pattern::string_up_to(MAX_ID)),
            ("limit", Pattern::maybe(Pattern::NUMBER)),
            ("skip", Pattern::maybe(Pattern::NUMBER)),
        ])],
        &params[..params.len().min(1)],
    )?;
    let o = params[0].as_object().cloned().unwrap_or_default();
    let skip = o
        .get("skip")
        .and_then(Value::as_f64)
        .unwrap_or(0.0)
        .max(0.0) as usize;
    let found = m
        .thread(
            ctx.user_id.as_deref(),
            &string(o.get("tmid")).unwrap_or_default(),
            skip,
            limit(o.get("limit"), 50),
        )
        .await?;
    Ok(Some(messages_value(found)))
}
