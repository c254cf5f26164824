//! Messaging and the room streams over DDP: a message reaches the room's readers live and
//! pages back in history, edits and deletes follow as the settings say, unread counts and
//! `readMessages`, typing, joins and leaves with their system messages, and every way a
//! stranger or a former member might hear a room refused.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(400);

/// A new user, logged in on its own connection, with its id.
async fn user(server: &common::TestServer, name: &str) -> (DdpClient, String) {
    let (c, id, _) = common::registered(server, name).await;
    (c, id)
}

async fn call(c: &mut DdpClient, method: &str, params: Json) -> Json {
    c.call_keeping("m", method, params).await.0
}

async fn channel(c: &mut DdpClient, method: &str, name: &str, members: Json) -> String {
    let r = call(c, method, json!([name, members])).await;
    r["result"]["rid"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"))
        .to_owned()
}

async fn send(c: &mut DdpClient, rid: &str, msg: &str) -> Json {
    call(c, "sendMessage", json!([{"rid": rid, "msg": msg}])).await
}

/// The next event `event` on stream collection `collection`, its `args`.
async fn event(c: &mut DdpClient, collection: &str, event: &str) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = c.next_on(collection, left).await?;
        if m["fields"]["eventName"] == event {
            return Some(m["fields"]["args"].clone());
        }
    }
}

/// Calls `method` and returns its result and the args of the first `event` on
/// `collection` that the caller's own connection got, during the call or after it.
async fn call_and_event(
    c: &mut DdpClient,
    method: &str,
    params: Json,
    collection: &str,
    name: &str,
) -> (Json, Json) {
    let (result, frames) = c.call_keeping("c", method, params).await;
    let during = frames
        .iter()
        .find(|f| f["collection"] == collection && f["fields"]["eventName"] == name)
        .map(|f| f["fields"]["args"].clone());
    let args = match during {
        Some(args) => args,
        None => event(c, collection, name)
            .await
            .unwrap_or_else(|| panic!("no {name} after {method}: {result}")),
    };
    (result, args)
}

/// Nothing at all on `collection` for a while.
async fn silent_on(c: &mut DdpClient, collection: &str) {
    if let Some(m) = c.next_on(collection, QUIET).await {
        panic!("expected nothing on {collection}, got {m}");
    }
}

fn ready(frames: &[Json]) -> bool {
    frames.last().is_some_and(|f| f["msg"] == "ready")
}

fn error_of(r: &Json) -> String {
    r["error"]["error"].to_string().trim_matches('"').to_owned()
}

#[tokio::test]
async fn a_message_reaches_the_room_live_and_pages_back_in_history() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "talk", json!(["bob"])).await;
    let frames = bob
        .subscribe("s", "stream-room-messages", json!([rid, false]))
        .await;
    assert!(ready(&frames), "{frames:?}");

    let sent = send(&mut ann, &rid, "hello @bob, see #talk").await;
    let message = &sent["result"];
    assert_eq!(message["msg"], "hello @bob, see #talk", "{sent}");
    assert_eq!(message["u"]["username"], "ann");
    assert_eq!(message["mentions"][0]["username"], "bob", "{message}");
    assert_eq!(message["channels"][0]["name"], "talk", "{message}");
    let args = event(&mut bob, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(args[0]["_id"], message["_id"]);
    assert_eq!(args[0]["msg"], "hello @bob, see #talk");

    for n in 0..24 {
        send(&mut bob, &rid, &format!("n{n}")).await;
        // The per-user limit is five a second.
        if n % 5 == 4 {
            tokio::time::sleep(Duration::from_millis(1050)).await;
        }
    }
    let page = call(&mut ann, "loadHistory", json!([rid, null, 20, null])).await;
    let messages = page["result"]["messages"].as_array().unwrap().clone();
    assert_eq!(messages.len(), 20, "{page}");
    assert_eq!(messages[0]["msg"], "n23", "newest first");
    assert_eq!(messages[19]["msg"], "n4");
    let end = messages[19]["ts"].clone();
    let rest = call(&mut ann, "loadHistory", json!([rid, end, 20, null])).await;
    let texts: Vec<&str> = rest["result"]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        vec!["n3", "n2", "n1", "n0", "hello @bob, see #talk"],
        "the rest: {rest}"
    );
    let rooms = call(&mut ann, "rooms/get", json!([])).await;
    let room = rooms["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_id"] == rid)
        .unwrap()
        .clone();
    assert_eq!(room["lastMessage"]["msg"], "n23", "{room}");
    assert_eq!(room["msgs"], 25, "{room}");
}

