//! The DDP face of accounts: Meteor's `login`, `logout`, `getNewToken`,
//! `logoutOtherClients`, `createUser`, Rocket.Chat's `registerUser`, and the universal
//! publication of the session's own user. Each reads its parameters with `check()`
//! semantics and calls the typed API; nothing here decides who may do what.

use super::{secrets, Accounts, NewUser, UserSelector, PUBLIC_USER_FIELDS, TOKEN_ATTACHMENT};
use crate::chat::call::Call;

use crate::chat::collections::USERS;
use crate::engine::args::{check_all, Pattern};
use crate::engine::error::ServiceError;
use crate::engine::registry::{MethodContext, Publish, Registry};
use crate::model::{Document, MeteorError, Value};
use crate::observe::{Cursor, ObserveHub};
use std::sync::Arc;

/// The longest username or address a login names (anything longer matches no one).
const MAX_NAME: usize = 256;

fn user_pattern() -> Pattern {
    Pattern::OneOf(vec![
        Pattern::string_up_to(MAX_NAME),
        Pattern::object(vec![("username", Pattern::string_up_to(MAX_NAME))]),
        Pattern::object(vec![("email", Pattern::string_up_to(MAX_NAME))]),
        Pattern::object(vec![("id", Pattern::string_up_to(MAX_NAME))]),
    ])
}

fn password_pattern() -> Pattern {
    Pattern::OneOf(vec![
        Pattern::string_up_to(256),
        Pattern::object(vec![
            ("digest", Pattern::string_up_to(64)),
            ("algorithm", Pattern::Literal(Value::from("sha-256"))),
        ]),
    ])
}

/// `login`'s one parameter: a password login or a resume.
fn login_pattern() -> Pattern {
    Pattern::OneOf(vec![
        Pattern::object_including(vec![("resume", Pattern::string_up_to(MAX_NAME))]),
        Pattern::object_including(vec![
            ("user", user_pattern()),
            ("password", password_pattern()),
        ]),
    ])
}

/// Who a login names (a bare string is a username, or an address when it has `@`).
pub fn user_selector(user: &Value) -> Option<UserSelector> {
    match user {
        Value::String(s) if s.contains('@') => Some(UserSelector::Email(s.clone())),
        Value::String(s) => Some(UserSelector::Username(s.clone())),
        Value::Object(d) => {
            let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
            text("username")
                .map(UserSelector::Username)
                .or_else(|| text("email").map(UserSelector::Email))
                .or_else(|| text("id").map(UserSelector::Id))
        }
        _ => None,
    }
}

/// The digest of a password given as Meteor's `{digest, algorithm}` or as plain text.
pub fn password_digest(password: &Value) -> Result<String, ServiceError> {
    match password {
        Value::String(plain) => Ok(secrets::password_digest(plain)),
        Value::Object(d) => match d.get("digest").and_then(Value::as_str) {
            Some(digest) if secrets::is_digest(digest) => Ok(digest.to_ascii_lowercase()),
            _ => Err(ServiceError::match_failed()),
        },
        _ => Err(ServiceError::match_failed()),
    }
}

/// Logs the calling connection in as the result's user.
fn bind(ctx: &MethodContext, result: &super::LoginResult) {
    if let Some(connection) = ctx.connection() {
        connection.set_attachment(TOKEN_ATTACHMENT, Some(result.token_hash.clone()));
    }
    ctx.set_user_id(Some(result.id.clone()));
}

/// The login a method parameter asks for, run through the typed API; a password attempt is
/// refused while its address or user is blocked, and a wrong one counts against both.
pub async fn login(
    accounts: &Accounts,
    call: &Call<'_>,
    request: &Value,
) -> Result<super::LoginResult, ServiceError> {
    login_pattern().check(Some(request))?;
    let Value::Object(fields) = request else {
        return Err(ServiceError::match_failed());
    };
    if let Some(Value::String(token)) = fields.get("resume") {
        return accounts.login_with_resume(token).await;
    }
    let (Some(user), Some(password)) = (fields.get("user"), fields.get("password")) else {
        return Err(ServiceError::Client(MeteorError::new(
            400,
            "Unrecognized options for login request",
        )));
    };
    let who = user_selector(user).ok_or_else(ServiceError::match_failed)?;
    let digest = password_digest(password)?;
    accounts.password_login(call, &who, &digest).await
}

