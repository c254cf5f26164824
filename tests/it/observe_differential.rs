//! Differential test of live queries: random documents, random cursors and random writes on
//! the real embedded store; after every write (once the write fence says it was observed), the
//! result a client rebuilds from the events must equal re-running the query. Ordered
//! observers must also rebuild the order (sort, then `_id`) from `addedBefore` /
//! `movedBefore`; some cases declare indexes, so the store's index plans are checked too.
//! `COMET_DIFF_CASES` sets the number of cases (default 1000).

#![allow(clippy::unwrap_used)] // test code

use comet::model::{Document, Value};
use comet::observe::{Cursor, ObserveEvent, ObserveHub, ObserveSink};
use comet::storage::EmbeddedStore;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

#[derive(Default)]
struct ClientView {
    docs: Mutex<BTreeMap<String, Document>>,
    /// For an ordered observer: the ids in the order the events describe.
    order: Mutex<Vec<String>>,
    ordered: bool,
    errors: Mutex<Vec<String>>,
}

impl ClientView {
    fn place(&self, id: &str, before: Option<&str>) {
        let mut order = self.order.lock().unwrap();
        order.retain(|x| x != id);
        let at = match before {
            None => order.len(),
            Some(b) => match order.iter().position(|x| x == b) {
                Some(at) => at,
                None => {
                    self.errors
                        .lock()
                        .unwrap()
                        .push(format!("{id} placed before unknown {b}"));
                    order.len()
                }
            },
        };
        order.insert(at, id.to_owned());
    }
}

impl ObserveSink for ClientView {
    fn ordered(&self) -> bool {
        self.ordered
    }

    fn event(&self, event: &ObserveEvent) -> bool {
        let wrong_kind = match event {
            ObserveEvent::Added(_) => self.ordered,
            ObserveEvent::AddedBefore { .. } | ObserveEvent::MovedBefore { .. } => !self.ordered,
            _ => false,
        };
        if wrong_kind {
            self.errors.lock().unwrap().push(format!(
                "{event:?} for an observer with ordered={}",
                self.ordered
            ));
        }
        match event {
            ObserveEvent::AddedBefore { doc, before } => {
                self.place(&doc.id, before.as_deref());
                self.apply(&ObserveEvent::Added(doc.clone()));
                return true;
            }
            ObserveEvent::MovedBefore { id, before, .. } => {
                if !self.docs.lock().unwrap().contains_key(&**id) {
                    self.errors
                        .lock()
                        .unwrap()
                        .push(format!("moved unknown {id}"));
                }
                self.place(id, before.as_deref());
                return true;
            }
            ObserveEvent::Removed { id, .. } => self.order.lock().unwrap().retain(|x| x != &**id),
            _ => {}
        }
        self.apply(event);
        true
    }
}

impl ClientView {
    /// What any client does with an event: keep the documents.
    fn apply(&self, event: &ObserveEvent) {
        let mut docs = self.docs.lock().unwrap();
        match event {
            ObserveEvent::Added(shared) => {
                let mut d = (*shared.fields).clone();
                d.shift_remove("_id");
                if docs.insert(shared.id.to_string(), d).is_some() {
                    self.errors
                        .lock()
                        .unwrap()
                        .push(format!("added twice: {}", shared.id));
                }
            }
            ObserveEvent::Changed {
                id,
                fields,
                cleared,
                ..
            } => match docs.get_mut(&**id) {
                Some(d) => {
                    for (k, v) in fields {
                        d.insert(k.clone(), v.clone());
                    }
                    for k in cleared {
                        d.shift_remove(k);
                    }
                }
                None => self
                    .errors
                    .lock()
                    .unwrap()
                    .push(format!("changed unknown {id}")),
            },
            ObserveEvent::Removed { id, .. } => {
                if docs.remove(&**id).is_none() {
                    self.errors
                        .lock()
                        .unwrap()
                        .push(format!("removed unknown {id}"));
                }
            }
            ObserveEvent::AddedBefore { .. } | ObserveEvent::MovedBefore { .. } => {}
        }
    }
}

#[derive(Clone, Debug)]
enum Write {
    Insert(u8, i64, i64),
    Set(u8, u8, i64),
    Unset(u8, u8),
    Replace(u8, i64),
    Remove(u8),
}

fn write() -> impl Strategy<Value = Write> {
    prop_oneof![
        (0u8..8, 0i64..4, 0i64..4).prop_map(|(i, a, b)| Write::Insert(i, a, b)),
        (0u8..8, 0u8..3, 0i64..4).prop_map(|(i, f, v)| Write::Set(i, f, v)),
        (0u8..8, 0u8..3).prop_map(|(i, f)| Write::Unset(i, f)),
        (0u8..8, 0i64..4).prop_map(|(i, a)| Write::Replace(i, a)),
        (0u8..8).prop_map(Write::Remove),
    ]
}

