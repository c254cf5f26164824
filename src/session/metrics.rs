//! Counters for `/metrics`, shared by every connection. Plain atomics: counting never waits.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// The transports a connection can arrive on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    WebSocket,
    SockJsWebSocket,
    SockJsXhrStreaming,
    SockJsXhrPolling,
}

impl Transport {
    const ALL: [Transport; 4] = [
        Transport::WebSocket,
        Transport::SockJsWebSocket,
        Transport::SockJsXhrStreaming,
        Transport::SockJsXhrPolling,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Transport::WebSocket => "websocket",
            Transport::SockJsWebSocket => "sockjs_websocket",
            Transport::SockJsXhrStreaming => "sockjs_xhr_streaming",
            Transport::SockJsXhrPolling => "sockjs_xhr_polling",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a method call ended.
#[derive(Clone, Copy, Debug)]
pub enum MethodOutcomeKind {
    Ok,
    ClientError,
    InternalError,
    NotFound,
    Rejected,
}

impl MethodOutcomeKind {
    const ALL: [MethodOutcomeKind; 5] = [
        MethodOutcomeKind::Ok,
        MethodOutcomeKind::ClientError,
        MethodOutcomeKind::InternalError,
        MethodOutcomeKind::NotFound,
        MethodOutcomeKind::Rejected,
    ];

    fn label(self) -> &'static str {
        match self {
            MethodOutcomeKind::Ok => "ok",
            MethodOutcomeKind::ClientError => "client_error",
            MethodOutcomeKind::InternalError => "internal_error",
            MethodOutcomeKind::NotFound => "not_found",
            MethodOutcomeKind::Rejected => "rejected",
        }
    }
}

/// Process-wide counters.
#[derive(Default)]
pub struct Metrics {
    connections_open: [AtomicI64; 4],
    sessions_open: AtomicI64,
    subscriptions_open: AtomicI64,
    method_calls: [AtomicU64; 5],
    frames_out: AtomicU64,
    bytes_out: AtomicU64,
    slow_consumers_closed: AtomicU64,
    bad_requests: AtomicU64,
}

impl Metrics {
    pub fn connection_opened(&self, t: Transport) {
        self.connections_open[t.index()].fetch_add(1, Ordering::Relaxed);
    }
    pub fn connection_closed(&self, t: Transport) {
        self.connections_open[t.index()].fetch_sub(1, Ordering::Relaxed);
    }
    pub fn session_delta(&self, d: i64) {
        self.sessions_open.fetch_add(d, Ordering::Relaxed);
    }
    pub fn subscription_delta(&self, d: i64) {
        self.subscriptions_open.fetch_add(d, Ordering::Relaxed);
    }
    pub fn method_call(&self, outcome: MethodOutcomeKind) {
        self.method_calls[outcome as usize].fetch_add(1, Ordering::Relaxed);
    }
    pub fn frames_sent(&self, frames: u64, bytes: u64) {
        self.frames_out.fetch_add(frames, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }
    pub fn slow_consumer_closed(&self) {
        self.slow_consumers_closed.fetch_add(1, Ordering::Relaxed);
    }
    pub fn bad_request(&self) {
        self.bad_requests.fetch_add(1, Ordering::Relaxed);
    }
    pub fn sessions_open(&self) -> i64 {
        self.sessions_open.load(Ordering::Relaxed)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP comet_connections_open Open client connections by transport."
        );
        let _ = writeln!(out, "# TYPE comet_connections_open gauge");
        for t in Transport::ALL {
            let _ = writeln!(
                out,
                "comet_connections_open{{transport=\"{}\"}} {}",
                t.label(),
                self.connections_open[t.index()].load(Ordering::Relaxed)
            );
        }
        let gauge = |out: &mut String, name: &str, help: &str, v: i64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        gauge(
            &mut out,
            "comet_sessions_open",
            "Open DDP sessions.",
            self.sessions_open(),
        );
        gauge(
            &mut out,
            "comet_subscriptions_open",
            "Live subscriptions.",
            self.subscriptions_open.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP comet_method_calls_total Method calls by outcome."
        );
        let _ = writeln!(out, "# TYPE comet_method_calls_total counter");
        for o in MethodOutcomeKind::ALL {
            let _ = writeln!(
                out,
                "comet_method_calls_total{{outcome=\"{}\"}} {}",
                o.label(),
                self.method_calls[o as usize].load(Ordering::Relaxed)
            );
        }
        counter(
            &mut out,
            "comet_frames_out_total",
            "DDP messages written to clients.",
            self.frames_out.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "comet_bytes_out_total",
            "Bytes of DDP messages written to clients.",
            self.bytes_out.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "comet_slow_consumers_closed_total",
            "Connections closed because they did not read fast enough.",
            self.slow_consumers_closed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "comet_bad_requests_total",
            "Client frames answered with a DDP error.",
            self.bad_requests.load(Ordering::Relaxed),
        );
        out
    }
}
