//! Typed records of Rocket.Chat's documents (users, rooms, subscriptions, messages, teams)
//! and the enums at their edges (room kind, user status, message type).
//!
//! A record reads the fields comet knows into typed fields and keeps **every other field**
//! in `other`, written back unchanged: comet serves existing Rocket.Chat databases whose
//! documents carry fields from newer versions and from apps. A known field whose stored
//! value has another type than comet expects is kept the same way (in `other`, as stored)
//! rather than dropped. Strings are only the wire form: `"c"` is [`RoomKind::Channel`]
//! everywhere past the edge.
//!
//! Records convert to and from the store's [`Document`] directly, field by field: the
//! model's `Value` carries dates and binary, which serde's data model has no type for, and
//! a direct conversion costs no intermediate tree on the message path.
//!
//! Must not read or write the store; the services do, with these types.

use crate::model::{Document, Value};

/// A stored document that is not the record it should be: a required field is missing or
/// of the wrong type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{record} without a valid `{field}`")]
pub struct RecordError {
    pub record: &'static str,
    pub field: &'static str,
}

/// A value a record field holds: read from and written to the store's `Value`.
pub trait Field: Sized {
    /// `None` when `value` is not of this type (the raw value is then kept as stored).
    fn from_value(value: &Value) -> Option<Self>;
    fn to_value(&self) -> Value;
}

impl Field for String {
    fn from_value(value: &Value) -> Option<Self> {
        value.as_str().map(str::to_owned)
    }
    fn to_value(&self) -> Value {
        Value::from(self.as_str())
    }
}

impl Field for bool {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    fn to_value(&self) -> Value {
        Value::Bool(*self)
    }
}

impl Field for f64 {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }
    fn to_value(&self) -> Value {
        Value::Number(*self)
    }
}

impl Field for Vec<String> {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => None,
        }
    }
    fn to_value(&self) -> Value {
        Value::Array(self.iter().map(|s| Value::from(s.as_str())).collect())
    }
}

/// A time: milliseconds since the epoch, stored as a date.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct Date(pub f64);

impl Field for Date {
    fn from_value(value: &Value) -> Option<Self> {
        match value {
            Value::Date(ms) => Some(Date(*ms)),
            _ => None,
        }
    }
    fn to_value(&self) -> Value {
        Value::Date(self.0)
    }
}

/// A user as other documents name them (`u` of a message, room or subscription):
/// `_id`, `username`, and `name` where Rocket.Chat writes it.
#[derive(Clone, Debug, PartialEq)]
pub struct UserRef {
    pub id: String,
    pub username: Option<String>,
    pub name: Option<String>,
    /// Fields of the reference comet does not know, kept.
    pub other: Document,
}

impl Field for UserRef {
    fn from_value(value: &Value) -> Option<Self> {
        let Value::Object(fields) = value else {
            return None;
        };
        let mut other = fields.clone();
        let id = take::<String>(&mut other, "_id")?;
        Some(UserRef {
            id,
            username: take(&mut other, "username"),
            name: take(&mut other, "name"),
            other,
        })
    }
    fn to_value(&self) -> Value {
        let mut out = Document::default();
        out.insert("_id".into(), Value::from(self.id.as_str()));
        put(&mut out, "username", &self.username);
        put(&mut out, "name", &self.name);
        for (k, v) in &self.other {
            out.insert(k.clone(), v.clone());
        }
        Value::Object(out)
    }
}

/// Takes `key` out of `other` when it reads as `T`; leaves it there (as stored) when not.
fn take<T: Field>(other: &mut Document, key: &str) -> Option<T> {
    let parsed = T::from_value(other.get(key)?)?;
    other.shift_remove(key);
    Some(parsed)
}

fn put<T: Field>(out: &mut Document, key: &str, value: &Option<T>) {
    if let Some(v) = value {
        out.insert(key.into(), v.to_value());
    }
}

/// An enum whose wire form is one of a fixed set of strings.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// The wire form.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            /// The value for a wire form; `None` for one comet does not know.
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl Field for $name {
            fn from_value(value: &Value) -> Option<Self> {
                value.as_str().and_then(Self::parse)
            }
            fn to_value(&self) -> Value {
                Value::from(self.as_str())
            }
        }
    };
}

wire_enum! {
    /// A room's kind (`t`).
    RoomKind {
        /// `c`: anyone may find and join it.
        Channel = "c",
        /// `p`: members only.
        PrivateGroup = "p",
        /// `d`: a direct message between users.
        Direct = "d",
        /// `l`: an omnichannel conversation.
        Livechat = "l",
        /// `v`: an omnichannel voice call.
        Voip = "v",
    }
}

impl RoomKind {
    /// The wire letter (`c`, `p`, `d`, ...).
    pub fn letter(self) -> &'static str {
        self.as_str()
    }

    /// The kind of a stored room or subscription (its `t`).
    pub fn of(doc: &Document) -> Option<Self> {
        doc.get("t").and_then(Value::as_str).and_then(Self::parse)
    }

    /// A channel or a private group: a room with a name that members join and leave.
    pub fn is_group(self) -> bool {
        matches!(self, RoomKind::Channel | RoomKind::PrivateGroup)
    }

    /// The permission creating a room of this kind takes.
    pub fn permission(self) -> &'static str {
        match self {
            RoomKind::Channel => "create-c",
            RoomKind::PrivateGroup => "create-p",
            RoomKind::Direct => "create-d",
            RoomKind::Livechat | RoomKind::Voip => "view-l-room",
        }
    }
}

