//! The one path every stored message takes: a user's, a bot's and the server's own system
//! messages alike. Checks of who may post where stay with the callers (the Messaging
//! service for a user's message, the Room service for what an action writes); from the
//! draft on, this module decides.
//!
//! Owns, in this order: the *will be saved* hook point (a hook may refuse or rewrite the
//! text), the mentions and channel links of the final text, the message's time (unique in
//! its room, see [`RoomClocks`]), the one transaction that stores the message with what it
//! changes around it (the room's counters and last message, the members' unread counts, the
//! thread's counters), and the *has been saved* hook point. It must not know about
//! sessions or streams: what clients hear of a message comes from the store's change events.

pub mod mentions;

use crate::chat::call::Call;
use crate::chat::collections::{MESSAGES, ROOMS, ROOM_CLOCKS, SUBSCRIPTIONS, USERS};
use crate::chat::hooks::{
    after_hook, keeping, will_hook, Hooks, MessageEvent, Origin, Point, Refused,
};
use crate::chat::permissions::Permissions;
use crate::chat::records::RoomKind;
use crate::chat::settings::Settings;
use crate::chat::{author_of, date, not_allowed, text};
use crate::engine::build::{doc, now_ms, selector};
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store, StoreError, UpdateOptions, WriteOp, WriteOutcome};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The fields a hook's rewrite of a message may not change.
const FIXED_FIELDS: &[&str] = &["_id", "rid", "u", "t", "tmid"];

/// The longest a message waits for the clock to reach the millisecond its room gives it.
/// A room already further ahead (history written by a clock that ran ahead, or the clock
/// stepped back) gets its next millisecond without waiting.
const LONGEST_WAIT_MS: f64 = 1_000.0;

/// Rooms remembered before those quiet for a minute are forgotten (and read again from the
/// store when they next get a message).
const REMEMBERED_ROOMS: usize = 10_000;

/// A message on its way to the store.
#[derive(Clone, Debug)]
pub struct Draft {
    pub origin: Origin,
    /// The room, as read by the caller's checks.
    pub room: Document,
    /// The message: `_id`, `rid`, `u`, the text and what the caller adds. Its `ts` is the
    /// time it asks for (a client's clock), or none; `mentions`, `channels` and
    /// `_updatedAt` are set here.
    pub message: Document,
    /// The thread's first message, for a reply.
    pub parent: Option<Document>,
}

/// Why a message was not stored.
#[derive(Debug)]
pub enum PostError {
    /// A hook refused it.
    Refused(Refused),
    /// A message with its `_id` is stored already (a retry).
    Duplicate,
    Service(ServiceError),
}

impl From<ServiceError> for PostError {
    fn from(err: ServiceError) -> Self {
        PostError::Service(err)
    }
}

impl PostError {
    /// What a client is told: a hook's refusal reads as Rocket.Chat's refusal by an app.
    pub fn into_service_error(self) -> ServiceError {
        match self {
            PostError::Refused(refused) => refused.into(),
            PostError::Duplicate => not_allowed(),
            PostError::Service(err) => err,
        }
    }
}

/// How unread counts grow in a room of some kind (`Unread_Count`, `Unread_Count_DM`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct UnreadRule {
    all: bool,
    user_mentions: bool,
    group_mentions: bool,
}

fn unread_rule(setting: &str) -> UnreadRule {
    match setting {
        "all_messages" => UnreadRule {
            all: true,
            user_mentions: true,
            group_mentions: true,
        },
        "user_mentions_only" | "mentions_only" => UnreadRule {
            all: false,
            user_mentions: true,
            group_mentions: setting == "mentions_only",
        },
        "group_mentions_only" => UnreadRule {
            all: false,
            user_mentions: false,
            group_mentions: true,
        },
        _ => UnreadRule {
            all: false,
            user_mentions: true,
            group_mentions: true,
        },
    }
}

fn sender_of(message: &Document) -> &str {
    author_of(message).unwrap_or_default()
}

/// The message's time in ms.
pub fn ts_of(message: &Document) -> f64 {
    match message.get("ts") {
        Some(Value::Date(ms)) => *ms,
        _ => 0.0,
    }
}

/// An update of a batch, from a filter and a modifier in JSON.
pub fn update_op(
    collection: &str,
    filter: serde_json::Value,
    modifier: serde_json::Value,
    multi: bool,
) -> Result<WriteOp, ServiceError> {
    Ok(WriteOp::Update {
        collection: collection.into(),
        selector: selector(filter)?,
        update: crate::engine::build::update(modifier)?,
        options: UpdateOptions {
            multi,
            upsert: false,
        },
    })
}

