//! Load generator for comet and the Node peer: raw DDP frames over WebSockets, latency
//! histograms, and the server's CPU and RSS read from `/proc`.
//!
//! `comet-bench idle  --url URL --pid PID --clients N --sub NAME [--hold-secs S]`
//! `comet-bench echo  --url URL --pid PID --clients C --inflight W [--secs S] [--warmup-secs S]`
//! `comet-bench fanout --url URL --pid PID --clients N --rate R` (S3)
//! `comet-bench mergebox --url URL --pid PID --clients N --rate R` (S4)
//! `comet-bench changes --url URL --pid PID --clients N --rate R --match-every M` (S7)
//! `comet-bench initial --url URL --pid PID --clients N --docs D --doc-bytes B` (S8)
//! `comet-bench login --url URL --pid PID --clients C --mode password|resume` (logins)
//! `comet-bench login-ping --url URL --pid PID --clients C --observers O` (logins, ping p99)
//! `comet-bench chat --url URL --pid PID --mode big|small --rooms R --room-size S --big B --rate M` (S9)
//! `comet-bench presence --url URL --pid PID --users N --watchers W --watch K --storm-secs S` (S10)
//!
//! Prints one JSON object per run on stdout.
#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]

use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser, Debug)]
struct Args {
    /// `idle` or `echo`.
    scenario: String,
    #[arg(long, default_value = "ws://127.0.0.1:3000/websocket")]
    url: String,
    /// The server's process id (for CPU and RSS).
    #[arg(long)]
    pid: u32,
    #[arg(long, default_value_t = 1)]
    clients: usize,
    #[arg(long, default_value_t = 1)]
    inflight: usize,
    #[arg(long, default_value = "bench.empty")]
    sub: String,
    #[arg(long, default_value_t = 10)]
    hold_secs: u64,
    #[arg(long, default_value_t = 10)]
    secs: u64,
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Source addresses 127.0.0.2.. to spread client ports over.
    #[arg(long, default_value_t = 8)]
    sources: u8,
    /// Fan-out: messages per second the sender sends.
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// Change-source cost: one event in this many is for a watched room (0: none).
    #[arg(long, default_value_t = 0)]
    match_every: u64,
    /// Large initial sets: documents to seed.
    #[arg(long, default_value_t = 5000)]
    docs: u64,
    /// Large initial sets: bytes of each document's body.
    #[arg(long, default_value_t = 10240)]
    doc_bytes: u64,
    /// Logins: `password` or `resume`.
    #[arg(long, default_value = "resume")]
    mode: String,
    /// Login ping: sessions that only ping, timing each pong.
    #[arg(long, default_value_t = 10)]
    observers: usize,
    /// Login ping: milliseconds between an observer's pings.
    #[arg(long, default_value_t = 20)]
    ping_every_ms: u64,
    /// Chat: small rooms, their members each, the big room's members (0: none).
    #[arg(long, default_value_t = 1000)]
    rooms: usize,
    #[arg(long, default_value_t = 10)]
    room_size: usize,
    /// Chat across instances (S12): the other instances' URLs, comma-separated. Members
    /// are spread over `url` and these; every sender stays on `url`.
    #[arg(long)]
    spread: Option<String>,
    /// Every process whose CPU and memory count (S12: each instance), comma-separated;
    /// `pid` alone when absent.
    #[arg(long)]
    pids: Option<String>,
    /// The ports of instances whose bus figures (`/metrics`) are read before and after
    /// the measured window (S12), comma-separated.
    #[arg(long)]
    metrics_ports: Option<String>,
    /// Chat: each message is preceded by its sender's typing event, which every member
    /// listens to (the events that travel over the bus between instances).
    #[arg(long)]
    typing: bool,
    #[arg(long, default_value_t = 5000)]
    big: usize,
    /// Chat: the administrator that owns and talks in the big room (it may send many).
    #[arg(long, default_value = "benchadmin")]
    admin: String,
    #[arg(long, default_value = "bench-admin-pass")]
    admin_pass: String,
    /// Presence: users in the storm, watching connections, users each one watches, seconds
    /// the connect storm is spread over, the server's grace before offline (ms).
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    #[arg(long, default_value_t = 1000)]
    watch: usize,
    #[arg(long, default_value_t = 10)]
    storm_secs: u64,
    #[arg(long, default_value_t = 3000)]
    grace_ms: u64,
    /// Label printed with the result.
    #[arg(long, default_value = "")]
    label: String,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// CPU time of every thread of `pid`, in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        })
        .sum()
}

async fn open(url: &str, source: IpAddr) -> Ws {
    let rest = url.trim_start_matches("ws://");
    let host_port = rest.split('/').next().unwrap();
    let addr: SocketAddr = host_port.parse().expect("url with ip:port");
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source, 0)).unwrap();
    let stream = socket.connect(addr).await.expect("tcp connect");
    stream.set_nodelay(true).unwrap();
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
        .await
        .expect("websocket handshake");
    ws
}

async fn recv_until(ws: &mut Ws, want: &str) {
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Text(t) = m {
            if t.contains(want) {
                return;
            }
            if t.contains("\"msg\":\"ping\"") {
                let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
            }
        }
    }
    panic!("connection closed while waiting for {want}");
}

/// Opens a socket and completes DDP's handshake.
async fn connected(url: &str, source: IpAddr) -> Ws {
    let mut ws = open(url, source).await;
    ws.send(Message::text(CONNECT)).await.unwrap();
    recv_until(&mut ws, "\"connected\"").await;
    ws
}

const CONNECT: &str = r#"{"msg":"connect","version":"1","support":["1","pre2","pre1"]}"#;

fn source(i: usize, n: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, 2 + (i % n.max(1) as usize) as u8])
}

