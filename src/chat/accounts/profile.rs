//! A user's own profile: Rocket.Chat's `users.updateOwnBasicInfo` (name, username,
//! e-mail, status text, nickname, bio, password) and `setUserPassword`. Each change is
//! allowed by its `Accounts_Allow*Change` setting; a new password or e-mail needs the
//! current password when the user has one. It must not know about HTTP.

use super::{secrets, server_busy, str_at, Accounts};
use crate::chat::call::Call;
use crate::engine::build::{now_ms, selector};
use crate::engine::error::ServiceError;
use crate::model::{MeteorError, Value};

/// Longest name, nickname or status text.
const MAX_TEXT: usize = 256;
/// Longest bio.
const MAX_BIO: usize = 1024;

/// What a user changes of their own profile; `None` leaves a field as it is.
#[derive(Default)]
pub struct OwnChanges {
    pub name: Option<String>,
    pub username: Option<String>,
    pub email: Option<String>,
    pub status_text: Option<String>,
    pub nickname: Option<String>,
    pub bio: Option<String>,
    /// SHA-256 hex digests, as clients send passwords.
    pub new_password: Option<String>,
    pub current_password: Option<String>,
}

fn refused(error: &str, reason: &str) -> ServiceError {
    ServiceError::Client(MeteorError::new(error, reason))
}

fn bounded(text: &str, most: usize, what: &str) -> Result<String, ServiceError> {
    let text = text.trim();
    if text.chars().count() > most || text.chars().any(char::is_control) {
        return Err(refused("error-invalid-field", &format!("Invalid {what}")));
    }
    Ok(text.to_owned())
}

impl Accounts {
    fn allows(&self, setting: &str) -> bool {
        self.settings.flag(setting, true)
    }

    async fn own_record(&self, uid: &str) -> Result<crate::model::Document, ServiceError> {
        self.find_users(selector(serde_json::json!({"_id": uid}))?, 1)
            .await?
            .pop()
            .ok_or_else(|| refused("error-invalid-user", "Invalid user"))
    }

    /// Checks the caller's current password (a user without one passes).
    async fn check_current_password(
        &self,
        user: &crate::model::Document,
        given: Option<&str>,
    ) -> Result<(), ServiceError> {
        let Some(Value::String(hash)) = str_at(user, &["services", "password", "bcrypt"]) else {
            return Ok(());
        };
        let Some(given) = given else {
            return Err(refused("error-invalid-password", "Invalid password"));
        };
        if secrets::verify_password(given.to_owned(), hash.clone())
            .await
            .map_err(server_busy)?
        {
            Ok(())
        } else {
            Err(refused("error-invalid-password", "Invalid password"))
        }
    }

    /// Applies `changes` to the caller's own profile.
    pub async fn update_own(
        &self,
        call: &Call<'_>,
        changes: OwnChanges,
    ) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        let user = self.own_record(uid).await?;
        let mut set = serde_json::Map::new();
        let change = |setting: &str, what: &str| -> Result<(), ServiceError> {
            if self.allows(setting) {
                Ok(())
            } else {
                Err(refused(
                    "error-action-not-allowed",
                    &format!("Editing {what} is not allowed"),
                ))
            }
        };
        if let Some(name) = &changes.name {
            change("Accounts_AllowRealNameChange", "user real name")?;
            set.insert("name".into(), bounded(name, MAX_TEXT, "name")?.into());
        }
        if let Some(text) = &changes.status_text {
            change(
                "Accounts_AllowUserStatusMessageChange",
                "user status message",
            )?;
            set.insert(
                "statusText".into(),
                bounded(text, MAX_TEXT, "status text")?.into(),
            );
        }
        if let Some(nickname) = &changes.nickname {
            change("Accounts_AllowUserProfileChange", "user profile")?;
            set.insert(
                "nickname".into(),
                bounded(nickname, MAX_TEXT, "nickname")?.into(),
            );
        }
        if let Some(bio) = &changes.bio {
            change("Accounts_AllowUserProfileChange", "user profile")?;
            set.insert("bio".into(), bounded(bio, MAX_BIO, "bio")?.into());
        }
        let new_email = match &changes.email {
            Some(email) => {
                let email = email.trim().to_lowercase();
                let current = str_at(&user, &["emails"])
                    .and_then(|e| match e {
                        Value::Array(list) => list.first().cloned(),
                        _ => None,
                    })
                    .and_then(|e| e.as_object().and_then(|o| o.get("address").cloned()))
                    .and_then(|a| a.as_str().map(str::to_lowercase));
                if current.as_deref() == Some(email.as_str()) {
                    None
                } else {
                    change("Accounts_AllowEmailChange", "user email")?;
                    if !super::valid_email(&email) {
                        return Err(refused("error-invalid-email", "Invalid email"));
                    }
                    Some((email, current))
                }
            }
            None => None,
        };
        if let Some(digest) = &changes.new_password {
            change("Accounts_AllowPasswordChange", "user password")?;
            if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(refused("error-invalid-password", "Invalid password"));
            }
        }
        if changes.new_password.is_some() || new_email.is_some() {
            self.check_current_password(&user, changes.current_password.as_deref())
                .await?;
        }
        if let Some(username) = &changes.username {
            let unchanged = str_at(&user, &["username"]).and_then(Value::as_str) == Some(username);
            if !unchanged {
                change("Accounts_AllowUsernameChange", "username")?;
                self.set_username(call, uid, username).await?;
            }
        }
        if let Some((email, old)) = &new_email {
            if !self.claim("email", email, uid).await? {
                return Err(refused(
                    "error-field-unavailable",
                    &format!("{email} is already in use :("),
                ));
            }
            set.insert(
                "emails".into(),
                serde_json::json!([{"address": email, "verified": false}]),
            );
            if let Some(old) = old {
                self.release("email", old).await;
            }
        }
        if let Some(digest) = &changes.new_password {
            let hash = secrets::hash_password(digest.clone(), self.config.bcrypt_cost)
                .await
                .map_err(server_busy)?;
            set.insert("services.password.bcrypt".into(), hash.into());
            set.insert("requirePasswordChange".into(), false.into());
        }
        if set.is_empty() {
            return Ok(());
        }
        set.insert("_updatedAt".into(), serde_json::json!({"$date": now_ms()}));
        let ack = self
            .update_user(uid, serde_json::json!({"$set": set}))
            .await?;
        call.record_write(ack.seq);
        Ok(())
    }

    /// `setUserPassword`: the caller's new password, allowed only while the account must
    /// change its password (`requirePasswordChange`).
    pub async fn set_required_password(
        &self,
        call: &Call<'_>,
        plain: &str,
    ) -> Result<(), ServiceError> {
        let uid = call.require_user()?;
        let user = self.own_record(uid).await?;
        if str_at(&user, &["requirePasswordChange"]) != Some(&Value::Bool(true)) {
            return Err(refused("error-not-allowed", "Not allowed"));
        }
        if plain.is_empty() || plain.len() > 1024 {
            return Err(refused("error-invalid-password", "Invalid password"));
        }
        let hash = secrets::hash_password(secrets::password_digest(plain), self.config.bcrypt_cost)
            .await
            .map_err(server_busy)?;
        let ack = self
            .update_user(
                uid,
                serde_json::json!({"$set": {
                    "services.password.bcrypt": hash, "requirePasswordChange": false,
                    "_updatedAt": {"$date": now_ms()},
                }}),
            )
            .await?;
        call.record_write(ack.seq);
        Ok(())
    }
}