/// Each room's last message time, so that no two messages of a room share a millisecond and
/// a room's times never run ahead of the clock: a message takes the current millisecond, or
/// the one after the room's last message when that is not earlier, and waits for the clock
/// to reach it. So history paged by `ts` skips nothing, and a room takes at most a thousand
/// messages a second. A room not remembered (after a start, or quiet for a while) is read
/// back from the store first, so a restart never stamps a message before an older one.
#[derive(Default)]
pub struct RoomClocks {
    last: Mutex<HashMap<String, f64>>,
}

impl RoomClocks {
    /// Takes `ts` as a time `rid` has given (read back from the store).
    fn note(&self, rid: &str, ts: f64) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let entry = last.entry(rid.to_owned()).or_insert(f64::MIN);
        if ts > *entry {
            *entry = ts;
        }
    }

    /// The time of `rid`'s next message: `wanted` (whole milliseconds), or the millisecond
    /// after the room's last one when that is not earlier; `None` while the room's last
    /// time is not known (it is read from the store, then noted).
    fn next(&self, rid: &str, wanted: f64, now: f64) -> Option<f64> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.len() > REMEMBERED_ROOMS {
            // A room quiet for a minute cannot collide with a new message: forget it.
            last.retain(|_, t| *t > now - 60_000.0);
        }
        let entry = last.get_mut(rid)?;
        let wanted = wanted.floor();
        let ts = if wanted > *entry {
            wanted
        } else {
            *entry + 1.0
        };
        *entry = ts;
        Some(ts)
    }
}

/// The one path of stored messages.
pub struct Posting {
    store: Arc<dyn Store>,
    permissions: Arc<Permissions>,
    settings: Arc<Settings>,
    hooks: Arc<Hooks>,
    clocks: RoomClocks,
    /// Whether other instances stamp messages too: each time is then claimed in the
    /// store (`comet_room_clocks`), so no two instances give a room the same one.
    shared_clocks: std::sync::atomic::AtomicBool,
}

