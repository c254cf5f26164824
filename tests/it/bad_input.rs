//! Bad input and misbehaving clients: each gets a clear answer, and the server keeps serving.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

use crate::common;

use common::{DdpClient, Received};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

async fn still_serving(server: &common::TestServer) {
    let (mut c, _) = DdpClient::connect(server).await;
    let (result, _) = c.call("alive", "echo", json!(["yes"])).await;
    assert_eq!(result["result"], "yes");
}

#[tokio::test]
async fn oversized_message_closes_with_1009_and_others_carry_on() {
    let server =
        common::spawn_server(common::test_settings(|c| c.max_message_bytes = Some(4096))).await;
    let (mut c, _) = DdpClient::connect(&server).await;
    let big = format!(
        r#"{{"msg":"method","id":"1","method":"echo","params":["{}"]}}"#,
        "x".repeat(10_000)
    );
    c.send_raw(&big).await;
    assert_eq!(
        c.next(Duration::from_secs(5)).await,
        Received::Closed(Some(1009))
    );
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_text_frame_closes_with_1007() {
    let server = common::spawn_default().await;
    let mut raw = common::raw_websocket(server.addr).await;
    raw.write_all(&common::client_frame(0x1, &[0xff, 0xfe, 0x22]))
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), raw.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    // A close frame (opcode 8) carrying 1007.
    assert!(n >= 4, "got {n} bytes");
    assert_eq!(buf[0] & 0x0f, 0x8);
    assert_eq!(u16::from_be_bytes([buf[2], buf[3]]), 1007);
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn client_that_never_reads_is_closed_as_slow_consumer() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.max_outbound_bytes = Some(256 * 1024);
    }))
    .await;
    let mut raw = common::raw_websocket(server.addr).await;
    let connect = json!({"msg":"connect","version":"1","support":["1"]}).to_string();
    raw.write_all(&common::client_frame(0x1, connect.as_bytes()))
        .await
        .unwrap();
    // 40 MB of documents, far beyond socket buffers and the 256 KiB queue cap; never read.
    let sub = json!({"msg":"sub","id":"f","name":"test.flood","params":[4000, 10000]}).to_string();
    raw.write_all(&common::client_frame(0x1, sub.as_bytes()))
        .await
        .unwrap();
    let closed = common::metric_reaches(
        &server,
        "comet_slow_consumers_closed_total",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    assert!(closed, "the slow consumer was closed");
    still_serving(&server).await;
    drop(raw);
    server.shutdown().await;
}

#[tokio::test]
async fn message_flood_closes_the_connection() {
    let server = common::spawn_default().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    // Block the queue, then pile up more than 5000 waiting messages.
    c.send(json!({"msg":"method","id":"block","method":"test.sleep","params":[3000]}))
        .await;
    for i in 0..5100 {
        c.send(json!({"msg":"unsub","id":format!("u{i}")})).await;
    }
    loop {
        match c.next(Duration::from_secs(5)).await {
            Received::Closed(code) => {
                assert_eq!(code, Some(1008));
                break;
            }
            Received::Message(_) => continue,
            Received::Timeout => panic!("flooding client was not closed"),
        }
    }
    still_serving(&server).await;
    server.shutdown().await;
}

#[tokio::test]
async fn abandoned_sockjs_polling_session_is_reaped() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.sockjs_disconnect_delay_ms = Some(200);
    }))
    .await;
    let (status, body) = common::http(server.addr, "POST", "/sockjs/1/abc/xhr", b"").await;
    assert_eq!((status, body.as_str()), (200, "o\n"));
    let connect =
        serde_json::to_string(
            &[json!({"msg":"connect","version":"1","support":["1"]}).to_string()],
        )
        .unwrap();
    let (status, _) = common::http(
        server.addr,
        "POST",
        "/sockjs/1/abc/xhr_send",
        connect.as_bytes(),
    )
    .await;
    assert_eq!(status, 204);
    let (status, body) = common::http(server.addr, "POST", "/sockjs/1/abc/xhr", b"").await;
    assert_eq!(status, 200);
    assert!(
        body.starts_with("a[") && body.contains("connected"),
        "{body}"
    );
    assert_eq!(common::metric(&server, "comet_sessions_open").await, 1.0);
    // Nobody polls again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, _) = common::http(
        server.addr,
        "POST",
        "/sockjs/1/abc/xhr_send",
        connect.as_bytes(),
    )
    .await;
    assert_eq!(status, 404, "the session is gone");
    assert_eq!(common::metric(&server, "comet_sessions_open").await, 0.0);
    server.shutdown().await;
}

