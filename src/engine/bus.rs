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
use std::sync::{Arc, Mutex, RwLock, Weak};

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

    /// Why events may not reach other instances now (a broker unreachable), for `/health`;
    /// `None` while they do, and always for the in-process bus.
    fn degraded(&self) -> Option<String> {
        None
    }

    /// The bus's figures in Prometheus' text format (none for the in-process bus).
    fn metrics_text(&self) -> String {
        String::new()
    }
}

/// Who must hear which events from other instances: told when this process's listeners
/// start and stop listening to a key (a room id, a user id, or a whole event name), so a
/// broker sends an instance only the events someone on it listens to.
pub trait InterestWatcher: Send + Sync {
    /// Some listener here now hears `key` of `stream` (it had none).
    fn listened(&self, stream: &str, key: &str);
    /// No listener here hears `key` of `stream` any more.
    fn unlistened(&self, stream: &str, key: &str);
    /// Every event of `stream` is wanted here, always (a sink with no listeners of its own).
    fn whole(&self, stream: &str);
}

/// The key an event is routed by: the part of its name before the first `/` (the room of
/// `<rid>/typing`, the user of `<uid>/message`), or the whole name (`user-status`).
pub fn routing_key(event: &str) -> &str {
    event.split('/').next().unwrap_or(event)
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
    interest: Mutex<Interest>,
}

/// What this process listens to, by stream and routing key, and who is told.
#[derive(Default)]
struct Interest {
    /// Listened keys (event names and listener keys) per stream and routing key.
    counts: HashMap<(Arc<str>, Arc<str>), usize>,
    /// Streams wanted whole.
    whole: Vec<Arc<str>>,
    /// For a stream, the streams wanted by the same keys (a user's limit counts go where
    /// the user's own stream is listened to).
    followers: HashMap<Arc<str>, Vec<Arc<str>>>,
    watcher: Option<Weak<dyn InterestWatcher>>,
}

impl Interest {
    fn watcher(&self) -> Option<Arc<dyn InterestWatcher>> {
        self.watcher.as_ref().and_then(Weak::upgrade)
    }

    /// `stream` and the streams that follow its keys.
    fn with_followers<'a>(&'a self, stream: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        std::iter::once(stream).chain(
            self.followers
                .get(stream)
                .into_iter()
                .flatten()
                .map(|f| &**f),
        )
    }
}

impl LocalStreams {
    /// Files `stream` under `collection`; its listeners tell what they hear
    /// ([`LocalStreams::listened`]).
    pub fn add(&self, collection: &str, stream: Weak<dyn StreamSink>) {
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(collection.into(), stream);
    }

    /// Files `sink` under `collection`, wanting every event of it from every instance.
    pub fn add_whole(&self, collection: &str, sink: Weak<dyn StreamSink>) {
        self.add(collection, sink);
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        interest.whole.push(collection.into());
        if let Some(watcher) = interest.watcher() {
            watcher.whole(collection);
        }
    }

    /// Files `sink` under `collection`, wanting its events by the keys this process's
    /// listeners of `follows` hear (a user's events wherever that user listens).
    pub fn add_following(&self, collection: &str, sink: Weak<dyn StreamSink>, follows: &str) {
        self.add(collection, sink);
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        interest
            .followers
            .entry(follows.into())
            .or_default()
            .push(collection.into());
        if let Some(watcher) = interest.watcher() {
            for (stream, key) in interest.counts.keys() {
                if &**stream == follows {
                    watcher.listened(collection, key);
                }
            }
        }
    }

    /// Tells `watcher` what is listened to now and every change from here on.
    pub fn watch(&self, watcher: Weak<dyn InterestWatcher>) {
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        interest.watcher = Some(watcher);
        if let Some(watcher) = interest.watcher() {
            for stream in &interest.whole {
                watcher.whole(stream);
            }
            for (stream, key) in interest.counts.keys() {
                for stream in interest.with_followers(stream) {
                    watcher.listened(stream, key);
                }
            }
        }
    }

    /// A listener key of `stream` (an event name) got its first listener.
    pub fn listened(&self, stream: &str, key: &str) {
        let key = routing_key(key);
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let count = interest
            .counts
            .entry((stream.into(), key.into()))
            .or_insert(0);
        *count += 1;
        if *count == 1 {
            if let Some(watcher) = interest.watcher() {
                for stream in interest.with_followers(stream) {
                    watcher.listened(stream, key);
                }
            }
        }
    }

    /// A listener key of `stream` lost its last listener.
    pub fn unlistened(&self, stream: &str, key: &str) {
        let key = routing_key(key);
        let mut interest = self.interest.lock().unwrap_or_else(|p| p.into_inner());
        let entry = (Arc::<str>::from(stream), Arc::<str>::from(key));
        let Some(count) = interest.counts.get_mut(&entry) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            interest.counts.remove(&entry);
            if let Some(watcher) = interest.watcher() {
                for stream in interest.with_followers(stream) {
                    watcher.unlistened(stream, key);
                }
            }
        }
    }

    /// How many routing keys this process listens to (a figure).
    pub fn interest_count(&self) -> usize {
        self.interest
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counts
            .len()
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

    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl InterestWatcher for Told {
        fn listened(&self, stream: &str, key: &str) {
            self.0.lock().unwrap().push(format!("+{stream}:{key}"));
        }
        fn unlistened(&self, stream: &str, key: &str) {
            self.0.lock().unwrap().push(format!("-{stream}:{key}"));
        }
        fn whole(&self, stream: &str) {
            self.0.lock().unwrap().push(format!("*{stream}"));
        }
    }

    #[test]
    fn interest_is_told_once_per_routing_key_and_replayed_to_a_late_watcher() {
        let streams = LocalStreams::default();
        streams.listened("stream-notify-room", "r1/typing");
        let told = Arc::new(Told::default());
        let watcher: Arc<dyn InterestWatcher> = told.clone();
        streams.watch(Arc::downgrade(&watcher));
        // `r1/typing` and `r1/user-activity` are one room: one subscription.
        streams.listened("stream-notify-room", "r1/user-activity");
        streams.listened("stream-notify-logged", "user-status");
        // A stream that follows the user stream's keys is told with it.
        streams.listened("stream-notify-user", "u1/message");
        streams.add_following(
            "limits",
            Weak::<crate::engine::streams::Stream>::new(),
            "stream-notify-user",
        );
        streams.unlistened("stream-notify-user", "u1/message");
        streams.unlistened("stream-notify-room", "r1/typing");
        streams.unlistened("stream-notify-room", "r1/user-activity");
        // Unbalanced: ignored.
        streams.unlistened("stream-notify-room", "r9/typing");
        assert_eq!(
            *told.0.lock().unwrap(),
            [
                "+stream-notify-room:r1",
                "+stream-notify-logged:user-status",
                "+stream-notify-user:u1",
                "+limits:u1",
                "-stream-notify-user:u1",
                "-limits:u1",
                "-stream-notify-room:r1"
            ]
        );
        assert_eq!(streams.interest_count(), 1);
    }
}