fn logged_in(ctx: &MethodContext) -> Result<(String, String), ServiceError> {
    let user = ctx
        .user_id
        .clone()
        .ok_or_else(|| ServiceError::Client(MeteorError::new(403, "You are not logged in.")))?;
    let token = ctx
        .connection()
        .and_then(|c| c.attachment(TOKEN_ATTACHMENT))
        .ok_or_else(|| ServiceError::Client(MeteorError::new(403, "You are not logged in.")))?;
    Ok((user, token))
}

/// The new user a `createUser` parameter describes (Meteor's: a username or an email).
fn new_user(options: &Value) -> Result<NewUser, ServiceError> {
    let Value::Object(d) = options else {
        return Err(ServiceError::match_failed());
    };
    let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
    let password_digest = match d.get("password") {
        Some(p) => Some(password_digest(p)?),
        None => None,
    };
    Ok(NewUser {
        username: text("username"),
        email: text("email"),
        password_digest,
        name: text("name"),
        roles: Vec::new(),
    })
}

/// `registerUser`'s form, as Rocket.Chat reads it: an address, a password (`pass`) and a
/// name; a `username` in it is ignored (the user picks one with `setUsername`).
fn registration_form(form: &Value) -> Result<NewUser, ServiceError> {
    let Value::Object(d) = form else {
        return Err(ServiceError::match_failed());
    };
    let text = |k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
    let email = text("email").ok_or_else(|| {
        ServiceError::Client(MeteorError::new("error-invalid-email", "Invalid email"))
    })?;
    let pass = d
        .get("pass")
        .ok_or_else(|| ServiceError::Client(MeteorError::new(400, "Match failed")))?;
    Ok(NewUser {
        username: None,
        email: Some(email),
        password_digest: Some(password_digest(pass)?),
        name: text("name"),
        roles: Vec::new(),
    })
}

