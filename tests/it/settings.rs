//! Settings as Rocket.Chat's clients read them: public ones for anyone, private ones for an
//! administrator only, the "since" form, the administrator's writes, a change by another
//! writer seen from the store's change events, REST `settings.public`, and a second start
//! that changes nothing.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use std::time::Duration;

async fn admin(server: &common::TestServer) -> DdpClient {
    let (mut c, _) = DdpClient::connect(server).await;
    let frames = c
        .call_seeing(
            "in",
            "login",
            json!([{"user": {"username": common::ADMIN.0}, "password": common::ADMIN.1}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    c
}

fn value_of<'a>(list: &'a Json, id: &str) -> Option<&'a Json> {
    list.as_array()?
        .iter()
        .find(|s| s["_id"] == id)
        .map(|s| &s["value"])
}

#[tokio::test]
async fn public_settings_for_anyone_private_ones_for_the_administrator() {
    let server = common::spawn_with_admin().await;
    let (mut anon, _) = DdpClient::connect(&server).await;
    let (r, _) = anon.call("p", "public-settings/get", json!([])).await;
    assert_eq!(
        value_of(&r["result"], "Site_Name"),
        Some(&json!("comet")),
        "{r}"
    );
    assert_eq!(
        value_of(&r["result"], "Message_MaxAllowedSize"),
        Some(&json!(5000))
    );
    assert!(
        value_of(&r["result"], "DDP_Rate_Limit_User_Enabled").is_none(),
        "private stays out"
    );
    let (r, _) = anon.call("q", "private-settings/get", json!([])).await;
    assert_eq!(r["result"], json!([]), "a stranger gets nothing: {r}");
    let (r, _) = anon
        .call("s", "saveSetting", json!(["Site_Name", "mine"]))
        .await;
    assert_eq!(r["error"]["error"], "error-action-not-allowed", "{r}");

    let mut boss = admin(&server).await;
    let (r, _) = boss.call("q", "private-settings/get", json!([])).await;
    assert_eq!(
        value_of(&r["result"], "DDP_Rate_Limit_User_Enabled"),
        Some(&json!(true)),
        "{r}"
    );
    let before = json!({"$date": 1.0});
    let (r, _) = boss
        .call("s", "saveSetting", json!(["Site_Name", "Our chat"]))
        .await;
    assert_eq!(r["result"], true, "{r}");
    let (r, _) = boss
        .call("w", "saveSetting", json!(["Message_MaxAllowedSize", "big"]))
        .await;
    assert_eq!(r["error"]["error"], "invalid-setting-value", "{r}");
    let (r, _) = anon.call("d", "public-settings/get", json!([before])).await;
    assert_eq!(
        value_of(&r["result"]["update"], "Site_Name"),
        Some(&json!("Our chat")),
        "{r}"
    );
    assert_eq!(r["result"]["remove"], json!([]));
    let (r, _) = anon
        .call("bad", "public-settings/get", json!([{"$ne": 1}]))
        .await;
    assert_eq!(r["error"]["reason"], "Match failed");

    // A page holds 50 settings at most: the one wanted is named.
    let (status, body) = common::http(
        server.addr,
        "GET",
        "/api/v1/settings.public?_id=Site_Name",
        b"",
    )
    .await;
    let body: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        value_of(&body["settings"], "Site_Name"),
        Some(&json!("Our chat")),
        "{body}"
    );
}

