//! The chat surface tried as an attacker would (issue 22): each test here failed on the code
//! before its fix. A stranger learns nothing of a room it may not read by any path, limits
//! hold on every way in, and the innocent are not locked out by someone else's guessing.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};

async fn call(c: &mut DdpClient, method: &str, params: Json) -> Json {
    c.call_keeping("m", method, params).await.0
}

fn error_of(r: &Json) -> String {
    r["error"]["error"].to_string().trim_matches('"').to_owned()
}

/// A private group of ann and bob with one message and one thread reply in it; returns the
/// group's id, the message's and the reply's.
async fn private_talk(ann: &mut DdpClient) -> (String, String, String) {
    let r = call(ann, "createPrivateGroup", json!(["secrets", ["bob"]])).await;
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    let r = call(
        ann,
        "sendMessage",
        json!([{"rid": rid, "msg": "the launch code"}]),
    )
    .await;
    let mid = r["result"]["_id"].as_str().unwrap().to_owned();
    let r = call(
        ann,
        "sendMessage",
        json!([{"rid": rid, "msg": "a reply in the thread", "tmid": mid}]),
    )
    .await;
    let reply = r["result"]["_id"].as_str().unwrap().to_owned();
    (rid, mid, reply)
}

#[tokio::test]
async fn a_message_id_sent_again_reveals_nothing_outside_its_own_room_and_sender() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let (_bob, _, _) = common::registered(&server, "bob").await;
    let (mut eve, eve_id, eve_token) = common::registered(&server, "eve").await;
    let (rid, mid, reply) = private_talk(&mut ann).await;

    for id in [&mid, &reply] {
        // The stranger names the private message's id in a room it may post in.
        let r = call(
            &mut eve,
            "sendMessage",
            json!([{"_id": id, "rid": "GENERAL", "msg": "hello"}]),
        )
        .await;
        assert_eq!(error_of(&r), "error-not-allowed", "{r}");
        assert!(!r.to_string().contains("launch code") && !r.to_string().contains("reply in"));
        let (status, body) = common::rest_post(
            &server,
            "/api/v1/chat.sendMessage",
            (&eve_id, &eve_token),
            json!({"message": {"_id": id, "rid": "GENERAL", "msg": "hello"}}),
        )
        .await;
        assert!(status >= 400, "{status} {body}");
        assert!(!body.to_string().contains(&rid), "{body}");
        // Its own sender, in another room: no copy of the private message there either.
        let r = call(
            &mut ann,
            "sendMessage",
            json!([{"_id": id, "rid": "GENERAL", "msg": "hello"}]),
        )
        .await;
        assert_eq!(error_of(&r), "error-not-allowed", "{r}");
    }
    // The retry the rule exists for: the sender, the same room, the same id.
    let r = call(
        &mut ann,
        "sendMessage",
        json!([{"_id": mid, "rid": rid, "msg": "the launch code"}]),
    )
    .await;
    assert_eq!(r["result"]["_id"], json!(mid), "{r}");
    assert_eq!(r["result"]["msg"], "the launch code", "{r}");
    server.shutdown().await;
}

/// A server whose settings `overrides` forces (as `OVERWRITE_SETTING_<id>` does).
async fn spawn_with(overrides: &[(&str, &str)]) -> common::TestServer {
    let mut settings = common::test_settings(|c| {
        c.admin_username = Some(common::ADMIN.0.into());
        c.admin_pass = Some(common::ADMIN.1.into());
        c.admin_email = Some(common::ADMIN.2.into());
    });
    settings.setting_overrides = overrides
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    common::spawn_server(settings).await
}

