//! Lists of a room's messages a client pages through: pinned, starred by the caller,
//! mentioning the caller, found by text, threads, discussions, and every message; and the
//! caller's own side of threads (following one, reading one).
//!
//! Each reads one room (the caller must be able to read it) through the store's `rid`
//! index, newest first; a search text is matched as literal text (escaped, case
//! insensitive), never as a pattern the client writes. Totals are counted up to
//! [`MAX_TOTAL`].

use super::Messages;
use crate::chat::call::Call;
use crate::chat::collections::{MESSAGES, SUBSCRIPTIONS};
use crate::chat::{client_error, literal_pattern, text};
use crate::engine::error::ServiceError;
use crate::model::Document;

/// Most messages a total counts (a client shows "many" beyond).
pub const MAX_TOTAL: usize = 10_000;
/// Longest report description.
const MAX_REPORT: usize = 2000;
/// Longest search text.
const MAX_SEARCH: usize = 256;

/// Which of a room's messages a list holds.
#[derive(Clone, Debug)]
pub enum Listing {
    /// Every visible message.
    All,
    Pinned,
    /// Starred by this user.
    StarredBy(String),
    /// Mentioning this user by name.
    Mentioning(String),
    /// Holding this text.
    Text(String),
    /// Thread roots (messages with replies).
    Threads,
    /// Messages that opened a discussion.
    Discussions,
}

/// Where a subscription becomes unread from.
pub enum UnreadFrom {
    /// The room's last message.
    Room(String),
    /// This message.
    Message(String),
}

/// A page of a list and how many there are in all (up to [`MAX_TOTAL`]).
pub struct Page {
    pub messages: Vec<Document>,
    pub total: usize,
}

impl Messages {
    /// A page of `rid`'s messages of `listing`, newest first; `None` when `caller` may
    /// not read the room.
    pub async fn listed(
        &self,
        caller: Option<&str>,
        rid: &str,
        listing: &Listing,
        offset: usize,
        count: usize,
    ) -> Result<Option<Page>, ServiceError> {
        self.rooms.caller(caller).await?;
        if self.readable_room(caller, rid).await?.is_none() {
            return Ok(None);
        }
        let mut filter = self.visible(rid);
        match listing {
            Listing::All => {}
            Listing::Pinned => filter["pinned"] = true.into(),
            Listing::StarredBy(uid) => filter["starred._id"] = uid.as_str().into(),
            Listing::Mentioning(uid) => filter["mentions._id"] = uid.as_str().into(),
            Listing::Text(words) => {
                let words = words.trim();
                if words.is_empty() || words.chars().count() > MAX_SEARCH {
                    return Err(client_error(
                        "error-invalid-search",
                        "The search text must be 1 to 256 characters",
                    ));
                }
                filter["msg"] =
                    serde_json::json!({"$regex": literal_pattern(words), "$options": "i"});
                // What a search finds is what people wrote, not system messages.
                filter["t"] = serde_json::json!({"$exists": false});
            }
            Listing::Threads => filter["tcount"] = serde_json::json!({"$gt": 0}),
            Listing::Discussions => filter["drid"] = serde_json::json!({"$exists": true}),
        }
        let every = self.find(filter.clone(), true, 0, Some(MAX_TOTAL)).await?;
        let total = every.len();
        let messages = every.into_iter().skip(offset).take(count).collect();
        Ok(Some(Page { messages, total }))
    }

