//! Live queries: the store's change events turned into `added` / `changed` / `removed` for
//! every observer of a cursor.
//!
//! Owns one live query per distinct cursor (collection, selector, sort, skip, limit,
//! projection), shared by every observer that asks for it, and the count of change events
//! processed (what a method's write fence waits for). Unlimited cursors are maintained
//! incrementally from each event's full document; windows (limit or skip), collection drops
//! and a lagging feed are resolved by re-running the query and diffing, so no change is ever
//! silently dropped. Re-runs happen outside the lock that orders events: while one is
//! pending, its query takes no incremental change (the read covers them) and the processed
//! position stops before the oldest event it must still reflect, so a write fence waits for
//! it and no other query does. Unordered observers get `Added` / `Changed` / `Removed`; ordered ones
//! get `AddedBefore` / `MovedBefore` instead of `Added`, against the cursor's order (sort,
//! then `_id`). It must not know about sessions: observers are [`ObserveSink`]s.

use crate::model::query::compare::compare;
use crate::model::query::{Projection, Selector, Sort};
use crate::model::shared::SharedAdded;
use crate::model::{id_to_wire, Document, Value};
use crate::storage::{ChangeEvent, FindOptions, OperationType, Store, StoreError};
use indexmap::IndexMap;
use std::collections::{HashMap, VecDeque};
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
    /// For unordered observers.
    Added(Arc<SharedAdded>),
    /// For ordered observers: the document enters just before `before` (last when `None`).
    AddedBefore {
        doc: Arc<SharedAdded>,
        before: Option<Arc<str>>,
    },
    /// For ordered observers: the document moves to just before `before` (last when `None`).
    MovedBefore {
        collection: Arc<str>,
        id: Arc<str>,
        before: Option<Arc<str>>,
    },
    Changed {
        collection: Arc<str>,
        id: Arc<str>,
        fields: Document,
        cleared: Vec<String>,
        /// The whole (projected) document after the change, shared.
        doc: Arc<SharedAdded>,
    },
    Removed {
        collection: Arc<str>,
        id: Arc<str>,
    },
}

/// Receives a live query's events. Returns false once it no longer wants them.
pub trait ObserveSink: Send + Sync {
    fn event(&self, event: &ObserveEvent) -> bool;
    /// Ordered observers get `AddedBefore` and `MovedBefore` rather than `Added`.
    fn ordered(&self) -> bool {
        false
    }
    /// The query could not be kept up to date (a re-read failed): no event follows.
    fn failed(&self, _error: &StoreError) {}
}

/// The events of one change, for both kinds of observers (the ordered list only when some
/// observer is ordered).
#[derive(Default)]
struct Diff {
    unordered: Vec<ObserveEvent>,
    ordered: Vec<ObserveEvent>,
}

struct QueryState {
    /// Current result, in cursor order: wire id → (`_id`, full document, shared projection).
    results: IndexMap<Arc<str>, Entry, foldhash::fast::RandomState>,
    sinks: Vec<(u64, Arc<dyn ObserveSink>)>,
    /// Results are kept in cursor order, because some observer is ordered.
    ordered: bool,
    /// A re-run the results wait for.
    reread: Option<Reread>,
}

/// A re-run of a live query that is due or under way.
struct Reread {
    /// The oldest event the results do not reflect yet.
    first: u64,
    /// The newest event that asked for the re-run: a read that began before it reads again.
    latest: u64,
}

struct LiveQuery {
    cursor: Cursor,
    state: Mutex<QueryState>,
    /// A top-level equality on a scalar (`{rid: "x"}`): the query is filed under it, so that
    /// an event for another value never reaches it.
    route: Option<(String, Vec<u8>)>,
}

/// The live queries of one collection, filed by their routing equality.
#[derive(Default)]
struct Routes {
    /// Routing path → encoded value → the queries with that equality.
    by_path: FastMap<String, QueriesByValue>,
    unrouted: Vec<Arc<LiveQuery>>,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type QueriesByValue = FastMap<Vec<u8>, Vec<Arc<LiveQuery>>>;

impl Routes {
    fn add(&mut self, q: Arc<LiveQuery>) {
        match &q.route {
            Some((path, key)) => self
                .by_path
                .entry(path.clone())
                .or_default()
                .entry(key.clone())
                .or_default()
                .push(q),
            None => self.unrouted.push(q),
        }
    }

    fn remove(&mut self, q: &Arc<LiveQuery>) {
        match &q.route {
            Some((path, key)) => {
                let Some(values) = self.by_path.get_mut(path) else {
                    return;
                };
                if let Some(list) = values.get_mut(key) {
                    list.retain(|x| !Arc::ptr_eq(x, q));
                    if list.is_empty() {
                        values.remove(key);
                    }
                }
                if values.is_empty() {
                    self.by_path.remove(path);
                }
            }
            None => self.unrouted.retain(|x| !Arc::ptr_eq(x, q)),
        }
    }

    fn is_empty(&self) -> bool {
        self.unrouted.is_empty() && self.by_path.is_empty()
    }

    fn all(&self) -> Vec<Arc<LiveQuery>> {
        let mut out = self.unrouted.clone();
        for values in self.by_path.values() {
            for list in values.values() {
                out.extend(list.iter().cloned());
            }
        }
        out
    }

