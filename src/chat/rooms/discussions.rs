//! Discussions: a room started from another (its `prid`), titled by its `fname`, with the
//! parent told by a `discussion-created` message that carries the new room's id (`drid`).
//! A discussion of a public channel is public, of anything else private; its creator owns
//! it and the members named join it. It must not know about sessions or HTTP.

use super::{NewRoom, RoomKind, Rooms};
use crate::chat::call::Call;
use crate::chat::collections::{ROOMS, SUBSCRIPTIONS};
use crate::chat::records::MessageType;
use crate::chat::{client_error, not_allowed, text};
use crate::engine::build::now_ms;
use crate::engine::error::ServiceError;
use crate::model::Document;

/// Longest discussion title.
const MAX_TITLE: usize = 256;

/// A discussion to start.
pub struct NewDiscussion {
    /// The room it starts from.
    pub prid: String,
    pub title: String,
    /// Usernames of the members besides the creator.
    pub members: Vec<String>,
}

impl Rooms {
    /// `createDiscussion`: the new room as stored.
    pub async fn create_discussion(
        &self,
        call: &Call<'_>,
        new: NewDiscussion,
        discussions_enabled: bool,
    ) -> Result<Document, ServiceError> {
        if !discussions_enabled {
            return Err(client_error(
                "error-action-not-allowed",
                "You are not allowed to create a discussion",
            ));
        }
        let (me, user) = self.named_caller(call.user()).await?;
        let title = new.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > MAX_TITLE {
            return Err(client_error(
                "error-invalid-name",
                "Invalid discussion name",
            ));
        }
        let parent = self.room(&new.prid).await?;
        let parent = match parent {
            Some(room) if self.can_access(&room, Some(&me)).await? => room,
            _ => return Err(client_error("error-invalid-room", "Invalid room")),
        };
        if !self
            .permissions
            .may(&me, "start-discussion", Some(&new.prid))
            .await?
        {
            return Err(not_allowed());
        }
        let kind = if RoomKind::of(&parent) == Some(RoomKind::Channel) {
            RoomKind::Channel
        } else {
            RoomKind::PrivateGroup
        };
        let room = self
            .create(
                call,
                NewRoom {
                    kind,
                    name: crate::model::random::random_id(),
                    members: new.members,
                    read_only: false,
                    team_id: None,
                },
            )
            .await?;
        let rid = text(&room, "_id").unwrap_or_default().to_owned();
        let topic = text(&parent, "fname")
            .or_else(|| text(&parent, "name"))
            .unwrap_or_default();
        let now = serde_json::json!({"$date": now_ms()});
        self.write_update(
            call,
            ROOMS,
            serde_json::json!({"_id": rid}),
            serde_json::json!({"$set": {"prid": new.prid, "fname": title, "topic": topic, "_updatedAt": now}}),
            false,
        )
        .await?;
        self.write_update(
            call,
            SUBSCRIPTIONS,
            serde_json::json!({"rid": rid}),
            serde_json::json!({"$set": {"prid": new.prid, "fname": title, "_updatedAt": now}}),
            true,
        )
        .await?;
        self.system_message(
            call,
            &parent,
            MessageType::DiscussionCreated,
            &title,
            &user,
            serde_json::json!({"drid": rid}),
        )
        .await?;
        Ok(self.room(&rid).await?.unwrap_or(room))
    }
}
