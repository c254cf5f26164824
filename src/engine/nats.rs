//! The bus between instances over NATS (`TRANSPORTER=nats://...`): events that mirror no
//! data (typing, user activity, a plugin's stream and cluster events) reach the listeners
//! of every instance that has some, and no other.
//!
//! Owns the connection to the broker, the subjects (`comet.ev.<stream>.<key>`, the key
//! being a room id, a user id or a whole event name, see [`super::bus::routing_key`]), the
//! subscriptions this instance holds (one per key some listener here hears: interest-based
//! routing, so an instance with nobody in a room receives none of its typing), the
//! de-duplication of events heard twice, and the bus's figures. Delivery here is at once;
//! the broker is told afterwards, without waiting: an event that cannot be sent is dropped
//! and counted, never queued without bound. It must not know what the events mean, and
//! never carries events that mirror stored data (every instance hears those from the
//! store).

use super::bus::{Bus, BusEvent, InterestWatcher, LocalStreams};
use crate::model::Value;
use futures_util::StreamExt;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// The first tokens of every subject comet uses.
const SUBJECT_PREFIX: &str = "comet.ev";
/// Events waiting for the broker beyond which new ones are dropped.
const OUTGOING_QUEUE: usize = 8192;
/// Events remembered to recognise one heard twice.
const REMEMBERED: usize = 16384;
/// The longest wait between two attempts to reach the broker again.
const LONGEST_RECONNECT_WAIT: Duration = Duration::from_secs(5);

/// Why the broker cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error(
        "TRANSPORTER must be nats://host:port (a comma-separated list for a cluster), not {0:?}"
    )]
    Address(String),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
}

/// A subject token for `text`: itself when it is plain (ids and stream names are), else
/// `~` and its bytes in hex, so no name can reach another subject or a wildcard.
fn token(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        text.to_owned()
    } else {
        let mut out = String::with_capacity(1 + text.len() * 2);
        out.push('~');
        for b in text.bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out
    }
}

/// The subject of `key`'s events on `stream`.
fn subject(stream: &str, key: &str) -> String {
    format!("{SUBJECT_PREFIX}.{}.{}", token(stream), token(key))
}

/// The bus's counts, for `/metrics`.
#[derive(Default)]
struct Figures {
    published: AtomicU64,
    dropped: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    malformed: AtomicU64,
    delivered: AtomicU64,
}

/// Events heard lately, by origin and number, to let a repeated one pass only once.
#[derive(Default)]
struct Seen {
    ids: HashSet<(Arc<str>, u64)>,
    order: VecDeque<(Arc<str>, u64)>,
}

impl Seen {
    /// Whether `(origin, number)` is new; remembers it.
    fn first_time(&mut self, origin: &Arc<str>, number: u64) -> bool {
        let id = (origin.clone(), number);
        if !self.ids.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > REMEMBERED {
            if let Some(old) = self.order.pop_front() {
                self.ids.remove(&old);
            }
        }
        true
    }
}

/// One event as it travels between instances.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    /// The instance it comes from.
    o: String,
    /// Its number at that instance (with `o`, its identity).
    n: u64,
    /// The stream's collection.
    s: String,
    /// The event name.
    e: String,
    /// The arguments, as EJSON text.
    a: String,
    /// The connection that does not hear it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    x: Option<String>,
}

/// A subject this instance listens to: a stream and a routing key (`*`: every key).
type Subject = (Arc<str>, Arc<str>);

/// The bus over NATS.
pub struct NatsBus {
    instance: Arc<str>,
    local: Arc<LocalStreams>,
    client: async_nats::Client,
    outgoing: tokio::sync::mpsc::Sender<(String, bytes::Bytes)>,
    /// The subscription task of each (stream, key) listened to here.
    subscriptions: Mutex<HashMap<Subject, tokio::task::AbortHandle>>,
    seen: Mutex<Seen>,
    next_number: AtomicU64,
    figures: Figures,
    runtime: tokio::runtime::Handle,
    me: Weak<NatsBus>,
}