#[tokio::test]
async fn a_stranger_hears_nothing_of_a_private_group_by_any_path() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut eve, _) = user(&server, "eve").await;
    let rid = channel(&mut ann, "createPrivateGroup", "plans", json!(["bob"])).await;
    for (name, params) in [
        ("stream-room-messages", json!([rid, false])),
        (
            "stream-notify-room",
            json!([format!("{rid}/typing"), false]),
        ),
        (
            "stream-notify-room",
            json!([format!("{rid}/deleteMessage"), false]),
        ),
        (
            "stream-notify-user",
            json!([format!("{ann_id}/rooms-changed"), false]),
        ),
        (
            "stream-notify-user",
            json!([format!("{ann_id}/subscriptions-changed"), false]),
        ),
        (
            "stream-notify-room-users",
            json!([format!("{rid}/anything"), false]),
        ),
    ] {
        let frames = eve.subscribe("x", name, params.clone()).await;
        let last = frames.last().unwrap();
        assert_eq!(last["msg"], "nosub", "{name} {params}: {frames:?}");
        assert_eq!(last["error"]["error"], "not-allowed", "{frames:?}");
    }
    let frames = eve
        .subscribe(
            "mine",
            "stream-room-messages",
            json!(["__my_messages__", false]),
        )
        .await;
    assert!(ready(&frames));
    let frames = bob
        .subscribe(
            "mine",
            "stream-room-messages",
            json!(["__my_messages__", false]),
        )
        .await;
    assert!(ready(&frames));
    send(&mut ann, &rid, "for members only").await;
    let args = event(&mut bob, "stream-room-messages", "__my_messages__")
        .await
        .unwrap();
    assert_eq!(args[0]["msg"], "for members only");
    assert_eq!(
        args[1],
        json!({"roomParticipant": true, "roomType": "p", "roomName": "plans"})
    );
    silent_on(&mut eve, "stream-room-messages").await;

    let r = send(&mut eve, &rid, "let me in").await;
    assert_eq!(error_of(&r), "error-not-allowed", "{r}");
    let r = call(&mut eve, "loadHistory", json!([rid, null, 20, null])).await;
    assert_eq!(r["result"], json!(false), "{r}");
    let r = call(&mut eve, "joinRoom", json!([rid])).await;
    assert_eq!(error_of(&r), "error-not-allowed", "{r}");
    let r = call(&mut eve, "getUsersOfRoom", json!([rid, true])).await;
    assert_eq!(error_of(&r), "error-not-allowed", "{r}");
    let history = call(&mut ann, "loadHistory", json!([rid, null, 50, null])).await;
    let id = history["result"]["messages"][0]["_id"].clone();
    for (method, params) in [
        ("getSingleMessage", json!([id])),
        ("setReaction", json!([":smile:", id])),
        ("deleteMessage", json!([{"_id": id}])),
        (
            "updateMessage",
            json!([{"_id": id, "rid": rid, "msg": "mine now"}]),
        ),
    ] {
        let r = call(&mut eve, method, params).await;
        assert!(
            r.get("error").is_some() || r["result"].is_null(),
            "{method}: {r}"
        );
        assert_ne!(r["result"]["msg"], "for members only", "{method}: {r}");
    }
    let kept = call(&mut ann, "getSingleMessage", json!([id])).await;
    assert_eq!(kept["result"]["msg"], "for members only", "{kept}");
    assert!(kept["result"].get("reactions").is_none(), "{kept}");
}

#[tokio::test]
async fn a_removed_member_stops_hearing_the_room_and_is_told() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, bob_id) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createPrivateGroup", "crew", json!(["bob"])).await;
    assert!(ready(
        &bob.subscribe("s", "stream-room-messages", json!([rid, false]))
            .await
    ));
    assert!(ready(
        &bob.subscribe(
            "u",
            "stream-notify-user",
            json!([format!("{bob_id}/subscriptions-changed"), false])
        )
        .await
    ));
    assert!(ready(
        &ann.subscribe("a", "stream-room-messages", json!([rid, false]))
            .await
    ));
    let (r, system) = call_and_event(
        &mut ann,
        "removeUserFromRoom",
        json!([{"rid": rid, "username": "bob"}]),
        "stream-room-messages",
        &rid,
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let args = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/subscriptions-changed"),
    )
    .await
    .unwrap();
    assert_eq!(args[0], "removed", "{args}");
    assert_eq!(args[1]["rid"], json!(rid));
    assert_eq!(
        (&system[0]["t"], &system[0]["msg"]),
        (&json!("ru"), &json!("bob"))
    );

    let (_, seen) = call_and_event(
        &mut ann,
        "sendMessage",
        json!([{"rid": rid, "msg": "after bob left"}]),
        "stream-room-messages",
        &rid,
    )
    .await;
    assert_eq!(seen[0]["msg"], "after bob left");
    silent_on(&mut bob, "stream-room-messages").await;
    let r = call(&mut bob, "loadHistory", json!([rid, null, 20, null])).await;
    assert_eq!(r["result"], json!(false), "{r}");
    let room = call(&mut ann, "rooms/get", json!([])).await["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_id"] == rid)
        .unwrap()
        .clone();
    assert_eq!(room["usersCount"], 1, "{room}");
}

