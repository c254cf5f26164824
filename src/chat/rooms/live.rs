//! What clients hear of rooms, members and messages: `stream-room-messages` (a room's
//! messages, and `__my_messages__` with its meta argument), `stream-notify-user`
//! (`subscriptions-changed`, `rooms-changed`, `notification` for a mention or a direct
//! message, `message` for an ephemeral note from the server, `userData` for changes of the
//! user's own document and `force_logout` for a deactivated user), `stream-notify-room`
//! (`deleteMessage`, and the typing and activity events clients write) and
//! `stream-notify-room-users`.
//!
//! Every event that mirrors data comes from the store's change events, handed over by the
//! services' one follower (`engine::feed`) in the store's order, so a message or a membership written by another process is told
//! like one written here. Owns the members of each room in memory (kept from the same
//! events): a room's listeners are found from it once per event, and a member who leaves
//! loses its listeners to the room before any later event of the room is emitted. Events
//! that mirror no data (typing, activity) travel on the engine's [`Bus`], which brings them
//! to the room's listeners of every instance. It must not write anything.

use super::{is_private_team, projected, text, Rooms, ROOM_FIELDS, SUBSCRIPTION_FIELDS};

use crate::chat::collections::TRASH;
use crate::chat::collections::{MESSAGES, TEAMS};
use crate::chat::collections::{ROOMS, SUBSCRIPTIONS, USERS};
use crate::chat::permissions::Permissions;
use crate::chat::records::RoomKind;
use crate::chat::settings::Settings;
use crate::engine::bus::{Bus, BusEvent};
use crate::engine::error::ServiceError;
use crate::engine::registry::Registry;
use crate::engine::streams::{self, ReadRule, Stream, StreamRequest};
use crate::model::{Document, Value};
use crate::storage::{ChangeEvent, FindOptions, OperationType, Store};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

/// The event of every message of the rooms a user may read.
pub const MY_MESSAGES: &str = "__my_messages__";
/// Where each user's `__my_messages__` listeners are filed.
const MY_MESSAGES_KEY: &str = "__my_messages__/";

/// The stream events clients may write on `stream-notify-room`.
const CLIENT_ROOM_EVENTS: &[&str] = &["typing", "user-activity"];

/// The `stream-notify-user` events clients may write: signalling between two people that the
/// server only relays (WebRTC offers, answers and candidates; OTR's key exchange).
const CLIENT_USER_EVENTS: &[&str] = &["webrtc", "otr"];

/// The OTR messages a client may relay (the rest of OTR goes through methods).
const OTR_RELAYED: &[&str] = &["handshake", "acknowledge"];

/// The largest relayed signalling write, its arguments as EJSON: a WebRTC offer is a few
/// kilobytes.
pub const MAX_SIGNAL_BYTES: usize = 64 * 1024;

/// The most members a room-wide signal is relayed to: a call's room. One write to a bigger
/// room would become thousands of events, so it is dropped.
pub const MAX_SIGNAL_ROOM: usize = 100;

struct Member {
    rid: Arc<str>,
    uid: Arc<str>,
}

/// Who is in which room, from the subscriptions' change events.
#[derive(Default)]
struct Members {
    by_subscription: HashMap<String, Member>,
    by_room: HashMap<Arc<str>, HashSet<Arc<str>>>,
    /// The rooms of each user: whether two people share one, for relayed signalling.
    by_user: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Members {
    /// Records a subscription; `true` when it is new.
    fn put(&mut self, sub_id: &str, rid: &str, uid: &str) -> bool {
        if self.by_subscription.contains_key(sub_id) {
            return false;
        }
        let rid: Arc<str> = rid.into();
        let uid: Arc<str> = uid.into();
        self.by_room
            .entry(rid.clone())
            .or_default()
            .insert(uid.clone());
        self.by_user
            .entry(uid.clone())
            .or_default()
            .insert(rid.clone());
        self.by_subscription
            .insert(sub_id.to_owned(), Member { rid, uid });
        true
    }

    fn forget(&mut self, sub_id: &str) -> Option<Member> {
        let member = self.by_subscription.remove(sub_id)?;
        if let Some(users) = self.by_room.get_mut(&member.rid) {
            users.remove(&member.uid);
            if users.is_empty() {
                self.by_room.remove(&member.rid);
            }
        }
        if let Some(rooms) = self.by_user.get_mut(&member.uid) {
            rooms.remove(&member.rid);
            if rooms.is_empty() {
                self.by_user.remove(&member.uid);
            }
        }
        Some(member)
    }

    fn is_member(&self, rid: &str, uid: &str) -> bool {
        self.by_room.get(rid).is_some_and(|u| u.contains(uid))
    }

    /// Whether `a` and `b` are in at least one room together.
    fn share_a_room(&self, a: &str, b: &str) -> bool {
        let (Some(of_a), Some(of_b)) = (self.by_user.get(a), self.by_user.get(b)) else {
            return false;
        };
        let (fewer, more) = if of_a.len() <= of_b.len() {
            (of_a, of_b)
        } else {
            (of_b, of_a)
        };
        fewer.iter().any(|rid| more.contains(rid))
    }

    /// Who a room-wide signal of `writer` in `rid` goes to: the other members, when the
    /// writer is one and the room is small enough for a call ([`MAX_SIGNAL_ROOM`]).
    fn call_peers(&self, rid: &str, writer: &str) -> Option<Vec<Arc<str>>> {
        let users = self.by_room.get(rid)?;
        if !users.contains(writer) || users.len() > MAX_SIGNAL_ROOM + 1 {
            return None;
        }
        Some(users.iter().filter(|u| &***u != writer).cloned().collect())
    }
}

/// A room's kind, name and team, for `__my_messages__`'s meta argument and its readers.
#[derive(Clone)]
struct RoomInfo {
    kind: Option<RoomKind>,
    name: Option<String>,
    /// The team the room belongs to: a public room of a private team is not for everyone.
    team_id: Option<String>,
}

impl RoomInfo {
    /// Whether people outside the room may read it (a private team's members only, when the
    /// room is in one).
    fn public(&self) -> bool {
        self.kind == Some(RoomKind::Channel)
    }