    /// The queries `event` can concern. Queries filed under `_id` are found by the event's
    /// id whatever the operation (an id never changes). For the other routing fields, an
    /// insert, or an update that leaves every one of them as it was, reaches only the
    /// queries filed under the document's values; anything else (deletes, replacements, a
    /// routing field changed or holding an array) reaches all.
    fn candidates(&self, event: &ChangeEvent) -> Vec<Arc<LiveQuery>> {
        let mut out = self.unrouted.clone();
        if let Some(values) = self.by_path.get("_id") {
            let Some(key) = event
                .id
                .as_ref()
                .and_then(crate::storage::index_key::encode)
            else {
                return self.all();
            };
            if let Some(list) = values.get(&key) {
                out.extend(list.iter().cloned());
            }
        }
        let others: Vec<(&String, &QueriesByValue)> =
            self.by_path.iter().filter(|(p, _)| *p != "_id").collect();
        if others.is_empty() {
            return out;
        }
        let Some(doc) = &event.full_document else {
            return self.all();
        };
        let routable = match event.operation {
            OperationType::Insert => true,
            OperationType::Update => event.update_description.as_ref().is_some_and(|u| {
                others.iter().all(|(p, _)| {
                    let touches = |k: &String| {
                        k == *p
                            || k.strip_prefix(p.as_str())
                                .is_some_and(|r| r.starts_with('.'))
                            || p.strip_prefix(k.as_str())
                                .is_some_and(|r| r.starts_with('.'))
                    };
                    !u.updated_fields.keys().any(touches) && !u.removed_fields.iter().any(touches)
                })
            }),
            _ => false,
        };
        if !routable {
            return self.all();
        }
        for (path, values) in others {
            let value = doc.get(path.as_str()).unwrap_or(&Value::Null);
            let Some(key) = crate::storage::index_key::encode(value) else {
                // An array matches by its elements: no single key to route by.
                return self.all();
            };
            if let Some(list) = values.get(&key) {
                out.extend(list.iter().cloned());
            }
        }
        out
    }
}

/// Every live query of one store.
pub struct ObserveHub {
    store: Arc<dyn Store>,
    queries: Mutex<HashMap<String, Arc<LiveQuery>>>,
    /// The same queries by collection and routing equality (locked after `queries`).
    routes: Mutex<FastMap<Arc<str>, Routes>>,
    processed: watch::Sender<u64>,
    next_sink: AtomicU64,
    /// False once the task following the change feed has ended.
    feed_alive: std::sync::atomic::AtomicBool,
    /// Serializes query starts with event processing, so a query never misses an event that
    /// lands between its initial read and its registration.
    apply_lock: tokio::sync::Mutex<()>,
    /// Seconds from a change entering comet to the live queries having applied it.
    lag: prometheus_client::metrics::histogram::Histogram,
    /// Events applied so far: a read made without the lock counts only if this did not move,
    /// or if none of the events applied meanwhile could concern it (see `recent`).
    applied: AtomicU64,
    /// The last events applied, each with the value `applied` reached by it (`None`: a lag,
    /// which may have concerned anything). Changed only under the apply lock.
    recent: Mutex<VecDeque<(u64, Option<Arc<ChangeEvent>>)>>,
    /// The position the change feed alone has reached (events applied, progress seen).
    feed_done: AtomicU64,
    /// The `first` of every pending re-run, counted: the processed position stays below the
    /// oldest.
    pending_rereads: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Re-runs reading at once (a burst of re-runs must not take every store connection).
    reread_slots: Arc<tokio::sync::Semaphore>,
}

/// Re-runs of live queries reading from the store at the same time.
const CONCURRENT_REREADS: usize = 16;

/// Reads of a new live query tried without the lock before one is made under it.
const OPTIMISTIC_READS: usize = 3;

/// Events kept to tell whether a read made without the lock missed one that concerns it:
/// under a burst of writes some event lands during nearly every read, and reading under
/// the lock instead would stall the feed behind every new query.
const RECENT_EVENTS: usize = 4096;

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
    pub fn start(store: Arc<dyn Store>) -> Arc<Self> {
        let (processed, _) = watch::channel(store.last_seq());
        let hub = Arc::new(Self {
            store: store.clone(),
            queries: Mutex::new(HashMap::new()),
            routes: Mutex::new(FastMap::default()),
            processed,
            next_sink: AtomicU64::new(1),
            feed_alive: std::sync::atomic::AtomicBool::new(true),
            apply_lock: tokio::sync::Mutex::new(()),
            applied: AtomicU64::new(0),
            recent: Mutex::new(VecDeque::with_capacity(RECENT_EVENTS)),
            feed_done: AtomicU64::new(store.last_seq()),
            pending_rereads: Mutex::new(std::collections::BTreeMap::new()),
            reread_slots: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_REREADS)),
            lag: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.00005, 2.0, 22),
            ),
        });
        let feed = store.subscribe();
        tokio::spawn(Self::follow(Arc::downgrade(&hub), feed));
        hub
    }

    /// The histogram of the change feed's lag (shared: `/metrics` reads the same one).
    pub fn lag_histogram(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.lag.clone()
    }

    /// Whether change events are still being followed (what `/health` reports).
    pub fn is_live(&self) -> bool {
        self.feed_alive.load(Ordering::Relaxed) && self.store.is_following()
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The change position every live query has applied (what write fences wait for).
    pub fn processed_position(&self) -> u64 {
        *self.processed.borrow()
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

    /// Processes an event no store reported, as if one had (the benchmarks' change source).
    pub async fn inject(self: &Arc<Self>, event: &ChangeEvent) {
        let _guard = self.apply_lock.lock().await;
        self.apply(event);
        self.note_applied(Some(Arc::new(event.clone())));
    }

    /// Counts an applied event (the apply lock held) and keeps it among the recent ones.
    fn note_applied(&self, event: Option<Arc<ChangeEvent>>) {
        let count = self.applied.fetch_add(1, Ordering::AcqRel) + 1;
        let mut recent = lock(&self.recent);
        if recent.len() == RECENT_EVENTS {
            recent.pop_front();
        }
        recent.push_back((count, event));
    }

    /// Whether a read of `cursor` begun when `applied` was `since` still holds: every event
    /// applied after it is known and none could concern the read (the apply lock held).
    /// An event concerns it when it is on the cursor's collection and touches a document the
    /// read returned, or leaves one that the selector matches, or says too little to tell.
    fn read_still_holds(&self, cursor: &Cursor, since: u64, docs: &[Document]) -> bool {
        let now = self.applied.load(Ordering::Acquire);
        if now == since {
            return true;
        }
        let recent = lock(&self.recent);
        if recent.front().is_none_or(|(first, _)| *first > since + 1) {
            return false;
        }
        // The read's ids, gathered once for every event to check (a read may hold thousands);
        // a document without a usable id might be any document.
        let mut read_ids: Option<(std::collections::HashSet<String>, bool)> = None;
        recent
            .iter()
            .filter(|(count, _)| *count > since)
            .all(|(_, event)| {
                let Some(event) = event else { return false };
                if event.collection != cursor.collection {
                    return !matches!(
                        event.operation,
                        OperationType::DropDatabase | OperationType::Invalidate
                    ) && event.rename_to.as_deref() != Some(&*cursor.collection);
                }
                // A document skipped over that leaves moves the window: no telling.
                let Some(id) = event.id.as_ref().filter(|_| cursor.skip == 0) else {
                    return false;
                };
                // A document the read may hold a copy of, from before or after the event.
                let (ids, unknown) = read_ids.get_or_insert_with(|| {
                    let mut unknown = false;
                    let ids = docs
                        .iter()
                        .filter_map(|d| {
                            let wire = d.get("_id").and_then(|v| id_to_wire(v).ok());
                            unknown |= wire.is_none();
                            wire
                        })
                        .collect();
                    (ids, unknown)
                });
                let held = *unknown || id_to_wire(id).map_or(true, |w| ids.contains(&w));
                match event.operation {
                    OperationType::Insert | OperationType::Update | OperationType::Replace => {
                        event
                            .full_document
                            .as_ref()
                            .is_some_and(|after| !cursor.selector.matches(after))
                            && !held
                    }
                    OperationType::Delete => !held,
                    _ => false,
                }
            })
    }

    /// Observes `cursor`: the current documents arrive as `Added`, then every change.
    pub async fn observe(
        self: &Arc<Self>,
        cursor: Cursor,
        sink: Arc<dyn ObserveSink>,
    ) -> Result<ObserveHandle, StoreError> {
        let mut guard = self.apply_lock.lock().await;
        let mut existing = lock(&self.queries).get(&cursor.key).cloned();
        if existing.is_none() {
            self.store.follow_collection(&cursor.collection);
            // Read without the lock, so a slow read holds up no other query and no event;
            // the read counts only if no event was applied meanwhile (it might have missed
            // one), else read again, and in the end under the lock.
            let mut read = None;
            for _ in 0..OPTIMISTIC_READS {
                let applied = self.applied.load(Ordering::Acquire);
                drop(guard);
                let docs = self
                    .store
                    .find(&cursor.collection, cursor.find_options())
                    .await;
                guard = self.apply_lock.lock().await;
                let docs = docs?;
                existing = lock(&self.queries).get(&cursor.key).cloned();
                if existing.is_some() {
                    break;
                }
                if self.read_still_holds(&cursor, applied, &docs) {
                    read = Some(docs);
                    break;
                }
            }
            if existing.is_none() {
                let docs = match read {
                    Some(docs) => docs,
                    None => {
                        self.store
                            .find(&cursor.collection, cursor.find_options())
                            .await?
                    }
                };
                existing = Some(self.start_query(&cursor, docs)?);
            }
        }
        let Some(query) = existing else {
            return Err(StoreError::Unavailable("live query not started".into()));
        };
        let id = self.next_sink.fetch_add(1, Ordering::Relaxed);
        {
            let mut state = lock(&query.state);
            if sink.ordered() {
                if !state.ordered {
                    let sort = &query.cursor.sort;
                    state
                        .results
                        .sort_by(|_, a, _, b| cursor_order(sort, &a.0, &b.0));
                    state.ordered = true;
                }
                for (_, shared) in state.results.values() {
                    sink.event(&ObserveEvent::AddedBefore {
                        doc: shared.clone(),
                        before: None,
                    });
                }
            } else {
                for (_, shared) in state.results.values() {
                    sink.event(&ObserveEvent::Added(shared.clone()));
                }
            }
            state.sinks.push((id, sink));
        }
        Ok(ObserveHandle {
            hub: self.clone(),
            key: cursor.key,
            sink: id,
        })
    }

    /// Files a new live query with its first results (the apply lock held).
    fn start_query(
        &self,
        cursor: &Cursor,
        docs: Vec<Document>,
    ) -> Result<Arc<LiveQuery>, StoreError> {
        let mut results = IndexMap::default();
        for doc in docs {
            let (wire, entry) = shared_entry(cursor, Arc::new(doc))?;
            results.insert(wire, entry);
        }
        let route = cursor
            .selector
            .equalities()
            .into_iter()
            .filter(|(path, _)| !path.contains('.'))
            .find_map(|(path, v)| {
                crate::storage::index_key::encode(v).map(|k| (path.to_owned(), k))
            });
        let q = Arc::new(LiveQuery {
            route,
            cursor: cursor.clone(),
            state: Mutex::new(QueryState {
                results,
                sinks: Vec::new(),
                ordered: false,
                reread: None,
            }),
        });
        let mut queries = lock(&self.queries);
        queries.insert(cursor.key.clone(), q.clone());
        lock(&self.routes)
            .entry(cursor.collection.clone())
            .or_default()
            .add(q.clone());
        Ok(q)
    }

    /// Drops a query from the hub (its observers are gone or failed).
    fn forget(&self, q: &Arc<LiveQuery>) {
        let mut queries = lock(&self.queries);
        if queries
            .get(&q.cursor.key)
            .is_some_and(|held| Arc::ptr_eq(held, q))
        {
            queries.remove(&q.cursor.key);
            let mut routes = lock(&self.routes);
            if let Some(r) = routes.get_mut(&q.cursor.collection) {
                r.remove(q);
                if r.is_empty() {
                    routes.remove(&q.cursor.collection);
                }
            }
        }
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
            if let Some(q) = queries.remove(key) {
                let mut routes = lock(&self.routes);
                if let Some(r) = routes.get_mut(&q.cursor.collection) {
                    r.remove(&q);
                    if r.is_empty() {
                        routes.remove(&q.cursor.collection);
                    }
                }
            }
        }
    }

    async fn follow(hub: std::sync::Weak<Self>, mut feed: broadcast::Receiver<Arc<ChangeEvent>>) {
        loop {
            let received = feed.recv().await;
            let Some(hub) = hub.upgrade() else { return };
            match received {
                Ok(event) if event.operation == OperationType::Progress => {
                    // Everything before it was applied (the feed is in order): its position
                    // is passed.
                    hub.feed_done.fetch_max(event.seq, Ordering::AcqRel);
                    hub.publish_processed();
                }
                Ok(event) => {
                    {
                        let _guard = hub.apply_lock.lock().await;
                        hub.apply(&event);
                        hub.note_applied(Some(event.clone()));
                    }
                    // Where events share a position, more may come at this one: only what
                    // lies before it is surely done (a `progress` event completes it).
                    let done = if hub.store.events_share_positions() {
                        event.seq.saturating_sub(1)
                    } else {
                        event.seq
                    };
                    hub.feed_done.fetch_max(done, Ordering::AcqRel);
                    hub.publish_processed();
                    hub.lag.observe(event.received.elapsed().as_secs_f64());
                }
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "change feed lagged: re-running every live query");
                    {
                        let _guard = hub.apply_lock.lock().await;
                        let last = hub.store.last_seq();
                        let oldest_missed = *hub.processed.borrow() + 1;
                        let queries: Vec<_> = lock(&hub.queries).values().cloned().collect();
                        for q in queries {
                            hub.schedule_reread(&q, oldest_missed, last);
                        }
                        hub.note_applied(None);
                        hub.feed_done.fetch_max(last, Ordering::AcqRel);
                    }
                    hub.publish_processed();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::error!("change feed closed: live queries no longer follow changes");
                    hub.feed_alive.store(false, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Applies one event to the queries it may concern (the apply lock held); queries that
    /// must read again get a re-run scheduled, not awaited.
    fn apply(self: &Arc<Self>, event: &ChangeEvent) {
        // A database-wide event (dropDatabase, or a source that lost its place) concerns
        // every query.
        let everything = matches!(
            event.operation,
            OperationType::DropDatabase | OperationType::Invalidate
        );
        let queries: Vec<_> = if everything {
            lock(&self.queries).values().cloned().collect()
        } else {
            let routes = lock(&self.routes);
            let mut queries = routes
                .get(&event.collection)
                .map(|r| r.candidates(event))
                .unwrap_or_default();
            // A rename replaces its target's documents: the target's queries read again too.
            if let Some(target) = event
                .rename_to
                .as_ref()
                .filter(|_| event.operation == OperationType::Rename)
            {
                queries.extend(routes.get(target).map(Routes::all).unwrap_or_default());
            }
            queries
        };
        for q in queries {
            if lock(&q.state).reread.is_some() {
                // The pending read covers this event, provided it reads after it.
                self.schedule_reread(&q, event.seq, event.seq);
                continue;
            }
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
                self.schedule_reread(&q, event.seq, event.seq);
            }
        }
    }

    /// Notes that `q` must read again to reflect the events `first..=latest`, and starts
    /// the re-run unless one is under way (which then reads again if it began too early).
    fn schedule_reread(self: &Arc<Self>, q: &Arc<LiveQuery>, first: u64, latest: u64) {
        let mut state = lock(&q.state);
        match &mut state.reread {
            Some(due) => due.latest = due.latest.max(latest),
            None => {
                state.reread = Some(Reread { first, latest });
                *lock(&self.pending_rereads).entry(first).or_default() += 1;
                drop(state);
                tokio::spawn(Self::reread(Arc::downgrade(self), q.clone()));
            }
        }
    }

    /// Reads `q` again until a read began after the newest event that asked for it, sends
    /// each difference, then lets the processed position pass the events it covered.
    async fn reread(hub: std::sync::Weak<Self>, q: Arc<LiveQuery>) {
        loop {
            let Some(strong) = hub.upgrade() else { return };
            let asked = lock(&q.state).reread.as_ref().map_or(0, |due| due.latest);
            let slots = strong.reread_slots.clone();
            let store = strong.store.clone();
            drop(strong);
            let found = {
                let _slot = slots.acquire_owned().await;
                store
                    .find(&q.cursor.collection, q.cursor.find_options())
                    .await
            };
            let Some(hub) = hub.upgrade() else { return };
            let docs = match found {
                Ok(docs) => docs,
                Err(err) => {
                    // The query can no longer be kept right: its observers end with the
                    // error (a subscription gets `nosub`), rather than stay silently stale.
                    tracing::error!(cause = %err, collection = %q.cursor.collection, "live query re-run failed: its observers end");
                    let (sinks, due) = {
                        let mut state = lock(&q.state);
                        (std::mem::take(&mut state.sinks), state.reread.take())
                    };
                    hub.forget(&q);
                    for (_, sink) in sinks {
                        sink.failed(&err);
                    }
                    hub.reread_done(due);
                    return;
                }
            };
            let mut state = lock(&q.state);
            replace_results(&q.cursor, &mut state, docs);
            if state.reread.as_ref().is_some_and(|due| due.latest > asked) {
                continue;
            }
            let due = state.reread.take();
            drop(state);
            hub.reread_done(due);
            return;
        }
    }

    /// A re-run finished: the processed position may pass what it covered.
    fn reread_done(&self, due: Option<Reread>) {
        if let Some(due) = due {
            let mut pending = lock(&self.pending_rereads);
            if let Some(count) = pending.get_mut(&due.first) {
                *count -= 1;
                if *count == 0 {
                    pending.remove(&due.first);
                }
            }
        }
        self.publish_processed();
    }

    /// Moves the processed position (what write fences wait for) to where the feed is,
    /// but not past the oldest event a pending re-run must still reflect.
    fn publish_processed(&self) {
        let feed = self.feed_done.load(Ordering::Acquire);
        let oldest_pending = lock(&self.pending_rereads).keys().next().copied();
        let done = oldest_pending.map_or(feed, |first| feed.min(first.saturating_sub(1)));
        self.processed.send_if_modified(|at| {
            let moved = done > *at;
            *at = (*at).max(done);
            moved
        });
    }
}

/// Replaces a query's results by a fresh read and sends the difference.
fn replace_results(cursor: &Cursor, state: &mut QueryState, docs: Vec<Document>) {
    let mut fresh: IndexMap<Arc<str>, Entry, foldhash::fast::RandomState> = IndexMap::default();
    for doc in docs {
        match shared_entry(cursor, Arc::new(doc)) {
            Ok((wire, entry)) => {
                fresh.insert(wire, entry);
            }
            Err(err) => tracing::error!(cause = %err, "document with an unusable _id skipped"),
        }
    }
    if state.ordered {
        let sort = &cursor.sort;
        fresh.sort_by(|_, a, _, b| cursor_order(sort, &a.0, &b.0));
    }
    let mut diff = Diff::default();
    for (wire, (_, old)) in &state.results {
        match fresh.get(wire) {
            None => diff.unordered.push(ObserveEvent::Removed {
                collection: cursor.collection.clone(),
                id: wire.clone(),
            }),
            Some((_, new)) => {
                if let Some(e) = changed_event(cursor, wire, old, new) {
                    diff.unordered.push(e);
                }
            }
        }
    }
    for (wire, (_, new)) in &fresh {
        if !state.results.contains_key(wire) {
            diff.unordered.push(ObserveEvent::Added(new.clone()));
        }
    }
    if state.ordered {
        ordered_diff(cursor, &state.results, &fresh, &mut diff.ordered);
    }
    state.results = fresh;
    deliver(state, &diff);
}

/// Cursor order: the sort, then `_id`.
fn cursor_order(sort: &Sort, a: &Document, b: &Document) -> std::cmp::Ordering {
    let null = Value::Null;
    sort.compare(a, b)
        .then_with(|| compare(a.get("_id").unwrap_or(&null), b.get("_id").unwrap_or(&null)))
}

impl Diff {
    fn both(&mut self, event: ObserveEvent) {
        let copy = match &event {
            ObserveEvent::Removed { collection, id } => ObserveEvent::Removed {
                collection: collection.clone(),
                id: id.clone(),
            },
            ObserveEvent::Changed {
                collection,
                id,
                fields,
                cleared,
                doc,
            } => ObserveEvent::Changed {
                collection: collection.clone(),
                id: id.clone(),
                fields: fields.clone(),
                cleared: cleared.clone(),
                doc: doc.clone(),
            },
            _ => return self.unordered.push(event),
        };
        self.unordered.push(event);
        self.ordered.push(copy);
    }
}

type Results = IndexMap<Arc<str>, Entry, foldhash::fast::RandomState>;

/// The ordered events that turn `old` into `new`: removals, then, walking `new` from its end,
/// additions and moves placed before the document that follows them. Documents on a longest
/// run that kept its relative order stay where they are, so moves are few.
fn ordered_diff(cursor: &Cursor, old: &Results, new: &Results, out: &mut Vec<ObserveEvent>) {
    for wire in old.keys() {
        if !new.contains_key(wire) {
            out.push(ObserveEvent::Removed {
                collection: cursor.collection.clone(),
                id: wire.clone(),
            });
        }
    }
    // Old positions of the survivors, in new order; the longest increasing run stays put.
    let survivors: Vec<(usize, usize)> = new
        .keys()
        .enumerate()
        .filter_map(|(new_index, wire)| old.get_index_of(wire).map(|o| (new_index, o)))
        .collect();
    let staying = longest_increasing(&survivors);
    let mut next: Option<Arc<str>> = None;
    for (new_index, (wire, (_, doc))) in new.iter().enumerate().rev() {
        match old.get(wire) {
            None => out.push(ObserveEvent::AddedBefore {
                doc: doc.clone(),
                before: next.clone(),
            }),
            Some((_, previous)) => {
                out.extend(changed_event(cursor, wire, previous, doc));
                if !staying.contains(&new_index) {
                    out.push(ObserveEvent::MovedBefore {
                        collection: cursor.collection.clone(),
                        id: wire.clone(),
                        before: next.clone(),
                    });
                }
            }
        }
        next = Some(wire.clone());
    }
}

/// The first members (new indexes) of a longest subsequence of `pairs` whose second members
/// (old indexes) increase.
fn longest_increasing(pairs: &[(usize, usize)]) -> std::collections::HashSet<usize> {
    // tails[k]: index into `pairs` of the smallest tail of an increasing run of length k+1.
    let mut tails: Vec<usize> = Vec::new();
    let mut previous: Vec<Option<usize>> = vec![None; pairs.len()];
    for (i, &(_, old)) in pairs.iter().enumerate() {
        let k = tails.partition_point(|&t| pairs[t].1 < old);
        previous[i] = k.checked_sub(1).map(|p| tails[p]);
        if k == tails.len() {
            tails.push(i);
        } else {
            tails[k] = i;
        }
    }
    let mut out = std::collections::HashSet::new();
    let mut at = tails.last().copied();
    while let Some(i) = at {
        out.insert(pairs[i].0);
        at = previous[i];
    }
    out
}

/// A result entry: the full document (for matching) and its shared, projected form.
type Entry = (Arc<Document>, Arc<SharedAdded>);

fn shared_entry(cursor: &Cursor, doc: Arc<Document>) -> Result<(Arc<str>, Entry), StoreError> {
    let id = doc.get("_id").cloned().unwrap_or(Value::Null);
    let wire: Arc<str> = id_to_wire(&id)
        .map_err(|e| StoreError::InvalidDocument(e.to_string()))?
        .into();
    // Without a projection the published fields are the document itself: one copy, shared
    // with the change event it came from.
    let projected = if cursor.projection.is_all() {
        doc.clone()
    } else {
        Arc::new(cursor.projection.apply(&doc))
    };
    let shared = SharedAdded::new(cursor.collection.clone(), wire.clone(), projected);
    Ok((wire, (doc, shared)))
}

/// The top-level fields that differ between two projected versions.
fn changed_event(
    cursor: &Cursor,
    wire: &Arc<str>,
    old: &SharedAdded,
    new: &Arc<SharedAdded>,
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
        doc: new.clone(),
    })
}

