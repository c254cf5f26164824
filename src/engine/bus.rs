//! The seam for events that mirror no stored data (typing, user activity, and later a
//! plugin's stream events and cluster events): a service publishes them on the [`Bus`], and
//! the bus brings them to the stream listeners of every instance, this one's included.
//!
//! Owns the [`Bus`] trait, the directory of this process's streams an event is delivered to
//! ([`LocalStreams`]), and the in-process bus ([`LocalBus`]), which delivers at once. A
//! broker between instances (NATS) is another implementation of the same trait over the
//! same directory; services never know which one they have. Events that mirror data never
//! go here: every instance hears those from the store's change feed, and sending them on
//! the bus as well would tell them twice. It must not know what the events mean.

use crate::model::Value;
use std::collections::HashMap;
use std::sync::{Arc, RwLock, Weak};

/// An event for the listeners of a stream, wherever they are connected.
#[derive(Clone, Debug, PartialEq)]
pub struct BusEvent {
    /// The stream's collection (`stream-notify-room`).
    pub stream: Arc<str>,
    /// The event name (`<rid>/typing`).
    pub event: String,
    pub args: Vec<Value>,
    /// The connection the event came from, which does not hear it back.
    pub except: Option<Arc<str>>,
}

/// Where events that mirror no data travel between the services and every instance's
/// listeners.
pub trait Bus: Send + Sync {
    /// Sends `event` to the listeners of every instance, this one's included. Never waits:
    /// an event that cannot travel now is dropped (typing is worth nothing late).
    fn publish(&self, event: BusEvent);
}

/// A stream as the bus sees it: where an event's frames go in this process.
pub trait StreamSink: Send + Sync {
    /// Sends `event` with `args` to this process's listeners but `except`; how many got it.
    fn deliver(&self, event: &str, args: &[Value], except: Option<&str>) -> usize;
}

/// This process's streams by collection, where events from any bus are delivered.
#[derive(Default)]
pub struct LocalStreams {
    streams: RwLock<HashMap<Arc<str>, Weak<dyn StreamSink>>>,
}

impl LocalStreams {
    /// Files `stream` under `collection`.
    pub fn add(&self, collection: &str, stream: Weak<dyn StreamSink>) {
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection.into(), stream);
    }

    /// Delivers `event` to this process's listeners; how many got it (none for a stream
    /// this process does not have).
    pub fn deliver(&self, event: &BusEvent) -> usize {
        let stream = self
            .streams
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&event.stream)
            .and_then(Weak::upgrade);
        match stream {
            Some(stream) => stream.deliver(&event.event, &event.args, event.except.as_deref()),
            None => 0,
        }
    }
}

/// One process: an event goes straight to this process's listeners.
pub struct LocalBus {
    streams: Arc<LocalStreams>,
}

impl LocalBus {
    pub fn new(streams: Arc<LocalStreams>) -> Arc<Self> {
        Arc::new(Self { streams })
    }
}

impl Bus for LocalBus {
    fn publish(&self, event: BusEvent) {
        self.streams.deliver(&event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::registry::Registry;

    #[test]
    fn an_event_for_no_listener_or_no_stream_is_dropped_quietly() {
        let mut registry = Registry::new();
        let room = crate::engine::streams::define(
            &mut registry,
            "notify-room",
            crate::engine::streams::anyone(),
        );
        let bus = LocalBus::new(registry.local_streams().clone());
        let event = BusEvent {
            stream: "stream-notify-room".into(),
            event: "r1/typing".into(),
            args: vec![Value::from("ann"), Value::Bool(true)],
            except: None,
        };
        // No listener yet: delivered to no one, and nothing breaks.
        assert_eq!(registry.local_streams().deliver(&event), 0);
        bus.publish(event.clone());
        let unknown = BusEvent {
            stream: "stream-nowhere".into(),
            ..event
        };
        assert_eq!(registry.local_streams().deliver(&unknown), 0);
        // A dropped stream is not kept alive by the directory.
        drop(room);
        assert_eq!(registry.local_streams().deliver(&unknown), 0);
    }
}
