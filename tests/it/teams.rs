//! The Team service over REST and DDP: a team and its main room, team channels, members
//! following the main room, auto-join rooms, names unique across teams and rooms, and the
//! rule that a public channel of a private team is for the team's members only, on every
//! read path (methods, streams, REST).

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{rest_get, rest_post, DdpClient};
use serde_json::{json, Value as Json};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);

/// A user on its own connection: (connection, id, resume token).
struct Person {
    ddp: DdpClient,
    id: String,
    token: String,
}

impl Person {
    async fn new(server: &common::TestServer, name: &str) -> Self {
        let (ddp, id, token) = common::registered(server, name).await;
        Self { ddp, id, token }
    }

    fn auth(&self) -> (&str, &str) {
        (&self.id, &self.token)
    }

    async fn call(&mut self, method: &str, params: Json) -> Json {
        self.ddp.call_keeping("m", method, params).await.0
    }

    async fn post(&self, server: &common::TestServer, route: &str, body: Json) -> (u16, Json) {
        rest_post(server, &format!("/api/v1/{route}"), self.auth(), body).await
    }

    async fn get(&self, server: &common::TestServer, route: &str) -> (u16, Json) {
        rest_get(server, &format!("/api/v1/{route}"), Some(self.auth())).await
    }
}

fn error_of(r: &Json) -> String {
    r["error"]["error"].to_string().trim_matches('"').to_owned()
}

fn ids(list: &Json) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|d| d["rid"].as_str().or(d["_id"].as_str()).unwrap().to_owned())
        .collect();
    out.sort();
    out
}

/// Creates a team as `owner`; returns (team id, main room id).
async fn team(
    server: &common::TestServer,
    owner: &Person,
    name: &str,
    kind: u8,
    members: &[&str],
) -> (String, String) {
    let (status, body) = owner
        .post(
            server,
            "teams.create",
            json!({"name": name, "type": kind, "members": members}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let team = &body["team"];
    (
        team["_id"].as_str().unwrap().to_owned(),
        team["roomId"].as_str().unwrap().to_owned(),
    )
}

/// The args of the next `<uid>/<event>` on stream-notify-user whose room matches `rid`.
async fn user_event(c: &mut DdpClient, event: &str, rid: &str) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = c.next_on("stream-notify-user", left).await?;
        let name = m["fields"]["eventName"].as_str().unwrap_or_default();
        let args = &m["fields"]["args"];
        let about = args[1]["rid"].as_str().or(args[1]["_id"].as_str());
        if name.ends_with(event) && about == Some(rid) {
            return Some(args.clone());
        }
    }
}

