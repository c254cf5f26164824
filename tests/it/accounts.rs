//! Accounts over DDP, as Meteor's and Rocket.Chat's clients log in: password (digest and
//! plain), resume, logout, new tokens, other clients logged out, new users with unique
//! names, the login rate limit, and bad login bodies.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::DdpClient;
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};

fn digest(password: &str) -> Json {
    let hex: String = Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"digest": hex, "algorithm": "sha-256"})
}

async fn server() -> common::TestServer {
    common::spawn_with_admin().await
}

/// Calls `login` and returns every frame up to its result.
async fn login(c: &mut DdpClient, request: Json) -> Vec<Json> {
    c.call_seeing("login", "login", json!([request])).await
}

fn result(frames: &[Json]) -> &Json {
    frames.last().unwrap()
}

#[tokio::test]
async fn the_administrator_logs_in_with_a_digest_then_resumes_with_the_token() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut c,
        json!({"user": {"username": "boss"}, "password": digest("s3cret-pass")}),
    )
    .await;
    let r = &result(&frames)["result"];
    assert_eq!(r["type"], "password", "{frames:?}");
    let token = r["token"].as_str().unwrap().to_owned();
    assert_eq!(token.len(), 43);
    assert!(r["tokenExpires"]["$date"].as_f64().unwrap() > 0.0);
    let me = frames
        .iter()
        .find(|f| f["msg"] == "added" && f["collection"] == "users")
        .expect("the user's own document");
    assert_eq!(me["fields"]["username"], "boss");
    let services = &me["fields"]["services"];
    assert!(
        services.get("password").is_none() && services.get("resume").is_none(),
        "no secrets published: {me}"
    );
    assert_eq!(me["fields"]["emails"][0]["address"], "boss@example.com");
    assert!(me["fields"]["roles"]
        .as_array()
        .unwrap()
        .contains(&json!("admin")));

    // The same user by address (any case), and with a plain-text password.
    let (mut d, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut d,
        json!({"user": {"email": "BOSS@example.com"}, "password": "s3cret-pass"}),
    )
    .await;
    assert_eq!(result(&frames)["result"]["id"], r["id"], "{frames:?}");

    let (mut e, _) = DdpClient::connect(&server).await;
    let frames = login(&mut e, json!({"resume": token})).await;
    let resumed = &result(&frames)["result"];
    assert_eq!(
        (resumed["type"].as_str(), resumed["token"].as_str()),
        (Some("resume"), Some(token.as_str()))
    );
}

#[tokio::test]
async fn wrong_credentials_get_meteors_errors() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut c,
        json!({"user": {"username": "boss"}, "password": digest("nope")}),
    )
    .await;
    assert_eq!(result(&frames)["error"]["error"], 403);
    assert_eq!(result(&frames)["error"]["reason"], "Incorrect password");
    let frames = login(
        &mut c,
        json!({"user": {"username": "nobody"}, "password": digest("x")}),
    )
    .await;
    assert_eq!(result(&frames)["error"]["reason"], "User not found");
    let frames = login(&mut c, json!({"resume": "not-a-token"})).await;
    assert_eq!(
        result(&frames)["error"]["reason"],
        "You've been logged out by the server. Please log in again."
    );
}

#[tokio::test]
async fn bad_login_bodies_are_match_failed_and_the_server_serves_on() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let huge = "u".repeat(1_000_000);
    for (i, bad) in [
        json!([{"user": {"username": {"$ne": ""}}, "password": "x"}]),
        json!([{"user": {"username": huge}, "password": "x"}]),
        json!([{"user": {"username": "boss"}}]),
        json!([{"user": {"username": "boss"}, "password": {"digest": "short", "algorithm": "sha-256"}}]),
        json!([{"user": {"username": "boss"}, "password": {"digest": "x", "algorithm": "md5"}}]),
        json!(["boss"]),
        json!([]),
    ]
    .into_iter()
    .enumerate()
    {
        // A fresh connection each time: the rate limit is not what is tested here.
        let (mut c, _) = DdpClient::connect(&server).await;
        let frames = c.call_seeing(&format!("b{i}"), "login", bad.clone()).await;
        assert_eq!(result(&frames)["error"]["error"], 400, "{bad}: {frames:?}");
        assert_eq!(result(&frames)["error"]["reason"], "Match failed");
    }
    let (r, _) = c.call("e", "echo", json!([1])).await;
    assert_eq!(r["result"], 1);
}

