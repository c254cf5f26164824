//! Rocket.Chat's mobile app against the release binary: its start-up sequence replayed as
//! the app sends it (RocketChat/Rocket.Chat.ReactNative: `getServerInfo`, `getLoginSettings`,
//! `getSettings`, `connect.ts`'s login, `getPermissions`, `getRoles`, `getCustomEmojis`,
//! `getSlashCommands`, `getUsersPresence`, the streams it subscribes to), then the calls of
//! its everyday flows. Each answer is checked for the fields the app reads.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{http_with, sign_in, Binary, DdpClient};
use serde_json::{json, Value as Json};

const ADMIN: (&str, &str) = ("boss", "s3cret-pass");

/// The settings the app's login screen asks for (`loginSettings` in `getSettings.ts`).
const LOGIN_SETTINGS: &[&str] = &[
    "API_Gitlab_URL",
    "CAS_enabled",
    "CAS_login_url",
    "Accounts_EmailVerification",
    "Accounts_ManuallyApproveNewUsers",
    "Accounts_ShowFormLogin",
    "Site_Url",
    "Accounts_RegistrationForm",
    "Accounts_RegistrationForm_LinkReplacementText",
    "Accounts_EmailOrUsernamePlaceholder",
    "Accounts_PasswordPlaceholder",
    "Accounts_PasswordReset",
    "Accounts_iframe_enabled",
    "Accounts_Iframe_api_url",
    "Accounts_Iframe_api_method",
];

/// The rest of the app's settings (`defaultSettings.ts`), asked for after login.
const APP_SETTINGS: &[&str] = &[
    "Accounts_AllowEmailChange",
    "Accounts_AllowPasswordChange",
    "Accounts_AllowRealNameChange",
    "Accounts_AllowUserAvatarChange",
    "Accounts_AllowUserProfileChange",
    "Accounts_AllowUserStatusMessageChange",
    "Accounts_AllowUsernameChange",
    "Accounts_AvatarBlockUnauthenticatedAccess",
    "Accounts_CustomFields",
    "Accounts_NamePlaceholder",
    "Accounts_Password_Policy_Enabled",
    "Accounts_Password_Policy_MinLength",
    "Accounts_Password_Policy_MaxLength",
    "Accounts_Password_Policy_ForbidRepeatingCharacters",
    "Accounts_Password_Policy_ForbidRepeatingCharactersCount",
    "Accounts_Password_Policy_AtLeastOneLowercase",
    "Accounts_Password_Policy_AtLeastOneUppercase",
    "Accounts_Password_Policy_AtLeastOneNumber",
    "Accounts_Password_Policy_AtLeastOneSpecialCharacter",
    "API_Use_REST_For_DDP_Calls",
    "API_Embed",
    "CROWD_Enable",
    "DirectMesssage_maxUsers",
    "E2E_Enable",
    "E2E_Enabled_Default_PrivateRooms",
    "E2E_Enable_Encrypt_Files",
    "FileUpload_ProtectFiles",
    "Accounts_Directory_DefaultView",
    "FEDERATION_Enabled",
    "Hide_System_Messages",
    "LDAP_Enable",
    "Livechat_request_comment_when_closing_conversation",
    "Message_AllowDeleting",
    "Message_AllowDeleting_BlockDeleteInMinutes",
    "Message_AllowEditing",
    "Message_AllowEditing_BlockEditInMinutes",
    "Message_AllowPinning",
    "Message_AllowStarring",
    "Message_AudioRecorderEnabled",
    "Message_GroupingPeriod",
    "Message_TimeFormat",
    "Message_TimeAndDateFormat",
    "Site_Name",
    "Store_Last_Message",
    "uniqueID",
    "UI_Allow_room_names_with_special_chars",
    "UI_Use_Real_Name",
    "Assets_favicon_512",
    "Message_Read_Receipt_Enabled",
    "Message_Read_Receipt_Store_Users",
    "Threads_enabled",
    "FileUpload_MediaTypeWhiteList",
    "FileUpload_MaxFileSize",
    "AutoTranslate_Enabled",
    "Force_Screen_Lock",
    "Force_Screen_Lock_After",
    "Allow_Save_Media_to_Gallery",
    "Accounts_AllowInvisibleStatusOption",
    "Canned_Responses_Enable",
    "Livechat_allow_manual_on_hold",
    "Accounts_AvatarExternalProviderUrl",
    "Accounts_RoomAvatarExternalProviderUrl",
    "VideoConf_Enable_DMs",
    "VideoConf_Enable_Channels",
    "VideoConf_Enable_Groups",
    "VideoConf_Enable_Teams",
    "Accounts_AllowDeleteOwnAccount",
    "Number_of_users_autocomplete_suggestions",
    "Presence_broadcast_disabled",
    "Omnichannel_call_provider",
    "CDN_PREFIX",
    "Accounts_RequirePasswordConfirmation",
    "Accounts_ConfirmPasswordPlaceholder",
    "E2E_Enabled_Mentions",
    "UTF8_User_Names_Validation",
    "Cloud_Workspace_AirGapped_Restrictions_Remaining_Days",
    "Federation_Service_Enabled",
    "Federation_Matrix_enabled",
    "VoIP_TeamCollab_Ice_Servers",
    "VoIP_TeamCollab_Ice_Gathering_Timeout",
    "VoIP_TeamCollab_SIP_Integration_For_Internal_Calls",
    "Jitsi_Enable_Teams",
    "Jitsi_Enable_Channels",
    "Jitsi_Enabled",
    "Jitsi_SSL",
    "Jitsi_Domain",
    "Jitsi_Enabled_TokenAuth",
    "Jitsi_URL_Room_Hash",
    "Jitsi_URL_Room_Prefix",
];