    /// The kind's wire letter (`""` for a room without a kind comet knows).
    fn wire_kind(&self) -> &'static str {
        self.kind.map_or("", RoomKind::letter)
    }
}

/// The room streams.
pub struct RoomStreams {
    pub messages: Arc<Stream>,
    pub user: Arc<Stream>,
    pub room: Arc<Stream>,
    /// Where typing and activity travel (they mirror no data): to every instance's listeners.
    bus: Arc<dyn Bus>,
    store: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    permissions: Arc<Permissions>,
    settings: Arc<Settings>,
    members: RwLock<Members>,
    room_info: RwLock<HashMap<String, RoomInfo>>,
}

fn sub_member(doc: &Document) -> Option<(String, String, String)> {
    let id = text(doc, "_id")?.to_owned();
    let rid = text(doc, "rid")?.to_owned();
    let uid = text(doc.get("u")?.as_object()?, "_id")?.to_owned();
    Some((id, rid, uid))
}

/// A stream write's event name and arguments; a name that is not a string is a client error.
fn stream_write(params: &[Value]) -> Result<(&str, &[Value]), ServiceError> {
    match params.split_first() {
        Some((Value::String(event), args)) => Ok((event, args)),
        _ => Err(ServiceError::match_failed()),
    }
}

/// The size of a write's arguments as EJSON.
fn signal_size(args: &[Value]) -> usize {
    args.iter().map(|a| a.to_ejson_string().len() + 1).sum()
}

/// `<rid>/<name>` split at the first `/`.
fn split_event(event: &str) -> Option<(&str, &str)> {
    event.split_once('/')
}

/// Read rule of a room's events: the room exists and the reader may see it.
fn room_reader(rooms: Arc<Rooms>, rid_of: fn(&str) -> Option<&str>) -> ReadRule {
    Arc::new(move |request: StreamRequest| {
        let rooms = rooms.clone();
        Box::pin(async move {
            if request.event == MY_MESSAGES {
                return Ok(true);
            }
            let Some(rid) = rid_of(&request.event) else {
                return Ok(false);
            };
            let Some(room) = rooms.room(rid).await? else {
                return Ok(false);
            };
            rooms.can_access(&room, request.user_id.as_deref()).await
        })
    })
}

fn with_id(id: Value, more: &[(&str, Value)]) -> Value {
    let mut d = Document::default();
    d.insert("_id".into(), id);
    for (k, v) in more {
        d.insert((*k).into(), v.clone());
    }
    Value::Object(d)
}

