//! Test and benchmark handlers: the conformance transcripts', compat-suite's and
//! benchmarks' methods and publications (`echo`, `test.*`, `bench.*`).
//!
//! Registered only when `COMET_TEST_HANDLERS` is set; none of them guards data, so they must
//! never be part of a real service module.

pub mod bench;

use crate::engine::error::ServiceError;
use crate::engine::registry::{Publish, Registry, SharedAdded};
use crate::model::{Document, MeteorError, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn bench_room() -> &'static std::sync::Mutex<Vec<crate::engine::registry::Subscription>> {
    static ROOM: OnceLock<std::sync::Mutex<Vec<crate::engine::registry::Subscription>>> =
        OnceLock::new();
    ROOM.get_or_init(Default::default)
}

/// Fifty documents shared by every `bench.docs` subscriber: stored once, serialized once.
fn bench_docs() -> &'static [Arc<SharedAdded>] {
    static DOCS: OnceLock<Vec<Arc<SharedAdded>>> = OnceLock::new();
    DOCS.get_or_init(|| {
        (0..50)
            .map(|i| {
                let mut fields = Document::default();
                fields.insert("n".into(), Value::Number(f64::from(i)));
                fields.insert("text".into(), "hello world, this is a document".into());
                SharedAdded::new("docs".into(), format!("d{i}").into(), Arc::new(fields))
            })
            .collect()
    })
}

/// How often each connection's close hook ran (it must run once).
#[derive(Default)]
struct ClosedCount(std::sync::Mutex<std::collections::HashMap<String, i64>>);

impl crate::engine::connections::ConnectionHooks for ClosedCount {
    fn closed(&self, connection_id: &str, _user_id: Option<&str>) {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(connection_id.to_owned())
            .or_default() += 1;
    }
}

fn doc_of(value: &Value) -> Result<Document, ServiceError> {
    match value {
        Value::Object(d) => Ok(d.clone()),
        _ => Err(ServiceError::match_failed()),
    }
}