fn deliver(state: &mut QueryState, diff: &Diff) {
    if diff.unordered.is_empty() && diff.ordered.is_empty() {
        return;
    }
    state.sinks.retain(|(_, sink)| {
        let events = if sink.ordered() {
            &diff.ordered
        } else {
            &diff.unordered
        };
        events.iter().all(|e| sink.event(e))
    });
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
    let mut diff = Diff::default();
    let ordered = state.ordered;
    let sort = &q.cursor.sort;
    match (now, state.results.get_index_of(&wire)) {
        (Some(doc), None) => {
            if let Ok((w, entry)) = shared_entry(&q.cursor, doc.clone()) {
                let shared = entry.1.clone();
                diff.unordered.push(ObserveEvent::Added(shared.clone()));
                if ordered {
                    let at = state
                        .results
                        .partition_point(|_, (d, _)| cursor_order(sort, d, &entry.0).is_lt());
                    let before = state.results.get_index(at).map(|(k, _)| k.clone());
                    state.results.shift_insert(at, w, entry);
                    diff.ordered.push(ObserveEvent::AddedBefore {
                        doc: shared,
                        before,
                    });
                } else {
                    state.results.insert(w, entry);
                }
            }
        }
        (Some(doc), Some(old_index)) => {
            if let Ok((w, entry)) = shared_entry(&q.cursor, doc.clone()) {
                if let Some((_, old)) = state.results.get(&w) {
                    if let Some(e) = changed_event(&q.cursor, &w, old, &entry.1) {
                        diff.both(e);
                    }
                }
                if ordered {
                    state.results.shift_remove_index(old_index);
                    let at = state
                        .results
                        .partition_point(|_, (d, _)| cursor_order(sort, d, &entry.0).is_lt());
                    let before = state.results.get_index(at).map(|(k, _)| k.clone());
                    state.results.shift_insert(at, w.clone(), entry);
                    if at != old_index {
                        diff.ordered.push(ObserveEvent::MovedBefore {
                            collection: q.cursor.collection.clone(),
                            id: w,
                            before,
                        });
                    }
                } else {
                    state.results.insert(w, entry);
                }
            }
        }
        (None, Some(_)) => {
            state.results.shift_remove(&wire);
            diff.both(ObserveEvent::Removed {
                collection: q.cursor.collection.clone(),
                id: wire,
            });
        }
        (None, None) => {}
    }
    deliver(&mut state, &diff);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::{Selector, Update};
    use crate::storage::EmbeddedStore;

    #[derive(Default)]
    struct Seen(Mutex<Vec<String>>);

    impl ObserveSink for Seen {
        fn event(&self, event: &ObserveEvent) -> bool {
            let line = match event {
                ObserveEvent::Added(d) => format!("added {}", d.id),
                ObserveEvent::Removed { id, .. } => format!("removed {id}"),
                ObserveEvent::Changed { id, .. } => format!("changed {id}"),
                other => format!("{other:?}"),
            };
            lock(&self.0).push(line);
            true
        }
    }

    fn doc(json: serde_json::Value) -> Document {
        let Ok(Value::Object(d)) = Value::from_json(json) else {
            unreachable!()
        };
        d
    }

    /// A read made while events were applied counts only when none of them could concern it.
    #[tokio::test]
    async fn a_read_holds_only_past_events_that_cannot_concern_it() {
        let dir = std::env::temp_dir().join(format!(
            "comet-recent-{}",
            crate::model::random::random_id()
        ));
        let store = EmbeddedStore::open(&dir).unwrap();
        let hub = ObserveHub::start(store.clone());
        let empty = Document::default();
        let mine = Cursor::new(
            "users",
            &doc(serde_json::json!({"_id": "me"})),
            &empty,
            0,
            None,
            &empty,
        )
        .unwrap();
        let read = vec![doc(serde_json::json!({"_id": "me", "status": "online"}))];
        let event =
            |collection: &str, op: OperationType, id: &str, after: Option<serde_json::Value>| {
                Some(Arc::new(ChangeEvent::for_document(
                    1,
                    op,
                    collection.into(),
                    Some(Value::from(id)),
                    after.map(|a| Arc::new(doc(a))),
                    None,
                )))
            };
        let holds = |hub: &ObserveHub, since: u64| hub.read_still_holds(&mine, since, &read);
        let since = hub.applied.load(Ordering::Acquire);
        assert!(holds(&hub, since), "nothing applied meanwhile");
        // Another collection, another user's change, another user's removal: no matter.
        hub.note_applied(event(
            "usersSessions",
            OperationType::Update,
            "me",
            Some(serde_json::json!({"_id": "me"})),
        ));
        hub.note_applied(event(
            "users",
            OperationType::Update,
            "you",
            Some(serde_json::json!({"_id": "you"})),
        ));
        hub.note_applied(event("users", OperationType::Delete, "them", None));
        assert!(holds(&hub, since));
        // A change to the document read: the read may be older than it.
        let before_mine = hub.applied.load(Ordering::Acquire);
        hub.note_applied(event(
            "users",
            OperationType::Update,
            "me",
            Some(serde_json::json!({"_id": "me", "status": "away"})),
        ));
        assert!(!holds(&hub, since));
        assert!(!holds(&hub, before_mine));
        // A document arriving that the selector matches, one saying too little, a lag.
        let after_mine = hub.applied.load(Ordering::Acquire);
        assert!(holds(&hub, after_mine));
        let empty_cursor = Cursor::new("users", &empty, &empty, 0, None, &empty).unwrap();
        hub.note_applied(event(
            "users",
            OperationType::Insert,
            "new",
            Some(serde_json::json!({"_id": "new"})),
        ));
        assert!(!hub.read_still_holds(&empty_cursor, after_mine, &[]));
        let before_bare = hub.applied.load(Ordering::Acquire);
        hub.note_applied(event("users", OperationType::Update, "x", None));
        assert!(!holds(&hub, before_bare));
        let before_lag = hub.applied.load(Ordering::Acquire);
        hub.note_applied(None);
        assert!(!holds(&hub, before_lag));
        // A skipped-over document leaving moves a window: never held past.
        let skipping = Cursor::new("users", &empty, &empty, 2, None, &empty).unwrap();
        let before_skip = hub.applied.load(Ordering::Acquire);
        hub.note_applied(event("users", OperationType::Delete, "first", None));
        assert!(!hub.read_still_holds(&skipping, before_skip, &[]));
        // Events older than those kept: no telling.
        for _ in 0..RECENT_EVENTS {
            hub.note_applied(event(
                "other",
                OperationType::Insert,
                "z",
                Some(serde_json::json!({"_id": "z"})),
            ));
        }
        assert!(!holds(&hub, after_mine));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Routing by equality must not hide an event from a query whose document leaves it, nor
    /// one whose document matches through an array.
    #[tokio::test]
    async fn routed_queries_see_documents_leave_and_match_through_arrays() {
        let dir =
            std::env::temp_dir().join(format!("comet-route-{}", crate::model::random::random_id()));
        let store = EmbeddedStore::open(&dir).unwrap();
        let hub = ObserveHub::start(store.clone());
        let empty = Document::default();
        let cursor = Cursor::new(
            "m",
            &doc(serde_json::json!({"rid": "x"})),
            &empty,
            0,
            None,
            &empty,
        )
        .unwrap();
        let seen = Arc::new(Seen::default());
        let _handle = hub.observe(cursor, seen.clone()).await.unwrap();
        let mut last = 0;
        for (write, want) in [
            ("insert a in x", "added a"),
            ("insert b in y", ""),
            ("move a to y", "removed a"),
            ("insert c with [y, x]", "added c"),
            ("touch c", "changed c"),
        ] {
            let seq = match write {
                "insert a in x" => {
                    store
                        .insert("m", doc(serde_json::json!({"_id": "a", "rid": "x"})))
                        .await
                        .unwrap()
                        .seq
                }
                "insert b in y" => {
                    store
                        .insert("m", doc(serde_json::json!({"_id": "b", "rid": "y"})))
                        .await
                        .unwrap()
                        .seq
                }
                "move a to y" => {
                    store
                        .update(
                            "m",
                            Selector::by_id("a".into()),
                            Update::parse(&doc(serde_json::json!({"$set": {"rid": "y"}}))).unwrap(),
                            crate::storage::UpdateOptions::default(),
                        )
                        .await
                        .unwrap()
                        .seq
                }
                "insert c with [y, x]" => {
                    store
                        .insert("m", doc(serde_json::json!({"_id": "c", "rid": ["y", "x"]})))
                        .await
                        .unwrap()
                        .seq
                }
                _ => {
                    store
                        .update(
                            "m",
                            Selector::by_id("c".into()),
                            Update::parse(&doc(serde_json::json!({"$set": {"n": 1}}))).unwrap(),
                            crate::storage::UpdateOptions::default(),
                        )
                        .await
                        .unwrap()
                        .seq
                }
            };
            hub.wait_processed(seq).await;
            let events = lock(&seen.0).clone();
            let new: Vec<String> = events[last..].to_vec();
            last = events.len();
            let expected: Vec<String> = if want.is_empty() {
                vec![]
            } else {
                vec![want.to_owned()]
            };
            assert_eq!(new, expected, "after {write}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A query on one `_id` is filed under it and still sees its document's every change,
    /// its removal included, and nothing of other documents.
    #[tokio::test]
    async fn a_query_by_id_sees_its_document_through_every_operation() {
        let dir = std::env::temp_dir().join(format!(
            "comet-route-id-{}",
            crate::model::random::random_id()
        ));
        let store = EmbeddedStore::open(&dir).unwrap();
        let hub = ObserveHub::start(store.clone());
        let empty = Document::default();
        let cursor = Cursor::new(
            "u",
            &doc(serde_json::json!({"_id": "a"})),
            &empty,
            0,
            None,
            &empty,
        )
        .unwrap();
        let seen = Arc::new(Seen::default());
        let _handle = hub.observe(cursor, seen.clone()).await.unwrap();
        let set = |n: i32| Update::parse(&doc(serde_json::json!({"$set": {"n": n}}))).unwrap();
        let opts = crate::storage::UpdateOptions::default();
        let mut last = 0;
        for seq in [
            store
                .insert("u", doc(serde_json::json!({"_id": "a", "n": 0})))
                .await
                .unwrap()
                .seq,
            store
                .insert("u", doc(serde_json::json!({"_id": "b", "n": 0})))
                .await
                .unwrap()
                .seq,
            store
                .update("u", Selector::by_id("b".into()), set(1), opts)
                .await
                .unwrap()
                .seq,
            store
                .update("u", Selector::by_id("a".into()), set(2), opts)
                .await
                .unwrap()
                .seq,
            store
                .update(
                    "u",
                    Selector::by_id("a".into()),
                    Update::parse(&doc(serde_json::json!({"n": 3}))).unwrap(),
                    opts,
                )
                .await
                .unwrap()
                .seq,
            store
                .remove(
                    "u",
                    Selector::by_id("a".into()),
                    crate::storage::RemoveOptions::default(),
                )
                .await
                .unwrap()
                .seq,
        ] {
            hub.wait_processed(seq).await;
            last = last.max(seq);
        }
        hub.wait_processed(last).await;
        assert_eq!(
            *lock(&seen.0),
            vec!["added a", "changed a", "changed a", "removed a"]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