async fn idle(args: &Args) -> serde_json::Value {
    let rss_before = rss_kib(args.pid);
    let cpu_before = cpu_ns(args.pid);
    // Phase 1: handshakes, 256 at a time.
    let started = Instant::now();
    let mut sockets: Vec<Ws> = Vec::with_capacity(args.clients);
    let mut pending = futures_util::stream::iter((0..args.clients).map(|i| {
        let url = args.url.clone();
        let src = source(i, args.sources);
        async move {
            let ws = connected(&url, src).await;
            ws
        }
    }))
    .buffer_unordered(256);
    while let Some(ws) = pending.next().await {
        sockets.push(ws);
    }
    let handshake_secs = started.elapsed().as_secs_f64();
    // Phase 2: one subscription each.
    let sub_started = Instant::now();
    let sub_name = args.sub.clone();
    let mut subscribed = futures_util::stream::iter(sockets.into_iter().map(|mut ws| {
        let msg = format!(r#"{{"msg":"sub","id":"s","name":"{sub_name}"}}"#);
        async move {
            ws.send(Message::text(msg)).await.unwrap();
            recv_until(&mut ws, "\"ready\"").await;
            ws
        }
    }))
    .buffer_unordered(256);
    let mut sockets = Vec::with_capacity(args.clients);
    while let Some(ws) = subscribed.next().await {
        sockets.push(ws);
    }
    let sub_secs = sub_started.elapsed().as_secs_f64();
    // Phase 3: hold, answering pings, sampling RSS at 2 Hz.
    let alive = Rc::new(RefCell::new(0usize));
    let local = tokio::task::LocalSet::new();
    for mut ws in sockets {
        let alive = alive.clone();
        *alive.borrow_mut() += 1;
        local.spawn_local(async move {
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m {
                    if t.contains("\"msg\":\"ping\"")
                        && ws.send(Message::text(r#"{"msg":"pong"}"#)).await.is_err()
                    {
                        break;
                    }
                }
            }
            *alive.borrow_mut() -= 1;
        });
    }
    let hold = Duration::from_secs(args.hold_secs);
    let cpu_hold_start = cpu_ns(args.pid);
    let samples = local
        .run_until(async {
            let mut samples = Vec::new();
            let t = Instant::now();
            while t.elapsed() < hold {
                tokio::time::sleep(Duration::from_millis(500)).await;
                samples.push(rss_kib(args.pid));
            }
            samples
        })
        .await;
    let cpu_hold = cpu_ns(args.pid) - cpu_hold_start;
    let mut late: Vec<u64> = samples[samples.len() / 2..].to_vec();
    late.sort_unstable();
    let rss_held = late.get(late.len() / 2).copied().unwrap_or(0);
    let still_open = *alive.borrow();
    serde_json::json!({
        "scenario": "idle", "label": args.label, "clients": args.clients, "sub": args.sub,
        "rss_before_kib": rss_before, "rss_held_kib": rss_held,
        "rss_per_session_bytes": ((rss_held.saturating_sub(rss_before)) * 1024) as f64 / args.clients as f64,
        "handshakes_per_sec": args.clients as f64 / handshake_secs,
        "subs_ready_per_sec": args.clients as f64 / sub_secs,
        "server_cpu_ms_setup": (cpu_hold_start - cpu_before) as f64 / 1e6,
        "server_cpu_pct_idle": cpu_hold as f64 / hold.as_nanos() as f64 * 100.0,
        "still_open": still_open,
    })
}

async fn echo(args: &Args) -> serde_json::Value {
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap(),
    ));
    let measuring = Rc::new(RefCell::new(false));
    let done = Rc::new(RefCell::new(0u64));
    // Calls answered with an error (a rate limit, say): counted apart, so a refusal is never
    // mistaken for a fast round trip.
    let refused = Rc::new(RefCell::new(0u64));
    let stop = Rc::new(RefCell::new(false));
    let local = tokio::task::LocalSet::new();
    let payload = r#"{"text":"hello world","n":12345,"at":{"$date":1700000000000}}"#;
    for i in 0..args.clients {
        let url = args.url.clone();
        let src = source(i, args.sources);
        let (histogram, measuring, done, stop, refused) = (
            histogram.clone(),
            measuring.clone(),
            done.clone(),
            stop.clone(),
            refused.clone(),
        );
        let inflight = args.inflight;
        local.spawn_local(async move {
            let ws = connected(&url, src).await;
            let (mut tx, mut rx) = ws.split();
            let mut sent_at: VecDeque<Instant> = VecDeque::new();
            let mut next_id = 0u64;
            let call = |id: u64| {
                format!(r#"{{"msg":"method","id":"{id}","method":"echo","params":[{payload}]}}"#)
            };
            for _ in 0..inflight {
                sent_at.push_back(Instant::now());
                tx.feed(Message::text(call(next_id))).await.unwrap();
                next_id += 1;
            }
            tx.flush().await.unwrap();
            while let Some(Ok(m)) = rx.next().await {
                let Message::Text(t) = m else { continue };
                if t.starts_with(r#"{"msg":"result""#) {
                    let t0 = sent_at.pop_front().unwrap();
                    if t.contains(r#""error":"#) {
                        *refused.borrow_mut() += 1;
                    }
                    if *measuring.borrow() {
                        let _ = histogram
                            .borrow_mut()
                            .record(t0.elapsed().as_nanos() as u64 / 100);
                        *done.borrow_mut() += 1;
                    }
                    if *stop.borrow() {
                        if sent_at.is_empty() {
                            break;
                        }
                        continue;
                    }
                    sent_at.push_back(Instant::now());
                    if tx.send(Message::text(call(next_id))).await.is_err() {
                        break;
                    }
                    next_id += 1;
                } else if t.contains("\"msg\":\"ping\"") {
                    let _ = tx.send(Message::text(r#"{"msg":"pong"}"#)).await;
                }
            }
        });
    }
    let secs = args.secs;
    let warmup = args.warmup_secs;
    let pid = args.pid;
    let (elapsed, cpu) = local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            *measuring.borrow_mut() = true;
            let cpu0 = cpu_ns(pid);
            let t0 = Instant::now();
            tokio::time::sleep(Duration::from_secs(secs)).await;
            *measuring.borrow_mut() = false;
            let r = (t0.elapsed(), cpu_ns(pid) - cpu0);
            *stop.borrow_mut() = true;
            r
        })
        .await;
    let h = histogram.borrow();
    let calls = *done.borrow();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 10_000.0;
    serde_json::json!({
        "scenario": "echo", "label": args.label, "clients": args.clients, "inflight": args.inflight,
        "calls": calls, "calls_per_sec": calls as f64 / elapsed.as_secs_f64(),
        "refused": *refused.borrow(),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        "server_cpu_us_per_call": if calls > 0 { cpu as f64 / 1e3 / calls as f64 } else { 0.0 },
        "server_cpu_pct": cpu as f64 / elapsed.as_nanos() as f64 * 100.0,
        "rss_kib": rss_kib(pid),
    })
}

fn now_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// S3: `clients` subscribers of `bench.room`; one sender calls `bench.send` `rate` times a
/// second; each subscriber measures send → receive from the timestamp in the document.
async fn fanout(args: &Args) -> serde_json::Value {
    let histogram = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap(),
    ));
    let measuring = Rc::new(RefCell::new(false));
    let delivered = Rc::new(RefCell::new(0u64));
    let local = tokio::task::LocalSet::new();
    let ready = Rc::new(RefCell::new(0usize));
    let mut opened = futures_util::stream::iter((0..args.clients).map(|i| {
        let url = args.url.clone();
        let src = source(i, args.sources);
        async move {
            let mut ws = connected(&url, src).await;
            ws.send(Message::text(
                r#"{"msg":"sub","id":"r","name":"bench.room"}"#,
            ))
            .await
            .unwrap();
            recv_until(&mut ws, "\"ready\"").await;
            ws
        }
    }))
    .buffer_unordered(256);
    let mut sockets = Vec::new();
    while let Some(ws) = opened.next().await {
        sockets.push(ws);
    }
    for mut ws in sockets {
        let (histogram, measuring, delivered, ready) = (
            histogram.clone(),
            measuring.clone(),
            delivered.clone(),
            ready.clone(),
        );
        *ready.borrow_mut() += 1;
        local.spawn_local(async move {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                if t.starts_with(r#"{"msg":"added""#) {
                    if !*measuring.borrow() {
                        continue;
                    }
                    if let Some(pos) = t.find("\"ts\":") {
                        let rest = &t[pos + 5..];
                        let end = rest
                            .find(|c: char| c != '.' && !c.is_ascii_digit())
                            .unwrap_or(rest.len());
                        if let Ok(ts) = rest[..end].parse::<f64>() {
                            let latency_us = ((now_ms() - ts) * 1000.0).max(1.0) as u64;
                            let _ = histogram.borrow_mut().record(latency_us);
                            *delivered.borrow_mut() += 1;
                        }
                    }
                } else if t.contains("\"msg\":\"ping\"") {
                    let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
                }
            }
        });
    }
    let (url, rate, secs, warmup, pid) = (
        args.url.clone(),
        args.rate.max(1),
        args.secs,
        args.warmup_secs,
        args.pid,
    );
    let sent = Rc::new(RefCell::new(0u64));
    let (elapsed, cpu) = local
        .run_until({
            let sent = sent.clone();
            let measuring = measuring.clone();
            async move {
                let sender = connected(&url, IpAddr::from([127, 0, 0, 1])).await;
                let (mut tx, mut rx) = sender.split();
                tokio::task::spawn_local(async move { while let Some(Ok(_)) = rx.next().await {} });
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let start = Instant::now();
                let mut measure_start = None;
                let mut cpu0 = 0;
                let mut n = 0u64;
                loop {
                    tick.tick().await;
                    let t = start.elapsed();
                    if measure_start.is_none() && t >= Duration::from_secs(warmup) {
                        *measuring.borrow_mut() = true;
                        measure_start = Some(Instant::now());
                        cpu0 = cpu_ns(pid);
                    }
                    if let Some(ms) = measure_start {
                        if ms.elapsed() >= Duration::from_secs(secs) {
                            // Let the last messages arrive before closing the window.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            *measuring.borrow_mut() = false;
                            return (ms.elapsed(), cpu_ns(pid) - cpu0);
                        }
                        *sent.borrow_mut() += 1;
                    }
                    n += 1;
                    let msg = format!(r#"{{"msg":"method","id":"{n}","method":"bench.send","params":["hello, this is a chat message of about a hundred bytes in all",{:.3}]}}"#, now_ms());
                    if tx.send(Message::text(msg)).await.is_err() {
                        return (start.elapsed(), 0);
                    }
                }
            }
        })
        .await;
    let h = histogram.borrow();
    let deliveries = *delivered.borrow();
    let expected = *sent.borrow() * args.clients as u64;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    serde_json::json!({
        "scenario": "fanout", "label": args.label, "clients": args.clients, "rate": rate,
        "deliveries": deliveries, "expected_deliveries": expected,
        "deliveries_per_sec": deliveries as f64 / elapsed.as_secs_f64(),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": h.max() as f64 / 1000.0,
        "server_cpu_us_per_delivery": if deliveries > 0 { cpu as f64 / 1e3 / deliveries as f64 } else { 0.0 },
        "server_cpu_pct": cpu as f64 / elapsed.as_nanos() as f64 * 100.0,
        "rss_kib": rss_kib(pid),
        "subscribers_open": *ready.borrow(),
    })
}

