//! Rocket.Chat's `chat.*` routes on messages beyond sending and editing: starring,
//! pinning, reporting, the lists a room's messages are paged through (pinned, starred,
//! mentions, search, threads, discussions), following and reading threads, and
//! `subscriptions.unread`. Each calls the Messaging service as the caller, who must be
//! able to read the room: a stranger gets the answer a missing room gets.

use super::chat::{doc_json, params_missing, parse_date, route, Chat, ChatRoute, Reply, Stop};
use super::RestResponse;
use crate::chat::messages::lists::{Listing, UnreadFrom};
use crate::model::Value;

pub(super) const ROUTES: &[ChatRoute] = &[
    route!(Post, "chat.starMessage", star),
    route!(Post, "chat.unStarMessage", unstar),
    route!(Post, "chat.pinMessage", pin),
    route!(Post, "chat.unPinMessage", unpin),
    route!(Post, "chat.reportMessage", report),
    route!(Get, "chat.getPinnedMessages", pinned),
    route!(Get, "chat.getStarredMessages", starred),
    route!(Get, "chat.getMentionedMessages", mentioned),
    route!(Get, "chat.search", search),
    route!(Get, "chat.getThreadsList", threads),
    route!(Get, "chat.syncThreadsList", sync_threads),
    route!(Get, "chat.getDiscussions", discussions),
    route!(Post, "chat.followMessage", follow),
    route!(Post, "chat.unfollowMessage", unfollow),
    route!(Post, "subscriptions.unread", unread),
];

fn message_id(c: &Chat<'_>) -> Result<String, Stop> {
    c.field("messageId")
        .ok_or_else(|| Stop::Answer(params_missing("messageId")))
}

