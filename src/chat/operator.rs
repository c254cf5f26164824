//! The operator's live figures: the `comet.operator` publication behind the `/admin` page,
//! and the method that closes a connection from it.
//!
//! Owns the sampler (once a second it reads the same exposition text `/metrics` serves and
//! turns it into figures, keeping ten minutes of history) and what each subscriber is sent:
//! one `figures` document, one `history` document and one document per live connection.
//! Everything is for holders of `view-statistics` only. It must not count anything itself:
//! every figure comes from the metrics text, so the page and `/metrics` never disagree.

use super::permissions::Permissions;
use crate::chat::collections::USERS;
use crate::chat::not_allowed;
use crate::engine::build::{now_ms, selector};
use crate::engine::connections::Connections;
use crate::engine::error::ServiceError;
use crate::engine::registry::{Publish, Registry, Subscription};
use crate::model::{Document, Value};
use crate::storage::{FindOptions, Store};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The publication the operator's page subscribes to.
pub const PUBLICATION: &str = "comet.operator";
/// The method that closes a connection.
pub const CLOSE_METHOD: &str = "comet.operator.closeConnection";
/// The collection of the `figures` and `history` documents.
pub const FIGURES: &str = "comet_operator";
/// The collection of the live connections.
pub const CONNECTIONS: &str = "comet_operator_connections";
/// Who may watch.
const PERMISSION: &str = "view-statistics";

/// How often figures are taken.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// History points: one every 5 samples, ten minutes' worth.
const HISTORY_EVERY: u64 = 5;
const HISTORY_POINTS: usize = 120;
/// Samples over which latency percentiles are taken.
const WINDOW: usize = 10;
/// Most connections listed (the largest queues first).
const MAX_LISTED: usize = 500;
/// How often each subscriber's connection list is refreshed.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// Where the exposition text comes from (the session layer's metrics, set at start-up).
pub type MetricsText = Box<dyn Fn() -> String + Send + Sync>;

