//! Login attempts counted per key (a connection, a client address) in fixed windows, as
//! Meteor's DDPRateLimiter counts them: the call after the allowed number in one window is
//! refused with `too-many-requests` and the time until the window resets. The rule (how
//! many, how long) is given with each call, so a changed setting applies at once.

use crate::model::MeteorError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How many calls one key may make per window (the DDP limiter's rule).
pub use crate::engine::rate_limit::Rule;

/// Counts per key under whatever rule each call brings.
#[derive(Default)]
pub struct Limiter {
    counts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl Limiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts an event under `key` (a failed login, say) without refusing anything.
    pub fn count(&self, key: &str, rule: Rule) {
        let _ = self.hit(key, rule);
    }

    /// The time until `key`'s window resets, when it has reached the allowed number.
    pub fn blocked_for(&self, key: &str, rule: Rule) -> Option<Duration> {
        let now = Instant::now();
        let counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let (start, n) = counts.get(key)?;
        let elapsed = now.duration_since(*start);
        (elapsed < rule.window && *n >= rule.allowed).then(|| rule.window - elapsed)
    }

    /// Counts a call under `key`; `Err` with Meteor's error once over the limit.
    pub fn hit(&self, key: &str, rule: Rule) -> Result<(), MeteorError> {
        let now = Instant::now();
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if counts.len() > 100_000 {
            // Old windows of keys gone quiet: forget them rather than grow.
            counts.retain(|_, (start, _)| now.duration_since(*start) < rule.window);
        }
        let entry = counts.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(entry.0) >= rule.window {
            *entry = (now, 0);
        }
        entry.1 += 1;
        if entry.1 <= rule.allowed {
            return Ok(());
        }
        let reset = rule.window.saturating_sub(now.duration_since(entry.0));
        Err(crate::engine::rate_limit::too_many_requests(reset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_after_the_allowed_ones_is_refused_until_the_window_resets() {
        // A window long enough that a loaded machine still makes three calls within it.
        let rule = Rule {
            allowed: 2,
            window: Duration::from_millis(500),
        };
        let limiter = Limiter::new();
        assert!(limiter.hit("a", rule).is_ok() && limiter.hit("a", rule).is_ok());
        let refused = limiter.hit("a", rule).expect_err("third call");
        assert_eq!(refused.error.to_string(), "too-many-requests");
        assert!(
            limiter.hit("b", rule).is_ok(),
            "other keys are counted apart"
        );
        std::thread::sleep(Duration::from_millis(600));
        assert!(limiter.hit("a", rule).is_ok());
        assert!(limiter.blocked_for("a", rule).is_none());
        limiter.count("a", rule);
        assert!(
            limiter.blocked_for("a", rule).is_some(),
            "two counted: blocked until reset"
        );
        let looser = Rule { allowed: 5, ..rule };
        assert!(
            limiter.blocked_for("a", looser).is_none() && limiter.hit("a", looser).is_ok(),
            "a rule changed by a setting applies to the counts so far"
        );
    }
}