fn start() -> Binary {
    Binary::start(
        "",
        &[
            ("ADMIN_USERNAME", ADMIN.0),
            ("ADMIN_PASS", ADMIN.1),
            ("ADMIN_EMAIL", "boss@example.com"),
            // The replay asks for the same routes more often than ten times a minute.
            ("OVERWRITE_SETTING_API_Enable_Rate_Limiter", "false"),
        ],
    )
}

async fn request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&(String, String)>,
    body: Option<Json>,
) -> (u16, Json) {
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some((id, token)) = auth {
        headers.push(("X-User-Id", id));
        headers.push(("X-Auth-Token", token));
    }
    let text = body.map(|b| b.to_string()).unwrap_or_default();
    if !text.is_empty() {
        headers.push(("Content-Type", "application/json"));
    }
    let (status, answer) = http_with(addr, method, path, &headers, text.as_bytes()).await;
    (
        status,
        serde_json::from_str(&answer).unwrap_or(Json::String(answer)),
    )
}

/// Every setting of `ids`, read as the app reads them: `_id=a,b,c` (servers from 7.0) with
/// `offset` until `total`.
async fn settings_by_id(addr: std::net::SocketAddr, ids: &[&str]) -> serde_json::Map<String, Json> {
    let mut seen = serde_json::Map::new();
    let mut offset = 0;
    loop {
        let path = format!(
            "/api/v1/settings.public?_id={}&offset={offset}",
            ids.join(",")
        );
        let (status, body) = request(addr, "GET", &path, None, None).await;
        assert_eq!(status, 200, "{body}");
        let page = body["settings"].as_array().unwrap();
        offset += page.len();
        for s in page {
            seen.insert(s["_id"].as_str().unwrap().to_owned(), s["value"].clone());
        }
        if offset >= body["total"].as_u64().unwrap() as usize || page.is_empty() {
            return seen;
        }
    }
}