async fn star(c: &Chat<'_>) -> Reply {
    c.messages.star(&c.acting(), &message_id(c)?, true).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

async fn unstar(c: &Chat<'_>) -> Reply {
    c.messages.star(&c.acting(), &message_id(c)?, false).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

async fn pin(c: &Chat<'_>) -> Reply {
    let message = c.messages.pin(&c.acting(), &message_id(c)?, true).await?;
    Ok(RestResponse::success(
        serde_json::json!({"message": doc_json(&message)}),
    ))
}

async fn unpin(c: &Chat<'_>) -> Reply {
    c.messages.pin(&c.acting(), &message_id(c)?, false).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

async fn report(c: &Chat<'_>) -> Reply {
    let (Some(mid), Some(description)) = (c.field("messageId"), c.field("description")) else {
        return Ok(params_missing("messageId, description"));
    };
    c.messages.report(&c.acting(), &mid, &description).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// A page of the room's messages of `listing`, under `key`.
pub(super) async fn list(c: &Chat<'_>, listing: Listing, key: &str) -> Reply {
    let room = c.room().await?;
    let rid = super::chat::text_of(&room, "_id").unwrap_or_default();
    let (offset, count) = super::settings::paging(&c.q, &c.services.settings);
    let Some(page) = c
        .messages
        .listed(c.me(), &rid, &listing, offset, count)
        .await?
    else {
        return Ok(RestResponse::failure(
            403,
            "Not allowed",
            Some("error-not-allowed"),
        ));
    };
    let shown: Vec<serde_json::Value> = page.messages.iter().map(doc_json).collect();
    Ok(RestResponse::success(serde_json::json!({
        key: shown, "count": shown.len(), "offset": offset, "total": page.total,
    })))
}

async fn pinned(c: &Chat<'_>) -> Reply {
    list(c, Listing::Pinned, "messages").await
}

async fn starred(c: &Chat<'_>) -> Reply {
    list(c, Listing::StarredBy(c.caller.user_id.clone()), "messages").await
}

async fn mentioned(c: &Chat<'_>) -> Reply {
    list(c, Listing::Mentioning(c.caller.user_id.clone()), "messages").await
}

async fn search(c: &Chat<'_>) -> Reply {
    let Some(text) = c.q.get("searchText").cloned() else {
        return Ok(params_missing("searchText"));
    };
    list(c, Listing::Text(text), "messages").await
}

async fn discussions(c: &Chat<'_>) -> Reply {
    list(c, Listing::Discussions, "messages").await
}

/// The room the request names and every thread of it.
async fn every_thread(c: &Chat<'_>) -> Result<(String, Vec<crate::model::Document>), Stop> {
    let room = c.room().await?;
    let rid = super::chat::text_of(&room, "_id").unwrap_or_default();
    let threads = c
        .messages
        .listed(
            c.me(),
            &rid,
            &Listing::Threads,
            0,
            crate::chat::messages::lists::MAX_TOTAL,
        )
        .await?
        .map(|p| p.messages)
        .unwrap_or_default();
    Ok((rid, threads))
}

/// `?rid&type=all|following|unread&text`: the room's threads, as `threads`.
async fn threads(c: &Chat<'_>) -> Reply {
    let (rid, every) = every_thread(c).await?;
    let (offset, count) = super::settings::paging(&c.q, &c.services.settings);
    let uid = c.caller.user_id.as_str();
    let unread: Vec<String> = match c.rooms.subscription(&rid, uid).await? {
        Some(sub) => match sub.get("tunread") {
            Some(Value::Array(ids)) => ids
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        None => Vec::new(),
    };
    let words = c.q.get("text").map(|t| t.to_lowercase());
    let kind = c.q.get("type").map(String::as_str).unwrap_or("all");
    let chosen: Vec<serde_json::Value> = every
        .iter()
        .filter(|m| match kind {
            "following" => matches!(m.get("replies"), Some(Value::Array(r)) if r.iter().any(|x| x.as_str() == Some(uid))),
            "unread" => super::chat::text_of(m, "_id").is_some_and(|id| unread.contains(&id)),
            _ => true,
        })
        .filter(|m| {
            words.as_deref().is_none_or(|w| {
                super::chat::text_of(m, "msg").is_some_and(|t| t.to_lowercase().contains(w))
            })
        })
        .map(doc_json)
        .collect();
    let total = chosen.len();
    let page: Vec<serde_json::Value> = chosen.into_iter().skip(offset).take(count).collect();
    Ok(RestResponse::success(serde_json::json!({
        "threads": page, "count": page.len(), "offset": offset, "total": total,
    })))
}

/// `?rid&updatedSince`: the room's threads changed since, as `{threads: {update, remove}}`.
async fn sync_threads(c: &Chat<'_>) -> Reply {
    let Some(since) = c.q.get("updatedSince").and_then(|d| parse_date(d)) else {
        return Ok(params_missing("updatedSince"));
    };
    let (_, every) = every_thread(c).await?;
    let update: Vec<serde_json::Value> = every
        .iter()
        .filter(|m| matches!(m.get("_updatedAt"), Some(Value::Date(ms)) if *ms > since))
        .map(doc_json)
        .collect();
    Ok(RestResponse::success(serde_json::json!({
        "threads": {"update": update, "remove": []},
    })))
}

async fn follow(c: &Chat<'_>) -> Reply {
    let Some(mid) = c.field("mid") else {
        return Ok(params_missing("mid"));
    };
    c.messages.follow(&c.acting(), &mid, true).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

async fn unfollow(c: &Chat<'_>) -> Reply {
    let Some(mid) = c.field("mid") else {
        return Ok(params_missing("mid"));
    };
    c.messages.follow(&c.acting(), &mid, false).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}

/// `{roomId}` or `{firstUnreadMessage: {_id}}`.
async fn unread(c: &Chat<'_>) -> Reply {
    let from = if let Some(rid) = c.field("roomId") {
        UnreadFrom::Room(rid)
    } else if let Some(Value::Object(first)) = c.fields.get("firstUnreadMessage") {
        match first.get("_id").and_then(Value::as_str) {
            Some(id) => UnreadFrom::Message(id.to_owned()),
            None => return Ok(params_missing("firstUnreadMessage._id")),
        }
    } else {
        return Ok(params_missing("roomId or firstUnreadMessage"));
    };
    c.messages.mark_unread(&c.acting(), from).await?;
    Ok(RestResponse::success(serde_json::json!({})))
}