#[tokio::test]
async fn a_password_guesser_is_slowed_while_others_log_in() {
    let server = server().await;
    let (mut guesser, _) = DdpClient::connect(&server).await;
    let mut limited = None;
    for i in 0..8 {
        let frames = guesser
            .call_seeing(
                &format!("g{i}"),
                "login",
                json!([{"user": {"username": "boss"}, "password": digest(&format!("guess{i}"))}]),
            )
            .await;
        if result(&frames)["error"]["error"] == "too-many-requests" {
            limited = Some((i, result(&frames)["error"].clone()));
            break;
        }
    }
    let (at, error) = limited.expect("the guesser is refused");
    assert_eq!(at, 5, "five attempts per ten seconds, as Meteor's default");
    assert!(
        error["details"]["timeToReset"].as_f64().unwrap() > 0.0,
        "{error}"
    );
    let (mut other, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut other,
        json!({"user": {"username": "boss"}, "password": digest("s3cret-pass")}),
    )
    .await;
    assert_eq!(result(&frames)["result"]["type"], "password", "{frames:?}");
}

#[tokio::test]
async fn logout_revokes_the_token_and_logout_other_clients_logs_them_out_live() {
    let server = server().await;
    let (mut a, _) = DdpClient::connect(&server).await;
    let (mut b, _) = DdpClient::connect(&server).await;
    let creds = json!({"user": {"username": "boss"}, "password": digest("s3cret-pass")});
    let token_a = result(&login(&mut a, creds.clone()).await)["result"]["token"].clone();
    let token_b = result(&login(&mut b, creds).await)["result"]["token"].clone();

    let frames = a.call_seeing("o", "logoutOtherClients", json!([])).await;
    assert!(result(&frames).get("error").is_none(), "{frames:?}");
    let removed = b.recv_data_past_status().await;
    assert_eq!(
        (removed["msg"].as_str(), removed["collection"].as_str()),
        (Some("removed"), Some("users")),
        "{removed}"
    );
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = login(&mut c, json!({"resume": token_b})).await;
    assert_eq!(result(&frames)["error"]["error"], 403, "b's token is gone");

    // getNewToken: another token for the same login; the old one still works until logout.
    let frames = a.call_seeing("n", "getNewToken", json!([])).await;
    let fresh = result(&frames)["result"]["token"].clone();
    assert!(fresh.is_string() && fresh != token_a, "{frames:?}");

    let frames = a.call_seeing("out", "logout", json!([])).await;
    assert!(
        frames
            .iter()
            .any(|f| f["msg"] == "removed" && f["collection"] == "users"),
        "{frames:?}"
    );
    let (mut d, _) = DdpClient::connect(&server).await;
    let frames = login(&mut d, json!({"resume": fresh})).await;
    assert_eq!(
        result(&frames)["error"]["error"],
        403,
        "the logged-out token is refused"
    );
    let frames = login(&mut d, json!({"resume": token_a})).await;
    assert_eq!(
        result(&frames)["result"]["type"],
        "resume",
        "an unrelated token still works"
    );
}

