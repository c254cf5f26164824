//! Rocket.Chat's `teams.*` routes: thin adapters over the Team service. A team is named by
//! `teamId` or `teamName` (body for POST, query for GET); a team the caller may not see is
//! answered as one that does not exist.

use super::accounts::body;
use super::chat::{doc_json, page, query};
use super::{Caller, RestMethod, RestRequest, RestResponse};
use crate::chat::teams::{RoomRef, TeamRef, TeamType, Teams};
use crate::engine::fence::NoFence;
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use std::collections::HashMap;

/// The team routes, each named as its path after `/api/v1/`.
pub(super) const TEAM_ROUTES: &[&str] = &[
    "teams.create",
    "teams.info",
    "teams.list",
    "teams.listAll",
    "teams.members",
    "teams.addMembers",
    "teams.removeMember",
    "teams.updateMember",
    "teams.leave",
    "teams.addRooms",
    "teams.removeRoom",
    "teams.updateRoom",
    "teams.listRooms",
    "teams.listRoomsOfUser",
    "teams.update",
    "teams.delete",
    "teams.autocomplete",
    "teams.convertToChannel",
    "channels.convertToTeam",
    "groups.convertToTeam",
];

fn invalid(what: &str) -> RestResponse {
    RestResponse::failure(
        400,
        &format!("The parameter \"{what}\" is missing or invalid"),
        Some("error-invalid-params"),
    )
}

/// A string field of the body, or of the query for a GET.
fn pick(fields: &Document, q: &HashMap<String, String>, key: &str) -> Option<String> {
    match fields.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => q.get(key).filter(|s| !s.is_empty()).cloned(),
    }
}

