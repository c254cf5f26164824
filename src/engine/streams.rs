//! Rocket.Chat's streams: a stream `X` is the publication `stream-X`, subscribed per event
//! name (`[eventName, useCollection | {useCollection, args}]`), whose events reach the
//! subscriber as `changed` frames on collection `stream-X` with id `"id"` and fields
//! `{eventName, args}`.
//!
//! Owns the listeners of each stream, found by event name in one map look-up per event
//! (never by testing every subscriber), and each event's frame, serialized once and shared
//! by every session that gets it. A stream's read rule decides who may subscribe to which
//! event; an emit filter, when a stream has one, decides per delivery. It must not know what
//! the events mean: services emit them (from the store's change events for events that
//! mirror data), and nothing here reads the store.

use super::bus::StreamSink;
use super::error::ServiceError;
use super::registry::{BoxFuture, Publish, Registry, Subscription};
use crate::model::shared::StreamEvent;
use crate::model::{MeteorError, Value};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Who asks to read an event of a stream.
#[derive(Clone, Debug)]
pub struct StreamRequest {
    pub user_id: Option<String>,
    pub connection_id: Arc<str>,
    pub event: String,
    /// The `args` of the `{useCollection, args}` form.
    pub args: Vec<Value>,
}

/// Whether a request may read: decided when it subscribes.
pub type ReadRule =
    Arc<dyn Fn(StreamRequest) -> BoxFuture<Result<bool, ServiceError>> + Send + Sync>;

/// A read rule that lets everyone read.
pub fn anyone() -> ReadRule {
    Arc::new(|_| Box::pin(async { Ok(true) }))
}

/// Where a request's listener is filed: by default under its event name; a stream whose
/// events go to each user apart (`__my_messages__`) files them under a key of its own.
pub type KeyRule = Arc<dyn Fn(&StreamRequest) -> String + Send + Sync>;

/// A read rule for logged-in users only.
pub fn logged_in() -> ReadRule {
    Arc::new(|request| Box::pin(async move { Ok(request.user_id.is_some()) }))
}

/// A listener's subscription and its revocation flag, copied out of the lock.
type Receiver = (Subscription, Arc<std::sync::atomic::AtomicBool>);

struct Listener {
    id: u64,
    sub: Subscription,
    /// Set when the listener is dropped for a lost right: its events still queued go too.
    revoked: Arc<std::sync::atomic::AtomicBool>,
}

/// One stream: its listeners by event name.
pub struct Stream {
    /// `stream-<name>`: the publication and the collection of its frames.
    collection: Arc<str>,
    listeners: Mutex<Listeners>,
    next_id: AtomicU64,
    /// Told when a key gets its first listener or loses its last (a broker between
    /// instances routes by it).
    interest: Option<Arc<super::bus::LocalStreams>>,
}

/// Listeners by key, and the keys in order (for the listeners of keys with a prefix).
#[derive(Default)]
struct Listeners {
    by_key: HashMap<Arc<str>, Vec<Listener>, foldhash::fast::RandomState>,
    keys: BTreeSet<Arc<str>>,
}

impl Listeners {
    fn get(&self, key: &str) -> Option<&Vec<Listener>> {
        self.by_key.get(key)
    }

    /// The keys listened to that start with `prefix`, in order.
    fn with_prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a Arc<str>> + 'a {
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |k| k.starts_with(prefix))
    }

    /// Drops the listeners of `key` whose user `lost` says lost the right; returns how many
    /// (`emptied` says whether `key` lost its last).
    fn drop_where(
        &mut self,
        key: &str,
        lost: &impl Fn(Option<&str>) -> bool,
        emptied: &mut Vec<Arc<str>>,
    ) -> usize {
        let Some(list) = self.by_key.get_mut(key) else {
            return 0;
        };
        let before = list.len();
        list.retain(|l| {
            let gone = lost(l.sub.user_id.as_deref());
            if gone {
                l.revoked.store(true, Ordering::Release);
            }
            !gone
        });
        let dropped = before - list.len();
        if list.is_empty() {
            self.by_key.remove(key);
            if let Some(key) = self.keys.take(key) {
                emptied.push(key);
            }
        }
        dropped
    }
}

