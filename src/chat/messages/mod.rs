//! The Messaging service: Rocket.Chat's messages (`rocketchat_message`) and what a message
//! changes around it (the room's counters and last message, the members' unread counts and
//! mentions, a thread's counters).
//!
//! Owns sending (every check of Rocket.Chat's `sendMessage`), editing, deleting (as the
//! settings say), reactions, pins, stars, reading (marking read) and the history reads,
//! which go through the (`rid`, `ts`) index and never scan a room. It must not know about
//! sessions or streams: what clients hear of a message comes from the store's change events.

pub mod lists;
pub mod methods;

use crate::chat::accounts::limiter::{Limiter, Rule};
use crate::chat::call::Call;
use crate::chat::collections::MESSAGES;
use crate::chat::collections::{ROOMS, SUBSCRIPTIONS};
use crate::chat::hooks::{after_hook, allow_hook, will_hook, Hooks, Origin, Point, ReactionEvent};
use crate::chat::permissions::Permissions;
pub use crate::chat::posting::ts_of;
use crate::chat::posting::{mentions, Draft, PostError, Posting};
use crate::chat::records::{Date, Message, UserRef};
use crate::chat::rooms::members::user_ref;
use crate::chat::rooms::{client_error, text, Rooms};
use crate::chat::settings::Settings;
use crate::chat::{author_of, date, not_allowed};
use crate::engine::build::{doc, now_ms, selector};
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store};
use std::sync::Arc;
use std::time::Duration;

/// The fields an edit writes; the rest of the stored message is left as it is.
const EDIT_WRITES: &[&str] = &[
    "msg",
    "editedAt",
    "editedBy",
    "mentions",
    "channels",
    "_updatedAt",
];

/// How far a client's clock may be off before its `ts` is refused (within 10 s it is kept,
/// between 10 and 60 s replaced by the server's time).
const CLOCK_SKEW_REFUSED_MS: f64 = 60_000.0;
const CLOCK_SKEW_KEPT_MS: f64 = 10_000.0;

/// Messages one user may send per second without `send-many-messages` (Rocket.Chat's rule).
const SEND_RULE: Rule = Rule {
    allowed: 5,
    window: Duration::from_secs(1),
};

/// Most bytes of attachments and custom fields one message may carry.
const MAX_EXTRA_BYTES: usize = 64 * 1024;

/// The largest page of history one read returns.
pub const MAX_PAGE: usize = 1000;

/// A message a client sends.
#[derive(Clone, Debug, Default)]
pub struct Outgoing {
    /// A client-chosen id (a retry with the same id is a no-op).
    pub id: Option<String>,
    pub rid: String,
    pub msg: String,
    pub tmid: Option<String>,
    pub tshow: bool,
    /// The client's clock.
    pub ts: Option<f64>,
    pub alias: Option<String>,
    pub avatar: Option<String>,
    pub emoji: Option<String>,
    pub attachments: Option<Value>,
    pub custom_fields: Option<Value>,
    pub groupable: Option<bool>,
    /// An uploaded file's `file` and `files` (set by the upload service only).
    pub files: Option<(Value, Value)>,
}

/// A page of history.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub messages: Vec<Document>,
    /// The oldest unread message, when it is older than the page.
    pub first_unread: Option<Document>,
    pub unread_not_loaded: usize,
}

/// Whether `existing` is the message `uid` already sent to `rid` (a retry may see it again).
fn is_retry_of(existing: &Document, uid: &str, rid: &str) -> bool {
    author_of(existing) == Some(uid) && text(existing, "rid") == Some(rid)
}

fn array_has(doc: &Document, key: &str, item: &str) -> bool {
    matches!(doc.get(key), Some(Value::Array(items)) if items.iter().any(|i| i.as_str() == Some(item)))
}

/// Rocket.Chat's reaction names: `:name:` of letters, digits, `_`, `+`, `-`.
pub fn normalized_reaction(reaction: &str) -> Option<String> {
    let bare = reaction.trim_matches(':');
    let ok = !bare.is_empty()
        && bare.len() <= 64
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-'));
    ok.then(|| format!(":{bare}:"))
}

/// The Messaging service.
pub struct Messages {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    permissions: Arc<Permissions>,
    settings: Arc<Settings>,
    posting: Arc<Posting>,
    sent: Limiter,
    /// Where this instance tells the others of each message a user sent (their counts
    /// of the per-user limit), once [`Messages::share_limits`] set it.
    shared: std::sync::OnceLock<SharedSends>,
}

/// The bus stream of sent messages' counts, keyed by user, between instances.
pub const SEND_LIMIT_STREAM: &str = "comet-send-limit";

struct SharedSends {
    bus: Arc<dyn crate::engine::bus::Bus>,
    instance: Arc<str>,
    /// The bus's directory holds it weakly.
    _sink: Arc<dyn crate::engine::bus::StreamSink>,
}