fn field(f: u8) -> &'static str {
    ["a", "b", "c"][f as usize]
}

fn json_doc(v: serde_json::Value) -> Document {
    match Value::from_json(v).unwrap() {
        Value::Object(d) => d,
        _ => unreachable!(),
    }
}

fn cursor() -> impl Strategy<
    Value = (
        serde_json::Value,
        serde_json::Value,
        usize,
        Option<usize>,
        serde_json::Value,
    ),
> {
    let selector = prop_oneof![
        Just(serde_json::json!({})),
        (0i64..4).prop_map(|v| serde_json::json!({"a": v})),
        (0i64..4).prop_map(|v| serde_json::json!({"a": {"$gte": v}})),
        (0i64..4).prop_map(|v| serde_json::json!({"$or": [{"b": v}, {"c": {"$exists": true}}]})),
        (0i64..4).prop_map(|v| serde_json::json!({"b": {"$ne": v}})),
    ];
    let sort = prop_oneof![
        Just(serde_json::json!({})),
        Just(serde_json::json!({"a": 1})),
        Just(serde_json::json!({"b": -1, "a": 1})),
    ];
    let fields = prop_oneof![
        Just(serde_json::json!({})),
        Just(serde_json::json!({"a": 1})),
        Just(serde_json::json!({"b": 0})),
    ];
    (
        selector,
        sort,
        0usize..3,
        prop::option::of(1usize..4),
        fields,
    )
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    })
}

