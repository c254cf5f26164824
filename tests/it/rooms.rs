//! The Room service over DDP: channels and private groups with their members and owner,
//! names validated and unique, direct messages created once, the sync reads, and a stranger
//! who learns nothing of a private group.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};

/// A new user, logged in on its own connection.
async fn user(server: &common::TestServer, name: &str) -> DdpClient {
    common::registered(server, name).await.0
}

async fn call(c: &mut DdpClient, method: &str, params: Json) -> Json {
    let (result, _) = c.call_keeping("m", method, params).await;
    result
}

fn ids(list: &Json) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["rid"].as_str().or(d["_id"].as_str()).unwrap().to_owned())
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_channel_gets_its_owner_and_members_and_a_unique_valid_name() {
    let server = common::spawn_with_admin().await;
    let mut ann = user(&server, "ann").await;
    let mut bob = user(&server, "bob").await;
    let r = call(&mut ann, "createChannel", json!(["team-talk", ["bob"]])).await;
    let room = &r["result"];
    assert_eq!(
        (
            &room["t"],
            &room["name"],
            &room["inserted"],
            &room["usersCount"]
        ),
        (&json!("c"), &json!("team-talk"), &json!(true), &json!(2)),
        "{r}"
    );
    let rid = room["rid"].as_str().unwrap().to_owned();
    assert_eq!(room["_id"], rid);

    let subs = call(&mut ann, "subscriptions/get", json!([])).await["result"].clone();
    let own = subs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == rid)
        .expect("the owner's subscription");
    assert_eq!(own["roles"], json!(["owner"]));
    assert_eq!(own["u"]["username"], "ann");
    let theirs = call(&mut bob, "subscriptions/get", json!([])).await["result"].clone();
    let member = theirs
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == rid)
        .expect("the member's subscription");
    assert!(member.get("roles").is_none(), "{member}");
    assert!(ids(&call(&mut bob, "rooms/get", json!([])).await["result"]).contains(&rid));

    for (params, code) in [
        (json!(["Team-Talk"]), "error-duplicate-channel-name"),
        (json!(["bad name"]), "error-invalid-name"),
        (json!(["fine", ["nobody-here"]]), "error-invalid-members"),
        (json!([5]), "400"),
    ] {
        let r = call(&mut ann, "createChannel", params.clone()).await;
        assert_eq!(
            r["error"]["error"].to_string().trim_matches('"'),
            code,
            "{params}: {r}"
        );
    }
    let (mut anon, _) = DdpClient::connect(&server).await;
    let r = call(&mut anon, "createChannel", json!(["anon-room"])).await;
    assert_eq!(r["error"]["error"], "error-invalid-user", "{r}");
    assert_eq!(
        call(&mut anon, "rooms/get", json!([])).await["result"],
        json!([])
    );
    assert_eq!(
        call(&mut anon, "subscriptions/get", json!([])).await["result"],
        json!([])
    );
}

#[tokio::test]
async fn a_stranger_learns_nothing_of_a_private_group() {
    let server = common::spawn_with_admin().await;
    let mut ann = user(&server, "ann").await;
    let mut eve = user(&server, "eve").await;
    let r = call(&mut ann, "createPrivateGroup", json!(["secret-plans", []])).await;
    assert_eq!(r["result"]["t"], "p", "{r}");
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    assert_eq!(
        call(&mut ann, "getRoomIdByNameOrId", json!(["secret-plans"])).await["result"],
        json!(rid)
    );
    assert_eq!(
        call(&mut ann, "getRoomNameById", json!([rid])).await["result"],
        json!("secret-plans")
    );
    for (method, key) in [
        ("getRoomIdByNameOrId", json!("secret-plans")),
        ("getRoomIdByNameOrId", json!(rid)),
        ("getRoomNameById", json!(rid)),
    ] {
        let r = call(&mut eve, method, json!([key])).await;
        assert_eq!(r["error"]["error"], "error-not-allowed", "{method}: {r}");
    }
    assert!(!ids(&call(&mut eve, "rooms/get", json!([])).await["result"]).contains(&rid));
    // A public channel, though, anyone logged in may look up.
    let r = call(&mut ann, "createChannel", json!(["open-air"])).await;
    let open = r["result"]["rid"].clone();
    assert_eq!(
        call(&mut eve, "getRoomIdByNameOrId", json!(["open-air"])).await["result"],
        open
    );
}

#[tokio::test]
async fn a_direct_message_is_created_once_whoever_asks() {
    let server = common::spawn_with_admin().await;
    let mut ann = user(&server, "ann").await;
    let mut bob = user(&server, "bob").await;
    let first = call(&mut ann, "createDirectMessage", json!(["bob"])).await;
    let room = &first["result"];
    assert_eq!(room["t"], "d", "{first}");
    let rid = room["rid"].as_str().unwrap().to_owned();
    let uids: Vec<String> = room["uids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap().to_owned())
        .collect();
    let mut sorted = uids.clone();
    sorted.sort();
    assert_eq!(uids, sorted, "sorted ids");
    assert_eq!(rid, uids.concat());
    let again = call(&mut bob, "createDirectMessage", json!(["ann"])).await;
    assert_eq!(
        again["result"]["rid"],
        json!(rid),
        "the same DM from the other side"
    );
    let subs = call(&mut bob, "subscriptions/get", json!([])).await["result"].clone();
    let dm: Vec<&Json> = subs
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["rid"] == rid)
        .collect();
    assert_eq!(dm.len(), 1, "one subscription each, however often asked");
    assert_eq!(dm[0]["name"], "ann", "named after the other member");
    let r = call(&mut ann, "createDirectMessage", json!(["ann"])).await;
    assert_eq!(r["error"]["error"], "error-invalid-user", "{r}");
    let r = call(&mut ann, "createDirectMessage", json!(["nobody-here"])).await;
    assert_eq!(r["error"]["error"], "error-invalid-user", "{r}");
}

#[tokio::test]
async fn the_since_form_returns_what_changed_after_the_date() {
    let server = common::spawn_with_admin().await;
    let mut ann = user(&server, "ann").await;
    call(&mut ann, "createChannel", json!(["before"])).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let after = call(&mut ann, "createChannel", json!(["after"])).await["result"]["rid"].clone();
    for method in ["rooms/get", "subscriptions/get"] {
        let r = call(&mut ann, method, json!([{"$date": cut}])).await;
        let update = &r["result"]["update"];
        assert_eq!(
            ids(update),
            vec![after.as_str().unwrap().to_owned()],
            "{method}: {r}"
        );
        assert_eq!(r["result"]["remove"], json!([]), "{method}");
    }
}
