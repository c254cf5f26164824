//! Rocket.Chat's presence routes: `users.presence`, `users.getPresence`, `users.setStatus`.
//! Thin adapters over the Presence service; every route needs a logged-in caller (a
//! stranger learns nobody's status).

use super::accounts::{body, query_pairs};
use super::json::to_json;
use super::{Caller, RestRequest, RestResponse};
use crate::chat::accounts::{Accounts, UserSelector};
use crate::chat::presence::{Presence, Status};
use crate::engine::ServiceError;
use crate::model::{Document, MeteorError, Value};

fn text(d: &Document, key: &str) -> Option<String> {
    d.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// `GET users.presence?ids[]=…` (or `ids=a,b`) and `?from=<ISO date>`: the users named
/// (or all) who are not offline; `full` when no `from` narrowed the list.
pub(super) async fn users_presence(presence: &Presence, request: &RestRequest) -> RestResponse {
    let pairs = query_pairs(request);
    let mut ids: Vec<String> = Vec::new();
    let mut named = false;
    let mut from = None;
    for (key, value) in &pairs {
        match key.as_str() {
            "ids" | "ids[]" => {
                named = true;
                ids.extend(
                    value
                        .split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned),
                );
            }
            "from" => from = Some(value.clone()),
            _ => {}
        }
    }
    if ids.len() > 10_000 {
        return RestResponse::failure(400, "Too many ids", Some("error-invalid-params"));
    }
    let since = match from.as_deref().map(crate::rest::json::parse_iso_date) {
        Some(Some(ms)) => Some(ms),
        Some(None) => {
            return RestResponse::failure(
                400,
                "The \"from\" param is not a date",
                Some("error-invalid-params"),
            )
        }
        None => None,
    };
    let found = match presence
        .users_presence(named.then_some(ids.as_slice()))
        .await
    {
        Ok(found) => found,
        Err(err) => return RestResponse::from_service(&err),
    };
    let users: Vec<serde_json::Value> = found
        .iter()
        .filter(|u| text(u, "status").as_deref() != Some("offline"))
        .filter(|u| match (since, u.get("_updatedAt")) {
            (Some(since), Some(Value::Date(at))) => *at > since,
            (Some(_), _) => false,
            (None, _) => true,
        })
        .map(|u| to_json(&Value::Object(u.clone())))
        .collect();
    RestResponse::success(serde_json::json!({"users": users, "full": since.is_none()}))
}

/// The user a request names by `userId` or `username` (the caller when it names none).
async fn target(
    accounts: &Accounts,
    caller: &Caller,
    fields: &[(String, String)],
) -> Result<Document, RestResponse> {
    let pick = |k: &str| {
        fields
            .iter()
            .find(|(key, v)| key == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let who = match (pick("userId"), pick("username")) {
        (Some(id), _) => UserSelector::Id(id),
        (None, Some(name)) => UserSelector::Username(name),
        (None, None) => return Ok(caller.user.clone()),
    };
    match accounts.find_user(&who).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(RestResponse::failure(
            400,
            "User not found.",
            Some("error-invalid-user"),
        )),
        Err(err) => Err(RestResponse::from_service(&err)),
    }
}

/// `GET users.getPresence?userId=|username=`: `{presence}`; for the caller itself also
/// `connectionStatus` and `lastLogin`.
pub(super) async fn get_presence(
    accounts: &Accounts,
    caller: &Caller,
    request: &RestRequest,
) -> RestResponse {
    let user = match target(accounts, caller, &query_pairs(request)).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let status = text(&user, "status").unwrap_or_else(|| "offline".into());
    let mut out = serde_json::json!({"presence": status});
    if text(&user, "_id").as_deref() == Some(caller.user_id.as_str()) {
        out["connectionStatus"] = text(&user, "statusConnection")
            .unwrap_or_else(|| "offline".into())
            .into();
        if let Some(at) = user.get("lastLogin") {
            out["lastLogin"] = to_json(at);
        }
    }
    RestResponse::success(out)
}

/// `POST users.setStatus` `{status?, message?, userId?|username?}`: the caller's own
/// status, or another user's with `edit-other-user-info`.
pub(super) async fn set_status(
    accounts: &Accounts,
    presence: &Presence,
    caller: &Caller,
    request: &RestRequest,
) -> RestResponse {
    let fields = match body(request) {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let pick = |k: &str| -> Result<Option<String>, RestResponse> {
        match fields.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(RestResponse::failure(
                400,
                "Match failed",
                Some("error-invalid-params"),
            )),
        }
    };
    let (status, message, user_id, username) = match (
        pick("status"),
        pick("message"),
        pick("userId"),
        pick("username"),
    ) {
        (Ok(s), Ok(m), Ok(i), Ok(n)) => (s, m, i, n),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => return e,
    };
    let status = match status.as_deref().map(Status::parse) {
        Some(None) => {
            return RestResponse::from_service(&ServiceError::Client(MeteorError::new(
                "error-invalid-status",
                "Invalid status",
            )))
        }
        Some(Some(s)) => Some(s),
        None => None,
    };
    let named: Vec<(String, String)> = [("userId", user_id), ("username", username)]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_owned(), v)))
        .collect();
    let user = match target(accounts, caller, &named).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let uid = text(&user, "_id").unwrap_or_default();
    match presence.may_set_status_of(&caller.user_id, &uid).await {
        Ok(true) => {}
        Ok(false) => {
            return RestResponse::failure(403, "Not allowed", Some("error-action-not-allowed"))
        }
        Err(err) => return RestResponse::from_service(&err),
    }
    match presence
        .choose_status(&uid, status, message.as_deref())
        .await
    {
        Ok(_) => RestResponse::success(serde_json::json!({})),
        Err(err) => RestResponse::from_service(&err),
    }
}