wire_enum! {
    /// A user's status.
    UserStatus {
        Offline = "offline",
        Online = "online",
        Away = "away",
        Busy = "busy",
    }
}

impl UserStatus {
    /// Rocket.Chat's number for the status on its streams (`STATUS_MAP`).
    pub fn number(self) -> u8 {
        match self {
            UserStatus::Offline => 0,
            UserStatus::Online => 1,
            UserStatus::Away => 2,
            UserStatus::Busy => 3,
        }
    }
}

wire_enum! {
    /// The kind of a system message (`t`); a user's or bot's message has none.
    MessageType {
        /// A user joined (`uj`).
        UserJoined = "uj",
        /// A user left (`ul`).
        UserLeft = "ul",
        /// A user was added by another (`au`).
        UserAdded = "au",
        /// A user was removed by another (`ru`).
        UserRemoved = "ru",
        /// The room was renamed (`r`).
        RoomRenamed = "r",
        RoomTopicChanged = "room_changed_topic",
        RoomAnnouncementChanged = "room_changed_announcement",
        RoomDescriptionChanged = "room_changed_description",
        RoomPrivacyChanged = "room_changed_privacy",
        RoomReadOnlySet = "room-set-read-only",
        RoomReadOnlyRemoved = "room-removed-read-only",
        RoomArchived = "room-archived",
        RoomUnarchived = "room-unarchived",
        UserMuted = "user-muted",
        UserUnmuted = "user-unmuted",
        RoleAdded = "subscription-role-added",
        RoleRemoved = "subscription-role-removed",
        MessagePinned = "message_pinned",
        /// A discussion was started from the room (carries `drid`).
        DiscussionCreated = "discussion-created",
        /// A user joined a team (`ujt`).
        UserJoinedTeam = "ujt",
        /// A user left a team (`ult`).
        UserLeftTeam = "ult",
        /// A removed message's placeholder (`rm`).
        MessageRemoved = "rm",
    }
}