/// One series of the exposition text.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Series {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the series lines of OpenMetrics/Prometheus text (comments skipped).
fn parse_exposition(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Series> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        loop {
            body = body.strip_prefix(',').unwrap_or(body);
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            // key="value", the value with backslash escapes.
            let eq = body.find('=')?;
            let key = body[..eq].to_owned();
            let quoted = body[eq + 1..].strip_prefix('"')?;
            let mut value = String::new();
            let (mut escaped, mut close) = (false, None);
            for (i, c) in quoted.char_indices() {
                match (escaped, c) {
                    (false, '\\') => escaped = true,
                    (false, '"') => {
                        close = Some(i);
                        break;
                    }
                    (true, 'n') => {
                        value.push('\n');
                        escaped = false;
                    }
                    (_, c) => {
                        value.push(c);
                        escaped = false;
                    }
                }
            }
            labels.push((key, value));
            body = &quoted[close? + 1..];
            if !body.starts_with([',', '}']) {
                return None;
            }
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Series {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// One reading of the metrics, with the parts kept to compare against later readings.
struct Reading {
    at: f64,
    series: Vec<Series>,
}

impl Reading {
    fn sum(&self, name: &str) -> f64 {
        self.series
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.value)
            .sum()
    }

    fn find(&self, name: &str, key: &str, value: &str) -> Option<f64> {
        self.series
            .iter()
            .find(|s| s.name == name && s.label(key) == Some(value))
            .map(|s| s.value)
    }

    /// Cumulative bucket counts of histogram `name` for series `label = value` (or the
    /// unlabelled one), in bound order.
    fn buckets(&self, name: &str, label: Option<(&str, &str)>) -> Vec<(f64, f64)> {
        let bucket = format!("{name}_bucket");
        let mut out: Vec<(f64, f64)> = self
            .series
            .iter()
            .filter(|s| s.name == bucket)
            .filter(|s| label.is_none_or(|(k, v)| s.label(k) == Some(v)))
            .filter_map(|s| {
                let le = match s.label("le")? {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                };
                Some((le, s.value))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    }

    /// The values of label `key` among the series of `name`.
    fn label_values(&self, name: &str, key: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .iter()
            .filter(|s| s.name == name)
            .filter_map(|s| s.label(key).map(str::to_owned))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// The `q` quantile, in milliseconds, of the observations between two cumulative bucket
/// lists: the upper bound of the bucket holding it (the last finite one for the overflow).
fn quantile_ms(now: &[(f64, f64)], before: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = now
        .iter()
        .map(|(le, n)| {
            let earlier = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, n - earlier)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut last_finite = 0.0;
    for (le, n) in &counts {
        if le.is_finite() {
            last_finite = *le;
        }
        if *n >= rank {
            let bound = if le.is_finite() { *le } else { last_finite };
            return Some(bound * 1000.0);
        }
    }
    Some(last_finite * 1000.0)
}

fn num(v: f64) -> Value {
    if v.is_finite() {
        Value::Number((v * 1000.0).round() / 1000.0)
    } else {
        Value::Null
    }
}

/// The figures of `now`, with rates against `previous` and percentiles against `window`.
fn figures(now: &Reading, previous: Option<&Reading>, window: Option<&Reading>) -> Document {
    let mut f = Document::default();
    let rate = |name: &str| -> Value {
        match previous {
            Some(p) if now.at > p.at => {
                num(((now.sum(name) - p.sum(name)) / ((now.at - p.at) / 1000.0)).max(0.0))
            }
            _ => Value::Number(0.0),
        }
    };
    f.insert("at".into(), Value::Date(now.at));
    let mut transports = Document::default();
    for t in now.label_values("comet_connections_open", "transport") {
        let n = now
            .find("comet_connections_open", "transport", &t)
            .unwrap_or(0.0);
        transports.insert(t, num(n));
    }
    f.insert("connections".into(), Value::Object(transports));
    f.insert("sessions".into(), num(now.sum("comet_sessions_open")));
    f.insert(
        "subscriptions".into(),
        num(now.sum("comet_subscriptions_open")),
    );
    f.insert("liveQueries".into(), num(now.sum("comet_live_queries")));
    f.insert("methodCallsPerSec".into(), rate("comet_method_calls_total"));
    f.insert("deliveriesPerSec".into(), rate("comet_frames_out_total"));
    f.insert("bytesOutPerSec".into(), rate("comet_sent_bytes_total"));
    f.insert(
        "slowConsumersCut".into(),
        num(now.sum("comet_slow_consumers_closed_total")),
    );
    f.insert(
        "feedPosition".into(),
        num(now.sum("comet_change_feed_position")),
    );
    f.insert(
        "feedProcessed".into(),
        num(now.sum("comet_change_feed_processed")),
    );
    let lag_before = window
        .map(|w| w.buckets("comet_change_feed_lag_seconds", None))
        .unwrap_or_default();
    let lag_now = now.buckets("comet_change_feed_lag_seconds", None);
    f.insert(
        "feedLagP99Ms".into(),
        quantile_ms(&lag_now, &lag_before, 0.99).map_or(Value::Null, num),
    );
    f.insert(
        "rssBytes".into(),
        num(now.sum("process_resident_memory_bytes")),
    );
    f.insert(
        "cpuPercent".into(),
        match rate("process_cpu_seconds_total") {
            Value::Number(r) => num(r * 100.0),
            other => other,
        },
    );
    f.insert("openFds".into(), num(now.sum("process_open_fds")));
    f.insert(
        "store".into(),
        Value::from(
            now.label_values("comet_store_info", "kind")
                .first()
                .map_or("none", String::as_str),
        ),
    );
    // Calls per second and latency by method, busiest first.
    let mut methods: Vec<(String, f64, Document)> = Vec::new();
    for name in now.label_values("comet_method_duration_seconds_count", "name") {
        let count = |r: &Reading| {
            r.find("comet_method_duration_seconds_count", "name", &name)
                .unwrap_or(0.0)
        };
        let total = count(now);
        if total == 0.0 {
            continue;
        }
        let label = Some(("name", name.as_str()));
        let buckets = now.buckets("comet_method_duration_seconds", label);
        // The window's calls when there were any, else every call so far.
        let before = match window {
            Some(w) if count(w) < total => w.buckets("comet_method_duration_seconds", label),
            _ => Vec::new(),
        };
        let per_sec = match previous {
            Some(p) if now.at > p.at => (total - count(p)) / ((now.at - p.at) / 1000.0),
            _ => 0.0,
        };
        let mut m = Document::default();
        m.insert("name".into(), Value::from(name.as_str()));
        m.insert("calls".into(), num(total));
        m.insert("perSec".into(), num(per_sec.max(0.0)));
        for (key, q) in [("p50Ms", 0.5), ("p90Ms", 0.9), ("p99Ms", 0.99)] {
            m.insert(
                key.into(),
                quantile_ms(&buckets, &before, q).map_or(Value::Null, num),
            );
        }
        methods.push((name, per_sec, m));
    }
    methods.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    f.insert(
        "methods".into(),
        Value::Array(
            methods
                .into_iter()
                .map(|(_, _, m)| Value::Object(m))
                .collect(),
        ),
    );
    f
}

/// The fields a history point keeps of the figures.
const HISTORY_FIELDS: [&str; 6] = [
    "sessions",
    "methodCallsPerSec",
    "deliveriesPerSec",
    "rssBytes",
    "cpuPercent",
    "subscriptions",
];

#[derive(Default)]
struct Sampler {
    readings: VecDeque<Reading>,
    history: VecDeque<(f64, Vec<Value>)>,
    taken: u64,
}

/// What subscribers are sent: the latest figures and history.
#[derive(Clone, Default)]
struct Snapshot {
    figures: Document,
    history: Document,
    /// Moves when the history gets a point.
    history_version: u64,
}

/// The operator's service.
pub struct Operator {
    store: Arc<dyn Store>,
    permissions: Arc<Permissions>,
    connections: Arc<Connections>,
    sampler: Mutex<Sampler>,
    latest: tokio::sync::watch::Sender<Arc<Snapshot>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Operator {
    /// The service, its publication and method registered; figures start once
    /// [`Operator::start_sampling`] gives it the metrics text.
    pub fn start(
        store: Arc<dyn Store>,
        permissions: Arc<Permissions>,
        registry: &mut Registry,
    ) -> Arc<Self> {
        let operator = Arc::new(Self {
            store,
            permissions,
            connections: registry.connections().clone(),
            sampler: Mutex::new(Sampler::default()),
            latest: tokio::sync::watch::channel(Arc::new(Snapshot::default())).0,
        });
        operator.register(registry);
        operator
    }

    /// Where figures come from: the same text `/metrics` serves. Starts the sampler.
    pub fn start_sampling(self: &Arc<Self>, source: MetricsText) {
        self.sample(&source);
        tokio::spawn(sample_forever(Arc::downgrade(self), source));
    }

    /// Takes one reading and publishes the figures it gives.
    fn sample(&self, source: &MetricsText) {
        let reading = Reading {
            at: now_ms(),
            series: parse_exposition(&source()),
        };
        let mut sampler = lock(&self.sampler);
        let figures = figures(&reading, sampler.readings.back(), sampler.readings.front());
        sampler.taken += 1;
        let mut history_moved = false;
        if sampler.taken % HISTORY_EVERY == 1 || sampler.history.is_empty() {
            let point: Vec<Value> = HISTORY_FIELDS
                .iter()
                .map(|k| figures.get(*k).cloned().unwrap_or(Value::Null))
                .collect();
            if sampler.history.len() == HISTORY_POINTS {
                sampler.history.pop_front();
            }
            sampler.history.push_back((reading.at, point));
            history_moved = true;
        }
        if sampler.readings.len() == WINDOW {
            sampler.readings.pop_front();
        }
        sampler.readings.push_back(reading);
        let previous = self.latest.borrow().clone();
        let history_version = previous.history_version + u64::from(history_moved);
        let history = if history_moved {
            let mut h = Document::default();
            h.insert(
                "fields".into(),
                Value::Array(HISTORY_FIELDS.iter().map(|f| Value::from(*f)).collect()),
            );
            h.insert(
                "points".into(),
                Value::Array(
                    sampler
                        .history
                        .iter()
                        .map(|(at, values)| {
                            let mut point = vec![Value::Date(*at)];
                            point.extend(values.iter().cloned());
                            Value::Array(point)
                        })
                        .collect(),
                ),
            );
            h
        } else {
            previous.history.clone()
        };
        drop(sampler);
        self.latest.send_replace(Arc::new(Snapshot {
            figures,
            history,
            history_version,
        }));
    }

    async fn allowed(&self, user: Option<&str>) -> Result<bool, ServiceError> {
        match user {
            Some(user) => {
                self.permissions
                    .has_permission(Some(user), PERMISSION, None)
                    .await
            }
            None => Ok(false),
        }
    }

    fn register(self: &Arc<Self>, registry: &mut Registry) {
        let operator = self.clone();
        registry.publication(PUBLICATION, move |sub, _params| {
            let operator = operator.clone();
            async move {
                if !operator.allowed(sub.user_id.as_deref()).await? {
                    return Err(not_allowed());
                }
                let snapshot = operator.latest.borrow().clone();
                let figures_id = Value::from("figures");
                let history_id = Value::from("history");
                sub.added(FIGURES, &figures_id, snapshot.figures.clone())?;
                sub.added(FIGURES, &history_id, snapshot.history.clone())?;
                let mut listed = HashMap::new();
                let mut names = HashMap::new();
                operator.refresh_list(&sub, &mut listed, &mut names).await;
                tokio::spawn(follow(operator.clone(), sub, snapshot, listed, names));
                Ok(Publish::Ready)
            }
        });
        let operator = self.clone();
        registry.method(CLOSE_METHOD, move |ctx, params| {
            let operator = operator.clone();
            async move {
                if !operator.allowed(ctx.user_id.as_deref()).await? {
                    return Err(not_allowed());
                }
                let Some(Value::String(id)) = params.first() else {
                    return Err(ServiceError::match_failed());
                };
                let Some(connection) = operator.connections.get(id) else {
                    return Ok(Some(Value::Bool(false)));
                };
                tracing::info!(connection = %id, by = ?ctx.user_id, "operator closed a connection");
                connection.close();
                Ok(Some(Value::Bool(true)))
            }
        });
    }

    /// Sends what changed in the connection list since `listed`.
    async fn refresh_list(
        &self,
        sub: &Subscription,
        listed: &mut HashMap<String, Document>,
        names: &mut HashMap<String, String>,
    ) {
        let mut rows: Vec<(String, Option<String>, Option<String>, _)> = self
            .connections
            .all()
            .into_iter()
            .filter_map(|c| {
                let details = c.details()?;
                Some((
                    c.id().to_owned(),
                    c.user_id(),
                    c.client_address().map(|a| a.to_string()),
                    details,
                ))
            })
            .collect();
        rows.sort_by(|a, b| {
            b.3.queued_bytes
                .cmp(&a.3.queued_bytes)
                .then_with(|| b.3.opened_at_ms.total_cmp(&a.3.opened_at_ms))
        });
        rows.truncate(MAX_LISTED);
        let unknown: Vec<String> = rows
            .iter()
            .filter_map(|r| r.1.clone())
            .filter(|u| !names.contains_key(u))
            .collect();
        if !unknown.is_empty() {
            if let Ok(filter) = selector(serde_json::json!({"_id": {"$in": unknown}})) {
                let found = self
                    .store
                    .find(
                        USERS,
                        FindOptions {
                            selector: filter,
                            ..FindOptions::default()
                        },
                    )
                    .await
                    .unwrap_or_default();
                for user in found {
                    if let (Some(Value::String(id)), Some(Value::String(name))) =
                        (user.get("_id"), user.get("username"))
                    {
                        names.insert(id.clone(), name.clone());
                    }
                }
            }
        }
        let mut fresh: HashMap<String, Document> = HashMap::new();
        for (id, user, address, details) in rows {
            let mut d = Document::default();
            d.insert(
                "userId".into(),
                user.clone().map_or(Value::Null, Value::from),
            );
            d.insert(
                "username".into(),
                user.and_then(|u| names.get(&u).cloned())
                    .map_or(Value::Null, Value::from),
            );
            d.insert("address".into(), address.map_or(Value::Null, Value::from));
            d.insert("transport".into(), Value::from(details.transport));
            d.insert("openedAt".into(), Value::Date(details.opened_at_ms));
            d.insert(
                "queuedBytes".into(),
                Value::Number(details.queued_bytes as f64),
            );
            d.insert("self".into(), Value::Bool(id == *sub.connection_id));
            fresh.insert(id, d);
        }
        for id in listed.keys() {
            if !fresh.contains_key(id) {
                let _ = sub.removed(CONNECTIONS, &Value::from(id.as_str()));
            }
        }
        for (id, doc) in &fresh {
            match listed.get(id) {
                None => {
                    let _ = sub.added(CONNECTIONS, &Value::from(id.as_str()), doc.clone());
                }
                Some(old) if old != doc => {
                    let changed: Document = doc
                        .iter()
                        .filter(|(k, v)| old.get(*k) != Some(*v))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    let _ =
                        sub.changed(CONNECTIONS, &Value::from(id.as_str()), changed, Vec::new());
                }
                Some(_) => {}
            }
        }
        *listed = fresh;
    }
}

/// One subscriber: new figures as they are taken, the history when it moves, the
/// connection list every [`LIST_EVERY`], until the subscription stops.
async fn follow(
    operator: Arc<Operator>,
    sub: Subscription,
    mut sent: Arc<Snapshot>,
    mut listed: HashMap<String, Document>,
    mut names: HashMap<String, String>,
) {
    let mut latest = operator.latest.subscribe();
    let mut list_tick = tokio::time::interval(LIST_EVERY);
    list_tick.tick().await;
    loop {
        tokio::select! {
            _ = sub.stopped() => return,
            changed = latest.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = latest.borrow_and_update().clone();
                let _ = sub.changed(FIGURES, &Value::from("figures"), now.figures.clone(), Vec::new());
                if now.history_version != sent.history_version {
                    let _ = sub.changed(FIGURES, &Value::from("history"), now.history.clone(), Vec::new());
                }
                sent = now;
            }
            _ = list_tick.tick() => operator.refresh_list(&sub, &mut listed, &mut names).await,
        }
    }
}

async fn sample_forever(operator: std::sync::Weak<Operator>, source: MetricsText) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(operator) = operator.upgrade() else {
            return;
        };
        operator.sample(&source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP comet_connections_open Open client connections by transport.
# TYPE comet_connections_open gauge
comet_connections_open{transport=\"websocket\"} 3
comet_connections_open{transport=\"sockjs_websocket\"} 1
comet_sessions_open 4
comet_method_calls_total{outcome=\"ok\"} 10
comet_method_calls_total{outcome=\"error\"} 2
comet_method_duration_seconds_bucket{name=\"sendMessage\",le=\"0.001\"} 5
comet_method_duration_seconds_bucket{name=\"sendMessage\",le=\"0.01\"} 9
comet_method_duration_seconds_bucket{name=\"sendMessage\",le=\"+Inf\"} 10
comet_method_duration_seconds_count{name=\"sendMessage\"} 10
comet_method_duration_seconds_count{name=\"login\"} 0
comet_store_info{kind=\"embedded\"} 1
process_cpu_seconds_total 2.5
# EOF
";

    #[test]
    fn exposition_lines_parse_with_labels_and_escapes() {
        let series = parse_exposition(TEXT);
        assert_eq!(series.len(), 12);
        assert_eq!(series[0].name, "comet_connections_open");
        assert_eq!(series[0].label("transport"), Some("websocket"));
        assert_eq!(series[0].value, 3.0);
        assert_eq!(series[2].labels, Vec::new());
        let escaped = parse_line("m{a=\"x\\\"y\",b=\"2\"} 7").unwrap();
        assert_eq!(escaped.label("a"), Some("x\"y"));
        assert_eq!(escaped.label("b"), Some("2"));
        assert_eq!(escaped.value, 7.0);
        assert!(parse_line("garbage").is_none());
        assert!(parse_line("m{a=1} 2").is_none());
        assert!(parse_line("m notanumber").is_none());
    }

    #[test]
    fn figures_give_rates_and_percentiles_from_two_readings() {
        let before = Reading {
            at: 1_000.0,
            series: parse_exposition(
                &TEXT
                    .replace("{outcome=\"ok\"} 10", "{outcome=\"ok\"} 4")
                    .replace(
                        "process_cpu_seconds_total 2.5",
                        "process_cpu_seconds_total 2.0",
                    ),
            ),
        };
        let now = Reading {
            at: 3_000.0,
            series: parse_exposition(TEXT),
        };
        let f = figures(&now, Some(&before), Some(&before));
        assert_eq!(f.get("sessions"), Some(&Value::Number(4.0)));
        assert_eq!(f.get("methodCallsPerSec"), Some(&Value::Number(3.0)));
        assert_eq!(f.get("cpuPercent"), Some(&Value::Number(25.0)));
        assert_eq!(f.get("store"), Some(&Value::from("embedded")));
        let Some(Value::Object(transports)) = f.get("connections") else {
            panic!("no connections: {f:?}");
        };
        assert_eq!(transports.get("websocket"), Some(&Value::Number(3.0)));
        let Some(Value::Array(methods)) = f.get("methods") else {
            panic!("no methods");
        };
        // `login` had no call: not listed. `sendMessage`'s calls all predate the window's
        // start equally, so the percentiles are over every call.
        assert_eq!(methods.len(), 1);
        let Value::Object(m) = &methods[0] else {
            panic!()
        };
        assert_eq!(m.get("p50Ms"), Some(&Value::Number(1.0)));
        assert_eq!(m.get("p90Ms"), Some(&Value::Number(10.0)));
        assert_eq!(m.get("p99Ms"), Some(&Value::Number(10.0)));
    }

    #[test]
    fn quantiles_count_only_the_window() {
        let before = [(0.001, 5.0), (0.01, 5.0), (f64::INFINITY, 5.0)];
        let now = [(0.001, 5.0), (0.01, 7.0), (f64::INFINITY, 8.0)];
        // Three calls in the window: two under 10 ms, one over the last bound.
        assert_eq!(quantile_ms(&now, &before, 0.5), Some(10.0));
        assert_eq!(quantile_ms(&now, &before, 0.99), Some(10.0));
        assert_eq!(quantile_ms(&before, &before, 0.5), None);
    }
}
