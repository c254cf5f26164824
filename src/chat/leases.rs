//! Work that must run once per deployment, not once per instance (the upkeep of the
//! store, a plugin's scheduled job): each job has a lease in the store that one instance
//! holds at a time and renews; when its holder dies, another takes it over once the lease
//! runs out.
//!
//! Owns the `comet_leases` documents (`{_id: job, holder, until}`), the renewing loop, and
//! the jobs run under a lease. A lease is taken with one conditional write (free, expired,
//! or already ours), which both stores apply atomically, so two instances never both win.
//! A holder that cannot renew stops running its jobs before its lease can run out
//! elsewhere. It must not know what the jobs do.

use crate::chat::collections::LEASES;
use crate::engine::build::{now_ms, selector, update};
use crate::engine::error::ServiceError;
use crate::storage::{Store, StoreError, UpdateOptions};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// A job run under a lease.
pub type Job = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What this instance knows of one lease.
#[derive(Default)]
struct Lease {
    /// When this instance last took or renewed it (none: not held).
    renewed: Option<Instant>,
    /// How many times a job ran here under it.
    runs: Arc<AtomicU64>,
}

/// The leases this instance wants, and which it holds.
pub struct Leases {
    store: Arc<dyn Store>,
    instance: Arc<str>,
    ttl: Duration,
    leases: Mutex<HashMap<String, Lease>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Leases {
    /// Leases of `ttl` for `instance`, renewed every third of it until the service is gone.
    pub fn start(store: Arc<dyn Store>, instance: Arc<str>, ttl: Duration) -> Arc<Self> {
        let leases = Arc::new(Self {
            store,
            instance,
            ttl: ttl.max(Duration::from_millis(300)),
            leases: Mutex::new(HashMap::new()),
        });
        tokio::spawn(renew_all(Arc::downgrade(&leases)));
        leases
    }

    /// Asks for `name`'s lease from now on (taken at the next renewal when free).
    pub fn want(&self, name: &str) {
        lock(&self.leases).entry(name.to_owned()).or_default();
    }

    /// Stops asking for `name`'s lease and gives it up when held.
    pub async fn forget(&self, name: &str) {
        let held = lock(&self.leases)
            .remove(name)
            .is_some_and(|l| l.renewed.is_some());
        if held {
            self.release(name).await;
        }
    }

    /// Whether this instance holds `name` now: renewed within the lease, with a margin so
    /// that it stops before another instance may take over.
    pub fn holds(&self, name: &str) -> bool {
        let margin = self.ttl / 4;
        lock(&self.leases)
            .get(name)
            .and_then(|l| l.renewed)
            .is_some_and(|at| at.elapsed() + margin < self.ttl)
    }

    /// Runs `job` every `every` while this instance holds `name`'s lease, until the
    /// service is gone.
    pub fn every(self: &Arc<Self>, name: &str, every: Duration, job: Job) {
        self.want(name);
        let (leases, name) = (Arc::downgrade(self), name.to_owned());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(leases) = leases.upgrade() else {
                    return;
                };
                if leases.holds(&name) {
                    leases.count_run(&name);
                    job().await;
                }
            }
        });
    }

    /// Counts a run of `name`'s job here.
    pub fn count_run(&self, name: &str) {
        if let Some(lease) = lock(&self.leases).get(name) {
            lease.runs.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Takes or renews `name`: whether this instance holds it now.
    async fn take(&self, name: &str) -> Result<bool, ServiceError> {
        let now = now_ms();
        let until = now + self.ttl.as_millis() as f64;
        let taken = self
            .store
            .update(
                LEASES,
                selector(serde_json::json!({
                    "_id": name,
                    "$or": [{"holder": &*self.instance}, {"until": {"$lt": {"$date": now}}}],
                }))?,
                update(serde_json::json!({
                    "$set": {"holder": &*self.instance, "until": {"$date": until}},
                }))?,
                UpdateOptions::default(),
            )
            .await
            .map_err(|e| ServiceError::from_store(&e))?;
        if taken.matched > 0 {
            return Ok(true);
        }
        let fresh = crate::engine::build::doc(serde_json::json!({
            "_id": name, "holder": &*self.instance, "until": {"$date": until},
        }))?;
        match self.store.insert(LEASES, fresh).await {
            Ok(_) => Ok(true),
            Err(StoreError::DuplicateKey(_)) => Ok(false),
            Err(e) => Err(ServiceError::from_store(&e)),
        }
    }

    /// Gives `name` up, so another instance takes it at once rather than when it runs out.
    async fn release(&self, name: &str) {
        let freed = async {
            self.store
                .remove(
                    LEASES,
                    selector(serde_json::json!({"_id": name, "holder": &*self.instance}))?,
                    Default::default(),
                )
                .await
                .map_err(|e| ServiceError::from_store(&e))
        };
        if let Err(err) = freed.await {
            tracing::warn!(lease = name, cause = %err, "a lease could not be given up");
        }
    }

    /// Gives up every lease held (a graceful shutdown): their jobs move at once.
    pub async fn release_all(&self) {
        let held: Vec<String> = lock(&self.leases)
            .iter_mut()
            .filter_map(|(name, lease)| lease.renewed.take().map(|_| name.clone()))
            .collect();
        for name in held {
            self.release(&name).await;
        }
    }

    /// Takes or renews every wanted lease once.
    async fn renew(&self) {
        let names: Vec<String> = lock(&self.leases).keys().cloned().collect();
        for name in names {
            self.renew_one(&name).await;
        }
    }

    /// Asks for `name` and tries to take it now rather than at the next renewal.
    pub async fn want_now(&self, name: &str) {
        self.want(name);
        self.renew_one(name).await;
    }

    /// Takes or renews `name` once, noting the outcome.
    async fn renew_one(&self, name: &str) {
        let started = Instant::now();
        let outcome = self.take(name).await;
        let mut leases = lock(&self.leases);
        let Some(lease) = leases.get_mut(name) else {
            return;
        };
        let was_held = lease.renewed.is_some();
        match outcome {
            Ok(true) => {
                lease.renewed = Some(started);
                if !was_held {
                    tracing::info!(lease = %name, "lease taken: its job runs on this instance");
                }
            }
            Ok(false) => {
                lease.renewed = None;
                if was_held {
                    tracing::warn!(lease = %name, "lease lost to another instance");
                }
            }
            Err(err) => {
                // Kept until it would run out: `holds` stops the job before then.
                tracing::warn!(lease = %name, cause = %err, "a lease could not be renewed");
            }
        }
    }

    /// The leases' figures in Prometheus' text format.
    pub fn metrics_text(&self) -> String {
        let mut names: Vec<(String, bool, u64)> = lock(&self.leases)
            .iter()
            .map(|(n, l)| (n.clone(), false, l.runs.load(Ordering::Relaxed)))
            .collect();
        names.sort();
        for entry in &mut names {
            entry.1 = self.holds(&entry.0);
        }
        let mut out = String::from(
            "# HELP comet_lease_held Whether this instance holds the lease of a deployment-wide job.\n# TYPE comet_lease_held gauge\n",
        );
        for (name, held, _) in &names {
            out.push_str(&format!(
                "comet_lease_held{{lease=\"{}\"}} {}\n",
                label(name),
                u8::from(*held)
            ));
        }
        out.push_str("# HELP comet_lease_runs Runs of a deployment-wide job on this instance.\n# TYPE comet_lease_runs counter\n");
        for (name, _, runs) in &names {
            out.push_str(&format!(
                "comet_lease_runs_total{{lease=\"{}\"}} {runs}\n",
                label(name)
            ));
        }
        out
    }
}

/// `text` as a Prometheus label value.
fn label(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Renews every wanted lease every third of the lease, until the service is gone.
async fn renew_all(leases: Weak<Leases>) {
    let Some(every) = leases.upgrade().map(|l| l.ttl / 3) else {
        return;
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(leases) = leases.upgrade() else {
            return;
        };
        leases.renew().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::EmbeddedStore;

    #[tokio::test]
    async fn one_instance_holds_a_lease_and_another_takes_it_when_it_runs_out() {
        let dir = std::env::temp_dir().join(format!(
            "comet-leases-{}",
            crate::model::random::random_id()
        ));
        let store: Arc<dyn Store> = EmbeddedStore::open(&dir).unwrap();
        let ttl = Duration::from_millis(600);
        let a = Leases::start(store.clone(), "A".into(), ttl);
        let b = Leases::start(store.clone(), "B".into(), ttl);
        assert!(a.take("upkeep").await.unwrap());
        assert!(!b.take("upkeep").await.unwrap(), "held by A");
        assert!(a.take("upkeep").await.unwrap(), "A renews its own");
        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
        assert!(b.take("upkeep").await.unwrap(), "run out: B takes it");
        assert!(!a.take("upkeep").await.unwrap(), "and A no longer has it");
        // Given up, it is free at once.
        b.want("upkeep");
        b.renew().await;
        assert!(b.holds("upkeep"));
        b.release_all().await;
        assert!(!b.holds("upkeep"));
        assert!(a.take("upkeep").await.unwrap());
        drop((a, b, store));
        let _ = std::fs::remove_dir_all(dir);
    }
}
