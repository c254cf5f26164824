//! Test harness: the real server on 127.0.0.1:0 and a raw DDP client.
#![allow(dead_code, unreachable_pub)]

pub mod nats;
pub mod s3;

use comet::config::{Cli, Settings};
use comet::session::Hub;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value as Json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Arc<Hub>,
    /// The chat services' hook points (a test adds its own hooks here).
    pub hooks: Arc<comet::chat::hooks::Hooks>,
    pub uploads: Arc<comet::chat::uploads::Uploads>,
    pub plugins: Arc<comet::chat::plugins::Plugins>,
    task: tokio::task::JoinHandle<()>,
}

impl TestServer {
    pub fn ws_url(&self) -> String {
        format!("ws://{}/websocket", self.addr)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops the server and waits for its drain.
    pub async fn shutdown(self) {
        self.hub.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Settings for tests: test handlers on; `tweak` adjusts the rest.
pub fn test_settings(tweak: impl FnOnce(&mut Cli)) -> Settings {
    let data_dir = std::env::temp_dir().join(format!(
        "comet-test-{}-{}",
        std::process::id(),
        comet::model::random::random_id()
    ));
    let mut cli = Cli {
        test_handlers: Some(true),
        port: Some(0),
        // Quick hashes: the tests log in often; the cost itself is bcrypt's business.
        bcrypt_cost: Some(4),
        data_dir: Some(data_dir),
        ..Cli::default()
    };
    tweak(&mut cli);
    Settings::resolve(cli, false).expect("test settings are valid")
}

pub async fn spawn_server(settings: Settings) -> TestServer {
    let comet::app::Built {
        hub,
        rest,
        hooks,
        uploads,
        plugins,
        ..
    } = comet::app::build(&settings)
        .await
        .expect("test server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(comet::server::serve(
        listener,
        hub.clone(),
        rest,
        settings.server.clone(),
    ));
    TestServer {
        addr,
        hub,
        hooks,
        uploads,
        plugins,
        task,
    }
}

/// The administrator every accounts test logs in as.
pub const ADMIN: (&str, &str, &str) = ("boss", "s3cret-pass", "boss@example.com");

/// An EJSON object given as JSON.
pub fn document(json: Json) -> comet::model::Document {
    match comet::model::Value::from_json(json) {
        Ok(comet::model::Value::Object(d)) => d,
        other => panic!("not an object: {other:?}"),
    }
}

/// Updates `collection` straight in the server's store, as another writer would (another
/// process, Rocket.Chat itself): no method, no session.
pub async fn update_elsewhere(
    server: &TestServer,
    collection: &str,
    selector: Json,
    modifier: Json,
) {
    let store = server.hub.observe.as_ref().unwrap().store().clone();
    store
        .update(
            collection,
            comet::model::query::Selector::parse(&document(selector)).unwrap(),
            comet::model::query::Update::parse(&document(modifier)).unwrap(),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
}

/// A connection logged in as `user` with a plain-text password.
pub async fn logged_in(server: &TestServer, user: &str, password: &str) -> DdpClient {
    let (mut c, _) = DdpClient::connect(server).await;
    let frames = c
        .call_seeing(
            "in",
            "login",
            serde_json::json!([{"user": {"username": user}, "password": password}]),
        )
        .await;
    assert!(frames.last().unwrap().get("result").is_some(), "{frames:?}");
    c
}

/// A REST login of `user`: (user id, auth token) for `X-User-Id` / `X-Auth-Token`.
pub async fn rest_login(server: &TestServer, user: &str, password: &str) -> (String, String) {
    let body = serde_json::json!({"user": user, "password": password}).to_string();
    let (status, login) = http(server.addr, "POST", "/api/v1/login", body.as_bytes()).await;
    assert_eq!(status, 200, "{login}");
    let login: Json = serde_json::from_str(&login).unwrap();
    (
        login["data"]["userId"].as_str().unwrap().to_owned(),
        login["data"]["authToken"].as_str().unwrap().to_owned(),
    )
}

/// A new user (password `pw`), registered and logged in on its own connection: the
/// connection, the user's id and its resume token.
pub async fn registered(server: &TestServer, name: &str) -> (DdpClient, String, String) {
    let (mut c, _) = DdpClient::connect(server).await;
    let frames = c
        .call_seeing(
            "new",
            "createUser",
            serde_json::json!([{"username": name, "email": format!("{name}@example.com"), "password": "pw"}]),
        )
        .await;
    let result = &frames.last().unwrap()["result"];
    let id = result["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{frames:?}"))
        .to_owned();
    let token = result["token"].as_str().unwrap_or_default().to_owned();
    (c, id, token)
}

/// Switches off Rocket.Chat's rules per method name (10 calls of one name per connection,
/// 20 per user, in 10 s) for a test that calls one method more often than that to test
/// something else; the limits have their own tests (`security.rs`).
pub fn without_limits_by_name(settings: &mut Settings) {
    for rule in ["User_By_Method", "Connection_By_Method"] {
        settings
            .setting_overrides
            .push((format!("DDP_Rate_Limit_{rule}_Enabled"), "false".into()));
    }
}

/// Switches off REST's limits per route (10 requests a minute from one address) for a test
/// that makes more requests to one route than that from 127.0.0.1.
pub fn without_route_limits(settings: &mut Settings) {
    settings
        .setting_overrides
        .push(("API_Enable_Rate_Limiter".into(), "false".into()));
}

/// A test server whose first start created the administrator [`ADMIN`].
pub async fn spawn_with_admin() -> TestServer {
    spawn_with_admin_and(|_| {}).await
}

/// Like [`spawn_with_admin`], with settings `tweak` changes.
pub async fn spawn_with_admin_and(tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let mut settings = test_settings(|c| {
        c.admin_username = Some(ADMIN.0.into());
        c.admin_pass = Some(ADMIN.1.into());
        c.admin_email = Some(ADMIN.2.into());
    });
    tweak(&mut settings);
    spawn_server(settings).await
}

pub async fn spawn_default() -> TestServer {
    spawn_server(test_settings(|_| {})).await
}

pub struct DdpClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the client saw instead of a message.
#[derive(Debug, PartialEq)]
pub enum Received {
    Message(Json),
    Closed(Option<u16>),
    Timeout,
}

impl DdpClient {
    pub async fn open(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        Self { ws }
    }

    /// Opens and completes the DDP handshake; returns the client and its session id.
    pub async fn connect(server: &TestServer) -> (Self, String) {
        let mut c = Self::open(&server.ws_url()).await;
        c.send(serde_json::json!({"msg":"connect","version":"1","support":["1","pre2","pre1"]}))
            .await;
        let reply = c.recv().await;
        assert_eq!(reply["msg"], "connected", "{reply}");
        let session = reply["session"].as_str().unwrap().to_owned();
        (c, session)
    }

    pub async fn send(&mut self, msg: Json) {
        self.send_raw(&msg.to_string()).await;
    }

    pub async fn send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send");
    }

    /// Sends `msg`; `false` when the connection is gone.
    pub async fn try_send(&mut self, msg: Json) -> bool {
        self.ws.send(Message::text(msg.to_string())).await.is_ok()
    }

    pub async fn send_message(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    pub async fn next(&mut self, within: Duration) -> Received {
        loop {
            match tokio::time::timeout(within, self.ws.next()).await {
                Err(_) => return Received::Timeout,
                Ok(None) => return Received::Closed(None),
                Ok(Some(Err(_))) => return Received::Closed(None),
                Ok(Some(Ok(Message::Text(t)))) => {
                    return Received::Message(serde_json::from_str(&t).expect("server sends JSON"))
                }
                Ok(Some(Ok(Message::Close(frame)))) => {
                    return Received::Closed(frame.map(|f| u16::from(f.code)))
                }
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// The next message; panics on close or after 5 s.
    pub async fn recv(&mut self) -> Json {
        match self.next(Duration::from_secs(5)).await {
            Received::Message(m) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message that is not a server ping.
    pub async fn recv_data(&mut self) -> Json {
        loop {
            let m = self.recv().await;
            if m["msg"] != "ping" {
                return m;
            }
        }
    }

    pub async fn expect_silence(&mut self, within: Duration) {
        match self.next(within).await {
            Received::Timeout => {}
            other => panic!("expected silence, got {other:?}"),
        }
    }

    /// The next data frame, past changes of a user's status fields (presence writes them
    /// as connections come and go).
    pub async fn recv_data_past_status(&mut self) -> Json {
        loop {
            let m = self.recv_data().await;
            let status_only = m["msg"] == "changed"
                && m["collection"] == "users"
                && m["fields"].as_object().is_some_and(|f| {
                    f.keys()
                        .all(|k| k.starts_with("status") || k == "_updatedAt")
                });
            if !status_only {
                return m;
            }
        }
    }

    /// Calls a method and returns every frame up to and including its `result` (data the
    /// call caused comes first), having also waited for its `updated`.
    pub async fn call_seeing(&mut self, id: &str, method: &str, params: Json) -> Vec<Json> {
        self.send(serde_json::json!({"msg":"method","id":id,"method":method,"params":params}))
            .await;
        let mut seen = Vec::new();
        let mut updated = false;
        loop {
            let m = self.recv_data().await;
            updated |= m["msg"] == "updated";
            let done = m["msg"] == "result";
            if m["msg"] != "updated" {
                seen.push(m);
            }
            if done {
                break;
            }
        }
        while !updated {
            updated = self.recv_data().await["msg"] == "updated";
        }
        seen
    }

    /// Calls a method; returns its `result` and every other frame that came before its
    /// `updated` (data and stream events the call caused, in order).
    pub async fn call_keeping(
        &mut self,
        id: &str,
        method: &str,
        params: Json,
    ) -> (Json, Vec<Json>) {
        self.send(serde_json::json!({"msg":"method","id":id,"method":method,"params":params}))
            .await;
        let (mut result, mut others, mut updated) = (None, Vec::new(), false);
        while result.is_none() || !updated {
            let m = self.recv_data().await;
            if m["msg"] == "result" && m["id"] == id {
                result = Some(m);
            } else if m["msg"] == "updated"
                && m["methods"]
                    .as_array()
                    .is_some_and(|ms| ms.contains(&Json::from(id)))
            {
                updated = true;
            } else {
                others.push(m);
            }
        }
        (result.unwrap_or(Json::Null), others)
    }

    /// Subscribes and returns every frame up to and including its `ready` or `nosub`.
    pub async fn subscribe(&mut self, id: &str, name: &str, params: Json) -> Vec<Json> {
        self.send(serde_json::json!({"msg":"sub","id":id,"name":name,"params":params}))
            .await;
        let mut seen = Vec::new();
        loop {
            let m = self.recv_data().await;
            let done = (m["msg"] == "ready"
                && m["subs"]
                    .as_array()
                    .is_some_and(|s| s.contains(&Json::from(id))))
                || (m["msg"] == "nosub" && m["id"] == id);
            seen.push(m);
            if done {
                return seen;
            }
        }
    }

    /// The next frame on `collection` (pings and other frames skipped), or `None` when
    /// nothing comes within `within`.
    pub async fn next_on(&mut self, collection: &str, within: Duration) -> Option<Json> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Received::Message(m) if m["collection"] == collection => return Some(m),
                Received::Message(_) => continue,
                _ => return None,
            }
        }
    }

    pub async fn call(&mut self, id: &str, method: &str, params: Json) -> (Json, Json) {
        self.send(serde_json::json!({"msg":"method","id":id,"method":method,"params":params}))
            .await;
        let a = self.recv_data().await;
        let b = self.recv_data().await;
        if a["msg"] == "result" {
            (a, b)
        } else {
            (b, a)
        }
    }
}

/// One HTTP/1.1 request over a fresh connection; returns (status, body).
pub async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    http_with(addr, method, path, &[], body).await
}

/// One HTTP/1.1 request with extra headers; returns (status, body).
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body_start = text.find("\r\n\r\n").map_or(text.len(), |i| i + 4);
    let mut body = text[body_start..].to_owned();
    if text[..body_start]
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some(nl) = s.find("\r\n") {
        let Ok(len) = usize::from_str_radix(s[..nl].trim(), 16) else {
            break;
        };
        if len == 0 {
            break;
        }
        out.push_str(&s[nl + 2..nl + 2 + len]);
        s = &s[nl + 2 + len + 2..];
    }
    out
}

/// A REST GET, with `(X-User-Id, X-Auth-Token)` when given: (status, JSON body, or the
/// text when it is not JSON).
pub async fn rest_get(server: &TestServer, path: &str, auth: Option<(&str, &str)>) -> (u16, Json) {
    let headers: Vec<(&str, &str)> = auth
        .map(|(id, token)| vec![("X-User-Id", id), ("X-Auth-Token", token)])
        .unwrap_or_default();
    let (status, body) = http_with(server.addr, "GET", path, &headers, b"").await;
    (
        status,
        serde_json::from_str(&body).unwrap_or(Json::String(body)),
    )
}

/// A REST POST of a JSON body as `(X-User-Id, X-Auth-Token)`: (status, JSON body or null).
pub async fn rest_post(
    server: &TestServer,
    path: &str,
    auth: (&str, &str),
    body: Json,
) -> (u16, Json) {
    let headers = [
        ("X-User-Id", auth.0),
        ("X-Auth-Token", auth.1),
        ("Content-Type", "application/json"),
    ];
    let (status, text) = http_with(
        server.addr,
        "POST",
        path,
        &headers,
        body.to_string().as_bytes(),
    )
    .await;
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

/// Reads one Prometheus value from `/metrics`.
pub async fn metric(server: &TestServer, line_prefix: &str) -> f64 {
    metric_at(server.addr, line_prefix).await
}

/// Waits (up to 10 s) for the `/metrics` value at `addr` to reach `at_least`.
pub async fn metric_reaches_at(addr: SocketAddr, line_prefix: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric_at(addr, line_prefix).await;
        if now >= at_least {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{line_prefix} stayed at {now}, below {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one Prometheus value from the `/metrics` of the server at `addr`.
pub async fn metric_at(addr: SocketAddr, line_prefix: &str) -> f64 {
    let (_, body) = http(addr, "GET", "/metrics", b"").await;
    body.lines()
        .find_map(|l| {
            l.strip_prefix(line_prefix)
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("metric {line_prefix} missing in\n{body}"))
}

/// Waits up to `within` for a `/metrics` value to reach `at_least`; false if it never did.
pub async fn metric_reaches(
    server: &TestServer,
    line_prefix: &str,
    at_least: f64,
    within: Duration,
) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if metric(server, line_prefix).await >= at_least {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// Writes a configuration file with `text` and returns its path.
pub fn config_file(text: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "comet-config-{}.toml",
        comet::model::random::random_id()
    ));
    std::fs::write(&path, text).expect("config file written");
    path
}

/// A WebSocket connection made by hand, for frames a well-behaved client cannot send.
pub async fn raw_websocket(addr: SocketAddr) -> TcpStream {
    raw_websocket_over(TcpStream::connect(addr).await.unwrap()).await
}

/// Upgrades an open TCP connection to a WebSocket by hand.
pub async fn raw_websocket_over(mut stream: TcpStream) -> TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req =
        "GET /websocket HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "upgrade answered");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    stream
}

/// A masked client frame.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else if len < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(len as u64).to_be_bytes());
    }
    let mask = [1u8, 2, 3, 4];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The release binary run as a user runs it, its JSON log collected.
pub struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    pub log: Vec<String>,
    pub addr: SocketAddr,
    dir: std::path::PathBuf,
    /// Whether the data directory is this process's alone (removed when it stops).
    owns_dir: bool,
}

impl Binary {
    /// Starts `comet` (through `sh -c "<prefix> exec comet"` when a prefix such as a
    /// `ulimit` is given) on a free port with a fresh data directory and `envs`, and waits
    /// for it to listen.
    pub fn start(prefix: &str, envs: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "comet-bin-{}-{}",
            std::process::id(),
            comet::model::random::random_id()
        ));
        Self::start_in(dir, prefix, envs)
    }

    /// Like [`Binary::start`], on the data directory `dir` (a restart on what an earlier
    /// process left).
    pub fn start_in(dir: std::path::PathBuf, prefix: &str, envs: &[(&str, &str)]) -> Self {
        let bin = env!("CARGO_BIN_EXE_comet");
        let mut command = std::process::Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{prefix} exec {bin}"))
            .env("PORT", "0")
            .env("BIND_IP", "127.0.0.1")
            .env("COMET_DATA_DIR", &dir)
            .env("LOG_FORMAT", "json")
            .stderr(std::process::Stdio::piped());
        for (k, v) in envs {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                let _ = lines_tx.send(line);
            }
        });
        let mut log = Vec::new();
        let addr = loop {
            let line = match lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => line,
                Err(e) => panic!("comet did not start ({e}); its log:\n{}", log.join("\n")),
            };
            log.push(line.clone());
            if line.contains("comet listening") {
                let v: Json = serde_json::from_str(&line).unwrap();
                break v["fields"]["addr"].as_str().unwrap().parse().unwrap();
            }
        };
        Self {
            child,
            lines,
            log,
            addr,
            dir,
            owns_dir: true,
        }
    }

    /// Like [`Binary::start_in`], on a data directory other processes share (several
    /// instances on one embedded store): stopping this one leaves it.
    pub fn start_shared(dir: &std::path::Path, envs: &[(&str, &str)]) -> Self {
        let mut binary = Self::start_in(dir.to_owned(), "", envs);
        binary.owns_dir = false;
        binary
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory the process runs on.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// Stops the process and returns its whole log.
    pub fn stop(mut self) -> Vec<String> {
        self.halt()
    }

    /// Stops the process as an operator does (SIGTERM: a graceful shutdown), waits for it,
    /// and returns its whole log.
    pub fn terminate(mut self) -> Vec<String> {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.halt()
    }

    /// The log lines the process wrote since the last look.
    pub fn drain_log(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        &self.log
    }

    /// Kills the process outright (SIGKILL: no shutdown of any kind) and returns its data
    /// directory, left as the process left it.
    pub fn kill(mut self) -> std::path::PathBuf {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir.clone()
    }

    fn halt(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The reader thread ends at end of file: take every line it forwarded.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.log.push(line);
        }
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        std::mem::take(&mut self.log)
    }
}

