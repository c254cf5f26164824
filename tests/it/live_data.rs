//! Publications and collections from configuration over real sockets: live windows, the write
//! fence, ids derived from `randomSeed`, allow rules, and configuration errors.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::json;

const CONFIG: &str = r#"
[[publications]]
name = "tasks.open"
collection = "tasks"
selector = { done = false, list = "$args.0" }
sort = { createdAt = -1 }
limit = 2
fields = { text = 1, createdAt = 1, list = 1 }

[[collections]]
name = "tasks"
insert = {}
update = { owner = "$userId" }
remove = { list = "work" }
"#;

use common::config_file;

async fn server() -> common::TestServer {
    let path = config_file(CONFIG);
    common::spawn_server(common::test_settings(|c| c.config = Some(path))).await
}

async fn insert(
    c: &mut DdpClient,
    id: &str,
    seed: &str,
    doc: serde_json::Value,
) -> (serde_json::Value, Vec<serde_json::Value>) {
    c.send(
        json!({"msg":"method","id":id,"method":"/tasks/insert","params":[doc],"randomSeed":seed}),
    )
    .await;
    let mut before_updated = Vec::new();
    let mut result = None;
    loop {
        let m = c.recv_data().await;
        match m["msg"].as_str() {
            Some("result") if m["id"] == id => result = Some(m),
            Some("updated") => break,
            _ => before_updated.push(m),
        }
    }
    let result = match result {
        Some(r) => r,
        None => c.recv_data().await,
    };
    (result, before_updated)
}

#[tokio::test]
async fn window_follows_inserts_with_the_write_fence_and_seeded_ids() {
    let server = server().await;
    let (mut a, _) = DdpClient::connect(&server).await;
    a.send(json!({"msg":"sub","id":"s","name":"tasks.open","params":["work"]}))
        .await;
    assert_eq!(a.recv_data().await, json!({"msg":"ready","subs":["s"]}));

    // The id a Meteor client simulates for its first insert with this seed.
    let (expected, _) = a.call("x", "test.randomId", json!(["tasks"])).await;
    a.send(json!({"msg":"method","id":"seeded","method":"test.randomId","params":["tasks"],"randomSeed":"seed-1"})).await;
    let mut simulated = serde_json::Value::Null;
    for _ in 0..2 {
        let m = a.recv_data().await;
        if m["msg"] == "result" {
            simulated = m["result"].clone();
        }
    }
    assert!(expected["result"].is_string());

    let (result, frames) = insert(
        &mut a,
        "1",
        "seed-1",
        json!({"text":"one","done":false,"list":"work","createdAt":{"$date":1},"secret":"x"}),
    )
    .await;
    assert_eq!(
        result["result"], simulated,
        "the inserted _id is the one the client simulated"
    );
    assert_eq!(
        frames.len(),
        1,
        "the added frame precedes updated: {frames:?}"
    );
    assert_eq!(frames[0]["msg"], "added");
    assert_eq!(frames[0]["id"], simulated);
    assert_eq!(
        frames[0]["fields"],
        json!({"text":"one","list":"work","createdAt":{"$date":1}}),
        "fields projected"
    );

    insert(
        &mut a,
        "2",
        "seed-2",
        json!({"_id":"t2","text":"two","done":false,"list":"work","createdAt":{"$date":2}}),
    )
    .await;
    // A third, newer task pushes the oldest out of the two-document window.
    let (_, frames) = insert(
        &mut a,
        "3",
        "seed-3",
        json!({"_id":"t3","text":"three","done":false,"list":"work","createdAt":{"$date":3}}),
    )
    .await;
    let kinds: Vec<(&str, &str)> = frames
        .iter()
        .map(|f| (f["msg"].as_str().unwrap(), f["id"].as_str().unwrap()))
        .collect();
    assert!(
        kinds.contains(&("added", "t3"))
            && kinds.contains(&("removed", simulated.as_str().unwrap())),
        "{kinds:?}"
    );
    // Another list and done tasks never show.
    let (_, frames) = insert(
        &mut a,
        "4",
        "seed-4",
        json!({"_id":"t4","text":"other","done":false,"list":"home","createdAt":{"$date":9}}),
    )
    .await;
    assert!(frames.is_empty(), "{frames:?}");

    // Remove: allowed by the rule (list = work); the window refills.
    a.send(json!({"msg":"method","id":"r","method":"/tasks/remove","params":[{"_id":"t3"}]}))
        .await;
    let mut seen = Vec::new();
    loop {
        let m = a.recv_data().await;
        if m["msg"] == "updated" {
            break;
        }
        seen.push(m);
    }
    assert!(
        seen.iter()
            .any(|m| m["msg"] == "removed" && m["id"] == "t3"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m["msg"] == "added" && m["id"] == simulated),
        "{seen:?}"
    );
    // Every write above went through the change feed, and its lag was measured.
    assert!(common::metric(&server, "comet_change_feed_lag_seconds_count").await >= 5.0);
    server.shutdown().await;
}