impl Posting {
    pub fn new(
        store: Arc<dyn Store>,
        permissions: Arc<Permissions>,
        settings: Arc<Settings>,
        hooks: Arc<Hooks>,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            permissions,
            settings,
            hooks,
            clocks: RoomClocks::default(),
            shared_clocks: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Several instances post to the same rooms: times are claimed in the store from now on.
    pub fn share_clocks(&self) {
        self.shared_clocks
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Claims `ts` for `rid` among every instance: `ts` when it is after the room's claimed
    /// time, else the millisecond after that (which this process's clock then follows).
    async fn claim_time(&self, rid: &str, mut ts: f64) -> Result<f64, ServiceError> {
        for _ in 0..16 {
            let claimed = self
                .store
                .update(
                    ROOM_CLOCKS,
                    selector(serde_json::json!({"_id": rid, "ts": {"$lt": {"$date": ts}}}))?,
                    crate::engine::build::update(
                        serde_json::json!({"$set": {"ts": {"$date": ts}}}),
                    )?,
                    UpdateOptions::default(),
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
            if claimed.matched > 0 {
                return Ok(ts);
            }
            let current = crate::engine::build::find_one(
                &*self.store,
                ROOM_CLOCKS,
                serde_json::json!({"_id": rid}),
            )
            .await?;
            match current.as_ref().and_then(|c| c.get("ts")) {
                Some(Value::Date(last)) => {
                    ts = ts.max(last + 1.0);
                    self.clocks.note(rid, ts);
                }
                _ => {
                    let first = doc(serde_json::json!({"_id": rid, "ts": {"$date": ts}}))?;
                    match self.store.insert(ROOM_CLOCKS, first).await {
                        Ok(_) => return Ok(ts),
                        Err(StoreError::DuplicateKey(_)) => continue,
                        Err(e) => return Err(ServiceError::from_store(&e)),
                    }
                }
            }
        }
        Err(ServiceError::internal(
            "a room's message time could not be claimed",
        ))
    }

    /// The hooks every write of the chat services runs.
    pub fn hooks(&self) -> &Arc<Hooks> {
        &self.hooks
    }

    fn flag(&self, id: &str) -> bool {
        self.settings.value(id) == Some(Value::Bool(true))
    }

    async fn find(
        &self,
        collection: &str,
        filter: serde_json::Value,
        sort: Option<serde_json::Value>,
        limit: usize,
    ) -> Result<Vec<Document>, ServiceError> {
        let sort = match sort {
            Some(keys) => crate::model::query::Sort::parse(&doc(keys)?)
                .map_err(|e| ServiceError::internal(e.0))?,
            None => crate::model::query::Sort::default(),
        };
        self.store
            .find(
                collection,
                FindOptions {
                    selector: selector(filter)?,
                    sort,
                    limit: Some(limit),
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// Stores `draft`, through the hooks, with everything it changes; returns the message
    /// as stored.
    pub async fn post(&self, call: &Call<'_>, draft: Draft) -> Result<Document, PostError> {
        let Draft {
            origin,
            room,
            message,
            parent,
        } = draft;
        let verdict = will_hook!(
            self.hooks,
            Point::MessageWillBeSaved,
            message,
            |hook, current| {
                hook.message_will_be_saved(MessageEvent {
                    origin,
                    message: current,
                    room: &room,
                })
            }
        );
        let mut message = match verdict {
            Ok(None) => message,
            Ok(Some(rewritten)) => keeping(&message, rewritten, FIXED_FIELDS),
            Err(refused) => return Err(PostError::Refused(refused)),
        };
        let rid = text(&room, "_id").unwrap_or_default().to_owned();
        let sender = sender_of(&message).to_owned();
        let (mentioned, group) = if origin == Origin::System {
            (Vec::new(), false)
        } else {
            let said = text(&message, "msg").unwrap_or_default();
            let parsed = mentions::parse(said);
            let (mentions, ids, group) = self.resolve_mentions(&parsed, &sender, &rid).await?;
            let channels = self.resolve_channels(&parsed.channels).await?;
            message.insert(
                "mentions".into(),
                Value::from_plain_json(serde_json::Value::Array(mentions)),
            );
            message.insert(
                "channels".into(),
                Value::from_plain_json(serde_json::Value::Array(channels)),
            );
            (ids, group)
        };
        let ts = self.stamp(&rid, &message).await?;
        let now = now_ms();
        message.insert("ts".into(), Value::Date(ts));
        message.insert("_updatedAt".into(), Value::Date(now.max(ts)));
        let mut ops = vec![WriteOp::Insert {
            collection: MESSAGES.into(),
            doc: message.clone(),
        }];
        if origin == Origin::System {
            ops.push(update_op(
                ROOMS,
                serde_json::json!({"_id": rid}),
                serde_json::json!({"$inc": {"msgs": 1}, "$set": {"lm": date(ts), "_updatedAt": date(now)}}),
                false,
            )?);
        } else {
            ops.extend(self.count_message(&room, &message, parent.as_ref(), &mentioned, group)?);
        }
        // The message and everything it changes around it commit together (one transaction
        // on the embedded store): a reader never sees the message without its counters.
        match self.store.write_all(ops).await {
            Ok(outcomes) => {
                if let Some(seq) = outcomes.iter().map(WriteOutcome::seq).max() {
                    call.record_write(seq);
                }
            }
            Err(StoreError::DuplicateKey(_)) => return Err(PostError::Duplicate),
            Err(other) => return Err(PostError::Service(ServiceError::from_store(&other))),
        }
        after_hook!(self.hooks, Point::MessageHasBeenSaved, |hook| {
            hook.message_has_been_saved(
                MessageEvent {
                    origin,
                    message: &message,
                    room: &room,
                },
                call,
            )
        });
        Ok(message)
    }

    /// The message's time: the one it asks for (never ahead of the clock) made unique in its
    /// room, once the clock has reached it.
    async fn stamp(&self, rid: &str, message: &Document) -> Result<f64, ServiceError> {
        let now = now_ms();
        let wanted = match message.get("ts") {
            Some(Value::Date(asked)) => asked.min(now),
            _ => now,
        };
        let mut ts = match self.clocks.next(rid, wanted, now) {
            Some(ts) => ts,
            None => self.first_stamp(rid, wanted, now).await?,
        };
        if self
            .shared_clocks
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            ts = self.claim_time(rid, ts).await?;
        }
        let ahead = ts - now_ms();
        if ahead > 0.0 {
            if ahead <= LONGEST_WAIT_MS {
                tokio::time::sleep(Duration::from_secs_f64(ahead / 1000.0)).await;
            } else {
                tracing::warn!(
                    room = rid,
                    ahead_ms = ahead,
                    "this room's last message is dated ahead of the clock; new messages follow it"
                );
            }
        }
        Ok(ts)
    }

    /// The first time given in `rid` since this process started (or remembered it last):
    /// after the room's newest stored message.
    async fn first_stamp(&self, rid: &str, wanted: f64, now: f64) -> Result<f64, ServiceError> {
        let newest = self
            .find(
                MESSAGES,
                serde_json::json!({"rid": rid}),
                Some(serde_json::json!({"ts": -1})),
                1,
            )
            .await?;
        self.clocks
            .note(rid, newest.first().map_or(f64::MIN, ts_of));
        self.clocks
            .next(rid, wanted, now)
            .ok_or_else(|| ServiceError::internal("a room's clock was not kept"))
    }

    /// `mentions` of a message (users that exist, `all`, `here`), the mentioned user ids,
    /// and whether the whole room was mentioned (and the sender may).
    pub(crate) async fn resolve_mentions(
        &self,
        parsed: &mentions::Parsed,
        sender: &str,
        rid: &str,
    ) -> Result<(Vec<serde_json::Value>, Vec<String>, bool), ServiceError> {
        let mut out = Vec::new();
        let mut ids = Vec::new();
        let mut group = false;
        for name in &parsed.users {
            match name.as_str() {
                "all" | "here" => {
                    if self
                        .permissions
                        .may(sender, &format!("mention-{name}"), Some(rid))
                        .await?
                    {
                        group = true;
                        out.push(
                            serde_json::json!({"_id": name, "username": name, "type": "user"}),
                        );
                    }
                }
                _ => {
                    let found = self
                        .find(USERS, serde_json::json!({"username": name}), None, 1)
                        .await?;
                    if let Some(user) = found.first() {
                        let id = text(user, "_id").unwrap_or_default().to_owned();
                        out.push(serde_json::json!({
                            "_id": id, "username": text(user, "username"),
                            "name": text(user, "name"), "type": "user",
                        }));
                        ids.push(id);
                    }
                }
            }
        }
        Ok((out, ids, group))
    }

    /// `channels` of a message: the public rooms named with `#`.
    pub(crate) async fn resolve_channels(
        &self,
        names: &[String],
    ) -> Result<Vec<serde_json::Value>, ServiceError> {
        let mut out = Vec::new();
        for name in names {
            let found = self
                .find(
                    ROOMS,
                    serde_json::json!({"name": name, "t": {"$in": ["c", "p"]}}),
                    None,
                    1,
                )
                .await?;
            if let Some(room) = found.first() {
                if RoomKind::of(room) == Some(RoomKind::Channel) {
                    out.push(serde_json::json!({"_id": text(room, "_id"), "name": name}));
                }
            }
        }
        Ok(out)
    }

    /// What a new message changes around it: the room's count and last message, the other
    /// members' unread counts and mentions, the thread's counters.
    fn count_message(
        &self,
        room: &Document,
        message: &Document,
        parent: Option<&Document>,
        mentioned: &[String],
        group: bool,
    ) -> Result<Vec<WriteOp>, ServiceError> {
        let mut ops = Vec::new();
        let rid = text(room, "_id").unwrap_or_default();
        let sender = sender_of(message).to_owned();
        let ts = ts_of(message);
        let now = now_ms();
        let in_thread_only = parent.is_some() && message.get("tshow") != Some(&Value::Bool(true));
        let mut room_set = serde_json::json!({"lm": date(ts), "_updatedAt": date(now)});
        if !in_thread_only && self.flag("Store_Last_Message") {
            room_set["lastMessage"] =
                crate::engine::build::to_json(&Value::Object(message.clone()));
        }
        ops.push(update_op(
            ROOMS,
            serde_json::json!({"_id": rid}),
            serde_json::json!({"$inc": {"msgs": 1}, "$set": room_set}),
            false,
        )?);
        if let Some(parent) = parent {
            let tmid = text(parent, "_id").unwrap_or_default();
            ops.push(update_op(MESSAGES,
                    serde_json::json!({"_id": tmid}),
                    serde_json::json!({"$inc": {"tcount": 1}, "$set": {"tlm": date(ts), "_updatedAt": date(now)}, "$addToSet": {"replies": sender}}),
                    false)?);
            // The thread's followers (its starter and those who replied) see it unread.
            let mut followers: Vec<String> = match parent.get("replies") {
                Some(Value::Array(r)) => r
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            let starter = sender_of(parent);
            if !starter.is_empty() {
                followers.push(starter.to_owned());
            }
            followers.retain(|f| *f != sender);
            if !followers.is_empty() {
                ops.push(update_op(SUBSCRIPTIONS,
                        serde_json::json!({"rid": rid, "u._id": {"$in": followers}}),
                        serde_json::json!({"$addToSet": {"tunread": tmid}, "$set": {"alert": true, "_updatedAt": date(now)}}),
                        true)?);
            }
        }
        if !in_thread_only {
            let setting = if RoomKind::of(room) == Some(RoomKind::Direct) {
                "Unread_Count_DM"
            } else {
                "Unread_Count"
            };
            let rule = unread_rule(
                self.settings
                    .value(setting)
                    .as_ref()
                    .and_then(Value::as_str)
                    .unwrap_or("user_and_group_mentions_only"),
            );
            let mut others =
                serde_json::json!({"$set": {"alert": true, "open": true, "_updatedAt": date(now)}});
            let mut inc = serde_json::Map::new();
            if rule.all {
                inc.insert("unread".into(), 1.into());
            }
            if group {
                inc.insert("groupMentions".into(), 1.into());
                if rule.group_mentions {
                    inc.insert("unread".into(), 1.into());
                }
            }
            if inc.is_empty() {
                // Nothing to count: only the subscriptions not yet alerted or not open change
                // (Rocket.Chat's rule), found through the (rid, alert) and (rid, open) indexes,
                // so a busy room costs no read or write per member per message. A missing
                // field counts as not set, as `$ne: true` would.
                for flag in ["alert", "open"] {
                    ops.push(update_op(
                        SUBSCRIPTIONS,
                        serde_json::json!({"rid": rid, flag: {"$in": [false, null]}, "u._id": {"$ne": sender}}),
                        others.clone(),
                        true,
                    )?);
                }
            } else {
                others["$inc"] = serde_json::Value::Object(inc);
                ops.push(update_op(
                    SUBSCRIPTIONS,
                    serde_json::json!({"rid": rid, "u._id": {"$ne": sender}}),
                    others,
                    true,
                )?);
            }
            let mentioned: Vec<&String> = mentioned.iter().filter(|m| **m != sender).collect();
            if !mentioned.is_empty() {
                let mut inc = serde_json::json!({"userMentions": 1});
                let counted = rule.all || (group && rule.group_mentions);
                if rule.user_mentions && !counted {
                    inc["unread"] = 1.into();
                }
                ops.push(update_op(
                    SUBSCRIPTIONS,
                    serde_json::json!({"rid": rid, "u._id": {"$in": mentioned}}),
                    serde_json::json!({"$inc": inc}),
                    true,
                )?);
            }
        }
        // The sender has read its own room (written only when something was unread).
        ops.push(update_op(SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": sender, "$or": [
                    {"unread": {"$gt": 0}}, {"alert": true}, {"userMentions": {"$gt": 0}},
                    {"groupMentions": {"$gt": 0}}, {"open": false},
                ]}),
                serde_json::json!({"$set": {"unread": 0, "alert": false, "userMentions": 0, "groupMentions": 0, "open": true, "ls": date(now), "_updatedAt": date(now)}}),
                false)?);
        Ok(ops)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unread_rules_follow_the_settings_names() {
        assert!(unread_rule("all_messages").all);
        let mentions = unread_rule("user_and_group_mentions_only");
        assert!(!mentions.all && mentions.user_mentions && mentions.group_mentions);
        let users = unread_rule("user_mentions_only");
        assert!(users.user_mentions && !users.group_mentions);
        let dm = unread_rule("mentions_only");
        assert!(!dm.all && dm.user_mentions && dm.group_mentions);
    }

    #[test]
    fn a_rooms_times_are_unique_and_follow_the_clock() {
        let clocks = RoomClocks::default();
        clocks.note("r", 1_000.0);
        // Asked for earlier than the last: the millisecond after it.
        assert_eq!(clocks.next("r", 900.0, 2_000.0), Some(1_001.0));
        assert_eq!(clocks.next("r", 1_001.0, 2_000.0), Some(1_002.0));
        // The clock is ahead: its millisecond, fractions dropped.
        assert_eq!(clocks.next("r", 2_000.7, 2_000.7), Some(2_000.0));
        assert_eq!(clocks.next("r", 2_000.0, 2_000.0), Some(2_001.0));
        // A room not known yet gets no time until its last one is read back.
        assert_eq!(clocks.next("s", 2_000.0, 2_000.0), None);
        clocks.note("s", f64::MIN);
        assert_eq!(clocks.next("s", 2_000.0, 2_000.0), Some(2_000.0));
        // Reading back never moves a room's time back.
        clocks.note("r", 5.0);
        assert_eq!(clocks.next("r", 0.0, 2_000.0), Some(2_002.0));
    }
}
