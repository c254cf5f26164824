//! Rocket.Chat's account routes: `login`, `logout`, `me`, `users.register`, `users.info`.
//! Thin adapters: the same typed API and `check()` patterns as the DDP methods.

use super::json::to_json;
use super::{Caller, RestRequest, RestResponse, RestServices};
use crate::chat::accounts::{
    methods, Accounts, RegistrationRefused, UserSelector, PUBLIC_USER_FIELDS,
};
use crate::chat::call::Call;
use crate::engine::ServiceError;
use crate::model::{Document, Value};

/// The request body as EJSON, or the 400 that refuses it.
pub(super) fn body(request: &RestRequest) -> Result<Document, RestResponse> {
    let parsed: serde_json::Value = serde_json::from_slice(&request.body)
        .map_err(|_| RestResponse::failure(400, "The body is not JSON.", Some("invalid-body")))?;
    match Value::from_json(parsed) {
        Ok(Value::Object(d)) => Ok(d),
        _ => Err(RestResponse::failure(
            400,
            "The body must be a JSON object.",
            Some("invalid-body"),
        )),
    }
}

/// The query string's pairs, decoded, in order (a key may repeat: `ids[]=a&ids[]=b`).
pub(super) fn query_pairs(request: &RestRequest) -> Vec<(String, String)> {
    request
        .query
        .as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A user as a client may see it: `_id` and the public fields.
pub(super) fn public_user(user: &Document) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(id) = user.get("_id") {
        out.insert("_id".into(), to_json(id));
    }
    for field in PUBLIC_USER_FIELDS {
        if let Some(v) = user.get(*field) {
            out.insert((*field).into(), to_json(v));
        }
    }
    out.into()
}

fn unauthorized_login() -> RestResponse {
    RestResponse {
        status: 401,
        body: serde_json::json!({"status": "error", "error": "Unauthorized", "message": "Unauthorized"}),
        headers: Vec::new(),
    }
}

/// `POST /api/v1/login`: `{user | username | email, password}` or `{resume}`.
pub(super) async fn login(s: &RestServices, request: &RestRequest) -> RestResponse {
    let accounts = &s.accounts;
    let fields = match body(request) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    // The REST shapes, as the DDP `login` parameter they stand for.
    let mut ddp = Document::default();
    if let Some(resume) = fields.get("resume") {
        ddp.insert("resume".into(), resume.clone());
    } else {
        let user = match (
            fields.get("user"),
            fields.get("username"),
            fields.get("email"),
        ) {
            (Some(u), _, _) => u.clone(),
            (None, Some(name), _) => {
                let mut d = Document::default();
                d.insert("username".into(), name.clone());
                Value::Object(d)
            }
            (None, None, Some(address)) => {
                let mut d = Document::default();
                d.insert("email".into(), address.clone());
                Value::Object(d)
            }
            _ => Value::Null,
        };
        ddp.insert("user".into(), user);
        ddp.insert(
            "password".into(),
            fields.get("password").cloned().unwrap_or(Value::Null),
        );
    }
    let result = match methods::login(
        accounts,
        &Call::server().from_address(request.client_address),
        &Value::Object(ddp),
    )
    .await
    {
        Ok(r) => r,
        Err(ServiceError::Client(e)) if e.reason.as_deref() == Some("Match failed") => {
            return RestResponse::failure(400, "Match failed", Some("error-invalid-params"))
        }
        // Limits and lockouts say what they are, as on a socket; credentials that fail say
        // nothing more than 401.
        Err(ServiceError::Client(e))
            if e.error.to_string() == "too-many-requests"
                || e.error.to_string().starts_with("error-login-blocked") =>
        {
            return RestResponse::from_service(&ServiceError::Client(e))
        }
        Err(ServiceError::Client(_)) => return unauthorized_login(),
        Err(other) => return RestResponse::from_service(&other),
    };
    let me = match accounts
        .find_user(&UserSelector::Id(result.id.clone()))
        .await
    {
        Ok(Some(user)) => own_view(&user, site_url(s).as_deref()),
        Ok(None) => return unauthorized_login(),
        Err(err) => return RestResponse::from_service(&err),
    };
    RestResponse {
        status: 200,
        body: serde_json::json!({
            "status": "success",
            "data": {"userId": result.id, "authToken": result.token, "me": me},
        }),
        headers: Vec::new(),
    }
}

/// `POST /api/v1/logout`: the request's token is revoked (and live sessions using it end).
pub(super) async fn logout(accounts: &Accounts, caller: &Caller) -> RestResponse {
    match accounts
        .remove_tokens(&Call::server(), &caller.user_id, &caller.token_hash, false)
        .await
    {
        Ok(()) => RestResponse {
            status: 200,
            body: serde_json::json!({"status": "success", "data": {"message": "You've been logged out!"}}),
            headers: Vec::new(),
        },
        Err(err) => RestResponse::from_service(&err),
    }
}