#[tokio::test]
async fn a_team_is_made_with_its_main_room_and_members_hear_of_it() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let bob = Person::new(&server, "bob").await;
    for event in ["rooms-changed", "subscriptions-changed"] {
        let key = format!("{}/{event}", ann.id);
        let frames = ann
            .ddp
            .subscribe(event, "stream-notify-user", json!([key, false]))
            .await;
        assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    }
    let (team_id, rid) = team(&server, &ann, "apollo", 0, &["bob"]).await;

    let sub = user_event(&mut ann.ddp, "subscriptions-changed", &rid)
        .await
        .expect("subscriptions-changed for the main room");
    assert_eq!(sub[0], "inserted", "{sub}");
    // The room reaches the members with its team fields (at once or in a later update).
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let args = user_event(&mut ann.ddp, "rooms-changed", &rid)
            .await
            .expect("rooms-changed with teamMain");
        if args[1]["teamMain"] == true {
            assert_eq!(args[1]["teamId"], team_id, "{args}");
            break;
        }
        assert!(!left.is_zero(), "no rooms-changed carried teamMain");
    }

    let (status, info) = bob
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (&info["teamInfo"]["name"], &info["teamInfo"]["type"]),
        (&json!("apollo"), &json!(0))
    );
    let (_, by_name) = bob.get(&server, "teams.info?teamName=apollo").await;
    assert_eq!(by_name["teamInfo"]["_id"], team_id);

    let (_, list) = bob.get(&server, "teams.list").await;
    assert_eq!(list["teams"][0]["_id"], team_id, "{list}");
    assert_eq!(list["teams"][0]["numberOfUsers"], 2, "{list}");
    assert_eq!(list["total"], 1, "{list}");

    let (_, members) = bob
        .get(&server, &format!("teams.members?teamId={team_id}"))
        .await;
    let mut names: Vec<(String, Json)> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["user"]["username"].as_str().unwrap().to_owned(),
                m["roles"].clone(),
            )
        })
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        vec![
            ("ann".to_owned(), json!(["owner"])),
            ("bob".to_owned(), json!([]))
        ]
    );
    let room = ann
        .call("getRoomByTypeAndName", json!(["c", "apollo"]))
        .await;
    assert_eq!(room["result"]["teamMain"], true, "{room}");

    // A plain user may not list every team; the administrator may.
    let (status, _) = bob.get(&server, "teams.listAll").await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn names_are_unique_across_teams_and_rooms_and_bad_requests_say_why() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    team(&server, &ann, "apollo", 0, &[]).await;
    let r = ann.call("createChannel", json!(["lobby", []])).await;
    assert!(r.get("error").is_none(), "{r}");
    for (name, code) in [
        ("apollo", "team-name-already-exists"),
        ("APOLLO", "team-name-already-exists"),
        ("lobby", "room-name-already-exists"),
        ("general", "room-name-already-exists"),
        ("bad name", "error-invalid-name"),
    ] {
        let (status, body) = ann
            .post(&server, "teams.create", json!({"name": name, "type": 0}))
            .await;
        assert_eq!(
            (status, body["errorType"].as_str()),
            (400, Some(code)),
            "{name}: {body}"
        );
    }
    // A room cannot take a team's name either.
    let r = ann.call("createChannel", json!(["apollo", []])).await;
    assert_eq!(error_of(&r), "error-duplicate-channel-name", "{r}");

    for (route, body) in [
        ("teams.create", json!({"type": 0})),
        ("teams.create", json!({"name": "x", "type": 7})),
        ("teams.create", json!({"name": "x", "members": "bob"})),
        (
            "teams.addMembers",
            json!({"teamName": "apollo", "members": [{"userId": 5}]}),
        ),
        ("teams.delete", json!({"roomsToRemove": []})),
        ("teams.removeRoom", json!({"teamName": "apollo"})),
        (
            "teams.update",
            json!({"teamName": "apollo", "data": {"type": "$ne"}}),
        ),
    ] {
        let (status, reply) = ann.post(&server, route, body.clone()).await;
        assert_eq!(status, 400, "{route} {body}: {reply}");
        assert_eq!(reply["success"], false);
    }
    let (status, reply) = ann
        .post(&server, "teams.info", json!({"teamName": {"$ne": ""}}))
        .await;
    assert!(status >= 400, "{reply}");
    let (status, reply) = ann.get(&server, "teams.info?teamName=nothing").await;
    assert_eq!(
        (status, reply["errorType"].as_str()),
        (400, Some("team-not-found"))
    );
    let (status, _) = rest_get(&server, "/api/v1/teams.list", None).await;
    assert_eq!(status, 401);
    server.shutdown().await;
}