impl RoomStreams {
    /// Defines the streams, reads who is in which room, and follows the store from then on.
    pub async fn start(
        registry: &mut Registry,
        store: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        permissions: Arc<Permissions>,
        settings: Arc<Settings>,
        follower: &crate::engine::feed::Follower,
    ) -> Result<Arc<Self>, ServiceError> {
        let messages = streams::define_keyed(
            registry,
            "room-messages",
            room_reader(rooms.clone(), |e| Some(e)),
            Arc::new(|r: &StreamRequest| {
                if r.event == MY_MESSAGES {
                    format!(
                        "{MY_MESSAGES_KEY}{}",
                        r.user_id.as_deref().unwrap_or_default()
                    )
                } else {
                    r.event.clone()
                }
            }),
        );
        let user = streams::define(
            registry,
            "notify-user",
            Arc::new(|r: StreamRequest| {
                Box::pin(async move {
                    let owner = split_event(&r.event).map(|(uid, _)| uid);
                    Ok(r.user_id.is_some() && owner == r.user_id.as_deref())
                })
            }),
        );
        let room = streams::define(
            registry,
            "notify-room",
            room_reader(rooms.clone(), |e| split_event(e).map(|(rid, _)| rid)),
        );
        // Rocket.Chat's relay stream: nothing to read.
        streams::define(
            registry,
            "notify-room-users",
            Arc::new(|_| Box::pin(async { Ok(false) })),
        );
        let live = Arc::new(Self {
            messages,
            user,
            room,
            bus: registry.bus().clone(),
            store: store.clone(),
            rooms: rooms.clone(),
            permissions,
            settings,
            members: RwLock::new(Members::default()),
            room_info: RwLock::new(HashMap::new()),
        });
        for collection in [ROOMS, SUBSCRIPTIONS, MESSAGES, TRASH, USERS, TEAMS] {
            store.follow_collection(collection);
        }
        live.reload_members().await?;
        follower.add_service(&live);
        live.register_writes(registry);
        live.register_signalling(registry);
        Ok(live)
    }

    async fn reload_members(&self) -> Result<(), ServiceError> {
        let subs =
            crate::engine::cached::read_all(&*self.store, SUBSCRIPTIONS, &["rid", "u"]).await?;
        let mut members = Members::default();
        for sub in &subs {
            if let Some((id, rid, uid)) = sub_member(sub) {
                members.put(&id, &rid, &uid);
            }
        }
        *self.members.write().unwrap_or_else(|p| p.into_inner()) = members;
        self.room_info
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(())
    }

    /// Whether `uid` is in `rid`, as the change events so far say.
    pub fn is_member(&self, rid: &str, uid: &str) -> bool {
        self.members
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_member(rid, uid)
    }

    /// Whether `writer` may relay `args` to `target`'s event `name` on `stream-notify-user`:
    /// a signalling event, to someone the writer shares a room with (Rocket.Chat lets any
    /// logged-in user signal anyone; comet keeps strangers out), small enough, and OTR's
    /// only while `OTR_Enable` is on.
    fn may_signal(&self, writer: &str, target: &str, name: &str, args: &[Value]) -> bool {
        if !CLIENT_USER_EVENTS.contains(&name) || signal_size(args) > MAX_SIGNAL_BYTES {
            return false;
        }
        if name == "otr" {
            let relayed = args
                .first()
                .and_then(Value::as_str)
                .is_some_and(|kind| OTR_RELAYED.contains(&kind));
            if !relayed || self.settings.value("OTR_Enable") != Some(Value::Bool(true)) {
                return false;
            }
        }
        writer == target
            || self
                .members
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .share_a_room(writer, target)
    }

    /// `stream-notify-user` writes (`<uid>/webrtc`, `<uid>/otr`) and `stream-notify-room-users`
    /// writes (`<rid>/webrtc`, relayed to each other member's `<uid>/webrtc`): signalling the
    /// server only carries, on the bus so a peer on another instance gets it. Anything
    /// [`Self::may_signal`] refuses is dropped without a word, as Rocket.Chat does.
    fn register_signalling(self: &Arc<Self>, registry: &mut Registry) {
        registry.method_of("stream-notify-user", self, |live, ctx, params| async move {
            let (event, args) = stream_write(&params)?;
            let (Some(writer), Some((target, name))) = (ctx.user_id.as_deref(), split_event(event))
            else {
                return Ok(None);
            };
            if live.may_signal(writer, target, name, args) {
                live.signal(target, name, args, &ctx.connection_id);
            }
            Ok(None)
        });
        registry.method_of(
            "stream-notify-room-users",
            self,
            |live, ctx, params| async move {
                let (event, args) = stream_write(&params)?;
                let (Some(writer), Some((rid, "webrtc"))) =
                    (ctx.user_id.as_deref(), split_event(event))
                else {
                    return Ok(None);
                };
                if signal_size(args) > MAX_SIGNAL_BYTES {
                    return Ok(None);
                }
                let peers = live
                    .members
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .call_peers(rid, writer);
                for uid in peers.unwrap_or_default() {
                    live.signal(&uid, "webrtc", args, &ctx.connection_id);
                }
                Ok(None)
            },
        );
    }

