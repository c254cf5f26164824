//! Rocket.Chat's setting routes: `settings.public` (anyone), `settings.oauth` (anyone),
//! `settings/:id` (administrators), `permissions.listAll`.
//!
//! `settings.public` reads its filters as values, never as a selector: `_id` is a comma
//! list, `query` may only name `_id` (a string, `$eq` or `$in` of strings), `fields` may
//! only add or remove top-level fields, `sort` only orders by `_id` or `_updatedAt`.

use super::json::to_json;
use super::{accounts, Caller, RestMethod, RestRequest, RestResponse, RestServices};
use crate::chat::call::Call;
use crate::chat::settings::Settings;
use crate::model::{Document, Value};
use std::collections::{HashMap, HashSet};

/// The fields every listed setting carries (Rocket.Chat's projection).
const ALWAYS_SHOWN: &[&str] = &["_id", "value", "enterprise", "invalidValue", "modules"];

/// Most ids a `query` or `_id` filter may name.
const MAX_IDS: usize = 1000;

fn invalid(what: &str) -> RestResponse {
    RestResponse::failure(400, what, Some("error-invalid-params"))
}

/// The ids the request asks for, `None` for every public setting.
fn wanted_ids(q: &HashMap<String, String>) -> Result<Option<HashSet<String>>, RestResponse> {
    let mut wanted: Option<HashSet<String>> = None;
    let mut narrow = |ids: Vec<String>| {
        let ids: HashSet<String> = ids.into_iter().collect();
        wanted = Some(match wanted.take() {
            Some(before) => before.intersection(&ids).cloned().collect(),
            None => ids,
        });
    };
    if let Some(list) = q.get("_id").filter(|l| !l.is_empty()) {
        let ids: Vec<String> = list
            .split(',')
            .map(|id| id.trim().to_owned())
            .filter(|id| !id.is_empty())
            .collect();
        if ids.len() > MAX_IDS {
            return Err(invalid("Too many setting ids"));
        }
        narrow(ids);
    }
    if let Some(text) = q.get("query").filter(|t| !t.is_empty()) {
        let invalid_query = || invalid("Invalid query parameter: only _id may be filtered");
        let Ok(serde_json::Value::Object(query)) = serde_json::from_str(text) else {
            return Err(invalid_query());
        };
        for (key, filter) in query {
            if key != "_id" {
                return Err(invalid_query());
            }
            let ids = match filter {
                serde_json::Value::String(id) => vec![id],
                serde_json::Value::Object(op) if op.len() == 1 => match op.into_iter().next() {
                    Some((name, serde_json::Value::String(id))) if name == "$eq" => vec![id],
                    Some((name, serde_json::Value::Array(items))) if name == "$in" => items
                        .into_iter()
                        .map(|item| match item {
                            serde_json::Value::String(id) => Ok(id),
                            _ => Err(invalid_query()),
                        })
                        .collect::<Result<Vec<_>, _>>()?,
                    _ => return Err(invalid_query()),
                },
                _ => return Err(invalid_query()),
            };
            if ids.len() > MAX_IDS {
                return Err(invalid("Too many setting ids"));
            }
            narrow(ids);
        }
    }
    Ok(wanted)
}

/// `fields`: `{name: 1}` adds a stored field to the answer, `{name: 0}` removes one.
fn projection(q: &HashMap<String, String>) -> Result<(Vec<String>, Vec<String>), RestResponse> {
    let Some(text) = q.get("fields").filter(|t| !t.is_empty()) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(text) else {
        return Err(invalid("Invalid fields parameter"));
    };
    let (mut add, mut remove) = (Vec::new(), Vec::new());
    for (name, flag) in fields {
        if name.is_empty() || name.starts_with('$') || name.contains('.') || name.len() > 64 {
            return Err(invalid("Invalid fields parameter"));
        }
        let on = match flag {
            serde_json::Value::Bool(b) => b,
            serde_json::Value::Number(n) => n.as_f64() != Some(0.0),
            _ => return Err(invalid("Invalid fields parameter")),
        };
        if on {
            add.push(name);
        } else if name != "_id" {
            remove.push(name);
        }
    }
    Ok((add, remove))
}

/// `sort`: by `_id` (the default) or `_updatedAt`, either way.
fn order(q: &HashMap<String, String>) -> Result<(&'static str, bool), RestResponse> {
    let Some(text) = q.get("sort").filter(|t| !t.is_empty()) else {
        return Ok(("_id", false));
    };
    let Ok(serde_json::Value::Object(sort)) = serde_json::from_str(text) else {
        return Err(invalid("Invalid sort parameter"));
    };
    let Some((key, direction)) = sort.into_iter().next() else {
        return Ok(("_id", false));
    };
    let key = match key.as_str() {
        "_id" => "_id",
        "_updatedAt" => "_updatedAt",
        _ => return Err(invalid("Invalid sort parameter")),
    };
    Ok((key, direction.as_i64() == Some(-1)))
}

