//! Finding people and rooms by name: Rocket.Chat's `spotlight` (the quick search of the
//! room list and the mention pop-up) and `directory` (the paged lists of channels, users
//! and teams).
//!
//! The text a client types is matched as literal text (escaped, case insensitive), never
//! as a pattern it controls. A room is found only when the caller may see it: a public
//! channel (with `view-c-room`), or a room the caller is subscribed to. A user is found
//! only when active, and shows only the fields any signed-in user may see.

use super::Rooms;
use crate::chat::collections::{ROOMS, SUBSCRIPTIONS, USERS};
use crate::chat::{literal_pattern, text};
use crate::engine::error::ServiceError;
use crate::model::{Document, Value};

/// Most results one spotlight kind gives.
const SPOTLIGHT_LIMIT: usize = 10;
/// Most results a directory counts.
const DIRECTORY_LIMIT: usize = 5_000;
/// Longest search text.
const MAX_TEXT: usize = 256;

/// The fields of a user the directory and spotlight show.
const USER_FIELDS: &[&str] = &[
    "_id",
    "username",
    "name",
    "nickname",
    "status",
    "statusText",
    "avatarETag",
    "createdAt",
    "bio",
];
/// The fields of a room they show.
const ROOM_FIELDS: &[&str] = &[
    "_id",
    "name",
    "fname",
    "t",
    "usersCount",
    "ts",
    "topic",
    "description",
    "default",
    "featured",
    "teamMain",
    "teamId",
    "archived",
    "lastMessage",
    "avatarETag",
    "prid",
];

/// Which list the directory gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectoryKind {
    Channels,
    Users,
    Teams,
}

/// What spotlight found.
pub struct Spotlight {
    pub users: Vec<Document>,
    pub rooms: Vec<Document>,
}

fn pick(doc: &Document, fields: &[&str]) -> Document {
    let mut out = Document::default();
    for k in fields {
        if let Some(v) = doc.get(*k) {
            out.insert((*k).into(), v.clone());
        }
    }
    out
}

fn contains(text_typed: &str) -> Result<serde_json::Value, ServiceError> {
    if text_typed.chars().count() > MAX_TEXT {
        return Err(crate::chat::client_error(
            "error-invalid-search",
            "The search text is too long",
        ));
    }
    Ok(serde_json::json!({"$regex": literal_pattern(text_typed.trim()), "$options": "i"}))
}

impl Rooms {
    /// Active users whose username or name holds `typed`, `exclude` left out, by username.
    async fn users_named(
        &self,
        typed: &str,
        exclude: &[String],
        limit: usize,
    ) -> Result<Vec<Document>, ServiceError> {
        let pattern = contains(typed)?;
        let mut users = self
            .find(
                USERS,
                serde_json::json!({
                    "active": {"$ne": false}, "username": {"$exists": true, "$nin": exclude},
                    "$or": [{"username": pattern.clone()}, {"name": pattern}],
                }),
                Some(limit),
            )
            .await?;
        users.sort_by(|a, b| text(a, "username").cmp(&text(b, "username")));
        Ok(users.iter().map(|u| pick(u, USER_FIELDS)).collect())
    }

    /// Rooms named like `typed` that `caller` may see: public channels, and the rooms the
    /// caller is subscribed to; `kinds` limits the room types.
    async fn rooms_named(
        &self,
        caller: &str,
        typed: &str,
        kinds: &[&str],
        limit: usize,
    ) -> Result<Vec<Document>, ServiceError> {
        let pattern = contains(typed)?;
        let may_see_public = self
            .permissions
            .has_permission(Some(caller), "view-c-room", None)
            .await?;
        let mut found: Vec<Document> = Vec::new();
        if may_see_public && kinds.contains(&"c") {
            for room in self
                .find(ROOMS, serde_json::json!({"t": "c", "$or": [{"name": pattern.clone()}, {"fname": pattern.clone()}]}), Some(limit))
                .await?
            {
                if self.team_allows(&room, Some(caller)).await? {
                    found.push(room);
                }
            }
        }
        let mine = self
            .find(
                SUBSCRIPTIONS,
                serde_json::json!({"u._id": caller, "t": {"$in": kinds}, "$or": [{"name": pattern.clone()}, {"fname": pattern}]}),
                Some(limit),
            )
            .await?;
        for sub in mine {
            let Some(rid) = text(&sub, "rid") else {
                continue;
            };
            if found.iter().any(|r| text(r, "_id") == Some(rid)) {
                continue;
            }
            if let Some(room) = self.room(rid).await? {
                found.push(room);
            }
        }
        found.sort_by(|a, b| text(a, "name").cmp(&text(b, "name")));
        found.truncate(limit);
        Ok(found.iter().map(|r| pick(r, ROOM_FIELDS)).collect())
    }

    /// `spotlight`: users (without `exclude`) and rooms named like `typed`.
    pub async fn spotlight(
        &self,
        caller: Option<&str>,
        typed: &str,
        exclude: &[String],
        users: bool,
        rooms: bool,
    ) -> Result<Spotlight, ServiceError> {
        let (me, _) = self.named_caller(caller).await?;
        Ok(Spotlight {
            users: if users {
                self.users_named(typed, exclude, SPOTLIGHT_LIMIT).await?
            } else {
                Vec::new()
            },
            rooms: if rooms {
                self.rooms_named(&me, typed, &["c", "p"], SPOTLIGHT_LIMIT)
                    .await?
            } else {
                Vec::new()
            },
        })
    }

    /// `directory`: every channel, user or team named like `typed` that the caller may
    /// see (up to [`DIRECTORY_LIMIT`]), sorted by `sort_key` (`name`, `username`,
    /// `usersCount`, `createdAt`, `ts`).
    pub async fn directory(
        &self,
        caller: Option<&str>,
        kind: DirectoryKind,
        typed: &str,
        sort_key: Option<(&str, bool)>,
    ) -> Result<Vec<Document>, ServiceError> {
        let (me, _) = self.named_caller(caller).await?;
        let mut found = match kind {
            DirectoryKind::Users => self.users_named(typed, &[], DIRECTORY_LIMIT).await?,
            DirectoryKind::Channels => {
                let mut rooms = self
                    .rooms_named(&me, typed, &["c", "p"], DIRECTORY_LIMIT)
                    .await?;
                rooms.retain(|r| r.get("teamMain") != Some(&Value::Bool(true)));
                rooms
            }
            DirectoryKind::Teams => {
                let mut rooms = self
                    .rooms_named(&me, typed, &["c", "p"], DIRECTORY_LIMIT)
                    .await?;
                rooms.retain(|r| r.get("teamMain") == Some(&Value::Bool(true)));
                rooms
            }
        };
        if let Some((key, descending)) = sort_key {
            found.sort_by(|a, b| {
                let order = match (a.get(key), b.get(key)) {
                    (Some(Value::Number(x)), Some(Value::Number(y))) => {
                        x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
                    }
                    (Some(Value::Date(x)), Some(Value::Date(y))) => {
                        x.partial_cmp(y).unwrap_or(std::cmp::Ordering::Equal)
                    }
                    (x, y) => x
                        .and_then(Value::as_str)
                        .map(str::to_lowercase)
                        .cmp(&y.and_then(Value::as_str).map(str::to_lowercase)),
                };
                if descending {
                    order.reverse()
                } else {
                    order
                }
            });
        }
        Ok(found)
    }
}