#[tokio::test]
async fn xhr_send_rejects_bad_payloads() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.max_message_bytes = Some(2048);
    }))
    .await;
    common::http(server.addr, "POST", "/sockjs/1/s/xhr", b"").await;
    for (body, status, text) in [
        (&b""[..], 500, "Payload expected."),
        (&b"not json"[..], 500, "Broken JSON encoding."),
        (&b"[1,2]"[..], 500, "Broken JSON encoding."),
    ] {
        let (got, reply) = common::http(server.addr, "POST", "/sockjs/1/s/xhr_send", body).await;
        assert_eq!((got, reply.as_str()), (status, text));
    }
    let huge = format!("[\"{}\"]", "x".repeat(10_000));
    let (got, _) = common::http(server.addr, "POST", "/sockjs/1/s/xhr_send", huge.as_bytes()).await;
    assert_eq!(got, 413);
    server.shutdown().await;
}

#[tokio::test]
async fn broken_sockjs_websocket_framing_closes_with_a_reason() {
    let server = common::spawn_default().await;
    let url = format!("ws://{}/sockjs/1/abc/websocket", server.addr);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    use futures_util::{SinkExt, StreamExt};
    let open = ws.next().await.unwrap().unwrap();
    assert_eq!(open, Message::text("o"));
    ws.send(Message::text("{not json")).await.unwrap();
    let close = ws.next().await.unwrap().unwrap();
    assert!(close.to_text().unwrap().starts_with("c[1003,"), "{close:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_sends_close_frames_and_drains() {
    let server = common::spawn_default().await;
    let (mut c, _) = DdpClient::connect(&server).await;
    c.send(json!({"msg":"sub","id":"s","name":"test.docs"}))
        .await;
    for _ in 0..3 {
        c.recv().await;
    }
    server.hub.shutdown.cancel();
    assert_eq!(
        c.next(Duration::from_secs(5)).await,
        Received::Closed(Some(1001))
    );
    server.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_info_answer() {
    let server = common::spawn_default().await;
    let (status, body) = common::http(server.addr, "GET", "/health", b"").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = common::http(server.addr, "GET", "/api/info", b"").await;
    assert_eq!(status, 200);
    assert!(body.contains("\"version\""));
    let (mut c, _) = DdpClient::connect(&server).await;
    c.call("1", "echo", json!([1])).await;
    c.call("2", "nope", json!([])).await;
    assert_eq!(
        common::metric(&server, "comet_connections_open{transport=\"websocket\"}").await,
        1.0
    );
    assert_eq!(
        common::metric(&server, "comet_method_calls_total{outcome=\"ok\"}").await,
        1.0
    );
    assert_eq!(
        common::metric(&server, "comet_method_calls_total{outcome=\"not_found\"}").await,
        1.0
    );
    assert!(common::metric(&server, "comet_frames_out_total").await >= 5.0);
    // Latency by method: a registered name has its own series, any other folds into one.
    c.call("3", "made.up.1", json!([])).await;
    c.call("4", "made.up.2", json!([])).await;
    assert_eq!(
        common::metric(
            &server,
            "comet_method_duration_seconds_count{name=\"echo\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        common::metric(
            &server,
            "comet_method_duration_seconds_count{name=\"unknown\"}"
        )
        .await,
        3.0
    );
    c.send(json!({"msg":"sub","id":"s","name":"test.docs","params":[]}))
        .await;
    while c.recv_data().await["msg"] != "ready" {}
    assert_eq!(
        common::metric(
            &server,
            "comet_publication_start_duration_seconds_count{name=\"test.docs\"}"
        )
        .await,
        1.0
    );
    let (_, text) = common::http(server.addr, "GET", "/metrics", b"").await;
    assert!(
        !text.contains("made.up"),
        "client names never become labels"
    );
    assert!(common::metric(&server, "process_resident_memory_bytes").await > 1e6);
    assert!(common::metric(&server, "process_open_fds").await >= 3.0);
    assert!(common::metric(&server, "process_cpu_seconds_total").await > 0.0);
    assert!(
        text.contains("# TYPE comet_change_feed_lag_seconds histogram"),
        "{text}"
    );
    let (status, _) = common::http(server.addr, "GET", "/nope", b"").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn head_health_answers_like_get_without_a_body() {
    let server = common::spawn_default().await;
    let (status, body) = common::http(server.addr, "HEAD", "/health", b"").await;
    assert_eq!((status, body.as_str()), (200, ""));
    server.shutdown().await;
}

#[tokio::test]
async fn a_port_in_use_is_named_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let settings = common::test_settings(|c| {
        c.port = Some(port);
        c.bind_ip = Some("127.0.0.1".parse().unwrap());
    });
    let err = comet::app::bind(&settings).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
}