impl Stream {
    fn new(collection: &str, interest: Option<Arc<super::bus::LocalStreams>>) -> Arc<Self> {
        Arc::new(Self {
            collection: collection.into(),
            listeners: Mutex::new(Listeners::default()),
            next_id: AtomicU64::new(1),
            interest,
        })
    }

    /// Tells the interest watcher that `keys` lost their last listener.
    fn emptied(&self, keys: &[Arc<str>]) {
        if let Some(interest) = &self.interest {
            for key in keys {
                interest.unlistened(&self.collection, key);
            }
        }
    }

    /// `stream-<name>`.
    pub fn collection(&self) -> &str {
        &self.collection
    }

    /// Sends `args` as event `event` to everyone listening to it; returns the deliveries.
    pub fn emit(&self, event: &str, args: &[Value]) -> usize {
        self.emit_except(event, args, None)
    }

    /// Like [`Stream::emit`], skipping the subscriptions of connection `except` (an event a
    /// client wrote is not echoed to it).
    pub fn emit_except(&self, event: &str, args: &[Value], except: Option<&str>) -> usize {
        self.emit_to(&[event], event, args, except)
    }

    /// Sends `args` as event `event` to the listeners filed under any of `keys` (one frame,
    /// serialized once, for all of them), skipping connection `except`.
    pub fn emit_to(
        &self,
        keys: &[&str],
        event: &str,
        args: &[Value],
        except: Option<&str>,
    ) -> usize {
        // The receivers are copied out so no lock is held while frames are queued.
        let receivers: Vec<Receiver> = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            keys.iter()
                .filter_map(|k| listeners.get(k))
                .flatten()
                .filter(|l| except.is_none_or(|c| *l.sub.connection_id != *c))
                .map(|l| (l.sub.clone(), l.revoked.clone()))
                .collect()
        };
        self.deliver(&receivers, event, args)
    }

    /// Queues one frame, serialized once, for every receiver; returns how many.
    fn deliver(&self, receivers: &[Receiver], event: &str, args: &[Value]) -> usize {
        if receivers.is_empty() {
            return 0;
        }
        let shared = StreamEvent::new(self.collection.clone(), event.into(), Some(args.to_vec()));
        for (sub, revoked) in receivers {
            sub.send_revocable_event(shared.clone(), revoked.clone());
        }
        receivers.len()
    }

    /// The keys listened to that start with `prefix` (found in order, without visiting the
    /// other keys).
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .with_prefix(prefix)
            .map(|k| k.to_string())
            .collect()
    }

    /// Sends `args` to the listeners of `<user>/<suffix>` for every user in `users` (the
    /// event named as each listened, `<user>/<suffix>`), visiting whichever is fewer: those
    /// users, or the keys listened to (a room of thousands with few of them listening costs
    /// a few look-ups, not thousands).
    pub fn emit_to_users(&self, users: &HashSet<Arc<str>>, suffix: &str, args: &[Value]) -> usize {
        let groups: Vec<(Arc<str>, Vec<Receiver>)> = {
            let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
            let copy = |list: &Vec<Listener>| -> Vec<Receiver> {
                list.iter()
                    .map(|l| (l.sub.clone(), l.revoked.clone()))
                    .collect()
            };
            if listeners.by_key.len() < users.len() {
                listeners
                    .by_key
                    .iter()
                    .filter(|(key, _)| {
                        key.strip_suffix(suffix)
                            .and_then(|k| k.strip_suffix('/'))
                            .is_some_and(|u| users.contains(u))
                    })
                    .map(|(key, list)| (key.clone(), copy(list)))
                    .collect()
            } else {
                users
                    .iter()
                    .filter_map(|user| {
                        let key = format!("{user}/{suffix}");
                        let (key, list) = listeners.by_key.get_key_value(key.as_str())?;
                        Some((key.clone(), copy(list)))
                    })
                    .collect()
            }
        };
        groups
            .iter()
            .map(|(key, receivers)| self.deliver(receivers, key, args))
            .sum()
    }

    /// How many subscriptions listen to `event`.
    pub fn listener_count(&self, event: &str) -> usize {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(event)
            .map_or(0, Vec::len)
    }

    /// The events anyone listens to, with their subscriptions' user ids (for a caller that
    /// must re-check who may still read, as when a user loses a room).
    pub fn listening_users(&self, event: &str) -> Vec<(Option<String>, Arc<str>)> {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(event)
            .map(|list| {
                list.iter()
                    .map(|l| (l.sub.user_id.clone(), l.sub.id.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the subscriptions to `event` of `user_id` without `nosub` (Rocket.Chat drops a
    /// reader who lost the right silently); returns how many were dropped.
    pub fn drop_listeners_of(&self, event: &str, user_id: &str) -> usize {
        self.drop_listeners_where(event, |user| user == Some(user_id))
    }

    /// Drops the listeners of `key` whose user `lost` says lost the right; returns how many.
    pub fn drop_listeners_where(&self, key: &str, lost: impl Fn(Option<&str>) -> bool) -> usize {
        let mut emptied = Vec::new();
        let dropped = self
            .listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drop_where(key, &lost, &mut emptied);
        self.emptied(&emptied);
        dropped
    }

    /// Drops the listeners of the keys starting with `prefix` whose user `lost` says lost
    /// the right; returns how many.
    pub fn drop_listeners_with_prefix(
        &self,
        prefix: &str,
        lost: impl Fn(Option<&str>) -> bool,
    ) -> usize {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let keys: Vec<Arc<str>> = listeners.with_prefix(prefix).cloned().collect();
        let mut emptied = Vec::new();
        let dropped = keys
            .iter()
            .map(|key| listeners.drop_where(key, &lost, &mut emptied))
            .sum();
        self.emptied(&emptied);
        dropped
    }

    fn add(&self, event: &str, sub: Subscription) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        let listeners = &mut *listeners;
        let list = listeners
            .by_key
            .entry(event.into())
            .or_insert_with_key(|key| {
                listeners.keys.insert(key.clone());
                if let Some(interest) = &self.interest {
                    interest.listened(&self.collection, key);
                }
                Vec::new()
            });
        list.push(Listener {
            id,
            sub,
            revoked: Arc::default(),
        });
        id
    }

    fn remove(&self, event: &str, id: u64) {
        let mut listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = listeners.by_key.get_mut(event) {
            list.retain(|l| l.id != id);
            if list.is_empty() {
                listeners.by_key.remove(event);
                if let Some(key) = listeners.keys.take(event) {
                    self.emptied(&[key]);
                }
            }
        }
    }
}

/// The subscription's parameters: the event name and the options, in either form.
fn parse_params(params: &[Value]) -> Result<(String, bool, Vec<Value>), MeteorError> {
    let event = match params.first() {
        Some(Value::String(e)) if !e.is_empty() && e.len() <= 512 => e.clone(),
        _ => return Err(MeteorError::new("invalid-event-name", "Invalid event name")),
    };
    let (use_collection, args) = match params.get(1) {
        None | Some(Value::Null) => (false, Vec::new()),
        Some(Value::Bool(b)) => (*b, Vec::new()),
        Some(Value::Object(options)) => {
            let use_collection = matches!(options.get("useCollection"), Some(Value::Bool(true)));
            let args = match options.get("args") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(args)) => args.clone(),
                Some(_) => return Err(MeteorError::new(400, "Match failed")),
            };
            (use_collection, args)
        }
        Some(_) => return Err(MeteorError::new(400, "Match failed")),
    };
    Ok((event, use_collection, args))
}

/// Rocket.Chat's refusal: `not-allowed` with no reason.
fn stream_refusal() -> MeteorError {
    MeteorError {
        error: "not-allowed".into(),
        reason: None,
        details: None,
    }
}

impl StreamSink for Stream {
    fn deliver(&self, event: &str, args: &[Value], except: Option<&str>) -> usize {
        self.emit_except(event, args, except)
    }
}

/// Defines the stream `name` (`notify-all` for `stream-notify-all`) with its read rule and
/// registers its publication.
pub fn define(registry: &mut Registry, name: &str, read: ReadRule) -> Arc<Stream> {
    define_keyed(
        registry,
        name,
        read,
        Arc::new(|r: &StreamRequest| r.event.clone()),
    )
}

/// Like [`define`], with listeners filed under `key` of each request.
pub fn define_keyed(
    registry: &mut Registry,
    name: &str,
    read: ReadRule,
    key: KeyRule,
) -> Arc<Stream> {
    let collection = format!("stream-{name}");
    let stream = Stream::new(&collection, Some(registry.local_streams().clone()));
    let sink: Arc<dyn StreamSink> = stream.clone();
    registry
        .local_streams()
        .add(&collection, Arc::downgrade(&sink));
    let for_publication = stream.clone();
    registry.publication(&collection, move |sub, params| {
        let (stream, read, key) = (for_publication.clone(), read.clone(), key.clone());
        async move {
            let (event, use_collection, args) = parse_params(&params)?;
            let request = StreamRequest {
                user_id: sub.user_id.clone(),
                connection_id: sub.connection_id.clone(),
                event: event.clone(),
                args,
            };
            if !read(request.clone()).await? {
                return Err(ServiceError::Client(stream_refusal()));
            }
            let key = key(&request);
            let id = stream.add(&key, sub.clone());
            // The right may have been lost between the check and the filing (a member
            // removed meanwhile, whose removal already dropped the listeners it found):
            // asked again, it is either still held or this listener goes now.
            if !read(request).await? {
                stream.remove(&key, id);
                return Err(ServiceError::Client(stream_refusal()));
            }
            if use_collection {
                sub.send_event(StreamEvent::new(
                    stream.collection.clone(),
                    event.as_str().into(),
                    None,
                ));
            }
            tokio::spawn(async move {
                sub.stopped().await;
                stream.remove(&key, id);
            });
            Ok(Publish::Ready)
        }
    });
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_option_forms_and_bad_event_names() {
        let (event, use_collection, args) =
            parse_params(&[Value::from("public-settings-changed"), Value::Bool(true)]).unwrap();
        assert_eq!(
            (event.as_str(), use_collection, args.len()),
            ("public-settings-changed", true, 0)
        );
        let mut options = crate::model::Document::default();
        options.insert("useCollection".into(), Value::Bool(false));
        options.insert("args".into(), Value::Array(vec![Value::from("x")]));
        let (_, use_collection, args) =
            parse_params(&[Value::from("e"), Value::Object(options)]).unwrap();
        assert!(!use_collection && args == vec![Value::from("x")]);
        for bad in [
            vec![],
            vec![Value::from("")],
            vec![Value::Number(1.0)],
            vec![Value::from("x".repeat(513))],
        ] {
            assert_eq!(
                parse_params(&bad).unwrap_err().error.to_string(),
                "invalid-event-name"
            );
        }
        assert_eq!(
            parse_params(&[Value::from("e"), Value::Number(3.0)])
                .unwrap_err()
                .error
                .to_string(),
            "400"
        );
    }

    #[test]
    fn an_event_nobody_listens_to_costs_nothing() {
        let stream = Stream::new("stream-notify-all", None);
        assert_eq!(stream.emit("nobody-listens", &[Value::Bool(true)]), 0);
        assert_eq!(stream.listener_count("nobody-listens"), 0);
    }
}
