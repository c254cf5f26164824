//! What `/metrics` reports, on the `prometheus-client` library: connection, session and
//! subscription gauges, outcome counters, latency histograms per method and publication
//! (names registered at start-up get their own label, any other name folds into
//! `unknown`, so a client cannot grow the label set), the change feed's lag, and the
//! process's own figures (resident memory, open files, CPU). Counting never waits on
//! anything but the metric's own atomics.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

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

/// Why a connection or session was refused before it was served.
#[derive(Clone, Copy, Debug)]
pub enum Refusal {
    /// The cap on concurrent connections was reached.
    ConnectionCap,
    /// The cap on SockJS sessions (in total) was reached.
    SockJsSessionCap,
    /// The cap on SockJS sessions from one address was reached.
    SockJsSessionsPerAddress,
    /// The cap on WebSocket sessions from one address was reached.
    SessionsPerAddress,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::ConnectionCap,
        Refusal::SockJsSessionCap,
        Refusal::SockJsSessionsPerAddress,
        Refusal::SessionsPerAddress,
    ];

    fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionCap => "connection_cap",
            Refusal::SockJsSessionCap => "sockjs_session_cap",
            Refusal::SockJsSessionsPerAddress => "sockjs_sessions_per_address",
            Refusal::SessionsPerAddress => "sessions_per_address",
        }
    }
}

/// Why the server closed a connection that was not the client's doing.
#[derive(Clone, Copy, Debug)]
pub enum Timeout {
    /// No complete request head in time (includes idle keep-alive connections).
    RequestHead,
    /// A request body that did not arrive in time.
    RequestBody,
    /// A DDP connection that never sent `connect`.
    Connect,
    /// A SockJS session whose receiver never came.
    SockJsReceiver,
}

impl Timeout {
    const ALL: [Timeout; 4] = [
        Timeout::RequestHead,
        Timeout::RequestBody,
        Timeout::Connect,
        Timeout::SockJsReceiver,
    ];

    fn label(self) -> &'static str {
        match self {
            Timeout::RequestHead => "request_head",
            Timeout::RequestBody => "request_body",
            Timeout::Connect => "connect",
            Timeout::SockJsReceiver => "sockjs_receiver",
        }
    }
}

type Labels = Vec<(&'static str, &'static str)>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabel {
    name: String,
}

/// Latency histograms by name, for a set of names fixed at start-up plus `unknown`.
struct ByName {
    known: HashMap<String, Histogram, foldhash::fast::RandomState>,
    unknown: Histogram,
}

impl ByName {
    fn new(family: &Family<NameLabel, Histogram>, names: &[String]) -> Self {
        let get = |name: &str| {
            family.get_or_create_owned(&NameLabel {
                name: name.to_owned(),
            })
        };
        Self {
            known: names.iter().map(|n| (n.clone(), get(n))).collect(),
            unknown: get("unknown"),
        }
    }

    fn observe(&self, name: &str, seconds: f64) {
        self.known
            .get(name)
            .unwrap_or(&self.unknown)
            .observe(seconds);
    }
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~105 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 22))
}

/// Registers a metric without labels.
fn register<M: Metric + Clone + Default>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
) -> M {
    let metric = M::default();
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Registers a metric with one label and returns its series for each value, in order: they
/// are looked up once here, not on every count.
fn labelled<M, const N: usize>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    key: &'static str,
    values: [&'static str; N],
) -> [M; N]
where
    M: Metric + Clone + Default,
    Family<Labels, M>: Metric,
{
    let family = Family::<Labels, M>::default();
    registry.register(name, help, family.clone());
    values.map(|v| family.get_or_create_owned(&vec![(key, v)]))
}

/// Process-wide metrics.
pub struct Metrics {
    registry: Registry,
    /// One series per label value, looked up once here rather than on every count.
    connections_open: [Gauge; 4],
    sessions_open: Gauge,
    subscriptions_open: Gauge,
    method_calls: [Counter; 5],
    frames_out: Counter,
    bytes_out: Counter,
    slow_consumers_closed: Counter,
    bad_requests: Counter,
    refused: [Counter; 4],
    timeouts: [Counter; 4],
    sockjs_sessions_open: Gauge,
    write_fence_timeouts: Counter,
    methods: ByName,
    publications: ByName,
    /// Figures other parts render themselves (the plugins'), in the exposition format.
    extra: std::sync::RwLock<Vec<ExtraText>>,
}

/// A part's own figures as exposition text (families with `# HELP` and `# TYPE`).
pub type ExtraText = Box<dyn Fn() -> String + Send + Sync>;

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&[], &[], None)
    }
}