#[tokio::test]
async fn a_private_teams_public_channel_is_for_its_members_only() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let mut bob = Person::new(&server, "bob").await;
    let mut eve = Person::new(&server, "eve").await;
    let (team_id, main) = team(&server, &ann, "secret-team", 1, &["bob"]).await;
    let r = ann
        .call(
            "createChannel",
            json!(["inner", [], false, {}, {"teamId": team_id}]),
        )
        .await;
    let rid = r["result"]["rid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    assert_eq!(r["result"]["t"], "c");

    // A member of the team, though not of the channel, sees and joins it.
    let (_, rooms) = bob
        .get(&server, &format!("teams.listRooms?teamId={team_id}"))
        .await;
    assert_eq!(ids(&rooms["rooms"]), vec![rid.clone()], "{rooms}");
    let frames = bob
        .ddp
        .subscribe("s", "stream-room-messages", json!([rid, false]))
        .await;
    assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    let joined = bob.call("joinRoom", json!([rid])).await;
    assert!(joined.get("error").is_none(), "{joined}");

    // A stranger learns nothing of it, by any path.
    let frames = eve
        .ddp
        .subscribe("s", "stream-room-messages", json!([rid, false]))
        .await;
    assert_eq!(frames.last().unwrap()["msg"], "nosub", "{frames:?}");
    for (method, params) in [
        ("joinRoom", json!([rid])),
        ("getRoomIdByNameOrId", json!(["inner"])),
        ("getRoomByTypeAndName", json!(["c", "inner"])),
    ] {
        let r = eve.call(method, params.clone()).await;
        assert!(r.get("error").is_some(), "{method} {params}: {r}");
    }
    // loadHistory answers a reader without access `false`, as Rocket.Chat does.
    let history = eve.call("loadHistory", json!([rid, null, 10, null])).await;
    assert_eq!(history["result"], false, "{history}");
    let visible = eve.call("rooms/get", json!([])).await;
    assert!(!ids(&visible["result"]).contains(&rid), "{visible}");
    for route in [
        format!("teams.info?teamId={team_id}"),
        format!("teams.listRooms?teamId={team_id}"),
        format!("teams.members?teamId={team_id}"),
        "teams.info?teamName=secret-team".to_owned(),
        format!("channels.info?roomId={rid}"),
        format!("channels.history?roomId={rid}"),
        format!("channels.members?roomId={rid}"),
        format!("rooms.info?roomId={main}"),
    ] {
        let (status, body) = eve.get(&server, &route).await;
        assert!(matches!(status, 400 | 403), "{route}: {status} {body}");
        assert!(!body.to_string().contains("inner"), "{route}: {body}");
    }
    let (_, list) = eve.get(&server, "channels.list").await;
    assert!(!list.to_string().contains(&rid), "{list}");
    let (_, found) = eve.get(&server, "teams.autocomplete?name=sec").await;
    assert_eq!(found["teams"], json!([]), "{found}");
    for (route, body) in [
        (
            "teams.addMembers",
            json!({"teamId": team_id, "members": [{"userId": eve.id}]}),
        ),
        (
            "teams.delete",
            json!({"teamId": team_id, "roomsToRemove": []}),
        ),
        ("teams.leave", json!({"teamId": team_id})),
    ] {
        let (status, reply) = eve.post(&server, route, body).await;
        assert!(status >= 400, "{route}: {reply}");
    }

    // A message in the channel reaches the member, never the stranger.
    let sent = ann
        .call("sendMessage", json!([{"rid": rid, "msg": "team only"}]))
        .await;
    assert!(sent.get("error").is_none(), "{sent}");
    let m = bob.ddp.next_on("stream-room-messages", SOON).await;
    assert_eq!(m.unwrap()["fields"]["args"][0]["msg"], "team only");
    assert!(eve
        .ddp
        .next_on("stream-room-messages", Duration::from_millis(300))
        .await
        .is_none());

    // A non-owner member may not make channels in the team.
    let r = bob
        .call(
            "createChannel",
            json!(["bobs", [], false, {}, {"teamId": team_id}]),
        )
        .await;
    assert_eq!(error_of(&r), "error-not-allowed", "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_public_room_moved_into_a_private_team_drops_strangers_listeners() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let mut eve = Person::new(&server, "eve").await;
    let (team_id, _) = team(&server, &ann, "vault", 1, &[]).await;
    let r = ann.call("createChannel", json!(["hall", []])).await;
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    let frames = eve
        .ddp
        .subscribe("s", "stream-room-messages", json!([rid, false]))
        .await;
    assert_eq!(frames.last().unwrap()["msg"], "ready");
    let (status, moved) = ann
        .post(
            &server,
            "teams.addRooms",
            json!({"teamId": team_id, "rooms": [rid]}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["rooms"][0]["teamId"], team_id);
    // Let the room's change reach the streams before the message.
    tokio::time::sleep(Duration::from_millis(300)).await;
    ann.call("sendMessage", json!([{"rid": rid, "msg": "moved in"}]))
        .await;
    while let Some(m) = eve
        .ddp
        .next_on("stream-room-messages", Duration::from_millis(500))
        .await
    {
        assert_ne!(m["fields"]["args"][0]["msg"], "moved in", "{m}");
    }
    let (status, _) = ann
        .post(
            &server,
            "teams.addRooms",
            json!({"teamId": team_id, "rooms": [rid]}),
        )
        .await;
    assert_eq!(status, 400, "a room already in a team");
    let (_, rooms) = ann
        .get(&server, &format!("teams.listRooms?teamId={team_id}"))
        .await;
    assert_eq!(ids(&rooms["rooms"]), vec![rid.clone()]);
    let (status, body) = ann
        .post(
            &server,
            "teams.removeRoom",
            json!({"teamId": team_id, "roomId": rid}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, rooms) = ann
        .get(&server, &format!("teams.listRooms?teamId={team_id}"))
        .await;
    assert_eq!(rooms["rooms"], json!([]));
    // Out of the team, the channel is public again.
    let frames = eve
        .ddp
        .subscribe("s2", "stream-room-messages", json!([rid, false]))
        .await;
    assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn members_follow_the_main_room_and_leave_its_auto_join_rooms() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let mut bob = Person::new(&server, "bob").await;
    let cy = Person::new(&server, "cy").await;
    let (team_id, main) = team(&server, &ann, "crew", 0, &[]).await;
    let r = ann
        .call(
            "createChannel",
            json!(["crew-news", [], false, {}, {"teamId": team_id}]),
        )
        .await;
    let news = r["result"]["rid"].as_str().unwrap().to_owned();
    let (status, body) = ann
        .post(
            &server,
            "teams.updateRoom",
            json!({"roomId": news, "isDefault": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room"]["teamDefault"], true);
    let (status, _) = bob
        .post(
            &server,
            "teams.updateRoom",
            json!({"roomId": news, "isDefault": false}),
        )
        .await;
    assert_eq!(status, 403, "only the team's owner marks auto-join rooms");

    // Joining the main room makes a member, who joins the auto-join room with it.
    let joined = bob.call("joinRoom", json!([main])).await;
    assert!(joined.get("error").is_none(), "{joined}");
    let (_, of_bob) = ann
        .get(
            &server,
            &format!("teams.listRoomsOfUser?teamId={team_id}&userId={}", bob.id),
        )
        .await;
    assert_eq!(ids(&of_bob["rooms"]), vec![news.clone()], "{of_bob}");
    let (_, list) = bob.get(&server, "teams.list").await;
    assert_eq!(list["teams"][0]["_id"], team_id, "{list}");

    // A role a team member cannot hold is refused before anything is written.
    let (status, body) = ann
        .post(
            &server,
            "teams.addMembers",
            json!({"teamId": team_id, "members": [{"userId": cy.id, "roles": ["admin"]}]}),
        )
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("error-invalid-role")),
        "{body}"
    );
    let (_, members) = ann
        .get(&server, &format!("teams.members?teamId={team_id}"))
        .await;
    assert_eq!(members["total"], 2, "cy was added all the same: {members}");

    // Added by the owner with a role.
    let (status, body) = ann
        .post(
            &server,
            "teams.addMembers",
            json!({"teamId": team_id, "members": [{"userId": cy.id, "roles": ["moderator"]}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, members) = ann
        .get(&server, &format!("teams.members?teamId={team_id}"))
        .await;
    assert_eq!(members["total"], 3, "{members}");
    let cy_entry = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"]["_id"] == cy.id)
        .unwrap()
        .clone();
    assert_eq!(cy_entry["roles"], json!(["moderator"]));
    let (status, _) = ann
        .post(
            &server,
            "teams.updateMember",
            json!({"teamId": team_id, "member": {"userId": cy.id, "roles": []}}),
        )
        .await;
    assert_eq!(status, 200);

    // The last owner neither leaves nor loses the role; a plain member cannot remove others.
    let (status, body) = ann
        .post(&server, "teams.leave", json!({"teamId": team_id}))
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("error-you-are-last-owner"))
    );
    let (status, body) = ann
        .post(
            &server,
            "teams.updateMember",
            json!({"teamId": team_id, "member": {"userId": ann.id, "roles": []}}),
        )
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (400, Some("error-you-are-last-owner"))
    );
    let (status, _) = bob
        .post(
            &server,
            "teams.removeMember",
            json!({"teamId": team_id, "userId": cy.id}),
        )
        .await;
    assert_eq!(status, 403);

    // Leaving the team leaves its auto-join room too.
    let (status, body) = bob
        .post(&server, "teams.leave", json!({"teamId": team_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    let subs = bob.call("subscriptions/get", json!([])).await;
    let rids = ids(&subs["result"]);
    assert!(!rids.contains(&main) && !rids.contains(&news), "{subs}");
    let (_, list) = bob.get(&server, "teams.list").await;
    assert_eq!(list["teams"], json!([]), "{list}");

    // Removed by the owner: out of the team and its main room.
    let (status, body) = ann
        .post(
            &server,
            "teams.removeMember",
            json!({"teamId": team_id, "userId": cy.id}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, members) = ann
        .get(&server, &format!("teams.members?teamId={team_id}"))
        .await;
    assert_eq!(members["total"], 1, "{members}");
    let left = ann.call("getUsersOfRoom", json!([main, true])).await;
    assert!(!left.to_string().contains("\"cy\""), "{left}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_team_is_renamed_made_private_and_deleted_with_the_rooms_asked() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let bob = Person::new(&server, "bob").await;
    let eve = Person::new(&server, "eve").await;
    let (team_id, main) = team(&server, &ann, "orbit", 0, &["bob"]).await;
    let mut rooms = Vec::new();
    for name in ["orbit-a", "orbit-b"] {
        let r = ann
            .call(
                "createChannel",
                json!([name, [], false, {}, {"teamId": team_id}]),
            )
            .await;
        rooms.push(r["result"]["rid"].as_str().unwrap().to_owned());
    }
    let (status, _) = bob
        .post(
            &server,
            "teams.update",
            json!({"teamId": team_id, "data": {"name": "mine"}}),
        )
        .await;
    assert_eq!(status, 403, "a member is not the owner");
    let (status, body) = ann
        .post(
            &server,
            "teams.update",
            json!({"teamId": team_id, "data": {"name": "orbit2", "type": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, info) = bob
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(
        (&info["teamInfo"]["name"], &info["teamInfo"]["type"]),
        (&json!("orbit2"), &json!(1))
    );
    let room = ann
        .call("getRoomByTypeAndName", json!(["p", "orbit2"]))
        .await;
    assert_eq!(room["result"]["_id"], main, "{room}");
    // Private now: a stranger no longer sees it; its old name is free again.
    let (status, _) = eve
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(status, 400);
    let (_, found) = bob.get(&server, "teams.autocomplete?name=ORB").await;
    assert_eq!(found["teams"][0]["_id"], team_id, "{found}");
    let (status, body) = eve
        .post(&server, "teams.create", json!({"name": "orbit", "type": 0}))
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = ann
        .post(
            &server,
            "teams.delete",
            json!({"teamId": team_id, "roomsToRemove": [rooms[0]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = ann
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(status, 400);
    let gone = ann.call("getRoomIdByNameOrId", json!([rooms[0]])).await;
    assert!(gone.get("error").is_some(), "{gone}");
    let kept = ann
        .call("getRoomByTypeAndName", json!(["c", "orbit-b"]))
        .await;
    assert!(kept["result"].get("teamId").is_none(), "{kept}");
    let main_gone = ann.call("getRoomIdByNameOrId", json!([main])).await;
    assert!(main_gone.get("error").is_some(), "{main_gone}");
    // The name is free for a new team.
    team(&server, &ann, "orbit2", 0, &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn listeners_lose_a_private_teams_channel_when_they_leave_or_it_turns_private() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let mut bob = Person::new(&server, "bob").await;
    let mut eve = Person::new(&server, "eve").await;
    let (team_id, _) = team(&server, &ann, "guild", 0, &["bob"]).await;
    let r = ann
        .call(
            "createChannel",
            json!(["guild-hall", [], false, {}, {"teamId": team_id}]),
        )
        .await;
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    for who in [&mut bob, &mut eve] {
        let frames = who
            .ddp
            .subscribe("s", "stream-room-messages", json!([rid, false]))
            .await;
        assert_eq!(
            frames.last().unwrap()["msg"],
            "ready",
            "a public team's channel"
        );
    }
    // The team turns private: the stranger's listener goes, the member's stays.
    let (status, body) = ann
        .post(
            &server,
            "teams.update",
            json!({"teamId": team_id, "data": {"type": 1}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ann.call("sendMessage", json!([{"rid": rid, "msg": "private now"}]))
        .await;
    let heard = bob.ddp.next_on("stream-room-messages", SOON).await;
    assert_eq!(heard.unwrap()["fields"]["args"][0]["msg"], "private now");
    while let Some(m) = eve
        .ddp
        .next_on("stream-room-messages", Duration::from_millis(500))
        .await
    {
        assert_ne!(m["fields"]["args"][0]["msg"], "private now", "{m}");
    }
    // The member leaves the team: its listener goes too.
    let (status, body) = bob
        .post(&server, "teams.leave", json!({"teamId": team_id}))
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    ann.call(
        "sendMessage",
        json!([{"rid": rid, "msg": "after bob left"}]),
    )
    .await;
    while let Some(m) = bob
        .ddp
        .next_on("stream-room-messages", Duration::from_millis(500))
        .await
    {
        assert_ne!(m["fields"]["args"][0]["msg"], "after bob left", "{m}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn a_channel_becomes_a_team_and_a_team_becomes_a_channel_again() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let mut bob = Person::new(&server, "bob").await;
    let eve = Person::new(&server, "eve").await;
    let made = ann.call("createChannel", json!(["harbour", ["bob"]])).await;
    let rid = made["result"]["rid"].as_str().unwrap().to_owned();
    let secret = ann.call("createPrivateGroup", json!(["cellar", []])).await;
    let cellar = secret["result"]["rid"].as_str().unwrap().to_owned();

    // Without a login, no conversion route answers anything but 401.
    for (route, body) in [
        ("channels.convertToTeam", json!({"channelId": rid})),
        ("groups.convertToTeam", json!({"roomId": cellar})),
        ("teams.convertToChannel", json!({"teamName": "harbour"})),
    ] {
        let (status, text) = common::http(
            server.addr,
            "POST",
            &format!("/api/v1/{route}"),
            body.to_string().as_bytes(),
        )
        .await;
        assert_eq!(status, 401, "{route}: {text}");
    }
    // Who may not: a member without edit-room, a stranger; a group the caller cannot see
    // is answered as none, and a group is not a channel.
    let (status, body) = bob
        .post(&server, "channels.convertToTeam", json!({"channelId": rid}))
        .await;
    assert_eq!(status, 403, "a plain member: {body}");
    let (status, body) = eve
        .post(
            &server,
            "groups.convertToTeam",
            json!({"roomName": "cellar"}),
        )
        .await;
    assert_eq!(
        (status, &body["errorType"]),
        (400, &json!("error-room-not-found")),
        "{body}"
    );
    let (status, body) = ann
        .post(
            &server,
            "channels.convertToTeam",
            json!({"channelId": cellar}),
        )
        .await;
    assert_eq!(
        (status, &body["errorType"]),
        (400, &json!("error-room-not-found")),
        "{body}"
    );
    let (status, body) = ann
        .post(
            &server,
            "channels.convertToTeam",
            json!({"channelId": {"$ne": ""}}),
        )
        .await;
    assert_eq!(status, 400, "an id is a string: {body}");

    // The owner converts: the room is the team's main room, its members the team's.
    let (status, body) = ann
        .post(
            &server,
            "channels.convertToTeam",
            json!({"channelName": "harbour"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let team_id = body["team"]["_id"].as_str().unwrap().to_owned();
    assert_eq!(body["team"]["roomId"], rid.as_str());
    assert_eq!(body["team"]["name"], "harbour");
    assert_eq!(body["team"]["type"], 0);
    let room = bob
        .call("getRoomByTypeAndName", json!(["c", "harbour"]))
        .await;
    assert_eq!(room["result"]["teamMain"], true, "{room}");
    assert_eq!(room["result"]["teamId"], team_id.as_str());
    let (_, members) = bob
        .get(&server, &format!("teams.members?teamId={team_id}"))
        .await;
    let mut names: Vec<String> = members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user"]["username"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ann", "bob"], "{members}");
    let (status, body) = ann
        .post(&server, "channels.convertToTeam", json!({"channelId": rid}))
        .await;
    assert_eq!(status, 400, "a team's room again: {body}");
    let (status, body) = ann
        .post(&server, "groups.convertToTeam", json!({"roomId": cellar}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["team"]["type"], 1);

    // And back: a plain member may not; the owner may. Of the team's rooms, the one asked
    // goes, the other stays as a room of its own; the main room keeps members and messages.
    let mut team_rooms = Vec::new();
    for name in ["harbour-a", "harbour-b"] {
        let r = ann
            .call(
                "createChannel",
                json!([name, [], false, {}, {"teamId": team_id}]),
            )
            .await;
        team_rooms.push(r["result"]["rid"].as_str().unwrap().to_owned());
    }
    let sent = bob
        .call(
            "sendMessage",
            json!([{"_id": "m-harbour-1", "rid": rid, "msg": "still here"}]),
        )
        .await;
    assert!(sent.get("result").is_some(), "{sent}");
    let (status, _) = bob
        .post(
            &server,
            "teams.convertToChannel",
            json!({"teamId": team_id}),
        )
        .await;
    assert_eq!(status, 403);
    let (status, body) = ann
        .post(
            &server,
            "teams.convertToChannel",
            json!({"teamName": "harbour", "roomsToRemove": [team_rooms[0]]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = ann
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(status, 400, "the team is gone");
    let room = bob
        .call("getRoomByTypeAndName", json!(["c", "harbour"]))
        .await;
    assert_eq!(room["result"]["_id"], rid.as_str(), "{room}");
    assert!(room["result"].get("teamMain").is_none(), "{room}");
    assert!(room["result"].get("teamId").is_none(), "{room}");
    let history = bob.call("loadHistory", json!([rid, null, 10, null])).await;
    assert!(history.to_string().contains("still here"), "{history}");
    let gone = ann
        .call("getRoomIdByNameOrId", json!([team_rooms[0]]))
        .await;
    assert!(gone.get("error").is_some(), "{gone}");
    let kept = ann
        .call("getRoomByTypeAndName", json!(["c", "harbour-b"]))
        .await;
    assert!(kept["result"].get("teamId").is_none(), "{kept}");
    // The team's name is free again, and the channel can become a team once more.
    let (status, body) = ann
        .post(&server, "channels.convertToTeam", json!({"channelId": rid}))
        .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn ending_a_team_with_a_room_the_caller_may_not_erase_changes_nothing() {
    let server = common::spawn_with_admin().await;
    let mut ann = Person::new(&server, "ann").await;
    let (team_id, main) = team(&server, &ann, "keel", 0, &[]).await;
    let mine = ann
        .call(
            "createChannel",
            json!(["keel-mine", [], false, {}, {"teamId": team_id}]),
        )
        .await;
    let mine = mine["result"]["rid"].as_str().unwrap().to_owned();
    // The administrator moves a room of their own into ann's team; ann does not own it.
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (r, _) = boss
        .call("c", "createChannel", json!(["keel-boss", []]))
        .await;
    let theirs = r["result"]["rid"].as_str().unwrap().to_owned();
    let boss_login = common::rest_login(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (status, body) = rest_post(
        &server,
        "/api/v1/teams.addRooms",
        (&boss_login.0, &boss_login.1),
        json!({"teamId": team_id, "rooms": [theirs]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    for route in ["teams.convertToChannel", "teams.delete"] {
        let (status, body) = ann
            .post(
                &server,
                route,
                json!({"teamId": team_id, "roomsToRemove": [mine, theirs]}),
            )
            .await;
        assert_eq!(status, 403, "{route}: {body}");
    }
    // Nothing went: the team, its main room and both rooms are as they were.
    let (status, _) = ann
        .get(&server, &format!("teams.info?teamId={team_id}"))
        .await;
    assert_eq!(status, 200);
    for rid in [&main, &mine, &theirs] {
        let (r, _) = boss.call("g", "getRoomIdByNameOrId", json!([rid])).await;
        assert!(r.get("result").is_some(), "{rid}: {r}");
    }
    server.shutdown().await;
}
