//! The Room service: Rocket.Chat's rooms (`rocketchat_room`) and their members'
//! subscriptions (`rocketchat_subscription`), in Rocket.Chat's document shapes so that a
//! database Rocket.Chat wrote is served as it is.
//!
//! Owns creating rooms (channels, private groups, direct messages), room names (validated,
//! unique through the store's claims) and the reads clients sync from (`rooms/get`,
//! `subscriptions/get`). Every check of who may do what goes through
//! [`Permissions::has_permission`]. It must not know about sessions or HTTP; what clients
//! hear of a change comes from the store's change events, not from here.

pub mod directory;
pub mod discussions;
pub mod live;
pub mod members;
pub mod methods;

use crate::chat::call::Call;
use crate::chat::collections::{TEAMS, TEAM_MEMBERS};
use crate::chat::not_allowed;

use super::hooks::{after_hook, keeping, will_hook, Point};
use super::permissions::Permissions;
use super::posting::Posting;
use crate::chat::collections::{CLAIMS, ROOMS, SUBSCRIPTIONS, USERS};
use crate::engine::build::{doc, now_ms, selector};
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store, StoreError};
use std::collections::HashSet;
use std::sync::Arc;

/// The fields of a new room a hook's rewrite may not change.
const FIXED_ROOM_FIELDS: &[&str] = &[
    "_id",
    "t",
    "name",
    "u",
    "uids",
    "usernames",
    "teamId",
    "usersCount",
];

/// Whether `team` is private (Rocket.Chat's `type: 1`).
pub fn is_private_team(team: &Document) -> bool {
    team.get("type").and_then(Value::as_f64) == Some(1.0)
}

/// The id of `uid`'s membership of team `team_id`: derived from both, so two joins at once
/// write one membership.
pub fn team_member_id(team_id: &str, uid: &str) -> String {
    crate::model::random::Alea::new(&["team-member", team_id, uid]).id()
}

/// The room fields clients are sent (Rocket.Chat's `roomFields`, the core ones).
pub const ROOM_FIELDS: &[&str] = &[
    "_id",
    "name",
    "fname",
    "t",
    "cl",
    "u",
    "lm",
    "teamId",
    "teamMain",
    "topic",
    "announcement",
    "muted",
    "unmuted",
    "_updatedAt",
    "archived",
    "description",
    "default",
    "customFields",
    "lastMessage",
    "prid",
    "avatarETag",
    "usersCount",
    "msgs",
    "joinCodeRequired",
    "ro",
    "reactWhenReadOnly",
    "sysMes",
    "broadcast",
    "encrypted",
    "ts",
    "usernames",
    "uids",
];

/// The subscription fields clients are sent (Rocket.Chat's `subscriptionFields`, the core
/// ones).
pub const SUBSCRIPTION_FIELDS: &[&str] = &[
    "_id",
    "t",
    "ts",
    "ls",
    "lr",
    "name",
    "fname",
    "rid",
    "f",
    "u",
    "open",
    "alert",
    "roles",
    "unread",
    "prid",
    "userMentions",
    "groupMentions",
    "archived",
    "_updatedAt",
    "blocked",
    "blocker",
    "disableNotifications",
    "hideUnreadStatus",
    "hideMentionStatus",
    "muteGroupMentions",
    "desktopNotifications",
    "mobilePushNotifications",
    "emailNotifications",
    "unreadAlert",
    "audioNotificationValue",
    "desktopNotificationDuration",
    "tunread",
    "tunreadGroup",
    "tunreadUser",
    "teamId",
    "teamMain",
];

pub use crate::chat::records::RoomKind;

/// A room to create.
#[derive(Clone, Debug)]
pub struct NewRoom {
    pub kind: RoomKind,
    pub name: String,
    /// Usernames of the other members.
    pub members: Vec<String>,
    pub read_only: bool,
    /// The team the room is created in (`extraData.teamId`).
    pub team_id: Option<String>,
}

/// The Room service.
pub struct Rooms {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) permissions: Arc<Permissions>,
    /// The one path of stored messages (system messages of joins, leaves, renames, ...).
    pub(crate) posting: Arc<Posting>,
}