#[tokio::test]
async fn allow_rules_deny_with_403_and_untrusted_selectors_are_refused() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    insert(
        &mut c,
        "1",
        "s",
        json!({"_id":"t1","owner":"ann","list":"home"}),
    )
    .await;
    let (r, _) = c
        .call(
            "2",
            "/tasks/update",
            json!([{"_id":"t1"},{"$set":{"text":"x"}}]),
        )
        .await;
    assert_eq!(r["error"]["error"], 403);
    assert_eq!(r["error"]["reason"], "Access denied");
    let (r, _) = c.call("3", "/tasks/remove", json!([{"_id":"t1"}])).await;
    assert_eq!(r["error"]["reason"], "Access denied");
    let (r, _) = c
        .call(
            "4",
            "/tasks/update",
            json!([{"owner":"ann"},{"$set":{"text":"x"}}]),
        )
        .await;
    assert_eq!(
        r["error"]["reason"],
        "Not permitted. Untrusted code may only update documents by ID."
    );
    let (r, _) = c.call("5", "/notes/insert", json!([{"a":1}])).await;
    assert_eq!(
        r["error"]["error"], 404,
        "an undeclared collection has no methods"
    );
    let (r, _) = c.call("6", "/tasks/insert", json!([{"$bad":1}])).await;
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("$ prefixed"),
        "{r}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_the_current_state_again() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    insert(
        &mut c,
        "1",
        "s",
        json!({"_id":"t1","text":"kept","done":false,"list":"work","createdAt":{"$date":1}}),
    )
    .await;
    drop(c);
    let (mut again, _) = DdpClient::connect(&server).await;
    again
        .send(json!({"msg":"sub","id":"s","name":"tasks.open","params":["work"]}))
        .await;
    assert_eq!(again.recv_data().await["id"], "t1");
    assert_eq!(again.recv_data().await, json!({"msg":"ready","subs":["s"]}));
    server.shutdown().await;
}

#[test]
fn configuration_with_an_unknown_operator_names_its_line() {
    let path = config_file("[[publications]]\nname = \"bad\"\ncollection = \"c\"\nselector = { a = { \"$frob\" = 1 } }\n");
    let settings = common::test_settings(|c| c.config = Some(path));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let err = rt.block_on(async {
        comet::app::build(&settings)
            .await
            .err()
            .unwrap()
            .to_string()
    });
    assert!(
        err.contains("line 2")
            && err.contains("publication 'bad'")
            && err.contains("unknown operator: $frob"),
        "{err}"
    );
}

#[test]
fn configuration_with_an_unknown_key_names_its_line() {
    let path = config_file("[[publications]]\nname = \"p\"\ncollection = \"c\"\nlimt = 5\n");
    let cli = comet::config::Cli {
        config: Some(path),
        ..Default::default()
    };
    let err = comet::config::Settings::resolve(cli, false)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("line 4") && err.contains("limt"), "{err}");
}