#[tokio::test]
async fn the_apps_start_up_sequence_is_served_and_its_login_form_shows() {
    let comet = start();
    let addr = comet.addr;

    // Server info, then the login screen's settings and the sign-in services.
    let (status, info) = request(addr, "GET", "/api/info", None, None).await;
    assert_eq!((status, &info["success"]), (200, &json!(true)), "{info}");
    assert!(info["version"].as_str().unwrap().starts_with('7'));
    let login = settings_by_id(addr, LOGIN_SETTINGS).await;
    for id in LOGIN_SETTINGS {
        assert!(login.contains_key(*id), "{id} missing from settings.public");
    }
    // What the login view reads, as Rocket.Chat's defaults have it.
    assert_eq!(login["Accounts_ShowFormLogin"], true);
    assert_eq!(login["Accounts_PasswordReset"], true);
    assert_eq!(login["Accounts_RegistrationForm"], "Public");
    assert_eq!(login["Accounts_iframe_enabled"], false);
    let (status, oauth) = request(addr, "GET", "/api/v1/settings.oauth", None, None).await;
    assert_eq!((status, &oauth["services"]), (200, &json!([])), "{oauth}");
    // Servers before 7.0 are asked with the `query` form: the same answer.
    let query = json!({"_id": {"$in": LOGIN_SETTINGS}}).to_string();
    let path = format!("/api/v1/settings.public?query={}", urlencode(&query));
    let (status, by_query) = request(addr, "GET", &path, None, None).await;
    assert_eq!(status, 200, "{by_query}");
    assert_eq!(by_query["total"], LOGIN_SETTINGS.len());

    // Login over REST: what `connect.ts` reads from `data.me`.
    let (status, logged) = request(
        addr,
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": ADMIN.0, "password": ADMIN.1})),
    )
    .await;
    assert_eq!(status, 200, "{logged}");
    let me = &logged["data"]["me"];
    assert_eq!(me["username"], ADMIN.0);
    assert!(me["roles"].as_array().unwrap().contains(&json!("admin")));
    assert_eq!(me["emails"][0]["address"], "boss@example.com");
    assert_eq!(me["email"], "boss@example.com");
    assert!(me["settings"]["preferences"].is_object(), "{me}");
    assert!(me["avatarUrl"].as_str().unwrap().ends_with("/avatar/boss"));
    let auth = (
        logged["data"]["userId"].as_str().unwrap().to_owned(),
        logged["data"]["authToken"].as_str().unwrap().to_owned(),
    );

    // The settings after login, paged, and the workspace's identity.
    let all = settings_by_id(addr, APP_SETTINGS).await;
    for id in APP_SETTINGS {
        assert!(all.contains_key(*id), "{id} missing from settings.public");
    }
    let (_, unique) = request(
        addr,
        "GET",
        "/api/v1/settings.public?_id=uniqueID",
        None,
        None,
    )
    .await;
    let unique_id = unique["settings"][0]["value"].as_str().unwrap();
    assert!(unique_id.len() >= 17, "{unique}");

    // The REST start-up calls.
    for (path, key) in [
        ("/api/v1/permissions.listAll", "update"),
        ("/api/v1/roles.list", "roles"),
        ("/api/v1/rooms.get", "update"),
        ("/api/v1/subscriptions.get", "update"),
        ("/api/v1/emoji-custom.list?updatedSince=", "emojis"),
        ("/api/v1/commands.list", "commands"),
        ("/api/v1/users.presence", "users"),
        ("/api/v1/push.info", "pushGatewayEnabled"),
        ("/api/v1/me", "username"),
        ("/api/v1/users.getPreferences", "preferences"),
    ] {
        let (status, body) = request(addr, "GET", path, Some(&auth), None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(!body[key].is_null(), "{path} lacks {key}: {body}");
        // An anonymous client gets nothing of it.
        let (status, body) = request(addr, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path} answered a stranger: {body}");
    }
    let (_, roles) = request(addr, "GET", "/api/v1/roles.list", Some(&auth), None).await;
    assert!(roles["roles"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["_id"] == "admin" && r["scope"] == "Users"));
    let (_, commands) = request(addr, "GET", "/api/v1/commands.list", Some(&auth), None).await;
    let names: Vec<&str> = commands["commands"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["command"].as_str().unwrap())
        .collect();
    for name in ["join", "leave", "topic", "me", "msg", "shrug", "help"] {
        assert!(names.contains(&name), "/{name} missing: {names:?}");
    }

    // The push token: registered, then removed (as the app does at logout).
    let token = json!({"type": "gcm", "value": "device-token-1", "appName": "chat.rocket.android"});
    let (status, pushed) =
        request(addr, "POST", "/api/v1/push.token", Some(&auth), Some(token)).await;
    assert_eq!(status, 200, "{pushed}");
    assert_eq!(pushed["result"]["token"]["gcm"], "device-token-1");
    assert_eq!(pushed["result"]["userId"], auth.0.as_str());
    let forget = json!({"token": "device-token-1"});
    let (status, body) = request(
        addr,
        "DELETE",
        "/api/v1/push.token",
        Some(&auth),
        Some(forget.clone()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = request(
        addr,
        "DELETE",
        "/api/v1/push.token",
        Some(&auth),
        Some(forget),
    )
    .await;
    assert_eq!(status, 404, "a token removed twice");

    // Meteor's clock.
    let (status, clock) = request(addr, "GET", "/_timesync", None, None).await;
    assert_eq!(status, 200);
    assert!(clock.as_u64().unwrap() > 1_600_000_000_000, "{clock}");

    // DDP: login by resume and the methods, each with the SDK's trailing second-factor slot.
    let mut ddp = DdpClient::open(&format!("ws://{addr}/websocket")).await;
    ddp.send(json!({"msg": "connect", "version": "1", "support": ["1", "pre2", "pre1"]}))
        .await;
    assert_eq!(ddp.recv().await["msg"], "connected");
    let result = result_of(&mut ddp, "1", "login", json!([{"resume": auth.1}, ""])).await;
    assert_eq!(result["result"]["id"], auth.0.as_str(), "{result}");
    let general = result_of(
        &mut ddp,
        "2",
        "getRoomByTypeAndName",
        json!(["c", "general", ""]),
    )
    .await;
    let rid = general["result"]["_id"]
        .as_str()
        .unwrap_or_else(|| panic!("{general}"))
        .to_owned();
    let sent = result_of(
        &mut ddp,
        "3",
        "sendMessage",
        json!([{"_id": "mobile-msg-1", "rid": rid, "msg": "hello from the app"}, ""]),
    )
    .await;
    assert!(sent["error"].is_null(), "{sent}");
    let now = json!({"$date": 0});
    for (id, method, params) in [
        ("10", "getRoomRoles", json!([rid, ""])),
        ("11", "license:getModules", json!([""])),
        ("12", "getUserRoles", json!([""])),
        ("13", "loadNextMessages", json!([rid, now, 50, ""])),
        (
            "14",
            "loadSurroundingMessages",
            json!([{"_id": "mobile-msg-1", "rid": rid}, 50, ""]),
        ),
        (
            "15",
            "saveRoomSettings",
            json!([rid, "roomTopic", "set from the app", ""]),
        ),
        (
            "16",
            "getUsersOfRoom",
            json!([rid, true, {"skip": 0, "limit": 50}, ""]),
        ),
        (
            "18",
            "stream-notify-room",
            json!([format!("{rid}/typing"), ADMIN.0, true, ""]),
        ),
        ("19", "UserPresence:online", json!([""])),
        ("20", "setUserStatus", json!(["online", "at work", ""])),
        (
            "21",
            "getThreadMessages",
            json!([{"tmid": "mobile-msg-1"}, ""]),
        ),
    ] {
        let result = result_of(&mut ddp, id, method, params).await;
        assert!(
            result["error"].is_null(),
            "{method} refused the app's call: {result}"
        );
    }
    let modules = result_of(&mut ddp, "30", "license:getModules", json!([])).await;
    assert_eq!(modules["result"], json!([]));

    // The streams the app subscribes to after login.
    let uid = auth.0.clone();
    for (n, (name, event)) in [
        ("stream-notify-all", "public-settings-changed".to_owned()),
        ("stream-notify-logged", "permissions-changed".to_owned()),
        ("stream-notify-logged", "user-status".to_owned()),
        ("stream-notify-logged", "updateAvatar".to_owned()),
        ("stream-notify-logged", "Users:NameChanged".to_owned()),
        ("stream-notify-user", format!("{uid}/subscriptions-changed")),
        ("stream-notify-user", format!("{uid}/rooms-changed")),
        ("stream-notify-user", format!("{uid}/notification")),
        ("stream-notify-user", format!("{uid}/message")),
        ("stream-room-messages", rid.clone()),
        ("stream-notify-room", format!("{rid}/deleteMessage")),
        ("stream-notify-room", format!("{rid}/user-activity")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("s{n}");
        ddp.send(json!({"msg": "sub", "id": id, "name": name, "params": [event, {"useCollection": false, "args": []}]}))
            .await;
        loop {
            let m = ddp.recv_data().await;
            if m["msg"] == "ready" && m["subs"].as_array().unwrap().contains(&json!(id)) {
                break;
            }
            assert!(
                !(m["msg"] == "nosub" && m["id"] == id.as_str()),
                "{name} {event}: {m}"
            );
        }
    }
    comet.stop();
}

#[tokio::test]
async fn settings_public_filters_are_values_and_paging_follows_rocket_chats_counts() {
    let comet = start();
    let addr = comet.addr;
    // A selector beyond `_id` is refused, not run.
    for query in [
        json!({"value": true}),
        json!({"_id": {"$regex": ".*"}}),
        json!({"_id": {"$ne": "x"}}),
        json!({"$where": "1"}),
        json!({"_id": {"$in": [{"$gt": ""}]}}),
    ] {
        let path = format!(
            "/api/v1/settings.public?query={}",
            urlencode(&query.to_string())
        );
        let (status, body) = request(addr, "GET", &path, None, None).await;
        assert_eq!(status, 400, "{query}: {body}");
    }
    // A private setting is never listed, even named.
    let (_, body) = request(
        addr,
        "GET",
        "/api/v1/settings.public?_id=API_CORS_Origin,Site_Name",
        None,
        None,
    )
    .await;
    assert_eq!(body["total"], 1, "{body}");
    assert_eq!(body["settings"][0]["_id"], "Site_Name");
    // `fields` adds stored fields and removes others; `_id` stays.
    let fields = urlencode(&json!({"type": 1, "value": 0}).to_string());
    let (_, body) = request(
        addr,
        "GET",
        &format!("/api/v1/settings.public?_id=Site_Name&fields={fields}"),
        None,
        None,
    )
    .await;
    assert_eq!(
        body["settings"][0],
        json!({"_id": "Site_Name", "type": "string"}),
        "{body}"
    );
    // Paging: 50 by default, at most 100, offset past the end is empty.
    let (_, body) = request(addr, "GET", "/api/v1/settings.public", None, None).await;
    let total = body["total"].as_u64().unwrap();
    assert!(total > 100, "{body}");
    assert_eq!(body["count"], 50);
    let (_, body) = request(
        addr,
        "GET",
        "/api/v1/settings.public?count=1000",
        None,
        None,
    )
    .await;
    assert_eq!(body["count"], 100);
    let (_, body) = request(
        addr,
        "GET",
        &format!("/api/v1/settings.public?offset={total}"),
        None,
        None,
    )
    .await;
    assert_eq!(body["settings"], json!([]));
    let sort = urlencode(&json!({"_id": -1}).to_string());
    let (_, body) = request(
        addr,
        "GET",
        &format!("/api/v1/settings.public?sort={sort}&count=2"),
        None,
        None,
    )
    .await;
    let first = body["settings"][0]["_id"].as_str().unwrap().to_owned();
    let second = body["settings"][1]["_id"].as_str().unwrap().to_owned();
    assert!(first > second, "{body}");
    comet.stop();
}

async fn unique_id(addr: std::net::SocketAddr) -> Json {
    let path = "/api/v1/settings.public?_id=uniqueID";
    let (_, body) = request(addr, "GET", path, None, None).await;
    body["settings"][0]["value"].clone()
}

#[tokio::test]
async fn the_workspace_identity_is_made_once_and_kept_across_restarts() {
    let comet = start();
    let first = unique_id(comet.addr).await;
    assert!(first.is_string(), "{first}");
    let dir = comet.kill();
    let comet = Binary::start_in(
        dir,
        "",
        &[("ADMIN_USERNAME", ADMIN.0), ("ADMIN_PASS", ADMIN.1)],
    );
    assert_eq!(unique_id(comet.addr).await, first);
    comet.stop();
}

/// The `result` of one method call, whatever else arrives meanwhile.
async fn result_of(ddp: &mut DdpClient, id: &str, method: &str, params: Json) -> Json {
    ddp.send(json!({"msg": "method", "id": id, "method": method, "params": params}))
        .await;
    loop {
        let m = ddp.recv_data().await;
        if m["msg"] == "result" && m["id"] == id {
            return m;
        }
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn get(addr: std::net::SocketAddr, path: &str, auth: &(String, String)) -> Json {
    let (status, body) = request(addr, "GET", path, Some(auth), None).await;
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

async fn post(addr: std::net::SocketAddr, path: &str, auth: &(String, String), body: Json) -> Json {
    let (status, answer) = request(addr, "POST", path, Some(auth), Some(body.clone())).await;
    assert_eq!(status, 200, "POST {path} {body}: {answer}");
    answer
}

async fn sign_up(addr: std::net::SocketAddr, name: &str) -> (String, String) {
    let (status, body) = request(
        addr,
        "POST",
        "/api/v1/users.register",
        None,
        Some(json!({"username": name, "email": format!("{name}@example.com"), "pass": "pass-word-1", "name": name})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sign_in(addr, name, "pass-word-1").await
}

#[tokio::test]
async fn the_apps_everyday_flows_are_served_and_strangers_get_nothing() {
    let comet = start();
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let bob = sign_up(addr, "bob").await;
    let eve = sign_up(addr, "eve").await;

    // `chat.postMessage` finds the room by bare name, `#name`, id, or `@username`.
    let general = get(addr, "/api/v1/rooms.info?roomName=general", &boss).await;
    let gid = general["room"]["_id"].as_str().unwrap().to_owned();
    for channel in ["general", "#general", gid.as_str()] {
        let sent = post(
            addr,
            "/api/v1/chat.postMessage",
            &boss,
            json!({"channel": channel, "text": "hello (all)?"}),
        )
        .await;
        assert_eq!(sent["message"]["rid"], gid.as_str());
    }
    let dm = post(
        addr,
        "/api/v1/chat.postMessage",
        &boss,
        json!({"channel": "@bob", "text": "psst"}),
    )
    .await;
    assert_ne!(dm["message"]["rid"], gid.as_str());
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/chat.postMessage",
        Some(&boss),
        Some(json!({"channel": "nowhere", "text": "x"})),
    )
    .await;
    assert_eq!(status, 400);

    // Star, pin, mention, search.
    let root = post(
        addr,
        "/api/v1/chat.postMessage",
        &bob,
        json!({"roomId": gid, "text": "@boss look at a.b*c"}),
    )
    .await;
    let mid = root["message"]["_id"].as_str().unwrap().to_owned();
    post(
        addr,
        "/api/v1/chat.starMessage",
        &boss,
        json!({"messageId": mid}),
    )
    .await;
    post(
        addr,
        "/api/v1/chat.pinMessage",
        &boss,
        json!({"messageId": mid}),
    )
    .await;
    let q = |path: &str| format!("/api/v1/{path}?roomId={gid}");
    for (path, expect) in [
        ("chat.getStarredMessages", 1),
        ("chat.getPinnedMessages", 1),
        ("chat.getMentionedMessages", 1),
    ] {
        let list = get(addr, &q(path), &boss).await;
        assert_eq!(list["total"], expect, "{path}: {list}");
        assert_eq!(list["messages"][0]["_id"], mid.as_str(), "{path}");
    }
    assert_eq!(
        get(addr, &q("chat.getStarredMessages"), &bob).await["total"],
        0,
        "stars are each user's own"
    );
    post(
        addr,
        "/api/v1/chat.unStarMessage",
        &boss,
        json!({"messageId": mid}),
    )
    .await;
    assert_eq!(
        get(addr, &q("chat.getStarredMessages"), &boss).await["total"],
        0
    );
    let found = get(
        addr,
        &format!("{}&searchText=a.b*c", q("chat.search")),
        &boss,
    )
    .await;
    assert_eq!(found["messages"].as_array().unwrap().len(), 1, "{found}");
    let found = get(
        addr,
        &format!("{}&searchText=a.b.c", q("chat.search")),
        &boss,
    )
    .await;
    assert_eq!(
        found["messages"],
        json!([]),
        "a search text is literal: {found}"
    );
    post(
        addr,
        "/api/v1/chat.reportMessage",
        &bob,
        json!({"messageId": mid, "description": "spam"}),
    )
    .await;
    post(
        addr,
        "/api/v1/chat.unPinMessage",
        &boss,
        json!({"messageId": mid}),
    )
    .await;

    // Threads: a reply, the list, following, unread.
    post(
        addr,
        "/api/v1/chat.sendMessage",
        &boss,
        json!({"message": {"rid": gid, "msg": "a reply", "tmid": mid}}),
    )
    .await;
    let threads = get(
        addr,
        &format!("/api/v1/chat.getThreadsList?rid={gid}"),
        &bob,
    )
    .await;
    assert_eq!(threads["threads"][0]["_id"], mid.as_str(), "{threads}");
    let following = get(
        addr,
        &format!("/api/v1/chat.getThreadsList?rid={gid}&type=following"),
        &eve,
    )
    .await;
    assert_eq!(following["total"], 0);
    post(
        addr,
        "/api/v1/chat.followMessage",
        &eve,
        json!({"mid": mid}),
    )
    .await;
    let following = get(
        addr,
        &format!("/api/v1/chat.getThreadsList?rid={gid}&type=following"),
        &eve,
    )
    .await;
    assert_eq!(following["total"], 1, "{following}");
    post(
        addr,
        "/api/v1/chat.unfollowMessage",
        &eve,
        json!({"mid": mid}),
    )
    .await;
    let synced = get(
        addr,
        &format!("/api/v1/chat.syncThreadsList?rid={gid}&updatedSince=2000-01-01T00:00:00.000Z"),
        &bob,
    )
    .await;
    assert_eq!(synced["threads"]["update"][0]["_id"], mid.as_str());

    // Discussions.
    let made = post(
        addr,
        "/api/v1/rooms.createDiscussion",
        &bob,
        json!({"prid": gid, "t_name": "Lunch plans", "users": ["eve"], "reply": "where?"}),
    )
    .await;
    assert_eq!(made["discussion"]["prid"], gid.as_str());
    assert_eq!(made["discussion"]["fname"], "Lunch plans");
    let drid = made["discussion"]["_id"].as_str().unwrap().to_owned();
    let listed = get(addr, &q("chat.getDiscussions"), &boss).await;
    assert_eq!(listed["messages"][0]["drid"], drid.as_str(), "{listed}");

    // Marked unread, then its counters.
    post(
        addr,
        "/api/v1/subscriptions.unread",
        &boss,
        json!({"roomId": gid}),
    )
    .await;
    let subs = get(addr, "/api/v1/subscriptions.get", &boss).await;
    let sub = subs["update"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == gid.as_str())
        .unwrap()
        .clone();
    assert_eq!(sub["alert"], true, "{sub}");
    let counters = get(addr, &q("channels.counters"), &boss).await;
    assert_eq!(counters["joined"], true);
    assert!(counters["msgs"].as_u64().unwrap() >= 4, "{counters}");
    assert_eq!(
        get(addr, &q("channels.messages"), &boss).await["success"],
        true
    );
    assert!(get(addr, &q("channels.roles"), &boss).await["roles"].is_array());

    // Slash commands.
    post(
        addr,
        "/api/v1/commands.run",
        &boss,
        json!({"command": "topic", "params": "Lunch at noon", "roomId": gid}),
    )
    .await;
    assert_eq!(
        get(addr, &format!("/api/v1/rooms.info?roomId={gid}"), &boss).await["room"]["topic"],
        "Lunch at noon"
    );
    post(
        addr,
        "/api/v1/commands.run",
        &bob,
        json!({"command": "me", "params": "waves", "roomId": gid}),
    )
    .await;
    let last = get(
        addr,
        &format!("/api/v1/channels.messages?roomId={gid}&count=1"),
        &bob,
    )
    .await;
    assert_eq!(last["messages"][0]["msg"], "_waves_", "{last}");
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/commands.run",
        Some(&bob),
        Some(json!({"command": "topic", "params": "mine now", "roomId": gid})),
    )
    .await;
    assert_eq!(
        status, 403,
        "/topic needs edit-room, as saveRoomSettings does"
    );
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/commands.run",
        Some(&bob),
        Some(json!({"command": "nope", "roomId": gid})),
    )
    .await;
    assert_eq!(status, 400);

    // Finding people and rooms.
    let spot = get(addr, "/api/v1/spotlight?query=bo", &eve).await;
    let names: Vec<&str> = spot["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"bob") && names.contains(&"boss"), "{spot}");
    assert!(spot["users"][0].get("services").is_none() && spot["users"][0].get("emails").is_none());
    let dir = get(addr, "/api/v1/directory?type=users&text=eve", &bob).await;
    assert_eq!(dir["total"], 1, "{dir}");
    let dir = get(addr, "/api/v1/directory?type=channels&text=gen", &bob).await;
    assert_eq!(dir["result"][0]["name"], "general", "{dir}");

    // A group DM, favourites, notification preferences.
    let group_dm = post(
        addr,
        "/api/v1/im.create",
        &boss,
        json!({"usernames": "bob,eve"}),
    )
    .await;
    let gdm = group_dm["room"]["rid"].as_str().unwrap().to_owned();
    let members = get(addr, &format!("/api/v1/im.members?roomId={gdm}"), &eve).await;
    assert_eq!(members["total"], 3, "{members}");
    post(
        addr,
        "/api/v1/rooms.favorite",
        &boss,
        json!({"roomId": gid, "favorite": true}),
    )
    .await;
    post(addr, "/api/v1/rooms.saveNotification", &boss, json!({"roomId": gid, "notifications": {"desktopNotifications": "mentions", "disableNotifications": "1"}})).await;
    let subs = get(addr, "/api/v1/subscriptions.get", &boss).await;
    let sub = subs["update"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["rid"] == gid.as_str())
        .unwrap()
        .clone();
    assert_eq!(
        (
            &sub["f"],
            &sub["desktopNotifications"],
            &sub["disableNotifications"]
        ),
        (&json!(true), &json!("mentions"), &json!(true)),
        "{sub}"
    );
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/rooms.saveNotification",
        Some(&boss),
        Some(json!({"roomId": gid, "notifications": {"$set": "x"}})),
    )
    .await;
    assert_eq!(status, 400);

    // The profile: name and password (the current one needed), preferences, avatar.
    post(
        addr,
        "/api/v1/users.updateOwnBasicInfo",
        &bob,
        json!({"data": {"name": "Bob B", "nickname": "bobby"}}),
    )
    .await;
    let sha = |p: &str| comet::chat::accounts::secrets::password_digest(p);
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/users.updateOwnBasicInfo",
        Some(&bob),
        Some(json!({"data": {"newPassword": "new-pass-2", "currentPassword": sha("wrong")}})),
    )
    .await;
    assert_eq!(status, 400);
    post(
        addr,
        "/api/v1/users.updateOwnBasicInfo",
        &bob,
        json!({"data": {"newPassword": "new-pass-2", "currentPassword": sha("pass-word-1")}}),
    )
    .await;
    let bob = sign_in(addr, "bob", "new-pass-2").await;
    assert_eq!(get(addr, "/api/v1/me", &bob).await["name"], "Bob B");
    let saved = post(
        addr,
        "/api/v1/users.setPreferences",
        &bob,
        json!({"data": {"hideRoles": true}}),
    )
    .await;
    assert_eq!(saved["user"]["settings"]["preferences"]["hideRoles"], true);
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/users.setPreferences",
        Some(&bob),
        Some(json!({"data": {"hideRoles": "yes"}})),
    )
    .await;
    assert_eq!(status, 400);
    let (status, svg) = http_with(addr, "GET", "/avatar/bob", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        svg.starts_with("<svg") && svg.contains(">B</text>"),
        "{svg}"
    );

    // A stranger to a private group reads nothing of it; an anonymous client nothing at all.
    let secret = post(
        addr,
        "/api/v1/groups.create",
        &boss,
        json!({"name": "secret-plans"}),
    )
    .await;
    let sid = secret["group"]["_id"].as_str().unwrap().to_owned();
    let hidden = post(
        addr,
        "/api/v1/chat.postMessage",
        &boss,
        json!({"roomId": sid, "text": "the plan"}),
    )
    .await;
    let hidden_id = hidden["message"]["_id"].as_str().unwrap().to_owned();
    for path in [
        format!("/api/v1/chat.getPinnedMessages?roomId={sid}"),
        format!("/api/v1/chat.search?roomId={sid}&searchText=plan"),
        format!("/api/v1/chat.getThreadsList?rid={sid}"),
        format!("/api/v1/groups.messages?roomId={sid}"),
        format!("/api/v1/groups.counters?roomId={sid}"),
        format!("/api/v1/push.get?id={hidden_id}"),
    ] {
        let (status, body) = request(addr, "GET", &path, Some(&eve), None).await;
        assert!(status >= 400, "{path} answered a stranger: {body}");
        assert!(!body.to_string().contains("the plan"), "{path}: {body}");
        let (status, _) = request(addr, "GET", &path, None, None).await;
        assert_eq!(status, 401, "{path}");
    }
    for (path, body) in [
        ("/api/v1/chat.starMessage", json!({"messageId": hidden_id})),
        (
            "/api/v1/chat.reportMessage",
            json!({"messageId": hidden_id, "description": "x"}),
        ),
        ("/api/v1/chat.followMessage", json!({"mid": hidden_id})),
        (
            "/api/v1/commands.run",
            json!({"command": "shrug", "roomId": sid}),
        ),
        (
            "/api/v1/rooms.createDiscussion",
            json!({"prid": sid, "t_name": "sneaky"}),
        ),
        (
            "/api/v1/subscriptions.unread",
            json!({"firstUnreadMessage": {"_id": hidden_id}}),
        ),
    ] {
        let (status, answer) = request(addr, "POST", path, Some(&eve), Some(body.clone())).await;
        assert!(status >= 400, "{path} let a stranger act: {answer}");
        let (status, _) = request(addr, "POST", path, None, Some(body)).await;
        assert_eq!(status, 401, "{path}");
    }
    let spot = get(addr, "/api/v1/spotlight?query=secret", &eve).await;
    assert_eq!(spot["rooms"], json!([]), "{spot}");
    comet.stop();
}

/// A DDP client logged in with `token` (a REST login's).
async fn ddp_with(addr: std::net::SocketAddr, token: &str) -> DdpClient {
    let mut ddp = DdpClient::open(&format!("ws://{addr}/websocket")).await;
    ddp.send(json!({"msg": "connect", "version": "1", "support": ["1"]}))
        .await;
    assert_eq!(ddp.recv().await["msg"], "connected");
    let login = result_of(&mut ddp, "login", "login", json!([{"resume": token}])).await;
    assert!(login["error"].is_null(), "{login}");
    ddp
}

#[tokio::test]
async fn custom_emoji_roles_commands_and_passwords_follow_their_permissions() {
    let comet = start();
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let bob = sign_up(addr, "bob").await;
    let mut admin = ddp_with(addr, &boss.1).await;
    let mut user = ddp_with(addr, &bob.1).await;

    // An administrator adds an emoji; a user may list but not add or remove one.
    let before = get(addr, "/api/v1/emoji-custom.list", &bob).await;
    assert_eq!(before["emojis"]["update"], json!([]));
    let added = result_of(
        &mut admin,
        "e1",
        "insertOrUpdateEmoji",
        json!([{"name": ":party:", "aliases": "yay, woo", "extension": "png"}]),
    )
    .await;
    let emoji_id = added["result"]
        .as_str()
        .unwrap_or_else(|| panic!("{added}"))
        .to_owned();
    let listed = get(addr, "/api/v1/emoji-custom.list", &bob).await;
    assert_eq!(listed["emojis"]["update"][0]["name"], "party");
    assert_eq!(
        listed["emojis"]["update"][0]["aliases"],
        json!(["yay", "woo"])
    );
    let refused = result_of(
        &mut user,
        "e2",
        "insertOrUpdateEmoji",
        json!([{"name": "mine", "extension": "png"}]),
    )
    .await;
    assert_eq!(refused["error"]["error"], "error-not-allowed", "{refused}");
    let clash = result_of(
        &mut admin,
        "e3",
        "insertOrUpdateEmoji",
        json!([{"name": "yay", "extension": "gif"}]),
    )
    .await;
    assert!(
        !clash["error"].is_null(),
        "a name already an alias: {clash}"
    );
    let (status, _) = request(
        addr,
        "POST",
        "/api/v1/emoji-custom.delete",
        Some(&bob),
        Some(json!({"emojiId": emoji_id})),
    )
    .await;
    assert_eq!(status, 403);
    let since = "2000-01-01T00:00:00.000Z";
    post(
        addr,
        "/api/v1/emoji-custom.delete",
        &boss,
        json!({"emojiId": emoji_id}),
    )
    .await;
    let after = get(
        addr,
        &format!("/api/v1/emoji-custom.list?updatedSince={since}"),
        &bob,
    )
    .await;
    assert_eq!(after["emojis"]["update"], json!([]));
    assert_eq!(
        after["emojis"]["remove"][0]["_id"],
        emoji_id.as_str(),
        "{after}"
    );

    // getUserRoles: users with a role beyond `user`.
    let roles = result_of(&mut user, "r1", "getUserRoles", json!([])).await;
    let holders = roles["result"].as_array().unwrap();
    assert!(
        holders
            .iter()
            .any(|u| u["username"] == "boss"
                && u["roles"].as_array().unwrap().contains(&json!("admin"))),
        "{roles}"
    );
    assert!(!holders.iter().any(|u| u["username"] == "bob"));

    // DDP spotlight, a command's preview, a thread read.
    let spot = result_of(
        &mut user,
        "s1",
        "spotlight",
        json!(["bo", [], {"users": true, "rooms": false}, ""]),
    )
    .await;
    assert!(
        spot["result"]["users"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["username"] == "boss"),
        "{spot}"
    );
    assert_eq!(spot["result"]["rooms"], json!([]));
    let general = get(addr, "/api/v1/rooms.info?roomName=general", &bob).await;
    let gid = general["room"]["_id"].as_str().unwrap().to_owned();
    let preview = get(
        addr,
        &format!("/api/v1/commands.preview?command=shrug&roomId={gid}"),
        &bob,
    )
    .await;
    assert_eq!(preview["success"], true);
    let (status, _) = request(
        addr,
        "GET",
        &format!("/api/v1/commands.preview?command=nope&roomId={gid}"),
        Some(&bob),
        None,
    )
    .await;
    assert_eq!(status, 400);
    let root = post(
        addr,
        "/api/v1/chat.postMessage",
        &boss,
        json!({"roomId": gid, "text": "thread root"}),
    )
    .await;
    let tmid = root["message"]["_id"].as_str().unwrap().to_owned();
    let read = result_of(&mut user, "t1", "readThreads", json!([tmid, ""])).await;
    assert!(read["error"].is_null(), "{read}");

    // setUserPassword only while the account must change its password.
    let set = result_of(
        &mut user,
        "p1",
        "setUserPassword",
        json!(["another-pass-3"]),
    )
    .await;
    assert_eq!(set["error"]["error"], "error-not-allowed", "{set}");
    comet.stop();
}

#[tokio::test]
async fn a_user_sets_their_own_avatar_from_an_image_and_resets_it() {
    const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
    let comet = start();
    let addr = comet.addr;
    let boss = sign_in(addr, ADMIN.0, ADMIN.1).await;
    let bob = sign_up(addr, "bob").await;
    let mut user = ddp_with(addr, &bob.1).await;
    let uri = format!("data:image/png;base64,{PNG}");
    let set = result_of(
        &mut user,
        "a1",
        "setAvatarFromService",
        json!([uri, "image/png", "upload", ""]),
    )
    .await;
    assert!(set["error"].is_null(), "{set}");
    let (status, image) = http_with(addr, "GET", "/avatar/bob", &[], b"").await;
    assert_eq!(status, 200);
    assert!(image.contains("PNG") && !image.contains("<svg"), "{image}");
    assert!(get(addr, "/api/v1/me", &bob).await["avatarETag"].is_string());
    // The type comes from the bytes: an SVG (which can carry script) is refused whatever
    // it claims to be, and so is anything that is not an image.
    let svg =
        base64_of(b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>");
    for data in [
        format!("data:image/png;base64,{svg}"),
        "data:image/png;base64,aGVsbG8=".to_owned(),
        "https://example.com/a.png".to_owned(),
    ] {
        let refused = result_of(
            &mut user,
            "a2",
            "setAvatarFromService",
            json!([data, "image/png", "upload"]),
        )
        .await;
        assert_eq!(
            refused["error"]["error"], "error-invalid-image",
            "{refused}"
        );
    }
    let by_url = result_of(
        &mut user,
        "a3",
        "setAvatarFromService",
        json!(["http://10.0.0.1/a.png", "", "url"]),
    )
    .await;
    // A URL on a private network is never fetched (`uploads.rs` has the rest).
    assert_eq!(
        by_url["error"]["error"], "error-avatar-invalid-url",
        "{by_url}"
    );
    // Another user's avatar is not the caller's to change.
    let other = result_of(
        &mut user,
        "a4",
        "setAvatarFromService",
        json!([uri, "image/png", "upload", boss.0]),
    )
    .await;
    assert_eq!(other["error"]["error"], "error-not-allowed", "{other}");
    let (_, still) = http_with(addr, "GET", "/avatar/boss", &[], b"").await;
    assert!(still.starts_with("<svg"), "{still}");
    post(addr, "/api/v1/users.resetAvatar", &bob, json!({})).await;
    let (_, again) = http_with(addr, "GET", "/avatar/bob", &[], b"").await;
    assert!(again.starts_with("<svg"), "{again}");
    comet.stop();
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
