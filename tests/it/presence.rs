//! Presence over DDP and REST: a user's status follows its connections and its choices,
//! watchers hear each change on `stream-user-presence` (and `user-status`), a quick
//! reconnect does not flap, strangers learn nothing, nobody sets another's status, a
//! process killed outright leaves no one online after the restart's sweep, and a thousand
//! connect/disconnect cycles leave the right status and no records behind.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use std::time::Duration;

const SOON: Duration = Duration::from_secs(5);
const GRACE_MS: u64 = 600;

/// A new user, logged in on its own connection: (connection, id, resume token).
async fn user(server: &common::TestServer, name: &str) -> (DdpClient, String, String) {
    common::registered(server, name).await
}

async fn resumed(server: &common::TestServer, token: &str) -> DdpClient {
    let (mut c, _) = DdpClient::connect(server).await;
    let frames = c
        .call_seeing("in", "login", json!([{"resume": token}]))
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    c
}

fn server_with_grace(grace_ms: u64) -> comet::config::Settings {
    common::test_settings(|c| {
        c.presence_grace_ms = Some(grace_ms);
        c.admin_username = Some(common::ADMIN.0.into());
        c.admin_pass = Some(common::ADMIN.1.into());
        c.admin_email = Some(common::ADMIN.2.into());
    })
}

/// The next presence frame about `uid`: `[username, status, statusText]`.
async fn presence_of(c: &mut DdpClient, uid: &str, within: Duration) -> Option<Json> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let m = c.next_on("stream-user-presence", left).await?;
        if m["id"] == uid {
            assert_eq!(m["msg"], "changed");
            assert_eq!(m["fields"]["uid"], uid);
            assert_eq!(m["fields"]["eventName"], uid);
            return Some(m["fields"]["args"][0].clone());
        }
    }
}

/// Waits for `uid`'s status number `want` (skipping others); panics after [`SOON`].
async fn until_status(c: &mut DdpClient, uid: &str, want: u64) -> Json {
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let args = presence_of(c, uid, left)
            .await
            .unwrap_or_else(|| panic!("no status {want} for {uid}"));
        if args[1] == want {
            return args;
        }
    }
}

