//! Several instances: three release binaries on one embedded store, sharing the events that
//! mirror no data over a real NATS server (`nats-server`, installed by
//! `scripts/install-test-deps.sh`), with clients on each. What crosses, what is leased, and
//! what each fault does are in `protocol-spec/instances.md`.
#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{rest_call, sign_in, sign_up, Auth, Binary, DdpClient, Received};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The scenarios start three processes each: one at a time on a two-core machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const ADMIN: (&str, &str) = ("chief", "chief-pass-1");

fn shared_dir() -> PathBuf {
    std::env::temp_dir().join(format!(
        "comet-instances-{}-{}",
        std::process::id(),
        comet::model::random::random_id()
    ))
}

/// The environment of every instance: the broker, the first administrator, and short
/// heartbeats, leases and upkeep rounds so that faults show within seconds.
fn instance_env(nats: &str) -> Vec<(&'static str, String)> {
    vec![
        ("TRANSPORTER", nats.to_owned()),
        ("ADMIN_USERNAME", ADMIN.0.to_owned()),
        ("ADMIN_PASS", ADMIN.1.to_owned()),
        ("ADMIN_EMAIL", "chief@example.com".to_owned()),
        ("COMET_PRESENCE_HEARTBEAT_MS", "300".to_owned()),
        ("COMET_LEASE_MS", "1500".to_owned()),
        ("COMET_UPKEEP_MS", "250".to_owned()),
        ("COMET_BCRYPT_COST", "4".to_owned()),
    ]
}