/// Defines a record: typed fields read from (and written back to) named keys, everything
/// else kept in `other`. `required` fields make a document without them no record.
macro_rules! record {
    (
        $(#[$meta:meta])*
        $name:ident ($label:literal) {
            required { $($(#[$rmeta:meta])* $rfield:ident: $rtype:ty = $rkey:literal),* $(,)? }
            optional { $($(#[$ometa:meta])* $ofield:ident: $otype:ty = $okey:literal),* $(,)? }
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $($(#[$rmeta])* pub $rfield: $rtype,)*
            $($(#[$ometa])* pub $ofield: Option<$otype>,)*
            /// Every field comet does not read, as stored.
            pub other: Document,
        }

        impl $name {
            /// The record a stored document holds.
            pub fn from_document(mut doc: Document) -> Result<Self, RecordError> {
                $(
                    let $rfield = take::<$rtype>(&mut doc, $rkey)
                        .ok_or(RecordError { record: $label, field: $rkey })?;
                )*
                $( let $ofield = take::<$otype>(&mut doc, $okey); )*
                Ok(Self { $($rfield,)* $($ofield,)* other: doc })
            }

            /// The document to store: the known fields, then every other field as it was.
            pub fn to_document(&self) -> Document {
                let mut out = Document::default();
                $( out.insert($rkey.into(), self.$rfield.to_value()); )*
                $( put(&mut out, $okey, &self.$ofield); )*
                for (k, v) in &self.other {
                    out.insert(k.clone(), v.clone());
                }
                out
            }
        }
    };
}

record! {
    /// A user (`users`).
    User ("user") {
        required { id: String = "_id" }
        optional {
            username: String = "username",
            name: String = "name",
            roles: Vec<String> = "roles",
            status: UserStatus = "status",
            active: bool = "active",
            kind: String = "type",
            created_at: Date = "createdAt",
        }
    }
}

record! {
    /// A room (`rocketchat_room`).
    Room ("room") {
        required { id: String = "_id", kind: RoomKind = "t" }
        optional {
            name: String = "name",
            fname: String = "fname",
            owner: UserRef = "u",
            users_count: f64 = "usersCount",
            messages_count: f64 = "msgs",
            read_only: bool = "ro",
            archived: bool = "archived",
            default: bool = "default",
            topic: String = "topic",
            team_id: String = "teamId",
            team_main: bool = "teamMain",
            last_message_at: Date = "lm",
            updated_at: Date = "_updatedAt",
        }
    }
}

record! {
    /// A user's membership of a room (`rocketchat_subscription`).
    Subscription ("subscription") {
        required { id: String = "_id", rid: String = "rid", user: UserRef = "u" }
        optional {
            kind: RoomKind = "t",
            name: String = "name",
            fname: String = "fname",
            open: bool = "open",
            alert: bool = "alert",
            unread: f64 = "unread",
            user_mentions: f64 = "userMentions",
            group_mentions: f64 = "groupMentions",
            favorite: bool = "f",
            roles: Vec<String> = "roles",
            last_seen: Date = "ls",
            updated_at: Date = "_updatedAt",
        }
    }
}

record! {
    /// A message (`rocketchat_message`).
    Message ("message") {
        required { id: String = "_id", rid: String = "rid", author: UserRef = "u" }
        optional {
            text: String = "msg",
            ts: Date = "ts",
            kind: MessageType = "t",
            thread: String = "tmid",
            edited_at: Date = "editedAt",
            edited_by: UserRef = "editedBy",
            pinned: bool = "pinned",
            updated_at: Date = "_updatedAt",
        }
    }
}

impl Message {
    /// A system message's kind written with a type comet does not know stays in `other`
    /// under `t`: this tells a user's message from any system message.
    pub fn is_system(&self) -> bool {
        self.kind.is_some() || self.other.contains_key("t")
    }
}

record! {
    /// A team (`rocketchat_team`).
    Team ("team") {
        required { id: String = "_id", name: String = "name" }
        optional {
            kind: f64 = "type",
            main_room: String = "roomId",
            created_by: UserRef = "createdBy",
            updated_at: Date = "_updatedAt",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Document {
        let json: serde_json::Value = serde_json::from_str(text).expect("test JSON");
        match Value::from_json(json).expect("test EJSON") {
            Value::Object(d) => d,
            other => panic!("not a document: {other:?}"),
        }
    }

    #[test]
    fn unknown_fields_and_odd_values_are_written_back_as_stored() {
        let stored = parse(
            r#"{"_id":"m1","rid":"r1","u":{"_id":"u1","username":"ann","avatarETag":"x"},
                "msg":"hi","ts":{"$date":1700000000000},"t":"some-app-event",
                "pinned":"not a bool","appData":{"k":[1,2]},"md":[{"type":"PARAGRAPH"}]}"#,
        );
        let message = Message::from_document(stored.clone()).expect("a message");
        assert_eq!(message.text.as_deref(), Some("hi"));
        assert_eq!(message.ts, Some(Date(1_700_000_000_000.0)));
        assert_eq!(message.author.username.as_deref(), Some("ann"));
        // An unknown type and a wrongly typed known field are kept, not dropped.
        assert_eq!(message.kind, None);
        assert!(message.is_system());
        assert_eq!(message.pinned, None);
        let written = message.to_document();
        let mut a: Vec<_> = stored.iter().collect();
        let mut b: Vec<_> = written.iter().collect();
        a.sort_by(|x, y| x.0.cmp(y.0));
        b.sort_by(|x, y| x.0.cmp(y.0));
        assert_eq!(a, b);
    }

    #[test]
    fn a_changed_field_is_written_and_the_rest_stays() {
        let stored = parse(
            r#"{"_id":"s1","rid":"r1","u":{"_id":"u1"},"t":"p","alert":false,"fromNewerVersion":7}"#,
        );
        let mut sub = Subscription::from_document(stored).expect("a subscription");
        assert_eq!(sub.kind, Some(RoomKind::PrivateGroup));
        sub.alert = Some(true);
        sub.unread = Some(3.0);
        let written = sub.to_document();
        assert_eq!(written.get("alert"), Some(&Value::Bool(true)));
        assert_eq!(written.get("unread"), Some(&Value::Number(3.0)));
        assert_eq!(written.get("fromNewerVersion"), Some(&Value::Number(7.0)));
        assert_eq!(written.get("t"), Some(&Value::from("p")));
    }

    #[test]
    fn a_document_without_a_required_field_is_no_record() {
        let err = Room::from_document(parse(r#"{"_id":"r1","name":"x"}"#)).unwrap_err();
        assert_eq!(
            err,
            RecordError {
                record: "room",
                field: "t"
            }
        );
        let err = Room::from_document(parse(r#"{"_id":"r1","t":"zz"}"#)).unwrap_err();
        assert_eq!(err.field, "t");
        assert!(User::from_document(parse(r#"{"_id":"u1","roles":["user"]}"#)).is_ok());
        assert!(Team::from_document(parse(r#"{"_id":"t1"}"#)).is_err());
    }

    #[test]
    fn enums_read_and_write_their_wire_forms() {
        for kind in [
            RoomKind::Channel,
            RoomKind::PrivateGroup,
            RoomKind::Direct,
            RoomKind::Livechat,
            RoomKind::Voip,
        ] {
            assert_eq!(RoomKind::parse(kind.letter()), Some(kind));
        }
        assert_eq!(RoomKind::parse("x"), None);
        assert!(RoomKind::Channel.is_group() && !RoomKind::Direct.is_group());
        assert_eq!(UserStatus::parse("busy"), Some(UserStatus::Busy));
        assert_eq!(UserStatus::Away.number(), 2);
        assert_eq!(MessageType::parse("uj"), Some(MessageType::UserJoined));
        assert_eq!(MessageType::RoleAdded.as_str(), "subscription-role-added");
    }
}
