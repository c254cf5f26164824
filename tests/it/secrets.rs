//! Passwords and tokens never leave comet except in the login result: not in its log (at
//! the most verbose level), not in `/metrics`, not in any other frame. The release binary
//! runs as a user runs it.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{Binary, DdpClient};
use serde_json::json;
use sha2::{Digest, Sha256};

const PASSWORD: &str = "Pa55-word-that-must-stay-hidden";

fn hex_digest(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn passwords_and_tokens_appear_only_in_the_login_result() {
    let comet = Binary::start(
        "",
        &[
            ("ADMIN_USERNAME", "boss"),
            ("ADMIN_PASS", PASSWORD),
            ("COMET_BCRYPT_COST", "4"),
            ("RUST_LOG", "trace"),
        ],
    );
    let addr = comet.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (token, frames, metrics) = rt.block_on(async {
        let mut c = DdpClient::open(&format!("ws://{addr}/websocket")).await;
        c.send(json!({"msg":"connect","version":"1","support":["1"]})).await;
        c.recv().await;
        let mut frames = c
            .call_seeing("1", "login", json!([{"user": {"username": "boss"}, "password": {"digest": hex_digest(PASSWORD), "algorithm": "sha-256"}}]))
            .await;
        let token = frames.last().unwrap()["result"]["token"].as_str().unwrap().to_owned();
        frames.pop();
        let mut d = DdpClient::open(&format!("ws://{addr}/websocket")).await;
        d.send(json!({"msg":"connect","version":"1","support":["1"]})).await;
        d.recv().await;
        let mut more = d.call_seeing("2", "login", json!([{"resume": token}])).await;
        more.pop();
        frames.extend(more);
        let body = json!({"user": "boss", "password": PASSWORD}).to_string();
        let (status, _) = common::http(addr, "POST", "/api/v1/login", body.as_bytes()).await;
        assert_eq!(status, 200);
        let (_, wrong) = common::http(addr, "POST", "/api/v1/login", json!({"user": "boss", "password": "not-it"}).to_string().as_bytes()).await;
        assert!(!wrong.contains("not-it"));
        let (_, metrics) = common::http(addr, "GET", "/metrics", b"").await;
        (token, frames, metrics)
    });
    let log = comet.stop().join("\n");
    let hashed = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(token.as_bytes()))
    };
    assert!(
        log.contains("session started"),
        "the most verbose log was written: {log}"
    );
    for (what, secret) in [
        ("password", PASSWORD.to_owned()),
        ("digest", hex_digest(PASSWORD)),
        ("token", token.clone()),
        ("token hash", hashed.clone()),
    ] {
        let leak: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(&secret))
            .take(2)
            .collect();
        assert!(leak.is_empty(), "the {what} is in the log: {leak:?}");
        assert!(!metrics.contains(&secret), "the {what} is in /metrics");
        for frame in &frames {
            assert!(
                !frame.to_string().contains(&secret),
                "the {what} is in {frame}"
            );
        }
    }
}

/// The cap on chatty libraries never raises their level: under `RUST_LOG=warn,comet=info`
/// a WebSocket session that is opened and dropped writes none of their debug lines
/// (`COMET_TEST_LIBRARY_LOG=debug` runs it with them on, to see that it notices them).
#[test]
fn the_cap_on_library_logs_never_raises_their_level() {
    let level = std::env::var("COMET_TEST_LIBRARY_LOG").unwrap_or_else(|_| "warn".into());
    let filter = format!("{level},comet=info");
    let comet = Binary::start("", &[("RUST_LOG", filter.as_str())]);
    let addr = comet.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = DdpClient::open(&format!("ws://{addr}/websocket")).await;
        c.send(json!({"msg":"connect","version":"1","support":["1"]}))
            .await;
        c.recv().await;
        c.send_message(tokio_tungstenite::tungstenite::Message::Close(None))
            .await;
        drop(c);
        // A socket torn down without a close handshake too.
        let raw = common::raw_websocket(addr).await;
        drop(raw);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    });
    let log = comet.stop();
    let library: Vec<&String> = log
        .iter()
        .filter(|l| {
            l.contains(r#""target":"tungstenite"#) || l.contains(r#""target":"tokio_tungstenite"#)
        })
        .collect();
    assert!(library.is_empty(), "library lines below warn: {library:?}");
    assert!(log.iter().any(|l| l.contains("comet listening")));
}
