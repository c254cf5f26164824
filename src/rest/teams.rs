//! Rocket.Chat's `teams.*` routes (and `channels.convertToTeam` / `groups.convertToTeam`):
//! one table line each, handlers over the Team service's typed API. A team is named by
//! `teamId` or `teamName` (body for POST, query for GET); a team the caller may not see is
//! answered as one that does not exist.

use super::accounts::body;
use super::chat::{doc_json, page, query};
use super::{Caller, RestMethod, RestRequest, RestResponse};
use crate::chat::call::Call;
use crate::chat::teams::{RoomRef, TeamRef, TeamType, Teams};
use crate::engine::ServiceError;
use crate::model::{Document, Value};
use std::collections::HashMap;

/// One request to a team route.
struct TeamRequest<'a> {
    teams: &'a Teams,
    me: &'a str,
    call: Call<'a>,
    name: &'static str,
    fields: Document,
    q: HashMap<String, String>,
    /// The team the request names, for the routes that act on one.
    team: Document,
}

type Answer = Result<RestResponse, ServiceError>;
type AnswerFuture<'r> = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'r>>;

/// A team route: `/api/v1/<name>` for `method`; `on_team` when it acts on a named team.
pub(super) struct TeamRoute {
    pub(super) name: &'static str,
    method: RestMethod,
    on_team: bool,
    handler: for<'r> fn(&'r TeamRequest<'r>) -> AnswerFuture<'r>,
}

impl std::fmt::Debug for TeamRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} {}", self.method, self.name)
    }
}