#[tokio::test]
async fn watchers_hear_every_status_change_and_a_quick_reconnect_does_not_flap() {
    let server = common::spawn_server(server_with_grace(GRACE_MS)).await;
    let (mut ana, ana_id, ana_token) = user(&server, "ana").await;
    let (mut bob, _bob_id, _) = user(&server, "bob").await;
    let (mut cy, cy_id, _) = user(&server, "cy").await;
    let ready = bob
        .subscribe(
            "p",
            "stream-user-presence",
            json!(["", {"added": [ana_id]}]),
        )
        .await;
    assert_eq!(ready.last().unwrap()["msg"], "ready", "{ready:?}");
    let logged = cy
        .subscribe("l", "stream-notify-logged", json!(["user-status", false]))
        .await;
    assert_eq!(logged.last().unwrap()["msg"], "ready");

    ana.call_keeping("a", "UserPresence:away", json!([])).await;
    assert_eq!(
        until_status(&mut bob, &ana_id, 2).await,
        json!(["ana", 2, ""])
    );
    let (r, _) = ana
        .call_keeping("s", "setUserStatus", json!(["busy", "  in a meeting "]))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    assert_eq!(
        until_status(&mut bob, &ana_id, 3).await,
        json!(["ana", 3, "in a meeting"])
    );
    // A chosen default beats the connection; `online` hands it back to the connection.
    // `user-status` on stream-notify-logged carries the same change.
    let mut told = None;
    while let Some(m) = cy.next_on("stream-notify-logged", SOON).await {
        let s = m["fields"]["args"][0].clone();
        if s[2] == 3 {
            told = Some(s);
            break;
        }
    }
    let told = told.expect("user-status for busy");
    assert_eq!(
        (&told[0], &told[1], &told[3]),
        (&json!(ana_id), &json!("ana"), &json!("in a meeting"))
    );
    ana.call_keeping("o", "UserPresence:online", json!([]))
        .await;
    assert!(presence_of(&mut bob, &ana_id, Duration::from_millis(300))
        .await
        .is_none());
    let (r, _) = ana
        .call_keeping("d", "UserPresence:setDefaultStatus", json!(["online"]))
        .await;
    assert_eq!(r["result"], true, "{r}");
    assert_eq!(until_status(&mut bob, &ana_id, 1).await[0], "ana");

    // A second subscription only edits the list, and ends at once without error.
    let later = bob
        .subscribe(
            "p2",
            "stream-user-presence",
            json!(["", {"added": [cy_id]}]),
        )
        .await;
    let last = later.last().unwrap();
    assert_eq!(last["msg"], "nosub", "{later:?}");
    assert!(last.get("error").is_none(), "{last}");
    cy.call_keeping("a", "UserPresence:away", json!([])).await;
    assert_eq!(until_status(&mut bob, &cy_id, 2).await[0], "cy");

    // A reconnect within the grace: no offline in between.
    drop(ana);
    let mut ana = resumed(&server, &ana_token).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(GRACE_MS * 2);
    while let Some(args) = presence_of(
        &mut bob,
        &ana_id,
        deadline.saturating_duration_since(tokio::time::Instant::now()),
    )
    .await
    {
        assert_ne!(args[1], 0, "ana flapped offline during a quick reconnect");
    }
    // The last socket closes: offline once the grace is over.
    ana.call_keeping("x", "UserPresence:away", json!([])).await;
    until_status(&mut bob, &ana_id, 2).await;
    drop(ana);
    let offline = until_status(&mut bob, &ana_id, 0).await;
    assert_eq!(offline[0], "ana");

    // Removed from the list: no more of cy.
    bob.subscribe(
        "p3",
        "stream-user-presence",
        json!(["", {"removed": [cy_id]}]),
    )
    .await;
    cy.call_keeping("o", "UserPresence:online", json!([])).await;
    assert!(presence_of(&mut bob, &cy_id, Duration::from_millis(800))
        .await
        .is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn strangers_learn_no_ones_status_and_nobody_sets_anothers() {
    let server = common::spawn_server(server_with_grace(GRACE_MS)).await;
    let (_ana, ana_id, ana_token) = user(&server, "ana").await;
    let (_bob, bob_id, bob_token) = user(&server, "bob").await;

    let (mut stranger, _) = DdpClient::connect(&server).await;
    let refused = stranger
        .subscribe(
            "p",
            "stream-user-presence",
            json!(["", {"added": [ana_id]}]),
        )
        .await;
    let last = refused.last().unwrap();
    assert_eq!(last["msg"], "nosub");
    assert_eq!(last["error"]["error"], "not-allowed", "{last}");
    let (r, _) = stranger
        .call_keeping("d", "UserPresence:setDefaultStatus", json!(["busy"]))
        .await;
    assert!(r.get("error").is_none() && r.get("result").is_none(), "{r}");
    let ids = format!("/api/v1/users.presence?ids[]={ana_id}");
    for path in [
        ids.as_str(),
        "/api/v1/users.presence",
        &format!("/api/v1/users.getPresence?userId={ana_id}"),
    ] {
        let (status, _) = common::rest_get(&server, path, None).await;
        assert_eq!(status, 401, "{path}");
    }

    // Logged in, bob sees ana online.
    let (status, body) = common::rest_get(&server, &ids, Some((&bob_id, &bob_token))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["users"][0]["_id"], ana_id.as_str());
    assert_eq!(body["users"][0]["status"], "online");
    let (_, body) = common::rest_get(
        &server,
        &format!("/api/v1/users.getPresence?userId={ana_id}"),
        Some((&bob_id, &bob_token)),
    )
    .await;
    assert_eq!(body["presence"], "online", "{body}");
    assert!(
        body.get("connectionStatus").is_none(),
        "only for oneself: {body}"
    );

    // Bob may not set ana's status; ana may set her own; the administrator may set anyone's.
    let (status, body) = common::rest_post(
        &server,
        "/api/v1/users.setStatus",
        (&bob_id, &bob_token),
        json!({"userId": ana_id, "status": "busy", "message": "hijacked"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, body) = common::rest_get(
        &server,
        "/api/v1/users.getPresence",
        Some((&ana_id, &ana_token)),
    )
    .await;
    assert_eq!(body["presence"], "online", "{body}");
    assert_eq!(body["connectionStatus"], "online", "{body}");
    let (status, _) = common::rest_post(
        &server,
        "/api/v1/users.setStatus",
        (&ana_id, &ana_token),
        json!({"status": "whatever"}),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = common::rest_post(
        &server,
        "/api/v1/users.setStatus",
        (&ana_id, &ana_token),
        json!({"status": "away", "message": "lunch"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = common::rest_get(&server, &ids, Some((&bob_id, &bob_token))).await;
    assert_eq!(
        (&body["users"][0]["status"], &body["users"][0]["statusText"]),
        (&json!("away"), &json!("lunch"))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_connect_disconnect_cycles_leave_the_right_status_and_no_records() {
    let server = common::spawn_server(server_with_grace(150)).await;
    let (first, ana_id, token) = user(&server, "ana").await;
    drop(first);
    for _ in 0..1000 {
        let c = resumed(&server, &token).await;
        drop(c);
    }
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let read = |collection: &'static str, id: String| {
        let store = store.clone();
        async move {
            store
                .find(
                    collection,
                    comet::storage::FindOptions {
                        selector: comet::model::query::Selector::parse(&common::document(
                            json!({"_id": id}),
                        ))
                        .unwrap(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap()
                .pop()
        }
    };
    let mut settled = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let user = read("users", ana_id.clone()).await.unwrap();
        let records = read("usersSessions", ana_id.clone()).await;
        if user.get("status") == Some(&comet::model::Value::from("offline")) && records.is_none() {
            settled = true;
            break;
        }
    }
    assert!(
        settled,
        "ana is not offline with no records after the cycles"
    );
    // One connection kept: online, with exactly one record.
    let _kept = resumed(&server, &token).await;
    let mut online = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let user = read("users", ana_id.clone()).await.unwrap();
        let records = read("usersSessions", ana_id.clone()).await;
        let count = match records.as_ref().and_then(|r| r.get("connections")) {
            Some(comet::model::Value::Array(list)) => list.len(),
            _ => 0,
        };
        if user.get("status") == Some(&comet::model::Value::from("online")) && count == 1 {
            online = true;
            break;
        }
    }
    assert!(online, "ana is not online with one record");
    server.shutdown().await;
}

#[tokio::test]
async fn a_process_killed_outright_leaves_no_one_online_after_the_restart() {
    let envs = [
        ("ADMIN_USERNAME", common::ADMIN.0),
        ("ADMIN_PASS", common::ADMIN.1),
        ("ADMIN_EMAIL", common::ADMIN.2),
        ("COMET_BCRYPT_COST", "4"),
    ];
    let first = common::Binary::start("", &envs);
    let url = format!("ws://{}/websocket", first.addr);
    let mut ana = DdpClient::open(&url).await;
    ana.send(json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await;
    ana.recv().await;
    let frames = ana
        .call_seeing(
            "new",
            "createUser",
            json!([{"username": "ana", "email": "ana@example.com", "password": "pw"}]),
        )
        .await;
    let ana_id = frames.last().unwrap()["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Ana is online in the store before the kill.
    let login = |addr: std::net::SocketAddr| async move {
        let (status, body) = common::http_with(
            addr,
            "POST",
            "/api/v1/login",
            &[("Content-Type", "application/json")],
            json!({"user": common::ADMIN.0, "password": common::ADMIN.1})
                .to_string()
                .as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let body: Json = serde_json::from_str(&body).unwrap();
        (
            body["data"]["userId"].as_str().unwrap().to_owned(),
            body["data"]["authToken"].as_str().unwrap().to_owned(),
        )
    };
    let presence = |addr: std::net::SocketAddr, auth: (String, String), uid: String| async move {
        let (_, body) = common::http_with(
            addr,
            "GET",
            &format!("/api/v1/users.getPresence?userId={uid}"),
            &[("X-User-Id", &auth.0), ("X-Auth-Token", &auth.1)],
            b"",
        )
        .await;
        let body: Json = serde_json::from_str(&body).unwrap();
        body["presence"].as_str().unwrap_or_default().to_owned()
    };
    let auth = login(first.addr).await;
    let mut online = false;
    for _ in 0..50 {
        if presence(first.addr, auth.clone(), ana_id.clone()).await == "online" {
            online = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(online, "ana never showed online");
    let dir = first.kill();
    drop(ana);

    let second = common::Binary::start_in(dir.clone(), "", &envs);
    let auth = login(second.addr).await;
    assert_eq!(
        presence(second.addr, auth, ana_id.clone()).await,
        "offline",
        "the sweep at start left ana online"
    );
    // No record of the killed process's connections is left.
    let store = comet::storage::EmbeddedStore::open(&dir).unwrap();
    let store: std::sync::Arc<dyn comet::storage::Store> = store;
    let records = store
        .find("usersSessions", comet::storage::FindOptions::default())
        .await
        .unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.get("_id") != Some(&comet::model::Value::from(ana_id.as_str()))),
        "{records:?}"
    );
    second.stop();
}