/// A test that fails before `stop` leaves no server behind.
impl Drop for Binary {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            if self.owns_dir {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// (user id, auth token) for `X-User-Id` / `X-Auth-Token`.
pub type Auth = (String, String);

pub fn url(addr: SocketAddr, path: &str) -> String {
    format!("http://{addr}{path}")
}

pub async fn rest_call(
    addr: SocketAddr,
    method: reqwest::Method,
    path: &str,
    auth: Option<&Auth>,
    body: Option<Json>,
) -> (u16, Json) {
    let mut req = reqwest::Client::new().request(method, url(addr, path));
    if let Some((id, token)) = auth {
        req = req.header("X-User-Id", id).header("X-Auth-Token", token);
    }
    if let Some(body) = body {
        req = req
            .header("Content-Type", "application/json")
            .body(body.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Json::String(text)),
    )
}

pub async fn sign_in(addr: SocketAddr, user: &str, password: &str) -> Auth {
    let (status, body) = rest_call(
        addr,
        reqwest::Method::POST,
        "/api/v1/login",
        None,
        Some(json!({"user": user, "password": password})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    (
        body["data"]["userId"].as_str().unwrap().to_owned(),
        body["data"]["authToken"].as_str().unwrap().to_owned(),
    )
}

pub async fn sign_up(addr: SocketAddr, name: &str) -> Auth {
    let body = json!({"username": name, "email": format!("{name}@example.com"), "pass": "pass-word-1", "name": name});
    let (status, answer) = rest_call(
        addr,
        reqwest::Method::POST,
        "/api/v1/users.register",
        None,
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    sign_in(addr, name, "pass-word-1").await
}
