//! Server plugins against the release binary, as real subprocesses: the three example
//! plugins end to end (a message filter that rewrites and rejects, a webhook bridge over
//! `ServeHTTP`, a slash command with a key-value counter under contention), plugins that
//! sleep past their deadline, crash mid-hook, write garbage, exit at start or allocate
//! without bound (chat keeps working, the policy applies, it is counted and shown), the
//! administration (only `manage-apps`), bundles, upgrades, development-mode reloads and a
//! shutdown that leaves no process behind.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{metric_at, rest_call, sign_in, sign_up, url, Auth, Binary, DdpClient};
use reqwest::Method;
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ADMIN: (&str, &str) = ("boss", "s3cret-pass");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh plugin folder for one server.
fn plugin_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "comet-plugins-{}-{}",
        std::process::id(),
        comet::model::random::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            if entry.file_name() != "__pycache__" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Puts an example plugin, with the SDKs beside it, in `dir` (what `plugins/pack.sh`
/// bundles).
fn add_example(dir: &Path, name: &str) {
    let target = dir.join(name);
    copy_dir(&repo().join("plugins/examples").join(name), &target);
    add_sdks(&target);
}

fn add_sdks(folder: &Path) {
    for sdk in ["sdk/python/comet_plugin.py", "sdk/node/comet-plugin.js"] {
        let from = repo().join("plugins").join(sdk);
        std::fs::copy(&from, folder.join(from.file_name().unwrap())).unwrap();
    }
}

/// A plugin folder running `misbehave.py <mode>` with the given manifest fields.
fn misbehaving_folder(folder: &Path, id: &str, mode: &str, extra: Json) {
    std::fs::create_dir_all(folder).unwrap();
    std::fs::copy(
        repo().join("tests/plugins/misbehave.py"),
        folder.join("misbehave.py"),
    )
    .unwrap();
    add_sdks(folder);
    let mut manifest = json!({
        "id": id, "version": "1.0.0",
        "server": {"command": ["python3", "misbehave.py", mode]},
        "hooks": ["MessageWillBePosted"],
    });
    for (k, v) in extra.as_object().unwrap() {
        manifest[k] = v.clone();
    }
    std::fs::write(folder.join("plugin.json"), manifest.to_string()).unwrap();
}

fn start(dir: &Path, more: &[(&str, &str)]) -> Binary {
    let dir = dir.to_string_lossy().into_owned();
    let mut envs = vec![
        ("ADMIN_USERNAME", ADMIN.0),
        ("ADMIN_PASS", ADMIN.1),
        ("ADMIN_EMAIL", "boss@example.com"),
        ("OVERWRITE_SETTING_API_Enable_Rate_Limiter", "false"),
        ("OVERWRITE_SETTING_DDP_Rate_Limit_User_Enabled", "false"),
        (
            "OVERWRITE_SETTING_DDP_Rate_Limit_Connection_Enabled",
            "false",
        ),
        ("COMET_PLUGIN_DIR", dir.as_str()),
    ];
    envs.extend_from_slice(more);
    Binary::start("", &envs)
}

/// A REST POST of `body` to `path` as `auth`: (status, JSON answer).
async fn post(addr: SocketAddr, auth: &Auth, path: &str, body: Json) -> (u16, Json) {
    rest_call(addr, Method::POST, path, Some(auth), Some(body)).await
}

/// `/count` in room `rid`, run by `auth` over REST: (status, answer).
async fn run_count(addr: SocketAddr, auth: &Auth, rid: &str) -> (u16, Json) {
    post(
        addr,
        auth,
        "/api/v1/commands.run",
        json!({"command": "count", "roomId": rid}),
    )
    .await
}

/// The plugins as administrators see them, by id.
async fn plugins(addr: SocketAddr, admin: &Auth) -> std::collections::HashMap<String, Json> {
    let (status, body) =
        rest_call(addr, Method::GET, "/api/v1/plugins.list", Some(admin), None).await;
    assert_eq!(status, 200, "{body}");
    body["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap().to_owned(), p.clone()))
        .collect()
}

/// Waits until `check` holds of plugin `id`'s view.
async fn until_plugin(
    addr: SocketAddr,
    admin: &Auth,
    id: &str,
    what: &str,
    check: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = plugins(addr, admin).await;
        if let Some(view) = all.get(id) {
            if check(view) {
                return view.clone();
            }
            assert!(Instant::now() < deadline, "{id} never {what}: {view}");
        } else {
            assert!(Instant::now() < deadline, "{id} never listed: {all:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn running(addr: SocketAddr, admin: &Auth, id: &str) -> Json {
    until_plugin(addr, admin, id, "running", |p| p["state"] == "running").await
}

/// A DDP connection logged in with `auth`'s token.
async fn ddp(addr: SocketAddr, auth: &Auth) -> DdpClient {
    let mut c = DdpClient::open(&format!("ws://{addr}/websocket")).await;
    c.send(json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await;
    assert_eq!(c.recv().await["msg"], "connected");
    let (result, error) = ddp_call(&mut c, "login", "login", json!([{"resume": auth.1}])).await;
    assert!(error.is_null(), "{error}");
    assert_eq!(result["id"], auth.0.as_str());
    c
}

async fn send(c: &mut DdpClient, id: &str, text: &str) -> (Json, Json) {
    ddp_call(
        c,
        id,
        "sendMessage",
        json!([{"_id": id, "rid": "GENERAL", "msg": text}]),
    )
    .await
}

/// Calls a method: its `result` and `error` (null when absent).
async fn ddp_call(c: &mut DdpClient, id: &str, method: &str, params: Json) -> (Json, Json) {
    let frames = c.call_seeing(id, method, params).await;
    let last = frames.last().unwrap();
    (last["result"].clone(), last["error"].clone())
}

/// The texts of `general`'s last messages.
async fn history(c: &mut DdpClient) -> Vec<String> {
    let (result, error) =
        ddp_call(c, "h", "loadHistory", json!(["GENERAL", null, 100, null])).await;
    assert!(error.is_null(), "{error}");
    result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["msg"].as_str().map(str::to_owned))
        .collect()
}

/// Reads stream frames until one whose first argument satisfies `find` (or fails after
/// `within`).
async fn stream_event(
    c: &mut DdpClient,
    collection: &str,
    within: Duration,
    find: impl Fn(&Json) -> bool,
) -> Json {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_on(collection, left).await {
            Some(frame) => {
                let arg = &frame["fields"]["args"][0];
                if find(arg) {
                    return arg.clone();
                }
            }
            None => panic!("no matching event on {collection} within {within:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_plugins_filter_bridge_and_count_for_every_client() {
    let dir = plugin_dir();
    for name in ["message-filter", "webhook-bridge", "counter"] {
        add_example(&dir, name);
    }
    let server = start(&dir, &[]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    for id in ["message-filter", "webhook-bridge", "counter"] {
        running(addr, &admin, id).await;
    }
    let ann = sign_up(addr, "ann").await;
    let mut writer = ddp(addr, &admin).await;
    let mut reader = ddp(addr, &ann).await;
    reader
        .subscribe("m", "stream-room-messages", json!(["GENERAL", false]))
        .await;
    reader
        .subscribe(
            "u",
            "stream-notify-user",
            json!([format!("{}/message", ann.0), false]),
        )
        .await;

    // A rewritten message reaches the store and every client rewritten.
    let (result, error) = send(&mut writer, "m1", "well HECK, that darn thing").await;
    assert!(error.is_null(), "{error}");
    assert_eq!(result["msg"], "well ****, that **** thing");
    let seen = stream_event(
        &mut reader,
        "stream-room-messages",
        Duration::from_secs(5),
        |m| m["_id"] == "m1",
    )
    .await;
    assert_eq!(seen["msg"], "well ****, that **** thing");

    // A rejected one reaches nobody and nothing, and its sender reads why.
    let (_, error) = send(&mut writer, "m2", "this is forbidden talk").await;
    assert_eq!(error["error"], "error-app-prevented", "{error}");
    assert!(error["reason"].as_str().unwrap().contains("forbidden"));
    assert_eq!(error["details"]["hook"], "message-filter");
    let (_, error) = send(&mut writer, "m3", "after the refusal").await;
    assert!(error.is_null());
    let next = stream_event(
        &mut reader,
        "stream-room-messages",
        Duration::from_secs(5),
        |m| m["_id"] == "m2" || m["_id"] == "m3",
    )
    .await;
    assert_eq!(next["_id"], "m3", "the refused message reached a client");
    let texts = history(&mut writer).await;
    assert!(texts.iter().all(|t| !t.contains("forbidden")), "{texts:?}");
    // An edit passes the same filter.
    let (_, error) = ddp_call(
        &mut writer,
        "e1",
        "updateMessage",
        json!([{"_id": "m3", "rid": "GENERAL", "msg": "now forbidden"}]),
    )
    .await;
    assert_eq!(error["error"], "error-app-prevented", "{error}");

    // The webhook bridge: a plain HTTP client posts, the room hears it from the bot.
    let posted = reqwest::Client::new()
        .post(url(addr, "/plugins/webhook-bridge/incoming"))
        .header("content-type", "application/json")
        .body(json!({"text": "build 42 passed"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let seen = stream_event(
        &mut reader,
        "stream-room-messages",
        Duration::from_secs(5),
        |m| m["msg"] == "build 42 passed",
    )
    .await;
    assert_eq!(seen["u"]["username"], "webhook-bridge.bot");
    // Who the caller is: anonymous, or the user whose credentials hold; never the
    // credentials themselves.
    let (status, who) = rest_call(
        addr,
        Method::GET,
        "/plugins/webhook-bridge/whoami",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(who, json!({"userId": null, "sawCredentials": false}));
    let (_, who) = rest_call(
        addr,
        Method::GET,
        "/plugins/webhook-bridge/whoami",
        Some(&ann),
        None,
    )
    .await;
    assert_eq!(who, json!({"userId": ann.0, "sawCredentials": false}));
    let forged = (ann.0.clone(), "not-the-token".to_owned());
    let (_, who) = rest_call(
        addr,
        Method::GET,
        "/plugins/webhook-bridge/whoami",
        Some(&forged),
        None,
    )
    .await;
    assert_eq!(who["userId"], Json::Null);
    // Configured with a token, it wants it (the plugin hears OnConfigurationChange).
    let (status, body) = post(
        addr,
        &admin,
        "/api/v1/plugins.configure",
        json!({"id": "webhook-bridge", "config": {"token": "t0ken"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["config"]["token"], "********");
    let refused = reqwest::Client::new()
        .post(url(addr, "/plugins/webhook-bridge/incoming"))
        .body("no token")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let accepted = reqwest::Client::new()
        .post(url(addr, "/plugins/webhook-bridge/incoming"))
        .header("x-webhook-token", "t0ken")
        .body("with the token")
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let (status, _) = rest_call(addr, Method::GET, "/plugins/nobody/x", None, None).await;
    assert_eq!(status, 404);

    // The slash command: listed, answered in the room and to its caller alone.
    let (_, listed) = rest_call(
        addr,
        Method::GET,
        "/api/v1/commands.list?count=100",
        Some(&ann),
        None,
    )
    .await;
    assert!(
        listed["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["command"] == "count"),
        "{listed}"
    );
    // Ann calls from another connection: the reader only listens.
    let mut ann_calls = ddp(addr, &ann).await;
    let (_, error) = ddp_call(
        &mut ann_calls,
        "c1",
        "slashCommand",
        json!([{"cmd": "count", "params": "", "msg": {"rid": "GENERAL"}}]),
    )
    .await;
    assert!(error.is_null(), "{error}");
    let said = stream_event(
        &mut reader,
        "stream-room-messages",
        Duration::from_secs(5),
        |m| m["msg"].as_str().is_some_and(|t| t.starts_with("/count")),
    )
    .await;
    assert_eq!(said["msg"], "/count was called 1 time in this room");
    assert_eq!(said["u"]["username"], "counter.bot");
    let note = stream_event(
        &mut reader,
        "stream-notify-user",
        Duration::from_secs(5),
        |m| m["msg"] == "You made it 1.",
    )
    .await;
    assert_eq!(note["rid"], "GENERAL");

    // Compare-and-set under contention: 12 calls at once count 12.
    let calls = (0..12).map(|_| {
        let ann = ann.clone();
        async move { run_count(addr, &ann, "GENERAL").await }
    });
    for (status, body) in futures_util::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = run_count(addr, &ann, "GENERAL").await;
    assert_eq!(status, 200);
    stream_event(
        &mut reader,
        "stream-room-messages",
        Duration::from_secs(10),
        |m| m["msg"] == "/count was called 14 times in this room",
    )
    .await;
    assert!(
        metric_at(
            addr,
            "comet_plugin_hooks_answered_total{plugin=\"counter\"}"
        )
        .await
            >= 14.0
    );

    // A stranger to a private room cannot run a command there.
    let (status, body) = post(
        addr,
        &admin,
        "/api/v1/groups.create",
        json!({"name": "secret-room"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let rid = body["group"]["_id"].as_str().unwrap().to_owned();
    let (status, _) = run_count(addr, &ann, &rid).await;
    assert_eq!(status, 400);
    let pids: Vec<i64> = plugins(addr, &admin)
        .await
        .values()
        .filter_map(|p| p["pid"].as_i64())
        .collect();
    assert_eq!(pids.len(), 3);
    // A graceful stop ends every plugin process too.
    server.terminate();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "plugin process {pid} outlived comet"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_that_hang_crash_babble_exit_or_hoard_leave_chat_working() {
    let dir = plugin_dir();
    let deadline = json!({"hook_deadline_ms": 300});
    misbehaving_folder(
        &dir.join("slow"),
        "slow",
        "sleep",
        json!({"hook_deadline_ms": 300, "priority": 1}),
    );
    misbehaving_folder(&dir.join("crash"), "crash", "crash", json!({"priority": 2}));
    misbehaving_folder(
        &dir.join("garbage"),
        "garbage",
        "garbage",
        json!({"priority": 3}),
    );
    misbehaving_folder(
        &dir.join("hog"),
        "hog",
        "hog",
        json!({"priority": 4, "memory_limit_mb": 64}),
    );
    misbehaving_folder(&dir.join("quitter"), "quitter", "exit", deadline);
    let server = start(&dir, &[]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    for id in ["slow", "crash", "garbage", "hog"] {
        running(addr, &admin, id).await;
    }
    // One that exits at start crash-loops, and the loop ends with it disabled and why.
    let quitter = until_plugin(addr, &admin, "quitter", "failed", |p| {
        p["state"] == "failed"
    })
    .await;
    assert!(
        quitter["reason"]
            .as_str()
            .unwrap()
            .contains("crashed 3 times"),
        "{quitter}"
    );
    assert_eq!(quitter["enabled"], false);
    assert_eq!(
        metric_at(addr, "comet_plugin_crashes_total{plugin=\"quitter\"}").await,
        3.0
    );
    assert_eq!(
        metric_at(addr, "comet_plugin_up{plugin=\"quitter\"}").await,
        0.0
    );

    let hog_figures = || async {
        metric_at(addr, "comet_plugin_hooks_failed_total{plugin=\"hog\"}").await
            + metric_at(addr, "comet_plugin_crashes_total{plugin=\"hog\"}").await
            + metric_at(addr, "comet_plugin_hooks_missed_total{plugin=\"hog\"}").await
    };
    let hog_before = hog_figures().await;
    let slow_before = metric_at(addr, "comet_plugin_hooks_missed_total{plugin=\"slow\"}").await;
    let crashes_before = (
        metric_at(addr, "comet_plugin_crashes_total{plugin=\"crash\"}").await,
        metric_at(addr, "comet_plugin_crashes_total{plugin=\"garbage\"}").await,
    );
    let mut writer = ddp(addr, &admin).await;
    let before = Instant::now();
    let (result, error) = send(&mut writer, "x1", "through every misbehaving plugin").await;
    let took = before.elapsed();
    assert!(error.is_null(), "{error}");
    assert_eq!(result["msg"], "through every misbehaving plugin");
    // The sleeper costs its deadline, not its sleep.
    assert!(took < Duration::from_secs(3), "sendMessage took {took:?}");
    assert!(history(&mut writer)
        .await
        .contains(&"through every misbehaving plugin".to_owned()));
    assert_eq!(
        metric_at(addr, "comet_plugin_hooks_missed_total{plugin=\"slow\"}").await,
        slow_before + 1.0
    );
    for (id, before) in [("crash", crashes_before.0), ("garbage", crashes_before.1)] {
        let line = format!("comet_plugin_crashes_total{{plugin=\"{id}\"}}");
        common::metric_reaches_at(addr, &line, before + 1.0).await;
    }
    assert!(
        hog_figures().await > hog_before,
        "the hog's failure is not counted"
    );
    // The crashed ones come back, and chat goes on meanwhile and after.
    for id in ["crash", "garbage"] {
        let view = until_plugin(addr, &admin, id, "restarted", |p| {
            p["state"] == "running" && p["counters"]["crashes"].as_u64() >= Some(1)
        })
        .await;
        assert!(view["reason"].is_null(), "{view}");
    }
    for n in 0..3 {
        let (_, error) = send(
            &mut writer,
            &format!("y{n}"),
            &format!("still chatting {n}"),
        )
        .await;
        assert!(error.is_null(), "{error}");
    }
    let texts = history(&mut writer).await;
    for n in 0..3 {
        assert!(texts.contains(&format!("still chatting {n}")), "{texts:?}");
    }
    // The hog never held more than its cap.
    let hog = plugins(addr, &admin).await["hog"].clone();
    if let Some(pid) = hog["pid"].as_i64() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            let peak_kb: u64 = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap();
            assert!(peak_kb < 80 * 1024, "the hog peaked at {peak_kb} kB");
        }
    }
    let log = server.stop();
    assert!(
        log.iter()
            .any(|l| l.contains("plugin crashed") && l.contains("garbage")),
        "the garbage plugin's end is not logged"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail_closed_plugin_that_cannot_answer_refuses_with_a_clear_error() {
    let dir = plugin_dir();
    misbehaving_folder(
        &dir.join("strict"),
        "strict",
        "sleep",
        json!({"hook_deadline_ms": 200, "hook_policy": "fail_closed"}),
    );
    let server = start(&dir, &[]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    running(addr, &admin, "strict").await;
    let mut writer = ddp(addr, &admin).await;
    let (_, error) = send(&mut writer, "s1", "checked or nothing").await;
    assert_eq!(error["error"], "error-app-prevented", "{error}");
    let reason = error["reason"].as_str().unwrap();
    assert!(
        reason.contains("strict") && reason.contains("could not check"),
        "{reason}"
    );
    assert!(!history(&mut writer)
        .await
        .contains(&"checked or nothing".to_owned()));
    assert_eq!(
        metric_at(
            addr,
            "comet_plugin_refused_by_policy_total{plugin=\"strict\"}"
        )
        .await,
        1.0
    );
    // Disabled, it no longer stands in the way.
    let (status, _) = post(
        addr,
        &admin,
        "/api/v1/plugins.disable",
        json!({"id": "strict"}),
    )
    .await;
    assert_eq!(status, 200);
    let (_, error) = send(&mut writer, "s2", "free again").await;
    assert!(error.is_null(), "{error}");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until the plugin `id`'s key `key`, read through its `ServeHTTP`, is `want`.
async fn until_key(addr: SocketAddr, id: &str, key: &str, want: Json) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, seen) = rest_call(
            addr,
            Method::GET,
            &format!("/plugins/{id}/kv?key={key}"),
            None,
            None,
        )
        .await;
        if seen == want {
            return;
        }
        assert!(Instant::now() < deadline, "{key} is {seen}, not {want}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_hears_what_was_written_refuses_logins_and_runs_its_job() {
    let dir = plugin_dir();
    let hooks = [
        "OnActivate",
        "RunJob",
        "MessageHasBeenPosted",
        "ReactionHasBeenAdded",
        "UserHasJoinedRoom",
        "UserWillLogIn",
        "ServeHTTP",
    ];
    misbehaving_folder(
        &dir.join("audit"),
        "audit",
        "audit",
        json!({"hooks": hooks}),
    );
    let server = start(&dir, &[]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    running(addr, &admin, "audit").await;

    // A will hook on logins refuses one user, and lets the others in.
    let (status, _) = rest_call(
        addr,
        Method::POST,
        "/api/v1/users.register",
        None,
        Some(json!({"username": "blocked", "email": "blocked@example.com", "pass": "pass-word-1", "name": "b"})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = rest_call(
        addr,
        Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"user": "blocked", "password": "pass-word-1"})),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    // Over DDP the refusal says why.
    let mut c = DdpClient::open(&format!("ws://{addr}/websocket")).await;
    c.send(json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await;
    assert_eq!(c.recv().await["msg"], "connected");
    let (_, error) = ddp_call(
        &mut c,
        "l",
        "login",
        json!([{"user": {"username": "blocked"}, "password": "pass-word-1"}]),
    )
    .await;
    assert_eq!(error["error"], "error-app-prevented", "{error}");
    assert_eq!(error["reason"], "blocked users may not log in");
    let carl = sign_up(addr, "carl").await;
    // Has-been hooks: a join, a message, a reaction, each heard once written.
    until_key(addr, "audit", "last-join", json!(["carl", "general"])).await;
    let (status, body) = post(
        addr,
        &carl,
        "/api/v1/chat.postMessage",
        json!({"channel": "#general", "text": "hello audit"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    until_key(addr, "audit", "last-posted", json!("hello audit")).await;
    let message_id = body["message"]["_id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        addr,
        &carl,
        "/api/v1/chat.react",
        json!({"messageId": message_id, "emoji": ":smile:"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // The user it hears of carries no secrets.
    until_key(
        addr,
        "audit",
        "last-reaction",
        json!([":smile:", "carl", false]),
    )
    .await;
    // The job it scheduled at activation runs every second.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ticks) =
            rest_call(addr, Method::GET, "/plugins/audit/kv?key=ticks", None, None).await;
        if ticks.as_u64() >= Some(2) {
            break;
        }
        assert!(Instant::now() < deadline, "the job ran {ticks} times");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.tar.gz` of `folder` as a bundle.
fn bundle(folder: &Path, name: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    builder.append_dir_all(name, folder).unwrap();
    builder.into_inner().unwrap().finish().unwrap()
}

async fn install(addr: SocketAddr, auth: Option<&Auth>, bytes: Vec<u8>) -> (u16, Json) {
    let mut req = reqwest::Client::new()
        .post(url(addr, "/api/v1/plugins.install"))
        .header("content-type", "application/gzip")
        .body(bytes);
    if let Some((id, token)) = auth {
        req = req.header("X-User-Id", id).header("X-Auth-Token", token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_administrators_install_configure_and_remove_plugins_and_each_keeps_its_own_keys() {
    let dir = plugin_dir();
    add_example(&dir, "counter");
    let server = start(&dir, &[]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    running(addr, &admin, "counter").await;
    let ann = sign_up(addr, "ann").await;
    let work = plugin_dir();
    misbehaving_folder(
        &work.join("probe"),
        "probe",
        "probe",
        json!({"hooks": ["ServeHTTP", "OnDeactivate"], "settings_schema": [{"key": "level", "type": "number", "default": 1}]}),
    );
    let probe = bundle(&work.join("probe"), "probe");

    // Strangers get nothing: not the list, not an install, not a change.
    let (status, _) = rest_call(addr, Method::GET, "/api/v1/plugins.list", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = rest_call(addr, Method::GET, "/api/v1/plugins.list", Some(&ann), None).await;
    assert_eq!(status, 403);
    let (status, _) = install(addr, Some(&ann), probe.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = install(addr, None, probe.clone()).await;
    assert_eq!(status, 401);
    for route in ["plugins.disable", "plugins.remove", "plugins.configure"] {
        let (status, _) = post(
            addr,
            &ann,
            &format!("/api/v1/{route}"),
            json!({"id": "counter", "config": {}}),
        )
        .await;
        assert_eq!(status, 403, "{route}");
    }
    let mut ann_ddp = ddp(addr, &ann).await;
    let (_, error) = ddp_call(&mut ann_ddp, "l", "plugins.list", json!([])).await;
    assert_eq!(error["error"], "error-not-allowed", "{error}");
    assert!(!dir.join("probe").exists());
    running(addr, &admin, "counter").await;

    // The administrator installs a bundle; it runs.
    let (status, body) = install(addr, Some(&admin), probe).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["version"], "1.0.0");
    let probe_view = running(addr, &admin, "probe").await;
    assert_eq!(probe_view["config"]["level"], 1);
    // A bundle that is not one, or reaches outside its folder, is refused.
    let (status, body) = install(addr, Some(&admin), b"not a bundle".to_vec()).await;
    assert_eq!(status, 400, "{body}");

    // One plugin's keys are its own, whatever its calls say.
    let (status, _) = run_count(addr, &ann, "GENERAL").await;
    assert_eq!(status, 200);
    let (status, seen) = rest_call(
        addr,
        Method::GET,
        "/plugins/probe/kv?key=count/GENERAL",
        None,
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(seen, Json::Null, "the probe read the counter's key");

    // Configuration: only the schema's keys, of their types.
    for bad in [json!({"nope": 1}), json!({"level": "high"})] {
        let (status, body) = post(
            addr,
            &admin,
            "/api/v1/plugins.configure",
            json!({"id": "probe", "config": bad}),
        )
        .await;
        assert_eq!(status, 400, "{body}");
    }
    let (status, body) = post(
        addr,
        &admin,
        "/api/v1/plugins.configure",
        json!({"id": "probe", "config": {"level": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["config"]["level"], 3);

    // Disabled: OnDeactivate, no routes; enabled again: back.
    let (status, body) = post(
        addr,
        &admin,
        "/api/v1/plugins.disable",
        json!({"id": "probe"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugin"]["state"], "disabled");
    assert!(
        dir.join("probe/deactivated").exists(),
        "OnDeactivate was not called"
    );
    let (status, _) = rest_call(addr, Method::GET, "/plugins/probe/kv?key=a", None, None).await;
    assert_eq!(status, 404);
    let mut admin_ddp = ddp(addr, &admin).await;
    let (result, error) = ddp_call(&mut admin_ddp, "e", "plugins.enable", json!(["probe"])).await;
    assert!(error.is_null(), "{error}");
    assert_eq!(result["enabled"], true);
    running(addr, &admin, "probe").await;

    // An upgrade replaces the folder and keeps the configuration.
    let manifest_path = work.join("probe/plugin.json");
    let mut manifest: Json =
        serde_json::from_str(&std::fs::read_to_string(&manifest_path).unwrap()).unwrap();
    manifest["version"] = json!("1.0.1");
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    let (status, body) = install(addr, Some(&admin), bundle(&work.join("probe"), "probe")).await;
    assert_eq!(status, 200, "{body}");
    let upgraded = running(addr, &admin, "probe").await;
    assert_eq!(upgraded["version"], "1.0.1");
    assert_eq!(upgraded["config"]["level"], 3);

    // Removed: gone from the list, the folder and the routes.
    let (result, error) = ddp_call(&mut admin_ddp, "r", "plugins.remove", json!(["probe"])).await;
    assert!(error.is_null(), "{error}");
    assert_eq!(result, json!(true));
    assert!(!plugins(addr, &admin).await.contains_key("probe"));
    assert!(!dir.join("probe").exists());
    let (status, _) = rest_call(addr, Method::GET, "/plugins/probe/kv?key=a", None, None).await;
    assert_eq!(status, 404);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&work);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_development_mode_a_plugin_restarts_when_its_folder_changes() {
    let dir = plugin_dir();
    add_example(&dir, "message-filter");
    let server = start(&dir, &[("COMET_PLUGIN_DEV", "1")]);
    let addr = server.addr;
    let admin = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let first = running(addr, &admin, "message-filter").await["pid"].clone();
    // The author edits the manifest: another masked word by default.
    let path = dir.join("message-filter/plugin.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("darn,heck", "darn,heck,gosh");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&path, text).unwrap();
    let second = until_plugin(addr, &admin, "message-filter", "restarted", |p| {
        p["state"] == "running" && p["pid"] != first
    })
    .await;
    assert_eq!(second["counters"]["crashes"], 0, "a reload is not a crash");
    let mut writer = ddp(addr, &admin).await;
    let (result, error) = send(&mut writer, "d1", "oh gosh").await;
    assert!(error.is_null(), "{error}");
    assert_eq!(result["msg"], "oh ****");
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_events_reach_the_same_plugin_from_other_instances_only() {
    let dir = plugin_dir();
    misbehaving_folder(
        &dir.join("audit"),
        "audit",
        "audit",
        json!({"hooks": ["ServeHTTP", "OnPluginClusterEvent"]}),
    );
    let plugins = dir.clone();
    let server = common::spawn_server(common::test_settings(move |cli| {
        cli.plugin_dir = Some(plugins);
    }))
    .await;
    let addr = server.addr;
    let deadline = Instant::now() + Duration::from_secs(30);
    while rest_call(addr, Method::GET, "/plugins/audit/kv?key=x", None, None)
        .await
        .0
        != 200
    {
        assert!(Instant::now() < deadline, "the plugin never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Its own event goes to the other instances, never back to itself.
    let (status, _) = rest_call(addr, Method::POST, "/plugins/audit/cluster", None, None).await;
    assert_eq!(status, 204);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, heard) = rest_call(
        addr,
        Method::GET,
        "/plugins/audit/kv?key=last-cluster",
        None,
        None,
    )
    .await;
    assert_eq!(heard, Json::Null, "the plugin heard its own cluster event");
    // What another instance's bus delivers here (NATS, later) reaches the plugin.
    server
        .hub
        .registry
        .bus()
        .publish(comet::engine::bus::BusEvent {
            stream: comet::chat::plugins::CLUSTER_STREAM.into(),
            event: "audit".into(),
            args: vec![
                comet::model::Value::from("from-elsewhere"),
                comet::model::Value::from(7.0),
            ],
            except: Some("another-instance".into()),
        });
    until_key(addr, "audit", "last-cluster", json!(["from-elsewhere", 7])).await;
    server.plugins.stop_all().await;
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
