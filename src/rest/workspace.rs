//! Rocket.Chat's workspace routes the apps call at start and on the way: `roles.list`,
//! `commands.list` / `.run` / `.preview`, `emoji-custom.list` / `.all` / `.delete`,
//! `push.token` (POST and DELETE), `push.info` and `push.get` (what a notification about a
//! message shows, for a message the caller may read), `instances.get` (the deployment's
//! instances, for `view-statistics`). Signed-in callers only; each handler
//! reads the request as values and calls a service's typed API.

use super::chat::{params_missing, parse_date, route, Chat, ChatRoute, Reply, Stop};
use super::json::to_json;
use super::{RestMethod, RestResponse};
use crate::chat::commands::Invocation;
use crate::model::{Document, Value};

pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Get, "roles.list", roles_list),
    route!(Get, "commands.list", commands_list),
    route!(Post, "commands.run", commands_run),
    route!(Get | Post, "commands.preview", commands_preview),
    route!(Get, "emoji-custom.list", emoji_list),
    route!(Get, "emoji-custom.all", emoji_all),
    route!(Post, "emoji-custom.delete", emoji_delete),
    route!(Post | Delete, "push.token", push_token),
    route!(Get, "push.info", push_info),
    route!(Get, "push.get", push_get),
    route!(Get, "instances.get", instances_get),
];

