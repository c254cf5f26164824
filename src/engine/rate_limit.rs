//! Limits on DDP calls (method calls and subscriptions), in the shape of Meteor's
//! `DDPRateLimiter` with the five rules Rocket.Chat configures: per client address, per user,
//! per connection, per user and name, per connection and name.
//!
//! Owns the counters and the check every call passes before its handler runs, on a socket or
//! through REST's `method.call`. It must not know where the numbers come from: whoever wires
//! the server hands it a source of [`CallRules`] (Rocket.Chat's settings), read again at most
//! once a second, so a changed setting applies without a restart.
//!
//! Counting is by fixed windows per key, as Meteor counts: the call after the allowed number
//! in one window is refused with `too-many-requests` and the time until its window ends.
//! Keys are hashes of their parts, so the hot path allocates nothing.

use crate::model::MeteorError;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

/// How many calls one key may make per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub allowed: u32,
    pub window: Duration,
}

impl Rule {
    /// A rule from a setting's count and window in milliseconds; `None` when either is below
    /// one, since a rule without a count or a window limits nothing (Meteor adds none then).
    pub fn from_numbers(allowed: f64, window_ms: f64) -> Option<Self> {
        (allowed >= 1.0 && window_ms >= 1.0).then(|| Self {
            allowed: allowed.min(f64::from(u32::MAX)) as u32,
            window: Duration::from_millis(window_ms as u64),
        })
    }

    /// The same rule `factor` times as wide and as generous (streams' looser rule).
    fn scaled(self, factor: u32) -> Self {
        Self {
            allowed: self.allowed.saturating_mul(factor),
            window: self.window * factor,
        }
    }
}

/// The rules in force; `None` switches one off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallRules {
    /// Per client address (loopback excepted: the host's own clients and local proxies).
    pub per_address: Option<Rule>,
    /// Per logged-in user, every call.
    pub per_user: Option<Rule>,
    /// Per connection, every call.
    pub per_connection: Option<Rule>,
    /// Per logged-in user and method or publication name.
    pub per_user_and_name: Option<Rule>,
    /// Per connection and method or publication name.
    pub per_connection_and_name: Option<Rule>,
}

/// What kind of call is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CallKind {
    Method,
    Subscription,
}

/// One call as the limiter sees it.
#[derive(Clone, Copy, Debug)]
pub struct Call<'a> {
    pub kind: CallKind,
    pub name: &'a str,
    pub user_id: Option<&'a str>,
    pub connection_id: &'a str,
    pub address: Option<IpAddr>,
}

/// Names whose rules by name are this much wider and more generous (Rocket.Chat's factor
/// for stream subscriptions and writes, which clients make in bursts).
const STREAM_FACTOR: u32 = 4;

/// How often the rules are read again from their source.
const REREAD: Duration = Duration::from_secs(1);

/// Counter shards: calls on different keys rarely wait for one another.
const SHARDS: usize = 16;

/// Past this many keys in a shard, keys whose window has ended are forgotten.
const SHARD_SWEEP_AT: usize = 4096;

type RuleSource = Box<dyn Fn() -> CallRules + Send + Sync>;

type KeyHasher = foldhash::fast::FoldHasher<'static>;

/// The hasher of the counters' maps: their keys are hashes already, taken as they are.
#[derive(Clone, Copy, Default)]
struct KeyIsHash;

impl BuildHasher for KeyIsHash {
    type Hasher = PassThrough;
    fn build_hasher(&self) -> PassThrough {
        PassThrough(0)
    }
}

struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used (the keys are `u64`); anything else still hashes.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// How far the rules leave a name be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Exemption {
    ByName,
    Wholly,
}

/// Which rule a key counts under (part of the key's hash).
#[derive(Clone, Copy, Hash)]
enum Scope {
    Address,
    User,
    Connection,
    UserAndName,
    ConnectionAndName,
}

#[derive(Clone, Copy)]
struct Window {
    started: Instant,
    length: Duration,
    calls: u32,
}

/// The counters and the rules in force.
pub struct CallLimiter {
    source: RwLock<Option<RuleSource>>,
    /// The rules last read, and when.
    rules: RwLock<(Option<Instant>, CallRules)>,
    /// Names the rules leave be: by name only (a limit of their own, `sendMessage`), or
    /// wholly (the test handlers, which exist only for tests and benchmarks).
    exemptions: RwLock<HashMap<String, Exemption, foldhash::fast::RandomState>>,
    shards: Vec<Mutex<HashMap<u64, Window, KeyIsHash>>>,
    hasher: foldhash::fast::FixedState,
}

impl Default for CallLimiter {
    fn default() -> Self {
        Self {
            source: RwLock::new(None),
            rules: RwLock::new((None, CallRules::default())),
            exemptions: RwLock::new(HashMap::default()),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::default()))
                .collect(),
            hasher: foldhash::fast::FixedState::with_seed(rand::random()),
        }
    }
}