/// `offset` and `count` as Rocket.Chat reads them (`API_Default_Count`, at most
/// `API_Upper_Count_Limit`).
pub(super) fn paging(q: &HashMap<String, String>, settings: &Settings) -> (usize, usize) {
    let upper = settings.number("API_Upper_Count_Limit", 100.0).max(1.0) as usize;
    let default = settings.number("API_Default_Count", 50.0).max(1.0) as usize;
    let offset = q.get("offset").and_then(|o| o.parse().ok()).unwrap_or(0);
    let count = match q.get("count").and_then(|c| c.parse::<usize>().ok()) {
        Some(0) | None => default,
        Some(n) => n,
    };
    (offset, count.min(upper))
}

fn shown(doc: &Document, add: &[String], remove: &[String]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for key in ALWAYS_SHOWN
        .iter()
        .copied()
        .chain(add.iter().map(String::as_str))
    {
        if remove.iter().any(|r| r == key) {
            continue;
        }
        if let Some(v) = doc.get(key) {
            out.insert(key.to_owned(), to_json(v));
        }
    }
    out.into()
}

fn sort_key(doc: &Document, key: &str) -> (f64, String) {
    match doc.get(key) {
        Some(Value::Date(ms)) => (*ms, String::new()),
        Some(Value::String(s)) => (0.0, s.clone()),
        _ => (0.0, String::new()),
    }
}

/// `GET /api/v1/settings.public`: `{settings: [{_id, value}], count, offset, total}`.
pub(super) async fn public(settings: &Settings, request: &RestRequest) -> RestResponse {
    let q = super::chat::query(request);
    let (wanted, (add, remove), (key, descending)) =
        match (|| Ok::<_, RestResponse>((wanted_ids(&q)?, projection(&q)?, order(&q)?)))() {
            Ok(parts) => parts,
            Err(refused) => return refused,
        };
    let (offset, count) = paging(&q, settings);
    let mut listed = match settings.read(true, None).await {
        Ok(delta) => delta.update,
        Err(err) => return RestResponse::from_service(&err),
    };
    if let Some(wanted) = &wanted {
        listed.retain(|d| {
            d.get("_id")
                .and_then(Value::as_str)
                .is_some_and(|id| wanted.contains(id))
        });
    }
    listed.sort_by(|a, b| {
        let order = sort_key(a, key)
            .partial_cmp(&sort_key(b, key))
            .unwrap_or(std::cmp::Ordering::Equal);
        if descending {
            order.reverse()
        } else {
            order
        }
    });
    let total = listed.len();
    let page: Vec<serde_json::Value> = listed
        .iter()
        .skip(offset)
        .take(count)
        .map(|d| shown(d, &add, &remove))
        .collect();
    RestResponse::success(serde_json::json!({
        "settings": page, "count": page.len(), "offset": offset, "total": total,
    }))
}

/// `GET /api/v1/settings.oauth`: the sign-in services offered besides the password; comet
/// has none configured, so the list is empty (and the app shows its password form alone).
pub(super) fn oauth() -> RestResponse {
    RestResponse::success(serde_json::json!({"services": []}))
}

/// `GET /api/v1/settings/:id` (`view-privileged-setting`) and `POST` with `{value}`
/// (`edit-privileged-setting`).
pub(super) async fn one(
    s: &RestServices,
    caller: &Caller,
    id: &str,
    request: &RestRequest,
) -> RestResponse {
    let needed = if request.method == RestMethod::Post {
        "edit-privileged-setting"
    } else {
        "view-privileged-setting"
    };
    match s
        .permissions
        .has_permission(Some(&caller.user_id), needed, None)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            return RestResponse::failure(
                403,
                "User does not have the permissions required for this action",
                Some("error-unauthorized"),
            )
        }
        Err(err) => return RestResponse::from_service(&err),
    }
    if request.method == RestMethod::Post {
        let body = match accounts::body(request) {
            Ok(b) => b,
            Err(refused) => return refused,
        };
        let Some(value) = body.get("value") else {
            return RestResponse::failure(400, "Match failed", Some("error-invalid-params"));
        };
        if let Err(err) = s.settings.save(&Call::server(), id, value.clone()).await {
            return RestResponse::from_service(&err);
        }
        return RestResponse::success(serde_json::json!({}));
    }
    match s.settings.value(id) {
        Some(value) => {
            RestResponse::success(serde_json::json!({"_id": id, "value": to_json(&value)}))
        }
        None => RestResponse::failure(400, "Setting not found", Some("error-setting-not-found")),
    }
}

/// `GET /api/v1/permissions.listAll`: `{update: [...], remove: []}`.
pub(super) fn permissions_list_all(
    permissions: &crate::chat::permissions::Permissions,
) -> RestResponse {
    let update: Vec<serde_json::Value> = permissions
        .documents(None)
        .iter()
        .map(|d| to_json(&Value::Object((**d).clone())))
        .collect();
    RestResponse::success(serde_json::json!({"update": update, "remove": []}))
}