#[tokio::test]
async fn join_and_leave_count_members_and_write_system_messages() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "lobby", json!([])).await;
    assert!(ready(
        &ann.subscribe("a", "stream-room-messages", json!([rid, false]))
            .await
    ));
    let r = call(&mut bob, "joinRoom", json!([rid])).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let joined = event(&mut ann, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(
        (&joined[0]["t"], &joined[0]["msg"]),
        (&json!("uj"), &json!("bob"))
    );
    let users = call(&mut ann, "getUsersOfRoom", json!([rid, true])).await;
    assert_eq!(users["result"]["total"], 2, "{users}");
    let r = call(&mut bob, "leaveRoom", json!([rid])).await;
    assert!(r.get("error").is_none(), "{r}");
    let left = event(&mut ann, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(
        (&left[0]["t"], &left[0]["msg"]),
        (&json!("ul"), &json!("bob"))
    );
    let r = call(&mut bob, "leaveRoom", json!([rid])).await;
    assert_eq!(error_of(&r), "error-user-not-in-room", "{r}");
    let r = call(&mut ann, "leaveRoom", json!([rid])).await;
    assert_eq!(error_of(&r), "error-you-are-last-owner", "{r}");

    // A join code keeps out whoever lacks it.
    let r = call(
        &mut ann,
        "saveRoomSettings",
        json!([rid, {"joinCode": "s3cret", "roomTopic": "welcome"}]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(&mut bob, "joinRoom", json!([rid, "guess"])).await;
    assert_eq!(error_of(&r), "error-code-invalid", "{r}");
    let r = call(&mut bob, "joinRoom", json!([rid, "s3cret"])).await;
    assert_eq!(r["result"], json!(true), "{r}");
    let users = call(&mut ann, "getUsersOfRoom", json!([rid, true])).await;
    assert_eq!(users["result"]["total"], 2, "{users}");
}

#[tokio::test]
async fn edits_deletes_and_reactions_reach_the_room() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "edits", json!(["bob"])).await;
    assert!(ready(
        &bob.subscribe("s", "stream-room-messages", json!([rid, false]))
            .await
    ));
    assert!(ready(
        &bob.subscribe(
            "d",
            "stream-notify-room",
            json!([format!("{rid}/deleteMessage"), false])
        )
        .await
    ));
    let id = send(&mut ann, &rid, "first draft").await["result"]["_id"].clone();
    event(&mut bob, "stream-room-messages", &rid).await.unwrap();

    let r = call(
        &mut ann,
        "updateMessage",
        json!([{"_id": id, "rid": rid, "msg": "final"}]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let edited = event(&mut bob, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(edited[0]["msg"], "final");
    assert_eq!(edited[0]["editedBy"]["username"], "ann");
    let r = call(
        &mut bob,
        "updateMessage",
        json!([{"_id": id, "rid": rid, "msg": "bob's"}]),
    )
    .await;
    assert_eq!(error_of(&r), "error-action-not-allowed", "{r}");

    let (r, reacted) = call_and_event(
        &mut bob,
        "setReaction",
        json!([":tada:", id]),
        "stream-room-messages",
        &rid,
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        reacted[0]["reactions"][":tada:"]["usernames"],
        json!(["bob"])
    );
    let (_, unreacted) = call_and_event(
        &mut bob,
        "setReaction",
        json!([":tada:", id]),
        "stream-room-messages",
        &rid,
    )
    .await;
    assert!(
        unreacted[0].get("reactions").is_none()
            || unreacted[0]["reactions"].get(":tada:").is_none(),
        "{unreacted}"
    );
    let r = call(&mut bob, "setReaction", json!([":a.b:", id])).await;
    assert!(
        r.get("error").is_some(),
        "a reaction is a name, never a path: {r}"
    );

    // Removed outright (the default settings): a deleteMessage event, gone from history.
    let r = call(&mut bob, "deleteMessage", json!([{"_id": id}])).await;
    assert_eq!(error_of(&r), "error-action-not-allowed", "not bob's: {r}");
    let r = call(&mut ann, "deleteMessage", json!([{"_id": id}])).await;
    assert!(r.get("error").is_none(), "{r}");
    let deleted = event(
        &mut bob,
        "stream-notify-room",
        &format!("{rid}/deleteMessage"),
    )
    .await
    .unwrap();
    assert_eq!(deleted, json!([{"_id": id}]));
    let history = call(&mut ann, "loadHistory", json!([rid, null, 20, null])).await;
    assert!(
        !history["result"]["messages"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["_id"] == id),
        "{history}"
    );

    // With the deleted status shown: a tombstone, told as an update.
    let mut admin = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let r = call(
        &mut admin,
        "saveSetting",
        json!(["Message_ShowDeletedStatus", true]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let id = send(&mut ann, &rid, "short-lived").await["result"]["_id"].clone();
    event(&mut bob, "stream-room-messages", &rid).await.unwrap();
    call(&mut ann, "deleteMessage", json!([{"_id": id}])).await;
    let tomb = event(&mut bob, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(
        (&tomb[0]["_id"], &tomb[0]["t"], &tomb[0]["msg"]),
        (&id, &json!("rm"), &json!(""))
    );
}

#[tokio::test]
async fn unread_counts_grow_for_others_and_read_messages_clears_them() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, bob_id) = user(&server, "bob").await;
    let dm = call(&mut ann, "createDirectMessage", json!(["bob"])).await["result"]["rid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(ready(
        &bob.subscribe(
            "u",
            "stream-notify-user",
            json!([format!("{bob_id}/subscriptions-changed"), false])
        )
        .await
    ));
    send(&mut ann, &dm, "one").await;
    let changed = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/subscriptions-changed"),
    )
    .await
    .unwrap();
    assert_eq!(changed[0], "updated");
    assert_eq!(
        (&changed[1]["unread"], &changed[1]["alert"]),
        (&json!(1), &json!(true)),
        "{changed}"
    );
    send(&mut ann, &dm, "two").await;
    let changed = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/subscriptions-changed"),
    )
    .await
    .unwrap();
    assert_eq!(changed[1]["unread"], 2, "{changed}");
    let mine = call(&mut ann, "subscriptions/get", json!([])).await["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == dm)
        .unwrap()
        .clone();
    assert_eq!(mine["unread"], 0, "the sender's own count stays 0: {mine}");

    let (r, changed) = call_and_event(
        &mut bob,
        "readMessages",
        json!([dm]),
        "stream-notify-user",
        &format!("{bob_id}/subscriptions-changed"),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        (&changed[1]["unread"], &changed[1]["alert"]),
        (&json!(0), &json!(false)),
        "{changed}"
    );

    // In a channel (mentions only, the default), a mention counts and plain talk does not.
    let rid = channel(&mut ann, "createChannel", "quiet", json!(["bob"])).await;
    send(&mut ann, &rid, "plain talk").await;
    send(&mut ann, &rid, "hey @bob").await;
    let sub = call(&mut bob, "subscriptions/get", json!([])).await["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == rid)
        .unwrap()
        .clone();
    assert_eq!(
        (&sub["unread"], &sub["userMentions"], &sub["alert"]),
        (&json!(1), &json!(1), &json!(true)),
        "{sub}"
    );
}

#[tokio::test]
async fn typing_reaches_the_other_members_only_under_ones_own_name() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut eve, _) = user(&server, "eve").await;
    let rid = channel(&mut ann, "createChannel", "chatter", json!(["bob"])).await;
    for c in [&mut ann, &mut bob] {
        for name in ["typing", "user-activity"] {
            let frames = c
                .subscribe(
                    name,
                    "stream-notify-room",
                    json!([format!("{rid}/{name}"), false]),
                )
                .await;
            assert!(ready(&frames), "{frames:?}");
        }
    }
    call(
        &mut bob,
        "stream-notify-room",
        json!([format!("{rid}/typing"), "bob", true]),
    )
    .await;
    let typing = event(&mut ann, "stream-notify-room", &format!("{rid}/typing"))
        .await
        .unwrap();
    assert_eq!(typing, json!(["bob", true]));
    let activity = event(
        &mut ann,
        "stream-notify-room",
        &format!("{rid}/user-activity"),
    )
    .await
    .unwrap();
    assert_eq!(activity, json!(["bob", ["user-typing"]]));
    silent_on(&mut bob, "stream-notify-room").await;
    // Under another's name, or from outside the room: dropped without a word.
    call(
        &mut bob,
        "stream-notify-room",
        json!([format!("{rid}/typing"), "ann", true]),
    )
    .await;
    call(
        &mut eve,
        "stream-notify-room",
        json!([format!("{rid}/typing"), "eve", true]),
    )
    .await;
    call(
        &mut bob,
        "stream-notify-room",
        json!([format!("{rid}/deleteMessage"), {"_id": "x"}]),
    )
    .await;
    silent_on(&mut ann, "stream-notify-room").await;
}

#[tokio::test]
async fn signalling_reaches_a_roommate_and_never_comes_from_a_stranger() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let (mut eve, _) = user(&server, "eve").await;
    // Everyone shares the default channel: eve leaves it, so she shares no room with ann.
    let left = call(&mut eve, "leaveRoom", json!(["GENERAL"])).await;
    assert!(left.get("error").is_none(), "{left}");
    let rid = channel(&mut ann, "createPrivateGroup", "call", json!(["bob"])).await;
    for name in ["webrtc", "otr", "message"] {
        let frames = ann
            .subscribe(
                name,
                "stream-notify-user",
                json!([format!("{ann_id}/{name}"), false]),
            )
            .await;
        assert!(ready(&frames), "{frames:?}");
    }
    let webrtc = format!("{ann_id}/webrtc");
    let offer = json!({"from": "bob", "room": rid, "type": "offer", "sdp": "v=0"});
    call(
        &mut bob,
        "stream-notify-user",
        json!([webrtc, "call", offer]),
    )
    .await;
    let heard = event(&mut ann, "stream-notify-user", &webrtc).await;
    assert_eq!(heard, Some(json!(["call", offer])));
    // To the whole room: each other member hears it on its own stream.
    call(
        &mut bob,
        "stream-notify-room-users",
        json!([format!("{rid}/webrtc"), "call", {"from": "bob"}]),
    )
    .await;
    let heard = event(&mut ann, "stream-notify-user", &webrtc).await;
    assert_eq!(heard, Some(json!(["call", {"from": "bob"}])));
    let otr = format!("{ann_id}/otr");
    let handshake = json!({"roomId": rid, "userId": "bob", "publicKey": "k"});
    call(
        &mut bob,
        "stream-notify-user",
        json!([otr, "handshake", handshake]),
    )
    .await;
    let heard = event(&mut ann, "stream-notify-user", &otr).await;
    assert_eq!(heard, Some(json!(["handshake", handshake])));

    // Dropped without a word: a stranger's signal, to one person or to the room; an OTR
    // message that is not the key exchange; an event that is not signalling (a forged
    // server note); an oversized signal; an anonymous one.
    let (mut anon, _) = DdpClient::connect(&server).await;
    for (who, params) in [
        ("eve", json!([webrtc, "call", {"from": "eve"}])),
        ("eve", json!([format!("{rid}/webrtc"), "call", {}])),
        ("bob", json!([otr, "end", {}])),
        (
            "bob",
            json!([format!("{ann_id}/message"), {"msg": "forged"}]),
        ),
        ("bob", json!([webrtc, "x".repeat(65 * 1024)])),
        ("anon", json!([webrtc, "call", {}])),
        ("anon", json!([format!("{rid}/webrtc"), "call", {}])),
    ] {
        let method = if params[0].as_str().unwrap().starts_with(&rid) {
            "stream-notify-room-users"
        } else {
            "stream-notify-user"
        };
        let client = match who {
            "eve" => &mut eve,
            "bob" => &mut bob,
            _ => &mut anon,
        };
        let r = call(client, method, params.clone()).await;
        assert!(r.get("error").is_none(), "{params}: {r}");
    }
    silent_on(&mut ann, "stream-notify-user").await;
    // An event name that is not a string is a clear error, not a silent drop.
    for method in ["stream-notify-user", "stream-notify-room-users"] {
        let r = call(&mut bob, method, json!([5, "call"])).await;
        assert_eq!(error_of(&r), "400", "{method}: {r}");
    }

    // With off-the-record chats turned off, the key exchange is not relayed either.
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let saved = call(&mut boss, "saveSetting", json!(["OTR_Enable", false])).await;
    assert!(saved.get("error").is_none(), "{saved}");
    tokio::time::sleep(QUIET).await;
    call(
        &mut bob,
        "stream-notify-user",
        json!([otr, "handshake", handshake]),
    )
    .await;
    silent_on(&mut ann, "stream-notify-user").await;
}

#[tokio::test]
async fn bad_and_oversized_messages_are_refused_and_a_flood_is_limited() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "limits", json!(["bob"])).await;
    let r = send(&mut ann, &rid, &"x".repeat(5001)).await;
    assert_eq!(error_of(&r), "error-message-size-exceeded", "{r}");
    for (params, code) in [
        (json!([{"rid": rid, "msg": 5}]), "400"),
        (json!([{"msg": "no room"}]), "400"),
        (json!([]), "400"),
        (
            json!([{"rid": rid, "msg": "x", "t": "uj"}]),
            "error-invalid-message-type",
        ),
        (
            json!([{"rid": "nowhere", "msg": "x"}]),
            "error-invalid-room",
        ),
        (
            json!([{"rid": rid, "msg": "x", "ts": {"$date": 0}}]),
            "error-message-ts-out-of-sync",
        ),
        (
            json!([{"rid": rid, "msg": "x", "tshow": true}]),
            "invalid-params",
        ),
        (json!([{"rid": rid, "msg": "x", "_id": "bad id!"}]), "400"),
        (
            json!([{"rid": rid, "msg": "x", "alias": "The Boss"}]),
            "error-action-not-allowed",
        ),
    ] {
        let r = call(&mut ann, "sendMessage", params.clone()).await;
        assert_eq!(error_of(&r), code, "{params}: {r}");
    }
    let history = call(&mut ann, "loadHistory", json!([rid, null, 50, null])).await;
    assert_eq!(
        history["result"]["messages"].as_array().unwrap().len(),
        0,
        "nothing stored: {history}"
    );
    // A retry with the same id stores one message.
    let first = call(
        &mut ann,
        "sendMessage",
        json!([{"_id": "clientChosenId1", "rid": rid, "msg": "once"}]),
    )
    .await;
    let again = call(
        &mut ann,
        "sendMessage",
        json!([{"_id": "clientChosenId1", "rid": rid, "msg": "once"}]),
    )
    .await;
    assert_eq!(first["result"]["_id"], again["result"]["_id"], "{again}");

    let mut refused = 0;
    for n in 0..8 {
        let r = send(&mut ann, &rid, &format!("flood {n}")).await;
        if error_of(&r) == "too-many-requests" {
            refused += 1;
        }
    }
    assert!(refused >= 2, "a flood is limited: {refused} refused");
    let r = send(&mut bob, &rid, "others still talk").await;
    assert_eq!(r["result"]["msg"], "others still talk", "{r}");
}