impl CallLimiter {
    /// A limiter with no rules (every call passes) until a source is given.
    pub fn new() -> Self {
        Self::default()
    }

    /// Where the rules come from from now on.
    pub fn use_source(&self, source: impl Fn() -> CallRules + Send + Sync + 'static) {
        *self.source.write().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(source));
        self.rules.write().unwrap_or_else(|p| p.into_inner()).0 = None;
    }

    /// Leaves `name` out of the rules by name: it is limited by a rule of its own.
    pub fn has_own_limit(&self, name: &str) {
        self.exemptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Exemption::ByName);
    }

    /// Leaves `name` out of every rule (test and benchmark handlers, never served in
    /// production).
    pub fn exempt(&self, name: &str) {
        self.exemptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.to_owned(), Exemption::Wholly);
    }

    /// The rules in force now (read again from the source when due).
    pub fn rules(&self) -> CallRules {
        self.rules_at(Instant::now())
    }

    fn rules_at(&self, now: Instant) -> CallRules {
        {
            let held = self.rules.read().unwrap_or_else(|p| p.into_inner());
            if held.0.is_some_and(|at| now.duration_since(at) < REREAD) {
                return held.1;
            }
        }
        let fresh = match &*self.source.read().unwrap_or_else(|p| p.into_inner()) {
            Some(source) => source(),
            None => CallRules::default(),
        };
        *self.rules.write().unwrap_or_else(|p| p.into_inner()) = (Some(now), fresh);
        fresh
    }

    /// Counts `call` under every rule that applies to it; `Err` with Meteor's
    /// `too-many-requests` when any of them is over its limit (the call still counts, as in
    /// Meteor, so a client that keeps calling stays refused until its window ends).
    pub fn check(&self, call: &Call<'_>) -> Result<(), MeteorError> {
        let now = Instant::now();
        let rules = self.rules_at(now);
        if rules == CallRules::default() {
            return Ok(());
        }
        let exemption = self
            .exemptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(call.name)
            .copied();
        if exemption == Some(Exemption::Wholly) {
            return Ok(());
        }
        let mut wait: Option<Duration> = None;
        let mut count = |rule: Option<Rule>, scope: Scope, parts: &dyn Fn(&mut KeyHasher)| {
            let Some(rule) = rule else { return };
            if let Some(left) = self.hit(rule, scope, parts, now) {
                wait = Some(wait.map_or(left, |w| w.max(left)));
            }
        };
        let kind = call.kind;
        if let Some(ip) = call.address.filter(|ip| !ip.is_loopback()) {
            count(rules.per_address, Scope::Address, &|h| ip.hash(h));
        }
        if let Some(user) = call.user_id {
            count(rules.per_user, Scope::User, &|h| user.hash(h));
        }
        count(rules.per_connection, Scope::Connection, &|h| {
            call.connection_id.hash(h)
        });
        if exemption.is_none() {
            let factor = if call.name.starts_with("stream-") {
                STREAM_FACTOR
            } else {
                1
            };
            if let Some(user) = call.user_id {
                count(
                    rules.per_user_and_name.map(|r| r.scaled(factor)),
                    Scope::UserAndName,
                    &|h| {
                        user.hash(h);
                        kind.hash(h);
                        call.name.hash(h);
                    },
                );
            }
            count(
                rules.per_connection_and_name.map(|r| r.scaled(factor)),
                Scope::ConnectionAndName,
                &|h| {
                    call.connection_id.hash(h);
                    kind.hash(h);
                    call.name.hash(h);
                },
            );
        }
        match wait {
            None => Ok(()),
            Some(left) => Err(too_many_requests(left)),
        }
    }

    /// Counts one call on the key `parts` make under `scope`; the time left in its window
    /// when that call is over the limit.
    fn hit(
        &self,
        rule: Rule,
        scope: Scope,
        parts: &dyn Fn(&mut KeyHasher),
        now: Instant,
    ) -> Option<Duration> {
        let mut hasher = self.hasher.build_hasher();
        scope.hash(&mut hasher);
        parts(&mut hasher);
        let key = hasher.finish();
        // The high bits pick the shard; the map uses the whole key.
        let shard = &self.shards[(key >> 60) as usize % SHARDS];
        let mut windows = shard.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= SHARD_SWEEP_AT {
            windows.retain(|_, w| now.duration_since(w.started) < w.length);
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            length: rule.window,
            calls: 0,
        });
        if now.duration_since(window.started) >= rule.window {
            *window = Window {
                started: now,
                length: rule.window,
                calls: 0,
            };
        }
        window.length = rule.window;
        window.calls = window.calls.saturating_add(1);
        (window.calls > rule.allowed).then(|| {
            rule.window
                .saturating_sub(now.duration_since(window.started))
        })
    }
}