#[tokio::test]
async fn a_setting_changed_by_another_writer_is_seen() {
    let server = common::spawn_with_admin().await;
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let selector = comet::model::query::Selector::by_id("Site_Name".into());
    let update = comet::model::query::Update::parse(&match comet::model::Value::from_json(
        json!({"$set": {"value": "changed elsewhere"}}),
    )
    .unwrap()
    {
        comet::model::Value::Object(d) => d,
        _ => unreachable!(),
    })
    .unwrap();
    store
        .update(
            "rocketchat_settings",
            selector,
            update,
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    let (mut c, _) = DdpClient::connect(&server).await;
    let mut seen = Json::Null;
    for _ in 0..100 {
        let (r, _) = c.call("p", "public-settings/get", json!([])).await;
        seen = value_of(&r["result"], "Site_Name")
            .cloned()
            .unwrap_or(Json::Null);
        if seen == "changed elsewhere" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, "changed elsewhere");
}

#[tokio::test]
async fn a_second_start_changes_nothing() {
    let settings = common::test_settings(|c| {
        c.admin_username = Some(common::ADMIN.0.into());
        c.admin_pass = Some(common::ADMIN.1.into());
    });
    let server = common::spawn_server(settings.clone()).await;
    let mut boss = admin(&server).await;
    let (r, _) = boss
        .call("s", "saveSetting", json!(["Site_Name", "Kept"]))
        .await;
    assert_eq!(r["result"], true);
    let frames = boss
        .call_seeing(
            "u",
            "createUser",
            json!([{"username": "ann", "password": "pw"}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    drop(boss);
    server.shutdown().await;

    let mut again = settings;
    again.accounts.admin = Some(comet::chat::accounts::AdminSeed {
        username: "other-admin".into(),
        password: comet::chat::accounts::Secret("x".into()),
        email: None,
    });
    let server = common::spawn_server(again).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let (r, _) = c.call("p", "public-settings/get", json!([])).await;
    assert_eq!(value_of(&r["result"], "Site_Name"), Some(&json!("Kept")));
    let frames = c
        .call_seeing(
            "l",
            "login",
            json!([{"user": {"username": "other-admin"}, "password": "x"}]),
        )
        .await;
    assert_eq!(
        frames.last().unwrap()["error"]["reason"],
        "User not found",
        "no second administrator"
    );
    let frames = c
        .call_seeing(
            "m",
            "login",
            json!([{"user": {"username": common::ADMIN.0}, "password": common::ADMIN.1}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
}

/// An administrator's REST login: (user id, token).
async fn rest_admin(server: &common::TestServer) -> (String, String) {
    common::rest_login(server, common::ADMIN.0, common::ADMIN.1).await
}

#[tokio::test]
async fn accounts_follow_the_registration_and_expiration_settings_written_over_rest() {
    let server = common::spawn_with_admin().await;
    let (id, token) = rest_admin(&server).await;
    let auth = [("X-User-Id", id.as_str()), ("X-Auth-Token", token.as_str())];
    let (status, body) = common::http_with(
        server.addr,
        "POST",
        "/api/v1/settings/Accounts_RegistrationForm",
        &auth,
        json!({"value": "Disabled"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = common::http_with(
        server.addr,
        "GET",
        "/api/v1/settings/Accounts_RegistrationForm",
        &auth,
        b"",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Json>(&body).unwrap()["value"],
        "Disabled"
    );
    let (mut c, _) = DdpClient::connect(&server).await;
    let (r, _) = c
        .call(
            "c",
            "createUser",
            json!([{"username": "ann", "password": "pw"}]),
        )
        .await;
    assert_eq!(r["error"]["reason"], "Signups forbidden", "{r}");
    let (status, _) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        json!({"username": "ann", "email": "a@example.com", "pass": "pw"})
            .to_string()
            .as_bytes(),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = common::http(
        server.addr,
        "POST",
        "/api/v1/settings/Site_Name",
        json!({"value": "x"}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "a stranger writes nothing");

    // Tokens older than the expiration setting no longer resume.
    let (status, _) = common::http_with(
        server.addr,
        "POST",
        "/api/v1/settings/Accounts_LoginExpiration",
        &auth,
        json!({"value": 0}).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let frames = c
        .call_seeing("r", "login", json!([{"resume": token}]))
        .await;
    assert_eq!(
        frames.last().unwrap()["error"]["reason"],
        "Your session has expired. Please log in again.",
        "{frames:?}"
    );
}

/// Writes a setting as the administrator over REST.
async fn set_over_rest(server: &common::TestServer, auth: &[(&str, &str)], id: &str, value: Json) {
    let (status, body) = common::http_with(
        server.addr,
        "POST",
        &format!("/api/v1/settings/{id}"),
        auth,
        json!({ "value": value }).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn secret_url_registration_lets_in_only_who_brings_the_secret_and_never_shows_it() {
    // Registrations here come quicker than Rocket.Chat's one a minute from one address.
    let server = common::spawn_with_admin_and(common::without_route_limits).await;
    let (id, token) = rest_admin(&server).await;
    let auth = [("X-User-Id", id.as_str()), ("X-Auth-Token", token.as_str())];
    set_over_rest(
        &server,
        &auth,
        "Accounts_RegistrationForm",
        json!("Secret URL"),
    )
    .await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let register = |n: u32, secret: Json| json!([{"email": format!("p{n}@example.com"), "pass": "pw", "name": "P", "secretURL": secret}]);

    // No secret set yet: no one gets in, not even with an empty one.
    let (r, _) = c.call("a", "registerUser", register(1, json!(""))).await;
    assert_eq!(r["error"]["error"], "error-user-registration-secret", "{r}");

    let (r, _) = c
        .call("k0", "checkRegistrationSecretURL", json!([""]))
        .await;
    assert_eq!(r["result"], false, "an empty secret is never one: {r}");
    set_over_rest(
        &server,
        &auth,
        "Accounts_RegistrationForm_SecretURL",
        json!("k3y-of-the-door"),
    )
    .await;
    let (r, _) = c
        .call(
            "k1",
            "checkRegistrationSecretURL",
            json!(["k3y-of-the-door"]),
        )
        .await;
    assert_eq!(r["result"], true, "{r}");
    let (r, _) = c
        .call(
            "k2",
            "checkRegistrationSecretURL",
            json!(["k3y-of-the-doo"]),
        )
        .await;
    assert_eq!(r["result"], false, "{r}");
    let (r, _) = c
        .call("k3", "checkRegistrationSecretURL", json!([{"$ne": ""}]))
        .await;
    assert_eq!(r["error"]["error"], 400, "a secret is a string: {r}");
    let (r, _) = c
        .call("b", "registerUser", register(2, json!("k3y-of-the-doo")))
        .await;
    assert_eq!(r["error"]["error"], "error-user-registration-secret", "{r}");
    let (r, _) = c
        .call("c", "registerUser", register(3, json!({"$ne": ""})))
        .await;
    assert_eq!(
        r["error"]["error"], "error-user-registration-secret",
        "a secret is a string: {r}"
    );
    let (r, _) = c
        .call(
            "d",
            "createUser",
            json!([{"username": "ann", "password": "pw"}]),
        )
        .await;
    assert_eq!(
        r["error"]["error"], "error-user-registration-secret",
        "createUser brings no secret: {r}"
    );
    let (r, _) = c
        .call("e", "registerUser", register(4, json!("k3y-of-the-door")))
        .await;
    assert!(r["result"].is_string(), "the secret opens the door: {r}");

    // REST: the same rule.
    let body = |secret: &str| {
        json!({"username": "bo", "email": "bo@example.com", "pass": "pw", "secretURL": secret})
            .to_string()
    };
    let (status, text) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        body("nope").as_bytes(),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("error-user-registration-secret"), "{text}");
    let (status, text) = common::http(
        server.addr,
        "POST",
        "/api/v1/users.register",
        body("k3y-of-the-door").as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // The secret is private: neither a stranger nor a plain user reads it.
    let (mut anon, _) = DdpClient::connect(&server).await;
    let (r, _) = anon.call("p", "public-settings/get", json!([])).await;
    assert_eq!(
        value_of(&r["result"], "Accounts_RegistrationForm"),
        Some(&json!("Secret URL"))
    );
    assert!(!r.to_string().contains("k3y-of-the-door"), "{r}");
    let (status, text) = common::rest_get(&server, "/api/v1/settings.public", None).await;
    assert_eq!(status, 200);
    assert!(text["settings"].is_array(), "{text}");
    assert!(!text.to_string().contains("k3y-of-the-door"));
    let mut bo = common::logged_in(&server, "bo", "pw").await;
    let (r, _) = bo.call("q", "private-settings/get", json!([])).await;
    assert!(!r.to_string().contains("k3y-of-the-door"), "{r}");
}

fn login_frame(id: &str) -> (String, Json) {
    (
        id.to_owned(),
        json!([{"user": {"username": common::ADMIN.0}, "password": common::ADMIN.1}]),
    )
}

/// Logs in `times` times on one connection; the errors' codes, in order.
async fn login_errors(c: &mut DdpClient, times: usize) -> Vec<Json> {
    let mut errors = Vec::new();
    for i in 0..times {
        let (id, params) = login_frame(&format!("l{i}-{}", comet::model::random::random_id()));
        let frames = c.call_seeing(&id, "login", params).await;
        errors.push(frames.last().unwrap()["error"]["error"].clone());
    }
    errors
}

#[tokio::test]
async fn overwrite_setting_variables_force_values_and_a_bad_one_stops_the_start() {
    let mut settings = common::test_settings(|c| {
        c.admin_username = Some(common::ADMIN.0.into());
        c.admin_pass = Some(common::ADMIN.1.into());
    });
    settings.setting_overrides = comet::config::setting_overrides([
        (
            "OVERWRITE_SETTING_Site_Name".to_owned(),
            "Forced".to_owned(),
        ),
        (
            "OVERWRITE_SETTING_DDP_Rate_Limit_Login_Requests_Allowed".to_owned(),
            "2".to_owned(),
        ),
        ("OVERWRITE_SETTING_Not_A_Setting".to_owned(), "x".to_owned()),
        ("PATH".to_owned(), "/bin".to_owned()),
    ]);
    let server = common::spawn_server(settings.clone()).await;
    let (mut anon, _) = DdpClient::connect(&server).await;
    let (r, _) = anon.call("p", "public-settings/get", json!([])).await;
    assert_eq!(value_of(&r["result"], "Site_Name"), Some(&json!("Forced")));
    let errors = login_errors(&mut anon, 3).await;
    assert_eq!(
        errors,
        vec![Json::Null, Json::Null, json!("too-many-requests")],
        "the overwritten limit (2) applies"
    );
    server.shutdown().await;

    let mut bad = settings;
    bad.setting_overrides = vec![("Accounts_LoginExpiration".into(), "soon".into())];
    let Err(err) = comet::app::build(&bad).await else {
        panic!("a value of the wrong type must stop the start");
    };
    let text = err.to_string();
    assert!(
        text.contains("OVERWRITE_SETTING_Accounts_LoginExpiration") && text.contains("int"),
        "{text}"
    );
}

#[tokio::test]
async fn login_limits_follow_the_settings_at_once() {
    let server = common::spawn_with_admin().await;
    let mut boss = admin(&server).await;
    let (r, _) = boss
        .call(
            "off",
            "saveSetting",
            json!(["DDP_Rate_Limit_Login_Enabled", false]),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let (mut c, _) = DdpClient::connect(&server).await;
    assert!(
        login_errors(&mut c, 7).await.iter().all(Json::is_null),
        "no per-connection limit while switched off"
    );
    let (r, _) = boss
        .call(
            "on",
            "saveSettings",
            json!([[
                {"_id": "DDP_Rate_Limit_Login_Enabled", "value": true},
                {"_id": "DDP_Rate_Limit_Login_Requests_Allowed", "value": 1},
            ]]),
        )
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let (mut d, _) = DdpClient::connect(&server).await;
    assert_eq!(
        login_errors(&mut d, 2).await,
        vec![Json::Null, json!("too-many-requests")]
    );
}
