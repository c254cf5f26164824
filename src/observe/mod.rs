//! Live queries: the store's change events turned into `added` / `changed` / `removed` for
//! every observer of a cursor.
//!
//! Owns one live query per distinct cursor (collection, selector, sort, skip, limit,
//! projection), shared by every observer that asks for it, and the count of change events
//! processed (what a method's write fence waits for). Unlimited cursors are maintained
//! incrementally from each event's full document; windows (limit or skip), collection drops
//! and a lagging feed are resolved by re-running the query and diffing, so no change is ever
//! silently dropped. It must not know about sessions: observers are [`ObserveSink`]s.

use crate::model::query::{Projection, Selector, Sort};
use crate::model::shared::SharedAdded;
use crate::model::{id_to_wire, Document, Value};
use crate::storage::{ChangeEvent, EmbeddedStore, FindOptions, OperationType, StoreError};
use indexmap::IndexMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, watch};

/// A cursor: what a live query reads.
#[derive(Clone, Debug)]
pub struct Cursor {
    pub collection: Arc<str>,
    pub selector: Selector,
    pub sort: Sort,
    pub skip: usize,
    pub limit: Option<usize>,
    pub projection: Projection,
    /// Canonical description: cursors with equal keys share one live query.
    pub key: String,
}

impl Cursor {
    /// Builds a cursor from its parts as documents (the key is derived from them).
    pub fn new(
        collection: &str,
        selector: &Document,
        sort: &Document,
        skip: usize,
        limit: Option<usize>,
        fields: &Document,
    ) -> Result<Self, crate::model::query::QueryError> {
        let key = format!(
            "{collection}\u{0}{}\u{0}{}\u{0}{skip}\u{0}{limit:?}\u{0}{}",
            Value::Object(selector.clone()).to_ejson_string(),
            Value::Object(sort.clone()).to_ejson_string(),
            Value::Object(fields.clone()).to_ejson_string()
        );
        Ok(Self {
            collection: collection.into(),
            selector: Selector::parse(selector)?,
            sort: Sort::parse(sort)?,
            skip,
            limit,
            projection: Projection::parse(fields)?,
            key,
        })
    }

    fn is_window(&self) -> bool {
        self.limit.is_some() || self.skip > 0
    }

    fn find_options(&self) -> FindOptions {
        FindOptions {
            selector: self.selector.clone(),
            sort: self.sort.clone(),
            skip: self.skip,
            limit: self.limit,
            projection: Projection::all(),
        }
    }
}

/// One change for observers.
#[derive(Debug)]
pub enum ObserveEvent {
    Added(Arc<SharedAdded>),
    Changed {
        collection: Arc<str>,
        id: Arc<str>,
        fields: Document,
        cleared: Vec<String>,
    },
    Removed {
        collection: Arc<str>,
        id: Arc<str>,
    },
}

/// Receives a live query's events. Returns false once it no longer wants them.
pub trait ObserveSink: Send + Sync {
    fn event(&self, event: &ObserveEvent) -> bool;
}

struct QueryState {
    /// Current result, in cursor order: wire id → (`_id`, full document, shared projection).
    results: IndexMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    sinks: Vec<(u64, Arc<dyn ObserveSink>)>,
}

struct LiveQuery {
    cursor: Cursor,
    state: Mutex<QueryState>,
}

/// Every live query of one store.
pub struct ObserveHub {
    store: Arc<EmbeddedStore>,
    queries: Mutex<HashMap<String, Arc<LiveQuery>>>,
    processed: watch::Sender<u64>,
    next_sink: AtomicU64,
    /// False once the task following the change feed has ended.
    feed_alive: std::sync::atomic::AtomicBool,
    /// Serializes query starts with event processing, so a query never misses an event that
    /// lands between its initial read and its registration.
    apply_lock: tokio::sync::Mutex<()>,
}

/// Ends an observation when dropped or stopped.
pub struct ObserveHandle {
    hub: Arc<ObserveHub>,
    key: String,
    sink: u64,
}