#[tokio::test]
async fn new_users_get_unique_names_even_when_created_at_once() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = c
        .call_seeing(
            "c",
            "createUser",
            json!([{"username": "ann", "email": "ann@example.com", "password": digest("pw-ann")}]),
        )
        .await;
    let r = &result(&frames)["result"];
    assert_eq!(r["type"], "password", "{frames:?}");
    let frames = c
        .call_seeing(
            "d",
            "createUser",
            json!([{"username": "ANN", "password": digest("x")}]),
        )
        .await;
    assert_eq!(
        result(&frames)["error"]["reason"],
        "Username already exists.",
        "{frames:?}"
    );
    let frames = c
        .call_seeing(
            "e",
            "registerUser",
            json!([{"username": "ann2", "email": "Ann@Example.com", "pass": "x"}]),
        )
        .await;
    assert_eq!(
        result(&frames)["error"]["reason"],
        "Email already exists.",
        "{frames:?}"
    );

    // Ten connections create the same name at once: exactly one wins.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let addr = server.ws_url();
        tasks.push(tokio::spawn(async move {
            let mut c = DdpClient::open(&addr).await;
            c.send(json!({"msg":"connect","version":"1","support":["1"]})).await;
            c.recv().await;
            let frames = c
                .call_seeing(&format!("r{i}"), "createUser", json!([{"username": "race", "password": "x", "email": format!("r{i}@example.com")}]))
                .await;
            frames.last().unwrap().get("result").is_some()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}

#[tokio::test]
async fn failures_block_the_user_they_named_but_not_other_users() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = c
        .call_seeing(
            "c",
            "createUser",
            json!([{"username": "ann", "password": digest("pw-ann")}]),
        )
        .await;
    assert!(result(&frames).get("result").is_some(), "{frames:?}");
    // Ten wrong passwords for boss, from fresh connections (each under the per-connection rule).
    for i in 0..10 {
        let (mut g, _) = DdpClient::connect(&server).await;
        let frames = login(
            &mut g,
            json!({"user": {"username": "boss"}, "password": digest(&format!("wrong{i}"))}),
        )
        .await;
        assert_eq!(
            result(&frames)["error"]["reason"],
            "Incorrect password",
            "attempt {i}"
        );
    }
    let (mut g, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut g,
        json!({"user": {"username": "BOSS"}, "password": digest("s3cret-pass")}),
    )
    .await;
    assert_eq!(
        result(&frames)["error"]["error"],
        "error-login-blocked-for-user",
        "{frames:?}"
    );
    let frames = login(
        &mut g,
        json!({"user": {"username": "ann"}, "password": digest("pw-ann")}),
    )
    .await;
    assert_eq!(
        result(&frames)["result"]["type"],
        "password",
        "another user logs in: {frames:?}"
    );
}

fn modifier(json: Json) -> comet::model::query::Update {
    match comet::model::Value::from_json(json).unwrap() {
        comet::model::Value::Object(d) => comet::model::query::Update::parse(&d).unwrap(),
        _ => unreachable!(),
    }
}

/// A user another writer (Rocket.Chat) stored, with no claim of comet's: found by name in
/// any case, its tokens honoured as soon as written and refused as soon as removed.
#[tokio::test]
async fn tokens_and_users_written_by_another_writer_count_at_once() {
    use comet::chat::accounts::secrets;
    let server = server().await;
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let hash = secrets::hash_password(secrets::password_digest("rocky-pass"), 4)
        .await
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as f64;
    let user = comet::model::Value::from_json(json!({
        "_id": "rocky-id", "username": "Rocky", "type": "user", "active": true,
        "roles": ["user"], "emails": [{"address": "Rocky@Example.com", "verified": true}],
        "services": {
            "password": {"bcrypt": hash},
            "resume": {"loginTokens": [{"when": {"$date": now}, "hashedToken": secrets::hash_token("tok-A")}]},
        },
    }))
    .unwrap();
    let comet::model::Value::Object(user) = user else {
        unreachable!()
    };
    store.insert("users", user).await.unwrap();
    // At once: before or after the change reaches the index.
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = login(&mut c, json!({"resume": "tok-A"})).await;
    assert_eq!(result(&frames)["result"]["id"], "rocky-id", "{frames:?}");
    for named in [
        json!({"username": "rocky"}),
        json!({"email": "rocky@example.COM"}),
    ] {
        let (mut d, _) = DdpClient::connect(&server).await;
        let frames = login(
            &mut d,
            json!({"user": named, "password": digest("rocky-pass")}),
        )
        .await;
        assert_eq!(
            result(&frames)["result"]["id"],
            "rocky-id",
            "{named}: {frames:?}"
        );
    }
    // Another token written elsewhere, used at once.
    store
        .update(
            "users",
            comet::model::query::Selector::by_id("rocky-id".into()),
            modifier(json!({"$push": {"services.resume.loginTokens": {"when": {"$date": now}, "hashedToken": secrets::hash_token("tok-B")}}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    let (mut e, _) = DdpClient::connect(&server).await;
    let frames = login(&mut e, json!({"resume": "tok-B"})).await;
    assert_eq!(result(&frames)["result"]["id"], "rocky-id", "{frames:?}");
    // Both revoked elsewhere: refused as soon as the change arrives (this process's own
    // logouts are refused at once: `logout_revokes_the_token_and_...`).
    store
        .update(
            "users",
            comet::model::query::Selector::by_id("rocky-id".into()),
            modifier(json!({"$set": {"services.resume.loginTokens": []}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    for token in ["tok-A", "tok-B"] {
        let mut last = Vec::new();
        for _ in 0..100 {
            let (mut f, _) = DdpClient::connect(&server).await;
            last = login(&mut f, json!({"resume": token})).await;
            if result(&last).get("error").is_some() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            result(&last)["error"]["reason"],
            "You've been logged out by the server. Please log in again.",
            "{token}: {last:?}"
        );
    }
}

/// Rocket.Chat's registration: `registerUser` makes a user without a name (a `username` in
/// the form is ignored), who logs in and picks one with `setUsername`, which also joins the
/// default channels; names stay unique when picked at once.
#[tokio::test]
async fn register_then_set_username_as_rocketchat_clients_do() {
    let server = server().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let frames = c
        .call_seeing(
            "r",
            "registerUser",
            json!([{"username": "ignored", "email": "reg@example.com", "pass": "reg-pass", "name": "Reg"}]),
        )
        .await;
    let id = result(&frames)["result"].clone();
    assert!(id.is_string(), "{frames:?}");
    let frames = login(
        &mut c,
        json!({"user": {"email": "reg@example.com"}, "password": digest("reg-pass")}),
    )
    .await;
    assert_eq!(result(&frames)["result"]["id"], id, "{frames:?}");
    let added = frames
        .iter()
        .find(|f| f["msg"] == "added" && f["collection"] == "users")
        .expect("own user published");
    assert!(
        added["fields"].get("username").is_none(),
        "no name yet: {added}"
    );
    let (r, _) = c.call("u", "setUsername", json!(["boss"])).await;
    assert_eq!(r["error"]["error"], "error-field-unavailable", "{r}");
    let (r, _) = c.call("v", "setUsername", json!(["bad name!"])).await;
    assert_eq!(r["error"]["error"], "error-invalid-username", "{r}");
    let frames = c.call_seeing("w", "setUsername", json!(["reggie"])).await;
    assert_eq!(result(&frames)["result"], "reggie", "{frames:?}");
    // The name took, and the default channel was joined.
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    let subs = store
        .find(
            "rocketchat_subscription",
            comet::storage::FindOptions {
                selector: comet::model::query::Selector::parse(
                    &match comet::model::Value::from_json(json!({"u._id": id, "rid": "GENERAL"}))
                        .unwrap()
                    {
                        comet::model::Value::Object(d) => d,
                        _ => unreachable!(),
                    },
                )
                .unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(subs.len(), 1, "joined general once");
    let (mut d, _) = DdpClient::connect(&server).await;
    let frames = login(
        &mut d,
        json!({"user": {"username": "REGGIE"}, "password": digest("reg-pass")}),
    )
    .await;
    assert_eq!(result(&frames)["result"]["id"], id, "{frames:?}");
    let (mut anon, _) = DdpClient::connect(&server).await;
    let (r, _) = anon.call("x", "setUsername", json!(["nobody"])).await;
    assert_eq!(
        r["error"]["error"], "error-invalid-user",
        "a stranger names no one"
    );

    // Ten new users pick the same name at once: exactly one gets it.
    let mut tasks = Vec::new();
    for i in 0..10 {
        let addr = server.ws_url();
        tasks.push(tokio::spawn(async move {
            let mut c = DdpClient::open(&addr).await;
            c.send(json!({"msg":"connect","version":"1","support":["1"]}))
                .await;
            c.recv().await;
            let email = format!("p{i}@example.com");
            c.call_seeing("r", "registerUser", json!([{"email": email, "pass": "x"}]))
                .await;
            let frames = c
                .call_seeing(
                    "in",
                    "login",
                    json!([{"user": {"email": email}, "password": "x"}]),
                )
                .await;
            assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
            let frames = c.call_seeing("n", "setUsername", json!(["picked"])).await;
            frames.last().unwrap().get("result").is_some()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1);
}
