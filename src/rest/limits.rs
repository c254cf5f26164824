//! Rocket.Chat's REST rate limiter: each route (path and HTTP method) allows so many requests
//! from one client address per window (`API_Enable_Rate_Limiter_Limit_Calls_Default` per
//! `API_Enable_Rate_Limiter_Limit_Time_Default`, 10 a minute; `users.register`
//! `Rate_Limiter_Limit_RegisterUser`, 1), with the `X-RateLimit-*` headers on every limited
//! answer and 429 past the limit. Callers with `api-bypass-rate-limit` are not counted.
//!
//! Owns the counters only; which rule a route has and who bypasses it is decided by the
//! route table in `rest/mod.rs`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How many requests per window one address may make to one route.
pub(super) use crate::engine::rate_limit::Rule as RouteRule;

/// One request counted: whether it may go on, and what its headers say.
#[derive(Debug)]
pub(super) struct Counted {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Until the window ends.
    pub reset_in: Duration,
}

impl Counted {
    /// `X-RateLimit-Limit`, `-Remaining` and `-Reset` (the end of the window, in
    /// milliseconds since the epoch).
    pub(super) fn headers(&self) -> Vec<(&'static str, String)> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        vec![
            ("x-ratelimit-limit", self.limit.to_string()),
            ("x-ratelimit-remaining", self.remaining.to_string()),
            (
                "x-ratelimit-reset",
                (now_ms + self.reset_in.as_millis() as u64).to_string(),
            ),
        ]
    }
}

/// Past this many keys, keys whose window has ended are forgotten.
const SWEEP_AT: usize = 10_000;

/// A route's window for one address: when it started, how long it lasts, the requests in it.
type Window = (Instant, Duration, u32);

/// Counters per (route, address).
#[derive(Default)]
pub(super) struct RouteLimiter {
    windows: Mutex<HashMap<(String, IpAddr), Window>>,
}

impl RouteLimiter {
    /// Counts one request to `route` from `address` under `rule`.
    pub(super) fn count(&self, route: &str, address: IpAddr, rule: RouteRule) -> Counted {
        let now = Instant::now();
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= SWEEP_AT {
            windows.retain(|_, (started, length, _)| now.duration_since(*started) < *length);
        }
        let window = windows
            .entry((route.to_owned(), address))
            .or_insert((now, rule.window, 0));
        if now.duration_since(window.0) >= rule.window {
            *window = (now, rule.window, 0);
        }
        window.1 = rule.window;
        window.2 = window.2.saturating_add(1);
        Counted {
            allowed: window.2 <= rule.allowed,
            limit: rule.allowed,
            remaining: rule.allowed.saturating_sub(window.2),
            reset_in: rule.window.saturating_sub(now.duration_since(window.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_and_address_counts_apart_and_the_headers_count_down() {
        let limiter = RouteLimiter::default();
        let rule = RouteRule {
            allowed: 2,
            window: Duration::from_secs(60),
        };
        let a: IpAddr = IpAddr::from([10, 0, 0, 1]);
        let b: IpAddr = IpAddr::from([10, 0, 0, 2]);
        let first = limiter.count("GET /x", a, rule);
        assert!(first.allowed && first.remaining == 1 && first.limit == 2);
        assert!(limiter.count("GET /x", a, rule).allowed);
        let third = limiter.count("GET /x", a, rule);
        assert!(!third.allowed && third.remaining == 0);
        assert!(third.reset_in <= Duration::from_secs(60));
        assert!(limiter.count("GET /y", a, rule).allowed, "another route");
        assert!(limiter.count("GET /x", b, rule).allowed, "another address");
        let headers = third.headers();
        assert_eq!(headers[0], ("x-ratelimit-limit", "2".to_owned()));
        assert_eq!(headers[1], ("x-ratelimit-remaining", "0".to_owned()));
    }
}