impl Drop for ObserveHandle {
    fn drop(&mut self) {
        self.hub.remove_sink(&self.key, self.sink);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ObserveHub {
    /// Starts the hub: one task follows the store's change feed for every query.
    pub fn start(store: Arc<EmbeddedStore>) -> Arc<Self> {
        let (processed, _) = watch::channel(store.last_seq());
        let hub = Arc::new(Self {
            store: store.clone(),
            queries: Mutex::new(HashMap::new()),
            processed,
            next_sink: AtomicU64::new(1),
            feed_alive: std::sync::atomic::AtomicBool::new(true),
            apply_lock: tokio::sync::Mutex::new(()),
        });
        let feed = store.subscribe();
        tokio::spawn(Self::follow(Arc::downgrade(&hub), feed));
        hub
    }

    /// Whether change events are still being followed (what `/health` reports).
    pub fn is_live(&self) -> bool {
        self.feed_alive.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<EmbeddedStore> {
        &self.store
    }

    /// Number of distinct live queries.
    pub fn query_count(&self) -> usize {
        lock(&self.queries).len()
    }

    /// Waits until every change up to `seq` has reached the observers (the write fence).
    pub async fn wait_processed(&self, seq: u64) {
        let mut rx = self.processed.subscribe();
        let _ = rx.wait_for(|done| *done >= seq).await;
    }

    /// Observes `cursor`: the current documents arrive as `Added`, then every change.
    pub async fn observe(
        self: &Arc<Self>,
        cursor: Cursor,
        sink: Arc<dyn ObserveSink>,
    ) -> Result<ObserveHandle, StoreError> {
        let _guard = self.apply_lock.lock().await;
        let existing = lock(&self.queries).get(&cursor.key).cloned();
        let query = match existing {
            Some(q) => q,
            None => {
                let docs = self
                    .store
                    .find(&cursor.collection, cursor.find_options())
                    .await?;
                let mut results = IndexMap::default();
                for doc in docs {
                    let (wire, entry) = shared_entry(&cursor, doc)?;
                    results.insert(wire, entry);
                }
                let q = Arc::new(LiveQuery {
                    cursor: cursor.clone(),
                    state: Mutex::new(QueryState {
                        results,
                        sinks: Vec::new(),
                    }),
                });
                lock(&self.queries).insert(cursor.key.clone(), q.clone());
                q
            }
        };
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&query.state);
            for (_, shared) in state.results.values() {
                sink.event(&ObserveEvent::Added(shared.clone()));
            }
            state.sinks.push((id, sink));
        }
        Ok(ObserveHandle {
            hub: self.clone(),
            key: cursor.key,
            sink: id,
        })
    }

    fn remove_sink(&self, key: &str, sink: u64) {
        let mut queries = lock(&self.queries);
        let empty = match queries.get(key) {
            Some(q) => {
                let mut state = lock(&q.state);
                state.sinks.retain(|(id, _)| *id != sink);
                state.sinks.is_empty()
            }
            None => false,
        };
        if empty {
            queries.remove(key);
        }
    }

    async fn follow(hub: std::sync::Weak<Self>, mut feed: broadcast::Receiver<Arc<ChangeEvent>>) {
        loop {
            let received = feed.recv().await;
            let Some(hub) = hub.upgrade() else { return };
            match received {
                Ok(event) => {
                    let _guard = hub.apply_lock.lock().await;
                    hub.apply(&event).await;
                    hub.processed.send_replace(event.seq);
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "change feed lagged: re-running every live query");
                    let _guard = hub.apply_lock.lock().await;
                    let last = hub.store.last_seq();
                    let queries: Vec<_> = lock(&hub.queries).values().cloned().collect();
                    for q in queries {
                        hub.requery(&q).await;
                    }
                    hub.processed.send_replace(last);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::error!("change feed closed: live queries no longer follow changes");
                    hub.feed_alive.store(false, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    async fn apply(&self, event: &ChangeEvent) {
        let queries: Vec<_> = lock(&self.queries)
            .values()
            .filter(|q| q.cursor.collection == event.collection)
            .cloned()
            .collect();
        for q in queries {
            let needs_requery = match event.operation {
                // Without the document after the change, nothing can be decided from the event.
                OperationType::Insert | OperationType::Update | OperationType::Replace
                    if event.full_document.is_none() =>
                {
                    true
                }
                OperationType::Insert
                | OperationType::Update
                | OperationType::Replace
                | OperationType::Delete => {
                    if q.cursor.is_window() {
                        window_affected(&q, event)
                    } else {
                        apply_incremental(&q, event);
                        false
                    }
                }
                _ => true,
            };
            if needs_requery {
                self.requery(&q).await;
            }
        }
    }

    /// Re-runs the query and sends the difference.
    async fn requery(&self, q: &Arc<LiveQuery>) {
        let docs = match self
            .store
            .find(&q.cursor.collection, q.cursor.find_options())
            .await
        {
            Ok(docs) => docs,
            Err(err) => {
                tracing::error!(cause = %err, collection = %q.cursor.collection, "live query re-run failed");
                return;
            }
        };
        let mut fresh = IndexMap::default();
        for doc in docs {
            match shared_entry(&q.cursor, doc) {
                Ok((wire, entry)) => {
                    fresh.insert(wire, entry);
                }
                Err(err) => tracing::error!(cause = %err, "document with an unusable _id skipped"),
            }
        }
        let mut state = lock(&q.state);
        let mut events = Vec::new();
        for (wire, (_, old)) in &state.results {
            match fresh.get(wire) {
                None => events.push(ObserveEvent::Removed {
                    collection: q.cursor.collection.clone(),
                    id: wire.clone(),
                }),
                Some((_, new)) => events.extend(changed_event(&q.cursor, wire, old, new)),
            }
        }
        for (wire, (_, new)) in &fresh {
            if !state.results.contains_key(wire) {
                events.push(ObserveEvent::Added(new.clone()));
            }
        }
        state.results = fresh;
        deliver(&mut state, &events);
    }
}

/// A result entry: the full document (for matching) and its shared, projected form.
type Entry = (Arc<Document>, Arc<SharedAdded>);

fn shared_entry(cursor: &Cursor, doc: Document) -> Result<(Arc<str>, Entry), StoreError> {
    let id = doc.get("_id").cloned().unwrap_or(Value::Null);
    let wire: Arc<str> = id_to_wire(&id)
        .map_err(|e| StoreError::InvalidDocument(e.to_string()))?
        .into();
    let projected = Arc::new(cursor.projection.apply(&doc));
    let shared = SharedAdded::new(cursor.collection.clone(), wire.clone(), projected);
    Ok((wire, (Arc::new(doc), shared)))
}

/// The top-level fields that differ between two projected versions.
fn changed_event(
    cursor: &Cursor,
    wire: &Arc<str>,
    old: &SharedAdded,
    new: &SharedAdded,
) -> Option<ObserveEvent> {
    let mut fields = Document::default();
    for (k, v) in new.fields.iter() {
        if k != "_id" && old.fields.get(k) != Some(v) {
            fields.insert(k.clone(), v.clone());
        }
    }
    let cleared: Vec<String> = old
        .fields
        .keys()
        .filter(|k| !new.fields.contains_key(*k))
        .cloned()
        .collect();
    (!fields.is_empty() || !cleared.is_empty()).then(|| ObserveEvent::Changed {
        collection: cursor.collection.clone(),
        id: wire.clone(),
        fields,
        cleared,
    })
}

fn deliver(state: &mut QueryState, events: &[ObserveEvent]) {
    if events.is_empty() {
        return;
    }
    state
        .sinks
        .retain(|(_, sink)| events.iter().all(|e| sink.event(e)));
}

/// An unlimited cursor follows each event from the event's own document.
fn apply_incremental(q: &LiveQuery, event: &ChangeEvent) {
    let Some(id) = &event.id else { return };
    let Ok(wire) = id_to_wire(id) else { return };
    let wire: Arc<str> = wire.into();
    let mut state = lock(&q.state);
    let now = event
        .full_document
        .as_ref()
        .filter(|doc| event.operation != OperationType::Delete && q.cursor.selector.matches(doc));
    let mut events = Vec::new();
    match (now, state.results.contains_key(&wire)) {
        (Some(doc), false) => {
            if let Ok((w, entry)) = shared_entry(&q.cursor, (**doc).clone()) {
                events.push(ObserveEvent::Added(entry.1.clone()));
                state.results.insert(w, entry);
            }
        }
        (Some(doc), true) => {
            if let Ok((w, entry)) = shared_entry(&q.cursor, (**doc).clone()) {
                if let Some((_, old)) = state.results.get(&w) {
                    events.extend(changed_event(&q.cursor, &w, old, &entry.1));
                }
                state.results.insert(w, entry);
            }
        }
        (None, true) => {
            state.results.shift_remove(&wire);
            events.push(ObserveEvent::Removed {
                collection: q.cursor.collection.clone(),
                id: wire,
            });
        }
        (None, false) => {}
    }
    deliver(&mut state, &events);
}

/// Whether a change can alter a window (limit or skip), in which case the query re-runs.
fn window_affected(q: &LiveQuery, event: &ChangeEvent) -> bool {
    if q.cursor.skip > 0 {
        return true;
    }
    let in_results = event
        .id
        .as_ref()
        .and_then(|id| id_to_wire(id).ok())
        .is_some_and(|w| lock(&q.state).results.contains_key(w.as_str()));
    let matches_now = event.full_document.as_ref().is_some_and(|doc| {
        event.operation != OperationType::Delete && q.cursor.selector.matches(doc)
    });
    in_results || matches_now
}
