//! Connections that hold resources without making progress, and more connections than the
//! server may hold: each stage times out, caps refuse with a clear answer and a metric, and
//! `/health` keeps answering.

#![allow(clippy::unwrap_used)] // test code

use crate::common;

use common::{DdpClient, Received};
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the server closes `stream` (EOF or reset); returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf))
            .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("still open after {limit:?}"),
        }
    }
}

async fn short_timeouts() -> common::TestServer {
    common::spawn_server(common::test_settings(|c| {
        c.request_head_timeout_ms = Some(400);
        c.request_body_timeout_ms = Some(400);
        c.connect_timeout_ms = Some(400);
    }))
    .await
}

#[tokio::test]
async fn a_silent_socket_and_an_idle_keep_alive_connection_are_closed() {
    let server = short_timeouts().await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    closed_within(&mut silent, Duration::from_secs(3)).await;

    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "answered first");
    closed_within(&mut idle, Duration::from_secs(3)).await;
    assert!(common::metric(&server, "comet_timeouts_total{stage=\"request_head\"}").await >= 2.0);
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_head_sent_slowly_or_cut_short_is_not_waited_for() {
    let server = short_timeouts().await;
    // Slowloris: a header every 100 ms, never the end of the head.
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    let writer = tokio::spawn(async move {
        for i in 0..60 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow
                .write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .await
                .is_err()
            {
                return true;
            }
        }
        false
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .unwrap()
            .unwrap(),
        "the server hung up on the slow head"
    );
    // A partial request line.
    let mut partial = TcpStream::connect(server.addr).await.unwrap();
    partial.write_all(b"GET /heal").await.unwrap();
    closed_within(&mut partial, Duration::from_secs(3)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_request_body_that_stops_arriving_is_answered_408() {
    let server = short_timeouts().await;
    // A SockJS session to send to, then a body that promises 100 bytes and sends 10.
    let (status, _) = common::http(server.addr, "POST", "/sockjs/1/s1/xhr", b"").await;
    assert_eq!(status, 200);
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /sockjs/1/s1/xhr_send HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n[\"0123456",
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert_eq!(
        common::metric(&server, "comet_timeouts_total{stage=\"request_body\"}").await,
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_websocket_that_never_sends_connect_is_closed() {
    let server = short_timeouts().await;
    let mut c = DdpClient::open(&server.ws_url()).await;
    let started = Instant::now();
    assert_eq!(
        c.next(Duration::from_secs(3)).await,
        Received::Closed(Some(1008))
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // One that connects at once is not affected, however long it stays.
    let (mut ok, _) = DdpClient::connect(&server).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (r, _) = ok.call("1", "echo", json!([1])).await;
    assert_eq!(r["result"], 1);
    assert_eq!(
        common::metric(&server, "comet_timeouts_total{stage=\"connect\"}").await,
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn sockjs_sessions_without_receiver_or_connect_are_reaped() {
    let server = short_timeouts().await;
    // Opened by a polling request; no receiver ever comes back.
    let (status, body) = common::http(server.addr, "POST", "/sockjs/1/gone/xhr", b"").await;
    assert_eq!((status, body.as_str()), (200, "o\n"));
    // A streaming receiver that never sends connect.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(
            b"POST /sockjs/1/mute/xhr_streaming HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        )
        .await
        .unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut got)).await;
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.contains("c[1008,\"No connect message in time\"]"),
        "{text}"
    );
    let deadline = Instant::now() + Duration::from_secs(3);
    while common::metric(&server, "comet_sockjs_sessions_open").await > 0.0 {
        assert!(Instant::now() < deadline, "sessions were not reaped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        common::metric(&server, "comet_timeouts_total{stage=\"sockjs_receiver\"}").await,
        1.0
    );
    server.shutdown().await;
}

#[tokio::test]
async fn sockjs_sessions_are_capped_per_address_and_in_total() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.sockjs_max_sessions = Some(5);
        c.sockjs_max_sessions_per_address = Some(3);
    }))
    .await;
    for i in 0..3 {
        let (status, _) =
            common::http(server.addr, "POST", &format!("/sockjs/1/a{i}/xhr"), b"").await;
        assert_eq!(status, 200);
    }
    let (status, body) = common::http(server.addr, "POST", "/sockjs/1/a3/xhr", b"").await;
    assert_eq!((status, body.as_str()), (503, "Too many SockJS sessions\n"));
    assert_eq!(
        common::metric(
            &server,
            "comet_refused_total{reason=\"sockjs_sessions_per_address\"}"
        )
        .await,
        1.0
    );
    // The same client address counts for 127.0.0.1 only: another loopback address has its own.
    for i in 0..2 {
        let mut stream = connect_from("127.0.0.2", server.addr).await;
        stream
            .write_all(
                format!("POST /sockjs/1/b{i}/xhr HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.unwrap();
        assert!(
            got.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&got)
        );
    }
    let mut stream = connect_from("127.0.0.2", server.addr).await;
    stream
        .write_all(b"POST /sockjs/1/b2/xhr HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).await.unwrap();
    assert!(got.starts_with(b"HTTP/1.1 503"), "over the total of 5");
    assert_eq!(
        common::metric(
            &server,
            "comet_refused_total{reason=\"sockjs_session_cap\"}"
        )
        .await,
        1.0
    );
    assert_eq!(
        common::metric(&server, "comet_sockjs_sessions_open").await,
        5.0
    );
    server.shutdown().await;
}

async fn connect_from(ip: &str, to: std::net::SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(std::net::SocketAddr::new(ip.parse().unwrap(), 0))
        .unwrap();
    socket.connect(to).await.unwrap()
}

#[tokio::test]
async fn over_the_connection_cap_health_answers_and_the_rest_gets_503() {
    let server = common::spawn_server(common::test_settings(|c| {
        c.max_connections = Some(8);
        // All from one address: no cap per address here (it has its own test).
        c.max_sessions_per_address = Some(0);
    }))
    .await;
    // Eight legitimate, long-lived WebSocket sessions fill the cap.
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(DdpClient::connect(&server).await.0);
    }
    // And a crowd of silent sockets beyond it.
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let (status, body) = common::http(server.addr, "GET", "/health", b"").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    assert!(
        common::metric(&server, "comet_refused_total{reason=\"connection_cap\"}").await >= 100.0
    );
    let (status, body) = common::http(server.addr, "GET", "/websocket", b"").await;
    assert_eq!(
        (status, body.as_str()),
        (503, "Server at capacity, retry later\n")
    );
    // The sessions in the cap carry on, and a slot freed is a slot taken again.
    let (r, _) = clients[0].call("1", "echo", json!(["still"])).await;
    assert_eq!(r["result"], "still");
    drop(silent);
    clients.pop();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio_tungstenite::connect_async(server.ws_url()).await {
            Ok(_) => break,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(err) => panic!("no slot came free: {err}"),
        }
    }
    server.shutdown().await;
}

/// The release binary under a real open-file limit: far more silent sockets than files,
/// yet `/health` answers and the log does not fill with accept errors.
#[test]
fn under_a_low_file_limit_health_keeps_answering() {
    let comet = common::Binary::start(
        "ulimit -n 256 &&",
        &[("COMET_REQUEST_HEAD_TIMEOUT_MS", "30000")],
    );
    let addr = comet.addr;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut silent = Vec::new();
        for _ in 0..400 {
            silent.push(TcpStream::connect(addr).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..3 {
            let (status, body) = common::http(addr, "GET", "/health", b"").await;
            assert_eq!((status, body.as_str()), (200, "ok\n"));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(silent);
    });
    let log = comet.stop();
    let cap_lines = log
        .iter()
        .filter(|l| l.contains("connection cap reached"))
        .count();
    let accept_errors = log.iter().filter(|l| l.contains("accept failed")).count();
    assert!(
        (1..=2).contains(&cap_lines),
        "cap logged once per period: {log:?}"
    );
    assert!(accept_errors <= 1, "{log:?}");
}
