//! The chat services' hook points, on the real server: a *will* hook refuses and rewrites a
//! message on every path a message is stored by (a user's `sendMessage`, a bot's
//! `chat.postMessage`, the system messages of joins and leaves), and a *has been* hook sees
//! each stored message exactly once. Joins, leaves, room creation, user creation, logins,
//! edits, deletes and reactions each reach their points too.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use comet::chat::call::Call;
use comet::chat::hooks::{
    ChatHooks, HookFuture, MembershipEvent, MessageEvent, Origin, ReactionEvent, Verdict,
};
use comet::model::{Document, Value};
use common::DdpClient;
use serde_json::{json, Value as Json};
use std::sync::{Arc, Mutex};

/// What the hook saw, in order.
#[derive(Default)]
struct Seen {
    saved: Vec<(Origin, String, String)>,
    events: Vec<String>,
}

/// Refuses any text with "forbidden" and any leave message, rewrites "rewrite-me" and the
/// join messages, and records every point it is called at.
struct Moderator {
    seen: Arc<Mutex<Seen>>,
}

fn said(message: &Document) -> String {
    message
        .get("msg")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn kind(message: &Document) -> Option<&str> {
    message.get("t").and_then(Value::as_str)
}

fn name_of(doc: &Document, key: &str) -> String {
    doc.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn ready<T: Send + 'static>(value: T) -> HookFuture<'static, T> {
    Box::pin(std::future::ready(value))
}

impl Moderator {
    fn note(&self, what: String) {
        self.seen.lock().unwrap().events.push(what);
    }
}

impl ChatHooks for Moderator {
    fn name(&self) -> &str {
        "test-moderator"
    }

    fn message_will_be_saved<'a>(
        &'a self,
        event: MessageEvent<'a>,
    ) -> HookFuture<'a, Verdict<Document>> {
        let text = said(event.message);
        let verdict = if text.contains("forbidden") || kind(event.message) == Some("ul") {
            Verdict::Refuse(format!("not here: {text}"))
        } else if text.contains("rewrite-me") || matches!(kind(event.message), Some("uj" | "au")) {
            let mut rewritten = event.message.clone();
            let new_text = format!("{} (checked)", text.replace("rewrite-me", "rewritten"));
            rewritten.insert("msg".into(), Value::from(new_text.as_str()));
            // An attempt to move the message elsewhere is undone by the service.
            rewritten.insert("rid".into(), Value::from("somewhere-else"));
            Verdict::Replace(rewritten)
        } else {
            Verdict::Keep
        };
        ready(verdict)
    }

    fn message_has_been_saved<'a>(
        &'a self,
        event: MessageEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.seen.lock().unwrap().saved.push((
            event.origin,
            name_of(event.message, "_id"),
            said(event.message),
        ));
        ready(())
    }

    fn message_will_be_edited<'a>(
        &'a self,
        _before: &'a Document,
        after: &'a Document,
    ) -> HookFuture<'a, Verdict<Document>> {
        let text = said(after);
        ready(if text.contains("forbidden") {
            Verdict::Refuse("no".into())
        } else {
            let mut rewritten = after.clone();
            rewritten.insert("msg".into(), Value::from(format!("{text}!").as_str()));
            Verdict::Replace(rewritten)
        })
    }

    fn message_has_been_edited<'a>(&'a self, message: &'a Document) -> HookFuture<'a, ()> {
        self.note(format!("edited {}", said(message)));
        ready(())
    }

    fn message_will_be_deleted<'a>(
        &'a self,
        message: &'a Document,
        _by: &'a Document,
    ) -> HookFuture<'a, Verdict<()>> {
        ready(if said(message).contains("keep") {
            Verdict::Refuse("kept".into())
        } else {
            Verdict::Keep
        })
    }

    fn message_has_been_deleted<'a>(
        &'a self,
        message: &'a Document,
        _by: &'a Document,
    ) -> HookFuture<'a, ()> {
        self.note(format!("deleted {}", said(message)));
        ready(())
    }

    fn reaction_will_change<'a>(&'a self, event: ReactionEvent<'a>) -> HookFuture<'a, Verdict<()>> {
        ready(if event.reaction == ":poop:" {
            Verdict::Refuse("be nice".into())
        } else {
            Verdict::Keep
        })
    }

    fn reaction_has_changed<'a>(&'a self, event: ReactionEvent<'a>) -> HookFuture<'a, ()> {
        self.note(format!("reaction {} {}", event.reaction, event.added));
        ready(())
    }

    fn room_will_be_created<'a>(&'a self, room: &'a Document) -> HookFuture<'a, Verdict<Document>> {
        ready(if name_of(room, "name").starts_with("nope") {
            Verdict::Refuse("no such rooms".into())
        } else {
            let mut rewritten = room.clone();
            rewritten.insert("topic".into(), Value::from("set by a hook"));
            rewritten.insert("name".into(), Value::from("renamed-by-hook"));
            Verdict::Replace(rewritten)
        })
    }

    fn room_has_been_created<'a>(
        &'a self,
        room: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.note(format!("room {}", name_of(room, "name")));
        ready(())
    }

    fn user_will_join<'a>(&'a self, event: MembershipEvent<'a>) -> HookFuture<'a, Verdict<()>> {
        ready(if name_of(event.user, "username") == "mallory" {
            Verdict::Refuse("banned".into())
        } else {
            Verdict::Keep
        })
    }

    fn user_has_joined<'a>(
        &'a self,
        event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.note(format!(
            "joined {} {}",
            name_of(event.room, "name"),
            name_of(event.user, "username")
        ));
        ready(())
    }

    fn user_has_left<'a>(
        &'a self,
        event: MembershipEvent<'a>,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.note(format!(
            "left {} {}",
            name_of(event.room, "name"),
            name_of(event.user, "username")
        ));
        ready(())
    }

    fn user_will_be_created<'a>(&'a self, user: &'a Document) -> HookFuture<'a, Verdict<Document>> {
        ready(if name_of(user, "username") == "refused-user" {
            Verdict::Refuse("not this one".into())
        } else {
            Verdict::Keep
        })
    }

    fn user_has_been_created<'a>(
        &'a self,
        user: &'a Document,
        _call: &'a Call<'a>,
    ) -> HookFuture<'a, ()> {
        self.note(format!("created {}", name_of(user, "username")));
        ready(())
    }

    fn user_will_log_in<'a>(&'a self, user: &'a Document) -> HookFuture<'a, Verdict<()>> {
        ready(if user.get("locked") == Some(&Value::Bool(true)) {
            Verdict::Refuse("locked out by a hook".into())
        } else {
            Verdict::Keep
        })
    }

    fn user_has_logged_in<'a>(&'a self, user: &'a Document) -> HookFuture<'a, ()> {
        self.note(format!("login {}", name_of(user, "username")));
        ready(())
    }
}