impl Metrics {
    /// Metrics for the given method and publication names; `change_feed`, when the server
    /// follows a store, gives the live queries' figures (count, lag, position, store).
    pub fn new(
        method_names: &[String],
        publication_names: &[String],
        change_feed: Option<&Arc<crate::observe::ObserveHub>>,
    ) -> Self {
        let mut registry = Registry::default();
        let r = &mut registry;
        let connections_open = labelled(
            r,
            "comet_connections_open",
            "Open client connections by transport",
            "transport",
            Transport::ALL.map(Transport::label),
        );
        let sessions_open = register(r, "comet_sessions_open", "Open DDP sessions", None);
        let subscriptions_open =
            register(r, "comet_subscriptions_open", "Live subscriptions", None);
        let method_calls = labelled(
            r,
            "comet_method_calls",
            "Method calls by outcome",
            "outcome",
            MethodOutcomeKind::ALL.map(MethodOutcomeKind::label),
        );
        let frames_out = register(
            r,
            "comet_frames_out",
            "DDP messages written to clients",
            None,
        );
        let bytes_out = register(
            r,
            "comet_sent",
            "Bytes of DDP messages written to clients",
            Some(Unit::Bytes),
        );
        let slow_consumers_closed = register(
            r,
            "comet_slow_consumers_closed",
            "Connections closed because they did not read fast enough",
            None,
        );
        let bad_requests = register(
            r,
            "comet_bad_requests",
            "Client frames answered with a DDP error",
            None,
        );
        let refused = labelled(
            r,
            "comet_refused",
            "Connections and SockJS sessions refused because a cap was reached",
            "reason",
            Refusal::ALL.map(Refusal::label),
        );
        let timeouts = labelled(
            r,
            "comet_timeouts",
            "Connections and sessions closed for lack of progress, by stage",
            "stage",
            Timeout::ALL.map(Timeout::label),
        );
        let sockjs_sessions_open = register(
            r,
            "comet_sockjs_sessions_open",
            "SockJS sessions of the HTTP transports",
            None,
        );
        let write_fence_timeouts = register(
            r,
            "comet_write_fence_timeouts",
            "Methods whose updated was sent after the bound, without their writes' changes seen",
            None,
        );
        let method_family =
            Family::<NameLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "comet_method_duration",
            "Method call latency, from the call's turn in its session's queue to its result",
            Unit::Seconds,
            method_family.clone(),
        );
        let publication_family =
            Family::<NameLabel, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "comet_publication_start_duration",
            "Time from a subscription's turn to its publication handler's return",
            Unit::Seconds,
            publication_family.clone(),
        );
        if let Some(feed) = change_feed {
            registry.register_with_unit(
                "comet_change_feed_lag",
                "Time from a change entering comet to its live queries having applied it",
                Unit::Seconds,
                feed.lag_histogram(),
            );
            let store = Family::<Vec<(String, String)>, Gauge>::default();
            store
                .get_or_create(&vec![("kind".to_owned(), feed.store().kind().to_owned())])
                .set(1);
            registry.register("comet_store_info", "The store in use", store);
            registry.register_collector(Box::new(FeedCollector(Arc::downgrade(feed))));
        }
        registry.register_collector(Box::new(ProcessCollector::default()));
        Self {
            methods: ByName::new(&method_family, method_names),
            publications: ByName::new(&publication_family, publication_names),
            registry,
            connections_open,
            sessions_open,
            subscriptions_open,
            method_calls,
            frames_out,
            bytes_out,
            slow_consumers_closed,
            bad_requests,
            refused,
            timeouts,
            sockjs_sessions_open,
            write_fence_timeouts,
            extra: Default::default(),
        }
    }

    /// Adds a part's figures to what [`Metrics::render`] writes.
    pub fn add_text(&self, source: ExtraText) {
        self.extra
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(source);
    }

    pub fn connection_opened(&self, t: Transport) {
        self.connections_open[t as usize].inc();
    }
    pub fn connection_closed(&self, t: Transport) {
        self.connections_open[t as usize].dec();
    }
    pub fn session_delta(&self, d: i64) {
        self.sessions_open.inc_by(d);
    }
    pub fn subscription_delta(&self, d: i64) {
        self.subscriptions_open.inc_by(d);
    }
    pub fn method_call(&self, outcome: MethodOutcomeKind) {
        self.method_calls[outcome as usize].inc();
    }
    /// How long a method took, by its name (an unregistered name counts as `unknown`).
    pub fn method_duration(&self, name: &str, seconds: f64) {
        self.methods.observe(name, seconds);
    }
    /// How long a publication took to start, by its name.
    pub fn publication_start(&self, name: &str, seconds: f64) {
        self.publications.observe(name, seconds);
    }
    pub fn frames_sent(&self, frames: u64, bytes: u64) {
        self.frames_out.inc_by(frames);
        self.bytes_out.inc_by(bytes);
    }
    pub fn slow_consumer_closed(&self) {
        self.slow_consumers_closed.inc();
    }
    pub fn bad_request(&self) {
        self.bad_requests.inc();
    }
    pub fn refused(&self, why: Refusal) {
        self.refused[why as usize].inc();
    }
    pub fn timed_out(&self, stage: Timeout) {
        self.timeouts[stage as usize].inc();
    }
    pub fn write_fence_timed_out(&self) {
        self.write_fence_timeouts.inc();
    }
    pub fn sockjs_sessions(&self, open: usize) {
        self.sockjs_sessions_open.set(open as i64);
    }
    pub fn sessions_open(&self) -> i64 {
        self.sessions_open.get()
    }

    /// The exposition text (OpenMetrics, which Prometheus reads).
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(cause = %err, "metrics could not be encoded");
        }
        let extra = self.extra.read().unwrap_or_else(|p| p.into_inner());
        if !extra.is_empty() {
            // Before the closing `# EOF`, which must stay last.
            let end = out.rfind("# EOF").unwrap_or(out.len());
            let tail = out.split_off(end);
            for source in extra.iter() {
                out.push_str(&source());
            }
            out.push_str(&tail);
        }
        out
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The process's own figures, read from `/proc` at each scrape (Prometheus's `process_*`
/// names). On a system without `/proc` they are left out.
#[derive(Debug)]
struct ProcessCollector {
    start_time_seconds: f64,
    /// The last CPU figure, so the counter never goes backwards on a bad read.
    cpu_micros: AtomicU64,
    read_failed: Mutex<bool>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        let start_time_seconds = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Self {
            start_time_seconds,
            cpu_micros: AtomicU64::new(0),
            read_failed: Mutex::new(false),
        }
    }
}

