//! Rocket.Chat's broadcast streams for settings, permissions and roles: the subscription
//! forms, who may read which event, each change emitted once whoever wrote it, and a
//! stranger kept out of what is not theirs.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);
const SOON: Duration = Duration::from_secs(3);

/// A user with no special role, made through `createUser`.
async fn ordinary_user(server: &common::TestServer) -> DdpClient {
    let (mut c, _) = DdpClient::connect(server).await;
    let frames = c
        .call_seeing(
            "new",
            "createUser",
            json!([{"username": "plain", "email": "plain@example.com", "password": "plain-pass"}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    c
}

fn ready(frames: &[Json]) -> bool {
    frames.last().is_some_and(|f| f["msg"] == "ready")
}

fn refused(frames: &[Json]) -> Json {
    let last = frames.last().unwrap();
    assert_eq!(last["msg"], "nosub", "{frames:?}");
    last["error"]["error"].clone()
}

fn value_update(m: &Json) -> (&Json, &Json, &Json) {
    assert_eq!(m["msg"], "changed", "{m}");
    assert_eq!(m["id"], "id", "{m}");
    let args = &m["fields"]["args"];
    (&m["fields"]["eventName"], &args[0], &args[1])
}

#[tokio::test]
async fn a_public_setting_change_reaches_anyone_once_and_a_private_one_only_its_readers() {
    let server = common::spawn_with_admin().await;
    let (mut anon, _) = DdpClient::connect(&server).await;
    let frames = anon
        .subscribe(
            "all",
            "stream-notify-all",
            json!(["public-settings-changed", {"useCollection": false, "args": []}]),
        )
        .await;
    assert!(ready(&frames), "{frames:?}");
    assert_eq!(
        frames.len(),
        1,
        "no document without useCollection: {frames:?}"
    );
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let frames = boss
        .subscribe(
            "priv",
            "stream-notify-logged",
            json!(["private-settings-changed", false]),
        )
        .await;
    assert!(ready(&frames), "{frames:?}");

    let (r, mut seen_by_boss) = boss
        .call_keeping("s", "saveSetting", json!(["Site_Name", "Renamed"]))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let event = anon
        .next_on("stream-notify-all", SOON)
        .await
        .expect("an event");
    let (name, action, setting) = value_update(&event);
    assert_eq!(
        (name, action, setting),
        (
            &json!("public-settings-changed"),
            &json!("updated"),
            &json!({"_id": "Site_Name", "value": "Renamed"})
        )
    );
    assert!(
        anon.next_on("stream-notify-all", QUIET).await.is_none(),
        "emitted once"
    );
    // The event may have come while the call ran, among other frames (the boss's own status).
    let during_call = seen_by_boss
        .drain(..)
        .rev()
        .find(|f| f["collection"] == "stream-notify-logged");
    let event = match during_call {
        Some(event) => event,
        None => boss
            .next_on("stream-notify-logged", SOON)
            .await
            .expect("private event"),
    };
    assert_eq!(value_update(&event).2["_id"], "Site_Name");

    // A private setting: its readers hear of it, anonymous listeners do not.
    let (r, mut seen_by_boss) = boss
        .call_keeping(
            "t",
            "saveSetting",
            json!(["DDP_Rate_Limit_Login_Interval_Time", 20000]),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    // The event may have come while the call ran, among other frames (the boss's own status).
    let during_call = seen_by_boss
        .drain(..)
        .rev()
        .find(|f| f["collection"] == "stream-notify-logged");
    let event = match during_call {
        Some(event) => event,
        None => boss
            .next_on("stream-notify-logged", SOON)
            .await
            .expect("private event"),
    };
    assert_eq!(
        value_update(&event).2,
        &json!({"_id": "DDP_Rate_Limit_Login_Interval_Time", "value": 20000})
    );
    assert!(anon.next_on("stream-notify-all", QUIET).await.is_none());

    // Another writer's change is heard the same way.
    common::update_elsewhere(
        &server,
        "rocketchat_settings",
        json!({"_id": "Site_Name"}),
        json!({"$set": {"value": "Elsewhere"}}),
    )
    .await;
    let event = anon
        .next_on("stream-notify-all", SOON)
        .await
        .expect("an event");
    assert_eq!(value_update(&event).2["value"], "Elsewhere");
}

#[tokio::test]
async fn strangers_are_refused_what_is_not_theirs() {
    let server = common::spawn_with_admin().await;
    let (mut anon, _) = DdpClient::connect(&server).await;
    for (id, name, event) in [
        ("a", "stream-notify-logged", "permissions-changed"),
        ("b", "stream-notify-logged", "private-settings-changed"),
        ("c", "stream-roles", "roles"),
    ] {
        let frames = anon.subscribe(id, name, json!([event, false])).await;
        assert_eq!(refused(&frames), "not-allowed", "{name} {event}");
        assert!(frames.last().unwrap()["error"].get("reason").is_none());
    }
    let mut plain = ordinary_user(&server).await;
    let frames = plain
        .subscribe(
            "p",
            "stream-notify-logged",
            json!(["private-settings-changed", false]),
        )
        .await;
    assert_eq!(
        refused(&frames),
        "not-allowed",
        "no permission to see private settings"
    );
    let frames = plain
        .subscribe(
            "q",
            "stream-notify-logged",
            json!(["permissions-changed", false]),
        )
        .await;
    assert!(ready(&frames), "{frames:?}");
    // The administrator changes a private setting: the ordinary user hears nothing of it.
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (r, _) = boss
        .call(
            "t",
            "saveSetting",
            json!(["DDP_Rate_Limit_Login_Interval_Time", 30000]),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    assert!(plain.next_on("stream-notify-logged", QUIET).await.is_none());
    // Bad parameters.
    for (id, params, code) in [
        ("x", json!([]), json!("invalid-event-name")),
        ("y", json!([""]), json!("invalid-event-name")),
        ("z", json!(["e", 5]), json!(400)),
    ] {
        let frames = anon
            .subscribe(id, "stream-notify-all", params.clone())
            .await;
        assert_eq!(refused(&frames), code, "{params}");
    }
}

#[tokio::test]
async fn permission_and_role_changes_by_any_writer_reach_logged_in_users() {
    let server = common::spawn_with_admin().await;
    let mut plain = ordinary_user(&server).await;
    let frames = plain
        .subscribe(
            "p",
            "stream-notify-logged",
            json!(["permissions-changed", true]),
        )
        .await;
    assert_eq!(
        frames[0],
        json!({"msg": "added", "collection": "stream-notify-logged", "id": "id", "fields": {"eventName": "permissions-changed"}}),
        "useCollection: the stream's document before ready"
    );
    assert!(ready(&frames));
    let frames = plain
        .subscribe("r", "stream-roles", json!(["roles", false]))
        .await;
    assert!(ready(&frames), "{frames:?}");

    let store = server.hub.observe.as_ref().unwrap().store().clone();
    common::update_elsewhere(
        &server,
        "rocketchat_permissions",
        json!({"_id": "create-c"}),
        json!({"$set": {"roles": ["admin"]}}),
    )
    .await;
    let event = plain
        .next_on("stream-notify-logged", SOON)
        .await
        .expect("event");
    let (name, action, permission) = value_update(&event);
    assert_eq!(
        (name, action),
        (&json!("permissions-changed"), &json!("updated"))
    );
    assert_eq!(permission["_id"], "create-c");
    assert_eq!(permission["roles"], json!(["admin"]));

    let comet::model::Value::Object(role) = comet::model::Value::from_json(
        json!({"_id": "auditor", "name": "auditor", "scope": "Users", "description": ""}),
    )
    .unwrap() else {
        unreachable!()
    };
    store.insert("rocketchat_roles", role).await.unwrap();
    let event = plain
        .next_on("stream-roles", SOON)
        .await
        .expect("role event");
    assert_eq!(event["fields"]["eventName"], "roles");
    assert_eq!(
        event["fields"]["args"][0],
        json!({"_id": "auditor", "name": "auditor", "scope": "Users", "description": "", "type": "changed"})
    );
    // Unsubscribed: nothing more.
    plain.send(json!({"msg": "unsub", "id": "r"})).await;
    // Other streams (the logged-in user's status, say) may still speak before the `nosub`.
    let nosub = loop {
        let m = plain.recv_data().await;
        if m["collection"] != "stream-roles" && m["msg"] == "changed" {
            continue;
        }
        break m;
    };
    assert_eq!(nosub["msg"], "nosub", "{nosub}");
    store
        .remove(
            "rocketchat_roles",
            comet::model::query::Selector::by_id("auditor".into()),
            comet::storage::RemoveOptions::default(),
        )
        .await
        .unwrap();
    assert!(plain.next_on("stream-roles", QUIET).await.is_none());
}

/// A role given to a user by any writer: logged-in users hear `roles-change`, and the
/// user's permissions follow at once (roles are kept in memory, not read per check).
#[tokio::test]
async fn a_role_given_elsewhere_is_told_and_counts_at_once() {
    let server = common::spawn_with_admin().await;
    let mut plain = ordinary_user(&server).await;
    let frames = plain
        .subscribe("rc", "stream-notify-logged", json!(["roles-change", false]))
        .await;
    assert!(ready(&frames), "{frames:?}");
    let (r, _) = plain.call("p", "private-settings/get", json!([])).await;
    assert_eq!(r["result"], json!([]), "no right yet: {r}");
    common::update_elsewhere(
        &server,
        "users",
        json!({"username": "plain"}),
        json!({"$addToSet": {"roles": "admin"}}),
    )
    .await;
    let event = plain
        .next_on("stream-notify-logged", SOON)
        .await
        .expect("roles-change");
    assert_eq!(event["fields"]["eventName"], "roles-change");
    let change = &event["fields"]["args"][0];
    assert_eq!(
        (&change["type"], &change["_id"], &change["u"]["username"]),
        (&json!("added"), &json!("admin"), &json!("plain")),
        "{event}"
    );
    let (r, _) = plain.call("q", "private-settings/get", json!([])).await;
    assert!(
        r["result"].as_array().is_some_and(|s| !s.is_empty()),
        "an administrator now: {r}"
    );
}