async fn call(c: &mut DdpClient, method: &str, params: Json) -> Json {
    c.call_keeping("m", method, params).await.0
}

async fn history(c: &mut DdpClient, rid: &str) -> Vec<Json> {
    let page = call(c, "loadHistory", json!([rid, null, 100, null])).await;
    page["result"]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("{page}"))
        .clone()
}

#[tokio::test]
async fn a_will_hook_refuses_and_rewrites_on_every_insert_path_and_a_has_been_hook_sees_each_once()
{
    let server = common::spawn_with_admin().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    server.hooks.add(Arc::new(Moderator { seen: seen.clone() }));
    let mut admin = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let r = call(&mut admin, "createChannel", json!(["talk", []])).await;
    let rid = r["result"]["rid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();

    // A user's message: refused with the hook's reason, or stored rewritten.
    let r = call(
        &mut admin,
        "sendMessage",
        json!([{"rid": rid, "msg": "a forbidden word"}]),
    )
    .await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    assert_eq!(r["error"]["reason"], "not here: a forbidden word", "{r}");
    let r = call(
        &mut admin,
        "sendMessage",
        json!([{"rid": rid, "msg": "please rewrite-me @boss"}]),
    )
    .await;
    assert_eq!(
        r["result"]["msg"], "please rewritten @boss (checked)",
        "{r}"
    );
    assert_eq!(
        r["result"]["rid"],
        rid.as_str(),
        "a hook cannot move a message"
    );
    // Mentions follow the final text.
    assert_eq!(r["result"]["mentions"][0]["username"], "boss", "{r}");
    let r = call(
        &mut admin,
        "sendMessage",
        json!([{"rid": rid, "msg": "plain"}]),
    )
    .await;
    assert_eq!(r["result"]["msg"], "plain", "{r}");

    // A bot's message over REST.
    let (_robo, robo_id, _) = common::registered(&server, "robo").await;
    common::update_elsewhere(
        &server,
        "users",
        json!({"_id": robo_id}),
        json!({"$set": {"roles": ["user", "bot"]}}),
    )
    .await;
    let r = call(
        &mut admin,
        "addUsersToRoom",
        json!([{"rid": rid, "users": ["robo"]}]),
    )
    .await;
    assert_eq!(r["result"], json!(true), "{r}");
    let robo = common::rest_login(&server, "robo", "pw").await;
    let (status, body) = common::rest_post(
        &server,
        "/api/v1/chat.postMessage",
        (&robo.0, &robo.1),
        json!({"roomId": rid, "text": "bot says forbidden things"}),
    )
    .await;
    assert_ne!(status, 200, "{body}");
    assert!(body.to_string().contains("error-app-prevented"), "{body}");
    let (status, body) = common::rest_post(
        &server,
        "/api/v1/chat.postMessage",
        (&robo.0, &robo.1),
        json!({"roomId": rid, "text": "bot can rewrite-me"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["message"]["msg"], "bot can rewritten (checked)",
        "{body}"
    );

    // System messages: a join's is rewritten, a leave's refused (the leave itself stands).
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let r = call(&mut ann, "joinRoom", json!([rid])).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let r = call(&mut ann, "leaveRoom", json!([rid])).await;
    assert!(r.get("error").is_none(), "{r}");

    let stored = history(&mut admin, &rid).await;
    let texts: Vec<(Option<&str>, &str)> = stored
        .iter()
        .rev()
        .map(|m| (m["t"].as_str(), m["msg"].as_str().unwrap_or_default()))
        .collect();
    // robo's join (added by the admin) and ann's join are rewritten; ann's leave is not
    // there; nothing refused was stored.
    assert_eq!(
        texts,
        vec![
            (None, "please rewritten @boss (checked)"),
            (None, "plain"),
            (Some("au"), "robo (checked)"),
            (None, "bot can rewritten (checked)"),
            (Some("uj"), "ann (checked)"),
        ],
        "{stored:?}"
    );
    let members = call(&mut admin, "getUsersOfRoom", json!([rid, true])).await;
    assert!(
        !members.to_string().contains("\"ann\""),
        "ann left: {members}"
    );

    // The has-been hook saw each stored message exactly once, with where it came from.
    let saved = seen.lock().unwrap().saved.clone();
    let mut ids: Vec<&String> = saved.iter().map(|(_, id, _)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        saved.len(),
        "a message was seen twice: {saved:?}"
    );
    let in_talk: Vec<(Origin, &str)> = saved
        .iter()
        .filter(|(_, id, _)| stored.iter().any(|m| m["_id"] == id.as_str()))
        .map(|(origin, _, text)| (*origin, text.as_str()))
        .collect();
    assert_eq!(
        in_talk,
        vec![
            (Origin::User, "please rewritten @boss (checked)"),
            (Origin::User, "plain"),
            (Origin::System, "robo (checked)"),
            (Origin::Bot, "bot can rewritten (checked)"),
            (Origin::System, "ann (checked)"),
        ]
    );
    assert_eq!(
        stored.len(),
        in_talk.len(),
        "every stored message was seen: {saved:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn edits_deletes_reactions_rooms_joins_users_and_logins_reach_their_hook_points() {
    let server = common::spawn_with_admin().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    server.hooks.add(Arc::new(Moderator { seen: seen.clone() }));
    let mut admin = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;

    // Room creation: refused, or rewritten (the name is kept, a topic added).
    let r = call(&mut admin, "createChannel", json!(["nope-room", []])).await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let r = call(&mut admin, "createChannel", json!(["fine", []])).await;
    let rid = r["result"]["rid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned();
    let info = call(&mut admin, "getRoomByTypeAndName", json!(["c", "fine"])).await;
    assert_eq!(info["result"]["topic"], "set by a hook", "{info}");
    assert_eq!(info["result"]["name"], "fine", "{info}");

    // User creation: refused (and the name stays free), or created; a created user joins
    // the default channels through its own hook point.
    let (mut c, _) = DdpClient::connect(&server).await;
    let r = call(
        &mut c,
        "createUser",
        json!([{"username": "refused-user", "email": "r@example.com", "password": "pw"}]),
    )
    .await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let (mut mallory, _, _) = common::registered(&server, "mallory").await;
    let (mut bea, _, _) = common::registered(&server, "bea").await;
    // Joins: refused for mallory.
    let r = call(&mut mallory, "joinRoom", json!([rid])).await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let r = call(&mut bea, "joinRoom", json!([rid])).await;
    assert_eq!(r["result"], json!(true), "{r}");

    // Edits: rewritten, or refused with the text unchanged.
    let r = call(
        &mut bea,
        "sendMessage",
        json!([{"rid": rid, "msg": "first"}]),
    )
    .await;
    let mid = r["result"]["_id"].as_str().unwrap().to_owned();
    let r = call(
        &mut bea,
        "updateMessage",
        json!([{"_id": mid, "rid": rid, "msg": "second"}]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(
        &mut bea,
        "updateMessage",
        json!([{"_id": mid, "rid": rid, "msg": "forbidden"}]),
    )
    .await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let r = call(&mut bea, "getSingleMessage", json!([mid])).await;
    assert_eq!(r["result"]["msg"], "second!", "{r}");

    // Reactions: refused, or set.
    let r = call(&mut bea, "setReaction", json!([":poop:", mid])).await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let r = call(&mut bea, "setReaction", json!([":smile:", mid])).await;
    assert!(r.get("error").is_none(), "{r}");

    // Deletes: refused, or done.
    let r = call(
        &mut bea,
        "sendMessage",
        json!([{"rid": rid, "msg": "keep me"}]),
    )
    .await;
    let kept = r["result"]["_id"].as_str().unwrap().to_owned();
    let r = call(&mut bea, "deleteMessage", json!([{"_id": kept}])).await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    let r = call(&mut bea, "deleteMessage", json!([{"_id": mid}])).await;
    assert!(r.get("error").is_none(), "{r}");

    // Leaves.
    let r = call(&mut bea, "leaveRoom", json!([rid])).await;
    assert!(r.get("error").is_none(), "{r}");

    // Logins: refused by a hook for a user it marked, seen for the others.
    let (_, locked_id, _) = common::registered(&server, "locked").await;
    common::update_elsewhere(
        &server,
        "users",
        json!({"_id": locked_id}),
        json!({"$set": {"locked": true}}),
    )
    .await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let r = call(
        &mut c,
        "login",
        json!([{"user": {"username": "locked"}, "password": "pw"}]),
    )
    .await;
    assert_eq!(r["error"]["error"], "error-app-prevented", "{r}");
    common::logged_in(&server, "bea", "pw").await;

    let events = seen.lock().unwrap().events.clone();
    // Rocket.Chat's own reaction to a new user (joining the default channels) runs first,
    // as the first hook added; mallory's join of `general` is refused like any other.
    let expected = [
        "room fine",
        "created mallory",
        "joined general bea",
        "created bea",
        "joined fine bea",
        "edited second!",
        "reaction :smile: true",
        "deleted second!",
        "left fine bea",
        "login bea",
    ];
    let mut at = 0;
    for want in expected {
        match events[at..].iter().position(|e| e == want) {
            Some(i) => at += i + 1,
            None => panic!("{want:?} missing or out of order in {events:?}"),
        }
    }
    for never in [
        "created refused-user",
        "joined general mallory",
        "joined fine mallory",
        "deleted keep me",
    ] {
        assert!(
            !events.iter().any(|e| e == never),
            "{never:?} in {events:?}"
        );
    }
    // "locked" logged in once, as it was created, and never after the mark.
    assert_eq!(
        events.iter().filter(|e| *e == "login locked").count(),
        1,
        "{events:?}"
    );
    // Without the hook, what it refused goes through: the refused room's name and user's
    // name were never taken.
    assert!(server.hooks.remove("test-moderator"));
    let r = call(&mut admin, "createChannel", json!(["nope-room", []])).await;
    assert!(r["result"]["rid"].is_string(), "{r}");
    common::registered(&server, "refused-user").await;
    server.shutdown().await;
}

/// The benchmark's pass-through hook stands at every point and changes nothing.
#[tokio::test]
async fn the_pass_through_hook_changes_nothing() {
    let server = common::spawn_with_admin_and(|s| s.bench_passthrough_hook = true).await;
    assert!(format!("{:?}", server.hooks).contains("comet.pass-through"));
    let mut admin = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let r = call(
        &mut admin,
        "sendMessage",
        json!([{"rid": "GENERAL", "msg": "as it is @boss"}]),
    )
    .await;
    assert_eq!(r["result"]["msg"], "as it is @boss", "{r}");
    assert_eq!(r["result"]["mentions"][0]["username"], "boss", "{r}");
    let r = call(&mut admin, "createChannel", json!(["untouched", []])).await;
    assert!(r["result"]["rid"].is_string(), "{r}");
    server.shutdown().await;
}
