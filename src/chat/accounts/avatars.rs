//! Users' own avatars: an image a user gives (Rocket.Chat's `setAvatarFromService` with a
//! data URI), kept in `comet_avatars` beside the user until the upload service gives files
//! a storage of their own, and served at `/avatar/<username>` instead of the initials.
//!
//! The type is decided from the bytes, never from what the client claims: PNG, JPEG, GIF
//! or WebP only (an SVG can carry script and is refused), at most [`MAX_AVATAR_BYTES`].
//! A user changes only their own avatar, and only while `Accounts_AllowUserAvatarChange`
//! allows it. It must not know about HTTP.

use super::Accounts;
use crate::chat::call::Call;
use crate::chat::collections::{AVATARS, USERS};
use crate::chat::media;
use crate::engine::build::find_one;
use crate::engine::build::{now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::{MeteorError, Value};
use crate::storage::{RemoveOptions, UpdateOptions};
use base64::Engine as _;

/// The largest avatar kept.
pub const MAX_AVATAR_BYTES: usize = 1024 * 1024;

/// Whose avatar an administrator sets.
#[derive(Clone, Debug)]
pub enum AvatarOwner {
    Id(String),
    Username(String),
}

/// A stored avatar.
pub struct Avatar {
    pub content_type: String,
    pub bytes: Vec<u8>,
    pub etag: String,
}

fn refused(error: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(error, reason))
}

impl Accounts {
    fn may_change_avatar(&self) -> Result<(), ServiceError> {
        if self.settings.flag("Accounts_AllowUserAvatarChange", true) {
            Ok(())
        } else {
            Err(refused(
                "error-not-allowed",
                "Changing the avatar is not allowed",
            ))
        }
    }

    /// `setAvatarFromService(dataURI, contentType, service)`: the caller's avatar from an
    /// image given as a data URI. `initials` goes back to the initials; `url` fetches the
    /// picture from the URL given (bounded, public addresses only: `media::remote`).
    pub async fn set_avatar_from_service(
        &self,
        call: &Call<'_>,
        data_uri: &str,
        service: &str,
    ) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        self.may_change_avatar()?;
        match service {
            "initials" => return self.reset_avatar(call).await,
            "url" => {
                let bytes =
                    crate::chat::media::remote::fetch(data_uri.trim(), MAX_AVATAR_BYTES).await?;
                return self.store_avatar(call, uid, bytes, "url").await;
            }
            _ => {}
        }
        let bytes = media::data_uri_bytes(data_uri, MAX_AVATAR_BYTES)?;
        let origin = if service.is_empty() {
            "upload"
        } else {
            service
        };
        self.store_avatar(call, uid, bytes, origin).await
    }

    /// `users.setAvatar` with an image: the caller's avatar, or the avatar of the user
    /// `owner` names when the caller `may_edit_others` (`edit-other-user-avatar`, which the
    /// caller's layer checks).
    pub async fn set_avatar_image(
        &self,
        call: &Call<'_>,
        owner: Option<AvatarOwner>,
        may_edit_others: bool,
        bytes: Vec<u8>,
        origin: &str,
    ) -> Result<(), ServiceError> {
        let me = call.require_user()?;
        let uid = match owner {
            None => me.to_owned(),
            Some(owner) => {
                let filter = match &owner {
                    AvatarOwner::Id(id) => serde_json::json!({"_id": id}),
                    AvatarOwner::Username(name) => serde_json::json!({"username": name}),
                };
                let found = find_one(&*self.store, USERS, filter)
                    .await?
                    .and_then(|u| u.get("_id").and_then(Value::as_str).map(str::to_owned))
                    .ok_or_else(|| refused("error-invalid-user", "Invalid user"))?;
                if found != me && !may_edit_others {
                    return Err(refused("error-not-allowed", "Not allowed"));
                }
                found
            }
        };
        if uid == me {
            self.may_change_avatar()?;
        }
        self.store_avatar(call, &uid, bytes, origin).await
    }

    /// Keeps `bytes` as `uid`'s avatar: a raster image (decided from the bytes) at most
    /// [`MAX_AVATAR_BYTES`], its metadata (where a photo was taken) removed.
    async fn store_avatar(
        &self,
        call: &Call<'_>,
        uid: &str,
        bytes: Vec<u8>,
        origin: &str,
    ) -> Result<(), ServiceError> {
        if bytes.len() > MAX_AVATAR_BYTES {
            return Err(refused("error-file-too-large", "The avatar is too large"));
        }
        let content_type = media::image_type(&bytes).ok_or_else(|| {
            refused(
                "error-invalid-image",
                "The avatar must be a PNG, JPEG, GIF or WebP image",
            )
        })?;
        let bytes = match media::images::format_of(content_type) {
            Some(format) => {
                media::images::checked_dimensions(&bytes, format)
                    .map_err(|e| refused("error-invalid-image", &e.to_string()))?;
                media::images::strip_metadata(&bytes, format).unwrap_or(bytes)
            }
            None => bytes,
        };
        let etag = crate::model::random::random_id();
        let now = now_ms();
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let ack = self
            .store
            .update(
                AVATARS,
                selector(serde_json::json!({"_id": uid}))?,
                update(serde_json::json!({"$set": {
                    "contentType": content_type, "etag": etag,
                    "data": {"$binary": encoded}, "_updatedAt": {"$date": now},
                }}))?,
                UpdateOptions {
                    upsert: true,
                    ..UpdateOptions::default()
                },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        let ack = self
            .update_user(
                uid,
                serde_json::json!({"$set": {"avatarOrigin": origin, "avatarETag": etag, "_updatedAt": {"$date": now}}}),
            )
            .await?;
        call.record_write(ack.seq);
        Ok(())
    }

    /// `resetAvatar`: the caller's avatar is the initials again.
    pub async fn reset_avatar(&self, call: &Call<'_>) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        self.may_change_avatar()?;
        let ack = self
            .store
            .remove(
                AVATARS,
                selector(serde_json::json!({"_id": uid}))?,
                RemoveOptions { multi: false },
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        call.record_write(ack.seq);
        let ack = self
            .update_user(
                uid,
                serde_json::json!({"$unset": {"avatarOrigin": 1, "avatarETag": 1}, "$set": {"_updatedAt": {"$date": now_ms()}}}),
            )
            .await?;
        call.record_write(ack.seq);
        Ok(())
    }

    /// The avatar `username` gave, if any.
    pub async fn avatar_of(&self, username: &str) -> Result<Option<Avatar>, ServiceError> {
        let Some(user) = find_one(
            &*self.store,
            USERS,
            serde_json::json!({"username": username}),
        )
        .await?
        else {
            return Ok(None);
        };
        let Some(uid) = user.get("_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        self.stored_avatar(uid).await
    }

    /// The avatar kept under `key` (a user's id, or `room:<rid>` for a room's).
    pub async fn stored_avatar(&self, key: &str) -> Result<Option<Avatar>, ServiceError> {
        let Some(stored) = find_one(&*self.store, AVATARS, serde_json::json!({"_id": key})).await?
        else {
            return Ok(None);
        };
        let (Some(Value::Binary { bytes, .. }), Some(etag)) = (
            stored.get("data"),
            stored.get("etag").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        // Served with the type its bytes have, whatever was stored beside them.
        let Some(content_type) = media::image_type(bytes) else {
            return Ok(None);
        };
        Ok(Some(Avatar {
            content_type: content_type.to_owned(),
            bytes: bytes.clone(),
            etag: etag.to_owned(),
        }))
    }
}
