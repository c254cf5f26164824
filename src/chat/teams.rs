//! The Team service: Rocket.Chat's teams (`rocketchat_team`) and their members
//! (`rocketchat_team_member`), in Rocket.Chat's shapes.
//!
//! A team is a main room (`teamMain: true`, private when the team is) plus the rooms that
//! carry its `teamId`. Owns creating, renaming and deleting teams, their membership lists and
//! which rooms belong to them. Membership follows the main room: joining it (or being added)
//! makes a member, leaving it ends the membership and the team's auto-join rooms (the Room
//! service does both, so `joinRoom` and `leaveRoom` on the main room keep the list right).
//! Who may see a team's rooms is decided by [`Rooms::can_access`]: a public channel of a
//! private team is for the team's members. Every check of who may do what goes through
//! [`Permissions::has_permission`], scoped to the team's main room. It must not know about
//! sessions or HTTP; clients hear of team changes through the room and subscription events
//! their writes cause.

use crate::chat::call::Call;
use crate::chat::not_allowed;

use super::permissions::Permissions;
use super::rooms::members::RoomSetting;
use super::rooms::{
    client_error, is_private_team, text, valid_room_name, NewRoom, RoomKind, Rooms,
};
use crate::chat::collections::{CLAIMS, ROOMS, SUBSCRIPTIONS};
use crate::chat::collections::{TEAMS, TEAM_MEMBERS};
use crate::engine::build::{doc, now_ms};
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};
use crate::storage::{Store, StoreError};
use std::sync::Arc;

/// A team's type: Rocket.Chat's 0 (public) and 1 (private).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TeamType {
    Public,
    Private,
}

impl TeamType {
    pub fn from_number(n: f64) -> Option<Self> {
        if n == 0.0 {
            Some(TeamType::Public)
        } else if n == 1.0 {
            Some(TeamType::Private)
        } else {
            None
        }
    }

    fn number(self) -> i32 {
        match self {
            TeamType::Public => 0,
            TeamType::Private => 1,
        }
    }

    fn room_kind(self) -> RoomKind {
        match self {
            TeamType::Public => RoomKind::Channel,
            TeamType::Private => RoomKind::PrivateGroup,
        }
    }
}

/// A room named by its id or by its name.
pub enum RoomRef {
    Id(String),
    Name(String),
}

/// The Team service.
pub struct Teams {
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    permissions: Arc<Permissions>,
}

/// The roles a team member may hold (mirrored on the main room's subscription).
const MEMBER_ROLES: [&str; 3] = ["owner", "moderator", "leader"];

/// Refuses a role a team member cannot hold, before anything is written.
fn check_roles(roles: &[String]) -> Result<(), ServiceError> {
    match roles.iter().find(|r| !MEMBER_ROLES.contains(&r.as_str())) {
        Some(bad) => Err(client_error(
            "error-invalid-role",
            &format!("{bad} is not a team role"),
        )),
        None => Ok(()),
    }
}

fn store_error(e: StoreError) -> ServiceError {
    ServiceError::from_store(&e)
}

/// A team's id or name, as requests name it.
pub enum TeamRef {
    Id(String),
    Name(String),
}

impl Teams {
    /// The service over `store`, its indexes made.
    pub async fn start(
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        permissions: Arc<Permissions>,
    ) -> Result<Arc<Self>, ServiceError> {
        for (collection, keys) in [
            (TEAM_MEMBERS, serde_json::json!({"teamId": 1})),
            (TEAM_MEMBERS, serde_json::json!({"userId": 1})),
            (ROOMS, serde_json::json!({"teamId": 1})),
        ] {
            let sort = crate::model::query::Sort::parse(&doc(keys)?)
                .map_err(|e| ServiceError::internal(e.0))?;
            store
                .ensure_index(collection, sort)
                .await
                .map_err(store_error)?;
        }
        Ok(Arc::new(Self {
            store,
            rooms,
            permissions,
        }))
    }

    async fn find(
        &self,
        collection: &str,
        filter: serde_json::Value,
    ) -> Result<Vec<Document>, ServiceError> {
        self.rooms.find(collection, filter, None).await
    }