/// A list of strings in the body (`[]` when absent); `None` when it is not one.
fn strings(fields: &Document, key: &str) -> Option<Vec<String>> {
    match fields.get(key) {
        None | Some(Value::Null) => Some(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => None,
    }
}

fn which(fields: &Document, q: &HashMap<String, String>) -> Option<TeamRef> {
    pick(fields, q, "teamId")
        .map(TeamRef::Id)
        .or_else(|| pick(fields, q, "teamName").map(TeamRef::Name))
}

/// Answers `route` for `caller`.
pub(super) async fn handle(
    teams: &Teams,
    caller: &Caller,
    request: &RestRequest,
    route: &str,
) -> RestResponse {
    let fields = if request.method == RestMethod::Get {
        Document::default()
    } else {
        match body(request) {
            Ok(b) => b,
            Err(refused) => return refused,
        }
    };
    match dispatch(teams, caller, request, route, &fields).await {
        Ok(response) => response,
        Err(err) => RestResponse::from_service(&err),
    }
}

async fn dispatch(
    teams: &Teams,
    caller: &Caller,
    request: &RestRequest,
    route: &str,
    fields: &Document,
) -> Result<RestResponse, ServiceError> {
    let q = query(request);
    let me = caller.user_id.as_str();
    let post = request.method == RestMethod::Post;
    let get = request.method == RestMethod::Get;
    let action = route.strip_prefix("teams.").unwrap_or(route);
    let needs_team = !matches!(
        action,
        "create"
            | "list"
            | "listAll"
            | "autocomplete"
            | "updateRoom"
            | "channels.convertToTeam"
            | "groups.convertToTeam"
    );
    let team = if needs_team {
        let Some(which) = which(fields, &q) else {
            return Ok(invalid("teamId"));
        };
        Some(teams.visible(&which, me).await?)
    } else {
        None
    };
    let team = team.as_ref();
    let ok = |fields: serde_json::Value| RestResponse::success(fields);
    Ok(match (action, team) {
        ("create", _) if post => {
            let Some(name) = pick(fields, &q, "name") else {
                return Ok(invalid("name"));
            };
            let kind = match fields.get("type").and_then(Value::as_f64) {
                None => TeamType::Public,
                Some(n) => match TeamType::from_number(n) {
                    Some(k) => k,
                    None => return Ok(invalid("type")),
                },
            };
            let Some(members) = strings(fields, "members") else {
                return Ok(invalid("members"));
            };
            let read_only = fields
                .get("room")
                .and_then(Value::as_object)
                .and_then(|r| r.get("readOnly"))
                == Some(&Value::Bool(true));
            let team = teams
                .create(me, &name, kind, members, read_only, &NoFence)
                .await?;
            ok(serde_json::json!({"team": doc_json(&team)}))
        }
        ("info", Some(team)) if get => ok(serde_json::json!({"teamInfo": doc_json(team)})),
        ("list", _) if get => page(
            teams.of_user(me).await?.iter().map(doc_json).collect(),
            &q,
            "teams",
        ),
        ("listAll", _) if get => page(
            teams.all(me).await?.iter().map(doc_json).collect(),
            &q,
            "teams",
        ),
        ("members", Some(team)) if get => page(
            teams.members(team).await?.iter().map(doc_json).collect(),
            &q,
            "members",
        ),
        ("addMembers", Some(team)) if post => {
            let Some(Value::Array(list)) = fields.get("members") else {
                return Ok(invalid("members"));
            };
            let mut members = Vec::new();
            for m in list {
                let Some(m) = m.as_object() else {
                    return Ok(invalid("members"));
                };
                let (Some(uid), Some(roles)) =
                    (m.get("userId").and_then(Value::as_str), strings(m, "roles"))
                else {
                    return Ok(invalid("members"));
                };
                members.push((uid.to_owned(), roles));
            }
            teams.add_members(me, team, &members, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        ("removeMember", Some(team)) if post => {
            let (Some(uid), Some(rooms)) = (pick(fields, &q, "userId"), strings(fields, "rooms"))
            else {
                return Ok(invalid("userId"));
            };
            teams
                .remove_member(me, team, &uid, &rooms, &NoFence)
                .await?;
            ok(serde_json::json!({}))
        }
        ("updateMember", Some(team)) if post => {
            let member = fields.get("member").and_then(Value::as_object);
            let (Some(uid), Some(roles)) = (
                member.and_then(|m| m.get("userId")).and_then(Value::as_str),
                member.and_then(|m| strings(m, "roles")),
            ) else {
                return Ok(invalid("member"));
            };
            teams.update_member(me, team, uid, &roles, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        ("leave", Some(team)) if post => {
            let Some(rooms) = strings(fields, "rooms") else {
                return Ok(invalid("rooms"));
            };
            teams.leave(me, team, &rooms, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        ("addRooms", Some(team)) if post => {
            let Some(rooms) = strings(fields, "rooms").filter(|r| !r.is_empty()) else {
                return Ok(invalid("rooms"));
            };
            let moved = teams.add_rooms(me, team, &rooms, &NoFence).await?;
            ok(serde_json::json!({"rooms": moved.iter().map(doc_json).collect::<Vec<_>>()}))
        }
        ("removeRoom", Some(team)) if post => {
            let Some(rid) = pick(fields, &q, "roomId") else {
                return Ok(invalid("roomId"));
            };
            let room = teams.remove_room(me, team, &rid, &NoFence).await?;
            ok(serde_json::json!({"room": doc_json(&room)}))
        }
        ("updateRoom", _) if post => {
            let (Some(rid), Some(Value::Bool(is_default))) =
                (pick(fields, &q, "roomId"), fields.get("isDefault"))
            else {
                return Ok(invalid("roomId"));
            };
            let room = teams
                .set_default_room(me, &rid, *is_default, &NoFence)
                .await?;
            ok(serde_json::json!({"room": doc_json(&room)}))
        }
        ("listRooms", Some(team)) if get => page(
            teams.rooms(me, team).await?.iter().map(doc_json).collect(),
            &q,
            "rooms",
        ),
        ("listRoomsOfUser", Some(team)) if get => {
            let Some(uid) = q.get("userId").cloned() else {
                return Ok(invalid("userId"));
            };
            page(
                teams
                    .rooms_of_user(me, team, &uid)
                    .await?
                    .iter()
                    .map(doc_json)
                    .collect(),
                &q,
                "rooms",
            )
        }
        ("update", Some(team)) if post => {
            let data = fields.get("data").and_then(Value::as_object);
            let name = data.and_then(|d| d.get("name")).and_then(Value::as_str);
            let kind = match data.and_then(|d| d.get("type")) {
                None | Some(Value::Null) => None,
                Some(v) => match v.as_f64().and_then(TeamType::from_number) {
                    Some(k) => Some(k),
                    None => return Ok(invalid("data.type")),
                },
            };
            if data.is_none() {
                return Ok(invalid("data"));
            }
            teams.update(me, team, name, kind, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        ("delete", Some(team)) if post => {
            let Some(rooms) = strings(fields, "roomsToRemove") else {
                return Ok(invalid("roomsToRemove"));
            };
            teams.delete(me, team, &rooms, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        ("convertToChannel", Some(team)) if post => {
            let Some(rooms) = strings(fields, "roomsToRemove") else {
                return Ok(invalid("roomsToRemove"));
            };
            teams.convert_to_channel(me, team, &rooms, &NoFence).await?;
            ok(serde_json::json!({}))
        }
        (route @ ("channels.convertToTeam" | "groups.convertToTeam"), _) if post => {
            let (kind, id_key, name_key) = if route.starts_with("channels.") {
                (TeamType::Public, "channelId", "channelName")
            } else {
                (TeamType::Private, "roomId", "roomName")
            };
            let which = match (pick(fields, &q, id_key), pick(fields, &q, name_key)) {
                (Some(id), _) => RoomRef::Id(id),
                (None, Some(name)) => RoomRef::Name(name),
                (None, None) => return Ok(invalid(id_key)),
            };
            let team = teams.convert_to_team(me, &which, kind, &NoFence).await?;
            ok(serde_json::json!({"team": doc_json(&team)}))
        }
        ("autocomplete", _) if get => {
            let Some(name) = q.get("name").cloned() else {
                return Ok(invalid("name"));
            };
            let found = teams.autocomplete(me, &name).await?;
            ok(serde_json::json!({"teams": found.iter().map(doc_json).collect::<Vec<_>>()}))
        }
        _ => RestResponse::failure(405, "Method not allowed", None),
    })
}