#[tokio::test]
async fn a_message_another_writer_stores_reaches_the_room() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let rid = channel(&mut ann, "createChannel", "imports", json!([])).await;
    assert!(ready(
        &ann.subscribe("s", "stream-room-messages", json!([rid, false]))
            .await
    ));
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    store
        .insert(
            "rocketchat_message",
            common::document(json!({
                "_id": "fromElsewhere1", "rid": rid, "msg": "written by another process",
                "ts": {"$date": 1_700_000_000_000u64}, "u": {"_id": ann_id, "username": "ann"},
            })),
        )
        .await
        .unwrap();
    let args = event(&mut ann, "stream-room-messages", &rid).await.unwrap();
    assert_eq!(args[0]["msg"], "written by another process");
}

#[tokio::test]
async fn threads_count_their_replies() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let (mut bob, _) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "threads", json!(["bob"])).await;
    let tmid = send(&mut ann, &rid, "a question").await["result"]["_id"].clone();
    let r = call(
        &mut bob,
        "sendMessage",
        json!([{"rid": rid, "msg": "an answer", "tmid": tmid}]),
    )
    .await;
    assert_eq!(r["result"]["tmid"], tmid, "{r}");
    let parent = call(&mut ann, "getSingleMessage", json!([tmid])).await["result"].clone();
    assert_eq!(parent["tcount"], 1, "{parent}");
    assert!(parent["replies"].as_array().unwrap().len() == 1, "{parent}");
    let replies = call(&mut ann, "getThreadMessages", json!([{"tmid": tmid}])).await;
    assert_eq!(replies["result"][0]["msg"], "an answer", "{replies}");
    let sub = call(&mut ann, "subscriptions/get", json!([])).await["result"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == rid)
        .unwrap()
        .clone();
    assert_eq!(
        sub["tunread"],
        json!([tmid]),
        "the starter follows its thread: {sub}"
    );
    let _ = ann_id;
}