pub(crate) use crate::chat::client_error;

/// Rocket.Chat's default room-name rule (`UTF8_Channel_Names_Validation`,
/// `[0-9a-zA-Z-_.]+`), at most 100 characters, and not a reserved name. ASCII only, as for
/// usernames: a fullwidth `ＧＥＮＥＲＡＬ` or a Cyrillic `е` would make a name that looks like
/// another room's.
pub fn valid_room_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && !crate::chat::accounts::reserved_username(name)
}

/// `doc` with only `fields`.
pub fn projected(doc: &Document, fields: &[&str]) -> Document {
    let mut out = Document::default();
    for f in fields {
        if let Some(v) = doc.get(*f) {
            out.insert((*f).into(), v.clone());
        }
    }
    out
}

/// The id of `uid`'s subscription to `rid`: derived from both, so two joins at once write
/// one subscription (the second is refused as a duplicate) where Rocket.Chat relies on a
/// unique index the embedded store does not have.
pub fn subscription_id(rid: &str, uid: &str) -> String {
    crate::model::random::Alea::new(&["subscription", rid, uid]).id()
}

pub(crate) use crate::chat::text;

impl Rooms {
    /// The service over `store`, its indexes made (a user's subscriptions; a room's members).
    pub async fn start(
        store: Arc<dyn Store>,
        permissions: Arc<Permissions>,
        posting: Arc<Posting>,
    ) -> Result<Arc<Self>, ServiceError> {
        // (rid, u._id): one member's subscription; (rid, alert) and (rid, open): the few
        // members a new message still has to alert, so a message costs no read of every
        // member's subscription.
        for keys in [
            serde_json::json!({"u._id": 1}),
            serde_json::json!({"rid": 1}),
            serde_json::json!({"rid": 1, "u._id": 1}),
            serde_json::json!({"rid": 1, "alert": 1}),
            serde_json::json!({"rid": 1, "open": 1}),
        ] {
            let sort = crate::model::query::Sort::parse(&doc(keys)?)
                .map_err(|e| ServiceError::internal(e.0))?;
            store
                .ensure_index(SUBSCRIPTIONS, sort)
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
        }
        Ok(Arc::new(Self {
            store,
            permissions,
            posting,
        }))
    }

    /// The one path of stored messages, which the Messaging service shares.
    pub fn posting(&self) -> &Arc<Posting> {
        &self.posting
    }

    /// The hooks every write runs.
    pub(crate) fn hooks(&self) -> &crate::chat::hooks::Hooks {
        self.posting.hooks()
    }

    pub(crate) async fn find(
        &self,
        collection: &str,
        filter: serde_json::Value,
        limit: Option<usize>,
    ) -> Result<Vec<Document>, ServiceError> {
        self.store
            .find(
                collection,
                FindOptions {
                    selector: selector(filter)?,
                    limit,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))
    }

    /// The caller's id and user document; `error-invalid-user` for no caller or a user
    /// without a name (Rocket.Chat's rule for creating rooms).
    pub(crate) async fn named_caller(
        &self,
        caller: Option<&str>,
    ) -> Result<(String, Document), ServiceError> {
        let invalid = || client_error("error-invalid-user", "Invalid user");
        let id = caller.ok_or_else(invalid)?;
        let user = self
            .user(id)
            .await?
            .filter(|u| text(u, "username").is_some())
            .ok_or_else(invalid)?;
        Ok((id.to_owned(), user))
    }

    /// Inserts `document`, its write recorded for the caller's fence.
    pub(crate) async fn insert(
        &self,
        call: &Call<'_>,
        collection: &str,
        document: Document,
    ) -> Result<(), ServiceError> {
        let ack = self
            .store
            .insert(collection, document)
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(())
    }