    /// Sends `<uid>/<name>` to `uid`'s listeners on every instance, but the writer's connection.
    fn signal(&self, uid: &str, name: &str, args: &[Value], writer: &Arc<str>) {
        self.bus.publish(BusEvent {
            stream: self.user.collection().into(),
            event: format!("{uid}/{name}"),
            args: args.to_vec(),
            except: Some(writer.clone()),
        });
    }

    /// `stream-notify-room` writes: typing and activity, by a member, under its own name;
    /// anything else is dropped without a word (Rocket.Chat's rule), as is a write whose
    /// extras (the third argument, `{tmid}` and the like) are larger than
    /// [`MAX_ACTIVITY_EXTRAS_BYTES`]: a write is relayed to every member, so it must stay small.
    fn register_writes(self: &Arc<Self>, registry: &mut Registry) {
        registry.method_of("stream-notify-room", self, |live, ctx, params| async move {
            let (event, args) = stream_write(&params)?;
            let (Some(user), Some((rid, name))) = (ctx.user_id.as_deref(), split_event(event))
            else {
                return Ok(None);
            };
            if !CLIENT_ROOM_EVENTS.contains(&name) || !live.is_member(rid, user) {
                return Ok(None);
            }
            let username = live.permissions.user_roles().username_of(user);
            if username.is_none() || args.first().and_then(Value::as_str) != username.as_deref() {
                return Ok(None);
            }
            if args
                .get(2)
                .is_some_and(|extras| extras.to_ejson_string().len() > MAX_ACTIVITY_EXTRAS_BYTES)
            {
                return Ok(None);
            }
            let username = Value::from(username.as_deref().unwrap_or_default());
            // Old and new clients listen to different events: each write reaches both.
            let (typing, activity) = match name {
                "typing" => {
                    let on = args.get(1) == Some(&Value::Bool(true));
                    let activities = if on {
                        vec![Value::from("user-typing")]
                    } else {
                        vec![]
                    };
                    let mut activity = vec![username.clone(), Value::Array(activities)];
                    activity.extend(args.get(2).cloned());
                    (vec![username, Value::Bool(on)], activity)
                }
                _ => {
                    let activities = match args.get(1) {
                        Some(Value::Array(a))
                            if a.len() <= 8
                                && a.iter().all(|x| x.as_str().is_some_and(|s| s.len() <= 64)) =>
                        {
                            a.clone()
                        }
                        _ => return Ok(None),
                    };
                    let typing_now = activities.iter().any(|a| a.as_str() == Some("user-typing"));
                    let mut activity = vec![username.clone(), Value::Array(activities)];
                    activity.extend(args.get(2).filter(|e| e.as_object().is_some()).cloned());
                    (vec![username, Value::Bool(typing_now)], activity)
                }
            };
            let stream: Arc<str> = live.room.collection().into();
            for (name, args) in [("typing", typing), ("user-activity", activity)] {
                live.bus.publish(BusEvent {
                    stream: stream.clone(),
                    event: format!("{rid}/{name}"),
                    args,
                    except: Some(ctx.connection_id.clone()),
                });
            }
            Ok(None)
        });
    }

    /// What is remembered of room `rid`, without reading the store.
    fn room_info_now(&self, rid: &str) -> Option<RoomInfo> {
        self.room_info
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(rid)
            .cloned()
    }