/// Where other instances' counts of a user's messages arrive.
struct SendCounts(std::sync::Weak<Messages>, Arc<str>);

impl crate::engine::bus::StreamSink for SendCounts {
    fn deliver(&self, user: &str, _args: &[Value], except: Option<&str>) -> usize {
        let Some(messages) = self.0.upgrade() else {
            return 0;
        };
        if except == Some(&*self.1) {
            return 0;
        }
        messages.sent.count(&format!("send:{user}"), SEND_RULE);
        1
    }
}

impl Messages {
    /// Shares the per-user sending limit with the other instances: each message counted
    /// here is counted on every instance where the user listens to their own stream
    /// (`stream-notify-user`), so a user's sessions on several instances share one limit.
    pub fn share_limits(self: &Arc<Self>, registry: &crate::engine::Registry) {
        let sink: Arc<dyn crate::engine::bus::StreamSink> = Arc::new(SendCounts(
            Arc::downgrade(self),
            registry.instance_id().clone(),
        ));
        registry.local_streams().add_following(
            SEND_LIMIT_STREAM,
            Arc::downgrade(&sink),
            "stream-notify-user",
        );
        let _ = self.shared.set(SharedSends {
            bus: registry.bus().clone(),
            instance: registry.instance_id().clone(),
            _sink: sink,
        });
    }

    /// The service, its indexes made (a room's history by time; a thread's replies).
    pub async fn start(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        permissions: Arc<Permissions>,
        settings: Arc<Settings>,
    ) -> Result<Arc<Self>, ServiceError> {
        for keys in [
            serde_json::json!({"rid": 1, "ts": 1}),
            serde_json::json!({"tmid": 1, "ts": 1}),
        ] {
            let sort = crate::model::query::Sort::parse(&doc(keys)?)
                .map_err(|e| ServiceError::internal(e.0))?;
            store
                .ensure_index(MESSAGES, sort)
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
        }
        Ok(Arc::new(Self {
            store,
            posting: rooms.posting().clone(),
            rooms,
            permissions,
            settings,
            sent: Limiter::new(),
            shared: std::sync::OnceLock::new(),
        }))
    }

    fn hooks(&self) -> &Hooks {
        self.posting.hooks()
    }

    fn flag(&self, id: &str) -> bool {
        self.settings.value(id) == Some(Value::Bool(true))
    }