fn start(dir: &Path, env: &[(&'static str, String)]) -> Binary {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Binary::start_shared(dir, &env)
}

fn ws(addr: SocketAddr) -> String {
    format!("ws://{addr}/websocket")
}

/// A DDP client on `addr`, logged in with `auth`'s token.
async fn ddp_as(addr: SocketAddr, auth: &Auth) -> DdpClient {
    let mut c = DdpClient::open(&ws(addr)).await;
    c.send(json!({"msg":"connect","version":"1","support":["1"]}))
        .await;
    assert_eq!(c.recv().await["msg"], "connected");
    let answer = call(&mut c, "login", json!([{"resume": auth.1}])).await;
    assert!(answer.get("error").is_none(), "{answer}");
    c
}

/// Calls `method` and returns its `result` frame, passing over anything else.
async fn call(c: &mut DdpClient, method: &str, params: Json) -> Json {
    let id = comet::model::random::random_id();
    c.send(json!({"msg":"method","id":id,"method":method,"params":params}))
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        assert!(Instant::now() < deadline, "no result for {method}");
        match c.next(Duration::from_secs(10)).await {
            Received::Message(m) if m["msg"] == "result" && m["id"] == id.as_str() => return m,
            Received::Message(_) => continue,
            other => panic!("{method}: {other:?}"),
        }
    }
}

/// Subscribes and waits for `ready`.
async fn subscribe(c: &mut DdpClient, name: &str, params: Json) {
    let id = comet::model::random::random_id();
    c.send(json!({"msg":"sub","id":id,"name":name,"params":params}))
        .await;
    loop {
        match c.next(Duration::from_secs(10)).await {
            Received::Message(m) if m["msg"] == "ready" => return,
            Received::Message(m) if m["msg"] == "nosub" => panic!("{name} refused: {m}"),
            Received::Message(_) => continue,
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// The `args` of each event `event` on `collection` that reaches `c` within `within`.
async fn events(c: &mut DdpClient, collection: &str, event: &str, within: Duration) -> Vec<Json> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match c.next(left).await {
            Received::Message(m)
                if m["collection"] == collection && m["fields"]["eventName"] == event =>
            {
                seen.push(m["fields"]["args"].clone())
            }
            Received::Message(_) => continue,
            _ => return seen,
        }
    }
}

async fn presence_of(addr: SocketAddr, auth: &Auth, user_id: &str) -> String {
    let (status, body) = rest_call(
        addr,
        reqwest::Method::GET,
        &format!("/api/v1/users.getPresence?userId={user_id}"),
        Some(auth),
        None,
    )
    .await;
    assert_eq!(status, 200, "{addr} {user_id}: {body}");
    body["presence"].as_str().unwrap_or_default().to_owned()
}

/// Waits until `user_id` shows `status` (seen from `addr`), within `within`.
async fn presence_becomes(
    addr: SocketAddr,
    auth: &Auth,
    user_id: &str,
    status: &str,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        let now = presence_of(addr, auth, user_id).await;
        if now == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{user_id} is still {now}, not {status}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sets a setting as the administrator (every instance reads it from the store).
async fn set_setting(addr: SocketAddr, admin: &Auth, id: &str, value: Json) {
    let (status, body) = rest_call(
        addr,
        reqwest::Method::POST,
        &format!("/api/v1/settings/{id}"),
        Some(admin),
        Some(json!({ "value": value })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

/// Waits until instance `addr` has taken a changed setting from the store.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

async fn metric(addr: SocketAddr, line_prefix: &str) -> f64 {
    common::metric_at(addr, line_prefix).await
}

#[tokio::test]
async fn three_instances_share_messages_typing_and_presence_and_lose_a_killed_ones_users() {
    let _serial = SERIAL.lock().await;
    let nats = common::nats::Server::start();
    let dir = shared_dir();
    let env = instance_env(&nats.url());
    let a = start(&dir, &env);
    let b = start(&dir, &env);
    let c = start(&dir, &env);

    // Registrations are limited per instance (one a minute from an address): lifted here.
    let admin = sign_in(c.addr, ADMIN.0, ADMIN.1).await;
    set_setting(
        c.addr,
        &admin,
        "Rate_Limiter_Limit_RegisterUser",
        json!(100),
    )
    .await;
    set_setting(c.addr, &admin, "API_Enable_Rate_Limiter", json!(false)).await;
    settle().await;
    let ann = sign_up(a.addr, "ann").await;
    let bob = sign_up(b.addr, "bob").await;
    let cid = sign_up(c.addr, "cid").await;

    // A message sent on A reaches members on B and C, once each.
    let mut on_a = ddp_as(a.addr, &ann).await;
    let mut on_b = ddp_as(b.addr, &bob).await;
    let mut on_c = ddp_as(c.addr, &cid).await;
    for client in [&mut on_b, &mut on_c] {
        subscribe(client, "stream-room-messages", json!(["GENERAL", false])).await;
    }
    let sent = call(
        &mut on_a,
        "sendMessage",
        json!([{"_id": "cross-1", "rid": "GENERAL", "msg": "hello from A"}]),
    )
    .await;
    assert!(sent.get("error").is_none(), "{sent}");
    for client in [&mut on_b, &mut on_c] {
        let heard = events(
            client,
            "stream-room-messages",
            "GENERAL",
            Duration::from_secs(2),
        )
        .await;
        let copies = heard
            .iter()
            .filter(|args| args[0]["_id"] == "cross-1")
            .count();
        assert_eq!(copies, 1, "{heard:?}");
    }

    // Typing on B reaches A; C, where nobody listens to the room's typing, is sent nothing.
    subscribe(
        &mut on_a,
        "stream-notify-room",
        json!(["GENERAL/typing", false]),
    )
    .await;
    let received_on_c = metric(c.addr, "comet_bus_received_total").await;
    let typed = typing_crosses(&mut on_b, &mut on_a, "bob", Duration::from_secs(10)).await;
    assert_eq!(typed, vec![json!(["bob", true])]);
    assert!(metric(a.addr, "comet_bus_received_total").await >= 1.0);
    assert_eq!(
        metric(c.addr, "comet_bus_received_total").await,
        received_on_c,
        "an instance with no listener of the room receives none of its events"
    );

    // A client's WebRTC signal written on B reaches its peer on A, once; C hears nothing.
    let webrtc = format!("{}/webrtc", ann.0);
    subscribe(&mut on_a, "stream-notify-user", json!([webrtc, false])).await;
    let received_on_c = metric(c.addr, "comet_bus_received_total").await;
    let offer = json!({"from": bob.0, "type": "offer", "sdp": "v=0"});
    let deadline = Instant::now() + Duration::from_secs(10);
    let signals = loop {
        // The subscription reaches NATS a moment after `ready`: written again until heard.
        call(
            &mut on_b,
            "stream-notify-user",
            json!([webrtc, "call", offer]),
        )
        .await;
        let heard = events(
            &mut on_a,
            "stream-notify-user",
            &webrtc,
            Duration::from_millis(500),
        )
        .await;
        if !heard.is_empty() || Instant::now() > deadline {
            break heard;
        }
    };
    assert_eq!(signals, vec![json!(["call", offer])]);
    assert_eq!(
        metric(c.addr, "comet_bus_received_total").await,
        received_on_c,
        "the signal goes only where its listener is"
    );

    // The deployment's instances, for administrators only.
    let (status, listed) = rest_call(
        c.addr,
        reqwest::Method::GET,
        "/api/v1/instances.get",
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(status, 200, "{listed}");
    let instances = listed["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 3, "{listed}");
    assert!(instances
        .iter()
        .all(|i| i["currentStatus"]["connected"] == true));
    let addresses: Vec<&str> = instances
        .iter()
        .filter_map(|i| i["address"].as_str())
        .collect();
    for bin in [&a, &b, &c] {
        assert!(
            addresses.contains(&bin.addr.to_string().as_str()),
            "{listed}"
        );
    }
    assert_eq!(
        instances
            .iter()
            .filter(|i| i["currentStatus"]["local"] == true)
            .count(),
        1
    );
    let (status, _) = rest_call(
        c.addr,
        reqwest::Method::GET,
        "/api/v1/instances.get",
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = rest_call(
        c.addr,
        reqwest::Method::GET,
        "/api/v1/instances.get",
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // The same list over DDP (the operator's page): never for a user without the right.
    let refused = call(&mut on_b, "comet.instances", json!([])).await;
    assert!(
        refused.get("result").is_none() && refused["error"].is_object(),
        "{refused}"
    );
    let mut chief = ddp_as(c.addr, &admin).await;
    let listed = call(&mut chief, "comet.instances", json!([])).await;
    assert_eq!(
        listed["result"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );
    drop(chief);

    // logoutOtherClients on B logs ann's session on A out: the token's removal reaches A
    // through the store.
    let ann_again = sign_in(b.addr, "ann", "pass-word-1").await;
    let mut ann_on_b = ddp_as(b.addr, &ann_again).await;
    let renewed = call(&mut on_a, "getNewToken", json!([])).await;
    assert!(renewed.get("error").is_none(), "{renewed}");
    let out = call(&mut ann_on_b, "logoutOtherClients", json!([])).await;
    assert!(out.get("error").is_none(), "{out}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let probe = call(&mut on_a, "getNewToken", json!([])).await;
        if probe["error"]["error"] == 403 {
            break;
        }
        assert!(Instant::now() < deadline, "still logged in on A: {probe}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let kept = call(&mut ann_on_b, "getNewToken", json!([])).await;
    assert!(kept.get("error").is_none(), "B's own session stays: {kept}");
    drop(ann_on_b);

    // One user on two instances has one sending limit (five a second): messages sent
    // quickly, alternating between A and B, are refused once five went in the second.
    let eve = sign_up(a.addr, "eve").await;
    let mut eve_on = [ddp_as(a.addr, &eve).await, ddp_as(b.addr, &eve).await];
    for client in eve_on.iter_mut() {
        subscribe(
            client,
            "stream-notify-user",
            json!([format!("{}/message", eve.0), false]),
        )
        .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The burst must fit in one second to say anything: on a loaded machine it is tried
    // again, after the window, until it does.
    let mut judged = false;
    for attempt in 0..4 {
        let started = Instant::now();
        let mut refused = 0;
        for n in 0..8 {
            let answer = call(
                &mut eve_on[n % 2],
                "sendMessage",
                json!([{"rid": "GENERAL", "msg": format!("quick {attempt}.{n}")}]),
            )
            .await;
            if answer["error"]["error"] == "too-many-requests" {
                refused += 1;
            } else {
                assert!(answer.get("error").is_none(), "call {n}: {answer}");
            }
        }
        if refused >= 1 {
            judged = true;
            break;
        }
        assert!(
            started.elapsed() > Duration::from_millis(800),
            "eight within {:?}, four on each instance: {refused} refused",
            started.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    assert!(judged, "the burst never fitted in a second");
    drop(eve_on);

    // Presence is the union of a user's connections on every instance.
    let dana = sign_up(a.addr, "dana").await;
    let dana_on_a = ddp_as(a.addr, &dana).await;
    let dana_on_c = ddp_as(c.addr, &dana).await;
    presence_becomes(b.addr, &bob, &dana.0, "online", Duration::from_secs(5)).await;
    drop(on_a);
    a.kill();
    // A's connections are swept; C's keeps dana online.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(presence_of(b.addr, &bob, &dana.0).await, "online");
    drop(dana_on_c);
    presence_becomes(b.addr, &bob, &dana.0, "offline", Duration::from_secs(5)).await;
    drop(dana_on_a);

    // SIGKILL: the killed instance's users go offline on the others within the lease.
    presence_becomes(c.addr, &cid, &bob.0, "online", Duration::from_secs(5)).await;
    let killed_at = Instant::now();
    drop(on_b);
    b.kill();
    presence_becomes(c.addr, &cid, &bob.0, "offline", Duration::from_secs(5)).await;
    eprintln!("presence converged {:?} after SIGKILL", killed_at.elapsed());
    drop(on_c);
    c.stop();
    let _ = std::fs::remove_dir_all(dir);
}

/// Types as `username` on `writer` in GENERAL until `reader` hears it, within `within`;
/// what it heard.
async fn typing_crosses(
    writer: &mut DdpClient,
    reader: &mut DdpClient,
    username: &str,
    within: Duration,
) -> Vec<Json> {
    let deadline = Instant::now() + within;
    loop {
        call(
            writer,
            "stream-notify-room",
            json!(["GENERAL/typing", username, true]),
        )
        .await;
        let typed = events(
            reader,
            "stream-notify-room",
            "GENERAL/typing",
            Duration::from_millis(500),
        )
        .await;
        if !typed.is_empty() {
            return typed;
        }
        assert!(
            Instant::now() < deadline,
            "typing did not cross within {within:?}"
        );
    }
}

/// A password login over REST: (status, body).
async fn password_login(addr: SocketAddr, user: &str, password: &str) -> (u16, Json) {
    rest_call(
        addr,
        reqwest::Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"user": user, "password": password})),
    )
    .await
}

/// The login is refused as blocked (not merely as wrong).
fn blocked(body: &Json) -> bool {
    body.to_string().contains("error-login-blocked-for-user")
}

#[tokio::test]
async fn a_password_guesser_spread_over_instances_is_locked_out_on_every_one() {
    let _serial = SERIAL.lock().await;
    let nats = common::nats::Server::start();
    let dir = shared_dir();
    let env = instance_env(&nats.url());
    let instances = [start(&dir, &env), start(&dir, &env), start(&dir, &env)];
    sign_up(instances[0].addr, "erin").await;
    // Ten wrong guesses (Rocket.Chat's default allowance), spread: no instance sees more
    // than four of them.
    for guess in 0..10 {
        let addr = instances[guess % 3].addr;
        let (status, body) = password_login(addr, "erin", &format!("guess-{guess}")).await;
        assert_eq!(status, 401, "guess {guess}: {body}");
        assert!(!blocked(&body));
    }
    // The right password is refused now, on every instance, as blocked.
    for bin in &instances {
        let (status, body) = password_login(bin.addr, "erin", "pass-word-1").await;
        assert_ne!(status, 200, "{body}");
        assert!(blocked(&body), "{body}");
    }
    // And on an instance started after the guessing.
    let late = start(&dir, &env);
    let (_, body) = password_login(late.addr, "erin", "pass-word-1").await;
    assert!(blocked(&body), "{body}");
    drop((instances, late));
    let _ = std::fs::remove_dir_all(dir);
}

/// Which of `instances` hold the upkeep lease now, and how often each ran it.
async fn upkeep_of(instances: &[&Binary]) -> Vec<(bool, f64)> {
    let mut out = Vec::new();
    for bin in instances {
        let held = metric(bin.addr, "comet_lease_held{lease=\"upkeep\"}").await;
        let runs = metric(bin.addr, "comet_lease_runs_total{lease=\"upkeep\"}").await;
        out.push((held == 1.0, runs));
    }
    out
}

#[tokio::test]
async fn the_upkeep_runs_on_exactly_one_instance_and_moves_when_it_dies() {
    let _serial = SERIAL.lock().await;
    let nats = common::nats::Server::start();
    let dir = shared_dir();
    let env = instance_env(&nats.url());
    let mut instances = vec![start(&dir, &env), start(&dir, &env), start(&dir, &env)];
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen = upkeep_of(&instances.iter().collect::<Vec<_>>()).await;
    let holders: Vec<usize> = (0..3).filter(|i| seen[*i].0).collect();
    assert_eq!(holders.len(), 1, "{seen:?}");
    let holder = holders[0];
    for (i, (_, runs)) in seen.iter().enumerate() {
        if i == holder {
            assert!(*runs >= 2.0, "{seen:?}");
        } else {
            assert_eq!(*runs, 0.0, "only the holder runs it: {seen:?}");
        }
    }
    // The holder dies outright: another takes the job over once the lease runs out.
    instances.remove(holder).kill();
    let deadline = Instant::now() + Duration::from_secs(6);
    let (next, runs_before) = loop {
        let seen = upkeep_of(&instances.iter().collect::<Vec<_>>()).await;
        let holders: Vec<usize> = (0..2).filter(|i| seen[*i].0).collect();
        if holders.len() == 1 && seen[holders[0]].1 > 0.0 {
            break (holders[0], seen[holders[0]].1);
        }
        assert!(
            Instant::now() < deadline,
            "nobody took the upkeep over: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = upkeep_of(&instances.iter().collect::<Vec<_>>()).await;
    assert!(seen[next].0 && seen[next].1 > runs_before, "{seen:?}");
    assert!(!seen[1 - next].0 && seen[1 - next].1 == 0.0, "{seen:?}");
    // A graceful stop gives the lease up at once: the other takes it well within a lease.
    let stopped_at = Instant::now();
    instances.remove(next).terminate();
    let last = &instances[0];
    loop {
        let seen = upkeep_of(&[last]).await;
        if seen[0].0 {
            break;
        }
        assert!(stopped_at.elapsed() < Duration::from_secs(6), "{seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(instances);
    let _ = std::fs::remove_dir_all(dir);
}

async fn health(addr: SocketAddr) -> (u16, String) {
    common::http(addr, "GET", "/health", b"").await
}

#[tokio::test]
async fn nats_killed_and_restarted_mid_chat_loses_nothing_persisted() {
    let _serial = SERIAL.lock().await;
    let mut nats = common::nats::Server::start();
    let dir = shared_dir();
    let env = instance_env(&nats.url());
    let a = start(&dir, &env);
    let b = start(&dir, &env);
    let ann = sign_up(a.addr, "ann").await;
    let bob = sign_up(b.addr, "bob").await;
    let mut on_a = ddp_as(a.addr, &ann).await;
    let mut on_b = ddp_as(b.addr, &bob).await;
    subscribe(&mut on_b, "stream-room-messages", json!(["GENERAL", false])).await;
    subscribe(
        &mut on_b,
        "stream-notify-room",
        json!(["GENERAL/typing", false]),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (status, body) = health(a.addr).await;
        if (status, body.as_str()) == (200, "ok\n") {
            break;
        }
        assert!(Instant::now() < deadline, "/health: {status} {body:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    nats.kill();
    // Each instance keeps serving its own sessions, and says it is degraded.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !health(a.addr).await.1.starts_with("degraded") {
        assert!(Instant::now() < deadline, "/health never said degraded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(health(a.addr).await.0, 200);
    // Persisted changes still cross: they come from the store, not the broker.
    for n in 0..5 {
        let sent = call(
            &mut on_a,
            "sendMessage",
            json!([{"_id": format!("outage-{n}"), "rid": "GENERAL", "msg": "while NATS is down"}]),
        )
        .await;
        assert!(sent.get("error").is_none(), "{sent}");
    }
    let heard = events(
        &mut on_b,
        "stream-room-messages",
        "GENERAL",
        Duration::from_secs(2),
    )
    .await;
    for n in 0..5 {
        let id = format!("outage-{n}");
        assert_eq!(
            heard.iter().filter(|a| a[0]["_id"] == id.as_str()).count(),
            1,
            "{heard:?}"
        );
    }

    // NATS is back: the instances reconnect on their own and typing crosses again.
    nats.restart();
    let deadline = Instant::now() + Duration::from_secs(15);
    while health(a.addr).await.1 != "ok\n" || health(b.addr).await.1 != "ok\n" {
        assert!(Instant::now() < deadline, "the instances did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let typed = typing_crosses(&mut on_a, &mut on_b, "ann", left).await;
    assert_eq!(typed[0], json!(["ann", true]));
    // Presence converged: both users online, seen from either instance.
    presence_becomes(a.addr, &ann, &bob.0, "online", Duration::from_secs(5)).await;
    presence_becomes(b.addr, &bob, &ann.0, "online", Duration::from_secs(5)).await;
    drop((on_a, on_b, a, b));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_rolling_restart_of_every_instance_under_chat_load_loses_no_acknowledged_message() {
    let _serial = SERIAL.lock().await;
    let nats = common::nats::Server::start();
    let dir = shared_dir();
    let env = instance_env(&nats.url());
    let mut instances = vec![start(&dir, &env), start(&dir, &env), start(&dir, &env)];
    let writer = sign_up(instances[0].addr, "writer").await;
    // REST's per-route limit (ten a minute) would leave nothing to count.
    let admin = sign_in(instances[0].addr, ADMIN.0, ADMIN.1).await;
    set_setting(
        instances[0].addr,
        &admin,
        "API_Enable_Rate_Limiter",
        json!(false),
    )
    .await;
    settle().await;
    let live: std::sync::Arc<std::sync::Mutex<Vec<SocketAddr>>> = std::sync::Arc::new(
        std::sync::Mutex::new(instances.iter().map(|i| i.addr).collect()),
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The load: messages posted round-robin over whichever instances are up, as a balancer
    // spreads them; a refused or broken request is simply not acknowledged.
    let load = {
        let (live, stop, writer) = (live.clone(), stop.clone(), writer.clone());
        tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut n = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let addr = {
                    let live = live.lock().unwrap();
                    live[n % live.len()]
                };
                let body = json!({"message": {"rid": "GENERAL", "msg": format!("load {n}")}});
                let answer = reqwest::Client::new()
                    .post(common::url(addr, "/api/v1/chat.sendMessage"))
                    .header("X-User-Id", &writer.0)
                    .header("X-Auth-Token", &writer.1)
                    .header("Content-Type", "application/json")
                    .body(body.to_string())
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await;
                if let Ok(resp) = answer {
                    if resp.status().as_u16() == 200 {
                        let text = resp.text().await.unwrap_or_default();
                        if let Ok(json) = serde_json::from_str::<Json>(&text) {
                            if let Some(id) = json["message"]["_id"].as_str() {
                                acknowledged.push(id.to_owned());
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        })
    };
    // Each instance in turn: drained with SIGTERM, then started again (on a new port).
    for (i, slot) in instances.iter_mut().enumerate() {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let old = slot.addr;
        live.lock().unwrap().retain(|a| *a != old);
        let (dir, env) = (dir.clone(), env.clone());
        let fresh = tokio::task::spawn_blocking(move || start(&dir, &env))
            .await
            .unwrap();
        let gone = std::mem::replace(slot, fresh);
        // The load goes on meanwhile: the drain is waited for off the test's thread.
        let log = tokio::task::spawn_blocking(move || gone.terminate())
            .await
            .unwrap();
        assert!(
            log.iter().any(|l| l.contains("comet stopped")),
            "instance {i} did not stop gracefully"
        );
        live.lock().unwrap().push(slot.addr);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acknowledged = load.await.unwrap();
    assert!(
        acknowledged.len() >= 30,
        "too little load: {}",
        acknowledged.len()
    );
    eprintln!(
        "{} messages acknowledged during the rolling restart",
        acknowledged.len()
    );
    // Every acknowledged message is stored, once, with a time of its own.
    let (status, history) = rest_call(
        instances[0].addr,
        reqwest::Method::GET,
        "/api/v1/channels.history?roomId=GENERAL&count=10000",
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    let stored: Vec<&Json> = history["messages"].as_array().unwrap().iter().collect();
    for id in &acknowledged {
        assert_eq!(
            stored.iter().filter(|m| m["_id"] == id.as_str()).count(),
            1,
            "acknowledged message {id} is not stored once"
        );
    }
    let mut times: Vec<&str> = stored.iter().filter_map(|m| m["ts"].as_str()).collect();
    let all = times.len();
    times.sort_unstable();
    times.dedup();
    assert_eq!(times.len(), all, "two messages share a time in the room");
    drop(instances);
    let _ = std::fs::remove_dir_all(dir);
}