fn cases() -> u32 {
    std::env::var("COMET_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn live_query_equals_rerunning_the_query(
        seed_docs in prop::collection::vec((0u8..8, 0i64..4, 0i64..4), 0..6),
        (selector, sort, skip, limit, fields) in cursor(),
        writes in prop::collection::vec(write(), 1..12),
        ordered in any::<bool>(),
        indexed in any::<bool>(),
    ) {
        runtime().block_on(async {
            let dir = std::env::temp_dir().join(format!("comet-diff-{}", comet::model::random::random_id()));
            let store = EmbeddedStore::open(&dir).unwrap();
            if indexed {
                for keys in [serde_json::json!({"a": 1}), serde_json::json!({"b": -1, "a": 1})] {
                    store.ensure_index("t", comet::model::query::Sort::parse(&json_doc(keys)).unwrap()).await.unwrap();
                }
            }
            for (i, a, b) in &seed_docs {
                let _ = store.insert("t", json_doc(serde_json::json!({"_id": format!("d{i}"), "a": a, "b": b}))).await;
            }
            let hub = ObserveHub::start(store.clone());
            hub.wait_processed(store.last_seq()).await;
            let cursor = Cursor::new("t", &json_doc(selector), &json_doc(sort), skip, limit, &json_doc(fields)).unwrap();
            let view = Arc::new(ClientView { ordered, ..ClientView::default() });
            let _handle = hub.observe(cursor.clone(), view.clone()).await.unwrap();
            for w in &writes {
                let seq = match w {
                    Write::Insert(i, a, b) => store.insert("t", json_doc(serde_json::json!({"_id": format!("d{i}"), "a": a, "b": b}))).await.map(|a| a.seq).unwrap_or(0),
                    Write::Set(i, f, v) => {
                        let mut set = serde_json::Map::new();
                        set.insert(field(*f).into(), serde_json::json!(v));
                        store.update("t", comet::model::query::Selector::by_id(format!("d{i}").into()), comet::model::query::Update::parse(&json_doc(serde_json::json!({"$set": set}))).unwrap(), comet::storage::UpdateOptions::default()).await.unwrap().seq
                    }
                    Write::Unset(i, f) => {
                        let mut unset = serde_json::Map::new();
                        unset.insert(field(*f).into(), serde_json::json!(1));
                        store.update("t", comet::model::query::Selector::by_id(format!("d{i}").into()), comet::model::query::Update::parse(&json_doc(serde_json::json!({"$unset": unset}))).unwrap(), comet::storage::UpdateOptions::default()).await.unwrap().seq
                    }
                    Write::Replace(i, a) => store.update("t", comet::model::query::Selector::by_id(format!("d{i}").into()), comet::model::query::Update::parse(&json_doc(serde_json::json!({"a": a, "c": 1}))).unwrap(), comet::storage::UpdateOptions::default()).await.unwrap().seq,
                    Write::Remove(i) => store.remove("t", comet::model::query::Selector::by_id(format!("d{i}").into()), comet::storage::RemoveOptions::default()).await.unwrap().seq,
                };
                hub.wait_processed(seq.max(store.last_seq())).await;
                let mut found = store
                    .find("t", comet::storage::FindOptions { selector: cursor.selector.clone(), sort: cursor.sort.clone(), skip: cursor.skip, limit: cursor.limit, projection: comet::model::query::Projection::all() })
                    .await
                    .unwrap();
                // Cursor order: the sort, then `_id` (a window without a sort has no order of
                // its own, so its members are ordered by `_id`).
                comet::storage::embedded::sort_documents(&mut found, &cursor.sort);
                let expected_order: Vec<String> = found.iter().map(|d| comet::model::id_to_wire(d.get("_id").unwrap()).unwrap()).collect();
                let expected: BTreeMap<String, Document> = found
                    .into_iter()
                    .map(|d| cursor.projection.apply(&d))
                    .map(|mut d| {
                        let id = comet::model::id_to_wire(d.get("_id").unwrap()).unwrap();
                        d.shift_remove("_id");
                        (id, d)
                    })
                    .collect();
                let got = view.docs.lock().unwrap().clone();
                let errors = view.errors.lock().unwrap().clone();
                assert!(errors.is_empty(), "after {w:?}: {errors:?}");
                // A DDP client keeps no field order, so fields are compared sorted.
                let show = |m: &BTreeMap<String, Document>| {
                    m.iter()
                        .map(|(k, d)| {
                            let mut sorted = d.clone();
                            sorted.sort_keys();
                            format!("{k}={}", Value::Object(sorted).to_ejson_string())
                        })
                        .collect::<Vec<_>>()
                };
                assert_eq!(show(&got), show(&expected), "after {:?}", w);
                if ordered {
                    assert_eq!(*view.order.lock().unwrap(), expected_order, "order after {:?}", w);
                }
            }
            drop(_handle);
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

/// The real store with slow reads: writes land while a live query's first read is under way.
/// The embedded store with reads that take their time; reads of `gated` also wait while the
/// gate is closed (false).
struct SlowReads {
    store: Arc<EmbeddedStore>,
    gated: &'static str,
    gate: tokio::sync::watch::Receiver<bool>,
}

impl SlowReads {
    fn new(store: Arc<EmbeddedStore>) -> (Self, tokio::sync::watch::Sender<bool>) {
        let (open, gate) = tokio::sync::watch::channel(true);
        let reads = Self {
            store,
            gated: "slow",
            gate,
        };
        (reads, open)
    }
}

impl comet::storage::Store for SlowReads {
    fn kind(&self) -> &'static str {
        "embedded, slow reads"
    }
    fn insert(
        &self,
        c: &str,
        d: Document,
    ) -> comet::storage::StoreFuture<'_, comet::storage::WriteAck> {
        comet::storage::Store::insert(&*self.store, c, d)
    }
    fn update(
        &self,
        c: &str,
        s: comet::model::query::Selector,
        u: comet::model::query::Update,
        options: comet::storage::UpdateOptions,
    ) -> comet::storage::StoreFuture<'_, comet::storage::UpdateAck> {
        comet::storage::Store::update(&*self.store, c, s, u, options)
    }
    fn remove(
        &self,
        c: &str,
        s: comet::model::query::Selector,
        options: comet::storage::RemoveOptions,
    ) -> comet::storage::StoreFuture<'_, comet::storage::UpdateAck> {
        comet::storage::Store::remove(&*self.store, c, s, options)
    }
    fn find(
        &self,
        c: &str,
        o: comet::storage::FindOptions,
    ) -> comet::storage::StoreFuture<'_, Vec<Document>> {
        let c = c.to_owned();
        let mut gate = self.gate.clone();
        let gated = c == self.gated;
        Box::pin(async move {
            if gated {
                let _ = gate.wait_for(|open| *open).await;
            }
            let found = comet::storage::Store::find(&*self.store, &c, o).await;
            // The answer is read, then takes its time to arrive, as a busy server's does.
            tokio::time::sleep(std::time::Duration::from_millis(15)).await;
            found
        })
    }
    fn ensure_index(
        &self,
        c: &str,
        k: comet::model::query::Sort,
    ) -> comet::storage::StoreFuture<'_, ()> {
        comet::storage::Store::ensure_index(&*self.store, c, k)
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Arc<comet::storage::ChangeEvent>> {
        comet::storage::Store::subscribe(&*self.store)
    }
    fn last_seq(&self) -> u64 {
        comet::storage::Store::last_seq(&*self.store)
    }
}

