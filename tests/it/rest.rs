//! Rocket.Chat's REST entry points on comet's port: login (password and resume), the
//! `X-User-Id` / `X-Auth-Token` headers, `me`, `logout`, `users.register`, `users.info`,
//! `method.call` / `method.callAnon`, and what a stranger or a bad body gets.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{http, http_with, DdpClient};
use serde_json::{json, Value as Json};

/// Every test here makes more requests to one route from 127.0.0.1 than Rocket.Chat's ten
/// a minute; the route limits have their own tests (`security.rs`).
async fn server() -> common::TestServer {
    common::spawn_with_admin_and(common::without_route_limits).await
}

async fn post(
    server: &common::TestServer,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Json,
) -> (u16, Json) {
    let headers: Vec<(&str, &str)> = auth
        .map(|(id, token)| vec![("X-User-Id", id), ("X-Auth-Token", token)])
        .unwrap_or_default();
    let (status, text) = http_with(
        server.addr,
        "POST",
        path,
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

async fn get(server: &common::TestServer, path: &str, auth: Option<(&str, &str)>) -> (u16, Json) {
    common::rest_get(server, path, auth).await
}

async fn login(server: &common::TestServer) -> (String, String) {
    let (status, body) = post(
        server,
        "/api/v1/login",
        None,
        json!({"user": "boss", "password": "s3cret-pass"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    credentials(&body)
}

/// The user id and token of a login answer.
fn credentials(body: &Json) -> (String, String) {
    (
        body["data"]["userId"].as_str().unwrap().to_owned(),
        body["data"]["authToken"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn a_rest_client_logs_in_calls_methods_and_resumes_on_the_socket() {
    let server = server().await;
    let (status, body) = post(
        &server,
        "/api/v1/login",
        None,
        json!({"user": "boss", "password": "s3cret-pass"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["me"]["username"], "boss");
    assert!(body["data"]["me"].get("services").is_none(), "{body}");
    let (id, token) = credentials(&body);

    let (status, me) = get(&server, "/api/v1/me", Some((&id, &token))).await;
    assert_eq!(
        (status, &me["success"], &me["username"]),
        (200, &json!(true), &json!("boss")),
        "{me}"
    );
    assert_eq!(me["email"], "boss@example.com");
    assert!(me["_updatedAt"].is_null() && me.get("services").is_none());

    // A DDP method over REST: the result frame comes back as EJSON text.
    let frame =
        json!({"msg": "method", "method": "echo", "params": [{"$date": 5}], "id": "7"}).to_string();
    let (status, body) = post(
        &server,
        "/api/v1/method.call/echo",
        Some((&id, &token)),
        json!({"message": frame}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result: Json = serde_json::from_str(body["message"].as_str().unwrap()).unwrap();
    assert_eq!(
        result,
        json!({"msg": "result", "id": "7", "result": {"$date": 5}})
    );

    // The same token logs in on the socket.
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = c
        .call_seeing("l", "login", json!([{"resume": token}]))
        .await;
    assert_eq!(
        frames.last().unwrap()["result"]["id"],
        json!(id),
        "{frames:?}"
    );

    // Logging out over REST revokes it everywhere: the socket's session is logged out.
    let (status, body) = post(&server, "/api/v1/logout", Some((&id, &token)), json!({})).await;
    assert_eq!(
        (status, &body["status"]),
        (200, &json!("success")),
        "{body}"
    );
    let removed = c.recv_data_past_status().await;
    assert_eq!(
        (removed["msg"].as_str(), removed["collection"].as_str()),
        (Some("removed"), Some("users"))
    );
    let (status, _) = get(&server, "/api/v1/me", Some((&id, &token))).await;
    assert_eq!(status, 401, "the revoked token is refused");
}

#[tokio::test]
async fn strangers_and_bad_credentials_get_401_and_bad_bodies_400() {
    let server = server().await;
    let (id, token) = login(&server).await;
    for auth in [
        None,
        Some((id.as_str(), "wrong-token")),
        Some(("someone-else", token.as_str())),
    ] {
        let (status, body) = get(&server, "/api/v1/me", auth).await;
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert_eq!(body["status"], "error");
        let frame =
            json!({"msg": "method", "method": "echo", "params": [1], "id": "1"}).to_string();
        let (status, _) = post(
            &server,
            "/api/v1/method.call/echo",
            auth,
            json!({"message": frame}),
        )
        .await;
        assert_eq!(status, 401);
    }
    let (status, body) = post(
        &server,
        "/api/v1/login",
        None,
        json!({"user": "boss", "password": "nope"}),
    )
    .await;
    assert_eq!(
        (status, &body["error"]),
        (401, &json!("Unauthorized")),
        "{body}"
    );
    let huge = "u".repeat(1_000_000);
    for bad in [
        json!({"user": {"$ne": 1}, "password": "x"}),
        json!({"user": huge, "password": "x"}),
        json!({"user": "boss"}),
        json!({"user": 5, "password": []}),
    ] {
        let (status, body) = post(&server, "/api/v1/login", None, bad).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["success"], false);
    }
    let (status, _) = http(server.addr, "POST", "/api/v1/login", b"{not json").await;
    assert_eq!(status, 400);
    let (status, body) = get(&server, "/api/info", None).await;
    assert_eq!(
        (status, &body["success"]),
        (200, &json!(true)),
        "the server serves on"
    );
}

#[tokio::test]
async fn register_info_and_anonymous_method_calls() {
    let server = server().await;
    let (status, body) = post(
        &server,
        "/api/v1/users.register",
        None,
        json!({"username": "ann", "email": "ann@example.com", "pass": "pw", "name": "Ann"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "ann");
    let (status, body) = post(
        &server,
        "/api/v1/users.register",
        None,
        json!({"username": "ann", "email": "other@example.com", "pass": "pw"}),
    )
    .await;
    assert_eq!((status, &body["success"]), (403, &json!(false)), "{body}");
    let (status, body) = post(
        &server,
        "/api/v1/login",
        None,
        json!({"username": "ann", "password": "pw"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (id, token) = credentials(&body);
    let (status, body) = get(
        &server,
        "/api/v1/users.info?username=boss",
        Some((&id, &token)),
    )
    .await;
    assert_eq!(
        (status, &body["user"]["username"]),
        (200, &json!("boss")),
        "{body}"
    );
    assert!(body["user"].get("services").is_none());
    let (status, _) = get(&server, "/api/v1/users.info?username=boss", None).await;
    assert_eq!(status, 401);

    // callAnon runs a method without a user: a login over REST, as Rocket.Chat's clients do.
    let frame = json!({"msg": "method", "method": "login", "params": [{"user": {"username": "ann"}, "password": "pw"}], "id": "2"}).to_string();
    let (status, body) = post(
        &server,
        "/api/v1/method.callAnon/login",
        None,
        json!({"message": frame}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result: Json = serde_json::from_str(body["message"].as_str().unwrap()).unwrap();
    assert_eq!(result["result"]["id"], json!(id), "{result}");
    // A frame naming another method than the path is refused.
    let (status, _) = post(
        &server,
        "/api/v1/method.callAnon/echo",
        None,
        json!({"message": frame}),
    )
    .await;
    assert_eq!(status, 400);
}

/// Behind `HTTP_FORWARDED_COUNT` proxies, the address failures count against is the one
/// the proxies recorded: a guesser at one address is blocked, a user at another logs in.
#[tokio::test]
async fn behind_proxies_failures_count_against_the_forwarded_address() {
    let mut settings = common::test_settings(|c| {
        c.admin_username = Some(common::ADMIN.0.into());
        c.admin_pass = Some(common::ADMIN.1.into());
        c.http_forwarded_count = Some(1);
    });
    settings.setting_overrides = vec![
        (
            "Block_Multiple_Failed_Logins_Attempts_Until_Block_By_Ip".into(),
            "2".into(),
        ),
        (
            "Block_Multiple_Failed_Logins_By_User".into(),
            "false".into(),
        ),
    ];
    let server = common::spawn_server(settings).await;
    let attempt = |from: &'static str, password: &'static str| {
        let addr = server.addr;
        async move {
            let body = json!({"user": common::ADMIN.0, "password": password}).to_string();
            let (status, text) = http_with(
                addr,
                "POST",
                "/api/v1/login",
                &[("X-Forwarded-For", from)],
                body.as_bytes(),
            )
            .await;
            (status, text)
        }
    };
    for _ in 0..2 {
        assert_eq!(attempt("203.0.113.7", "wrong").await.0, 401);
    }
    let (status, text) = attempt("203.0.113.7", common::ADMIN.1).await;
    assert_ne!(
        status, 200,
        "the guessing address is blocked even with the password: {text}"
    );
    assert!(text.contains("error-login-blocked-for-ip"), "{text}");
    let (status, text) = attempt("198.51.100.4", common::ADMIN.1).await;
    assert_eq!(status, 200, "another client behind the same proxy: {text}");
}

/// A new user made over REST, logged in: its id and token.
async fn registered(server: &common::TestServer, name: &str) -> (String, String) {
    let (status, body) = post(
        server,
        "/api/v1/users.register",
        None,
        json!({"username": name, "email": format!("{name}@example.com"), "pass": "pw-long-enough", "name": name}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        server,
        "/api/v1/login",
        None,
        json!({"user": name, "password": "pw-long-enough"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    credentials(&body)
}

#[tokio::test]
async fn chat_routes_post_page_and_keep_strangers_out() {
    let server = server().await;
    let (ann_id, ann_token) = registered(&server, "ann").await;
    let ann = Some((ann_id.as_str(), ann_token.as_str()));
    let (eve_id, eve_token) = registered(&server, "eve").await;
    let eve = Some((eve_id.as_str(), eve_token.as_str()));

    let (status, body) = post(
        &server,
        "/api/v1/chat.postMessage",
        None,
        json!({"channel": "#general", "text": "x"}),
    )
    .await;
    assert_eq!(status, 401, "{body}");

    let (status, body) = post(
        &server,
        "/api/v1/groups.create",
        ann,
        json!({"name": "rest-secret"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let gid = body["group"]["rid"].as_str().unwrap().to_owned();
    for n in 0..3 {
        let (status, body) = post(
            &server,
            "/api/v1/chat.postMessage",
            ann,
            json!({"roomId": gid, "text": format!("g{n}")}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["message"]["msg"], format!("g{n}"));
    }
    let (status, body) = get(
        &server,
        &format!("/api/v1/groups.history?roomId={gid}&count=2"),
        ann,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["msg"].as_str().unwrap())
        .collect();
    assert_eq!(texts, vec!["g2", "g1"]);
    assert!(
        body["messages"][0]["ts"].as_str().unwrap().ends_with('Z'),
        "REST dates are ISO strings: {body}"
    );

    // A stranger gets nothing of the group, by any route: the answer a room that does not
    // exist gets, so the group's existence is not confirmed either.
    for path in [
        "/api/v1/groups.history?roomId={}",
        "/api/v1/groups.info?roomId={}",
        "/api/v1/groups.members?roomId={}",
        "/api/v1/chat.syncMessages?roomId={}&lastUpdate=0",
    ] {
        let (status, body) = get(&server, &path.replace("{}", &gid), eve).await;
        assert!(matches!(status, 400 | 403), "{path}: {body}");
        assert!(!body.to_string().contains("g1"), "{path}: {body}");
        let missing = get(&server, &path.replace("{}", "NoSuchRoom1234567"), eve).await;
        assert_eq!((status, body), missing, "{path}");
    }
    let (status, body) = post(
        &server,
        "/api/v1/chat.postMessage",
        eve,
        json!({"roomId": gid, "text": "let me in"}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    let (_, body) = get(&server, "/api/v1/groups.list", eve).await;
    assert_eq!(body["total"], 0, "{body}");

    // Channels: join, list with paging, DM by name, react, edit and delete.
    let (status, body) = post(
        &server,
        "/api/v1/channels.join",
        eve,
        json!({"roomName": "general"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for name in ["rest-a", "rest-b", "rest-c"] {
        post(
            &server,
            "/api/v1/channels.create",
            ann,
            json!({"name": name}),
        )
        .await;
    }
    let (_, body) = get(
        &server,
        "/api/v1/channels.list?count=2&offset=1&sort=%7B%22name%22%3A1%7D",
        eve,
    )
    .await;
    assert_eq!(
        (&body["count"], &body["offset"], &body["total"]),
        (&json!(2), &json!(1), &json!(4)),
        "{body}"
    );
    assert_eq!(body["channels"][0]["name"], "rest-a", "{body}");
    let (status, body) = post(
        &server,
        "/api/v1/chat.postMessage",
        ann,
        json!({"channel": "@eve", "text": "hi eve"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let dm_msg = body["message"]["_id"].as_str().unwrap().to_owned();
    let (_, body) = get(&server, "/api/v1/im.list", eve).await;
    assert_eq!(body["total"], 1, "{body}");
    let (status, body) = post(
        &server,
        "/api/v1/chat.react",
        eve,
        json!({"messageId": dm_msg, "emoji": ":wave:"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post(
        &server,
        "/api/v1/chat.update",
        ann,
        json!({"roomId": "x", "msgId": dm_msg, "text": "hi again"}),
    )
    .await;
    assert_eq!(status, 400, "the room must be the message's: {body}");
    let (_, body) = get(
        &server,
        &format!("/api/v1/chat.getMessage?msgId={dm_msg}"),
        eve,
    )
    .await;
    assert_eq!(
        body["message"]["reactions"][":wave:"]["usernames"],
        json!(["eve"]),
        "{body}"
    );
    let (status, body) = post(
        &server,
        "/api/v1/chat.delete",
        eve,
        json!({"roomId": "x", "msgId": dm_msg}),
    )
    .await;
    assert_eq!(status, 403, "not eve's message: {body}");
    let (status, body) = post(
        &server,
        "/api/v1/chat.delete",
        ann,
        json!({"roomId": "x", "msgId": dm_msg}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get(&server, "/api/v1/subscriptions.get", eve).await;
    assert!(body["update"].as_array().unwrap().len() >= 2, "{body}");
}
