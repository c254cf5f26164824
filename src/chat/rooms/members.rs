//! Who is in a room and what a room is: joining, leaving, adding and removing members (with
//! `usersCount` kept exact and the system messages Rocket.Chat writes), mutes, room roles,
//! archiving, erasing, the room's settings, and the per-member flags (open, favourite).
//!
//! Every change is a store write; what members hear of it comes from the change events.
//! Checks of who may do what go through the permissions service, scoped to the room.

use super::{client_error, text, valid_room_name, Rooms, ROOM_FIELDS};
use crate::chat::call::Call;
use crate::chat::hooks::{
    after_hook, allow_hook, ChatHooks, HookFuture, MembershipEvent, Origin, Point,
};
use crate::chat::not_allowed;
use crate::chat::posting::{Draft, PostError};
use crate::chat::records::{MessageType, RoomKind};

use crate::chat::collections::MESSAGES;
use crate::chat::collections::TRASH;
use crate::chat::collections::{AVATARS, CLAIMS, ROOMS, SUBSCRIPTIONS, USERS};
use crate::engine::build::{doc, now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{FindOptions, RemoveOptions, StoreError, UpdateAck, UpdateOptions};

/// The room roles Rocket.Chat knows, and the permission that gives or takes each.
pub const ROOM_ROLES: &[(&str, &str)] = &[
    ("owner", "set-owner"),
    ("moderator", "set-moderator"),
    ("leader", "set-leader"),
];

/// `{_id, username, name}` of a user, as messages and subscriptions carry it.
pub fn user_ref(user: &Document) -> serde_json::Value {
    serde_json::json!({
        "_id": text(user, "_id"), "username": text(user, "username"), "name": text(user, "name"),
    })
}

/// One change of a room's settings (`saveRoomSettings`).
#[derive(Clone, Debug)]
pub enum RoomSetting {
    Name(String),
    Topic(String),
    Announcement(String),
    Description(String),
    ReadOnly(bool),
    /// Empty: no code needed any more.
    JoinCode(String),
    /// `c` or `p`.
    Kind(String),
    Default(bool),
    /// A data URI of an image; none: back to the initials.
    Avatar(Option<String>),
}

/// The team whose main room `room` is.
fn main_room_of(room: &Document) -> Option<&str> {
    (room.get("teamMain") == Some(&Value::Bool(true)))
        .then(|| text(room, "teamId"))
        .flatten()
}

/// A user document's `_id` (empty for none: such a user holds no permission).
fn uid_of(user: &Document) -> &str {
    text(user, "_id").unwrap_or_default()
}

impl Rooms {
    /// Applies `modifier` to what `filter` matches in `collection`, recorded for the fence.
    pub(crate) async fn write_update(
        &self,
        call: &Call<'_>,
        collection: &str,
        filter: serde_json::Value,
        modifier: serde_json::Value,
        multi: bool,
    ) -> Result<UpdateAck, ServiceError> {
        let ack = self
            .store
            .update(
                collection,
                selector(filter)?,
                update(modifier)?,
                UpdateOptions {
                    multi,
                    upsert: false,
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        if ack.seq > 0 {
            call.record_write(ack.seq);
        }
        Ok(ack)
    }

    /// The room `rid`, or `error-invalid-room`.
    pub async fn existing_room(&self, rid: &str) -> Result<Document, ServiceError> {
        self.room(rid)
            .await?
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))
    }

    /// The caller's user document, or `error-invalid-user`.
    pub async fn caller(&self, caller: Option<&str>) -> Result<Document, ServiceError> {
        let invalid = || client_error("error-invalid-user", "Invalid user");
        let id = caller.ok_or_else(invalid)?;
        self.user(id).await?.ok_or_else(invalid)
    }

    /// Writes a system message of kind `kind` (`uj`, `ul`, `au`, ...) to `room`, unless the
    /// room turned system messages off.
    pub async fn system_message(
        &self,
        call: &Call<'_>,
        room: &Document,
        kind: MessageType,
        msg: &str,
        by: &Document,
        extra: serde_json::Value,
    ) -> Result<(), ServiceError> {
        match room.get("sysMes") {
            Some(Value::Bool(false)) => return Ok(()),
            Some(Value::Array(hidden))
                if hidden.iter().any(|h| h.as_str() == Some(kind.as_str())) =>
            {
                return Ok(())
            }
            _ => {}
        }
        let rid = text(room, "_id").unwrap_or_default();
        let mut message = serde_json::json!({
            "_id": crate::model::random::random_id(), "rid": rid, "t": kind.as_str(), "msg": msg,
            "u": user_ref(by), "ts": null, "_updatedAt": null,
            "groupable": false,
        });
        if let (Some(m), serde_json::Value::Object(more)) = (message.as_object_mut(), extra) {
            m.extend(more);
        }
        let draft = Draft {
            origin: Origin::System,
            room: room.clone(),
            message: doc(message)?,
            parent: None,
        };
        match self.posting.post(call, draft).await {
            Ok(_) => Ok(()),
            // What the action did stands; only its message is not written.
            Err(PostError::Refused(refused)) => {
                tracing::debug!(hook = %refused.hook, kind = kind.as_str(), "a hook refused a system message");
                Ok(())
            }
            Err(other) => Err(other.into_service_error()),
        }
    }

    /// The system message of a join or a leave: `kinds.0` when someone else did it,
    /// `kinds.1` when the user did.
    async fn membership_message(
        &self,
        call: &Call<'_>,
        room: &Document,
        user: &Document,
        by: Option<&Document>,
        kinds: (MessageType, MessageType),
    ) -> Result<(), ServiceError> {
        let username = text(user, "username").unwrap_or_default();
        let (kind, author) = match by {
            Some(by) if by.get("_id") != user.get("_id") => (kinds.0, by),
            _ => (kinds.1, user),
        };
        self.system_message(call, room, kind, username, author, serde_json::json!({}))
            .await
    }

    /// Makes `user` a member of `room` (`added_by` someone else, or joining by itself);
    /// `false` when it was one already.
    pub async fn add_member(
        &self,
        call: &Call<'_>,
        room: &Document,
        user: &Document,
        added_by: Option<&Document>,
    ) -> Result<bool, ServiceError> {
        let rid = text(room, "_id").unwrap_or_default();
        let uid = text(user, "_id").unwrap_or_default();
        if self.subscription(rid, uid).await?.is_some() {
            return Ok(false);
        }
        let event = MembershipEvent {
            room,
            user,
            by: added_by,
        };
        allow_hook!(self.hooks(), Point::UserWillJoin, |hook| hook
            .user_will_join(event))?;
        let sub = Self::subscription_doc(room, user, &[], now_ms(), None)?;
        match self.store.insert(SUBSCRIPTIONS, sub).await {
            Ok(ack) => call.record_write(ack.seq),
            // Joined at the same moment by another call: that one counts.
            Err(StoreError::DuplicateKey(_)) => return Ok(false),
            Err(other) => return Err(ServiceError::from_store(&other)),
        }
        self.write_update(
            call,
            ROOMS,
            serde_json::json!({"_id": rid}),
            serde_json::json!({"$inc": {"usersCount": 1}, "$set": {"_updatedAt": {"$date": now_ms()}}}),
            false,
        )
        .await?;
        if RoomKind::of(room).is_some_and(RoomKind::is_group) {
            self.write_update(
                call,
                USERS,
                serde_json::json!({"_id": uid}),
                serde_json::json!({"$addToSet": {"__rooms": rid}}),
                false,
            )
            .await?;
        }
        self.membership_message(
            call,
            room,
            user,
            added_by,
            (MessageType::UserAdded, MessageType::UserJoined),
        )
        .await?;
        if let Some(team_id) = main_room_of(room) {
            self.join_team(call, team_id, user, added_by).await?;
        }
        after_hook!(self.hooks(), Point::UserHasJoined, |hook| {
            hook.user_has_joined(event, call)
        });
        Ok(true)
    }

    /// The rooms of team `team_id` its members join with it.
    async fn auto_join_rooms(&self, team_id: &str) -> Result<Vec<Document>, ServiceError> {
        self.find(
            ROOMS,
            serde_json::json!({"teamId": team_id, "teamDefault": true, "teamMain": {"$ne": true}}),
            None,
        )
        .await
    }

    /// Makes `user` a member of team `team_id` (whose main room it just joined) and of the
    /// team's auto-join rooms.
    async fn join_team(
        &self,
        call: &Call<'_>,
        team_id: &str,
        user: &Document,
        added_by: Option<&Document>,
    ) -> Result<(), ServiceError> {
        let uid = text(user, "_id").unwrap_or_default();
        let by = added_by.unwrap_or(user);
        let member = doc(serde_json::json!({
            "_id": super::team_member_id(team_id, uid), "teamId": team_id, "userId": uid,
            "roles": [], "createdAt": {"$date": now_ms()}, "_updatedAt": {"$date": now_ms()},
            "createdBy": {"_id": text(by, "_id"), "username": text(by, "username")},
        }))?;
        match self
            .store
            .insert(crate::chat::collections::TEAM_MEMBERS, member)
            .await
        {
            Ok(ack) => call.record_write(ack.seq),
            Err(StoreError::DuplicateKey(_)) => {}
            Err(other) => return Err(ServiceError::from_store(&other)),
        }
        for room in self.auto_join_rooms(team_id).await? {
            Box::pin(self.add_member(call, &room, user, added_by)).await?;
        }
        Ok(())
    }

    /// Takes `user` out of team `team_id` (whose main room it just left) and out of the
    /// team's auto-join rooms.
    pub(crate) async fn leave_team(
        &self,
        call: &Call<'_>,
        team_id: &str,
        user: &Document,
        removed_by: Option<&Document>,
    ) -> Result<(), ServiceError> {
        let uid = text(user, "_id").unwrap_or_default();
        self.remove_where(
            call,
            crate::chat::collections::TEAM_MEMBERS,
            serde_json::json!({"teamId": team_id, "userId": uid}),
        )
        .await?;
        // The team's change event is what makes the streams drop this user's listeners on
        // the team's public rooms, when the team is private.
        self.write_update(
            call,
            crate::chat::collections::TEAMS,
            serde_json::json!({"_id": team_id}),
            serde_json::json!({"$set": {"_updatedAt": {"$date": now_ms()}}}),
            false,
        )
        .await?;
        for room in self.auto_join_rooms(team_id).await? {
            Box::pin(self.remove_member(call, &room, user, removed_by)).await?;
        }
        Ok(())
    }

    /// Takes `user` out of `room` (`removed_by` someone else, or leaving); its subscription
    /// goes to the trash so `subscriptions/get` since a date reports it; `false` when it was
    /// not a member.
    pub async fn remove_member(
        &self,
        call: &Call<'_>,
        room: &Document,
        user: &Document,
        removed_by: Option<&Document>,
    ) -> Result<bool, ServiceError> {
        let rid = text(room, "_id").unwrap_or_default();
        let uid = text(user, "_id").unwrap_or_default();
        let Some(sub) = self.subscription(rid, uid).await? else {
            return Ok(false);
        };
        let event = MembershipEvent {
            room,
            user,
            by: removed_by,
        };
        allow_hook!(self.hooks(), Point::UserWillLeave, |hook| hook
            .user_will_leave(event))?;
        let sub_id = text(&sub, "_id").unwrap_or_default().to_owned();
        self.to_trash(call, SUBSCRIPTIONS, sub).await?;
        let ack = self
            .store
            .remove(
                SUBSCRIPTIONS,
                selector(serde_json::json!({"_id": sub_id}))?,
                RemoveOptions { multi: false },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        if ack.matched == 0 {
            // Removed at the same moment by another call: that one counts.
            return Ok(false);
        }
        call.record_write(ack.seq);
        self.write_update(
            call,
            ROOMS,
            serde_json::json!({"_id": rid}),
            serde_json::json!({"$inc": {"usersCount": -1}, "$set": {"_updatedAt": {"$date": now_ms()}}}),
            false,
        )
        .await?;
        self.write_update(
            call,
            USERS,
            serde_json::json!({"_id": uid}),
            serde_json::json!({"$pull": {"__rooms": rid}}),
            false,
        )
        .await?;
        self.membership_message(
            call,
            room,
            user,
            removed_by,
            (MessageType::UserRemoved, MessageType::UserLeft),
        )
        .await?;
        if let Some(team_id) = main_room_of(room) {
            self.leave_team(call, team_id, user, removed_by).await?;
        }
        after_hook!(self.hooks(), Point::UserHasLeft, |hook| {
            hook.user_has_left(event, call)
        });
        Ok(true)
    }

    /// Copies `document` of `collection` to Rocket.Chat's trash, stamped with when.
    pub(crate) async fn to_trash(
        &self,
        call: &Call<'_>,
        collection: &str,
        mut document: Document,
    ) -> Result<(), ServiceError> {
        document.insert("__collection__".into(), Value::from(collection));
        document.insert("_deletedAt".into(), Value::Date(now_ms()));
        // A document removed twice (left, joined, left) keeps one trash entry: the latest.
        if let Some(id) = document.get("_id").cloned() {
            let mut key = Document::default();
            key.insert("_id".into(), id);
            let _ = self
                .store
                .remove(
                    TRASH,
                    crate::model::query::Selector::parse(&key)
                        .map_err(|e| ServiceError::internal(e.0))?,
                    RemoveOptions { multi: false },
                )
                .await;
        }
        self.insert(call, TRASH, document).await
    }

    /// Whether `user` holds `role` in `rid`.
    async fn holds(&self, rid: &str, uid: &str, role: &str) -> Result<bool, ServiceError> {
        Ok(self
            .subscription(rid, uid)
            .await?
            .and_then(|s| s.get("roles").cloned())
            .is_some_and(|r| matches!(r, Value::Array(roles) if roles.iter().any(|x| x.as_str() == Some(role)))))
    }

    /// Whether `uid` is the room's only owner.
    async fn is_last_owner(&self, rid: &str, uid: &str) -> Result<bool, ServiceError> {
        if !self.holds(rid, uid, "owner").await? {
            return Ok(false);
        }
        let owners = self
            .find(
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "roles": "owner"}),
                Some(2),
            )
            .await?;
        Ok(owners.len() < 2)
    }

    /// `joinRoom`: the caller joins the public room `rid` (with its join code when it has one).
    pub async fn join(
        &self,
        call: &Call<'_>,
        rid: &str,
        join_code: Option<&str>,
    ) -> Result<bool, ServiceError> {
        let user = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        if RoomKind::of(&room) != Some(RoomKind::Channel)
            || !self.can_access(&room, call.user()).await?
        {
            return Err(not_allowed());
        }
        if room.get("joinCodeRequired") == Some(&Value::Bool(true))
            && !self
                .permissions
                .may(uid_of(&user), "join-without-join-code", None)
                .await?
            && (join_code.is_none() || join_code != text(&room, "joinCode"))
        {
            return Err(client_error("error-code-invalid", "Invalid Room Password"));
        }
        self.add_member(call, &room, &user, None).await
    }

    /// Rocket.Chat's default channels for a user who just got a name.
    pub async fn join_default_channels(
        &self,
        call: &Call<'_>,
        user_id: &str,
    ) -> Result<(), ServiceError> {
        let Some(user) = self.user(user_id).await? else {
            return Ok(());
        };
        let rooms = self
            .find(ROOMS, serde_json::json!({"default": true}), None)
            .await?;
        for room in rooms {
            self.add_member(call, &room, &user, None).await?;
        }
        Ok(())
    }

    /// `leaveRoom`.
    pub async fn leave(&self, call: &Call<'_>, rid: &str) -> Result<(), ServiceError> {
        let user = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        let uid = text(&user, "_id").unwrap_or_default();
        let permission = match RoomKind::of(&room) {
            Some(RoomKind::Channel) => "leave-c",
            Some(RoomKind::PrivateGroup) => "leave-p",
            _ => return Err(not_allowed()),
        };
        self.permissions
            .require(uid_of(&user), permission, None)
            .await?;
        if self.subscription(rid, uid).await?.is_none() {
            return Err(client_error(
                "error-user-not-in-room",
                "You are not in this room",
            ));
        }
        if self.is_last_owner(rid, uid).await? {
            return Err(client_error(
                "error-you-are-last-owner",
                "You are the last owner. Please set new owner before leaving the room.",
            ));
        }
        self.remove_member(call, &room, &user, None).await?;
        Ok(())
    }

    /// `addUsersToRoom`: the caller adds `usernames` to `rid`.
    pub async fn add_users(
        &self,
        call: &Call<'_>,
        rid: &str,
        usernames: &[String],
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        let kind = match RoomKind::of(&room) {
            Some(kind) if kind.is_group() => kind.letter(),
            _ => return Err(not_allowed()),
        };
        let member = self
            .subscription(rid, text(&me, "_id").unwrap_or_default())
            .await?
            .is_some();
        let allowed = (member
            && self
                .permissions
                .may(uid_of(&me), "add-user-to-joined-room", Some(rid))
                .await?)
            || self
                .permissions
                .may(uid_of(&me), &format!("add-user-to-any-{kind}-room"), None)
                .await?;
        if !allowed {
            return Err(not_allowed());
        }
        for username in usernames {
            let user = self.user_by_username(username).await?.ok_or_else(|| {
                client_error(
                    "error-invalid-username",
                    &format!("Invalid username: {username}"),
                )
            })?;
            self.add_member(call, &room, &user, Some(&me)).await?;
        }
        Ok(())
    }

    /// `removeUserFromRoom`: the caller removes `username` from `rid`.
    pub async fn remove_user(
        &self,
        call: &Call<'_>,
        rid: &str,
        username: &str,
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        if !RoomKind::of(&room).is_some_and(RoomKind::is_group)
            || !self
                .permissions
                .may(uid_of(&me), "remove-user", Some(rid))
                .await?
        {
            return Err(not_allowed());
        }
        let user = self
            .user_by_username(username)
            .await?
            .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
        let uid = text(&user, "_id").unwrap_or_default();
        if self.subscription(rid, uid).await?.is_none() {
            return Err(client_error(
                "error-user-not-in-room",
                "User is not in this room",
            ));
        }
        if self.is_last_owner(rid, uid).await? {
            return Err(client_error(
                "error-you-are-last-owner",
                "This is the last owner. Please set a new owner before removing this one.",
            ));
        }
        self.remove_member(call, &room, &user, Some(&me)).await?;
        Ok(())
    }

    /// `muteUserInRoom` / `unmuteUserInRoom`.
    pub async fn set_muted(
        &self,
        call: &Call<'_>,
        rid: &str,
        username: &str,
        muted: bool,
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        if RoomKind::of(&room) == Some(RoomKind::Direct)
            || !self
                .permissions
                .may(uid_of(&me), "mute-user", Some(rid))
                .await?
        {
            return Err(not_allowed());
        }
        let user = self
            .user_by_username(username)
            .await?
            .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
        if self
            .subscription(rid, text(&user, "_id").unwrap_or_default())
            .await?
            .is_none()
        {
            return Err(client_error(
                "error-user-not-in-room",
                "User is not in this room",
            ));
        }
        let now = serde_json::json!({"$date": now_ms()});
        let modifier = if muted {
            serde_json::json!({"$addToSet": {"muted": username}, "$pull": {"unmuted": username}, "$set": {"_updatedAt": now}})
        } else {
            serde_json::json!({"$pull": {"muted": username}, "$set": {"_updatedAt": now}})
        };
        let ack = self
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                modifier,
                false,
            )
            .await?;
        if ack.modified > 0 {
            let kind = if muted {
                MessageType::UserMuted
            } else {
                MessageType::UserUnmuted
            };
            self.system_message(call, &room, kind, username, &me, serde_json::json!({}))
                .await?;
        }
        Ok(())
    }

    /// `archiveRoom` / `unarchiveRoom`.
    pub async fn set_archived(
        &self,
        call: &Call<'_>,
        rid: &str,
        archived: bool,
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        let permission = if archived {
            "archive-room"
        } else {
            "unarchive-room"
        };
        if RoomKind::of(&room) == Some(RoomKind::Direct)
            || !self
                .permissions
                .may(uid_of(&me), permission, Some(rid))
                .await?
        {
            return Err(not_allowed());
        }
        let now = serde_json::json!({"$date": now_ms()});
        self.write_update(
            call,
            ROOMS,
            serde_json::json!({"_id": rid}),
            serde_json::json!({"$set": {"archived": archived, "_updatedAt": now}}),
            false,
        )
        .await?;
        self.write_update(
            call,
            SUBSCRIPTIONS,
            serde_json::json!({"rid": rid}),
            serde_json::json!({"$set": {"archived": archived, "open": !archived, "_updatedAt": now}}),
            true,
        )
        .await?;
        let kind = if archived {
            MessageType::RoomArchived
        } else {
            MessageType::RoomUnarchived
        };
        self.system_message(call, &room, kind, "", &me, serde_json::json!({}))
            .await
    }

    /// Whether user `me` may erase `room` (`delete-c`, `delete-p` or `delete-d` there).
    pub async fn may_erase(&self, me: &Document, room: &Document) -> Result<bool, ServiceError> {
        let rid = text(room, "_id");
        let permission = match RoomKind::of(room) {
            Some(RoomKind::Channel) => "delete-c",
            Some(RoomKind::PrivateGroup) => "delete-p",
            Some(RoomKind::Direct) => "delete-d",
            _ => return Ok(false),
        };
        self.permissions.may(uid_of(me), permission, rid).await
    }

    /// `eraseRoom`: the room, its messages and its subscriptions go (the room and the
    /// subscriptions to the trash, so members syncing later learn of it); its name is freed.
    pub async fn erase(&self, call: &Call<'_>, rid: &str) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        if !self.may_erase(&me, &room).await? {
            return Err(not_allowed());
        }
        // The room first: members are told of it while their subscriptions still say who
        // they are.
        self.to_trash(call, ROOMS, room.clone()).await?;
        self.remove_where(call, ROOMS, serde_json::json!({"_id": rid}))
            .await?;
        self.remove_where(call, MESSAGES, serde_json::json!({"rid": rid}))
            .await?;
        for sub in self
            .find(SUBSCRIPTIONS, serde_json::json!({"rid": rid}), None)
            .await?
        {
            self.to_trash(call, SUBSCRIPTIONS, sub).await?;
        }
        self.remove_where(call, SUBSCRIPTIONS, serde_json::json!({"rid": rid}))
            .await?;
        self.write_update(
            call,
            USERS,
            serde_json::json!({"__rooms": rid}),
            serde_json::json!({"$pull": {"__rooms": rid}}),
            true,
        )
        .await?;
        if let Some(name) = text(&room, "name") {
            self.remove_where(
                call,
                CLAIMS,
                serde_json::json!({"_id": format!("room:{}", name.to_lowercase()), "owner": rid}),
            )
            .await?;
        }
        self.remove_where(
            call,
            AVATARS,
            serde_json::json!({"_id": format!("room:{rid}")}),
        )
        .await?;
        after_hook!(self.hooks(), Point::RoomHasBeenErased, |hook| {
            hook.room_has_been_erased(&room, call)
        });
        Ok(())
    }

    /// Keeps a room's avatar from a data URI: a raster image (PNG, JPEG, GIF, WebP decided
    /// from the bytes, at most 1 MiB), without its metadata. Its new tag.
    async fn store_room_avatar(
        &self,
        call: &Call<'_>,
        key: &str,
        uri: &str,
    ) -> Result<String, ServiceError> {
        use crate::chat::media;
        use base64::Engine as _;
        const MAX_ROOM_AVATAR_BYTES: usize = 1024 * 1024;
        let bytes = media::data_uri_bytes(uri, MAX_ROOM_AVATAR_BYTES)?;
        let invalid = || {
            client_error(
                "error-invalid-image",
                "The avatar must be a PNG, JPEG, GIF or WebP image",
            )
        };
        if bytes.len() > MAX_ROOM_AVATAR_BYTES {
            return Err(client_error(
                "error-file-too-large",
                "The avatar is too large",
            ));
        }
        let kind = media::image_type(&bytes).ok_or_else(invalid)?;
        let format = media::images::format_of(kind).ok_or_else(invalid)?;
        media::images::checked_dimensions(&bytes, format)
            .map_err(|e| client_error("error-invalid-image", &e.to_string()))?;
        let bytes = media::images::strip_metadata(&bytes, format).unwrap_or(bytes);
        let etag = crate::model::random::random_id();
        let ack = self
            .store
            .update(
                AVATARS,
                selector(serde_json::json!({"_id": key}))?,
                crate::engine::build::update(serde_json::json!({"$set": {
                    "contentType": kind, "etag": etag,
                    "data": {"$binary": base64::engine::general_purpose::STANDARD.encode(&bytes)},
                    "_updatedAt": {"$date": now_ms()},
                }}))?,
                crate::storage::UpdateOptions {
                    upsert: true,
                    ..crate::storage::UpdateOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        Ok(etag)
    }

    pub(crate) async fn remove_where(
        &self,
        call: &Call<'_>,
        collection: &str,
        filter: serde_json::Value,
    ) -> Result<(), ServiceError> {
        let ack = self
            .store
            .remove(collection, selector(filter)?, RemoveOptions { multi: true })
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        if ack.seq > 0 {
            call.record_write(ack.seq);
        }
        Ok(())
    }

    /// `saveRoomSettings`: each change checked (`edit-room` in the room) and written, with
    /// Rocket.Chat's system message where it writes one.
    pub async fn save_settings(
        &self,
        call: &Call<'_>,
        rid: &str,
        changes: Vec<RoomSetting>,
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        if RoomKind::of(&room) == Some(RoomKind::Direct)
            || !self
                .permissions
                .may(uid_of(&me), "edit-room", Some(rid))
                .await?
        {
            return Err(client_error(
                "error-action-not-allowed",
                "Editing room is not allowed",
            ));
        }
        let now = serde_json::json!({"$date": now_ms()});
        for change in changes {
            let (set, unset, message): (
                serde_json::Value,
                serde_json::Value,
                Option<(MessageType, String)>,
            ) = match change {
                RoomSetting::Name(name) => {
                    if text(&room, "name") == Some(name.as_str()) {
                        continue;
                    }
                    if !valid_room_name(&name) {
                        return Err(client_error(
                            "error-invalid-room-name",
                            &format!("{name} is not a valid room name"),
                        ));
                    }
                    self.claim_name(&name, rid).await?;
                    if let Some(old) = text(&room, "name") {
                        self.remove_where(
                                call,
                                CLAIMS,
                                serde_json::json!({"_id": format!("room:{}", old.to_lowercase()), "owner": rid}),
                            )
                            .await?;
                    }
                    self.write_update(
                            call,
                            SUBSCRIPTIONS,
                            serde_json::json!({"rid": rid}),
                            serde_json::json!({"$set": {"name": name, "fname": name, "_updatedAt": now}}),
                            true,
                        )
                        .await?;
                    (
                        serde_json::json!({"name": name, "fname": name}),
                        serde_json::json!({}),
                        Some((MessageType::RoomRenamed, name)),
                    )
                }
                RoomSetting::Topic(topic) => (
                    serde_json::json!({"topic": topic}),
                    serde_json::json!({}),
                    Some((MessageType::RoomTopicChanged, topic)),
                ),
                RoomSetting::Announcement(a) => (
                    serde_json::json!({"announcement": a}),
                    serde_json::json!({}),
                    Some((MessageType::RoomAnnouncementChanged, a)),
                ),
                RoomSetting::Description(d) => (
                    serde_json::json!({"description": d}),
                    serde_json::json!({}),
                    Some((MessageType::RoomDescriptionChanged, d)),
                ),
                RoomSetting::ReadOnly(ro) => (
                    serde_json::json!({"ro": ro}),
                    serde_json::json!({}),
                    Some((
                        if ro {
                            MessageType::RoomReadOnlySet
                        } else {
                            MessageType::RoomReadOnlyRemoved
                        },
                        String::new(),
                    )),
                ),
                RoomSetting::JoinCode(code) if code.is_empty() => (
                    serde_json::json!({"joinCodeRequired": false}),
                    serde_json::json!({"joinCode": 1}),
                    None,
                ),
                RoomSetting::JoinCode(code) => (
                    serde_json::json!({"joinCodeRequired": true, "joinCode": code}),
                    serde_json::json!({}),
                    None,
                ),
                RoomSetting::Kind(kind) => {
                    let Some(kind) = RoomKind::parse(kind.as_str()).filter(|k| k.is_group()) else {
                        return Err(client_error("error-invalid-room-type", "Invalid room type"));
                    };
                    self.permissions
                        .require(uid_of(&me), kind.permission(), None)
                        .await?;
                    self.write_update(
                        call,
                        SUBSCRIPTIONS,
                        serde_json::json!({"rid": rid}),
                        serde_json::json!({"$set": {"t": kind.letter(), "_updatedAt": now}}),
                        true,
                    )
                    .await?;
                    let label = if kind == RoomKind::Channel {
                        "public"
                    } else {
                        "private"
                    };
                    (
                        serde_json::json!({"t": kind.letter()}),
                        serde_json::json!({}),
                        Some((MessageType::RoomPrivacyChanged, label.to_owned())),
                    )
                }
                RoomSetting::Avatar(image) => {
                    let key = format!("room:{rid}");
                    match image {
                        Some(uri) => {
                            let etag = self.store_room_avatar(call, &key, &uri).await?;
                            (
                                serde_json::json!({"avatarETag": etag}),
                                serde_json::json!({}),
                                None,
                            )
                        }
                        None => {
                            self.remove_where(call, AVATARS, serde_json::json!({"_id": key}))
                                .await?;
                            (
                                serde_json::json!({}),
                                serde_json::json!({"avatarETag": 1}),
                                None,
                            )
                        }
                    }
                }
                RoomSetting::Default(default) => {
                    self.permissions
                        .require(uid_of(&me), "view-room-administration", None)
                        .await?;
                    (
                        serde_json::json!({"default": default}),
                        serde_json::json!({}),
                        None,
                    )
                }
            };
            let mut modifier = serde_json::json!({"$set": set});
            modifier["$set"]["_updatedAt"] = now.clone();
            if unset.as_object().is_some_and(|u| !u.is_empty()) {
                modifier["$unset"] = unset;
            }
            self.write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                modifier,
                false,
            )
            .await?;
            if let Some((kind, msg)) = message {
                self.system_message(call, &room, kind, &msg, &me, serde_json::json!({}))
                    .await?;
            }
        }
        Ok(())
    }

    /// `addRoomOwner` and the like: gives (or takes) `role` in `rid` to `user_id`.
    pub async fn set_role(
        &self,
        call: &Call<'_>,
        rid: &str,
        user_id: &str,
        role: &str,
        give: bool,
    ) -> Result<(), ServiceError> {
        let me = self.caller(call.user()).await?;
        let room = self.existing_room(rid).await?;
        let Some((_, permission)) = ROOM_ROLES.iter().find(|(r, _)| *r == role) else {
            return Err(client_error("error-invalid-role", "Invalid role"));
        };
        if RoomKind::of(&room) == Some(RoomKind::Direct)
            || !self
                .permissions
                .may(uid_of(&me), permission, Some(rid))
                .await?
        {
            return Err(not_allowed());
        }
        let user = self
            .user(user_id)
            .await?
            .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
        if self.subscription(rid, user_id).await?.is_none() {
            return Err(client_error(
                "error-user-not-in-room",
                "User is not in this room",
            ));
        }
        let holds = self.holds(rid, user_id, role).await?;
        if give && holds {
            return Err(client_error(
                &format!("error-user-already-{role}"),
                &format!("User is already a {role}"),
            ));
        }
        if !give && !holds {
            return Err(client_error(
                &format!("error-user-not-{role}"),
                &format!("User is not a {role}"),
            ));
        }
        if !give && role == "owner" && self.is_last_owner(rid, user_id).await? {
            return Err(client_error(
                "error-remove-last-owner",
                "This is the last owner. Please set a new owner before removing this one.",
            ));
        }
        let now = serde_json::json!({"$date": now_ms()});
        let modifier = if give {
            serde_json::json!({"$addToSet": {"roles": role}, "$set": {"_updatedAt": now}})
        } else {
            serde_json::json!({"$pull": {"roles": role}, "$set": {"_updatedAt": now}})
        };
        self.write_update(
            call,
            SUBSCRIPTIONS,
            serde_json::json!({"rid": rid, "u._id": user_id}),
            modifier,
            false,
        )
        .await?;
        let kind = if give {
            MessageType::RoleAdded
        } else {
            MessageType::RoleRemoved
        };
        let username = text(&user, "username").unwrap_or_default().to_owned();
        self.system_message(
            call,
            &room,
            kind,
            &username,
            &me,
            serde_json::json!({"role": role}),
        )
        .await
    }

    /// `getRoomRoles`: the members holding a room role.
    pub async fn room_roles(
        &self,
        caller: Option<&str>,
        rid: &str,
    ) -> Result<Vec<Document>, ServiceError> {
        let room = self.existing_room(rid).await?;
        if !self.can_access(&room, caller).await? {
            return Err(client_error("error-invalid-user", "Invalid user"));
        }
        let subs = self
            .find(
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "roles": {"$in": ["owner", "moderator", "leader"]}}),
                None,
            )
            .await?;
        Ok(subs
            .iter()
            .map(|s| super::projected(s, &["_id", "rid", "u", "roles"]))
            .collect())
    }

    /// `getRoomByTypeAndName`.
    pub async fn by_type_and_name(
        &self,
        caller: Option<&str>,
        kind: &str,
        name: &str,
    ) -> Result<Document, ServiceError> {
        let room = match kind {
            "c" | "p" => self
                .find(ROOMS, serde_json::json!({"t": kind, "name": name}), Some(1))
                .await?
                .pop(),
            "d" => self.room(name).await?,
            _ => None,
        }
        // A room the caller may not see is answered as one that does not exist, so the
        // answer cannot confirm that a private room of that name is there.
        .ok_or_else(not_allowed)?;
        if !self.can_access(&room, caller).await? {
            return Err(not_allowed());
        }
        Ok(super::projected(&room, ROOM_FIELDS))
    }

    /// `openRoom` / `hideRoom`: the caller's subscription shown or hidden in its list.
    pub async fn set_open(
        &self,
        call: &Call<'_>,
        rid: &str,
        open: bool,
    ) -> Result<bool, ServiceError> {
        self.set_own_flag(call, rid, serde_json::json!({"open": open}))
            .await
    }

    /// `toggleFavorite`.
    pub async fn set_favorite(
        &self,
        call: &Call<'_>,
        rid: &str,
        favorite: bool,
    ) -> Result<bool, ServiceError> {
        self.set_own_flag(call, rid, serde_json::json!({"f": favorite}))
            .await
    }

    /// `saveNotificationSettings` (REST `rooms.saveNotification`): one of the caller's
    /// notification preferences for `rid`, kept on its subscription. Preferences take
    /// `all`, `mentions`, `nothing` or `default` (which removes the room's own choice);
    /// switches take `"1"` / `"0"` (or booleans); the duration a number of seconds.
    pub async fn save_notification(
        &self,
        call: &Call<'_>,
        rid: &str,
        key: &str,
        value: &Value,
    ) -> Result<(), ServiceError> {
        const LEVELS: &[&str] = &["all", "mentions", "nothing", "default"];
        let invalid = || {
            client_error(
                "error-invalid-notification-setting",
                "Invalid notification setting",
            )
        };
        let update = match key {
            "desktopNotifications"
            | "mobilePushNotifications"
            | "emailNotifications"
            | "unreadAlert" => {
                let level = value
                    .as_str()
                    .filter(|v| LEVELS.contains(v))
                    .ok_or_else(invalid)?;
                if level == "default" {
                    serde_json::json!({"$unset": {key: 1}})
                } else {
                    serde_json::json!({"$set": {key: level}})
                }
            }
            "disableNotifications"
            | "hideUnreadStatus"
            | "hideMentionStatus"
            | "muteGroupMentions" => {
                let on = match value {
                    Value::Bool(b) => *b,
                    Value::String(s) if s == "1" || s == "true" => true,
                    Value::String(s) if s == "0" || s == "false" => false,
                    _ => return Err(invalid()),
                };
                serde_json::json!({"$set": {key: on}})
            }
            "audioNotificationValue" => {
                let sound = value
                    .as_str()
                    .filter(|v| v.len() <= 64)
                    .ok_or_else(invalid)?;
                serde_json::json!({"$set": {key: sound}})
            }
            "desktopNotificationDuration" => {
                let seconds = value
                    .as_f64()
                    .or_else(|| value.as_str().and_then(|s| s.parse().ok()))
                    .filter(|n| (0.0..=3600.0).contains(n))
                    .ok_or_else(invalid)?;
                serde_json::json!({"$set": {key: seconds}})
            }
            _ => return Err(invalid()),
        };
        let me = self.caller(call.user()).await?;
        let uid = text(&me, "_id").unwrap_or_default();
        if self.subscription(rid, uid).await?.is_none() {
            return Err(client_error(
                "error-invalid-subscription",
                "You must be part of a room to do this",
            ));
        }
        let mut update = update;
        update["$set"]["_updatedAt"] = serde_json::json!({"$date": now_ms()});
        self.write_update(
            call,
            SUBSCRIPTIONS,
            serde_json::json!({"rid": rid, "u._id": uid}),
            update,
            false,
        )
        .await?;
        Ok(())
    }

    async fn set_own_flag(
        &self,
        call: &Call<'_>,
        rid: &str,
        mut set: serde_json::Value,
    ) -> Result<bool, ServiceError> {
        let me = self.caller(call.user()).await?;
        let uid = text(&me, "_id").unwrap_or_default();
        if self.subscription(rid, uid).await?.is_none() {
            return Err(client_error(
                "error-invalid-subscription",
                "You must be part of a room to do this",
            ));
        }
        set["_updatedAt"] = serde_json::json!({"$date": now_ms()});
        let ack = self
            .write_update(
                call,
                SUBSCRIPTIONS,
                serde_json::json!({"rid": rid, "u._id": uid}),
                serde_json::json!({"$set": set}),
                false,
            )
            .await?;
        Ok(ack.modified > 0)
    }

    /// `getUsersOfRoom`: `{total, records}` of the room's members (`{_id, username, name,
    /// status}`), paged.
    pub async fn users_of(
        &self,
        caller: Option<&str>,
        rid: &str,
        skip: usize,
        limit: Option<usize>,
    ) -> Result<(usize, Vec<Document>), ServiceError> {
        self.caller(caller).await?;
        let room = self.existing_room(rid).await?;
        if !self.can_access(&room, caller).await? {
            return Err(not_allowed());
        }
        let subs = self
            .store
            .find(
                SUBSCRIPTIONS,
                FindOptions {
                    selector: selector(serde_json::json!({"rid": rid}))?,
                    sort: crate::model::query::Sort::parse(&doc(
                        serde_json::json!({"u.username": 1}),
                    )?)
                    .map_err(|e| ServiceError::internal(e.0))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let total = subs.len();
        let ids: Vec<Value> = subs
            .iter()
            .skip(skip)
            .take(limit.unwrap_or(usize::MAX))
            .filter_map(|s| s.get("u").and_then(Value::as_object)?.get("_id").cloned())
            .collect();
        let mut filter = Document::default();
        let mut within = Document::default();
        within.insert("$in".into(), Value::Array(ids.clone()));
        filter.insert("_id".into(), Value::Object(within));
        let users = self
            .store
            .find(
                USERS,
                FindOptions {
                    selector: crate::model::query::Selector::parse(&filter)
                        .map_err(|e| ServiceError::internal(e.0))?,
                    ..FindOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        let records = ids
            .iter()
            .filter_map(|id| users.iter().find(|u| u.get("_id") == Some(id)))
            .map(|u| super::projected(u, &["_id", "username", "name", "status", "statusText"]))
            .collect();
        Ok((total, records))
    }
}

/// Rocket.Chat's rule that a new user joins the default channels (those with
/// `default: true`), as a reaction to the user-created hook point: accounts know nothing of
/// rooms.
pub struct DefaultChannels {
    rooms: std::sync::Weak<Rooms>,
}

impl DefaultChannels {
    /// The reaction, for `rooms` (held weakly: the rooms' hooks hold it).
    pub fn new(rooms: &std::sync::Arc<Rooms>) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            rooms: std::sync::Arc::downgrade(rooms),
        })
    }
}

impl ChatHooks for DefaultChannels {
    fn name(&self) -> &str {
        "comet.default-channels"
    }

    fn implements(&self, point: Point) -> bool {
        point == Point::UserHasBeenCreated
    }

    fn user_has_been_created<'a>(
        &'a self,
        user: &'a Document,
        call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let (Some(rooms), Some(uid)) = (self.rooms.upgrade(), text(user, "_id")) else {
                return;
            };
            if let Err(err) = rooms
                .join_default_channels(&call.as_user(Some(uid)), uid)
                .await
            {
                tracing::warn!(user_id = uid, error = %err, "a new user did not join the default channels");
            }
        })
    }
}