/// Connects `n` clients with `connect` and sends each the subscriptions `subs(i)` gives,
/// returning once every one is ready.
async fn connect_and_subscribe(args: &Args, subs: impl Fn(usize) -> Vec<String>) -> Vec<Ws> {
    let subs = &subs;
    let mut opened = futures_util::stream::iter((0..args.clients).map(|i| {
        let url = args.url.clone();
        let src = source(i, args.sources);
        async move {
            let mut ws = connected(&url, src).await;
            let frames = subs(i);
            let want = frames.len();
            for frame in frames {
                ws.send(Message::text(frame)).await.unwrap();
            }
            let mut ready = 0;
            while ready < want {
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.contains("\"msg\":\"ready\"") => ready += 1,
                    Some(Ok(Message::Text(t))) if t.contains("\"msg\":\"ping\"") => {
                        let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
                    }
                    Some(Ok(_)) => {}
                    _ => panic!("connection closed before ready"),
                }
            }
            ws
        }
    }))
    .buffer_unordered(64);
    let mut sockets = Vec::new();
    while let Some(ws) = opened.next().await {
        sockets.push(ws);
    }
    sockets
}

/// Counts data frames (and their bytes) on every socket while `measuring`, answering pings.
fn count_frames(
    local: &tokio::task::LocalSet,
    sockets: Vec<Ws>,
    prefix: &'static str,
    measuring: &Rc<RefCell<bool>>,
) -> Rc<RefCell<(u64, u64)>> {
    let counted = Rc::new(RefCell::new((0u64, 0u64)));
    for mut ws in sockets {
        let (counted, measuring) = (counted.clone(), measuring.clone());
        local.spawn_local(async move {
            while let Some(Ok(m)) = ws.next().await {
                let Message::Text(t) = m else { continue };
                if t.starts_with(prefix) {
                    if *measuring.borrow() {
                        let mut c = counted.borrow_mut();
                        c.0 += 1;
                        c.1 += t.len() as u64;
                    }
                } else if t.contains("\"msg\":\"ping\"") {
                    let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
                }
            }
        });
    }
    counted
}

/// Calls `method` with `params(n)` `rate` times a second for the warm-up and the measured
/// window, each call waiting for the previous result; returns (calls measured, elapsed, CPU ns).
async fn drive(
    args: &Args,
    measuring: Rc<RefCell<bool>>,
    method: &str,
    mut params: impl FnMut(u64) -> String,
) -> (u64, Duration, u64) {
    let mut driver = connected(&args.url, IpAddr::from([127, 0, 0, 1])).await;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate.max(1) as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let start = Instant::now();
    let mut window: Option<(Instant, u64, u64)> = None;
    let mut n = 0u64;
    loop {
        tick.tick().await;
        if window.is_none() && start.elapsed() >= Duration::from_secs(args.warmup_secs) {
            *measuring.borrow_mut() = true;
            window = Some((Instant::now(), cpu_ns(args.pid), n));
        }
        if let Some((at, cpu0, n0)) = window {
            if at.elapsed() >= Duration::from_secs(args.secs) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                *measuring.borrow_mut() = false;
                return (n - n0, at.elapsed(), cpu_ns(args.pid) - cpu0);
            }
        }
        n += 1;
        let frame = format!(
            r#"{{"msg":"method","id":"{n}","method":"{method}","params":{}}}"#,
            params(n)
        );
        driver.send(Message::text(frame)).await.unwrap();
        recv_until(&mut driver, "\"msg\":\"result\"").await;
    }
}

