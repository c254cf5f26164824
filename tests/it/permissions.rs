//! Roles and permissions: the defaults, `permissions/get`, one check for every caller (a
//! stranger and a plain user are refused what an administrator may do), room roles from the
//! user's subscription, and a permission changed in the store taking effect at once.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use std::time::Duration;

#[tokio::test]
async fn the_default_permissions_decide_who_sees_private_settings_and_follow_changes() {
    let server = common::spawn_with_admin().await;
    let (mut anon, _) = DdpClient::connect(&server).await;
    let (r, _) = anon.call("p", "permissions/get", json!([])).await;
    let list = r["result"].as_array().unwrap();
    let create_c = list.iter().find(|p| p["_id"] == "create-c").unwrap();
    assert_eq!(create_c["roles"], json!(["admin", "user", "bot", "app"]));
    let (r, _) = anon
        .call("d", "permissions/get", json!([{"$date": 1}]))
        .await;
    assert!(r["result"]["update"].as_array().unwrap().len() >= 40, "{r}");

    let frames = anon
        .call_seeing(
            "u",
            "createUser",
            json!([{"username": "ann", "password": "pw"}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some());
    let mut ann = common::logged_in(&server, "ann", "pw").await;
    let (r, _) = ann.call("q", "private-settings/get", json!([])).await;
    assert_eq!(
        r["result"],
        json!([]),
        "a plain user lacks view-privileged-setting"
    );
    let (r, _) = ann
        .call("s", "saveSetting", json!(["Site_Name", "ann's"]))
        .await;
    assert_eq!(r["error"]["error"], "error-action-not-allowed");
    let mut boss = common::logged_in(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (r, _) = boss.call("q", "private-settings/get", json!([])).await;
    assert!(!r["result"].as_array().unwrap().is_empty());

    // The administrator's grant, written to the store, counts at once.
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let update = comet::model::query::Update::parse(&match comet::model::Value::from_json(
        json!({"$addToSet": {"roles": "user"}}),
    )
    .unwrap()
    {
        comet::model::Value::Object(d) => d,
        _ => unreachable!(),
    })
    .unwrap();
    store
        .update(
            "rocketchat_permissions",
            comet::model::query::Selector::by_id("view-privileged-setting".into()),
            update,
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    let mut seen = Json::Null;
    for _ in 0..100 {
        let (r, _) = ann.call("q", "private-settings/get", json!([])).await;
        seen = r["result"].clone();
        if seen.as_array().is_some_and(|l| !l.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen.as_array().is_some_and(|l| !l.is_empty()), "{seen}");
}

#[tokio::test]
async fn rest_lists_permissions_for_a_logged_in_caller_only() {
    let server = common::spawn_with_admin().await;
    let (status, _) = common::http(server.addr, "GET", "/api/v1/permissions.listAll", b"").await;
    assert_eq!(status, 401);
    let (id, token) = common::rest_login(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (id, token) = (id.as_str(), token.as_str());
    let (status, body) = common::http_with(
        server.addr,
        "GET",
        "/api/v1/permissions.listAll",
        &[("X-User-Id", id), ("X-Auth-Token", token)],
        b"",
    )
    .await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!((status, &body["success"]), (200, &json!(true)));
    assert!(body["update"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["_id"] == "edit-message"));
}

#[tokio::test]
async fn room_roles_come_from_the_users_subscription_and_nobody_has_none() {
    let dir =
        std::env::temp_dir().join(format!("comet-perm-{}", comet::model::random::random_id()));
    let store: std::sync::Arc<dyn comet::storage::Store> =
        comet::storage::EmbeddedStore::open(&dir).unwrap();
    let follower = comet::engine::feed::Follower::new(&*store);
    let permissions = comet::chat::permissions::Permissions::start(store.clone(), &follower)
        .await
        .unwrap();
    follower.start();
    let doc = |j: Json| match comet::model::Value::from_json(j).unwrap() {
        comet::model::Value::Object(d) => d,
        _ => unreachable!(),
    };
    store
        .insert(
            "users",
            doc(json!({"_id": "u1", "username": "ann", "roles": ["user"]})),
        )
        .await
        .unwrap();
    store
        .insert(
            "rocketchat_subscription",
            doc(json!({"_id": "s1", "rid": "r1", "u": {"_id": "u1", "username": "ann"}, "roles": ["owner"]})),
        )
        .await
        .unwrap();
    let has = |user: Option<&'static str>, perm: &'static str, room: Option<&'static str>| {
        let p = permissions.clone();
        async move { p.has_permission(user, perm, room).await.unwrap() }
    };
    assert!(
        has(Some("u1"), "delete-message", Some("r1")).await,
        "owner of r1"
    );
    assert!(
        !has(Some("u1"), "delete-message", Some("r2")).await,
        "not in r2"
    );
    assert!(
        !has(Some("u1"), "delete-message", None).await,
        "not globally"
    );
    assert!(has(Some("u1"), "create-c", None).await);
    assert!(!has(None, "create-c", None).await, "no user, no permission");
    assert!(
        !has(Some("ghost"), "create-c", None).await,
        "an unknown user has no role"
    );
    assert!(!has(Some("u1"), "no-such-permission", None).await);
    let _ = std::fs::remove_dir_all(&dir);
}
