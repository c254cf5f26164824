//! Benchmark handlers for S4 (mergebox stress), S7 (change-source cost) and S8 (large
//! initial result sets), registered with
//! the test handlers (`COMET_TEST_HANDLERS=1`). The Node peer (`bench/peer/server.js`) serves
//! the same names over the same documents, so both run the same scenario.

use crate::engine::error::ServiceError;
use crate::engine::registry::{Publish, Registry, SharedAdded, Subscription};
use crate::model::{Document, Value};
use crate::observe::{Cursor, ObserveHub};
use crate::storage::{ChangeEvent, OperationType, UpdateDescription};
use std::sync::{Arc, Mutex, OnceLock};

/// S4 documents: `SETS` sets of `SET_SIZE`, each overlapping the next by half.
const SETS: usize = 20;
const SET_SIZE: usize = 200;
const STRIDE: usize = 100;
const DOCS: usize = SETS * STRIDE;

struct MergeState {
    docs: Vec<Arc<SharedAdded>>,
    sets: Vec<Vec<Subscription>>,
}

fn merge_state() -> &'static Mutex<MergeState> {
    static STATE: OnceLock<Mutex<MergeState>> = OnceLock::new();
    STATE.get_or_init(|| {
        let docs = (0..DOCS)
            .map(|i| {
                let mut fields = Document::default();
                for f in 0..5 {
                    fields.insert(format!("f{f}"), Value::Number(i as f64));
                }
                fields.insert(
                    "text".into(),
                    "a document shared by overlapping publications".into(),
                );
                SharedAdded::new("bench".into(), format!("d{i}").into(), Arc::new(fields))
            })
            .collect();
        Mutex::new(MergeState {
            docs,
            sets: vec![Vec::new(); SETS],
        })
    })
}

fn number(params: &[Value], at: usize) -> usize {
    params
        .get(at)
        .and_then(Value::as_f64)
        .filter(|n| n.is_finite() && *n >= 0.0)
        .unwrap_or(0.0) as usize
}