    /// The team a request names; `team-not-found` when there is none.
    pub async fn resolve(&self, which: &TeamRef) -> Result<Document, ServiceError> {
        let filter = match which {
            TeamRef::Id(id) => serde_json::json!({"_id": id}),
            TeamRef::Name(name) => serde_json::json!({"name": name}),
        };
        self.find(TEAMS, filter)
            .await?
            .pop()
            .ok_or_else(|| client_error("team-not-found", "Team not found"))
    }

    /// Whether `uid` may see `team`: a public team, one it belongs to, or any with
    /// `view-all-teams`.
    pub async fn can_see(&self, team: &Document, uid: &str) -> Result<bool, ServiceError> {
        let id = text(team, "_id").unwrap_or_default();
        if !is_private_team(team) || self.rooms.is_team_member(id, uid).await? {
            return Ok(true);
        }
        self.permissions
            .has_permission(Some(uid), "view-all-teams", None)
            .await
    }

    /// The team a request names, if `uid` may see it (the same refusal either way, so a
    /// stranger cannot tell a private team exists).
    pub async fn visible(&self, which: &TeamRef, uid: &str) -> Result<Document, ServiceError> {
        let team = self.resolve(which).await?;
        if !self.can_see(&team, uid).await? {
            return Err(client_error("team-not-found", "Team not found"));
        }
        Ok(team)
    }

    /// `teams.create`: the team, its main room (with `members`), the creator as its owner.
    pub async fn create(
        &self,
        call: &Call<'_>,
        name: &str,
        kind: TeamType,
        members: Vec<String>,
        read_only: bool,
    ) -> Result<Document, ServiceError> {
        let caller = call.require_user()?;
        let (_, me) = self.rooms.named_caller(Some(caller)).await?;
        if !self
            .permissions
            .has_permission(Some(caller), "create-team", None)
            .await?
        {
            return Err(not_allowed());
        }
        if !valid_room_name(name) {
            return Err(client_error(
                "error-invalid-name",
                &format!("{name} is not a valid team name"),
            ));
        }
        if !self
            .find(TEAMS, serde_json::json!({"name": name}))
            .await?
            .is_empty()
        {
            return Err(client_error(
                "team-name-already-exists",
                "Team name already exists",
            ));
        }
        let team_id = crate::model::random::random_id();
        self.claim_name(name, &team_id).await?;
        let room = match self
            .rooms
            .create(
                call,
                NewRoom {
                    kind: kind.room_kind(),
                    name: name.to_owned(),
                    members,
                    read_only,
                    team_id: None,
                },
            )
            .await
        {
            Ok(room) => room,
            Err(err) => {
                self.free_claim(name, &team_id).await;
                let taken = matches!(&err, ServiceError::Client(e) if e.error.to_string() == "error-duplicate-channel-name");
                return Err(if taken {
                    client_error("room-name-already-exists", "Room name already exists")
                } else {
                    err
                });
            }
        };
        let rid = text(&room, "_id").unwrap_or_default().to_owned();
        self.found_team(call, &me, &team_id, name, kind, &rid).await
    }

