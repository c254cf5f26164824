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
use crate::engine::build::{now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::{MeteorError, Value};
use crate::storage::{FindOptions, RemoveOptions, UpdateOptions};
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

/// The image type of `bytes`, from their first bytes; `None` for anything else.
pub fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a]) {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// The bytes of a `data:<type>;base64,<data>` URI, bounded before decoding.
fn data_uri_bytes(uri: &str) -> Result<Vec<u8>, ServiceError> {
    let invalid = || {
        refused(
            "error-invalid-image",
            "The avatar must be a base64 data URI of an image",
        )
    };
    let rest = uri.strip_prefix("data:").ok_or_else(invalid)?;
    let (meta, data) = rest.split_once(',').ok_or_else(invalid)?;
    if !meta.ends_with(";base64") {
        return Err(invalid());
    }
    if data.len() > MAX_AVATAR_BYTES.div_ceil(3) * 4 + 4 {
        return Err(refused("error-file-too-large", "The avatar is too large"));
    }
    base64::engine::general_purpose::STANDARD
        .decode(data.trim())
        .map_err(|_| invalid())
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
    /// image given as a data URI. `initials` goes back to the initials; `url` (a picture
    /// fetched from elsewhere) waits for the upload service's bounded fetcher.
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
                return Err(refused(
                    "error-avatar-url-handling",
                    "Avatars from a URL are not supported yet",
                ))
            }
            _ => {}
        }
        let bytes = data_uri_bytes(data_uri)?;
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
                let found = self
                    .store
                    .find(
                        USERS,
                        FindOptions {
                            selector: selector(filter)?,
                            limit: Some(1),
                            ..FindOptions::default()
                        },
                    )
                    .await
                    .map_err(|e| ServiceError::from_store(&e))?
                    .pop()
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
        let content_type = image_type(&bytes).ok_or_else(|| {
            refused(
                "error-invalid-image",
                "The avatar must be a PNG, JPEG, GIF or WebP image",
            )
        })?;
        let bytes = match crate::chat::uploads::images::format_of(content_type) {
            Some(format) => {
                crate::chat::uploads::images::checked_dimensions(&bytes, format)
                    .map_err(|e| refused("error-invalid-image", &e.to_string()))?;
                crate::chat::uploads::images::strip_metadata(&bytes, format).unwrap_or(bytes)
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
        let find = |collection: &'static str, filter: serde_json::Value| async move {
            self.store
                .find(
                    collection,
                    FindOptions {
                        selector: selector(filter)?,
                        limit: Some(1),
                        ..FindOptions::default()
                    },
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))
        };
        let Some(user) = find(USERS, serde_json::json!({"username": username}))
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let Some(uid) = user.get("_id").and_then(Value::as_str) else {
            return Ok(None);
        };
        let Some(stored) = find(AVATARS, serde_json::json!({"_id": uid})).await?.pop() else {
            return Ok(None);
        };
        let (Some(Value::Binary { bytes, .. }), Some(etag)) = (
            stored.get("data"),
            stored.get("etag").and_then(Value::as_str),
        ) else {
            return Ok(None);
        };
        // Served with the type its bytes have, whatever was stored beside them.
        let Some(content_type) = image_type(bytes) else {
            return Ok(None);
        };
        Ok(Some(Avatar {
            content_type: content_type.to_owned(),
            bytes: bytes.clone(),
            etag: etag.to_owned(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_comes_from_the_bytes_and_only_raster_images_pass() {
        assert_eq!(
            image_type(&[0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0]),
            Some("image/png")
        );
        assert_eq!(image_type(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(image_type(b"GIF89a...."), Some("image/gif"));
        assert_eq!(image_type(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(
            image_type(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script/></svg>"),
            None
        );
        assert_eq!(image_type(b""), None);
    }

    #[test]
    fn a_data_uri_is_decoded_and_anything_else_refused() {
        assert_eq!(
            data_uri_bytes("data:image/png;base64,AAEC").ok(),
            Some(vec![0, 1, 2])
        );
        assert!(data_uri_bytes("https://example.com/a.png").is_err());
        assert!(data_uri_bytes("data:image/png,plain").is_err());
        assert!(data_uri_bytes("data:image/png;base64,!!!").is_err());
        let huge = format!("data:image/png;base64,{}", "A".repeat(MAX_AVATAR_BYTES * 2));
        assert!(data_uri_bytes(&huge).is_err());
    }
}