    /// `followMessage` / `unfollowMessage`: the caller is told of the thread's replies
    /// (is in its `replies`), or no longer.
    pub async fn follow(
        &self,
        call: &Call<'_>,
        mid: &str,
        follow: bool,
    ) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        self.rooms.caller(Some(uid)).await?;
        if !self.flag("Threads_enabled") {
            return Err(client_error("error-not-allowed", "not-allowed"));
        }
        if self.readable_message(Some(uid), mid).await?.is_none() {
            return Err(client_error("error-invalid-message", "Invalid message"));
        }
        let modifier = if follow {
            serde_json::json!({"$addToSet": {"replies": uid}})
        } else {
            serde_json::json!({"$pull": {"replies": uid}})
        };
        self.rooms
            .write_update(
                call,
                MESSAGES,
                serde_json::json!({"_id": mid}),
                modifier,
                false,
            )
            .await?;
        Ok(())
    }

    /// `reportMessage`: the caller reports a message it can read, with why, for the
    /// administrators (`rocketchat_reports`); the id of the report.
    pub async fn report(
        &self,
        call: &Call<'_>,
        mid: &str,
        description: &str,
    ) -> Result<String, ServiceError> {
        let uid = call.require_user()?;
        let user = self.rooms.caller(Some(uid)).await?;
        let description = description.trim();
        if description.is_empty() || description.chars().count() > MAX_REPORT {
            return Err(client_error(
                "error-invalid-description",
                "Invalid description",
            ));
        }
        let Some((message, room)) = self.readable_message(Some(uid), mid).await? else {
            return Err(client_error(
                "error-invalid-message_id",
                "Invalid message id",
            ));
        };
        let id = crate::model::random::random_id();
        let now = crate::engine::build::now_ms();
        let mut report = crate::engine::build::doc(serde_json::json!({
            "_id": id, "description": description, "ts": {"$date": now},
            "userId": uid,
            "reportedBy": {"_id": uid, "username": text(&user, "username"), "name": text(&user, "name")},
            "room": {"_id": text(&room, "_id"), "name": text(&room, "name"), "fname": text(&room, "fname"), "t": text(&room, "t")},
        }))?;
        report.insert("message".into(), crate::model::Value::Object(message));
        let ack = self
            .store
            .insert(crate::chat::collections::REPORTS, report)
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(id)
    }

    /// `unreadMessages`: the caller's subscription marked unread from a message on (one the
    /// caller did not write), or from the room's last message.
    pub async fn mark_unread(&self, call: &Call<'_>, from: UnreadFrom) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        self.rooms.caller(Some(uid)).await?;
        let first = match from {
            UnreadFrom::Room(rid) => {
                if self.readable_room(Some(uid), &rid).await?.is_none() {
                    return Err(crate::chat::not_allowed());
                }
                self.find(self.visible(&rid), true, 0, Some(1))
                    .await?
                    .pop()
                    .ok_or_else(|| {
                        client_error(
                            "error-no-message-for-unread",
                            "There are no messages to mark unread",
                        )
                    })?
            }
            UnreadFrom::Message(mid) => {
                let Some((message, _)) = self.readable_message(Some(uid), &mid).await? else {
                    return Err(client_error("error-action-not-allowed", "Not allowed"));
                };
                let author = message
                    .get("u")
                    .and_then(crate::model::Value::as_object)
                    .and_then(|u| text(u, "_id"));
                if author == Some(uid) {
                    return Err(client_error("error-action-not-allowed", "Not allowed"));
                }
                message
            }
        };
        let rid = text(&first, "rid").unwrap_or_default().to_owned();
        // Just before the message, so it counts as unread.
        let ls = super::ts_of(&first) - 1.0;
        self.rooms
            .write_update(
                call,
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": uid}),
                serde_json::json!({"$set": {"open": true, "alert": true, "ls": {"$date": ls}, "_updatedAt": {"$date": crate::engine::build::now_ms()}}}),
                false,
            )
            .await?;
        Ok(())
    }

    /// `readThreads`: the thread `tmid` is no longer unread for the caller.
    pub async fn read_thread(&self, call: &Call<'_>, tmid: &str) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        self.rooms.caller(Some(uid)).await?;
        let Some((message, _)) = self.readable_message(Some(uid), tmid).await? else {
            return Err(client_error("error-invalid-message", "Invalid message"));
        };
        let rid = text(&message, "rid").unwrap_or_default();
        self.rooms
            .write_update(
                call,
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": uid}),
                serde_json::json!({"$pull": {"tunread": tmid, "tunreadUser": tmid, "tunreadGroup": tmid}}),
                false,
            )
            .await?;
        Ok(())
    }
}