/// A route is its name: the table holds each once.
impl PartialEq for TeamRoute {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for TeamRoute {}

macro_rules! team_route {
    ($method:ident, $name:literal, $on_team:literal, $handler:ident) => {
        TeamRoute {
            name: $name,
            method: RestMethod::$method,
            on_team: $on_team,
            handler: |t| Box::pin($handler(t)),
        }
    };
}

/// The team routes: method, name, whether it acts on a named team, handler.
pub(super) const TEAM_ROUTES: &[TeamRoute] = &[
    team_route!(Post, "teams.create", false, create),
    team_route!(Get, "teams.info", true, info),
    team_route!(Get, "teams.list", false, list),
    team_route!(Get, "teams.listAll", false, list_all),
    team_route!(Get, "teams.members", true, members),
    team_route!(Post, "teams.addMembers", true, add_members),
    team_route!(Post, "teams.removeMember", true, remove_member),
    team_route!(Post, "teams.updateMember", true, update_member),
    team_route!(Post, "teams.leave", true, leave),
    team_route!(Post, "teams.addRooms", true, add_rooms),
    team_route!(Post, "teams.removeRoom", true, remove_room),
    team_route!(Post, "teams.updateRoom", false, update_room),
    team_route!(Get, "teams.listRooms", true, list_rooms),
    team_route!(Get, "teams.listRoomsOfUser", true, list_rooms_of_user),
    team_route!(Post, "teams.update", true, update),
    team_route!(Post, "teams.delete", true, delete),
    team_route!(Get, "teams.autocomplete", false, autocomplete),
    team_route!(Post, "teams.convertToChannel", true, convert_to_channel),
    team_route!(Post, "channels.convertToTeam", false, convert_to_team),
    team_route!(Post, "groups.convertToTeam", false, convert_to_team),
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

/// Answers `route` for `caller`: 405 for another method, the named team looked up (as the
/// caller may see it) for the routes that act on one.
pub(super) async fn handle(
    teams: &Teams,
    caller: &Caller,
    request: &RestRequest,
    route: &'static TeamRoute,
) -> RestResponse {
    if request.method != route.method {
        return RestResponse::failure(405, "Method not allowed", None);
    }
    let fields = if request.method == RestMethod::Get {
        Document::default()
    } else {
        match body(request) {
            Ok(b) => b,
            Err(refused) => return refused,
        }
    };
    let q = query(request);
    let me = caller.user_id.as_str();
    let team = if route.on_team {
        let Some(which) = which(&fields, &q) else {
            return invalid("teamId");
        };
        match teams.visible(&which, me).await {
            Ok(team) => team,
            Err(err) => return RestResponse::from_service(&err),
        }
    } else {
        Document::default()
    };
    let t = TeamRequest {
        teams,
        me,
        call: Call::unfenced(Some(me)).from_address(request.client_address),
        name: route.name,
        fields,
        q,
        team,
    };
    match (route.handler)(&t).await {
        Ok(response) => response,
        Err(err) => RestResponse::from_service(&err),
    }
}

fn ok(fields: serde_json::Value) -> Answer {
    Ok(RestResponse::success(fields))
}

fn listed(docs: &[Document], q: &HashMap<String, String>, key: &str) -> Answer {
    Ok(page(docs.iter().map(doc_json).collect(), q, key))
}

async fn create(t: &TeamRequest<'_>) -> Answer {
    let Some(name) = pick(&t.fields, &t.q, "name") else {
        return Ok(invalid("name"));
    };
    let kind = match t.fields.get("type").and_then(Value::as_f64) {
        None => TeamType::Public,
        Some(n) => match TeamType::from_number(n) {
            Some(k) => k,
            None => return Ok(invalid("type")),
        },
    };
    let Some(members) = strings(&t.fields, "members") else {
        return Ok(invalid("members"));
    };
    let read_only = t
        .fields
        .get("room")
        .and_then(Value::as_object)
        .and_then(|r| r.get("readOnly"))
        == Some(&Value::Bool(true));
    let team = t
        .teams
        .create(&t.call, &name, kind, members, read_only)
        .await?;
    ok(serde_json::json!({"team": doc_json(&team)}))
}

async fn info(t: &TeamRequest<'_>) -> Answer {
    ok(serde_json::json!({"teamInfo": doc_json(&t.team)}))
}

async fn list(t: &TeamRequest<'_>) -> Answer {
    listed(&t.teams.of_user(t.me).await?, &t.q, "teams")
}

async fn list_all(t: &TeamRequest<'_>) -> Answer {
    listed(&t.teams.all(t.me).await?, &t.q, "teams")
}

async fn members(t: &TeamRequest<'_>) -> Answer {
    listed(&t.teams.members(&t.team).await?, &t.q, "members")
}

async fn add_members(t: &TeamRequest<'_>) -> Answer {
    let Some(Value::Array(list)) = t.fields.get("members") else {
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
    t.teams.add_members(&t.call, &t.team, &members).await?;
    ok(serde_json::json!({}))
}

async fn remove_member(t: &TeamRequest<'_>) -> Answer {
    let (Some(uid), Some(rooms)) = (pick(&t.fields, &t.q, "userId"), strings(&t.fields, "rooms"))
    else {
        return Ok(invalid("userId"));
    };
    t.teams
        .remove_member(&t.call, &t.team, &uid, &rooms)
        .await?;
    ok(serde_json::json!({}))
}

async fn update_member(t: &TeamRequest<'_>) -> Answer {
    let member = t.fields.get("member").and_then(Value::as_object);
    let (Some(uid), Some(roles)) = (
        member.and_then(|m| m.get("userId")).and_then(Value::as_str),
        member.and_then(|m| strings(m, "roles")),
    ) else {
        return Ok(invalid("member"));
    };
    t.teams.update_member(&t.call, &t.team, uid, &roles).await?;
    ok(serde_json::json!({}))
}

async fn leave(t: &TeamRequest<'_>) -> Answer {
    let Some(rooms) = strings(&t.fields, "rooms") else {
        return Ok(invalid("rooms"));
    };
    t.teams.leave(&t.call, &t.team, &rooms).await?;
    ok(serde_json::json!({}))
}

async fn add_rooms(t: &TeamRequest<'_>) -> Answer {
    let Some(rooms) = strings(&t.fields, "rooms").filter(|r| !r.is_empty()) else {
        return Ok(invalid("rooms"));
    };
    let moved = t.teams.add_rooms(&t.call, &t.team, &rooms).await?;
    ok(serde_json::json!({"rooms": moved.iter().map(doc_json).collect::<Vec<_>>()}))
}

async fn remove_room(t: &TeamRequest<'_>) -> Answer {
    let Some(rid) = pick(&t.fields, &t.q, "roomId") else {
        return Ok(invalid("roomId"));
    };
    let room = t.teams.remove_room(&t.call, &t.team, &rid).await?;
    ok(serde_json::json!({"room": doc_json(&room)}))
}

async fn update_room(t: &TeamRequest<'_>) -> Answer {
    let (Some(rid), Some(Value::Bool(is_default))) =
        (pick(&t.fields, &t.q, "roomId"), t.fields.get("isDefault"))
    else {
        return Ok(invalid("roomId"));
    };
    let room = t.teams.set_default_room(&t.call, &rid, *is_default).await?;
    ok(serde_json::json!({"room": doc_json(&room)}))
}

async fn list_rooms(t: &TeamRequest<'_>) -> Answer {
    listed(&t.teams.rooms(t.me, &t.team).await?, &t.q, "rooms")
}

async fn list_rooms_of_user(t: &TeamRequest<'_>) -> Answer {
    let Some(uid) = t.q.get("userId") else {
        return Ok(invalid("userId"));
    };
    let rooms = t.teams.rooms_of_user(t.me, &t.team, uid).await?;
    listed(&rooms, &t.q, "rooms")
}

async fn update(t: &TeamRequest<'_>) -> Answer {
    let Some(data) = t.fields.get("data").and_then(Value::as_object) else {
        return Ok(invalid("data"));
    };
    let name = data.get("name").and_then(Value::as_str);
    let kind = match data.get("type") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_f64().and_then(TeamType::from_number) {
            Some(k) => Some(k),
            None => return Ok(invalid("data.type")),
        },
    };
    t.teams.update(&t.call, &t.team, name, kind).await?;
    ok(serde_json::json!({}))
}

async fn delete(t: &TeamRequest<'_>) -> Answer {
    let Some(rooms) = strings(&t.fields, "roomsToRemove") else {
        return Ok(invalid("roomsToRemove"));
    };
    t.teams.delete(&t.call, &t.team, &rooms).await?;
    ok(serde_json::json!({}))
}

async fn convert_to_channel(t: &TeamRequest<'_>) -> Answer {
    let Some(rooms) = strings(&t.fields, "roomsToRemove") else {
        return Ok(invalid("roomsToRemove"));
    };
    t.teams.convert_to_channel(&t.call, &t.team, &rooms).await?;
    ok(serde_json::json!({}))
}

/// `channels.convertToTeam` / `groups.convertToTeam`.
async fn convert_to_team(t: &TeamRequest<'_>) -> Answer {
    let (kind, id_key, name_key) = if t.name.starts_with("channels.") {
        (TeamType::Public, "channelId", "channelName")
    } else {
        (TeamType::Private, "roomId", "roomName")
    };
    let which = match (
        pick(&t.fields, &t.q, id_key),
        pick(&t.fields, &t.q, name_key),
    ) {
        (Some(id), _) => RoomRef::Id(id),
        (None, Some(name)) => RoomRef::Name(name),
        (None, None) => return Ok(invalid(id_key)),
    };
    let team = t.teams.convert_to_team(&t.call, &which, kind).await?;
    ok(serde_json::json!({"team": doc_json(&team)}))
}

async fn autocomplete(t: &TeamRequest<'_>) -> Answer {
    let Some(name) = t.q.get("name") else {
        return Ok(invalid("name"));
    };
    let found = t.teams.autocomplete(t.me, name).await?;
    ok(serde_json::json!({"teams": found.iter().map(doc_json).collect::<Vec<_>>()}))
}