    pub async fn user(&self, user_id: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(USERS, serde_json::json!({"_id": user_id}), Some(1))
            .await?
            .pop())
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(USERS, serde_json::json!({"username": username}), Some(1))
            .await?
            .pop())
    }

    /// A room by id.
    pub async fn room(&self, rid: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(ROOMS, serde_json::json!({"_id": rid}), Some(1))
            .await?
            .pop())
    }

    /// A room by its name (channels and groups).
    pub async fn room_by_name(&self, name: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(
                ROOMS,
                serde_json::json!({"name": name, "t": {"$in": ["c", "p"]}}),
                Some(1),
            )
            .await?
            .pop())
    }

    /// A channel or group whose name is `name` but for case. `name` must be a valid room
    /// name (its only pattern character, `.`, is escaped here).
    async fn room_by_name_ignoring_case(
        &self,
        name: &str,
    ) -> Result<Option<Document>, ServiceError> {
        if let Some(exact) = self.room_by_name(name).await? {
            return Ok(Some(exact));
        }
        let pattern = format!("^{}$", name.replace('.', "\\."));
        Ok(self
            .find(
                ROOMS,
                serde_json::json!({"name": {"$regex": pattern, "$options": "i"}, "t": {"$in": ["c", "p"]}}),
                Some(1),
            )
            .await?
            .pop())
    }

    /// `user_id`'s subscription to `rid`.
    pub async fn subscription(
        &self,
        rid: &str,
        user_id: &str,
    ) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": user_id}),
                Some(1),
            )
            .await?
            .pop())
    }

    /// Whether `user_id` (none: anonymous) may see `room`: Rocket.Chat's `canAccessRoom`
    /// for public rooms (`view-c-room`) and for members (`view-<t>-room` or
    /// `view-joined-room`).
    pub async fn can_access(
        &self,
        room: &Document,
        user_id: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let rid = text(room, "_id").unwrap_or_default();
        let kind = RoomKind::of(room);
        if kind == Some(RoomKind::Channel)
            && self.team_allows(room, user_id).await?
            && self
                .permissions
                .has_permission(user_id, "view-c-room", None)
                .await?
        {
            return Ok(true);
        }
        let Some(user) = user_id else {
            return Ok(false);
        };
        if self.subscription(rid, user).await?.is_none() {
            return Ok(false);
        }
        let letter = kind.map_or("", RoomKind::letter);
        for permission in [format!("view-{letter}-room"), "view-joined-room".to_owned()] {
            if self
                .permissions
                .has_permission(Some(user), &permission, Some(rid))
                .await?
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A team by id.
    pub async fn team(&self, team_id: &str) -> Result<Option<Document>, ServiceError> {
        Ok(self
            .find(TEAMS, serde_json::json!({"_id": team_id}), Some(1))
            .await?
            .pop())
    }

    /// Whether `uid` is a member of team `team_id`.
    pub async fn is_team_member(&self, team_id: &str, uid: &str) -> Result<bool, ServiceError> {
        Ok(!self
            .find(
                TEAM_MEMBERS,
                serde_json::json!({"teamId": team_id, "userId": uid}),
                Some(1),
            )
            .await?
            .is_empty())
    }

    /// The members of team `team_id` when the team is private: beside a room's own members,
    /// the only readers of its public rooms. `None` for a public team or none at all.
    pub async fn private_team_members(
        &self,
        team_id: &str,
    ) -> Result<Option<HashSet<String>>, ServiceError> {
        match self.team(team_id).await? {
            Some(team) if is_private_team(&team) => Ok(Some(
                self.find(TEAM_MEMBERS, serde_json::json!({"teamId": team_id}), None)
                    .await?
                    .iter()
                    .filter_map(|m| text(m, "userId").map(str::to_owned))
                    .collect(),
            )),
            _ => Ok(None),
        }
    }

    /// Whether a room's team lets `user_id` see it as public: a room outside a team or in a
    /// public team does; a room of a private team only for the team's members.
    pub async fn team_allows(
        &self,
        room: &Document,
        user_id: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let Some(team_id) = text(room, "teamId") else {
            return Ok(true);
        };
        match self.team(team_id).await? {
            Some(team) if is_private_team(&team) => match user_id {
                Some(uid) => self.is_team_member(team_id, uid).await,
                None => Ok(false),
            },
            _ => Ok(true),
        }
    }

    /// Claims `name` for room `rid` (case-insensitive), refusing one already taken.
    pub(crate) async fn claim_name(&self, name: &str, rid: &str) -> Result<(), ServiceError> {
        // Rooms written without a claim (the first start's `general`, a Rocket.Chat database)
        // are found by name, ignoring case, as the claims compare.
        if self.room_by_name_ignoring_case(name).await?.is_some() {
            return Err(client_error(
                "error-duplicate-channel-name",
                &format!("A channel with name '{name}' exists"),
            ));
        }
        let claim =
            doc(serde_json::json!({"_id": format!("room:{}", name.to_lowercase()), "owner": rid}))?;
        match self.store.insert(CLAIMS, claim).await {
            Ok(_) => Ok(()),
            Err(StoreError::DuplicateKey(_)) => Err(client_error(
                "error-duplicate-channel-name",
                &format!("A channel with name '{name}' exists"),
            )),
            Err(other) => Err(ServiceError::from_store(&other)),
        }
    }

    /// A subscription document for `user` in `room`.
    pub(crate) fn subscription_doc(
        room: &Document,
        user: &Document,
        roles: &[&str],
        now: f64,
        display_name: Option<&str>,
    ) -> Result<Document, ServiceError> {
        let uid = text(user, "_id").unwrap_or_default();
        let name = display_name
            .or_else(|| text(room, "name"))
            .unwrap_or_default();
        let mut sub = serde_json::json!({
            "_id": subscription_id(text(room, "_id").unwrap_or_default(), uid),
            "rid": text(room, "_id"), "t": text(room, "t"),
            "name": name, "fname": display_name.or_else(|| text(room, "fname")).unwrap_or(name),
            "u": {"_id": uid, "username": text(user, "username"), "name": text(user, "name")},
            "ts": {"$date": now}, "ls": {"$date": now}, "_updatedAt": {"$date": now},
            "open": true, "alert": false, "unread": 0, "userMentions": 0, "groupMentions": 0,
        });
        if !roles.is_empty() {
            sub["roles"] = serde_json::json!(roles);
        }
        doc(sub)
    }

    /// Creates a channel or private group owned by the caller with `new.members`; returns
    /// the room as stored.
    pub async fn create(&self, call: &Call<'_>, new: NewRoom) -> Result<Document, ServiceError> {
        let (owner_id, owner) = self.named_caller(call.user()).await?;
        let owner_id = owner_id.as_str();
        let allowed = match &new.team_id {
            // A team's channel: the team's own permission, in its main room.
            Some(team_id) => {
                let team = self
                    .team(team_id)
                    .await?
                    .ok_or_else(|| client_error("error-team-not-found", "Team not found"))?;
                self.permissions
                    .has_permission(Some(owner_id), "create-team-channel", text(&team, "roomId"))
                    .await?
            }
            None => {
                self.permissions
                    .has_permission(Some(owner_id), new.kind.permission(), None)
                    .await?
            }
        };
        if !allowed {
            return Err(not_allowed());
        }
        if !valid_room_name(&new.name) {
            return Err(client_error(
                "error-invalid-name",
                &format!("{} is not a valid room name", new.name),
            ));
        }
        let mut members = Vec::new();
        for username in &new.members {
            if Some(username.as_str()) == text(&owner, "username") {
                continue;
            }
            let Some(member) = self.user_by_username(username).await? else {
                return Err(client_error(
                    "error-invalid-members",
                    &format!("Invalid member: {username}"),
                ));
            };
            if !members
                .iter()
                .any(|m: &Document| m.get("_id") == member.get("_id"))
            {
                members.push(member);
            }
        }
        let rid = crate::model::random::random_id();
        let now = now_ms();
        let mut room = doc(serde_json::json!({
            "_id": rid, "t": new.kind.letter(), "name": new.name, "fname": new.name,
            "u": {"_id": owner_id, "username": text(&owner, "username")},
            "ts": {"$date": now}, "_updatedAt": {"$date": now},
            "msgs": 0, "usersCount": members.len() + 1, "ro": new.read_only,
            "default": false, "sysMes": true,
        }))?;
        if let Some(team_id) = &new.team_id {
            room.insert("teamId".into(), Value::from(team_id.as_str()));
        }
        let room = self.room_through_hooks(room).await?;
        self.claim_name(&new.name, &rid).await?;
        self.insert(call, ROOMS, room.clone()).await?;
        let owner_sub = Self::subscription_doc(&room, &owner, &["owner"], now, None)?;
        let mut subs = vec![owner_sub];
        for member in &members {
            subs.push(Self::subscription_doc(&room, member, &[], now, None)?);
        }
        for sub in subs {
            self.insert(call, SUBSCRIPTIONS, sub).await?;
        }
        after_hook!(self.hooks(), Point::RoomHasBeenCreated, |hook| {
            hook.room_has_been_created(&room, call)
        });
        Ok(room)
    }

    /// `room` as the room-created hooks leave it (its `_id`, `t`, `name`, members and
    /// owner kept), or their refusal.
    async fn room_through_hooks(&self, room: Document) -> Result<Document, ServiceError> {
        let verdict = will_hook!(
            self.hooks(),
            Point::RoomWillBeCreated,
            room,
            |hook, current| { hook.room_will_be_created(current) }
        );
        match verdict {
            Ok(None) => Ok(room),
            Ok(Some(rewritten)) => Ok(keeping(&room, rewritten, FIXED_ROOM_FIELDS)),
            Err(refused) => Err(refused.into()),
        }
    }

    /// Rocket.Chat's `createDirectMessage`: the DM between the caller and `usernames`
    /// (its id is the members' sorted ids joined), created once and returned ever after.
    pub async fn direct_message(
        &self,
        call: &Call<'_>,
        usernames: &[String],
    ) -> Result<Document, ServiceError> {
        let (caller_id, me) = self.named_caller(call.user()).await?;
        let caller_id = caller_id.as_str();
        let mut people = vec![me.clone()];
        for username in usernames {
            if Some(username.as_str()) == text(&me, "username") {
                continue;
            }
            let other = self
                .user_by_username(username)
                .await?
                .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
            if !people.iter().any(|p| p.get("_id") == other.get("_id")) {
                people.push(other);
            }
        }
        if people.len() < 2 {
            return Err(client_error(
                "error-invalid-user",
                "Cannot create a direct message with yourself",
            ));
        }
        people.sort_by(|a, b| text(a, "_id").cmp(&text(b, "_id")));
        let uids: Vec<&str> = people.iter().filter_map(|p| text(p, "_id")).collect();
        let names: Vec<&str> = people.iter().filter_map(|p| text(p, "username")).collect();
        let rid = uids.concat();
        if let Some(existing) = self.room(&rid).await? {
            return Ok(existing);
        }
        let may_create = self
            .permissions
            .has_permission(Some(caller_id), "create-d", None)
            .await?;
        if !may_create {
            return Err(not_allowed());
        }
        let now = now_ms();
        let room = doc(serde_json::json!({
            "_id": rid, "t": "d", "uids": uids, "usernames": names,
            "ts": {"$date": now}, "_updatedAt": {"$date": now},
            "msgs": 0, "usersCount": uids.len(),
        }))?;
        let room = self.room_through_hooks(room).await?;
        match self.store.insert(ROOMS, room.clone()).await {
            Ok(ack) => call.record_write(ack.seq),
            // Created at the same moment by another call: theirs is the one.
            Err(StoreError::DuplicateKey(_)) => {
                return self
                    .room(&rid)
                    .await?
                    .ok_or_else(|| ServiceError::internal("direct message vanished"));
            }
            Err(other) => return Err(ServiceError::from_store(&other)),
        }
        for person in &people {
            // Each member sees the DM under the others' names.
            let others: Vec<&str> = people
                .iter()
                .filter(|p| p.get("_id") != person.get("_id"))
                .filter_map(|p| text(p, "username"))
                .collect();
            let label = others.join(", ");
            let sub = Self::subscription_doc(&room, person, &[], now, Some(&label))?;
            self.insert(call, SUBSCRIPTIONS, sub).await?;
        }
        after_hook!(self.hooks(), Point::RoomHasBeenCreated, |hook| {
            hook.room_has_been_created(&room, call)
        });
        Ok(room)
    }

    /// `subscriptions/get`: the caller's subscriptions (changed after `since`, with the
    /// removed ones, when given).
    pub async fn subscriptions_of(
        &self,
        user_id: Option<&str>,
        since: Option<f64>,
    ) -> Result<(Vec<Document>, Vec<Document>), ServiceError> {
        let Some(user) = user_id else {
            return Ok((Vec::new(), Vec::new()));
        };
        let mut filter = serde_json::json!({"u._id": user});
        if let Some(s) = since {
            filter["_updatedAt"] = serde_json::json!({"$gt": {"$date": s}});
        }
        let update = self
            .find(SUBSCRIPTIONS, filter, None)
            .await?
            .iter()
            .map(|s| projected(s, SUBSCRIPTION_FIELDS))
            .collect();
        let remove = match since {
            Some(s) => {
                crate::chat::collections::removed_since(
                    &*self.store,
                    SUBSCRIPTIONS,
                    s,
                    serde_json::json!({"u._id": user}),
                )
                .await?
            }
            None => Vec::new(),
        };
        Ok((update, remove))
    }

    /// `rooms/get`: the rooms the caller has a subscription to (changed after `since`, with
    /// the removed ones among them, when given).
    pub async fn rooms_of(
        &self,
        user_id: Option<&str>,
        since: Option<f64>,
    ) -> Result<(Vec<Document>, Vec<Document>), ServiceError> {
        let Some(user) = user_id else {
            return Ok((Vec::new(), Vec::new()));
        };
        let rids: Vec<Value> = self
            .find(SUBSCRIPTIONS, serde_json::json!({"u._id": user}), None)
            .await?
            .iter()
            .filter_map(|s| s.get("rid").cloned())
            .collect();
        let mut filter = Document::default();
        let mut within = Document::default();
        within.insert("$in".into(), Value::Array(rids.clone()));
        filter.insert("_id".into(), Value::Object(within));
        if let Some(s) = since {
            let mut after = Document::default();
            after.insert("$gt".into(), Value::Date(s));
            filter.insert("_updatedAt".into(), Value::Object(after));
        }
        let update = self
            .store
            .find(
                ROOMS,
                FindOptions {
                    selector: crate::model::query::Selector::parse(&filter)
                        .map_err(|e| ServiceError::internal(e.0))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?
            .iter()
            .map(|r| projected(r, ROOM_FIELDS))
            .collect();
        let remove = match since {
            // Only rooms the caller was in: Rocket.Chat sends every removed room, which tells
            // anyone of private rooms they never saw. A removed room's subscriptions go to
            // the trash with it, so those of the caller say which rooms it knew.
            Some(s) => {
                let mut known = rids;
                known.extend(
                    self.find(
                        crate::chat::collections::TRASH,
                        serde_json::json!({
                            "__collection__": SUBSCRIPTIONS, "u._id": user,
                            "_deletedAt": {"$gt": {"$date": s}},
                        }),
                        None,
                    )
                    .await?
                    .iter()
                    .filter_map(|sub| sub.get("rid").cloned()),
                );
                crate::chat::collections::removed_since(
                    &*self.store,
                    ROOMS,
                    s,
                    serde_json::json!({}),
                )
                .await?
                .into_iter()
                .filter(|r| r.get("_id").is_some_and(|id| known.contains(id)))
                .collect()
            }
            None => Vec::new(),
        };
        Ok((update, remove))
    }

    /// The public channels `caller` may see (`view-c-room`), by name.
    pub async fn public_channels(
        &self,
        caller: Option<&str>,
    ) -> Result<Vec<Document>, ServiceError> {
        if !self
            .permissions
            .has_permission(caller, "view-c-room", None)
            .await?
        {
            return Ok(Vec::new());
        }
        let mut rooms = Vec::new();
        for room in self
            .find(ROOMS, serde_json::json!({"t": "c"}), None)
            .await?
        {
            if self.team_allows(&room, caller).await? {
                rooms.push(room);
            }
        }
        rooms.sort_by(|a, b| text(a, "name").cmp(&text(b, "name")));
        Ok(rooms.iter().map(|r| projected(r, ROOM_FIELDS)).collect())
    }
}