/// Handlers for the conformance transcripts, the compat-suite and the benchmark
/// (`COMET_TEST_HANDLERS=1`). None of them touches data.
pub fn register(registry: &mut Registry, observe: Option<Arc<crate::observe::ObserveHub>>) {
    bench::register(registry, observe);
    registry.method("echo", |_ctx, params| async move {
        Ok(params.into_iter().next())
    });
    registry.method("test.nothing", |_ctx, _params| async { Ok(None) });
    // The connection directory and its hooks, as services see them.
    let closes = Arc::new(ClosedCount::default());
    registry.connections().add_hooks(closes.clone());
    let connections = registry.connections().clone();
    registry.method("test.connectionsOf", move |_ctx, params| {
        let connections = connections.clone();
        async move {
            let Some(Value::String(user)) = params.first() else {
                return Err(ServiceError::match_failed());
            };
            Ok(Some(Value::from(connections.of_user(user).len() as i64)))
        }
    });
    let connections = registry.connections().clone();
    registry.method("test.logOutOthers", move |ctx, _params| {
        let connections = connections.clone();
        async move {
            let (Some(user), Some(me)) = (&ctx.user_id, ctx.connection()) else {
                return Ok(Some(Value::from(0)));
            };
            let others: Vec<_> = connections
                .of_user(user)
                .into_iter()
                .filter(|c| c.id() != me.id())
                .collect();
            for other in &others {
                other.log_out();
            }
            Ok(Some(Value::from(others.len() as i64)))
        }
    });
    registry.method("test.closedCount", move |_ctx, params| {
        let closes = closes.clone();
        async move {
            let Some(Value::String(id)) = params.first() else {
                return Err(ServiceError::match_failed());
            };
            let count = closes
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(id)
                .copied();
            Ok(Some(Value::from(count.unwrap_or(0))))
        }
    });
    registry.method("test.null", |_ctx, _params| async { Ok(Some(Value::Null)) });
    registry.method("test.date", |_ctx, _params| async {
        Ok(Some(Value::Date(0.0)))
    });
    registry.method("test.throw", |_ctx, _params| async {
        Err(ServiceError::internal(
            "deliberate failure with a secret inside",
        ))
    });
    registry.method("test.panic", |_ctx, _params| async {
        #[allow(clippy::panic)]
        if true {
            panic!("deliberate panic");
        }
        Ok(None)
    });
    registry.method("test.error", |_ctx, _params| async {
        Err(MeteorError::new("e", "r")
            .with_details(serde_json::json!({"d": 1}))
            .into())
    });
    registry.method("test.check", |_ctx, params| async move {
        match params.first() {
            Some(Value::String(s)) => Ok(Some(Value::String(s.clone()))),
            _ => Err(ServiceError::match_failed()),
        }
    });
    // `test.setUserId(id | null)`: the session's user from now on, as a login would set it.
    registry.method("test.setUserId", |ctx, params| async move {
        match params.first() {
            Some(Value::String(id)) => ctx.set_user_id(Some(id.clone())),
            Some(Value::Null) => ctx.set_user_id(None),
            _ => return Err(ServiceError::match_failed()),
        }
        Ok(None)
    });
    // `test.sleep(ms, unblock)`: returns `ms` after sleeping, optionally unblocking first.
    registry.method("test.sleep", |ctx, params| async move {
        let ms = params
            .first()
            .and_then(Value::as_f64)
            .unwrap_or(0.0)
            .clamp(0.0, 60_000.0);
        if matches!(params.get(1), Some(Value::Bool(true))) {
            ctx.unblock();
        }
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        Ok(Some(Value::Number(ms)))
    });
    // `test.randomId(collection)`: the id a Meteor client simulates for its first insert.
    registry.method("test.randomId", |ctx, params| async move {
        let collection = params
            .first()
            .and_then(Value::as_str)
            .unwrap_or("tasks")
            .to_owned();
        Ok(Some(Value::String(
            ctx.random_stream(&format!("/collection/{collection}")).id(),
        )))
    });

    // `test.publish(collection, [[id, fields], ...])`: publishes exactly those documents.
    registry.publication("test.publish", |sub, params| async move {
        let collection = params
            .first()
            .and_then(Value::as_str)
            .unwrap_or("tasks")
            .to_owned();
        if let Some(Value::Array(docs)) = params.get(1) {
            for entry in docs {
                let Value::Array(pair) = entry else {
                    return Err(ServiceError::match_failed());
                };
                let (Some(id), Some(fields)) = (pair.first(), pair.get(1)) else {
                    return Err(ServiceError::match_failed());
                };
                sub.added(&collection, id, doc_of(fields)?)?;
            }
        }
        Ok(Publish::Ready)
    });
    registry.publication("test.docs", |sub, _params| async move {
        for (id, title) in [("x1", "first"), ("x2", "second")] {
            let mut fields = Document::default();
            fields.insert("title".into(), title.into());
            sub.added("tasks", &id.into(), fields)?;
        }
        Ok(Publish::Ready)
    });
    registry.publication("test.throw", |_sub, _params| async {
        Err(ServiceError::internal("deliberate publication failure"))
    });
    registry.publication("test.denied", |_sub, _params| async {
        Err(MeteorError::new("denied", "no").into())
    });
    registry.publication("test.stopAfterAdd", |sub, _params| async move {
        sub.added("tasks", &"x1".into(), Document::default())?;
        sub.stop();
        Ok(Publish::Manual)
    });
    // Adds `x` with `f`, then clears `f`, then sends a change with no effect.
    registry.publication("test.clear", |sub, _params| async move {
        let mut fields = Document::default();
        fields.insert("f".into(), Value::Number(1.0));
        sub.added("c", &"x".into(), fields.clone())?;
        sub.changed("c", &"x".into(), Document::default(), vec!["f".into()])?;
        sub.changed("c", &"x".into(), Document::default(), vec!["f".into()])?;
        Ok(Publish::Ready)
    });
    registry.publication("test.never", |_sub, _params| async { Ok(Publish::Manual) });
    // `test.ticker(ms)`: changes `counter/t` every `ms` until unsubscribed.
    registry.publication("test.ticker", |sub, params| async move {
        let ms = params
            .first()
            .and_then(Value::as_f64)
            .unwrap_or(100.0)
            .max(1.0);
        sub.added("counter", &"t".into(), Document::default())?;
        let handle = sub.clone();
        tokio::spawn(async move {
            let mut n = 0.0;
            loop {
                tokio::select! {
                    _ = handle.stopped() => break,
                    _ = tokio::time::sleep(Duration::from_millis(ms as u64)) => {}
                }
                n += 1.0;
                let mut fields = Document::default();
                fields.insert("n".into(), Value::Number(n));
                if handle
                    .changed("counter", &"t".into(), fields, vec![])
                    .is_err()
                {
                    break;
                }
            }
        });
        Ok(Publish::Ready)
    });
    // Benchmark publications (the Node peer serves the same two).
    registry.publication("bench.empty", |_sub, _params| async { Ok(Publish::Ready) });
    registry.publication("bench.docs", |sub, _params| async move {
        for doc in bench_docs() {
            sub.added_shared(doc.clone());
        }
        Ok(Publish::Ready)
    });
    // Fan-out benchmark (S3): `bench.room` subscribers all receive every `bench.send(text, ts)`
    // as one shared document, serialized once.
    registry.publication("bench.room", |sub, _params| async move {
        bench_room()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sub);
        Ok(Publish::Ready)
    });
    registry.method("bench.send", |_ctx, params| async move {
        let mut fields = Document::default();
        fields.insert(
            "text".into(),
            params.first().cloned().unwrap_or(Value::Null),
        );
        fields.insert("ts".into(), params.get(1).cloned().unwrap_or(Value::Null));
        let id = crate::model::random::random_id();
        let doc = SharedAdded::new("messages".into(), id.into(), Arc::new(fields));
        let mut room = bench_room().lock().unwrap_or_else(|p| p.into_inner());
        room.retain(|sub| !sub.is_stopped());
        for sub in room.iter() {
            sub.added_shared(doc.clone());
        }
        Ok(None)
    });
    // `test.flood(count, size)`: publishes `count` documents of `size` bytes each.
    registry.publication("test.flood", |sub, params| async move {
        let count = params
            .first()
            .and_then(Value::as_f64)
            .unwrap_or(10.0)
            .clamp(0.0, 1e6) as usize;
        let size = params
            .get(1)
            .and_then(Value::as_f64)
            .unwrap_or(100.0)
            .clamp(0.0, 1e6) as usize;
        let payload = "x".repeat(size);
        for i in 0..count {
            let mut fields = Document::default();
            fields.insert("p".into(), payload.as_str().into());
            sub.added("flood", &Value::String(format!("d{i}")), fields)?;
            if sub.is_stopped() {
                break;
            }
        }
        Ok(Publish::Ready)
    });
}