/// Meteor's refusal of a call over a limit, with the milliseconds until it may try again.
pub fn too_many_requests(left: Duration) -> MeteorError {
    let ms = left.as_millis() as u64;
    MeteorError::new(
        "too-many-requests",
        format!(
            "Error, too many requests. Please slow down. You must wait {} seconds before trying again.",
            ms.div_ceil(1000)
        ),
    )
    .with_details(serde_json::json!({"timeToReset": ms}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(allowed: u32, ms: u64) -> Option<Rule> {
        Some(Rule {
            allowed,
            window: Duration::from_millis(ms),
        })
    }

    fn call<'a>(name: &'a str, user: Option<&'a str>, connection: &'a str) -> Call<'a> {
        Call {
            kind: CallKind::Method,
            name,
            user_id: user,
            connection_id: connection,
            address: Some("10.1.2.3".parse().unwrap_or(IpAddr::from([10, 1, 2, 3]))),
        }
    }

    #[test]
    fn a_rule_needs_a_count_and_a_window() {
        assert_eq!(Rule::from_numbers(0.0, 1000.0), None);
        assert_eq!(Rule::from_numbers(5.0, 0.0), None);
        assert_eq!(
            Rule::from_numbers(5.0, 1000.0),
            Some(Rule {
                allowed: 5,
                window: Duration::from_secs(1)
            })
        );
        assert_eq!(
            Rule::from_numbers(1e12, 1.0).map(|r| r.allowed),
            Some(u32::MAX)
        );
    }

    #[test]
    fn no_rules_let_everything_through() {
        let limiter = CallLimiter::new();
        for _ in 0..1000 {
            assert!(limiter.check(&call("m", Some("u"), "c")).is_ok());
        }
    }

    #[test]
    fn the_call_after_the_allowed_ones_is_refused_per_connection_and_name() {
        let limiter = CallLimiter::new();
        limiter.use_source(|| CallRules {
            per_connection_and_name: rule(3, 60_000),
            ..CallRules::default()
        });
        for _ in 0..3 {
            assert!(limiter.check(&call("m", None, "c1")).is_ok());
        }
        let refused = limiter
            .check(&call("m", None, "c1"))
            .expect_err("fourth call");
        assert_eq!(refused.error.to_string(), "too-many-requests");
        assert!(refused.details.is_some(), "timeToReset given");
        assert!(limiter.check(&call("other", None, "c1")).is_ok(), "by name");
        assert!(
            limiter.check(&call("m", None, "c2")).is_ok(),
            "by connection"
        );
    }

    #[test]
    fn streams_get_four_times_the_calls_and_own_limits_are_left_alone() {
        let limiter = CallLimiter::new();
        limiter.use_source(|| CallRules {
            per_user_and_name: rule(2, 60_000),
            ..CallRules::default()
        });
        limiter.has_own_limit("sendMessage");
        for _ in 0..8 {
            assert!(limiter
                .check(&call("stream-notify-room", Some("u"), "c"))
                .is_ok());
        }
        assert!(limiter
            .check(&call("stream-notify-room", Some("u"), "c"))
            .is_err());
        for _ in 0..50 {
            assert!(limiter.check(&call("sendMessage", Some("u"), "c")).is_ok());
        }
        // No user, no rule per user.
        for _ in 0..10 {
            assert!(limiter.check(&call("m", None, "c")).is_ok());
        }
    }

    #[test]
    fn an_exempt_name_is_never_counted() {
        let limiter = CallLimiter::new();
        limiter.use_source(|| CallRules {
            per_connection: rule(2, 60_000),
            ..CallRules::default()
        });
        limiter.exempt("echo");
        for _ in 0..10 {
            assert!(limiter.check(&call("echo", None, "c")).is_ok());
        }
        assert!(limiter.check(&call("m", None, "c")).is_ok());
        assert!(limiter.check(&call("m", None, "c")).is_ok());
        assert!(limiter.check(&call("m", None, "c")).is_err());
    }

    #[test]
    fn a_user_is_counted_across_connections_and_windows_end() {
        let limiter = CallLimiter::new();
        limiter.use_source(|| CallRules {
            per_user: rule(2, 40),
            ..CallRules::default()
        });
        assert!(limiter.check(&call("a", Some("u"), "c1")).is_ok());
        assert!(limiter.check(&call("b", Some("u"), "c2")).is_ok());
        assert!(limiter.check(&call("c", Some("u"), "c3")).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(limiter.check(&call("c", Some("u"), "c3")).is_ok());
    }

    #[test]
    fn loopback_addresses_are_not_limited_by_address() {
        let limiter = CallLimiter::new();
        limiter.use_source(|| CallRules {
            per_address: rule(1, 60_000),
            ..CallRules::default()
        });
        let local = Call {
            address: Some(IpAddr::from([127, 0, 0, 1])),
            ..call("m", None, "c")
        };
        assert!(limiter.check(&local).is_ok() && limiter.check(&local).is_ok());
        assert!(limiter.check(&call("m", None, "c")).is_ok());
        assert!(
            limiter.check(&call("n", None, "d")).is_err(),
            "same address"
        );
    }
}