    /// Makes room `rid` the main room of a new team `team_id` (whose name is claimed
    /// already): the team, a member for each of the room's members (the caller its owner),
    /// and the room marked as the team's.
    #[allow(clippy::too_many_arguments)] // one step of two callers, each argument theirs
    async fn found_team(
        &self,
        call: &Call<'_>,
        me: &Document,
        team_id: &str,
        name: &str,
        kind: TeamType,
        rid: &str,
    ) -> Result<Document, ServiceError> {
        let caller = call.require_user()?;
        let now = serde_json::json!({"$date": now_ms()});
        let by = serde_json::json!({"_id": caller, "username": text(me, "username")});
        let team = doc(serde_json::json!({
            "_id": team_id, "name": name, "type": kind.number(), "roomId": rid,
            "createdBy": by, "createdAt": now, "_updatedAt": now,
        }))?;
        self.rooms.insert(call, TEAMS, team.clone()).await?;
        for sub in self
            .find(SUBSCRIPTIONS, serde_json::json!({"rid": rid}))
            .await?
        {
            let Some(uid) = sub
                .get("u")
                .and_then(Value::as_object)
                .and_then(|u| text(u, "_id"))
            else {
                continue;
            };
            let roles: Vec<&str> = if uid == caller { vec!["owner"] } else { vec![] };
            let member = doc(serde_json::json!({
                "_id": super::rooms::team_member_id(team_id, uid), "teamId": team_id,
                "userId": uid, "roles": roles, "createdBy": by, "createdAt": now,
                "_updatedAt": now,
            }))?;
            match self.store.insert(TEAM_MEMBERS, member).await {
                Ok(ack) => call.record_write(ack.seq),
                Err(StoreError::DuplicateKey(_)) => {}
                Err(other) => return Err(store_error(other)),
            }
        }
        self.rooms
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                serde_json::json!({"$set": {"teamMain": true, "teamId": team_id, "_updatedAt": now}}),
                false,
            )
            .await?;
        Ok(team)
    }

    /// Claims `name` for new team `team_id`, atomically: `team-name-already-exists` when
    /// another team holds it in any case.
    async fn claim_name(&self, name: &str, team_id: &str) -> Result<(), ServiceError> {
        let claim = doc(
            serde_json::json!({"_id": format!("team:{}", name.to_lowercase()), "owner": team_id}),
        )?;
        match self.store.insert(CLAIMS, claim).await {
            Ok(_) => Ok(()),
            Err(StoreError::DuplicateKey(_)) => Err(client_error(
                "team-name-already-exists",
                "Team name already exists",
            )),
            Err(other) => Err(store_error(other)),
        }
    }

    /// Gives up the claim on a team name (a failure only keeps the name taken, so it is
    /// logged, not returned).
    async fn free_claim(&self, name: &str, team_id: &str) {
        let filter =
            serde_json::json!({"_id": format!("team:{}", name.to_lowercase()), "owner": team_id});
        if let Err(err) = self
            .rooms
            .remove_where(&Call::server(), CLAIMS, filter)
            .await
        {
            tracing::warn!(%team_id, cause = %err, "a team name's claim was not freed");
        }
    }

    /// The teams `uid` belongs to.
    pub async fn of_user(&self, uid: &str) -> Result<Vec<Document>, ServiceError> {
        let ids: Vec<Value> = self
            .find(TEAM_MEMBERS, serde_json::json!({"userId": uid}))
            .await?
            .iter()
            .filter_map(|m| m.get("teamId").cloned())
            .collect();
        let ids: Vec<serde_json::Value> = ids.iter().map(crate::engine::build::to_json).collect();
        self.with_counts(
            self.find(TEAMS, serde_json::json!({"_id": {"$in": ids}}))
                .await?,
        )
        .await
    }

    /// Every team (`view-all-teams`).
    pub async fn all(&self, uid: &str) -> Result<Vec<Document>, ServiceError> {
        if !self
            .permissions
            .has_permission(Some(uid), "view-all-teams", None)
            .await?
        {
            return Err(not_allowed());
        }
        self.with_counts(self.find(TEAMS, serde_json::json!({})).await?)
            .await
    }

    /// Teams with Rocket.Chat's `rooms` and `numberOfUsers` counts.
    async fn with_counts(&self, teams: Vec<Document>) -> Result<Vec<Document>, ServiceError> {
        let mut out = Vec::with_capacity(teams.len());
        for mut team in teams {
            let id = text(&team, "_id").unwrap_or_default().to_owned();
            let rooms = self
                .find(ROOMS, serde_json::json!({"teamId": id}))
                .await?
                .len();
            let users = self
                .find(TEAM_MEMBERS, serde_json::json!({"teamId": id}))
                .await?
                .len();
            team.insert("rooms".into(), Value::Number(rooms as f64));
            team.insert("numberOfUsers".into(), Value::Number(users as f64));
            out.push(team);
        }
        Ok(out)
    }

    /// `teams.members`: each member with its user's name and status.
    pub async fn members(&self, team: &Document) -> Result<Vec<Document>, ServiceError> {
        let id = text(team, "_id").unwrap_or_default();
        let mut out = Vec::new();
        for member in self
            .find(TEAM_MEMBERS, serde_json::json!({"teamId": id}))
            .await?
        {
            let Some(uid) = text(&member, "userId") else {
                continue;
            };
            let Some(user) = self.rooms.user(uid).await? else {
                continue;
            };
            let mut entry = Document::default();
            entry.insert(
                "user".into(),
                Value::Object(super::rooms::projected(
                    &user,
                    &["_id", "username", "name", "status", "statusText"],
                )),
            );
            for field in ["roles", "createdAt", "createdBy"] {
                if let Some(v) = member.get(field) {
                    entry.insert(field.into(), v.clone());
                }
            }
            out.push(entry);
        }
        Ok(out)
    }

    async fn main_room(&self, team: &Document) -> Result<Document, ServiceError> {
        self.rooms
            .room(text(team, "roomId").unwrap_or_default())
            .await?
            .ok_or_else(|| ServiceError::internal("a team without its main room"))
    }

    /// `teams.addMembers`: each user (by id) joins the main room, hence the team, with
    /// `roles` when given.
    pub async fn add_members(
        &self,
        call: &Call<'_>,
        team: &Document,
        members: &[(String, Vec<String>)],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        let rid = text(team, "roomId");
        if !self.permissions.may(caller, "add-team-member", rid).await?
            && !self
                .permissions
                .may(caller, "edit-team-member", rid)
                .await?
        {
            return Err(not_allowed());
        }
        for (_, roles) in members {
            check_roles(roles)?;
        }
        let me = self.rooms.caller(Some(caller)).await?;
        let room = self.main_room(team).await?;
        for (uid, roles) in members {
            let user = self
                .rooms
                .user(uid)
                .await?
                .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
            self.rooms.add_member(call, &room, &user, Some(&me)).await?;
            if !roles.is_empty() {
                self.set_member_roles(call, team, uid, roles).await?;
            }
        }
        Ok(())
    }

    async fn set_member_roles(
        &self,
        call: &Call<'_>,
        team: &Document,
        uid: &str,
        roles: &[String],
    ) -> Result<(), ServiceError> {
        let id = text(team, "_id").unwrap_or_default();
        let ack = self
            .rooms
            .write_update(
                call,
                TEAM_MEMBERS,
                serde_json::json!({"teamId": id, "userId": uid}),
                serde_json::json!({"$set": {"roles": roles, "_updatedAt": {"$date": now_ms()}}}),
                false,
            )
            .await?;
        if ack.matched == 0 {
            return Err(client_error(
                "error-user-not-in-team",
                "User is not a team member",
            ));
        }
        // The main room's own roles follow the team's (an owner of the team owns its room).
        self.rooms
            .write_update(
                call,
                SUBSCRIPTIONS,
                serde_json::json!({"rid": text(team, "roomId"), "u._id": uid}),
                serde_json::json!({"$set": {"roles": roles, "_updatedAt": {"$date": now_ms()}}}),
                false,
            )
            .await?;
        Ok(())
    }

    async fn is_last_owner(&self, team: &Document, uid: &str) -> Result<bool, ServiceError> {
        let id = text(team, "_id").unwrap_or_default();
        let owners = self
            .find(
                TEAM_MEMBERS,
                serde_json::json!({"teamId": id, "roles": "owner"}),
            )
            .await?;
        Ok(owners.len() == 1 && text(&owners[0], "userId") == Some(uid))
    }

    /// Takes `user` out of the team (its main room and auto-join rooms) and out of the
    /// team's rooms `rids`.
    async fn take_out(
        &self,
        call: &Call<'_>,
        team: &Document,
        user: &Document,
        by: Option<&Document>,
        rids: &[String],
    ) -> Result<(), ServiceError> {
        let team_id = text(team, "_id").unwrap_or_default();
        let room = self.main_room(team).await?;
        if !self.rooms.remove_member(call, &room, user, by).await? {
            // Not in the main room, yet listed: the membership goes all the same.
            self.rooms.leave_team(call, team_id, user, by).await?;
        }
        for rid in rids {
            if let Some(r) = self.rooms.room(rid).await? {
                if text(&r, "teamId") == Some(team_id) {
                    self.rooms.remove_member(call, &r, user, by).await?;
                }
            }
        }
        Ok(())
    }

    /// `teams.removeMember` (`edit-team-member`).
    pub async fn remove_member(
        &self,
        call: &Call<'_>,
        team: &Document,
        uid: &str,
        rids: &[String],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "edit-team-member", text(team, "roomId"))
            .await?;
        if !self
            .rooms
            .is_team_member(text(team, "_id").unwrap_or_default(), uid)
            .await?
        {
            return Err(client_error(
                "error-user-not-in-team",
                "User is not a team member",
            ));
        }
        if self.is_last_owner(team, uid).await? {
            return Err(client_error(
                "error-you-are-last-owner",
                "The team's last owner cannot be removed",
            ));
        }
        let me = self.rooms.caller(Some(caller)).await?;
        let user = self
            .rooms
            .user(uid)
            .await?
            .ok_or_else(|| client_error("error-invalid-user", "Invalid user"))?;
        self.take_out(call, team, &user, Some(&me), rids).await
    }

    /// `teams.updateMember` (`edit-team-member`): the member's roles.
    pub async fn update_member(
        &self,
        call: &Call<'_>,
        team: &Document,
        uid: &str,
        roles: &[String],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "edit-team-member", text(team, "roomId"))
            .await?;
        check_roles(roles)?;
        if !roles.iter().any(|r| r == "owner") && self.is_last_owner(team, uid).await? {
            return Err(client_error(
                "error-you-are-last-owner",
                "The team's last owner cannot stop being one",
            ));
        }
        self.set_member_roles(call, team, uid, roles).await
    }

    /// `teams.leave`: the caller leaves the team, its auto-join rooms and the team's rooms
    /// `rids`.
    pub async fn leave(
        &self,
        call: &Call<'_>,
        team: &Document,
        rids: &[String],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        let team_id = text(team, "_id").unwrap_or_default();
        if !self.rooms.is_team_member(team_id, caller).await? {
            return Err(client_error(
                "error-user-not-in-team",
                "You are not a team member",
            ));
        }
        if self.is_last_owner(team, caller).await? {
            return Err(client_error(
                "error-you-are-last-owner",
                "You are the last owner. Please set new owner before leaving the team.",
            ));
        }
        let me = self.rooms.caller(Some(caller)).await?;
        self.take_out(call, team, &me, None, rids).await
    }

    /// `teams.addRooms` (`move-room-to-team`): existing channels and groups the caller may
    /// edit join the team.
    pub async fn add_rooms(
        &self,
        call: &Call<'_>,
        team: &Document,
        rids: &[String],
    ) -> Result<Vec<Document>, ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "move-room-to-team", text(team, "roomId"))
            .await?;
        let team_id = text(team, "_id").unwrap_or_default();
        let mut moved = Vec::new();
        for rid in rids {
            let room = self
                .rooms
                .room(rid)
                .await?
                .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))?;
            if !RoomKind::of(&room).is_some_and(RoomKind::is_group) {
                return Err(client_error("error-invalid-room", "Invalid room"));
            }
            if room.get("teamId").is_some() {
                return Err(client_error(
                    "error-room-already-on-team",
                    "Room already belongs to a team",
                ));
            }
            if !self
                .permissions
                .has_permission(Some(caller), "edit-room", Some(rid))
                .await?
            {
                return Err(not_allowed());
            }
            self.rooms
                .write_update(
                    call,
                    ROOMS,
                    serde_json::json!({"_id": rid}),
                    serde_json::json!({"$set": {"teamId": team_id, "_updatedAt": {"$date": now_ms()}}}),
                    false,
                )
                .await?;
            if let Some(room) = self.rooms.room(rid).await? {
                moved.push(room);
            }
        }
        Ok(moved)
    }

    /// Takes room `rid` out of its team (no longer the team's, nor auto-joined).
    async fn detach_room(&self, call: &Call<'_>, rid: &str) -> Result<(), ServiceError> {
        self.rooms
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                serde_json::json!({"$unset": {"teamId": 1, "teamDefault": 1}, "$set": {"_updatedAt": {"$date": now_ms()}}}),
                false,
            )
            .await?;
        Ok(())
    }

    /// `teams.removeRoom` (`remove-team-channel`): the room leaves the team.
    pub async fn remove_room(
        &self,
        call: &Call<'_>,
        team: &Document,
        rid: &str,
    ) -> Result<Document, ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "remove-team-channel", text(team, "roomId"))
            .await?;
        let room = self
            .rooms
            .room(rid)
            .await?
            .filter(|r| {
                text(r, "teamId") == text(team, "_id")
                    && r.get("teamMain") != Some(&Value::Bool(true))
            })
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))?;
        self.detach_room(call, rid).await?;
        Ok(room)
    }

    /// `teams.updateRoom` (`edit-team-channel`): whether a team's room is one its members
    /// join by themselves (`teamDefault`); made so, it takes in every member at once.
    pub async fn set_default_room(
        &self,
        call: &Call<'_>,
        rid: &str,
        is_default: bool,
    ) -> Result<Document, ServiceError> {
        let caller = call.require_user()?;
        let room = self
            .rooms
            .room(rid)
            .await?
            .filter(|r| r.get("teamMain") != Some(&Value::Bool(true)))
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))?;
        let team_id = text(&room, "teamId")
            .ok_or_else(|| client_error("error-room-not-on-team", "Room is not on a team"))?
            .to_owned();
        let team = self.resolve(&TeamRef::Id(team_id.clone())).await?;
        if !self.can_see(&team, caller).await?
            || !self
                .permissions
                .may(caller, "edit-team-channel", text(&team, "roomId"))
                .await?
        {
            return Err(not_allowed());
        }
        self.rooms
            .write_update(
                call,
                ROOMS,
                serde_json::json!({"_id": rid}),
                serde_json::json!({"$set": {"teamDefault": is_default, "_updatedAt": {"$date": now_ms()}}}),
                false,
            )
            .await?;
        if is_default {
            let by = self.rooms.caller(Some(caller)).await?;
            for member in self
                .find(TEAM_MEMBERS, serde_json::json!({"teamId": team_id}))
                .await?
            {
                let Some(user) = self
                    .rooms
                    .user(text(&member, "userId").unwrap_or_default())
                    .await?
                else {
                    continue;
                };
                self.rooms.add_member(call, &room, &user, Some(&by)).await?;
            }
        }
        self.rooms
            .room(rid)
            .await?
            .ok_or_else(|| client_error("error-invalid-room", "Invalid room"))
    }

    /// `teams.listRooms`: the team's rooms the caller may see (channels for whoever sees
    /// the team; groups only for their members).
    pub async fn rooms(
        &self,
        caller: &str,
        team: &Document,
    ) -> Result<Vec<Document>, ServiceError> {
        let id = text(team, "_id").unwrap_or_default();
        let mut out = Vec::new();
        for room in self
            .find(
                ROOMS,
                serde_json::json!({"teamId": id, "teamMain": {"$ne": true}}),
            )
            .await?
        {
            if self.rooms.can_access(&room, Some(caller)).await? {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// `teams.listRoomsOfUser`: the team's rooms `uid` is in, as far as the caller may see.
    pub async fn rooms_of_user(
        &self,
        caller: &str,
        team: &Document,
        uid: &str,
    ) -> Result<Vec<Document>, ServiceError> {
        let mut out = Vec::new();
        for room in self.rooms(caller, team).await? {
            let rid = text(&room, "_id").unwrap_or_default();
            if self.rooms.subscription(rid, uid).await?.is_some() {
                out.push(room);
            }
        }
        Ok(out)
    }

    /// `teams.update` (`edit-team`): a new name (the main room's too) and/or type (the main
    /// room turns public or private with it).
    pub async fn update(
        &self,
        call: &Call<'_>,
        team: &Document,
        name: Option<&str>,
        kind: Option<TeamType>,
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "edit-team", text(team, "roomId"))
            .await?;
        let team_id = text(team, "_id").unwrap_or_default();
        let old_name = text(team, "name").unwrap_or_default();
        let mut set = serde_json::Map::new();
        let mut changes = Vec::new();
        if let Some(name) = name.filter(|n| *n != old_name) {
            if !valid_room_name(name) {
                return Err(client_error("error-invalid-name", "Invalid team name"));
            }
            let claim = doc(
                serde_json::json!({"_id": format!("team:{}", name.to_lowercase()), "owner": team_id}),
            )?;
            match self.store.insert(CLAIMS, claim).await {
                Ok(_) => {}
                Err(StoreError::DuplicateKey(_)) if !name.eq_ignore_ascii_case(old_name) => {
                    return Err(client_error(
                        "team-name-already-exists",
                        "Team name already exists",
                    ))
                }
                Err(StoreError::DuplicateKey(_)) => {}
                Err(other) => return Err(store_error(other)),
            }
            set.insert("name".into(), name.into());
            changes.push(RoomSetting::Name(name.to_owned()));
        }
        if let Some(kind) = kind {
            set.insert("type".into(), kind.number().into());
            changes.push(RoomSetting::Kind(
                match kind {
                    TeamType::Public => "c",
                    TeamType::Private => "p",
                }
                .to_owned(),
            ));
        }
        if set.is_empty() {
            return Ok(());
        }
        self.rooms
            .save_settings(call, text(team, "roomId").unwrap_or_default(), changes)
            .await?;
        set.insert("_updatedAt".into(), serde_json::json!({"$date": now_ms()}));
        self.rooms
            .write_update(
                call,
                TEAMS,
                serde_json::json!({"_id": team_id}),
                serde_json::json!({"$set": set}),
                false,
            )
            .await?;
        if set.contains_key("name") {
            self.free_claim(old_name, team_id).await;
        }
        Ok(())
    }

    /// `teams.delete` (`delete-team`): the rooms `rooms_to_remove` of the team are erased, the
    /// others leave the team, then the main room, the members and the team go.
    pub async fn delete(
        &self,
        call: &Call<'_>,
        team: &Document,
        rooms_to_remove: &[String],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "delete-team", text(team, "roomId"))
            .await?;
        self.dissolve(call, team, rooms_to_remove, true).await
    }

    /// `teams.convertToChannel` (`convert-team`): the team ends and its main room carries on
    /// as an ordinary channel or group with its members and messages; of the team's other
    /// rooms, `rooms_to_remove` are erased and the rest leave the team.
    pub async fn convert_to_channel(
        &self,
        call: &Call<'_>,
        team: &Document,
        rooms_to_remove: &[String],
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        self.permissions
            .require(caller, "convert-team", text(team, "roomId"))
            .await?;
        self.dissolve(call, team, rooms_to_remove, false).await
    }

    /// Ends a team: its rooms `rooms_to_remove` erased (each as the caller may), the others
    /// out of it; the main room erased too (`erase_main`) or kept as a room of its own.
    async fn dissolve(
        &self,
        call: &Call<'_>,
        team: &Document,
        rooms_to_remove: &[String],
        erase_main: bool,
    ) -> Result<(), ServiceError> {
        let caller = call.require_user()?;
        let team_id = text(team, "_id").unwrap_or_default();
        let main = text(team, "roomId").unwrap_or_default();
        let rooms = self
            .find(ROOMS, serde_json::json!({"teamId": team_id}))
            .await?;
        // Every erasure is allowed before any happens: a refusal leaves the team whole.
        let me = self.rooms.caller(Some(caller)).await?;
        for room in &rooms {
            let rid = text(room, "_id").unwrap_or_default();
            let erased = rooms_to_remove.iter().any(|r| r == rid) || (erase_main && rid == main);
            if erased && !self.rooms.may_erase(&me, room).await? {
                return Err(not_allowed());
            }
        }
        for room in rooms {
            let rid = text(&room, "_id").unwrap_or_default();
            if rid == main {
                continue;
            }
            if rooms_to_remove.iter().any(|r| r == rid) {
                self.rooms.erase(call, rid).await?;
            } else {
                self.detach_room(call, rid).await?;
            }
        }
        if erase_main {
            self.rooms.erase(call, main).await?;
        } else {
            self.rooms
                .write_update(
                    call,
                    ROOMS,
                    serde_json::json!({"_id": main}),
                    serde_json::json!({"$unset": {"teamId": 1, "teamMain": 1}, "$set": {"_updatedAt": {"$date": now_ms()}}}),
                    false,
                )
                .await?;
        }
        self.rooms
            .remove_where(call, TEAM_MEMBERS, serde_json::json!({"teamId": team_id}))
            .await?;
        self.rooms
            .remove_where(call, TEAMS, serde_json::json!({"_id": team_id}))
            .await?;
        self.free_claim(text(team, "name").unwrap_or_default(), team_id)
            .await;
        Ok(())
    }

    /// `channels.convertToTeam` / `groups.convertToTeam` (`create-team` and the room's
    /// `edit-room`): the channel (`Public`) or group (`Private`) `which`, one the caller can
    /// see and in no team yet, becomes the main room of a new team of its name, its members
    /// the team's.
    pub async fn convert_to_team(
        &self,
        call: &Call<'_>,
        which: &RoomRef,
        kind: TeamType,
    ) -> Result<Document, ServiceError> {
        let caller = call.require_user()?;
        let (_, me) = self.rooms.named_caller(Some(caller)).await?;
        let found = match which {
            RoomRef::Id(id) => self.rooms.room(id).await?,
            RoomRef::Name(name) => self.rooms.room_by_name(name).await?,
        };
        let wanted = kind.room_kind();
        // A room of another kind, or one the caller cannot see, is answered as none.
        let room = match found {
            Some(room) if RoomKind::of(&room) == Some(wanted) => self
                .rooms
                .can_access(&room, Some(caller))
                .await?
                .then_some(room),
            _ => None,
        }
        .ok_or_else(|| match kind {
            TeamType::Public => client_error("error-room-not-found", "Channel not found"),
            TeamType::Private => client_error("error-room-not-found", "Private group not found"),
        })?;
        let room = &room;
        let rid = text(room, "_id").unwrap_or_default();
        let may = self
            .permissions
            .has_permission(Some(caller), "create-team", None)
            .await?
            && self
                .permissions
                .has_permission(Some(caller), "edit-room", Some(rid))
                .await?;
        if !may {
            return Err(not_allowed());
        }
        if room.get("teamId").is_some_and(|t| *t != Value::Null) {
            return Err(client_error(
                "error-room-already-in-team",
                "The room belongs to a team already",
            ));
        }
        let name = text(room, "name").unwrap_or_default();
        let team_id = crate::model::random::random_id();
        self.claim_name(name, &team_id).await?;
        match self.found_team(call, &me, &team_id, name, kind, rid).await {
            Ok(team) => Ok(team),
            Err(err) => {
                self.free_claim(name, &team_id).await;
                Err(err)
            }
        }
    }

    /// `teams.autocomplete`: up to ten teams whose name starts with `prefix` (ignoring case)
    /// that the caller may see.
    pub async fn autocomplete(
        &self,
        caller: &str,
        prefix: &str,
    ) -> Result<Vec<Document>, ServiceError> {
        let lower = prefix.to_lowercase();
        let mut out = Vec::new();
        for team in self.find(TEAMS, serde_json::json!({})).await? {
            let name = text(&team, "name").unwrap_or_default();
            if name.to_lowercase().starts_with(&lower) && self.can_see(&team, caller).await? {
                out.push(super::rooms::projected(
                    &team,
                    &["_id", "name", "type", "roomId"],
                ));
                if out.len() == 10 {
                    break;
                }
            }
        }
        Ok(out)
    }
}
