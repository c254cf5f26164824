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

/// Failed logins counted in the store, in fixed windows per key, so that every instance of
/// a deployment sees one count: a guesser spreading attempts over instances, or waiting for
/// a restart, is locked out all the same.
pub struct SharedFailures {
    store: std::sync::Arc<dyn crate::storage::Store>,
    /// What the keys count (`user`, `ip`): the documents' ids start with it.
    kind: &'static str,
}

impl SharedFailures {
    pub fn new(store: std::sync::Arc<dyn crate::storage::Store>, kind: &'static str) -> Self {
        Self { store, kind }
    }

    fn id(&self, key: &str) -> String {
        format!("{}:{key}", self.kind)
    }

    /// Counts one failure under `key`: in the current window, or starting a new one.
    pub async fn count(&self, key: &str, rule: Rule) -> Result<(), ServiceError> {
        let (id, now) = (self.id(key), now_ms());
        let since = now - rule.window.as_millis() as f64;
        let counted = self
            .store
            .update(
                LOGIN_FAILURES,
                selector(json!({"_id": &id, "start": {"$gt": {"$date": since}}}))?,
                update(json!({"$inc": {"n": 1}}))?,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        if counted.matched == 0 {
            self.store
                .update(
                    LOGIN_FAILURES,
                    selector(json!({"_id": &id}))?,
                    update(json!({"$set": {"start": {"$date": now}, "n": 1}}))?,
                    UpdateOptions {
                        upsert: true,
                        multi: false,
                    },
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))?;
        }
        Ok(())
    }

    /// The time until `key`'s window resets, when its failures reached the allowed number.
    pub async fn blocked_for(
        &self,
        key: &str,
        rule: Rule,
    ) -> Result<Option<Duration>, ServiceError> {
        let found = crate::engine::build::find_one(
            &*self.store,
            LOGIN_FAILURES,
            json!({"_id": self.id(key)}),
        )
        .await?;
        let Some(found) = found else { return Ok(None) };
        let (Some(Value::Date(start)), Some(n)) =
            (found.get("start"), found.get("n").and_then(Value::as_f64))
        else {
            return Ok(None);
        };
        let elapsed = (now_ms() - start).max(0.0);
        let window = rule.window.as_millis() as f64;
        Ok((elapsed < window && n >= f64::from(rule.allowed))
            .then(|| Duration::from_millis((window - elapsed) as u64)))
    }
}

use crate::chat::collections::LOGIN_FAILURES;
use crate::engine::build::{now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::model::Value;
use crate::storage::UpdateOptions;
use serde_json::json;

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