impl NatsBus {
    /// Connects to `url` as `instance` and delivers to `local`. Returns at once even when the
    /// broker is not reachable yet: the connection is retried in the background, with
    /// back-off, for as long as the process runs, and this instance serves its own
    /// sessions meanwhile.
    pub async fn connect(
        url: &str,
        instance: Arc<str>,
        local: Arc<LocalStreams>,
    ) -> Result<Arc<Self>, NatsError> {
        let addresses: Vec<&str> = url.split(',').map(str::trim).collect();
        if addresses.is_empty()
            || addresses
                .iter()
                .any(|a| !a.starts_with("nats://") || a.len() <= "nats://".len())
        {
            return Err(NatsError::Address(url.to_owned()));
        }
        let name = format!("comet {instance}");
        let client = async_nats::ConnectOptions::new()
            .name(name)
            // This instance delivers its own events itself, at once.
            .no_echo()
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(5))
            .reconnect_delay_callback(|attempts| {
                let wait = Duration::from_millis(100u64.saturating_mul(1 << attempts.min(6)));
                wait.min(LONGEST_RECONNECT_WAIT)
            })
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("NATS connected"),
                    async_nats::Event::Disconnected => {
                        tracing::warn!("NATS disconnected; serving this instance's sessions alone until it is back")
                    }
                    other => tracing::debug!(event = %other, "NATS"),
                }
            })
            .connect(addresses.join(","))
            .await
            .map_err(|e| NatsError::Connect(e.to_string()))?;
        let (outgoing, queue) = tokio::sync::mpsc::channel(OUTGOING_QUEUE);
        let bus = Arc::new_cyclic(|me| Self {
            instance,
            local: local.clone(),
            client: client.clone(),
            outgoing,
            subscriptions: Mutex::new(HashMap::new()),
            seen: Mutex::new(Seen::default()),
            next_number: AtomicU64::new(1),
            figures: Figures::default(),
            runtime: tokio::runtime::Handle::current(),
            me: me.clone(),
        });
        tokio::spawn(send_all(Arc::downgrade(&bus), client, queue));
        let watcher: Arc<dyn InterestWatcher> = bus.clone();
        local.watch(Arc::downgrade(&watcher));
        Ok(bus)
    }

    /// Subscribes to `subject` for as long as the returned task runs.
    fn subscribe(&self, subject: String) -> tokio::task::AbortHandle {
        let (client, me) = (self.client.clone(), self.me.clone());
        self.runtime
            .spawn(async move {
                let mut subscriber = match client.subscribe(subject.clone()).await {
                    Ok(s) => s,
                    Err(err) => {
                        tracing::warn!(%subject, cause = %err, "cannot subscribe on NATS");
                        return;
                    }
                };
                while let Some(message) = subscriber.next().await {
                    let Some(bus) = me.upgrade() else { break };
                    bus.receive(&message.payload);
                }
            })
            .abort_handle()
    }

    /// Delivers an event another instance sent, once.
    fn receive(&self, payload: &[u8]) -> usize {
        self.figures.received.fetch_add(1, Ordering::Relaxed);
        let Some((wire, args)) = serde_json::from_slice::<Wire>(payload).ok().and_then(|w| {
            let json = serde_json::from_str(&w.a).ok()?;
            match Value::from_json(json) {
                Ok(Value::Array(args)) => Some((w, args)),
                _ => None,
            }
        }) else {
            self.figures.malformed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("dropped a malformed event from NATS");
            return 0;
        };
        // Its own events never come back (no echo); should one, it was delivered already.
        let origin: Arc<str> = wire.o.into();
        if origin == self.instance
            || !self
                .seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .first_time(&origin, wire.n)
        {
            self.figures.duplicates.fetch_add(1, Ordering::Relaxed);
            return 0;
        }
        let delivered = self.local.deliver(&BusEvent {
            stream: wire.s.into(),
            event: wire.e,
            args,
            except: wire.x.map(Into::into),
        });
        self.figures
            .delivered
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// How many subjects this instance listens to.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Whether the broker is reachable now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}

/// Sends queued events to the broker in order until the bus is gone.
async fn send_all(
    bus: Weak<NatsBus>,
    client: async_nats::Client,
    mut queue: tokio::sync::mpsc::Receiver<(String, bytes::Bytes)>,
) {
    while let Some((subject, payload)) = queue.recv().await {
        if let Err(err) = client.publish(subject, payload).await {
            if let Some(bus) = bus.upgrade() {
                bus.figures.dropped.fetch_add(1, Ordering::Relaxed);
            }
            tracing::debug!(cause = %err, "an event could not be sent to NATS");
        }
    }
}

impl Bus for NatsBus {
    fn publish(&self, event: BusEvent) {
        let key = super::bus::routing_key(&event.event);
        let subject = subject(&event.stream, key);
        let wire = Wire {
            o: self.instance.to_string(),
            n: self.next_number.fetch_add(1, Ordering::Relaxed),
            s: event.stream.to_string(),
            e: event.event.clone(),
            a: Value::Array(event.args.clone()).to_ejson_string(),
            x: event.except.as_deref().map(str::to_owned),
        };
        self.local.deliver(&event);
        self.figures.published.fetch_add(1, Ordering::Relaxed);
        let payload = match serde_json::to_vec(&wire) {
            Ok(p) => bytes::Bytes::from(p),
            Err(_) => return,
        };
        if self.outgoing.try_send((subject, payload)).is_err() {
            self.figures.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn degraded(&self) -> Option<String> {
        (!self.connected()).then(|| "the broker (NATS) is unreachable".to_owned())
    }

    fn metrics_text(&self) -> String {
        let f = &self.figures;
        let mut out = String::new();
        let counters = [
            (
                "published",
                "Events this instance sent to the others",
                &f.published,
            ),
            (
                "dropped",
                "Events that could not be sent to the broker",
                &f.dropped,
            ),
            (
                "received",
                "Events received from other instances",
                &f.received,
            ),
            (
                "duplicates",
                "Events received again and ignored",
                &f.duplicates,
            ),
            (
                "malformed",
                "Events received that could not be read",
                &f.malformed,
            ),
            (
                "delivered",
                "Deliveries of other instances' events to listeners here",
                &f.delivered,
            ),
        ];
        for (name, help, value) in counters {
            out.push_str(&format!(
                "# HELP comet_bus_{name} {help}.\n# TYPE comet_bus_{name} counter\ncomet_bus_{name}_total {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out.push_str(&format!(
            "# HELP comet_bus_subscriptions Subjects this instance listens to.\n# TYPE comet_bus_subscriptions gauge\ncomet_bus_subscriptions {}\n",
            self.subscription_count()
        ));
        out.push_str(&format!(
            "# HELP comet_bus_connected Whether the broker is reachable.\n# TYPE comet_bus_connected gauge\ncomet_bus_connected {}\n",
            u8::from(self.connected())
        ));
        out
    }
}

impl InterestWatcher for NatsBus {
    fn listened(&self, stream: &str, key: &str) {
        let task = self.subscribe(subject(stream, key));
        let old = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((stream.into(), key.into()), task);
        if let Some(old) = old {
            old.abort();
        }
    }

    fn unlistened(&self, stream: &str, key: &str) {
        let gone = self
            .subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(Arc::<str>::from(stream), Arc::<str>::from(key)));
        // Ending the task drops its subscriber, which unsubscribes.
        if let Some(gone) = gone {
            gone.abort();
        }
    }

    fn whole(&self, stream: &str) {
        let task = self.subscribe(format!("{SUBJECT_PREFIX}.{}.*", token(stream)));
        self.subscriptions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((stream.into(), "*".into()), task);
    }
}

impl Drop for NatsBus {
    fn drop(&mut self) {
        for (_, task) in self
            .subscriptions
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
        {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_plain_for_ids_and_escaped_for_anything_else() {
        assert_eq!(
            subject("stream-notify-room", "GENERAL"),
            "comet.ev.stream-notify-room.GENERAL"
        );
        // A name with a dot or a wildcard can reach neither another subject nor many.
        assert_eq!(token("a.b"), "~612e62");
        assert_eq!(token(">"), "~3e");
        assert_eq!(token("*"), "~2a");
        assert_eq!(token(""), "~");
        assert_ne!(token("~61"), "~61");
    }

    #[test]
    fn an_event_heard_twice_passes_once() {
        let mut seen = Seen::default();
        let a: Arc<str> = "A".into();
        let b: Arc<str> = "B".into();
        assert!(seen.first_time(&a, 1));
        assert!(seen.first_time(&b, 1));
        assert!(!seen.first_time(&a, 1));
        // Memory is bounded: the oldest are forgotten first.
        for n in 2..(REMEMBERED as u64 + 3) {
            assert!(seen.first_time(&a, n));
        }
        assert!(seen.ids.len() <= REMEMBERED);
        assert!(seen.first_time(&b, 1));
    }

    #[test]
    fn an_address_that_is_not_nats_is_refused() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        for bad in ["", "redis://x:1", "nats://", "nats://a:1, http://b"] {
            let result = runtime.block_on(NatsBus::connect(
                bad,
                "i".into(),
                Arc::new(LocalStreams::default()),
            ));
            assert!(
                matches!(result, Err(NatsError::Address(_))),
                "{bad:?} was taken"
            );
        }
    }
}