/// The user's own view, as Rocket.Chat's login and `me` give it: the public fields, the
/// fields only the user sees (`customFields`, `nickname`, `bio`, `requirePasswordChange`,
/// `statusLivechat`), `email`, `settings.preferences` merged over the defaults, and
/// `avatarUrl`.
pub(super) fn own_view(user: &Document, site_url: Option<&str>) -> serde_json::Value {
    let mut me = public_user(user);
    let Some(obj) = me.as_object_mut() else {
        return me;
    };
    for field in [
        "customFields",
        "nickname",
        "bio",
        "requirePasswordChange",
        "statusLivechat",
    ] {
        if let Some(v) = user.get(field) {
            obj.insert(field.into(), to_json(v));
        }
    }
    let email = obj
        .get("emails")
        .and_then(|e| e.get(0))
        .and_then(|e| e.get("address"))
        .cloned();
    if let Some(email) = email {
        obj.insert("email".into(), email);
    }
    let preferences = crate::chat::accounts::preferences::effective(user);
    obj.insert(
        "settings".into(),
        serde_json::json!({"profile": {}, "preferences": to_json(&Value::Object(preferences))}),
    );
    if let Some(name) = user.get("username").and_then(Value::as_str) {
        let base = site_url.unwrap_or("").trim_end_matches('/');
        obj.insert(
            "avatarUrl".into(),
            format!("{base}/avatar/{}", super::users::path_part(name)).into(),
        );
    }
    me
}

fn site_url(s: &RestServices) -> Option<String> {
    s.settings
        .value("Site_Url")
        .and_then(|v| v.as_str().map(str::to_owned))
}

/// `GET /api/v1/me`: the caller's own view.
pub(super) fn me(s: &RestServices, caller: &Caller) -> RestResponse {
    RestResponse::success(own_view(&caller.user, site_url(s).as_deref()))
}

/// `POST /api/v1/users.register`: `{username, email, pass, name}`.
pub(super) async fn register(accounts: &Accounts, request: &RestRequest) -> RestResponse {
    use crate::engine::args::Pattern;
    let fields = match body(request) {
        Ok(d) => d,
        Err(refused) => return refused,
    };
    let shape = Pattern::object_including(vec![
        ("username", Pattern::string_up_to(64)),
        ("email", Pattern::string_up_to(254)),
        ("pass", Pattern::string_up_to(256)),
        ("name", Pattern::maybe(Pattern::string_up_to(256))),
        ("secretURL", Pattern::maybe(Pattern::string_up_to(256))),
    ]);
    let value = Value::Object(fields);
    if shape.check(Some(&value)).is_err() {
        return RestResponse::failure(400, "Match failed", Some("error-invalid-params"));
    }
    let secret = match &value {
        Value::Object(fields) => fields.get("secretURL").and_then(Value::as_str),
        _ => None,
    };
    match accounts.may_register(secret) {
        Ok(()) => {}
        Err(RegistrationRefused::Closed) => {
            return RestResponse::failure(
                403,
                "Registration is disabled",
                Some("error-not-allowed"),
            )
        }
        Err(RegistrationRefused::SecretNeeded) => {
            return RestResponse::failure(
                403,
                "User registration is only allowed via Secret URL",
                Some("error-user-registration-secret"),
            )
        }
    }
    let Value::Object(fields) = value else {
        return RestResponse::failure(400, "Match failed", Some("error-invalid-params"));
    };
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_owned);
    let new = crate::chat::accounts::NewUser {
        username: Some(text("username").unwrap_or_default()),
        email: text("email"),
        password_digest: text("pass").map(|p| crate::chat::accounts::secrets::password_digest(&p)),
        name: text("name"),
        roles: Vec::new(),
    };
    let id = match accounts.create_user(&Call::server(), new).await {
        Ok(id) => id,
        Err(err) => return RestResponse::from_service(&err),
    };
    match accounts.find_user(&UserSelector::Id(id)).await {
        Ok(Some(user)) => RestResponse::success(serde_json::json!({"user": public_user(&user)})),
        Ok(None) => RestResponse::failure(500, "Internal server error", None),
        Err(err) => RestResponse::from_service(&err),
    }
}

/// Another user as a caller without `view-full-other-user-info` sees it: no addresses,
/// roles or connection details.
fn other_user(user: &Document) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(id) = user.get("_id") {
        out.insert("_id".into(), to_json(id));
    }
    for field in crate::chat::accounts::OTHER_USER_FIELDS {
        if let Some(v) = user.get(*field) {
            out.insert((*field).into(), to_json(v));
        }
    }
    out.into()
}

/// `GET /api/v1/users.info?userId=…` or `?username=…`: the caller's own document whole;
/// another user's whole only with `view-full-other-user-info` (`see_full`), else the
/// fields anyone may see.
pub(super) async fn users_info(
    accounts: &Accounts,
    caller: &Caller,
    see_full: bool,
    request: &RestRequest,
) -> RestResponse {
    let query = request.query.as_deref().unwrap_or("");
    let mut who = None;
    for pair in query.split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "userId" => who = Some(UserSelector::Id(value)),
            "username" => who = Some(UserSelector::Username(value)),
            _ => {}
        }
    }
    let Some(who) = who else {
        return RestResponse::failure(
            400,
            "The 'userId' or 'username' param is required",
            Some("error-invalid-params"),
        );
    };
    match accounts.find_user(&who).await {
        Ok(Some(user)) => {
            let own = user.get("_id").and_then(Value::as_str) == Some(caller.user_id.as_str());
            let shown = if own || see_full {
                public_user(&user)
            } else {
                other_user(&user)
            };
            RestResponse::success(serde_json::json!({"user": shown}))
        }
        Ok(None) => RestResponse::failure(400, "User not found.", Some("error-invalid-user")),
        Err(err) => RestResponse::from_service(&err),
    }
}

/// `%XX` and `+` decoded; anything malformed is kept as it is.
pub(super) fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                match (
                    bytes.get(i + 1).and_then(|b| hex(*b)),
                    bytes.get(i + 2).and_then(|b| hex(*b)),
                ) {
                    (Some(high), Some(low)) => {
                        out.push(high * 16 + low);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_decode_and_broken_escapes_stay() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("%C3%A9"), "\u{e9}");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz\u{e9}%4"), "%zz\u{e9}%4");
    }
}