#[tokio::test]
async fn plain_talk_alerts_a_member_once_not_with_every_message() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _) = user(&server, "ann").await;
    let (mut bob, bob_id) = user(&server, "bob").await;
    let rid = channel(&mut ann, "createChannel", "busy", json!(["bob"])).await;
    let event_name = format!("{bob_id}/subscriptions-changed");
    assert!(ready(
        &bob.subscribe("u", "stream-notify-user", json!([event_name, false]))
            .await
    ));
    send(&mut ann, &rid, "one").await;
    let first = event(&mut bob, "stream-notify-user", &event_name)
        .await
        .unwrap();
    assert_eq!(first[1]["alert"], true, "{first}");
    send(&mut ann, &rid, "two").await;
    send(&mut ann, &rid, "three").await;
    // Nothing to count in a channel without mentions: bob's subscription is not written again.
    silent_on(&mut bob, "stream-notify-user").await;
}

/// `stream-notify-user`'s `notification` (a mention, a direct message) and `message` (a
/// mentioned user not in the room), `userData` (own fields, never `services`) and
/// `force_logout` (deactivated); `stream-notify-logged`'s `Users:NameChanged` and
/// `Users:Deleted`; and another user's events refused.
#[tokio::test]
async fn user_events_reach_their_user_only() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let (mut bob, bob_id) = user(&server, "bob").await;
    let (mut carl, carl_id) = user(&server, "carl").await;
    let rid = channel(&mut ann, "createPrivateGroup", "secret", json!(["bob"])).await;
    for (is_ann, event) in [
        (false, "notification"),
        (true, "message"),
        (false, "userData"),
        (false, "force_logout"),
        (false, "rooms-changed"),
    ] {
        let (c, id) = if is_ann {
            (&mut ann, &ann_id)
        } else {
            (&mut bob, &bob_id)
        };
        let frames = c
            .subscribe(
                event,
                "stream-notify-user",
                json!([format!("{id}/{event}"), false]),
            )
            .await;
        assert!(ready(&frames), "{event}: {frames:?}");
    }
    // Carl may not listen to Bob's notifications.
    let refused = carl
        .subscribe(
            "x",
            "stream-notify-user",
            json!([format!("{bob_id}/notification"), false]),
        )
        .await;
    assert_eq!(refused.last().unwrap()["msg"], "nosub", "{refused:?}");
    let frames = carl
        .subscribe(
            "l",
            "stream-notify-logged",
            json!(["Users:NameChanged", false]),
        )
        .await;
    assert!(ready(&frames), "{frames:?}");
    let frames = carl
        .subscribe("d", "stream-notify-logged", json!(["Users:Deleted", false]))
        .await;
    assert!(ready(&frames), "{frames:?}");

    let (sent, note) = call_and_event(
        &mut ann,
        "sendMessage",
        json!([{"rid": rid, "msg": "hey @bob, and @carl"}]),
        "stream-notify-user",
        &format!("{ann_id}/message"),
    )
    .await;
    assert_eq!(
        note[0]["msg"], "@carl was mentioned but is not in this room.",
        "{note}"
    );
    assert_eq!(note[0]["rid"], rid.as_str());
    let args = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/notification"),
    )
    .await
    .expect("bob is notified of the mention");
    assert_eq!(args[0]["payload"]["rid"], rid.as_str(), "{args}");
    assert_eq!(args[0]["payload"]["_id"], sent["result"]["_id"]);
    assert_eq!(args[0]["payload"]["sender"]["username"], "ann");
    assert_eq!(args[0]["title"], "#secret");
    // The room's new last message reaches its members' room lists, under their own names.
    let changed = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/rooms-changed"),
    )
    .await
    .expect("bob's room list hears of the message");
    assert_eq!(changed[0], "updated", "{changed}");
    assert_eq!(changed[1]["_id"], rid.as_str(), "{changed}");

    // A direct message notifies the other side.
    let dm = call(&mut ann, "createDirectMessage", json!(["bob"])).await["result"]["rid"]
        .as_str()
        .unwrap()
        .to_owned();
    send(&mut ann, &dm, "psst").await;
    let args = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/notification"),
    )
    .await
    .expect("bob is notified of the direct message");
    assert_eq!(args[0]["payload"]["rid"], dm.as_str(), "{args}");
    assert_eq!(args[0]["text"], "psst");

    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let set = |fields: Json| {
        let store = store.clone();
        let id = bob_id.clone();
        async move {
            store
                .update(
                    "users",
                    comet::model::query::Selector::by_id(id.as_str().into()),
                    comet::model::query::Update::parse(&common::document(json!({"$set": fields})))
                        .unwrap(),
                    comet::storage::UpdateOptions::default(),
                )
                .await
                .unwrap()
        }
    };
    // A token written is no news to the client; a new name is, to it and to everyone.
    // (Added beside bob's own: one removed would log his session out, as in Meteor.)
    store
        .update(
            "users",
            comet::model::query::Selector::by_id(bob_id.as_str().into()),
            comet::model::query::Update::parse(&common::document(json!({
                "$push": {"services.resume.loginTokens": {"hashedToken": "x", "when": {"$date": 1}}}
            })))
            .unwrap(),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    set(json!({"name": "Bob B"})).await;
    let data = event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/userData"),
    )
    .await
    .expect("bob hears of his own change");
    assert_eq!(data[0]["diff"], json!({"name": "Bob B"}), "{data}");
    assert_eq!(data[0]["id"], bob_id.as_str());
    let renamed = event(&mut carl, "stream-notify-logged", "Users:NameChanged")
        .await
        .expect("a logged-in user hears of a rename");
    assert_eq!(
        renamed[0],
        json!({"_id": bob_id, "username": "bob", "name": "Bob B"})
    );
    set(json!({"active": false})).await;
    event(
        &mut bob,
        "stream-notify-user",
        &format!("{bob_id}/force_logout"),
    )
    .await
    .expect("a deactivated user is told to log out");
    store
        .remove(
            "users",
            comet::model::query::Selector::by_id(carl_id.as_str().into()),
            comet::storage::RemoveOptions::default(),
        )
        .await
        .unwrap();
    let deleted = event(&mut carl, "stream-notify-logged", "Users:Deleted")
        .await
        .expect("a removed user is told");
    assert_eq!(deleted[0], json!({"userId": carl_id}));
}