/// Registers `bench.set` / `bench.touch` (S4) and, with live queries, `bench.watch` /
/// `bench.events` (S7).
pub fn register(registry: &mut Registry, observe: Option<Arc<ObserveHub>>) {
    // `bench.set(k)`: the 200 documents of set k.
    registry.publication("bench.set", |sub, params| async move {
        let k = number(&params, 0) % SETS;
        let docs: Vec<Arc<SharedAdded>> = {
            let mut state = merge_state().lock().unwrap_or_else(|p| p.into_inner());
            state.sets[k].push(sub.clone());
            (0..SET_SIZE)
                .map(|j| state.docs[(k * STRIDE + j) % DOCS].clone())
                .collect()
        };
        for doc in docs {
            sub.added_shared(doc);
        }
        Ok(Publish::Ready)
    });
    // `bench.touch(doc, field, value)`: sets `f<field>` of document `doc`, through every
    // subscription of the two sets that hold it.
    registry.method("bench.touch", |_ctx, params| async move {
        let d = number(&params, 0) % DOCS;
        let field = format!("f{}", number(&params, 1) % 5);
        let value = params.get(2).cloned().unwrap_or(Value::Null);
        let (doc, subs) = {
            let mut state = merge_state().lock().unwrap_or_else(|p| p.into_inner());
            let old = state.docs[d].clone();
            let mut fields = (*old.fields).clone();
            fields.insert(field.clone(), value.clone());
            let doc = SharedAdded::new(old.collection.clone(), old.id.clone(), Arc::new(fields));
            state.docs[d] = doc.clone();
            let last = d / STRIDE;
            let mut subs = Vec::new();
            for k in [(last + SETS - 1) % SETS, last] {
                state.sets[k].retain(|s| !s.is_stopped());
                subs.extend(state.sets[k].iter().cloned());
            }
            (doc, subs)
        };
        // The publisher keeps the document shared: sessions hold it by reference.
        for sub in subs {
            let mut fields = Document::default();
            fields.insert(field.clone(), value.clone());
            sub.changed_shared(&doc, fields, Vec::new());
        }
        Ok(None)
    });

    let Some(observe) = observe else { return };
    // `bench.watch(rid)`: a live query on `bench_src` for one room.
    let hub = observe.clone();
    registry.publication("bench.watch", move |sub, params| {
        let hub = hub.clone();
        async move {
            let rid = params.first().cloned().unwrap_or(Value::Null);
            let mut selector = Document::default();
            selector.insert("rid".into(), rid);
            let empty = Document::default();
            let cursor = Cursor::new("bench_src", &selector, &empty, 0, None, &empty)
                .map_err(ServiceError::internal)?;
            crate::engine::publish::observe_into(&hub, cursor, sub)
                .await
                .map_err(ServiceError::internal)
        }
    });
    // `bench.seed(count, bytes)`: `count` documents of about `bytes` each in
    // `bench_initial` (S8), unless it already holds that many.
    let seed_hub = observe.clone();
    registry.method("bench.seed", move |ctx, params| {
        let store = seed_hub.store().clone();
        async move {
            let (count, bytes) = (number(&params, 0).min(1_000_000), number(&params, 1));
            let held = store
                .find("bench_initial", crate::storage::FindOptions::default())
                .await
                .map_err(ServiceError::internal)?
                .len();
            let body = "x".repeat(bytes.min(1 << 20));
            for i in held..count {
                let mut doc = Document::default();
                doc.insert("_id".into(), Value::String(format!("d{i:07}")));
                doc.insert("n".into(), Value::Number(i as f64));
                doc.insert("body".into(), Value::String(body.clone()));
                let ack = store
                    .insert("bench_initial", doc)
                    .await
                    .map_err(ServiceError::internal)?;
                ctx.record_write(ack.seq);
            }
            Ok(Some(Value::Number(count.max(held) as f64)))
        }
    });
    // `bench.initial`: every document of `bench_initial`, live (S8).
    let initial_hub = observe.clone();
    registry.publication("bench.initial", move |sub, _params| {
        let hub = initial_hub.clone();
        async move {
            let empty = Document::default();
            let cursor = Cursor::new("bench_initial", &empty, &empty, 0, None, &empty)
                .map_err(ServiceError::internal)?;
            crate::engine::publish::observe_into(&hub, cursor, sub)
                .await
                .map_err(ServiceError::internal)
        }
    });
    // `bench.events(count, matchEvery, base)`: `count` update events on `bench_src`, as a
    // change source reports them; one in `matchEvery` is for a watched room (none when 0).
    registry.method("bench.events", move |_ctx, params| {
        let hub = observe.clone();
        async move {
            let (count, every, base) = (number(&params, 0), number(&params, 1), number(&params, 2));
            let collection: Arc<str> = "bench_src".into();
            for i in 0..count.min(100_000) {
                let n = base + i;
                // A document keeps its room, so an event's `updatedFields` tell the truth.
                let (rid, id) = if every > 0 && n % every == 0 {
                    let room = (n / every) % 1000;
                    (format!("room{room}"), format!("m{room}"))
                } else {
                    ("nobody".to_owned(), format!("s{}", n % 1000))
                };
                let id = Value::String(id);
                let mut doc = Document::default();
                doc.insert("_id".into(), id.clone());
                doc.insert("rid".into(), Value::String(rid));
                doc.insert("n".into(), Value::Number(n as f64));
                let mut updated_fields = Document::default();
                updated_fields.insert("n".into(), Value::Number(n as f64));
                let event = ChangeEvent::for_document(
                    0,
                    OperationType::Update,
                    collection.clone(),
                    Some(id),
                    Some(Arc::new(doc)),
                    Some(UpdateDescription {
                        updated_fields,
                        removed_fields: Vec::new(),
                    }),
                );
                hub.inject(&event).await;
            }
            Ok(None)
        }
    });
}