/// Registers the account methods and the user's own document on `users`.
pub fn register(registry: &mut Registry, accounts: Arc<Accounts>, observe: Arc<ObserveHub>) {
    // Rocket.Chat's web client asks this before it shows the form of a secret link.
    let a = accounts.clone();
    registry.method("checkRegistrationSecretURL", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[Pattern::string_up_to(256)], &params)?;
            // Each guess counts as a login attempt, so the secret cannot be probed quickly.
            accounts
                .count_secret_guess(Some(&ctx.connection_id), ctx.client_address())
                .await?;
            let given = params[0].as_str().unwrap_or_default();
            Ok(Some(Value::Bool(accounts.is_registration_secret(given))))
        }
    });
    registry.method_of(
        "setUserPassword",
        &accounts,
        |accounts, ctx, params| async move {
            check_all(&[Pattern::string_up_to(1024)], &params)?;
            let plain = params[0].as_str().unwrap_or_default();
            accounts
                .set_required_password(&crate::chat::call::Call::method(&ctx), plain)
                .await?;
            Ok(None)
        },
    );
    registry.method_of(
        "setAvatarFromService",
        &accounts,
        |accounts, ctx, params| async move {
            check_all(
                &[
                    Pattern::string_up_to(2 * 1024 * 1024),
                    Pattern::maybe(Pattern::string_up_to(128)),
                    Pattern::maybe(Pattern::string_up_to(64)),
                    Pattern::maybe(Pattern::string_up_to(64)),
                ],
                &params,
            )?;
            let call = crate::chat::call::Call::method(&ctx);
            // Another user's avatar is an administrator's tool comet does not offer yet.
            // An empty target is the SDK's second-factor slot, not a user.
            if let Some(target) = params
                .get(3)
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                if Some(target) != call.user() {
                    return Err(crate::chat::not_allowed());
                }
            }
            let data = params[0].as_str().unwrap_or_default();
            let service = params.get(2).and_then(Value::as_str).unwrap_or("upload");
            accounts
                .set_avatar_from_service(&call, data, service)
                .await?;
            Ok(None)
        },
    );
    registry.method_of(
        "resetAvatar",
        &accounts,
        |accounts, ctx, params| async move {
            check_all(&[Pattern::maybe(Pattern::string_up_to(64))], &params)?;
            let call = crate::chat::call::Call::method(&ctx);
            if let Some(target) = params
                .first()
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
            {
                if Some(target) != call.user() {
                    return Err(crate::chat::not_allowed());
                }
            }
            accounts.reset_avatar(&call).await?;
            Ok(None)
        },
    );
    registry.method_of(
        "setUserPreferences",
        &accounts,
        |accounts, ctx, params| async move {
            check_all(&[Pattern::OBJECT], &params)?;
            let Some(Value::Object(changes)) = params.first() else {
                return Err(ServiceError::match_failed());
            };
            let call = crate::chat::call::Call::method(&ctx);
            let uid = call.require_user()?;
            accounts.set_preferences(&call, uid, changes).await?;
            Ok(Some(Value::Bool(true)))
        },
    );
    let a = accounts.clone();
    registry.method("login", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[login_pattern()], &params)?;
            accounts.count_login_attempt(Some(&ctx.connection_id))?;
            let result = login(&accounts, &Call::method(&ctx), &params[0]).await?;
            bind(&ctx, &result);
            Ok(Some(result.to_value(true)))
        }
    });
    let a = accounts.clone();
    registry.method("logout", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[], &params)?;
            if let Ok((user, token)) = logged_in(&ctx) {
                accounts
                    .remove_tokens(&Call::method(&ctx), &user, &token, false)
                    .await?;
            }
            if let Some(connection) = ctx.connection() {
                connection.set_attachment(TOKEN_ATTACHMENT, None);
            }
            ctx.set_user_id(None);
            Ok(None)
        }
    });
    let a = accounts.clone();
    registry.method("getNewToken", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[], &params)?;
            let (user, token) = logged_in(&ctx)?;
            let result = accounts
                .new_token(&Call::method(&ctx), &user, &token)
                .await?;
            bind(&ctx, &result);
            Ok(Some(result.to_value(false)))
        }
    });
    let a = accounts.clone();
    registry.method("logoutOtherClients", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[], &params)?;
            let (user, token) = logged_in(&ctx)?;
            accounts
                .remove_tokens(&Call::method(&ctx), &user, &token, true)
                .await?;
            let mut out = Document::default();
            out.insert("token".into(), Value::Null);
            Ok(Some(Value::Object(out)))
        }
    });
    // Registration has a rule of its own (`count_registration`); `login` and `createUser`
    // keep Meteor's, which the rules per method add to.
    registry.call_limits().has_own_limit("registerUser");
    for method in ["createUser", "registerUser"] {
        let a = accounts.clone();
        registry.method(method, move |ctx, params| {
            let accounts = a.clone();
            async move {
                check_all(&[Pattern::OBJECT], &params)?;
                // Only Rocket.Chat's registration form carries the secret of `Secret URL`.
                let secret = match (method, &params[0]) {
                    ("registerUser", Value::Object(form)) => {
                        form.get("secretURL").and_then(Value::as_str)
                    }
                    _ => None,
                };
                accounts.may_register(secret)?;
                accounts.count_login_attempt(Some(&ctx.connection_id))?;
                if method == "registerUser" {
                    accounts.count_registration(&ctx.connection_id)?;
                }
                let new = if method == "registerUser" {
                    registration_form(&params[0])?
                } else {
                    new_user(&params[0])?
                };
                let has_password = new.password_digest.is_some();
                let id = accounts.create_user(&Call::method(&ctx), new).await?;
                if method == "registerUser" || !has_password {
                    return Ok(Some(Value::from(id.as_str())));
                }
                let result = accounts.log_in_created(&Call::method(&ctx), &id).await?;
                bind(&ctx, &result);
                Ok(Some(result.to_value(true)))
            }
        });
    }
    let a = accounts.clone();
    registry.method("setUsername", move |ctx, params| {
        let accounts = a.clone();
        async move {
            check_all(&[Pattern::string_up_to(MAX_NAME)], &params)?;
            let Some(user) = ctx.user_id.clone() else {
                return Err(ServiceError::Client(MeteorError::new(
                    "error-invalid-user",
                    "Invalid user",
                )));
            };
            let name = params[0].as_str().unwrap_or_default().trim().to_owned();
            let set = accounts
                .set_username(&Call::method(&ctx), &user, &name)
                .await?;
            Ok(Some(Value::from(set.as_str())))
        }
    });
    registry.universal_publication("accounts.currentUser", move |sub, _params| {
        let observe = observe.clone();
        async move {
            let Some(user) = sub.user_id.clone() else {
                return Ok(Publish::Ready);
            };
            let mut selector = Document::default();
            selector.insert("_id".into(), Value::from(user.as_str()));
            let mut fields = Document::default();
            for f in PUBLIC_USER_FIELDS {
                fields.insert((*f).into(), Value::Number(1.0));
            }
            let cursor = Cursor::new(USERS, &selector, &Document::default(), 0, None, &fields)
                .map_err(|e| ServiceError::internal(e.0))?;
            crate::engine::publish::observe_into(&observe, cursor, sub)
                .await
                .map_err(|e| ServiceError::from_store(&e))
        }
    });
}
