//! A plugin's figures: the counters its hooks, calls and crashes raise, as `/metrics`
//! shows them (one family per figure, labelled by plugin) and administrators read them
//! (`plugins.list`'s `counters`). It must not decide anything: the runner, the bridge and
//! the API count, this only keeps and renders.

use super::{Plugin, State};
use serde_json::Value as Json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// What is counted of a plugin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    HooksAnswered,
    HooksMissed,
    HooksFailed,
    RefusedByPolicy,
    EventsDropped,
    ApiCalls,
    ApiLimited,
    Crashes,
    HttpRequests,
}

/// Each figure: its key for administrators, its `/metrics` family, and what it counts.
#[rustfmt::skip]
const FIGURES: [(Figure, &str, &str, &str); 9] = [
    (Figure::HooksAnswered, "hooksAnswered", "comet_plugin_hooks_answered", "Hook calls a plugin answered in time"),
    (Figure::HooksMissed, "hooksMissed", "comet_plugin_hooks_missed", "Hook calls that missed their deadline (the plugin's policy applied)"),
    (Figure::HooksFailed, "hooksFailed", "comet_plugin_hooks_failed", "Hook calls to a plugin not running, or answered wrongly (the policy applied)"),
    (Figure::RefusedByPolicy, "refusedByPolicy", "comet_plugin_refused_by_policy", "Writes refused by a fail-closed plugin that could not answer"),
    (Figure::EventsDropped, "eventsDropped", "comet_plugin_events_dropped", "Has-been events a plugin could not be sent"),
    (Figure::ApiCalls, "apiCalls", "comet_plugin_api_calls", "Calls a plugin made into comet"),
    (Figure::ApiLimited, "apiLimited", "comet_plugin_api_limited", "Calls a plugin made over its rate"),
    (Figure::Crashes, "crashes", "comet_plugin_crashes", "Times a plugin's process died or was ended"),
    (Figure::HttpRequests, "httpRequests", "comet_plugin_http_requests", "HTTP requests handed to a plugin"),
];

/// A plugin's counters, one per [`Figure`].
#[derive(Debug, Default)]
pub struct Counters([AtomicU64; FIGURES.len()]);

impl Counters {
    /// Counts one more of `figure`.
    pub fn count(&self, figure: Figure) {
        self.0[figure as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, figure: Figure) -> u64 {
        self.0[figure as usize].load(Ordering::Relaxed)
    }

    /// The counters as administrators read them.
    pub(super) fn view(&self) -> Json {
        Json::Object(
            FIGURES
                .iter()
                .map(|(figure, key, _, _)| ((*key).to_owned(), Json::from(self.get(*figure))))
                .collect(),
        )
    }
}

/// Every plugin's figures as exposition text.
pub fn render(all: &[Arc<Plugin>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (figure, _, name, help) in FIGURES {
        let _ = writeln!(out, "# HELP {name} {help}.\n# TYPE {name} counter");
        for plugin in all {
            let value = plugin.counters.get(figure);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_stands_once_in_the_table_at_its_own_place() {
        for (at, (figure, ..)) in FIGURES.iter().enumerate() {
            assert_eq!(*figure as usize, at);
        }
        let counters = Counters::default();
        counters.count(Figure::Crashes);
        assert_eq!(counters.view()["crashes"], 1);
        assert_eq!(counters.view()["hooksMissed"], 0);
    }
}