/// `GET instances.get` (`view-statistics`): every instance of the deployment, in
/// Rocket.Chat's shape (`address`, `currentStatus`, `instanceRecord`), with its figures
/// (`instanceRecord.extraInformation`: connections, keys listened to, version, start).
async fn instances_get(c: &Chat<'_>) -> Reply {
    let instances = c.services.presence.instances(&c.acting()).await?;
    let list: Vec<serde_json::Value> = instances
        .into_iter()
        .map(|(record, alive, local)| {
            let address = record
                .get("extraInformation")
                .and_then(Value::as_object)
                .and_then(|e| e.get("address"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let heartbeat = record.get("_updatedAt").cloned().unwrap_or(Value::Null);
            serde_json::json!({
                "address": address,
                "currentStatus": {
                    "connected": alive, "local": local,
                    "lastHeartbeatTime": to_json(&heartbeat),
                },
                "instanceRecord": to_json(&Value::Object(record)),
            })
        })
        .collect();
    Ok(RestResponse::success(
        serde_json::json!({"instances": list}),
    ))
}

fn values(docs: Vec<Document>) -> Vec<serde_json::Value> {
    docs.into_iter()
        .map(|d| to_json(&Value::Object(d)))
        .collect()
}

async fn roles_list(c: &Chat<'_>) -> Reply {
    let roles = c.services.permissions.role_documents().await?;
    Ok(RestResponse::success(
        serde_json::json!({"roles": values(roles)}),
    ))
}

async fn commands_list(c: &Chat<'_>) -> Reply {
    let (offset, count) = super::settings::paging(&c.q, &c.services.settings);
    let all: Vec<serde_json::Value> = c
        .services
        .commands
        .list()
        .into_iter()
        .map(|cmd| {
            serde_json::json!({
                "command": cmd.command, "params": cmd.params, "description": cmd.description,
                "clientOnly": false, "providesPreview": false,
            })
        })
        .collect();
    let total = all.len();
    let page: Vec<serde_json::Value> = all.into_iter().skip(offset).take(count).collect();
    Ok(RestResponse::success(serde_json::json!({
        "commands": page, "count": page.len(), "offset": offset, "total": total,
    })))
}

/// A field of the body, or of the query string for a GET.
fn given(c: &Chat<'_>, key: &str) -> Option<String> {
    if c.request.method == RestMethod::Get {
        c.q.get(key).cloned()
    } else {
        c.field(key)
    }
}

/// `{command, params?, roomId, tmid?, triggerId?}`: runs the command as the caller.
async fn commands_run(c: &Chat<'_>) -> Reply {
    let Some(name) = given(c, "command") else {
        return Ok(params_missing("command"));
    };
    let Some(rid) = given(c, "roomId") else {
        return Ok(params_missing("roomId"));
    };
    let call = c.acting();
    let invocation = Invocation {
        call: &call,
        rid,
        params: given(c, "params").unwrap_or_default(),
        tmid: given(c, "tmid"),
    };
    let result = c
        .services
        .commands
        .run(name.trim_start_matches('/'), invocation)
        .await?;
    let mut answer = serde_json::Map::new();
    if let Some(result) = result {
        answer.insert("result".into(), to_json(&result));
    }
    Ok(RestResponse::success(answer.into()))
}

/// No built-in command offers previews: the command and room are checked, and the answer
/// carries none.
async fn commands_preview(c: &Chat<'_>) -> Reply {
    let Some(name) = given(c, "command") else {
        return Ok(params_missing("command"));
    };
    if !c
        .services
        .commands
        .list()
        .iter()
        .any(|cmd| cmd.command == name.trim_start_matches('/'))
    {
        return Ok(RestResponse::failure(
            400,
            "The command provided does not exist (or is disabled).",
            Some("error-invalid-command"),
        ));
    }
    c.room().await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `?updatedSince=<ISO date>`: `{emojis: {update, remove}}`.
async fn emoji_list(c: &Chat<'_>) -> Reply {
    let since = match c.q.get("updatedSince").filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(parse_date(text).ok_or_else(|| {
            Stop::Answer(RestResponse::failure(
                400,
                "Invalid date for `updatedSince`",
                Some("error-roomId-param-invalid"),
            ))
        })?),
    };
    let list = c.services.emoji.list(since).await?;
    Ok(RestResponse::success(serde_json::json!({
        "emojis": {"update": values(list.update), "remove": values(list.remove)},
    })))
}

async fn emoji_all(c: &Chat<'_>) -> Reply {
    let (offset, count) = super::settings::paging(&c.q, &c.services.settings);
    let all = c.services.emoji.list(None).await?.update;
    let total = all.len();
    let page = values(all.into_iter().skip(offset).take(count).collect());
    Ok(RestResponse::success(serde_json::json!({
        "emojis": page, "count": page.len(), "offset": offset, "total": total,
    })))
}

async fn emoji_delete(c: &Chat<'_>) -> Reply {
    let Some(id) = c.field("emojiId") else {
        return Ok(params_missing("emojiId"));
    };
    c.services.emoji.delete(&c.acting(), &id).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// POST `{id?, type, value, appName}` registers the device; DELETE `{token}` forgets it.
async fn push_token(c: &Chat<'_>) -> Reply {
    let call = c.acting();
    if c.request.method == RestMethod::Delete {
        let Some(token) = c.field("token") else {
            return Ok(params_missing("token"));
        };
        if !c.services.push.unregister(&call, &token).await? {
            return Ok(RestResponse::failure(404, "Not found", None));
        }
        return Ok(RestResponse::success(serde_json::json!({})));
    }
    let (Some(kind), Some(value), Some(app_name)) =
        (c.field("type"), c.field("value"), c.field("appName"))
    else {
        return Ok(params_missing("type, value and appName"));
    };
    let record = c
        .services
        .push
        .register(
            &call,
            crate::chat::push::NewToken {
                id: c.field("id"),
                kind,
                value,
                app_name,
            },
        )
        .await?;
    Ok(RestResponse::success(serde_json::json!({
        "result": to_json(&crate::chat::push::token_view(&record)),
    })))
}

/// comet sends no pushes yet: no gateway.
async fn push_info(_c: &Chat<'_>) -> Reply {
    Ok(RestResponse::success(serde_json::json!({
        "pushGatewayEnabled": false, "defaultPushGateway": false,
    })))
}

/// `?id=<messageId>`: the notification a push about the message carries.
async fn push_get(c: &Chat<'_>) -> Reply {
    let Some(id) = c.q.get("id") else {
        return Ok(params_missing("id"));
    };
    let Some(message) = c.messages.single(c.me(), id).await? else {
        return Ok(RestResponse::failure(
            400,
            "Message not found",
            Some("error-message-not-found"),
        ));
    };
    let rid = super::chat::text_of(&message, "rid").unwrap_or_default();
    let room = c.rooms.room(&rid).await?.unwrap_or_default();
    let sender = match message.get("u") {
        Some(Value::Object(u)) => u.clone(),
        _ => Document::default(),
    };
    let kind = super::chat::text_of(&room, "t").unwrap_or_default();
    let sender_name = super::chat::text_of(&sender, "username").unwrap_or_default();
    let title = if kind == "d" {
        sender_name.clone()
    } else {
        super::chat::text_of(&room, "fname")
            .or_else(|| super::chat::text_of(&room, "name"))
            .unwrap_or_default()
    };
    let body = super::chat::text_of(&message, "msg").unwrap_or_default();
    let text = if kind == "d" {
        body
    } else {
        format!("{sender_name}: {body}")
    };
    let host = c
        .services
        .settings
        .value("Site_Url")
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    Ok(RestResponse::success(serde_json::json!({"data": {
        "message": to_json(&Value::Object(message.clone())),
        "notification": {
            "title": title, "text": text,
            "payload": {
                "host": host, "rid": rid, "type": kind, "messageId": id,
                "sender": to_json(&Value::Object(sender)),
                "name": super::chat::text_of(&room, "name"),
                "messageType": super::chat::text_of(&message, "t"),
                "tmid": super::chat::text_of(&message, "tmid"),
            },
        },
    }})))
}