/// A message Rocket.Chat (a newer version, an app) wrote with fields comet does not know:
/// an edit, a reaction and a pin change what they change and leave every other field as
/// it was.
#[tokio::test]
async fn unknown_fields_of_a_stored_message_survive_an_edit() {
    let server = common::spawn_with_admin().await;
    let (mut ann, ann_id) = user(&server, "ann").await;
    let rid = channel(&mut ann, "createChannel", "legacy", json!([])).await;
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let written = json!({
        "_id": "from-rocketchat", "rid": rid, "msg": "as written elsewhere",
        "ts": {"$date": 1_700_000_000_000u64}, "_updatedAt": {"$date": 1_700_000_000_000u64},
        "u": {"_id": ann_id, "username": "ann"},
        "md": [{"type": "PARAGRAPH", "value": [{"type": "PLAIN_TEXT", "value": "as written"}]}],
        "e2eMentions": {"e2eUserMentions": [], "e2eChannelMentions": []},
        "appFields": {"poll": {"options": ["a", "b"], "votes": {"$binary": "AAEC"}}},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "*x*"}}],
        "federation": {"eventId": "$abc"},
    });
    store
        .insert("rocketchat_message", common::document(written.clone()))
        .await
        .unwrap();
    let r = call(
        &mut ann,
        "updateMessage",
        json!([{"_id": "from-rocketchat", "rid": rid, "msg": "edited by comet"}]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = call(
        &mut ann,
        "setReaction",
        json!([":tada:", "from-rocketchat"]),
    )
    .await;
    assert!(r.get("error").is_none(), "{r}");
    let stored = store
        .find(
            "rocketchat_message",
            comet::storage::FindOptions {
                selector: comet::model::query::Selector::parse(&common::document(
                    json!({"_id": "from-rocketchat"}),
                ))
                .unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .pop()
        .unwrap();
    let original = common::document(written);
    for field in [
        "e2eMentions",
        "appFields",
        "blocks",
        "federation",
        "ts",
        "u",
    ] {
        assert_eq!(stored.get(field), original.get(field), "{field} changed");
    }
    // `md` is the old text parsed: clients would show it over the new text.
    assert_eq!(stored.get("md"), None);
    assert_eq!(
        stored.get("msg"),
        Some(&comet::model::Value::from("edited by comet"))
    );
    assert!(stored.get("editedAt").is_some() && stored.get("reactions").is_some());
    server.shutdown().await;
}