    async fn room_info(&self, rid: &str) -> Option<RoomInfo> {
        if let Some(info) = self.room_info_now(rid) {
            return Some(info);
        }
        let room = self
            .store
            .find(
                ROOMS,
                FindOptions {
                    selector: crate::engine::build::selector(serde_json::json!({"_id": rid}))
                        .ok()?,
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .ok()?
            .pop()?;
        Some(self.remember_room(&room))
    }

    fn remember_room(&self, room: &Document) -> RoomInfo {
        let info = RoomInfo {
            kind: RoomKind::of(room),
            name: text(room, "name").map(str::to_owned),
            team_id: text(room, "teamId").map(str::to_owned),
        };
        if let Some(rid) = text(room, "_id") {
            self.room_info
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(rid.to_owned(), info.clone());
        }
        info
    }

    /// The document an event is about: its own, or (an update told without it) read now.
    async fn document_of(&self, event: &ChangeEvent) -> Option<Document> {
        if let Some(doc) = &event.full_document {
            return Some((**doc).clone());
        }
        let id = event.id.clone()?;
        let mut filter = Document::default();
        filter.insert("_id".into(), id);
        self.store
            .find(
                &event.collection,
                FindOptions {
                    selector: crate::model::query::Selector::parse(&filter).ok()?,
                    limit: Some(1),
                    ..FindOptions::default()
                },
            )
            .await
            .ok()?
            .pop()
    }

    async fn on_change(&self, event: &ChangeEvent) {
        let collection = &*event.collection;
        if ![ROOMS, SUBSCRIPTIONS, MESSAGES, TRASH, USERS, TEAMS].contains(&collection) {
            return;
        }
        if collection == USERS {
            if matches!(
                event.operation,
                OperationType::Update | OperationType::Replace
            ) {
                self.user_changed(event);
            }
            return;
        }
        match (collection, event.operation) {
            (SUBSCRIPTIONS, OperationType::Delete) => {
                if let Some(Value::String(id)) = &event.id {
                    self.subscription_removed(id);
                }
            }
            (ROOMS, OperationType::Delete) => {
                if let Some(Value::String(rid)) = &event.id {
                    self.room_removed(rid);
                }
            }
            (_, OperationType::Insert | OperationType::Update | OperationType::Replace) => {
                let Some(doc) = self.document_of(event).await else {
                    return;
                };
                match collection {
                    SUBSCRIPTIONS => self.subscription_changed(&doc).await,
                    ROOMS => self.room_changed(event.operation, &doc).await,
                    TEAMS => self.team_changed(&doc).await,
                    MESSAGES => self.message_changed(event, &doc).await,
                    _ if event.operation == OperationType::Insert
                        && text(&doc, "__collection__") == Some(MESSAGES) =>
                    {
                        self.message_deleted(&doc)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    async fn subscription_changed(&self, sub: &Document) {
        let Some((id, rid, uid)) = sub_member(sub) else {
            return;
        };
        let added = self
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .put(&id, &rid, &uid);
        let action = if added { "inserted" } else { "updated" };
        self.user.emit(
            &format!("{uid}/subscriptions-changed"),
            &[
                Value::from(action),
                Value::Object(projected(sub, SUBSCRIPTION_FIELDS)),
            ],
        );
        if added {
            // The new member's room list learns of the room itself.
            let room = self
                .document_of(&ChangeEvent::for_document(
                    0,
                    OperationType::Update,
                    ROOMS.into(),
                    Some(Value::from(rid.as_str())),
                    None,
                    None,
                ))
                .await;
            if let Some(room) = room {
                self.user.emit(
                    &format!("{uid}/rooms-changed"),
                    &[
                        Value::from("inserted"),
                        Value::Object(projected(&room, ROOM_FIELDS)),
                    ],
                );
            }
        }
    }

    fn subscription_removed(&self, sub_id: &str) {
        let Some(member) = self
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .forget(sub_id)
        else {
            return;
        };
        let (rid, uid) = (&*member.rid, &*member.uid);
        // The former member stops hearing the room before anything later is told.
        self.drop_room_listeners(rid, |u| u == Some(uid));
        let mut user = Document::default();
        user.insert("_id".into(), Value::from(uid));
        self.user.emit(
            &format!("{uid}/subscriptions-changed"),
            &[
                Value::from("removed"),
                with_id(
                    Value::from(sub_id),
                    &[("u", Value::Object(user)), ("rid", Value::from(rid))],
                ),
            ],
        );
    }

    /// Drops the listeners of `rid`'s messages and room events whose user `lost` says lost
    /// the room.
    fn drop_room_listeners(&self, rid: &str, lost: impl Fn(Option<&str>) -> bool) {
        self.messages.drop_listeners_where(rid, &lost);
        self.room
            .drop_listeners_with_prefix(&format!("{rid}/"), &lost);
    }

    async fn room_changed(&self, operation: OperationType, room: &Document) {
        let Some(rid) = text(room, "_id") else {
            return;
        };
        let before = self.room_info_now(rid);
        let was_public = before.as_ref().is_none_or(RoomInfo::public);
        let had_team = before.as_ref().and_then(|i| i.team_id.clone());
        let info = self.remember_room(room);
        if !info.public() && was_public {
            // A room turned private keeps only its members' listeners.
            self.restrict_listeners(rid, &HashSet::new());
        } else if let Some(team) = info
            .team_id
            .as_deref()
            .filter(|t| had_team.as_deref() != Some(*t))
        {
            // A public room moved into a private team is, from now on, for the team's members.
            if let Ok(Some(team_members)) = self.rooms.private_team_members(team).await {
                self.restrict_listeners(rid, &team_members);
            }
        }
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let no_one = HashSet::new();
        let members_now = members.by_room.get(rid).unwrap_or(&no_one);
        let action = if operation == OperationType::Insert {
            "inserted"
        } else {
            "updated"
        };
        self.user.emit_to_users(
            members_now,
            "rooms-changed",
            &[
                Value::from(action),
                Value::Object(projected(room, ROOM_FIELDS)),
            ],
        );
    }

    fn room_removed(&self, rid: &str) {
        {
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            if let Some(members_then) = members.by_room.get(rid) {
                self.user.emit_to_users(
                    members_then,
                    "rooms-changed",
                    &[Value::from("removed"), with_id(Value::from(rid), &[])],
                );
            }
        }
        self.drop_room_listeners(rid, |_| true);
        self.room_info
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(rid);
    }

    /// Drops the listeners of room `rid` who are neither its members nor in `also`.
    fn restrict_listeners(&self, rid: &str, also: &HashSet<String>) {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        let no_one = HashSet::new();
        let members_now = members.by_room.get(rid).unwrap_or(&no_one);
        self.drop_room_listeners(rid, |u| {
            !u.is_some_and(|u| members_now.contains(u) || also.contains(u))
        });
    }

    /// A team changed (made private, or its members changed: the Team service touches the
    /// team then): its public rooms keep only the listeners who may still read them.
    async fn team_changed(&self, team: &Document) {
        let Some(team_id) = text(team, "_id") else {
            return;
        };
        if !is_private_team(team) {
            return;
        }
        let Ok(Some(team_members)) = self.rooms.private_team_members(team_id).await else {
            return;
        };
        let Ok(rooms) = self
            .rooms
            .find(
                ROOMS,
                serde_json::json!({"teamId": team_id, "t": "c"}),
                None,
            )
            .await
        else {
            return;
        };
        for room in &rooms {
            if let Some(rid) = text(room, "_id") {
                self.restrict_listeners(rid, &team_members);
            }
        }
    }

    fn hidden_kind(&self, message: &Document) -> bool {
        let Some(kind) = text(message, "t") else {
            return false;
        };
        matches!(self.settings.value("Hide_System_Messages"), Some(Value::Array(h)) if h.iter().any(|x| x.as_str() == Some(kind)))
    }

    async fn message_changed(&self, event: &ChangeEvent, message: &Document) {
        let Some(rid) = text(message, "rid") else {
            return;
        };
        if message.get("_hidden") == Some(&Value::Bool(true)) {
            // Hidden just now: deleted, with the history kept.
            let just_hidden = event
                .update_description
                .as_ref()
                .is_some_and(|u| u.updated_fields.contains_key("_hidden"));
            if just_hidden {
                self.message_deleted(message);
            }
            return;
        }
        if message.get("imported").is_some() || self.hidden_kind(message) {
            return;
        }
        let args = [Value::Object(message.clone())];
        // The event name is the field's key: `rid` as given by the document.
        let event_name = rid.to_owned();
        self.messages.emit(&event_name, &args);
        if event.operation == OperationType::Insert && message.get("t").is_none() {
            self.notify_recipients(rid, message).await;
        }
        let listeners = self.messages.keys_with_prefix(MY_MESSAGES_KEY);
        if listeners.is_empty() {
            return;
        }
        let Some(info) = self.room_info(rid).await else {
            return;
        };
        // A public room of a private team: only the team's members beside the room's own.
        let team_members = match &info.team_id {
            Some(team) if info.public() => match self.rooms.private_team_members(team).await {
                Ok(found) => found,
                Err(_) => Some(HashSet::new()),
            },
            _ => None,
        };
        let mut participants = Vec::new();
        let mut others = Vec::new();
        for key in &listeners {
            let uid = &key[MY_MESSAGES_KEY.len()..];
            if uid.is_empty() {
                continue;
            }
            if self.is_member(rid, uid) {
                participants.push(key.as_str());
            } else if info.public()
                && team_members.as_ref().is_none_or(|t| t.contains(uid))
                && self
                    .permissions
                    .has_permission(Some(uid), "view-c-room", None)
                    .await
                    .unwrap_or(false)
            {
                others.push(key.as_str());
            }
        }
        for (keys, participant) in [(participants, true), (others, false)] {
            if keys.is_empty() {
                continue;
            }
            let mut meta = Document::default();
            meta.insert("roomParticipant".into(), Value::Bool(participant));
            meta.insert("roomType".into(), Value::from(info.wire_kind()));
            if let Some(name) = &info.name {
                meta.insert("roomName".into(), Value::from(name.as_str()));
            }
            self.messages.emit_to(
                &keys,
                MY_MESSAGES,
                &[args[0].clone(), Value::Object(meta)],
                None,
            );
        }
    }

    /// `notification` to those a new message calls (mentioned members, the other side of a
    /// direct message), and `message` to its sender for each mentioned user who is not in
    /// the room (Rocket.Chat's ephemeral note).
    async fn notify_recipients(&self, rid: &str, message: &Document) {
        let Some(sender) = message
            .get("u")
            .and_then(Value::as_object)
            .and_then(|u| text(u, "_id"))
        else {
            return;
        };
        let Some(info) = self.room_info(rid).await else {
            return;
        };
        let mentioned: Vec<(&str, &str)> = match message.get("mentions") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|m| {
                    let m = m.as_object()?;
                    Some((text(m, "_id")?, text(m, "username").unwrap_or_default()))
                })
                .filter(|(id, _)| *id != sender && *id != "all" && *id != "here")
                .collect(),
            _ => Vec::new(),
        };
        let (called, strangers) = {
            let members = self.members.read().unwrap_or_else(|p| p.into_inner());
            let in_room = members.by_room.get(rid);
            let is_member = |uid: &str| in_room.is_some_and(|m| m.contains(uid));
            let mut called: HashSet<Arc<str>> = HashSet::new();
            let mut strangers = Vec::new();
            if info.kind == Some(RoomKind::Direct) {
                called.extend(
                    in_room
                        .into_iter()
                        .flatten()
                        .filter(|u| ***u != *sender)
                        .cloned(),
                );
            }
            for (id, username) in &mentioned {
                if is_member(id) {
                    called.insert(Arc::from(*id));
                } else {
                    strangers.push(username.to_string());
                }
            }
            (called, strangers)
        };
        if !called.is_empty() {
            let notification = notification_of(message, &info);
            self.user
                .emit_to_users(&called, "notification", &[notification]);
        }
        for username in strangers.iter().filter(|u| !u.is_empty()) {
            let note = ephemeral(
                rid,
                &format!("@{username} was mentioned but is not in this room."),
            );
            self.user.emit(&format!("{sender}/message"), &[note]);
        }
    }

    /// `userData` (the changed fields a user may see of its own document) and, for a user
    /// just deactivated, `force_logout`.
    fn user_changed(&self, event: &ChangeEvent) {
        let Some(Value::String(uid)) = &event.id else {
            return;
        };
        let Some(changes) = &event.update_description else {
            return;
        };
        let mut diff = Document::default();
        for (path, value) in changes.updated_fields.iter() {
            if own_field(path) {
                diff.insert(path.clone(), value.clone());
            }
        }
        let mut unset = Document::default();
        for path in changes.removed_fields.iter().filter(|p| own_field(p)) {
            unset.insert(path.clone(), Value::Bool(true));
        }
        if !diff.is_empty() || !unset.is_empty() {
            let mut data = Document::default();
            data.insert("type".into(), Value::from("updated"));
            data.insert("id".into(), Value::from(uid.as_str()));
            data.insert("diff".into(), Value::Object(diff));
            data.insert("unset".into(), Value::Object(unset));
            self.user
                .emit(&format!("{uid}/userData"), &[Value::Object(data)]);
        }
        if changes.updated_fields.get("active") == Some(&Value::Bool(false)) {
            self.user.emit(&format!("{uid}/force_logout"), &[]);
        }
    }

    fn message_deleted(&self, message: &Document) {
        let (Some(rid), Some(id)) = (text(message, "rid"), message.get("_id")) else {
            return;
        };
        self.room
            .emit(&format!("{rid}/deleteMessage"), &[with_id(id.clone(), &[])]);
    }
}

/// The most a typing or activity write may carry beside its name and activities, in EJSON
/// bytes (Rocket.Chat's clients send `{tmid}` or nothing).
pub const MAX_ACTIVITY_EXTRAS_BYTES: usize = 1024;

/// The fields of its own user document a client hears of in `userData` (never `services`,
/// where passwords and tokens live).
const OWN_FIELDS: &[&str] = &[
    "username",
    "name",
    "status",
    "statusText",
    "statusConnection",
    "statusDefault",
    "utcOffset",
    "active",
    "roles",
    "settings",
    "emails",
    "avatarETag",
    "language",
    "customFields",
    "requirePasswordChange",
    "bio",
    "nickname",
    "e2e",
];

fn own_field(path: &str) -> bool {
    let root = path.split('.').next().unwrap_or_default();
    OWN_FIELDS.contains(&root)
}

/// Rocket.Chat's desktop notification for `message`.
fn notification_of(message: &Document, info: &RoomInfo) -> Value {
    let user = message.get("u").and_then(Value::as_object);
    let sender_name = user.and_then(|u| text(u, "username")).unwrap_or_default();
    let title = match (&info.name, info.kind) {
        (Some(name), Some(kind)) if kind.is_group() => format!("#{name}"),
        _ => format!("@{sender_name}"),
    };
    let mut payload = Document::default();
    for field in ["_id", "rid", "tmid"] {
        if let Some(v) = message.get(field) {
            payload.insert(field.into(), v.clone());
        }
    }
    if let Some(u) = user {
        payload.insert(
            "sender".into(),
            Value::Object(projected(u, &["_id", "username", "name"])),
        );
    }
    payload.insert("type".into(), Value::from(info.wire_kind()));
    if let Some(name) = &info.name {
        payload.insert("name".into(), Value::from(name.as_str()));
    }
    let mut short = Document::default();
    short.insert(
        "msg".into(),
        message.get("msg").cloned().unwrap_or(Value::from("")),
    );
    payload.insert("message".into(), Value::Object(short));
    let mut n = Document::default();
    n.insert("title".into(), Value::from(title));
    n.insert(
        "text".into(),
        message.get("msg").cloned().unwrap_or(Value::from("")),
    );
    n.insert("payload".into(), Value::Object(payload));
    Value::Object(n)
}

/// An ephemeral message from the server (`rocket.cat`) in room `rid`: shown, never stored.
fn ephemeral(rid: &str, msg: &str) -> Value {
    let mut u = Document::default();
    u.insert("_id".into(), Value::from("rocket.cat"));
    u.insert("username".into(), Value::from("rocket.cat"));
    let mut m = Document::default();
    m.insert("_id".into(), Value::from(crate::model::random::random_id()));
    m.insert("rid".into(), Value::from(rid));
    m.insert("ts".into(), Value::Date(crate::engine::build::now_ms()));
    m.insert("msg".into(), Value::from(msg));
    m.insert("u".into(), Value::Object(u));
    m.insert("private".into(), Value::Bool(true));
    m.insert(
        "_updatedAt".into(),
        Value::Date(crate::engine::build::now_ms()),
    );
    Value::Object(m)
}

impl crate::engine::feed::FeedHandler for RoomStreams {
    fn name(&self) -> &'static str {
        "room streams"
    }

    fn wants(&self, collection: &str) -> bool {
        [ROOMS, SUBSCRIPTIONS, MESSAGES, TRASH, USERS, TEAMS].contains(&collection)
    }

    fn apply<'a>(&'a self, event: &'a ChangeEvent) -> crate::engine::feed::FeedFuture<'a> {
        Box::pin(self.on_change(event))
    }

    /// Members and rooms may have changed unseen: both are read again (the rooms as they
    /// are next needed).
    fn resync(&self) -> crate::engine::feed::FeedFuture<'_> {
        Box::pin(async move {
            self.room_info
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
            if let Err(err) = self.reload_members().await {
                tracing::warn!(error = %err, "cannot read the rooms' members again");
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_go_between_roommates_and_a_call_stays_in_a_small_room() {
        let mut m = Members::default();
        m.put("s1", "call", "ann");
        m.put("s2", "call", "bob");
        m.put("s3", "elsewhere", "eve");
        assert!(m.share_a_room("ann", "bob") && m.share_a_room("bob", "ann"));
        assert!(!m.share_a_room("ann", "eve"));
        assert_eq!(m.call_peers("call", "bob"), Some(vec![Arc::from("ann")]));
        assert_eq!(m.call_peers("call", "eve"), None, "not a member");
        m.forget("s2");
        assert!(!m.share_a_room("ann", "bob"), "bob left");
        for i in 0..MAX_SIGNAL_ROOM {
            m.put(&format!("big{i}"), "big", &format!("u{i}"));
        }
        m.put("big-last", "big", "ann");
        assert_eq!(
            m.call_peers("big", "ann").map(|p| p.len()),
            Some(MAX_SIGNAL_ROOM)
        );
        m.put("big-over", "big", "bob");
        assert_eq!(m.call_peers("big", "ann"), None, "too big for a call");
    }

    #[test]
    fn members_are_found_by_room_and_forgotten_by_subscription() {
        let mut m = Members::default();
        assert!(m.put("s1", "r1", "u1"));
        assert!(!m.put("s1", "r1", "u1"));
        assert!(m.put("s2", "r1", "u2"));
        assert!(m.is_member("r1", "u1") && m.is_member("r1", "u2"));
        let gone = m.forget("s1").unwrap();
        assert_eq!((&*gone.rid, &*gone.uid), ("r1", "u1"));
        assert!(!m.is_member("r1", "u1"));
        m.forget("s2");
        assert!(m.by_room.is_empty());
        assert!(m.forget("s2").is_none());
    }

    #[test]
    fn room_events_split_at_the_first_slash() {
        assert_eq!(split_event("r1/typing"), Some(("r1", "typing")));
        assert_eq!(split_event("r1/a/b"), Some(("r1", "a/b")));
        assert_eq!(split_event("nothing"), None);
    }
}