/// Live queries started while writes stream in (their first read is made without the hub's
/// lock) miss no write: once the writer stops and its last change is processed, every
/// observer's view equals a fresh read.
#[test]
fn queries_started_during_writes_miss_none() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir =
            std::env::temp_dir().join(format!("comet-diff-{}", comet::model::random::random_id()));
        let store = EmbeddedStore::open(&dir).unwrap();
        let hub = ObserveHub::start(Arc::new(SlowReads::new(store.clone()).0));
        let writer = {
            let store = store.clone();
            tokio::spawn(async move {
                // Each document written once: a write a query missed is never repaired later.
                let mut last = 0;
                for n in 0..600u32 {
                    let doc =
                        json_doc(serde_json::json!({"_id": format!("d{n}"), "a": n % 7, "b": n}));
                    last = store.insert("t", doc).await.unwrap().seq;
                    if n % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                last
            })
        };
        let mut observers = Vec::new();
        for k in 0..7u32 {
            let cursor = Cursor::new(
                "t",
                &json_doc(serde_json::json!({"a": k})),
                &Document::default(),
                0,
                None,
                &Document::default(),
            )
            .unwrap();
            let view = Arc::new(ClientView::default());
            let handle = hub.observe(cursor.clone(), view.clone()).await.unwrap();
            observers.push((cursor, view, handle));
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        let last = writer.await.unwrap();
        hub.wait_processed(last.max(store.last_seq())).await;
        for (cursor, view, _handle) in &observers {
            let found = store
                .find(
                    "t",
                    comet::storage::FindOptions {
                        selector: cursor.selector.clone(),
                        ..Default::default()
                    },
                )
                .await
                .unwrap();
            let mut expected: Vec<String> = found
                .iter()
                .map(|d| {
                    format!(
                        "{}={}",
                        comet::model::id_to_wire(d.get("_id").unwrap()).unwrap(),
                        d.get("b").unwrap().to_ejson_string()
                    )
                })
                .collect();
            expected.sort();
            let mut got: Vec<String> = view
                .docs
                .lock()
                .unwrap()
                .iter()
                .map(|(id, d)| format!("{id}={}", d.get("b").unwrap().to_ejson_string()))
                .collect();
            got.sort();
            assert_eq!(got, expected, "query {}", cursor.key);
        }
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// A re-run that is slow to read holds up no other query: a change for another query reaches
/// its observer meanwhile; the write fence for the change the re-run must reflect waits for
/// it, and then the re-run's result arrives.
#[test]
fn a_slow_re_run_holds_up_no_other_query_and_its_fence_waits_for_it() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir =
            std::env::temp_dir().join(format!("comet-diff-{}", comet::model::random::random_id()));
        let store = EmbeddedStore::open(&dir).unwrap();
        let (reads, gate) = SlowReads::new(store.clone());
        let hub = ObserveHub::start(Arc::new(reads));
        let window = Cursor::new(
            "slow",
            &Document::default(),
            &json_doc(serde_json::json!({"n": -1})),
            0,
            Some(2),
            &Document::default(),
        )
        .unwrap();
        let everything = Cursor::new(
            "fast",
            &Document::default(),
            &Document::default(),
            0,
            None,
            &Document::default(),
        )
        .unwrap();
        let (windowed, plain) = (
            Arc::new(ClientView::default()),
            Arc::new(ClientView::default()),
        );
        let _w = hub.observe(window, windowed.clone()).await.unwrap();
        let _p = hub.observe(everything, plain.clone()).await.unwrap();

        gate.send_replace(false);
        let slow_write = store
            .insert("slow", json_doc(serde_json::json!({"_id": "s", "n": 1})))
            .await
            .unwrap()
            .seq;
        let fast_write = store
            .insert("fast", json_doc(serde_json::json!({"_id": "f"})))
            .await
            .unwrap()
            .seq;
        let seen = async {
            while !plain.docs.lock().unwrap().contains_key("f") {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(2), seen)
            .await
            .expect("the other query's change arrives while the re-run waits");
        let fence = tokio::time::timeout(
            std::time::Duration::from_millis(300),
            hub.wait_processed(slow_write),
        )
        .await;
        assert!(fence.is_err(), "the fence waits for the pending re-run");
        assert!(windowed.docs.lock().unwrap().is_empty());

        gate.send_replace(true);
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            hub.wait_processed(fast_write),
        )
        .await
        .expect("the fence is released once the re-run is done");
        assert!(windowed.docs.lock().unwrap().contains_key("s"));
        let _ = std::fs::remove_dir_all(&dir);
    });
}