/// `method.callAnon/login` as Rocket.Chat's clients send it: the inner frame's result.
async fn call_anon_login(server: &common::TestServer, user: Json, password: &str) -> Json {
    let frame = json!({"msg": "method", "id": "1", "method": "login",
        "params": [{"user": user, "password": password}]})
    .to_string();
    let (status, body) = common::http_with(
        server.addr,
        "POST",
        "/api/v1/method.callAnon/login",
        &[("Content-Type", "application/json")],
        json!({ "message": frame }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Json = serde_json::from_str(&body).unwrap();
    serde_json::from_str(body["message"].as_str().unwrap()).unwrap()
}

async fn rest_login_status(server: &common::TestServer, user: &str, password: &str) -> (u16, Json) {
    let body = json!({"user": user, "password": password}).to_string();
    let (status, text) = common::http(server.addr, "POST", "/api/v1/login", body.as_bytes()).await;
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

#[tokio::test]
async fn method_call_logins_count_against_the_address_and_resume_tokens_still_work() {
    let server = spawn_with(&[(
        "Block_Multiple_Failed_Logins_Attempts_Until_Block_By_Ip",
        "5",
    )])
    .await;
    let (_ann, _, ann_token) = common::registered(&server, "ann").await;
    // Wrong passwords for five different names, through the side door.
    for i in 0..5 {
        let r = call_anon_login(&server, json!({"username": format!("nobody{i}")}), "guess").await;
        assert_eq!(r["error"]["error"], 403, "{r}");
    }
    // The address is blocked for passwords on every path, the right password included.
    let r = call_anon_login(&server, json!({"username": "ann"}), "pw").await;
    assert_eq!(r["error"]["error"], "error-login-blocked-for-ip", "{r}");
    let (status, body) = rest_login_status(&server, "ann", "pw").await;
    assert_ne!(status, 200, "{body}");
    let (mut c, _) = DdpClient::connect(&server).await;
    let r = call(
        &mut c,
        "login",
        json!([{"user": {"username": "ann"}, "password": "pw"}]),
    )
    .await;
    assert_eq!(error_of(&r), "error-login-blocked-for-ip", "{r}");
    // A resume token is not a guess: the innocent behind the address come back in.
    let r = call(&mut c, "login", json!([{ "resume": ann_token }])).await;
    assert!(r["result"]["token"].is_string(), "{r}");
    let (status, body) = common::http(
        server.addr,
        "POST",
        "/api/v1/login",
        json!({ "resume": ann_token }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_named_three_ways_is_one_user_to_the_lockout() {
    let server = spawn_with(&[(
        "Block_Multiple_Failed_Logins_Attempts_Until_Block_By_User",
        "3",
    )])
    .await;
    let (_ann, ann_id, _) = common::registered(&server, "ann").await;
    let (mut c, _) = DdpClient::connect(&server).await;
    for user in [
        json!({"username": "ann"}),
        json!({"email": "ann@example.com"}),
        json!({"id": ann_id}),
    ] {
        let r = call(
            &mut c,
            "login",
            json!([{"user": user, "password": "wrong"}]),
        )
        .await;
        assert_eq!(r["error"]["error"], 403, "{r}");
    }
    let r = call_anon_login(&server, json!({"email": "ANN@example.com"}), "pw").await;
    assert_eq!(r["error"]["error"], "error-login-blocked-for-user", "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn another_users_addresses_and_roles_need_view_full_other_user_info() {
    let server = common::spawn_with_admin().await;
    let (_ann, ann_id, ann_token) = common::registered(&server, "ann").await;
    let (_bob, bob_id, bob_token) = common::registered(&server, "bob").await;
    let (status, body) = common::rest_get(
        &server,
        "/api/v1/users.info?username=bob",
        Some((&ann_id, &ann_token)),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user"]["username"], "bob");
    for hidden in ["emails", "roles", "statusConnection", "services"] {
        assert!(body["user"].get(hidden).is_none(), "{hidden}: {body}");
    }
    // One's own document and the administrator's view keep the addresses.
    let (_, own) = common::rest_get(
        &server,
        &format!("/api/v1/users.info?userId={bob_id}"),
        Some((&bob_id, &bob_token)),
    )
    .await;
    assert_eq!(
        own["user"]["emails"][0]["address"], "bob@example.com",
        "{own}"
    );
    let (admin_id, admin_token) =
        common::rest_login(&server, common::ADMIN.0, common::ADMIN.1).await;
    let (_, full) = common::rest_get(
        &server,
        "/api/v1/users.info?username=bob",
        Some((&admin_id, &admin_token)),
    )
    .await;
    assert_eq!(
        full["user"]["emails"][0]["address"], "bob@example.com",
        "{full}"
    );
    // The room's member list never carries them either.
    let (mut ann, _) = common::DdpClient::connect(&server).await;
    let r = call(&mut ann, "login", json!([{ "resume": ann_token }])).await;
    assert!(r["result"].is_object(), "{r}");
    let r = call(&mut ann, "getUsersOfRoom", json!(["GENERAL", true])).await;
    assert!(r["result"]["total"].as_u64().unwrap() >= 2, "{r}");
    assert!(!r.to_string().contains("@example.com"), "{r}");
    server.shutdown().await;
}

/// A raw WebSocket upgrade as a client behind the proxy at `forwarded_for`; the status line.
async fn upgrade_from(
    addr: std::net::SocketAddr,
    forwarded_for: &str,
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /websocket HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         X-Forwarded-For: {forwarded_for}\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "answered");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got);
    (text.lines().next().unwrap_or_default().to_owned(), stream)
}

#[tokio::test]
async fn one_address_cannot_take_every_session() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.http_forwarded_count = Some(1);
        c.max_sessions_per_address = Some(3);
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let (status, stream) = upgrade_from(server.addr, "203.0.113.7").await;
        assert!(status.starts_with("HTTP/1.1 101"), "{status}");
        held.push(stream);
    }
    let (status, _) = upgrade_from(server.addr, "203.0.113.7").await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    let (status, _other) = upgrade_from(server.addr, "198.51.100.9").await;
    assert!(
        status.starts_with("HTTP/1.1 101"),
        "another address: {status}"
    );
    // A session that ends gives its place back.
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..50 {
        let (status, stream) = upgrade_from(server.addr, "203.0.113.7").await;
        if status.starts_with("HTTP/1.1 101") {
            admitted = true;
            held.push(stream);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(admitted, "the freed place is given again");
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_holds_at_most_so_many_subscriptions_across_connections() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.max_subscriptions_per_user = Some(4);
    }))
    .await;
    let (mut one, id, token) = common::registered(&server, "ann").await;
    let (mut two, _) = DdpClient::connect(&server).await;
    let r = call(&mut two, "login", json!([{ "resume": token }])).await;
    assert!(r["result"].is_object(), "{r}");
    for (on_one, sub) in [(true, "a"), (true, "b"), (false, "c"), (false, "d")] {
        let c = if on_one { &mut one } else { &mut two };
        let frames = c
            .subscribe(
                sub,
                "stream-notify-user",
                json!([format!("{id}/message"), false]),
            )
            .await;
        assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    }
    let frames = one
        .subscribe(
            "e",
            "stream-notify-user",
            json!([format!("{id}/message"), false]),
        )
        .await;
    let last = frames.last().unwrap();
    assert_eq!(last["msg"], "nosub", "{frames:?}");
    assert_eq!(
        last["error"]["error"], "too-many-subscriptions",
        "{frames:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_activity_write_carries_small_extras_only() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let (mut bob, _, _) = common::registered(&server, "bob").await;
    let r = call(&mut ann, "createPrivateGroup", json!(["talk", ["bob"]])).await;
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    let frames = bob
        .subscribe(
            "s",
            "stream-notify-room",
            json!([format!("{rid}/user-activity"), false]),
        )
        .await;
    assert_eq!(frames.last().unwrap()["msg"], "ready", "{frames:?}");
    let big = "x".repeat(64 * 1024);
    call(
        &mut ann,
        "stream-notify-room",
        json!([format!("{rid}/user-activity"), "ann", ["user-typing"], {"pad": big}]),
    )
    .await;
    call(
        &mut ann,
        "stream-notify-room",
        json!([format!("{rid}/user-activity"), "ann", ["user-typing"], {"tmid": "t1"}]),
    )
    .await;
    let got = bob
        .next_on("stream-notify-room", std::time::Duration::from_secs(3))
        .await
        .expect("the small write arrives");
    assert_eq!(got["fields"]["args"][2], json!({"tmid": "t1"}), "{got}");
    assert!(bob
        .next_on("stream-notify-room", std::time::Duration::from_millis(400))
        .await
        .is_none());
    server.shutdown().await;
}

#[tokio::test]
async fn every_method_is_limited_per_connection_and_name_as_rocket_chat_limits_it() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let mut refused = None;
    for i in 0..12 {
        let r = call(&mut ann, "createChannel", json!([format!("room{i}"), []])).await;
        if r.get("error").is_some() {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("a flood of createChannel is refused");
    assert_eq!(i, 10, "ten in ten seconds pass: {r}");
    assert_eq!(error_of(&r), "too-many-requests", "{r}");
    assert!(
        r["error"]["details"]["timeToReset"].as_u64().unwrap() > 0,
        "{r}"
    );
    // Other methods on the same connection are counted apart.
    let r = call(&mut ann, "getRoomIdByNameOrId", json!(["general"])).await;
    assert_eq!(r["result"], "GENERAL", "{r}");
    server.shutdown().await;
}

#[tokio::test]
async fn rest_routes_are_limited_per_address_with_rocket_chat_headers() {
    let server = common::spawn_with_admin().await;
    let (_ann, ann_id, ann_token) = common::registered(&server, "ann").await;
    let headers = [
        ("X-User-Id", ann_id.as_str()),
        ("X-Auth-Token", ann_token.as_str()),
    ];
    let mut last = (0, String::new());
    for _ in 0..11 {
        last = common::http_with(server.addr, "GET", "/api/v1/channels.list", &headers, b"").await;
    }
    assert_eq!(last.0, 429, "{}", last.1);
    let body: Json = serde_json::from_str(&last.1).unwrap();
    assert_eq!(body["errorType"], "error-too-many-requests", "{body}");
    // The headers, read from a raw answer.
    let raw = raw_get(server.addr, "/api/v1/channels.list", &headers).await;
    assert!(raw.contains("x-ratelimit-limit: 10"), "{raw}");
    assert!(raw.contains("x-ratelimit-remaining: 0"), "{raw}");
    assert!(raw.contains("x-ratelimit-reset: "), "{raw}");
    // The administrator has api-bypass-rate-limit.
    let (admin_id, admin_token) =
        common::rest_login(&server, common::ADMIN.0, common::ADMIN.1).await;
    for _ in 0..12 {
        let (status, body) = common::rest_get(
            &server,
            "/api/v1/channels.list",
            Some((&admin_id, &admin_token)),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    // Registration: one a minute from one address.
    let register = |name: &str| {
        json!({"username": name, "email": format!("{name}@example.com"), "pass": "pw-pw-pw", "name": name})
            .to_string()
    };
    let (status, body) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        register("reg1").as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        register("reg2").as_bytes(),
    )
    .await;
    assert_eq!(status, 429, "{body}");
    server.shutdown().await;
}

/// A GET's whole answer, head included.
async fn raw_get(addr: std::net::SocketAddr, path: &str, headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    String::from_utf8_lossy(&raw).to_ascii_lowercase()
}

#[tokio::test]
async fn a_stranger_cannot_tell_a_private_room_from_a_missing_one() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let (mut eve, eve_id, eve_token) = common::registered(&server, "eve").await;
    let r = call(&mut ann, "createPrivateGroup", json!(["hidden-plans", []])).await;
    let rid = r["result"]["rid"].as_str().unwrap().to_owned();
    for route in [
        "groups.info",
        "rooms.info",
        "channels.info",
        "groups.history",
        "groups.members",
    ] {
        let existing = common::rest_get(
            &server,
            &format!("/api/v1/{route}?roomId={rid}"),
            Some((&eve_id, &eve_token)),
        )
        .await;
        let missing = common::rest_get(
            &server,
            &format!("/api/v1/{route}?roomId=NoSuchRoomId12345"),
            Some((&eve_id, &eve_token)),
        )
        .await;
        assert_eq!(existing, missing, "{route}");
        let by_name = common::rest_get(
            &server,
            &format!("/api/v1/{route}?roomName=hidden-plans"),
            Some((&eve_id, &eve_token)),
        )
        .await;
        let no_name = common::rest_get(
            &server,
            &format!("/api/v1/{route}?roomName=no-such-room"),
            Some((&eve_id, &eve_token)),
        )
        .await;
        assert_eq!(by_name, no_name, "{route} by name");
    }
    let existing = call(
        &mut eve,
        "getRoomByTypeAndName",
        json!(["p", "hidden-plans"]),
    )
    .await;
    let missing = call(
        &mut eve,
        "getRoomByTypeAndName",
        json!(["p", "no-such-room"]),
    )
    .await;
    assert_eq!(existing["error"], missing["error"]);
    assert!(existing.get("error").is_some(), "{existing}");
    server.shutdown().await;
}

#[tokio::test]
async fn names_that_look_like_others_or_speak_for_the_server_are_refused() {
    let server = common::spawn_with_admin().await;
    let (mut ann, _, _) = common::registered(&server, "ann").await;
    let r = call(&mut ann, "createChannel", json!(["General", []])).await;
    assert_eq!(error_of(&r), "error-duplicate-channel-name", "{r}");
    for name in [
        "ＧＥＮＥＲＡＬ",
        "g\u{435}neral",
        "all",
        "here",
        "rocket.cat",
    ] {
        let r = call(&mut ann, "createPrivateGroup", json!([name, []])).await;
        assert_eq!(error_of(&r), "error-invalid-name", "{name}: {r}");
    }
    let r = call(&mut ann, "getRoomIdByNameOrId", json!(["General"])).await;
    assert!(r.get("error").is_some() || r["result"] == "GENERAL", "{r}");
    for name in ["all", "here", "rocket.cat", "Rocket.Cat"] {
        let (mut c, _) = DdpClient::connect(&server).await;
        let r = call(
            &mut c,
            "createUser",
            json!([{"username": name, "email": format!("x{}@example.com", name.len()), "password": "pw"}]),
        )
        .await;
        assert!(r.get("error").is_some(), "{name}: {r}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn cross_origin_reads_are_off_unless_the_settings_allow_an_origin() {
    let server = common::spawn_with_admin().await;
    for path in ["/api/info", "/sockjs/info", "/api/v1/settings.public"] {
        let raw = raw_get(server.addr, path, &[("Origin", "https://evil.example")]).await;
        assert!(raw.starts_with("http/1.1 200"), "{raw}");
        assert!(
            !raw.contains("access-control-allow-origin"),
            "{path}: {raw}"
        );
        assert!(
            !raw.contains("access-control-allow-credentials"),
            "{path}: {raw}"
        );
    }
    server.shutdown().await;
    let server = spawn_with(&[
        ("API_Enable_CORS", "true"),
        (
            "API_CORS_Origin",
            "https://chat.example, https://app.example",
        ),
    ])
    .await;
    let raw = raw_get(
        server.addr,
        "/api/info",
        &[("Origin", "https://app.example")],
    )
    .await;
    assert!(
        raw.contains("access-control-allow-origin: https://app.example"),
        "{raw}"
    );
    let raw = raw_get(
        server.addr,
        "/api/info",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert!(!raw.contains("access-control-allow-origin"), "{raw}");
    server.shutdown().await;
}

#[test]
fn metrics_need_the_token_and_health_stays_open() {
    let server = common::Binary::start("", &[("COMET_METRICS_TOKEN", "scrape-secret")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (status, _) = common::http(server.addr, "GET", "/metrics", b"").await;
        assert_eq!(status, 401);
        let (status, body) = common::http_with(
            server.addr,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer wrong")],
            b"",
        )
        .await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = common::http_with(
            server.addr,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer scrape-secret")],
            b"",
        )
        .await;
        assert_eq!(status, 200);
        assert!(body.contains("comet_"), "{body}");
        let (status, _) = common::http(server.addr, "GET", "/health", b"").await;
        assert_eq!(status, 200);
    });
    server.stop();
    // Without a token, only this host's own requests, not one a proxy forwarded.
    let server = common::Binary::start("", &[]);
    let log = rt.block_on(async {
        let (status, _) = common::http(server.addr, "GET", "/metrics", b"").await;
        assert_eq!(status, 200);
        let (status, _) = common::http_with(
            server.addr,
            "GET",
            "/metrics",
            &[("X-Forwarded-For", "203.0.113.5")],
            b"",
        )
        .await;
        assert_eq!(status, 401);
        common::http_with(
            server.addr,
            "GET",
            "/health",
            &[("X-Forwarded-For", "203.0.113.6")],
            b"",
        )
        .await
    });
    assert_eq!(log.0, 200);
    let log = server.stop();
    let warnings = log
        .iter()
        .filter(|l| l.contains("HTTP_FORWARDED_COUNT is 0"))
        .count();
    assert_eq!(warnings, 1, "said once: {log:?}");
}

#[tokio::test]
async fn bad_dates_and_bad_ejson_get_answers_and_empty_passwords_are_refused() {
    let server = common::spawn_with_admin().await;
    let (_ann, ann_id, ann_token) = common::registered(&server, "ann").await;
    let (status, body) = common::rest_get(
        &server,
        "/api/v1/chat.syncMessages?roomId=GENERAL&lastUpdate=1e308",
        Some((&ann_id, &ann_token)),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // A method whose parameters are not EJSON is answered by its id.
    let (mut c, _) = DdpClient::connect(&server).await;
    c.send_raw(r#"{"msg":"method","id":"bad-date","method":"echo","params":[{"$date":1e20}]}"#)
        .await;
    let mut answered = false;
    for _ in 0..3 {
        let m = c.recv_data().await;
        if m["msg"] == "result" && m["id"] == "bad-date" {
            assert_eq!(m["error"]["error"], 400, "{m}");
            answered = true;
            break;
        }
    }
    assert!(answered, "the call ends");
    let (status, body) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        json!({"username": "nopass", "email": "nopass@example.com", "pass": "", "name": "n"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let r = call(
        &mut c,
        "createUser",
        json!([{"username": "nopass2", "email": "np2@example.com", "password": ""}]),
    )
    .await;
    assert!(r.get("error").is_some(), "{r}");
    server.shutdown().await;
}

#[test]
fn an_unknown_user_costs_a_login_as_much_time_as_a_wrong_password() {
    let server = common::Binary::start(
        "",
        &[
            ("ADMIN_USERNAME", "boss"),
            ("ADMIN_PASS", "s3cret-pass"),
            ("ADMIN_EMAIL", "boss@example.com"),
            ("COMET_BCRYPT_COST", "10"),
            ("OVERWRITE_SETTING_API_Enable_Rate_Limiter", "false"),
        ],
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (known, unknown) = rt.block_on(async {
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for i in 0..5 {
            for (user, into) in [("boss", &mut known), (&*format!("nobody{i}"), &mut unknown)] {
                let body = json!({"user": user, "password": "not-it"}).to_string();
                let started = std::time::Instant::now();
                let (status, _) =
                    common::http(server.addr, "POST", "/api/v1/login", body.as_bytes()).await;
                into.push(started.elapsed());
                assert_eq!(status, 401);
            }
        }
        known.sort();
        unknown.sort();
        (known[2], unknown[2])
    });
    server.stop();
    // bcrypt at cost 10 takes tens of milliseconds; a name that finds no one was answered in
    // well under one before.
    assert!(
        unknown * 2 >= known,
        "unknown user {unknown:?} against a wrong password {known:?}"
    );
}
