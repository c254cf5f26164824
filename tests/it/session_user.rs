//! A session's user: when a method sets it (login) or clears it (logout), every subscription
//! and universal publication runs again with the new user and the client gets the
//! difference; services find a user's live connections and can log them out; a closed
//! connection's close hook runs once.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{config_file, DdpClient};
use serde_json::{json, Value as Json};
use std::time::Duration;

const CONFIG: &str = r#"
[[publications]]
name = "me"
collection = "people"
selector = { _id = "$userId" }
universal = true

[[publications]]
name = "notes.mine"
collection = "notes"
selector = { owner = "$userId" }

[[collections]]
name = "people"
insert = {}

[[collections]]
name = "notes"
insert = {}
"#;

async fn server() -> common::TestServer {
    let path = config_file(CONFIG);
    common::spawn_server(common::test_settings(|c| c.config = Some(path))).await
}

fn kinds(frames: &[Json]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f["msg"].as_str().unwrap() {
            "added" | "removed" => format!(
                "{} {}",
                f["msg"].as_str().unwrap(),
                f["id"].as_str().unwrap()
            ),
            other => other.to_owned(),
        })
        .collect()
}

async fn seed(server: &common::TestServer) {
    let (mut c, _) = DdpClient::connect(server).await;
    for (coll, doc) in [
        ("people", json!({"_id": "u1", "username": "ann"})),
        ("people", json!({"_id": "u2", "username": "bob"})),
        (
            "notes",
            json!({"_id": "n1", "owner": "u1", "text": "ann's"}),
        ),
        (
            "notes",
            json!({"_id": "n2", "owner": "u2", "text": "bob's"}),
        ),
    ] {
        let (r, _) = c.call("i", &format!("/{coll}/insert"), json!([doc])).await;
        assert!(r.get("error").is_none(), "{r}");
    }
}

#[tokio::test]
async fn login_and_logout_re_run_subscriptions_and_publish_the_user() {
    let server = server().await;
    seed(&server).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    c.send(json!({"msg":"sub","id":"s","name":"notes.mine","params":[]}))
        .await;
    assert_eq!(c.recv_data().await["msg"], "ready", "anonymous: nothing");

    let seen = c.call_seeing("1", "test.setUserId", json!(["u1"])).await;
    let k = kinds(&seen);
    assert!(
        k.contains(&"added u1".to_owned()),
        "the user's document: {k:?}"
    );
    assert!(
        k.contains(&"added n1".to_owned()),
        "the re-run subscription: {k:?}"
    );
    assert!(!k.contains(&"added n2".to_owned()), "{k:?}");
    assert!(
        k.contains(&"ready".to_owned()),
        "the re-run sends ready again: {k:?}"
    );
    assert_eq!(k.last().unwrap(), "result", "data before the result: {k:?}");
    let user_doc = seen.iter().find(|f| f["id"] == "u1").unwrap();
    assert_eq!(user_doc["collection"], "people");

    // Another user: the client gets the difference.
    let k = kinds(&c.call_seeing("2", "test.setUserId", json!(["u2"])).await);
    for expected in ["added u2", "added n2", "removed u1", "removed n1"] {
        assert!(k.contains(&expected.to_owned()), "{expected}: {k:?}");
    }

    let k = kinds(&c.call_seeing("3", "test.setUserId", json!([null])).await);
    for expected in ["removed u2", "removed n2"] {
        assert!(k.contains(&expected.to_owned()), "{expected}: {k:?}");
    }
    assert!(!k.iter().any(|f| f.starts_with("added")), "{k:?}");
    // The subscription is still live under its id: unsub ends it.
    c.send(json!({"msg":"unsub","id":"s"})).await;
    let nosub = c.recv_data().await;
    assert_eq!(nosub["msg"], "nosub");
    assert_eq!(nosub["id"], "s");
}

#[tokio::test]
async fn services_find_a_users_connections_and_log_the_others_out() {
    let server = server().await;
    seed(&server).await;
    let (mut a, _) = DdpClient::connect(&server).await;
    let (mut b, _) = DdpClient::connect(&server).await;
    let (mut watcher, _) = DdpClient::connect(&server).await;
    for c in [&mut a, &mut b] {
        let k = kinds(&c.call_seeing("in", "test.setUserId", json!(["u1"])).await);
        assert!(k.contains(&"added u1".to_owned()), "{k:?}");
    }
    let (r, _) = watcher.call("n", "test.connectionsOf", json!(["u1"])).await;
    assert_eq!(r["result"], 2);

    let (r, _) = a.call("out", "test.logOutOthers", json!([])).await;
    assert_eq!(r["result"], 1);
    // b is logged out live: its user document goes.
    let removed = b.recv_data().await;
    assert_eq!(
        (removed["msg"].as_str(), removed["id"].as_str()),
        (Some("removed"), Some("u1"))
    );
    let (r, _) = watcher.call("n", "test.connectionsOf", json!(["u1"])).await;
    assert_eq!(r["result"], 1);

    drop(a);
    let mut left = None;
    for _ in 0..100 {
        let (r, _) = watcher.call("n", "test.connectionsOf", json!(["u1"])).await;
        left = Some(r["result"].clone());
        if r["result"] == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        left,
        Some(json!(0)),
        "a closed connection leaves the directory"
    );
}

#[tokio::test]
async fn a_connection_closed_twice_over_runs_its_close_hook_once() {
    let server = server().await;
    let (mut c, session) = DdpClient::connect(&server).await;
    // The client says goodbye and then its socket goes: two ways to end one session.
    c.send(json!({"msg":"disconnect"})).await;
    drop(c);
    let (mut watcher, _) = DdpClient::connect(&server).await;
    let mut count = json!(0);
    for _ in 0..100 {
        let (r, _) = watcher
            .call("n", "test.closedCount", json!([session]))
            .await;
        count = r["result"].clone();
        if count != 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (r, _) = watcher
        .call("n", "test.closedCount", json!([session]))
        .await;
    assert_eq!((count, r["result"].clone()), (json!(1), json!(1)));
}
