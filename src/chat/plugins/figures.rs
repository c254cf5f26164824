//! A plugin's figures: the counters its hooks, calls and crashes raise, as `/metrics`
//! shows them (one family per counter, labelled by plugin) and administrators read them.
//! It must not decide anything: the runner, the bridge and the API count, this only keeps
//! and renders.

use super::{Plugin, State};
use serde_json::{json, Value as Json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A plugin's figures, for `/metrics` and the administrators.
#[derive(Debug, Default)]
pub struct Counters {
    hooks_answered: AtomicU64,
    hooks_missed: AtomicU64,
    hooks_failed: AtomicU64,
    refused_by_policy: AtomicU64,
    events_dropped: AtomicU64,
    api_calls: AtomicU64,
    api_limited: AtomicU64,
    crashes: AtomicU64,
    http_requests: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn hook_ok(&self) {
        Self::bump(&self.hooks_answered)
    }
    pub fn hook_missed(&self) {
        Self::bump(&self.hooks_missed)
    }
    pub fn hook_failed(&self) {
        Self::bump(&self.hooks_failed)
    }
    pub fn refused_by_policy(&self) {
        Self::bump(&self.refused_by_policy)
    }
    pub fn dropped(&self) {
        Self::bump(&self.events_dropped)
    }
    pub fn api_call(&self) {
        Self::bump(&self.api_calls)
    }
    pub fn api_limited(&self) {
        Self::bump(&self.api_limited)
    }
    pub fn crash(&self) {
        Self::bump(&self.crashes)
    }
    pub fn http_request(&self) {
        Self::bump(&self.http_requests)
    }

    pub(super) fn view(&self) -> Json {
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "hooksAnswered": n(&self.hooks_answered), "hooksMissed": n(&self.hooks_missed),
            "hooksFailed": n(&self.hooks_failed), "refusedByPolicy": n(&self.refused_by_policy),
            "eventsDropped": n(&self.events_dropped), "apiCalls": n(&self.api_calls),
            "apiLimited": n(&self.api_limited), "crashes": n(&self.crashes),
            "httpRequests": n(&self.http_requests),
        })
    }
}

/// One counter family of the plugins' figures in `/metrics`.
struct Family {
    name: &'static str,
    help: &'static str,
    read: fn(&Counters) -> &AtomicU64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "comet_plugin_hooks_answered",
        help: "Hook calls a plugin answered in time",
        read: |c| &c.hooks_answered,
    },
    Family {
        name: "comet_plugin_hooks_missed",
        help: "Hook calls that missed their deadline (the plugin's policy applied)",
        read: |c| &c.hooks_missed,
    },
    Family {
        name: "comet_plugin_hooks_failed",
        help: "Hook calls to a plugin not running, or answered wrongly (the policy applied)",
        read: |c| &c.hooks_failed,
    },
    Family {
        name: "comet_plugin_refused_by_policy",
        help: "Writes refused by a fail-closed plugin that could not answer",
        read: |c| &c.refused_by_policy,
    },
    Family {
        name: "comet_plugin_events_dropped",
        help: "Has-been events a plugin could not be sent",
        read: |c| &c.events_dropped,
    },
    Family {
        name: "comet_plugin_api_calls",
        help: "Calls a plugin made into comet",
        read: |c| &c.api_calls,
    },
    Family {
        name: "comet_plugin_api_limited",
        help: "Calls a plugin made over its rate",
        read: |c| &c.api_limited,
    },
    Family {
        name: "comet_plugin_crashes",
        help: "Times a plugin's process died or was ended",
        read: |c| &c.crashes,
    },
    Family {
        name: "comet_plugin_http_requests",
        help: "HTTP requests handed to a plugin",
        read: |c| &c.http_requests,
    },
];

/// Every plugin's figures as exposition text.
pub fn render(all: &[Arc<Plugin>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for family in FAMILIES {
        let (name, help) = (family.name, family.help);
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for plugin in all {
            let value = (family.read)(&plugin.counters).load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_total{{plugin=\"{}\"}} {value}", plugin.id);
        }
    }
    let _ = writeln!(out, "# HELP comet_plugin_up Whether a plugin's process is running (1) or not (0).\n# TYPE comet_plugin_up gauge");
    for plugin in all {
        let up = u8::from(plugin.state().0 == State::Running);
        let _ = writeln!(out, "comet_plugin_up{{plugin=\"{}\"}} {up}", plugin.id);
    }
    out
}