    /// Reads messages: `filter`, newest or oldest first, at most `limit`.
    async fn find(
        &self,
        filter: serde_json::Value,
        newest_first: bool,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<Vec<Document>, ServiceError> {
        let direction = if newest_first { -1 } else { 1 };
        let sort = crate::model::query::Sort::parse(&doc(
            serde_json::json!({"ts": direction, "_id": direction}),
        )?)
        .map_err(|e| ServiceError::internal(e.0))?;
        self.store
            .find(
                MESSAGES,
                FindOptions {
                    selector: selector(filter)?,
                    sort,
                    skip,
                    limit,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// A message by id.
    pub async fn message(&self, id: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(serde_json::json!({"_id": id}), false, 0, Some(1))
            .await?
            .pop())
    }

    /// The visible messages of `rid`: not hidden, not of a system type the settings hide.
    fn visible(&self, rid: &str) -> serde_json::Value {
        let mut filter = serde_json::json!({"rid": rid, "_hidden": {"$ne": true}});
        if let Some(Value::Array(hidden)) = self.settings.value("Hide_System_Messages") {
            let kinds: Vec<&str> = hidden.iter().filter_map(Value::as_str).collect();
            if !kinds.is_empty() {
                filter["t"] = serde_json::json!({"$nin": kinds});
            }
        }
        filter
    }

    /// The room `rid` when `caller` may read it.
    async fn readable_room(
        &self,
        caller: Option<&str>,
        rid: &str,
    ) -> Result<Option<Document>, ServiceError> {
        let Some(room) = self.rooms.room(rid).await? else {
            return Ok(None);
        };
        Ok(self.rooms.can_access(&room, caller).await?.then_some(room))
    }

    /// Whether `user` may write to `room` now (Rocket.Chat's `canSendMessage`): access,
    /// not archived, not read-only without `post-readonly`, not muted.
    /// Whether the caller may post in `rid` now (access, archived, read-only, muted): the
    /// room when so.
    pub async fn may_post_in(&self, call: &Call<'_>, rid: &str) -> Result<Document, ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let room = self
            .rooms
            .room(rid)
            .await?
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))?;
        self.check_can_post(&room, &user).await?;
        Ok(room)
    }

    async fn check_can_post(&self, room: &Document, user: &Document) -> Result<(), ServiceError> {
        let uid = text(user, "_id").unwrap_or_default();
        let rid = text(room, "_id").unwrap_or_default();
        let username = text(user, "username").unwrap_or_default();
        if !self.rooms.can_access(room, Some(uid)).await? {
            return Err(not_allowed());
        }
        if room.get("archived") == Some(&Value::Bool(true)) {
            return Err(client_error(
                "error-room-archived",
                "You can't send messages because the room is archived.",
            ));
        }
        if room.get("ro") == Some(&Value::Bool(true))
            && !array_has(room, "unmuted", username)
            && !self
                .permissions
                .may(uid, "post-readonly", Some(rid))
                .await?
        {
            return Err(client_error(
                "error-room-readonly",
                "You can't send messages because the room is readonly.",
            ));
        }
        if array_has(room, "muted", username) {
            return Err(client_error("error-user-muted", "You_have_been_muted"));
        }
        Ok(())
    }

    fn check_size(&self, msg: &str) -> Result<(), ServiceError> {
        let max = self.settings.number("Message_MaxAllowedSize", 5000.0);
        if msg.chars().count() as f64 > max {
            return Err(client_error(
                "error-message-size-exceeded",
                "Message size exceeds Message_MaxAllowedSize",
            ));
        }
        Ok(())
    }

    /// `sendMessage`: checks, stores and counts `out` from `caller`; returns the message as
    /// stored (the one stored before, for a retry with the same id).
    pub async fn send(&self, call: &Call<'_>, out: Outgoing) -> Result<Document, ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        if text(&user, "username").is_none() {
            return Err(client_error("error-invalid-user", "Invalid user"));
        }
        let now = now_ms();
        let mut ts = now;
        if let Some(client_ts) = out.ts {
            let skew = (client_ts - now).abs();
            if skew > CLOCK_SKEW_REFUSED_MS {
                return Err(client_error(
                    "error-message-ts-out-of-sync",
                    "Message timestamp is out of sync",
                ));
            }
            if skew <= CLOCK_SKEW_KEPT_MS {
                ts = client_ts;
            }
        }
        self.check_size(&out.msg)?;
        let extra_bytes = [&out.attachments, &out.custom_fields]
            .iter()
            .filter_map(|v| v.as_ref())
            .map(|v| v.to_ejson_string().len())
            .sum::<usize>();
        if extra_bytes > MAX_EXTRA_BYTES {
            return Err(client_error(
                "error-message-size-exceeded",
                "Message size exceeds Message_MaxAllowedSize",
            ));
        }
        if out.tshow && out.tmid.is_none() {
            return Err(client_error(
                "invalid-params",
                "tshow provided but missing tmid",
            ));
        }
        if out.tmid.is_some() && !self.flag("Threads_enabled") {
            return Err(not_allowed());
        }
        if !self
            .permissions
            .may(&uid, "send-many-messages", None)
            .await?
        {
            self.sent.hit(&format!("send:{uid}"), SEND_RULE)?;
            if let Some(shared) = self.shared.get() {
                shared.bus.publish(crate::engine::bus::BusEvent {
                    stream: SEND_LIMIT_STREAM.into(),
                    event: uid.to_string(),
                    args: Vec::new(),
                    except: Some(shared.instance.clone()),
                });
            }
        }
        let room = self
            .rooms
            .room(&out.rid)
            .await?
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))?;
        self.check_can_post(&room, &user).await?;
        if (out.alias.is_some() || out.avatar.is_some())
            && !self
                .permissions
                .may(&uid, "message-impersonate", Some(&out.rid))
                .await?
        {
            return Err(client_error(
                "error-action-not-allowed",
                "Not allowed to change message author",
            ));
        }
        let parent = match &out.tmid {
            Some(tmid) => {
                let parent = self
                    .message(tmid)
                    .await?
                    .filter(|p| text(p, "rid") == Some(out.rid.as_str()))
                    .ok_or_else(|| client_error("error-invalid-message", "Invalid thread"))?;
                if parent.get("tmid").is_some() {
                    return Err(client_error(
                        "error-invalid-message",
                        "A reply cannot start a thread",
                    ));
                }
                Some(parent)
            }
            None => None,
        };
        let id = out
            .id
            .clone()
            .unwrap_or_else(crate::model::random::random_id);
        // Placeholders keep Rocket.Chat's field order; the posting path fills them.
        let mut message = doc(serde_json::json!({
            "_id": id, "rid": out.rid, "msg": out.msg, "ts": date(ts),
            "u": user_ref(&user), "_updatedAt": null,
            "mentions": [], "channels": [], "urls": [],
        }))?;
        if let Some(tmid) = &out.tmid {
            message.insert("tmid".into(), Value::from(tmid.as_str()));
            if out.tshow {
                message.insert("tshow".into(), Value::Bool(true));
            }
        }
        for (key, value) in [
            ("alias", &out.alias),
            ("avatar", &out.avatar),
            ("emoji", &out.emoji),
        ] {
            if let Some(v) = value {
                message.insert(key.into(), Value::from(v.as_str()));
            }
        }
        if let Some(a) = &out.attachments {
            message.insert("attachments".into(), a.clone());
        }
        if let Some(c) = &out.custom_fields {
            message.insert("customFields".into(), c.clone());
        }
        if let Some(g) = out.groupable {
            message.insert("groupable".into(), Value::Bool(g));
        }
        if let Some((file, files)) = &out.files {
            message.insert("file".into(), file.clone());
            message.insert("files".into(), files.clone());
        }
        let origin = if array_has(&user, "roles", "bot") {
            Origin::Bot
        } else {
            Origin::User
        };
        let draft = Draft {
            origin,
            room,
            message,
            parent,
        };
        match self.posting.post(call, draft).await {
            Ok(stored) => Ok(stored),
            Err(PostError::Duplicate) => {
                // A retry of a message already stored: nothing more happens. Only its own
                // sender, in its own room, learns what is stored under the id; anyone else is
                // refused without a word of it (the id is no key to another room's content).
                match self.message(&id).await? {
                    Some(existing) if is_retry_of(&existing, &uid, &out.rid) => Ok(existing),
                    _ => Err(not_allowed()),
                }
            }
            Err(other) => Err(other.into_service_error()),
        }
    }

    /// The message `id` for an edit or delete by `user`, with its room.
    async fn own_or_moderated(&self, id: &str) -> Result<(Document, Document), ServiceError> {
        let refused = || client_error("error-action-not-allowed", "Not allowed");
        let message = self.message(id).await?.ok_or_else(refused)?;
        let room = self
            .rooms
            .room(text(&message, "rid").unwrap_or_default())
            .await?
            .ok_or_else(refused)?;
        Ok((message, room))
    }

    /// Whether `uid` may still change or remove `message` under a time-limit setting.
    async fn within_window(
        &self,
        uid: &str,
        message: &Document,
        setting: &str,
    ) -> Result<bool, ServiceError> {
        let minutes = self.settings.number(setting, 0.0);
        if minutes <= 0.0
            || self
                .permissions
                .may(uid, "bypass-time-limit-edit-and-delete", None)
                .await?
        {
            return Ok(true);
        }
        Ok(now_ms() - ts_of(message) <= minutes * 60_000.0)
    }

    /// `updateMessage`: a new text for one's own message (or any, with `edit-message`).
    pub async fn update(&self, call: &Call<'_>, edited: &Document) -> Result<(), ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        let id = text(edited, "_id").unwrap_or_default();
        let (original, room) = self.own_or_moderated(id).await?;
        const EDITABLE: &[&str] = &[
            "_id",
            "rid",
            "msg",
            "tshow",
            "alias",
            "attachments",
            "avatar",
            "emoji",
            "customFields",
            "tmid",
        ];
        for (key, value) in edited {
            if !EDITABLE.contains(&key.as_str()) && original.get(key) != Some(value) {
                return Err(client_error(
                    "error-invalid-update-key",
                    &format!("Cannot update key {key}"),
                ));
            }
        }
        if edited.get("rid") != original.get("rid") {
            return Err(client_error(
                "error-invalid-update-key",
                "Cannot update key rid",
            ));
        }
        if let Some(tmid) = edited.get("tmid") {
            if Some(tmid) == original.get("_id") {
                return Err(client_error(
                    "error-message-same-as-tmid",
                    "Cannot set tmid the same as the _id",
                ));
            }
            if original.get("tmid") != Some(tmid) {
                return Err(client_error(
                    "error-message-change-to-thread",
                    "Cannot update message to a thread",
                ));
            }
        }
        let msg = text(edited, "msg").unwrap_or_default();
        if original.get("msg").and_then(Value::as_str) == Some(msg) {
            return Ok(());
        }
        let rid = text(&room, "_id").unwrap_or_default().to_owned();
        let own = author_of(&original) == Some(uid.as_str());
        let allowed = self
            .permissions
            .may(&uid, "edit-message", Some(&rid))
            .await?
            || (own && self.flag("Message_AllowEditing"));
        if !allowed {
            return Err(client_error(
                "error-action-not-allowed",
                "Message editing not allowed",
            ));
        }
        if !self
            .within_window(&uid, &original, "Message_AllowEditing_BlockEditInMinutes")
            .await?
        {
            return Err(client_error(
                "error-message-editing-blocked",
                "Message editing is blocked",
            ));
        }
        self.check_can_post(&room, &user).await?;
        self.check_size(msg)?;
        // A hook sees the message as it would be stored and may rewrite its text.
        let mut proposed = original.clone();
        proposed.insert("msg".into(), Value::from(msg));
        let verdict = will_hook!(
            self.hooks(),
            Point::MessageWillBeEdited,
            proposed,
            |hook, current| { hook.message_will_be_edited(&original, current) }
        );
        let msg = match &verdict {
            Ok(None) => msg.to_owned(),
            Ok(Some(rewritten)) => text(rewritten, "msg").unwrap_or(msg).to_owned(),
            Err(refused) => return Err(refused.clone().into()),
        };
        self.check_size(&msg)?;
        let parsed = mentions::parse(&msg);
        let (mentions, _, _) = self.posting.resolve_mentions(&parsed, &uid, &rid).await?;
        let channels = self.posting.resolve_channels(&parsed.channels).await?;
        // The edit on the typed record: the new text, who edited and when. Every other field
        // of the stored message (from newer versions, from apps) stays as it was.
        let mut record = Message::from_document(original).map_err(ServiceError::internal)?;
        let now = now_ms();
        record.text = Some(msg);
        record.edited_at = Some(Date(now));
        record.edited_by = Some(UserRef {
            id: uid.clone(),
            username: text(&user, "username").map(str::to_owned),
            name: None,
            other: Document::default(),
        });
        record.updated_at = Some(Date(now));
        for (key, found) in [("mentions", mentions), ("channels", channels)] {
            let found = Value::from_plain_json(serde_json::Value::Array(found));
            record.other.insert(key.into(), found);
        }
        // `md` is the old text parsed (written by Rocket.Chat): clients would show it over
        // the new text, so it goes.
        record.other.shift_remove("md");
        let edited = record.to_document();
        let set: Document = EDIT_WRITES
            .iter()
            .filter_map(|key| Some(((*key).to_owned(), edited.get(*key)?.clone())))
            .collect();
        self.rooms
            .write_update(
                call,
                MESSAGES,
                serde_json::json!({"_id": id}),
                serde_json::json!({"$set": crate::engine::build::to_json(&Value::Object(set)), "$unset": {"md": 1}}),
                false,
            )
            .await?;
        after_hook!(self.hooks(), Point::MessageHasBeenEdited, |hook| {
            hook.message_has_been_edited(&edited)
        });
        self.refresh_last_message(call, &room, id).await
    }

    /// Sets the room's `lastMessage` again when it is `changed_id` (edited or deleted).
    async fn refresh_last_message(
        &self,
        call: &Call<'_>,
        room: &Document,
        changed_id: &str,
    ) -> Result<(), ServiceError> {
        let is_last = room
            .get("lastMessage")
            .and_then(Value::as_object)
            .and_then(|m| text(m, "_id"))
            == Some(changed_id);
        if !is_last {
            return Ok(());
        }
        let rid = text(room, "_id").unwrap_or_default();
        let mut filter = self.visible(rid);
        filter["tmid"] = serde_json::json!({"$exists": false});
        let latest = self.find(filter, true, 0, Some(1)).await?.pop();
        let modifier = match latest {
            Some(m) => {
                serde_json::json!({"$set": {"lastMessage": crate::engine::build::to_json(&Value::Object(m))}})
            }
            None => serde_json::json!({"$unset": {"lastMessage": 1}}),
        };
        self.rooms
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                modifier,
                false,
            )
            .await?;
        Ok(())
    }

    /// `deleteMessage`: as the settings say, a tombstone (`t: 'rm'`), a hidden message, or
    /// the message moved to the trash.
    pub async fn delete(&self, call: &Call<'_>, id: &str) -> Result<(), ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        let (message, room) = self.own_or_moderated(id).await?;
        let rid = text(&room, "_id").unwrap_or_default().to_owned();
        let own = author_of(&message) == Some(uid.as_str());
        let allowed = self
            .permissions
            .may(&uid, "delete-message", Some(&rid))
            .await?
            || (own
                && self.flag("Message_AllowDeleting")
                && self
                    .permissions
                    .may(&uid, "delete-own-message", Some(&rid))
                    .await?
                && self
                    .within_window(&uid, &message, "Message_AllowDeleting_BlockDeleteInMinutes")
                    .await?);
        if !allowed || !self.rooms.can_access(&room, Some(&uid)).await? {
            return Err(client_error("error-action-not-allowed", "Not allowed"));
        }
        allow_hook!(self.hooks(), Point::MessageWillBeDeleted, |hook| {
            hook.message_will_be_deleted(&message, &user)
        })?;
        let now = now_ms();
        let is_thread_parent = message.get("tcount").and_then(Value::as_f64).unwrap_or(0.0) > 0.0;
        if self.flag("Message_ShowDeletedStatus") || is_thread_parent {
            self.rooms
                .write_update(
                    call,
                    MESSAGES,
                    serde_json::json!({"_id": id}),
                    serde_json::json!({"$set": {"t": "rm", "msg": "", "_updatedAt": date(now)},
                        "$unset": {"attachments": 1, "md": 1, "reactions": 1, "mentions": 1, "channels": 1}}),
                    false,
                )
                .await?;
        } else if self.flag("Message_KeepHistory") {
            self.rooms
                .write_update(
                    call,
                    MESSAGES,
                    serde_json::json!({"_id": id}),
                    serde_json::json!({"$set": {"_hidden": true, "_updatedAt": date(now)}}),
                    false,
                )
                .await?;
        } else {
            self.rooms.to_trash(call, MESSAGES, message.clone()).await?;
            let ack = self
                .store
                .remove(
                    MESSAGES,
                    selector(serde_json::json!({"_id": id}))?,
                    crate::storage::RemoveOptions { multi: false },
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
            call.record_write(ack.seq);
        }
        self.rooms
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                serde_json::json!({"$inc": {"msgs": -1}}),
                false,
            )
            .await?;
        if let Some(tmid) = text(&message, "tmid") {
            self.rooms
                .write_update(
                    call,
                    MESSAGES,
                    serde_json::json!({"_id": tmid, "tcount": {"$gt": 0}}),
                    serde_json::json!({"$inc": {"tcount": -1}, "$set": {"_updatedAt": date(now)}}),
                    false,
                )
                .await?;
        }
        after_hook!(self.hooks(), Point::MessageHasBeenDeleted, |hook| {
            hook.message_has_been_deleted(&message, &user)
        });
        self.refresh_last_message(call, &room, id).await
    }

    /// The message `id` and its room when `caller` may read the room.
    async fn readable_message(
        &self,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Option<(Document, Document)>, ServiceError> {
        let Some(message) = self.message(id).await? else {
            return Ok(None);
        };
        let rid = text(&message, "rid").unwrap_or_default().to_owned();
        Ok(self
            .readable_room(caller, &rid)
            .await?
            .map(|room| (message, room)))
    }

    /// `setReaction`: adds or takes away the caller's `reaction` (toggles unless `react`
    /// says which).
    pub async fn react(
        &self,
        call: &Call<'_>,
        reaction: &str,
        message_id: &str,
        react: Option<bool>,
    ) -> Result<(), ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let username = text(&user, "username").unwrap_or_default().to_owned();
        let reaction = normalized_reaction(reaction)
            .ok_or_else(|| client_error("error-not-allowed", "Invalid emoji provided."))?;
        let (message, room) = self
            .readable_message(call.user(), message_id)
            .await?
            .ok_or_else(not_allowed)?;
        if room.get("archived") == Some(&Value::Bool(true)) || array_has(&room, "muted", &username)
        {
            return Err(not_allowed());
        }
        if room.get("ro") == Some(&Value::Bool(true))
            && room.get("reactWhenReadOnly") != Some(&Value::Bool(true))
            && !self
                .permissions
                .may(
                    text(&user, "_id").unwrap_or_default(),
                    "post-readonly",
                    text(&room, "_id"),
                )
                .await?
        {
            return Err(not_allowed());
        }
        let reactors = message
            .get("reactions")
            .and_then(Value::as_object)
            .and_then(|r| r.get(&reaction))
            .and_then(Value::as_object)
            .and_then(|r| match r.get("usernames") {
                Some(Value::Array(names)) => Some(names.len()),
                _ => None,
            })
            .unwrap_or(0);
        let reacted = message
            .get("reactions")
            .and_then(Value::as_object)
            .and_then(|r| r.get(&reaction))
            .and_then(Value::as_object)
            .is_some_and(|r| array_has(r, "usernames", &username));
        let add = react.unwrap_or(!reacted);
        if add == reacted {
            return Ok(());
        }
        let event = ReactionEvent {
            message: &message,
            user: &user,
            reaction: &reaction,
            added: add,
        };
        allow_hook!(self.hooks(), Point::ReactionWillChange, |hook| {
            hook.reaction_will_change(event)
        })?;
        let path = format!("reactions.{reaction}.usernames");
        let now = date(now_ms());
        let modifier = if add {
            serde_json::json!({"$addToSet": {path: username}, "$set": {"_updatedAt": now}})
        } else if reactors <= 1 {
            // The last to take a reaction back takes the reaction away.
            serde_json::json!({"$unset": {format!("reactions.{reaction}"): 1}, "$set": {"_updatedAt": now}})
        } else {
            serde_json::json!({"$pull": {path: username}, "$set": {"_updatedAt": now}})
        };
        self.rooms
            .write_update(
                call,
                MESSAGES,
                serde_json::json!({"_id": message_id}),
                modifier,
                false,
            )
            .await?;
        after_hook!(self.hooks(), Point::ReactionHasChanged, |hook| {
            hook.reaction_has_changed(event)
        });
        Ok(())
    }

    /// `pinMessage` / `unpinMessage`.
    pub async fn pin(
        &self,
        call: &Call<'_>,
        id: &str,
        pinned: bool,
    ) -> Result<Document, ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        let (message, room) = self
            .readable_message(call.user(), id)
            .await?
            .ok_or_else(|| {
                client_error(
                    "error-invalid-message",
                    "Message you are pinning was not found",
                )
            })?;
        if !self
            .permissions
            .may(&uid, "pin-message", text(&room, "_id"))
            .await?
        {
            return Err(client_error("not-authorized", "Not Authorized"));
        }
        let now = now_ms();
        let modifier = if pinned {
            serde_json::json!({"$set": {"pinned": true, "pinnedAt": date(now), "pinnedBy": {"_id": uid, "username": text(&user, "username")}, "_updatedAt": date(now)}})
        } else {
            serde_json::json!({"$set": {"pinned": false, "_updatedAt": date(now)}, "$unset": {"pinnedAt": 1, "pinnedBy": 1}})
        };
        self.rooms
            .write_update(
                call,
                MESSAGES,
                serde_json::json!({"_id": id}),
                modifier,
                false,
            )
            .await?;
        if pinned {
            let attachment = serde_json::json!({"attachments": [{
                "text": text(&message, "msg"),
                "author_name": message.get("u").and_then(Value::as_object).and_then(|u| text(u, "username")),
                "ts": date(ts_of(&message)),
            }]});
            self.rooms
                .system_message(
                    call,
                    &room,
                    crate::chat::records::MessageType::MessagePinned,
                    "",
                    &user,
                    attachment,
                )
                .await?;
        }
        Ok(self.message(id).await?.unwrap_or(message))
    }

    /// `starMessage`: the caller stars (or un-stars) a message of a room it is in.
    pub async fn star(&self, call: &Call<'_>, id: &str, starred: bool) -> Result<(), ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        let (_, room) = self
            .readable_message(call.user(), id)
            .await?
            .ok_or_else(|| client_error("error-action-not-allowed", "Not allowed"))?;
        if self
            .rooms
            .subscription(text(&room, "_id").unwrap_or_default(), &uid)
            .await?
            .is_none()
        {
            return Err(client_error("error-action-not-allowed", "Not allowed"));
        }
        let modifier = if starred {
            serde_json::json!({"$addToSet": {"starred": {"_id": uid}}})
        } else {
            serde_json::json!({"$pull": {"starred": {"_id": uid}}})
        };
        self.rooms
            .write_update(
                call,
                MESSAGES,
                serde_json::json!({"_id": id}),
                modifier,
                false,
            )
            .await?;
        Ok(())
    }

    /// `readMessages`: the caller's subscription to `rid` marked read.
    pub async fn mark_read(
        &self,
        call: &Call<'_>,
        rid: &str,
        read_threads: bool,
    ) -> Result<(), ServiceError> {
        let user = self.rooms.caller(call.user()).await?;
        let uid = text(&user, "_id").unwrap_or_default().to_owned();
        let room =
            self.rooms.room(rid).await?.ok_or_else(|| {
                client_error("error-room-does-not-exist", "This room does not exist")
            })?;
        if !self.rooms.can_access(&room, Some(&uid)).await? {
            return Err(not_allowed());
        }
        let sub =
            self.rooms.subscription(rid, &uid).await?.ok_or_else(|| {
                client_error("error-invalid-subscription", "Invalid subscription")
            })?;
        let threads_unread = matches!(sub.get("tunread"), Some(Value::Array(t)) if !t.is_empty());
        let now = date(now_ms());
        let mut modifier = serde_json::json!({"$set": {
            "open": true, "alert": threads_unread && !read_threads, "unread": 0,
            "userMentions": 0, "groupMentions": 0, "ls": now, "_updatedAt": now,
        }});
        if read_threads {
            modifier["$unset"] =
                serde_json::json!({"tunread": 1, "tunreadUser": 1, "tunreadGroup": 1});
        }
        self.rooms
            .write_update(
                call,
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": uid}),
                modifier,
                false,
            )
            .await?;
        Ok(())
    }

    /// `loadHistory`: up to `limit` messages of `rid` older than `end` (newest first), and
    /// with `ls` the first unread one; `None` when the caller may not read the room.
    pub async fn history(
        &self,
        caller: Option<&str>,
        rid: &str,
        end: Option<f64>,
        limit: usize,
        ls: Option<f64>,
        show_thread_messages: bool,
    ) -> Result<Option<History>, ServiceError> {
        if caller.is_none() && !self.flag("Accounts_AllowAnonymousRead") {
            return Err(client_error("error-invalid-user", "Invalid user"));
        }
        if self.readable_room(caller, rid).await?.is_none() {
            return Ok(None);
        }
        let mut filter = self.visible(rid);
        if let Some(end) = end {
            filter["ts"] = serde_json::json!({"$lt": date(end)});
        }
        if !show_thread_messages {
            filter["$or"] = serde_json::json!([{"tmid": {"$exists": false}}, {"tshow": true}]);
        }
        let messages = self
            .find(filter.clone(), true, 0, Some(limit.min(MAX_PAGE)))
            .await?;
        let mut history = History {
            messages,
            ..History::default()
        };
        if let (Some(ls), Some(oldest)) = (ls, history.messages.last()) {
            let oldest_ts = ts_of(oldest);
            let mut unread = self.visible(rid);
            unread["ts"] = serde_json::json!({"$gt": date(ls), "$lt": date(oldest_ts)});
            // Counted up to one page: a client shows "many" beyond that.
            let not_loaded = self.find(unread, false, 0, Some(MAX_PAGE)).await?;
            history.unread_not_loaded = not_loaded.len();
            history.first_unread = not_loaded.into_iter().next();
        }
        Ok(Some(history))
    }

    /// `loadNextMessages` (after `end`, oldest first) and `loadMissedMessages` (after
    /// `start`); `None` when the caller may not read the room.
    pub async fn after(
        &self,
        caller: Option<&str>,
        rid: &str,
        after: Option<f64>,
        limit: usize,
    ) -> Result<Option<Vec<Document>>, ServiceError> {
        self.rooms.caller(caller).await?;
        if self.readable_room(caller, rid).await?.is_none() {
            return Ok(None);
        }
        let mut filter = self.visible(rid);
        if let Some(after) = after {
            filter["ts"] = serde_json::json!({"$gt": date(after)});
        }
        Ok(Some(
            self.find(filter, false, 0, Some(limit.min(MAX_PAGE)))
                .await?,
        ))
    }

    /// `loadSurroundingMessages`: about `limit` messages around `id` (`moreBefore`,
    /// `moreAfter` say whether there are others).
    pub async fn surrounding(
        &self,
        caller: Option<&str>,
        id: &str,
        limit: usize,
    ) -> Result<Option<(Vec<Document>, bool, bool)>, ServiceError> {
        self.rooms.caller(caller).await?;
        let Some((message, room)) = self.readable_message(caller, id).await? else {
            return Ok(None);
        };
        let rid = text(&room, "_id").unwrap_or_default();
        let half = (limit.min(MAX_PAGE) / 2).max(1);
        let ts = ts_of(&message);
        let mut before = self.visible(rid);
        before["ts"] = serde_json::json!({"$lt": date(ts)});
        let mut older = self.find(before, true, 0, Some(half + 1)).await?;
        let more_before = older.len() > half;
        older.truncate(half);
        older.reverse();
        let mut after = self.visible(rid);
        after["ts"] = serde_json::json!({"$gt": date(ts)});
        let mut newer = self.find(after, false, 0, Some(half + 1)).await?;
        let more_after = newer.len() > half;
        newer.truncate(half);
        let mut all = older;
        all.push(message);
        all.extend(newer);
        Ok(Some((all, more_before, more_after)))
    }

    /// `chat.syncMessages`: the messages of `rid` changed after `since` (ms), and those
    /// removed since then (`{_id, _deletedAt}`); `None` for a room the caller may not read.
    pub async fn changed_since(
        &self,
        caller: Option<&str>,
        rid: &str,
        since: f64,
    ) -> Result<Option<(Vec<Document>, Vec<Document>)>, ServiceError> {
        self.rooms.caller(caller).await?;
        if self.readable_room(caller, rid).await?.is_none() {
            return Ok(None);
        }
        let mut filter = self.visible(rid);
        filter["_updatedAt"] = serde_json::json!({"$gt": date(since)});
        let updated = self.find(filter, false, 0, Some(MAX_PAGE)).await?;
        let deleted = crate::chat::collections::removed_since(
            &*self.store,
            MESSAGES,
            since,
            serde_json::json!({"rid": rid}),
        )
        .await?;
        Ok(Some((updated, deleted)))
    }

    /// `getSingleMessage`.
    pub async fn single(
        &self,
        caller: Option<&str>,
        id: &str,
    ) -> Result<Option<Document>, ServiceError> {
        self.rooms.caller(caller).await?;
        Ok(self.readable_message(caller, id).await?.map(|(m, _)| m))
    }

    /// `getThreadMessages`: the replies of thread `tmid`, oldest first.
    pub async fn thread(
        &self,
        caller: Option<&str>,
        tmid: &str,
        skip: usize,
        limit: usize,
    ) -> Result<Vec<Document>, ServiceError> {
        self.rooms.caller(caller).await?;
        if !self.flag("Threads_enabled") {
            return Err(client_error("error-not-allowed", "Threads Disabled"));
        }
        let (_, room) = self
            .readable_message(caller, tmid)
            .await?
            .ok_or_else(not_allowed)?;
        let mut filter = self.visible(text(&room, "_id").unwrap_or_default());
        filter["tmid"] = serde_json::json!(tmid);
        self.find(filter, false, skip, Some(limit.clamp(1, MAX_PAGE)))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reactions_are_names_never_paths() {
        assert_eq!(normalized_reaction(":smile:").as_deref(), Some(":smile:"));
        assert_eq!(
            normalized_reaction("thumbsup").as_deref(),
            Some(":thumbsup:")
        );
        assert_eq!(normalized_reaction(":+1:").as_deref(), Some(":+1:"));
        for bad in [":a.b:", ":$set:", "::", "", ":a b:", &"x".repeat(65)] {
            assert_eq!(normalized_reaction(bad), None, "{bad}");
        }
    }
}