/// S4: each client subscribes to 5 consecutive of 20 sets of 200 documents overlapping by
/// half (600 distinct documents a session); then `bench.touch` changes one field of a random
/// document `rate` times a second.
async fn mergebox(args: &Args) -> serde_json::Value {
    const DOCS_PER_SESSION: u64 = 600;
    let before = connect_and_subscribe(args, |_| Vec::new()).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = rss_kib(args.pid);
    drop(before);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sockets = connect_and_subscribe(args, |i| {
        (0..5)
            .map(|j| {
                format!(
                    r#"{{"msg":"sub","id":"s{j}","name":"bench.set","params":[{}]}}"#,
                    (i + j) % 20
                )
            })
            .collect()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_subscribed = rss_kib(args.pid);
    let local = tokio::task::LocalSet::new();
    let measuring = Rc::new(RefCell::new(false));
    let counted = count_frames(&local, sockets, r#"{"msg":"changed""#, &measuring);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let (updates, elapsed, cpu) = local
        .run_until(drive(args, measuring.clone(), "bench.touch", move |n| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            format!("[{},{},{n}]", seed % 2000, (seed >> 20) % 5)
        }))
        .await;
    let (frames, bytes) = *counted.borrow();
    let rss_end = rss_kib(args.pid);
    let pairs = args.clients as u64 * DOCS_PER_SESSION;
    serde_json::json!({
        "scenario": "mergebox", "label": args.label, "clients": args.clients, "rate": args.rate,
        "rss_connected_kib": rss_connected, "rss_subscribed_kib": rss_subscribed,
        "rss_end_kib": rss_end,
        // Against the connected-but-unsubscribed baseline: what the mergebox views cost.
        "bytes_per_session_doc": (rss_subscribed.saturating_sub(rss_connected) * 1024) as f64 / pairs as f64,
        "updates": updates, "updates_per_sec": updates as f64 / elapsed.as_secs_f64(),
        "changed_frames": frames, "changed_per_sec": frames as f64 / elapsed.as_secs_f64(),
        "changed_per_update": if updates > 0 { frames as f64 / updates as f64 } else { 0.0 },
        "bytes_per_changed": if frames > 0 { bytes as f64 / frames as f64 } else { 0.0 },
        "server_cpu_us_per_frame": if frames > 0 { cpu as f64 / 1e3 / frames as f64 } else { 0.0 },
        "server_cpu_pct": cpu as f64 / elapsed.as_nanos() as f64 * 100.0,
    })
}

/// S7: `clients` each watch their own room; `bench.events` feeds `rate` batches of 100 change
/// events a second, one in `match_every` for a watched room.
async fn changes(args: &Args) -> serde_json::Value {
    const BATCH: u64 = 100;
    let sockets = connect_and_subscribe(args, |i| {
        vec![format!(
            r#"{{"msg":"sub","id":"w","name":"bench.watch","params":["room{i}"]}}"#
        )]
    })
    .await;
    let local = tokio::task::LocalSet::new();
    let measuring = Rc::new(RefCell::new(false));
    let counted = count_frames(&local, sockets, r#"{"msg":""#, &measuring);
    let every = args.match_every;
    let (calls, elapsed, cpu) = local
        .run_until(drive(args, measuring.clone(), "bench.events", move |n| {
            format!("[{BATCH},{every},{}]", n * BATCH)
        }))
        .await;
    let events = calls * BATCH;
    let (frames, _) = *counted.borrow();
    serde_json::json!({
        "scenario": "changes", "label": args.label, "clients": args.clients, "match_every": every,
        "events": events, "events_per_sec": events as f64 / elapsed.as_secs_f64(),
        "frames_delivered": frames,
        "server_cpu_us_per_event": if events > 0 { cpu as f64 / 1e3 / events as f64 } else { 0.0 },
        "server_cpu_pct": cpu as f64 / elapsed.as_nanos() as f64 * 100.0,
    })
}

/// S8: `bench.seed` fills `bench_initial` with `docs` documents of `doc_bytes`; then every
/// client subscribes to all of them at once and reads as fast as it can. Reports the time
/// until the last client had `ready`, what each received, and the server's peak RSS.
async fn initial(args: &Args) -> serde_json::Value {
    let mut control = connected(&args.url, IpAddr::from([127, 0, 0, 1])).await;
    let seed = format!(
        r#"{{"msg":"method","id":"seed","method":"bench.seed","params":[{},{}]}}"#,
        args.docs, args.doc_bytes
    );
    control.send(Message::text(seed)).await.unwrap();
    recv_until(&mut control, "\"updated\"").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_before = rss_kib(args.pid);
    let peak = Rc::new(RefCell::new(rss_before));
    let sampling = Rc::new(RefCell::new(true));
    let local = tokio::task::LocalSet::new();
    {
        let (peak, sampling, pid) = (peak.clone(), sampling.clone(), args.pid);
        local.spawn_local(async move {
            while *sampling.borrow() {
                let now = rss_kib(pid);
                let highest = (*peak.borrow()).max(now);
                *peak.borrow_mut() = highest;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    let cpu_before = cpu_ns(args.pid);
    let started = Instant::now();
    let received = local
        .run_until(async {
            let readers = futures_util::stream::iter((0..args.clients).map(|i| {
                let url = args.url.clone();
                let src = source(i, args.sources);
                async move {
                    let mut ws = connected(&url, src).await;
                    ws.send(Message::text(
                        r#"{"msg":"sub","id":"all","name":"bench.initial","params":[]}"#,
                    ))
                    .await
                    .unwrap();
                    let (mut docs, mut bytes) = (0u64, 0u64);
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(t))) => {
                                bytes += t.len() as u64;
                                if t.starts_with(r#"{"msg":"added""#) {
                                    docs += 1;
                                } else if t.contains("\"msg\":\"ready\"") {
                                    break;
                                } else if t.contains("\"msg\":\"ping\"") {
                                    let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
                                }
                            }
                            Some(Ok(_)) => {}
                            other => panic!("connection ended before ready: {other:?}"),
                        }
                    }
                    (docs, bytes, ws)
                }
            }))
            .buffer_unordered(args.clients.max(1));
            readers.collect::<Vec<_>>().await
        })
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu_ns(args.pid) - cpu_before;
    *sampling.borrow_mut() = false;
    let rss_after = rss_kib(args.pid);
    let complete = received.iter().filter(|(d, _, _)| *d == args.docs).count();
    let bytes: u64 = received.iter().map(|(_, b, _)| b).sum();
    let peak = *peak.borrow();
    serde_json::json!({
        "scenario": "initial", "label": args.label, "clients": args.clients,
        "docs": args.docs, "doc_bytes": args.doc_bytes,
        "clients_complete": complete,
        "mb_per_client": bytes as f64 / args.clients.max(1) as f64 / 1e6,
        "secs_to_last_ready": elapsed.as_secs_f64(),
        "delivered_mb_per_sec": bytes as f64 / 1e6 / elapsed.as_secs_f64(),
        "rss_before_kib": rss_before, "rss_peak_kib": peak, "rss_after_kib": rss_after,
        "rss_peak_over_before_mb": peak.saturating_sub(rss_before) as f64 / 1024.0,
        "server_cpu_secs": cpu as f64 / 1e9,
    })
}

/// The SHA-256 hex digest a Meteor client sends for a password.
fn digest(password: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(password.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Reads frames until the `result` of method `id`, answering pings; its text.
async fn result_of(ws: &mut Ws, id: &str) -> String {
    let want = format!(r#""id":"{id}""#);
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if t.contains(r#""msg":"result""#) && t.contains(&want) {
            return t.to_string();
        }
        if t.contains(r#""msg":"ping""#) {
            let _ = ws.send(Message::text(r#"{"msg":"pong"}"#)).await;
        }
    }
    panic!("connection closed while waiting for the result of {id}");
}

/// A connection with a user of its own (made by `createUser`): the socket, the login
/// request the scenario repeats, and the method id counter.
async fn login_client(url: &str, src: IpAddr, run: &str, i: usize, mode: &str) -> (Ws, String) {
    let mut ws = connected(url, src).await;
    let username = format!("bench-{run}-{i}");
    let password = serde_json::json!({"digest": digest(&username), "algorithm": "sha-256"});
    let create = serde_json::json!({"msg": "method", "id": "create", "method": "createUser",
        "params": [{"username": username, "password": password}]});
    ws.send(Message::text(create.to_string())).await.unwrap();
    let reply: serde_json::Value =
        serde_json::from_str(&result_of(&mut ws, "create").await).unwrap();
    let token = reply["result"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("createUser failed: {reply}"))
        .to_owned();
    let request = if mode == "password" {
        serde_json::json!({"user": {"username": username}, "password": password})
    } else {
        serde_json::json!({"resume": token})
    };
    (ws, request.to_string())
}

/// Shared counters of a login run.
struct LoginTally {
    histogram: RefCell<Histogram<u64>>,
    measuring: RefCell<bool>,
    stop: RefCell<bool>,
    done: RefCell<u64>,
    failed: RefCell<u64>,
    /// Connections whose user exists and whose logins have begun.
    ready: RefCell<usize>,
}

impl LoginTally {
    fn new() -> Rc<Self> {
        Rc::new(LoginTally {
            histogram: RefCell::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()),
            measuring: RefCell::new(false),
            stop: RefCell::new(false),
            done: RefCell::new(0),
            failed: RefCell::new(0),
            ready: RefCell::new(0),
        })
    }

    /// Waits until every one of `clients` connections has its user.
    async fn all_ready(&self, clients: usize) {
        while *self.ready.borrow() < clients {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Spawns `clients` connections that log in back to back until `tally.stop`.
fn spawn_logins(local: &tokio::task::LocalSet, args: &Args, tally: &Rc<LoginTally>) {
    let run = format!("{:x}", std::process::id() ^ (now_ms() as u32));
    for i in 0..args.clients {
        let (url, src, mode, run) = (
            args.url.clone(),
            source(i, args.sources),
            args.mode.clone(),
            run.clone(),
        );
        let tally = tally.clone();
        local.spawn_local(async move {
            let (mut ws, request) = login_client(&url, src, &run, i, &mode).await;
            *tally.ready.borrow_mut() += 1;
            let mut n = 0u64;
            while !*tally.stop.borrow() {
                let id = format!("l{n}");
                n += 1;
                let frame = format!(
                    r#"{{"msg":"method","id":"{id}","method":"login","params":[{request}]}}"#
                );
                let t0 = Instant::now();
                if ws.send(Message::text(frame)).await.is_err() {
                    break;
                }
                let reply = result_of(&mut ws, &id).await;
                if *tally.measuring.borrow() {
                    if reply.contains(r#""error""#) {
                        *tally.failed.borrow_mut() += 1;
                    } else {
                        let _ = tally
                            .histogram
                            .borrow_mut()
                            .record(t0.elapsed().as_nanos() as u64 / 100);
                        *tally.done.borrow_mut() += 1;
                    }
                }
            }
        });
    }
}

/// Logins: `clients` connections, each with its own user, log in back to back (password or
/// resume token); logins per second, round trip, and the server's CPU per login.
async fn login(args: &Args) -> serde_json::Value {
    let tally = LoginTally::new();
    let local = tokio::task::LocalSet::new();
    spawn_logins(&local, args, &tally);
    let (secs, warmup, pid, clients) = (args.secs, args.warmup_secs, args.pid, args.clients);
    let (elapsed, cpu) = local
        .run_until(async {
            tally.all_ready(clients).await;
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            *tally.measuring.borrow_mut() = true;
            let (cpu0, t0) = (cpu_ns(pid), Instant::now());
            tokio::time::sleep(Duration::from_secs(secs)).await;
            *tally.measuring.borrow_mut() = false;
            *tally.stop.borrow_mut() = true;
            (t0.elapsed(), cpu_ns(pid) - cpu0)
        })
        .await;
    let h = tally.histogram.borrow();
    let logins = *tally.done.borrow();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 10_000.0;
    serde_json::json!({
        "scenario": "login", "label": args.label, "clients": args.clients, "mode": args.mode,
        "logins": logins, "failed": *tally.failed.borrow(),
        "logins_per_sec": logins as f64 / elapsed.as_secs_f64(),
        "p50_ms": ms(0.5), "p99_ms": ms(0.99),
        "server_cpu_us_per_login": if logins > 0 { cpu as f64 / 1e3 / logins as f64 } else { 0.0 },
        "rss_kib": rss_kib(pid),
    })
}

/// Logins: `observers` sessions ping every `ping_every_ms`; their pong round trips are measured
/// for `secs` with no logins, then for `secs` while `clients` connections log in back to
/// back with passwords. The question: do logins slow everyone else?
async fn login_ping(args: &Args) -> serde_json::Value {
    let phase = Rc::new(RefCell::new(0u8)); // 0 warm-up, 1 quiet, 2 under logins, 3 done
    let quiet = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap(),
    ));
    let loaded = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap(),
    ));
    let local = tokio::task::LocalSet::new();
    for i in 0..args.observers {
        let (url, src, every) = (
            args.url.clone(),
            source(i, args.sources),
            args.ping_every_ms,
        );
        let (phase, quiet, loaded) = (phase.clone(), quiet.clone(), loaded.clone());
        local.spawn_local(async move {
            let mut ws = connected(&url, src).await;
            let mut n = 0u64;
            // Spread the observers' pings over the interval.
            tokio::time::sleep(Duration::from_millis(every * i as u64 / 10)).await;
            while *phase.borrow() < 3 {
                let id = format!("p{n}");
                n += 1;
                let t0 = Instant::now();
                ws.send(Message::text(format!(r#"{{"msg":"ping","id":"{id}"}}"#)))
                    .await
                    .unwrap();
                let want = format!(r#""id":"{id}""#);
                loop {
                    let Some(Ok(Message::Text(t))) = ws.next().await else {
                        return;
                    };
                    if t.contains(r#""msg":"pong""#) && t.contains(&want) {
                        break;
                    }
                }
                let took = t0.elapsed().as_nanos() as u64 / 100;
                match *phase.borrow() {
                    1 => drop(quiet.borrow_mut().record(took)),
                    2 => drop(loaded.borrow_mut().record(took)),
                    _ => {}
                }
                tokio::time::sleep(Duration::from_millis(every)).await;
            }
        });
    }
    let tally = LoginTally::new();
    let (secs, warmup) = (args.secs, args.warmup_secs);
    local
        .run_until(async {
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            *phase.borrow_mut() = 1;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            *phase.borrow_mut() = 0;
            let mut login_args = Args::parse_from(["comet-bench", "login", "--pid", "0"]);
            login_args.url = args.url.clone();
            login_args.clients = args.clients;
            login_args.sources = args.sources;
            login_args.mode = "password".into();
            spawn_logins(&local, &login_args, &tally);
            // Every login connection made and its user created before measuring.
            tally.all_ready(login_args.clients).await;
            tokio::time::sleep(Duration::from_secs(warmup)).await;
            *tally.measuring.borrow_mut() = true;
            *phase.borrow_mut() = 2;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            *tally.measuring.borrow_mut() = false;
            *phase.borrow_mut() = 3;
            *tally.stop.borrow_mut() = true;
        })
        .await;
    let (q, l) = (quiet.borrow(), loaded.borrow());
    let ms = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p) as f64 / 10_000.0;
    serde_json::json!({
        "scenario": "login-ping", "label": args.label, "clients": args.clients,
        "observers": args.observers,
        "pings_quiet": q.len(), "pings_loaded": l.len(),
        "ping_p50_quiet_ms": ms(&q, 0.5), "ping_p99_quiet_ms": ms(&q, 0.99),
        "ping_p50_loaded_ms": ms(&l, 0.5), "ping_p99_loaded_ms": ms(&l, 0.99),
        "ping_p99_rise_ms": ms(&l, 0.99) - ms(&q, 0.99),
        "logins_during": *tally.done.borrow(), "logins_failed": *tally.failed.borrow(),
        "logins_per_sec": *tally.done.borrow() as f64 / secs as f64,
    })
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let result = runtime.block_on(async {
        match args.scenario.as_str() {
            "idle" => idle(&args).await,
            "echo" => echo(&args).await,
            "fanout" => fanout(&args).await,
            "mergebox" => mergebox(&args).await,
            "changes" => changes(&args).await,
            "initial" => initial(&args).await,
            "login" => login(&args).await,
            "login-ping" => login_ping(&args).await,
            "chat" => chat(&args).await,
            "presence" => presence(&args).await,
            other => {
                eprintln!("unknown scenario {other}; use idle or echo");
                std::process::exit(2);
            }
        }
    });
    println!("{result}");
}

/// Calls `method` with `params` on `ws` and returns the result frame as JSON.
async fn call_on(
    ws: &mut Ws,
    id: &str,
    method: &str,
    params: serde_json::Value,
) -> serde_json::Value {
    let frame = serde_json::json!({"msg": "method", "id": id, "method": method, "params": params});
    ws.send(Message::text(frame.to_string())).await.unwrap();
    serde_json::from_str(&result_of(ws, id).await).unwrap()
}

/// A connection logged in as a new user `name` (password = its name).
async fn chat_user(url: &str, src: IpAddr, name: String) -> Ws {
    let mut ws = connected(url, src).await;
    let password = serde_json::json!({"digest": digest(&name), "algorithm": "sha-256"});
    let reply = call_on(
        &mut ws,
        "c",
        "createUser",
        serde_json::json!([{"username": name, "email": format!("{name}@bench.example"), "password": password}]),
    )
    .await;
    assert!(reply.get("result").is_some(), "createUser failed: {reply}");
    ws
}

/// The processes measured: `pids` when given, else `pid`.
fn measured_pids(args: &Args) -> Vec<u32> {
    match &args.pids {
        Some(list) => list
            .split(',')
            .filter_map(|p| p.trim().parse().ok())
            .collect(),
        None => vec![args.pid],
    }
}

/// Each instance's bus figures: (events published, events received), from `/metrics`.
async fn bus_figures(ports: &[u16]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for port in ports {
        let mut text = String::new();
        if let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", *port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let ask = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            if stream.write_all(ask.as_bytes()).await.is_ok() {
                let _ = stream.read_to_string(&mut text).await;
            }
        }
        let figure = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        out.push((
            figure("comet_bus_published_total "),
            figure("comet_bus_received_total "),
        ));
    }
    out
}

/// The room id of a creation's result.
fn rid_of(reply: &serde_json::Value) -> String {
    reply["result"]["rid"]
        .as_str()
        .unwrap_or_else(|| panic!("createChannel failed: {reply}"))
        .to_owned()
}

/// What the receivers of a chat run count.
struct ChatTally {
    deliveries: RefCell<Histogram<u64>>,
    rtt: RefCell<Histogram<u64>>,
    /// Per message (by its send time's bits): deliveries seen and the slowest.
    last: RefCell<std::collections::HashMap<u64, (u32, u64)>>,
    measuring: RefCell<bool>,
    delivered: RefCell<u64>,
}

/// Reads one member's frames: each message's latency from the send time in its text, and
/// (for a sender) each `sendMessage` round trip from the time in its method id.
async fn chat_reader(
    mut rx: futures_util::stream::SplitStream<Ws>,
    tx: Option<Rc<tokio::sync::Mutex<futures_util::stream::SplitSink<Ws, Message>>>>,
    tally: Rc<ChatTally>,
) {
    while let Some(Ok(m)) = rx.next().await {
        let Message::Text(t) = m else { continue };
        let measuring = *tally.measuring.borrow();
        // A method result carries the stored message too: looked at first.
        const RESULT: &str = r#""msg":"result","id":"m"#;
        const MESSAGE: &str = r#""msg":"t:"#;
        if let Some(pos) = t.find(RESULT) {
            if measuring {
                let rest = &t[pos + RESULT.len()..];
                let end = rest.find('"').unwrap_or(rest.len());
                if let Ok(sent) = rest[..end].parse::<f64>() {
                    let us = ((now_ms() - sent) * 1000.0).max(1.0) as u64;
                    let _ = tally.rtt.borrow_mut().record(us);
                }
            }
        } else if let Some(pos) = t.find(MESSAGE) {
            if !measuring {
                continue;
            }
            let rest = &t[pos + MESSAGE.len()..];
            let end = rest.find('"').unwrap_or(rest.len());
            if let Ok(sent) = rest[..end].parse::<f64>() {
                let us = ((now_ms() - sent) * 1000.0).max(1.0) as u64;
                let _ = tally.deliveries.borrow_mut().record(us);
                *tally.delivered.borrow_mut() += 1;
                let mut last = tally.last.borrow_mut();
                let entry = last.entry(sent.to_bits()).or_insert((0, 0));
                entry.0 += 1;
                entry.1 = entry.1.max(us);
            }
        } else if t.contains(r#""msg":"ping""#) {
            if let Some(tx) = &tx {
                let _ = tx
                    .lock()
                    .await
                    .send(Message::text(r#"{"msg":"pong"}"#))
                    .await;
            }
        }
    }
}

/// S9, the chat path: `rooms` rooms of `room_size` members and one room of `big` members,
/// every member listening to its room on `stream-room-messages`. `--mode big`: the
/// administrator sends `rate` messages a second to the big room; `--mode small`: `rate`
/// messages a second across the small rooms, each from the room's owner. Latency is from
/// `sendMessage` to each delivery, and to the last member of each message.
async fn chat(args: &Args) -> serde_json::Value {
    let run = format!("{:x}", std::process::id() ^ (now_ms() as u32));
    let big_mode = args.mode == "big";
    let members = if big_mode {
        args.big
    } else {
        args.rooms * args.room_size
    };
    // The administrator: logged in (comet's first start made it; the peer makes it now).
    let mut admin = connected(&args.url, IpAddr::from([127, 0, 0, 1])).await;
    let password = serde_json::json!({"digest": digest(&args.admin_pass), "algorithm": "sha-256"});
    let login = call_on(
        &mut admin,
        "a",
        "login",
        serde_json::json!([{"user": {"username": args.admin}, "password": password}]),
    )
    .await;
    if login.get("error").is_some() {
        let made = call_on(
            &mut admin,
            "a2",
            "createUser",
            serde_json::json!([{"username": args.admin, "email": "admin@bench.example", "password": password}]),
        )
        .await;
        assert!(made.get("result").is_some(), "no administrator: {made}");
    }
    // Members, in order, each with its own user, on its instance: across instances (S12)
    // the big room's members in turn, each small room wholly on one (its sender on the
    // first), so some rooms have listeners on one instance only.
    let setup = Instant::now();
    let names: Vec<String> = (0..members).map(|i| format!("m{run}x{i}")).collect();
    let urls: Vec<String> = std::iter::once(args.url.clone())
        .chain(
            args.spread
                .iter()
                .flat_map(|s| s.split(',').map(str::to_owned)),
        )
        .filter(|u| !u.is_empty())
        .collect();
    let room_size = args.room_size.max(1);
    let instance_of = |i: usize| -> usize {
        if big_mode {
            i % urls.len()
        } else if i.is_multiple_of(room_size) {
            0
        } else {
            (i / room_size) % urls.len()
        }
    };
    let mut made =
        futures_util::stream::iter(names.iter().cloned().enumerate().map(|(i, name)| {
            let (url, src) = (urls[instance_of(i)].clone(), source(i, args.sources));
            async move { chat_user(&url, src, name).await }
        }))
        .buffered(128);
    let mut sockets = Vec::with_capacity(members);
    while let Some(ws) = made.next().await {
        sockets.push(ws);
    }
    // Rooms: the big one by the administrator; each small one by its first member.
    let rids: Vec<String> = if big_mode {
        let reply = call_on(
            &mut admin,
            "big",
            "createChannel",
            serde_json::json!([format!("big-{run}"), names]),
        )
        .await;
        vec![rid_of(&reply)]
    } else {
        let size = args.room_size.max(1);
        let mut owners: Vec<(usize, Ws)> = Vec::new();
        let mut rest = Vec::new();
        for (i, ws) in sockets.into_iter().enumerate() {
            if i % size == 0 {
                owners.push((i, ws));
            } else {
                rest.push((i, ws));
            }
        }
        let (names, run) = (&names, &run);
        let mut created =
            futures_util::stream::iter(owners.into_iter().map(|(i, mut ws)| async move {
                let others = &names[i + 1..(i + size).min(names.len())];
                let reply = call_on(
                    &mut ws,
                    "room",
                    "createChannel",
                    serde_json::json!([format!("r{run}x{}", i / size), others]),
                )
                .await;
                (i, ws, rid_of(&reply))
            }))
            .buffered(64);
        let mut rids = Vec::new();
        let mut all: Vec<(usize, Ws)> = rest;
        while let Some((i, ws, rid)) = created.next().await {
            rids.push(rid);
            all.push((i, ws));
        }
        all.sort_by_key(|(i, _)| *i);
        sockets = all.into_iter().map(|(_, ws)| ws).collect();
        rids
    };
    // Every member listens to its room.
    let size = if big_mode {
        members.max(1)
    } else {
        args.room_size.max(1)
    };
    let (rids_ref, typing) = (&rids, args.typing);
    let mut listening = futures_util::stream::iter(sockets.into_iter().enumerate().map(|(i, mut ws)| async move {
        let sub = serde_json::json!({"msg": "sub", "id": "s", "name": "stream-room-messages", "params": [rids_ref[i / size], false]});
        ws.send(Message::text(sub.to_string())).await.unwrap();
        recv_until(&mut ws, "\"ready\"").await;
        if typing {
            let sub = serde_json::json!({"msg": "sub", "id": "y", "name": "stream-notify-room", "params": [format!("{}/typing", rids_ref[i / size]), false]});
            ws.send(Message::text(sub.to_string())).await.unwrap();
            recv_until(&mut ws, "\"ready\"").await;
        }
        (i, ws)
    }))
    .buffered(128);
    let mut sockets = Vec::with_capacity(members);
    while let Some((_, ws)) = listening.next().await {
        sockets.push(ws);
    }
    let setup_secs = setup.elapsed().as_secs_f64();
    let pids = measured_pids(args);
    let rss: u64 = pids.iter().map(|p| rss_kib(*p)).sum();
    let ports: Vec<u16> = args
        .metrics_ports
        .iter()
        .flat_map(|p| p.split(',').filter_map(|x| x.trim().parse().ok()))
        .collect();
    let tally = Rc::new(ChatTally {
        deliveries: RefCell::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()),
        rtt: RefCell::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()),
        last: RefCell::new(std::collections::HashMap::new()),
        measuring: RefCell::new(false),
        delivered: RefCell::new(0),
    });
    let local = tokio::task::LocalSet::new();
    // Senders: the administrator (big) or each small room's owner.
    let mut senders = Vec::new();
    let (admin_tx, admin_rx) = admin.split();
    let admin_tx = Rc::new(tokio::sync::Mutex::new(admin_tx));
    local.spawn_local(chat_reader(admin_rx, Some(admin_tx.clone()), tally.clone()));
    if big_mode {
        senders.push((admin_tx, rids[0].clone(), args.admin.clone()));
    }
    for (i, ws) in sockets.into_iter().enumerate() {
        let (tx, rx) = ws.split();
        let tx = Rc::new(tokio::sync::Mutex::new(tx));
        if !big_mode && i % size == 0 {
            senders.push((tx.clone(), rids[i / size].clone(), names[i].clone()));
        }
        local.spawn_local(chat_reader(rx, Some(tx), tally.clone()));
    }
    let (rate, secs, warmup) = (args.rate.max(1), args.secs, args.warmup_secs);
    let cpu_all = move || -> u64 { pids.iter().map(|p| cpu_ns(*p)).sum() };
    let (elapsed, cpu, sent, bus_before, bus_after) = local
        .run_until({
            let tally = tally.clone();
            let ports = ports.clone();
            async move {
                let mut bus_before = Vec::new();
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate as f64));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let start = Instant::now();
                let mut measure_start: Option<Instant> = None;
                let (mut cpu0, mut sent, mut n) = (0, 0u64, 0usize);
                loop {
                    tick.tick().await;
                    if measure_start.is_none() && start.elapsed() >= Duration::from_secs(warmup) {
                        bus_before = bus_figures(&ports).await;
                        *tally.measuring.borrow_mut() = true;
                        measure_start = Some(Instant::now());
                        cpu0 = cpu_all();
                    }
                    if let Some(ms) = measure_start {
                        if ms.elapsed() >= Duration::from_secs(secs) {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            *tally.measuring.borrow_mut() = false;
                            let cpu = cpu_all() - cpu0;
                            let bus_after = bus_figures(&ports).await;
                            return (ms.elapsed(), cpu, sent, bus_before, bus_after);
                        }
                        sent += 1;
                    }
                    let (tx, rid, username) = &senders[n % senders.len()];
                    n += 1;
                    let t = now_ms();
                    let mut tx = tx.lock().await;
                    if typing {
                        let frame = format!(r#"{{"msg":"method","id":"y{t:.3}","method":"stream-notify-room","params":["{rid}/typing","{username}",true]}}"#);
                        let _ = tx.send(Message::text(frame)).await;
                    }
                    let frame = format!(r#"{{"msg":"method","id":"m{t:.3}","method":"sendMessage","params":[{{"rid":"{rid}","msg":"t:{t:.3}"}}]}}"#);
                    let _ = tx.send(Message::text(frame)).await;
                }
            }
        })
        .await;
    let d = tally.deliveries.borrow();
    let r = tally.rtt.borrow();
    let mut last = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    let per_room = if big_mode { members } else { args.room_size };
    let mut complete = 0u64;
    for (count, slowest) in tally.last.borrow().values() {
        if *count as usize >= per_room {
            complete += 1;
            let _ = last.record(*slowest);
        }
    }
    let delivered = *tally.delivered.borrow();
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    // Bus events per message: published by all, received by each instance.
    let per_message = |x: f64| if sent > 0 { x / sent as f64 } else { 0.0 };
    let published: f64 = bus_after
        .iter()
        .zip(&bus_before)
        .map(|(a, b)| a.0 - b.0)
        .sum();
    let received: Vec<f64> = bus_after
        .iter()
        .zip(&bus_before)
        .map(|(a, b)| per_message(a.1 - b.1))
        .collect();
    serde_json::json!({
        "scenario": "chat", "label": args.label, "mode": args.mode, "members": members,
        "instances": urls.len(), "typing": typing,
        "bus_published_per_message": per_message(published),
        "bus_received_per_message_by_instance": received,
        "rooms": rids.len(), "rate": rate, "messages_sent": sent,
        "messages_per_sec": sent as f64 / elapsed.as_secs_f64(),
        "deliveries": delivered, "deliveries_per_sec": delivered as f64 / elapsed.as_secs_f64(),
        "messages_fully_delivered": complete,
        "delivery_p50_ms": ms(&d, 0.5), "delivery_p99_ms": ms(&d, 0.99),
        "last_member_p50_ms": ms(&last, 0.5), "last_member_p99_ms": ms(&last, 0.99),
        "rtt_p50_ms": ms(&r, 0.5), "rtt_p99_ms": ms(&r, 0.99),
        "server_cpu_us_per_message": if sent > 0 { cpu as f64 / 1e3 / sent as f64 } else { 0.0 },
        "server_cpu_us_per_delivery": if delivered > 0 { cpu as f64 / 1e3 / delivered as f64 } else { 0.0 },
        "server_cpu_pct": cpu as f64 / elapsed.as_nanos() as f64 * 100.0,
        "rss_kib": rss, "rss_bytes_per_member": rss as f64 * 1024.0 / members.max(1) as f64,
        "setup_secs": setup_secs,
    })
}

/// A new user `name` (password = its name), its socket closed: its id and resume token.
async fn presence_user(url: &str, src: IpAddr, name: String) -> (String, String) {
    let mut ws = connected(url, src).await;
    let password = serde_json::json!({"digest": digest(&name), "algorithm": "sha-256"});
    let reply = call_on(
        &mut ws,
        "c",
        "createUser",
        serde_json::json!([{"username": name, "email": format!("{name}@bench.example"), "password": password}]),
    )
    .await;
    let id = reply["result"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("createUser failed: {reply}"));
    let token = reply["result"]["token"].as_str().unwrap();
    (id.to_owned(), token.to_owned())
}

/// A connection logged in with a resume token.
async fn resumed(url: &str, src: IpAddr, token: &str) -> Ws {
    let mut ws = connected(url, src).await;
    let reply = call_on(
        &mut ws,
        "r",
        "login",
        serde_json::json!([{"resume": token}]),
    )
    .await;
    assert!(reply.get("result").is_some(), "resume failed: {reply}");
    ws
}

/// What the presence watchers saw: per watcher, the watched users seen online and seen
/// offline (by index), and when every watcher had all it expected.
struct PresenceTally {
    index: std::collections::HashMap<String, usize>,
    online: RefCell<Vec<std::collections::HashSet<usize>>>,
    offline: RefCell<Vec<std::collections::HashSet<usize>>>,
    deliveries: RefCell<u64>,
    online_complete: RefCell<usize>,
    offline_complete: RefCell<usize>,
    online_done: RefCell<Option<Instant>>,
    offline_done: RefCell<Option<Instant>>,
    expect_online: usize,
    expect_offline: Vec<usize>,
}

async fn presence_reader(mut ws: Ws, watcher: usize, tally: Rc<PresenceTally>) {
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        if !t.contains("stream-user-presence") {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&t) else {
            continue;
        };
        let Some(&user) = v["id"].as_str().and_then(|id| tally.index.get(id)) else {
            continue;
        };
        *tally.deliveries.borrow_mut() += 1;
        match v["fields"]["args"][0][1].as_u64() {
            Some(1) => {
                let fresh = tally.online.borrow_mut()[watcher].insert(user);
                if fresh && tally.online.borrow()[watcher].len() == tally.expect_online {
                    *tally.online_complete.borrow_mut() += 1;
                    if *tally.online_complete.borrow() == tally.online.borrow().len() {
                        *tally.online_done.borrow_mut() = Some(Instant::now());
                    }
                }
            }
            Some(0) => {
                let fresh = tally.offline.borrow_mut()[watcher].insert(user);
                if fresh && tally.offline.borrow()[watcher].len() == tally.expect_offline[watcher] {
                    *tally.offline_complete.borrow_mut() += 1;
                    if *tally.offline_complete.borrow() == tally.offline.borrow().len() {
                        *tally.offline_done.borrow_mut() = Some(Instant::now());
                    }
                }
            }
            _ => {}
        }
    }
}

/// S10, the presence storm: `users` users connect (resume logins spread over `storm_secs`),
/// each watched on `stream-user-presence` by `users * watch / watchers` of the `watchers`
/// watching connections; then every tenth user disconnects at once. Reported: how long after
/// the storm's last login (and after the disconnect plus the server's grace) every watcher
/// had seen every change, deliveries, CPU per status change, and the memory each
/// (watcher, watched user) pair costs the server.
async fn presence(args: &Args) -> serde_json::Value {
    let run = format!("{:x}", std::process::id() ^ (now_ms() as u32));
    let (n, w, k) = (args.users, args.watchers, args.watch.min(args.users));
    let setup = Instant::now();
    let names: Vec<String> = (0..n + w).map(|i| format!("p{run}x{i}")).collect();
    let mut made =
        futures_util::stream::iter(names.iter().cloned().enumerate().map(|(i, name)| {
            let (url, src) = (args.url.clone(), source(i, args.sources));
            async move { presence_user(&url, src, name).await }
        }))
        .buffered(128);
    let mut people = Vec::with_capacity(n + w);
    while let Some(p) = made.next().await {
        people.push(p);
    }
    // Everyone made goes offline after the grace: wait it out before measuring.
    tokio::time::sleep(Duration::from_millis(args.grace_ms + 2000)).await;
    let index: std::collections::HashMap<String, usize> = people[..n]
        .iter()
        .enumerate()
        .map(|(i, (id, _))| (id.clone(), i))
        .collect();
    let watched_by = |watcher: usize| (0..k).map(move |j| (watcher * n / w.max(1) + j) % n);
    let expect_offline: Vec<usize> = (0..w)
        .map(|x| watched_by(x).filter(|u| u % 10 == 0).count())
        .collect();
    // Watchers: logged in, then (memory measured around it) subscribed to their users.
    let mut watchers = Vec::with_capacity(w);
    let mut logging = futures_util::stream::iter((0..w).map(|x| {
        let (url, src, token) = (
            args.url.clone(),
            source(n + x, args.sources),
            people[n + x].1.clone(),
        );
        async move { resumed(&url, src, &token).await }
    }))
    .buffered(128);
    while let Some(ws) = logging.next().await {
        watchers.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(args.pid);
    let people_ref = &people;
    let mut subscribing = futures_util::stream::iter(watchers.into_iter().enumerate().map(|(x, mut ws)| async move {
        let added: Vec<&str> = watched_by(x).map(|u| people_ref[u].0.as_str()).collect();
        let sub = serde_json::json!({"msg": "sub", "id": "p", "name": "stream-user-presence", "params": ["", {"added": added}]});
        ws.send(Message::text(sub.to_string())).await.unwrap();
        recv_until(&mut ws, "\"ready\"").await;
        ws
    }))
    .buffered(64);
    let mut watchers = Vec::with_capacity(w);
    while let Some(ws) = subscribing.next().await {
        watchers.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss_kib(args.pid);
    let setup_secs = setup.elapsed().as_secs_f64();
    let tally = Rc::new(PresenceTally {
        index,
        online: RefCell::new(vec![Default::default(); w]),
        offline: RefCell::new(vec![Default::default(); w]),
        deliveries: RefCell::new(0),
        online_complete: RefCell::new(0),
        offline_complete: RefCell::new(0),
        online_done: RefCell::new(None),
        offline_done: RefCell::new(None),
        expect_online: k,
        expect_offline,
    });
    let local = tokio::task::LocalSet::new();
    for (x, ws) in watchers.into_iter().enumerate() {
        local.spawn_local(presence_reader(ws, x, tally.clone()));
    }
    let (pid, storm, grace) = (
        args.pid,
        Duration::from_secs(args.storm_secs),
        Duration::from_millis(args.grace_ms),
    );
    let url = args.url.clone();
    let sources = args.sources;
    let tokens: Vec<String> = people[..n].iter().map(|(_, t)| t.clone()).collect();
    let report = local
        .run_until({
            let tally = tally.clone();
            async move {
                // The connect storm: logins spread evenly over `storm`; each socket is then
                // drained until it is told to close.
                let start = Instant::now();
                let cpu0 = cpu_ns(pid);
                let closers: Vec<Rc<tokio::sync::Notify>> = (0..n).map(|_| Rc::new(tokio::sync::Notify::new())).collect();
                let mut storming = futures_util::stream::iter(tokens.iter().enumerate().map(|(i, token)| {
                    let (url, closer) = (url.clone(), closers[i].clone());
                    let at = start + storm.mul_f64(i as f64 / n.max(1) as f64);
                    async move {
                        tokio::time::sleep_until(at.into()).await;
                        let mut ws = resumed(&url, source(i, sources), token).await;
                        tokio::task::spawn_local(async move {
                            loop {
                                tokio::select! {
                                    m = ws.next() => if !matches!(m, Some(Ok(_))) { return },
                                    _ = closer.notified() => return,
                                }
                            }
                        });
                    }
                }))
                .buffer_unordered(512);
                while storming.next().await.is_some() {}
                let storm_end = Instant::now();
                let deadline = storm_end + Duration::from_secs(60);
                while tally.online_done.borrow().is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let online_done = *tally.online_done.borrow();
                let cpu_connect = cpu_ns(pid) - cpu0;
                let delivered_connect = *tally.deliveries.borrow();
                let connect_span = online_done.unwrap_or_else(Instant::now) - start;
                // Every tenth user disconnects at once.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let cpu1 = cpu_ns(pid);
                let delivered1 = *tally.deliveries.borrow();
                let cut = Instant::now();
                for (i, closer) in closers.iter().enumerate() {
                    if i % 10 == 0 {
                        closer.notify_one();
                    }
                }
                let deadline = cut + grace + Duration::from_secs(60);
                while tally.offline_done.borrow().is_none() && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let offline_done = *tally.offline_done.borrow();
                let cpu_cut = cpu_ns(pid) - cpu1;
                let delivered_cut = *tally.deliveries.borrow() - delivered1;
                let after = |done: Option<Instant>, from: Instant| done.map(|d| (d.saturating_duration_since(from)).as_secs_f64() * 1000.0);
                serde_json::json!({
                    "storm_secs": (storm_end - start).as_secs_f64(),
                    "online_all_seen_after_storm_ms": after(online_done, storm_end),
                    "online_watchers_complete": *tally.online_complete.borrow(),
                    "deliveries_connect": delivered_connect,
                    "deliveries_per_sec_connect": delivered_connect as f64 / connect_span.as_secs_f64(),
                    "server_cpu_us_per_status_change_connect": cpu_connect as f64 / 1e3 / n.max(1) as f64,
                    "offline_all_seen_after_cut_ms": after(offline_done, cut),
                    "offline_all_seen_after_grace_ms": after(offline_done, cut + grace),
                    "offline_watchers_complete": *tally.offline_complete.borrow(),
                    "deliveries_disconnect": delivered_cut,
                    "server_cpu_us_per_status_change_disconnect": cpu_cut as f64 / 1e3 / n.div_ceil(10).max(1) as f64,
                })
            }
        })
        .await;
    let pairs = (w * k).max(1);
    let mut out = serde_json::json!({
        "scenario": "presence", "label": args.label, "users": n, "watchers": w,
        "watched_per_watcher": k, "watchers_per_user": w * k / n.max(1),
        "grace_ms": args.grace_ms,
        "rss_kib": rss_after,
        "rss_bytes_per_watch_pair": (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / pairs as f64,
        "setup_secs": setup_secs,
    });
    if let (Some(o), serde_json::Value::Object(r)) = (out.as_object_mut(), report) {
        o.extend(r);
    }
    out
}