/// The live queries' figures, read at each scrape.
struct FeedCollector(std::sync::Weak<crate::observe::ObserveHub>);

impl std::fmt::Debug for FeedCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FeedCollector")
    }
}

impl Collector for FeedCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(feed) = self.0.upgrade() else {
            return Ok(());
        };
        for (name, help, value) in [
            (
                "comet_live_queries",
                "Distinct live queries",
                feed.query_count() as i64,
            ),
            (
                "comet_change_feed_position",
                "The store's newest change position",
                feed.store().last_seq() as i64,
            ),
            (
                "comet_change_feed_processed",
                "The change position every live query has applied",
                feed.processed_position() as i64,
            ),
        ] {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// Clock ticks per second of `/proc/<pid>/stat`'s times: 100 on every Linux platform
/// comet runs on (the kernel's `USER_HZ`).
const USER_HZ: f64 = 100.0;

fn read_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn read_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: the fields start after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn count_open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// The soft limit on open files, from `/proc/self/limits`.
pub fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let (rss, cpu, fds, max_fds) = (
            read_rss_bytes(),
            read_cpu_seconds(),
            count_open_fds(),
            max_open_files(),
        );
        if rss.is_none() || cpu.is_none() || fds.is_none() {
            let mut failed = self.read_failed.lock().unwrap_or_else(|p| p.into_inner());
            if !*failed {
                *failed = true;
                tracing::warn!("process metrics unavailable: /proc cannot be read");
            }
        }
        if let Some(rss) = rss {
            let g = ConstGauge::new(rss as i64);
            g.encode(encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                g.metric_type(),
            )?)?;
        }
        if let Some(cpu) = cpu {
            let micros = (cpu * 1e6) as u64;
            let kept = self
                .cpu_micros
                .fetch_max(micros, Ordering::Relaxed)
                .max(micros);
            let c = ConstCounter::new(kept as f64 / 1e6);
            c.encode(encoder.encode_descriptor(
                "process_cpu",
                "User and system CPU time spent",
                Some(&Unit::Seconds),
                c.metric_type(),
            )?)?;
        }
        if let Some(fds) = fds {
            let g = ConstGauge::new(fds as i64);
            g.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        if let Some(max) = max_fds {
            let g = ConstGauge::new(max as i64);
            g.encode(encoder.encode_descriptor(
                "process_max_fds",
                "The limit on open file descriptors",
                None,
                g.metric_type(),
            )?)?;
        }
        let g = ConstGauge::new(self.start_time_seconds);
        g.encode(encoder.encode_descriptor(
            "process_start_time",
            "Start time of the process since the epoch",
            Some(&Unit::Seconds),
            g.metric_type(),
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_the_series_with_prometheus_names() {
        let m = Metrics::new(&["echo".to_owned()], &["tasks".to_owned()], None);
        m.method_call(MethodOutcomeKind::Ok);
        m.method_duration("echo", 0.001);
        m.method_duration("made-up-by-a-client-1", 0.002);
        m.method_duration("made-up-by-a-client-2", 0.002);
        m.publication_start("tasks", 0.01);
        m.frames_sent(2, 100);
        let text = m.render();
        for wanted in [
            "comet_method_calls_total{outcome=\"ok\"} 1",
            "comet_method_duration_seconds_count{name=\"echo\"} 1",
            "comet_method_duration_seconds_count{name=\"unknown\"} 2",
            "comet_publication_start_duration_seconds_count{name=\"tasks\"} 1",
            "comet_frames_out_total 2",
            "comet_sent_bytes_total 100",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_cpu_seconds_total ",
        ] {
            assert!(text.contains(wanted), "{wanted} missing in\n{text}");
        }
        assert!(!text.contains("made-up-by-a-client"), "{text}");
    }
}
