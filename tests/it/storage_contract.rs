//! The storage contract, run against the embedded store and, when `COMET_TEST_MONGO_URL`
//! names a replica set (`mongodb://host/db?replicaSet=rs0`), against MongoDB: the generic
//! part (`contract_*`) through `dyn Store` on both, the embedded-only part (change-log
//! replay, disk full, trimmed log) on the embedded store. Without the variable the MongoDB
//! run says plainly that it was skipped.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use comet::model::query::{Selector, Update};
use comet::model::{Document, Value};
use comet::storage::{
    ChangeEvent, EmbeddedStore, FindOptions, MongoOptions, MongoStore, OperationType, Store,
    StoreError,
};
use std::sync::Arc;
use std::time::Duration;

fn doc(json: serde_json::Value) -> Document {
    match Value::from_json(json).unwrap() {
        Value::Object(d) => d,
        _ => unreachable!(),
    }
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "comet-store-{name}-{}-{}",
        std::process::id(),
        comet::model::random::random_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn open(name: &str) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(&temp_dir(name)).unwrap()
}

fn sel(json: serde_json::Value) -> Selector {
    Selector::parse(&doc(json)).unwrap()
}

fn upd(json: serde_json::Value) -> Update {
    Update::parse(&doc(json)).unwrap()
}

#[tokio::test]
async fn insert_find_update_remove_round_trip() {
    let store = open("crud").await;
    let mut feed = store.subscribe();
    let a = store
        .insert(
            "tasks",
            doc(serde_json::json!({"_id":"a","n":1,"at":{"$date":5}})),
        )
        .await
        .unwrap();
    store
        .insert("tasks", doc(serde_json::json!({"_id":"b","n":2})))
        .await
        .unwrap();
    let generated = store
        .insert("tasks", doc(serde_json::json!({"n":3})))
        .await
        .unwrap();
    assert!(matches!(&generated.id, Value::String(s) if s.len() == 17));
    let all = store
        .find(
            "tasks",
            FindOptions {
                sort: comet::model::query::Sort::parse(&doc(serde_json::json!({"n":-1}))).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ns: Vec<f64> = all.iter().map(|d| d["n"].as_f64().unwrap()).collect();
    assert_eq!(ns, vec![3.0, 2.0, 1.0]);
    assert!(
        matches!(all[2]["at"], Value::Date(ms) if ms == 5.0),
        "dates survive storage"
    );

    let ack = store
        .update(
            "tasks",
            sel(serde_json::json!({"n":{"$gte":2}})),
            upd(serde_json::json!({"$inc":{"n":10}})),
            comet::storage::UpdateOptions {
                multi: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((ack.matched, ack.modified), (2, 2));
    let removed = store
        .remove(
            "tasks",
            sel(serde_json::json!({"_id":"a"})),
            comet::storage::RemoveOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(removed.matched, 1);
    let left = store.find("tasks", FindOptions::default()).await.unwrap();
    assert_eq!(left.len(), 2);

    let ops: Vec<OperationType> = (0..6).map(|_| feed.try_recv().unwrap().operation).collect();
    use OperationType::{Delete, Insert, Update as Upd};
    assert_eq!(ops, [Insert, Insert, Insert, Upd, Upd, Delete]);
    assert!(feed.try_recv().is_err(), "exactly one event per change");
    assert!(a.seq >= 1);
}

#[tokio::test]
async fn change_events_carry_sequence_documents_and_diffs() {
    let store = open("events").await;
    let mut feed = store.subscribe();
    store
        .insert("c", doc(serde_json::json!({"_id":"x","a":1,"b":2})))
        .await
        .unwrap();
    store
        .update(
            "c",
            Selector::by_id("x".into()),
            upd(serde_json::json!({"$set":{"a":5},"$unset":{"b":1}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    store
        .update(
            "c",
            Selector::by_id("x".into()),
            upd(serde_json::json!({"z":1})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    store
        .remove(
            "c",
            Selector::by_id("x".into()),
            comet::storage::RemoveOptions::default(),
        )
        .await
        .unwrap();
    let events: Vec<_> = (0..4).map(|_| feed.try_recv().unwrap()).collect();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert_eq!(events[0].operation, OperationType::Insert);
    let u = events[1].update_description.as_ref().unwrap();
    assert_eq!(u.updated_fields.get("a"), Some(&Value::Number(5.0)));
    assert_eq!(u.removed_fields, vec!["b".to_owned()]);
    assert_eq!(events[2].operation, OperationType::Replace);
    assert_eq!(events[3].operation, OperationType::Delete);
    assert!(events[3].full_document.is_none());
    // The log replays the same events.
    let replay = store.changes_since(seqs[0]).await.unwrap();
    assert_eq!(
        replay.iter().map(|e| e.seq).collect::<Vec<_>>(),
        seqs[1..].to_vec()
    );
    assert_eq!(replay[0].update_description, events[1].update_description);
}

#[tokio::test]
async fn bad_documents_get_mongodb_errors_and_change_nothing() {
    let store = open("bad").await;
    store
        .insert("c", doc(serde_json::json!({"_id":"x","a":1})))
        .await
        .unwrap();
    let dup = store
        .insert("c", doc(serde_json::json!({"_id":"x"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, StoreError::DuplicateKey(m) if m.contains("E11000")),
        "{dup}"
    );
    let dollar = store
        .insert("c", doc(serde_json::json!({"$bad":1})))
        .await
        .unwrap_err();
    assert!(dollar.to_string().contains("$ prefixed"), "{dollar}");
    let dotted = store
        .insert("c", doc(serde_json::json!({"a.b":1})))
        .await
        .unwrap_err();
    assert!(dotted.to_string().contains("'.'"), "{dotted}");
    let huge = store
        .insert(
            "c",
            doc(serde_json::json!({"big": "x".repeat(17 * 1024 * 1024)})),
        )
        .await
        .unwrap_err();
    assert!(huge.to_string().contains("too large"), "{huge}");
    let bad_name = store.insert("$cmd", Document::default()).await.unwrap_err();
    assert!(matches!(bad_name, StoreError::InvalidCollection(_)));
    let bad_operand = Update::parse(&doc(serde_json::json!({"$inc":{"a":"1"}}))).unwrap_err();
    assert!(
        bad_operand.to_string().contains("non-numeric argument"),
        "{bad_operand}"
    );
    let non_numeric = store
        .update(
            "c",
            Selector::by_id("x".into()),
            upd(serde_json::json!({"$set":{"s":"t"}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(non_numeric.modified, 1);
    let err = store
        .update(
            "c",
            Selector::by_id("x".into()),
            upd(serde_json::json!({"$inc":{"s":1}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("non-numeric"), "{err}");
    let all = store.find("c", FindOptions::default()).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].get("s"),
        Some(&Value::from("t")),
        "the failed update left the document as it was"
    );
}

#[tokio::test]
async fn a_read_only_store_refuses_writes_reports_no_change_and_keeps_its_data() {
    let store = open("read-only").await;
    store
        .insert("c", doc(serde_json::json!({"_id":"keep","v":1})))
        .await
        .unwrap();
    let mut feed = store.subscribe();
    let last = store.last_seq();
    store.set_read_only(true).unwrap();
    let refused = store
        .insert("c", doc(serde_json::json!({"_id":"new"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, StoreError::Unavailable(m) if m.contains("readonly")),
        "{refused}"
    );
    let refused = store
        .update(
            "c",
            Selector::by_id("keep".into()),
            upd(serde_json::json!({"$set":{"v":2}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    assert!(
        feed.try_recv().is_err(),
        "a refused write reports no change"
    );
    assert_eq!(store.last_seq(), last);
    let docs = store.find("c", FindOptions::default()).await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(
        docs[0]["v"],
        Value::Number(1.0),
        "reads still work and the data is intact"
    );
    store.set_read_only(false).unwrap();
    let ack = store
        .insert("c", doc(serde_json::json!({"_id":"new"})))
        .await
        .unwrap();
    assert_eq!(ack.seq, last + 1, "sequence numbers continue without a gap");
}

#[tokio::test]
async fn a_full_store_refuses_writes_and_keeps_its_data() {
    let store = open("full").await;
    store
        .insert("c", doc(serde_json::json!({"_id":"keep","v":1})))
        .await
        .unwrap();
    store.set_max_pages(1).unwrap();
    let mut refused = None;
    for i in 0..200 {
        if let Err(e) = store
            .insert(
                "c",
                doc(serde_json::json!({"_id": format!("d{i}"), "pad": "x".repeat(4000)})),
            )
            .await
        {
            refused = Some(e);
            break;
        }
    }
    let refused = refused.expect("a one-page store fills up");
    assert!(matches!(refused, StoreError::Unavailable(_)), "{refused}");
    let kept = store
        .find(
            "c",
            FindOptions {
                selector: Selector::by_id("keep".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(kept.len(), 1);
}

#[tokio::test]
async fn a_store_path_that_is_a_file_is_a_clear_error() {
    let dir = temp_dir("file");
    let file = dir.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = EmbeddedStore::open(&file)
        .err()
        .expect("cannot open a file as a store");
    assert!(err.to_string().contains("cannot create"), "{err}");
}

#[tokio::test]
async fn resume_from_a_trimmed_log_is_reported() {
    let store = open("trim").await;
    store.set_log_cap(10);
    for i in 0..3000 {
        store
            .insert("c", doc(serde_json::json!({"_id": format!("d{i}")})))
            .await
            .unwrap();
    }
    assert!(matches!(
        store.changes_since(1).await,
        Err(StoreError::ResumeLost(1))
    ));
    let last = store.last_seq();
    assert_eq!(store.changes_since(last - 3).await.unwrap().len(), 3);
}

#[tokio::test]
async fn upsert_inserts_from_the_selector_and_the_update() {
    let store = open("upsert").await;
    let ack = store
        .update(
            "c",
            sel(serde_json::json!({"k":"v"})),
            upd(serde_json::json!({"$set":{"n":1},"$setOnInsert":{"new":true}})),
            comet::storage::UpdateOptions {
                upsert: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(ack.upserted_id.is_some());
    let docs = store.find("c", FindOptions::default()).await.unwrap();
    assert_eq!(docs[0].get("k"), Some(&Value::from("v")));
    assert_eq!(docs[0].get("new"), Some(&Value::Bool(true)));
}

/// The next event on `collection` (other collections' events are skipped).
async fn next_event(
    feed: &mut tokio::sync::broadcast::Receiver<Arc<ChangeEvent>>,
    collection: &str,
) -> Arc<ChangeEvent> {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), feed.recv())
            .await
            .expect("a change event within 10 s")
            .expect("the change feed is open");
        if &*event.collection == collection {
            return event;
        }
    }
}

async fn contract_crud_and_events(store: Arc<dyn Store>, coll: &str) {
    store.follow_collection(coll);
    // A change stream opens asynchronously: give it a moment before writing.
    tokio::time::sleep(Duration::from_millis(if store.kind() == "mongo" {
        1500
    } else {
        0
    }))
    .await;
    let mut feed = store.subscribe();
    let a = store
        .insert(
            coll,
            doc(serde_json::json!({"_id":"a","n":1,"at":{"$date":5},"tags":["x"]})),
        )
        .await
        .unwrap();
    let event = next_event(&mut feed, coll).await;
    assert_eq!(event.operation, OperationType::Insert);
    assert_eq!(event.seq, a.seq, "a write's sequence number is its event's");
    assert_eq!(
        event.full_document.as_ref().unwrap()["n"],
        Value::Number(1.0)
    );

    let generated = store
        .insert(coll, doc(serde_json::json!({"n":2})))
        .await
        .unwrap();
    assert!(
        matches!(&generated.id, Value::String(s) if s.len() == 17),
        "Meteor-style ids"
    );
    let _ = next_event(&mut feed, coll).await;

    let ack = store
        .update(
            coll,
            sel(serde_json::json!({"n":{"$gte":1}})),
            upd(serde_json::json!({"$inc":{"n":10},"$unset":{"tags":1}})),
            comet::storage::UpdateOptions {
                multi: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!((ack.matched, ack.modified), (2, 2));
    let first = next_event(&mut feed, coll).await;
    let second = next_event(&mut feed, coll).await;
    assert_eq!(
        (first.operation, second.operation),
        (OperationType::Update, OperationType::Update)
    );
    assert!(first.seq > a.seq);
    assert_eq!(
        ack.seq, second.seq,
        "a multi-document write waits for its last change"
    );
    let after = first
        .full_document
        .as_ref()
        .expect("updates carry the document after");
    assert!(matches!(after["n"], Value::Number(n) if n >= 11.0));
    assert!(!after.contains_key("tags"));

    let unchanged = store
        .update(
            coll,
            Selector::by_id("a".into()),
            upd(serde_json::json!({"$set":{"n":11}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        (unchanged.matched, unchanged.modified, unchanged.seq),
        (1, 0, 0),
        "nothing to wait for"
    );

    let found = store
        .find(
            coll,
            FindOptions {
                sort: comet::model::query::Sort::parse(&doc(serde_json::json!({"n":-1}))).unwrap(),
                projection: comet::model::query::Projection::parse(&doc(
                    serde_json::json!({"n":1}),
                ))
                .unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0]["n"], Value::Number(12.0));
    assert_eq!(found[0].keys().collect::<Vec<_>>(), vec!["_id", "n"]);
    let limited = store
        .find(
            coll,
            FindOptions {
                limit: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(limited.is_empty(), "limit 0 returns nothing");

    let removed = store
        .remove(
            coll,
            Selector::by_id("a".into()),
            comet::storage::RemoveOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(removed.matched, 1);
    let event = next_event(&mut feed, coll).await;
    assert_eq!(event.operation, OperationType::Delete);
    assert_eq!(event.id, Some(Value::from("a")));
    assert!(event.full_document.is_none());
}

async fn contract_bad_input(store: Arc<dyn Store>, coll: &str) {
    store
        .insert(coll, doc(serde_json::json!({"_id":"x","s":"text"})))
        .await
        .unwrap();
    let dup = store
        .insert(coll, doc(serde_json::json!({"_id":"x"})))
        .await
        .unwrap_err();
    assert!(
        matches!(&dup, StoreError::DuplicateKey(m) if m.contains("E11000")),
        "{dup}"
    );
    let bad = store
        .update(
            coll,
            Selector::by_id("x".into()),
            upd(serde_json::json!({"$inc":{"s":1}})),
            comet::storage::UpdateOptions::default(),
        )
        .await;
    assert!(bad.is_err(), "$inc on a string is refused");
    let dotted = store.insert(coll, doc(serde_json::json!({"a.b":1}))).await;
    assert!(dotted.is_err(), "a dotted field name is refused");
    let docs = store.find(coll, FindOptions::default()).await.unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["s"], Value::from("text"), "the data is intact");
}

async fn contract_upsert_and_indexes(store: Arc<dyn Store>, coll: &str) {
    let ack = store
        .update(
            coll,
            sel(serde_json::json!({"k":"v"})),
            upd(serde_json::json!({"$set":{"n":1},"$setOnInsert":{"new":true}})),
            comet::storage::UpdateOptions {
                upsert: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(&ack.upserted_id, Some(Value::String(_))),
        "{:?}",
        ack.upserted_id
    );
    store
        .ensure_index(
            coll,
            comet::model::query::Sort::parse(&doc(serde_json::json!({"k":1,"n":-1}))).unwrap(),
        )
        .await
        .unwrap();
    for n in 2..6 {
        store
            .insert(coll, doc(serde_json::json!({"k":"v","n":n})))
            .await
            .unwrap();
    }
    let docs = store
        .find(
            coll,
            FindOptions {
                selector: sel(serde_json::json!({"k":"v","n":{"$lt":5}})),
                sort: comet::model::query::Sort::parse(&doc(serde_json::json!({"n":-1}))).unwrap(),
                skip: 1,
                limit: Some(2),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ns: Vec<f64> = docs.iter().map(|d| d["n"].as_f64().unwrap()).collect();
    assert_eq!(ns, vec![3.0, 2.0]);
    assert_eq!(
        docs.iter()
            .filter(|d| d.get("new") == Some(&Value::Bool(true)))
            .count(),
        0
    );
}

/// Integers beyond 2^53 keep every digit: stored, matched, sorted, incremented.
async fn contract_exact_integers(store: Arc<dyn Store>, coll: &str) {
    let two53 = 1i64 << 53;
    store
        .ensure_index(
            coll,
            comet::model::query::Sort::parse(&doc(serde_json::json!({"big":1}))).unwrap(),
        )
        .await
        .unwrap();
    for (id, big) in [
        (
            "long",
            serde_json::json!({"$numberLong": (two53 + 1).to_string()}),
        ),
        ("double", serde_json::json!(two53 as f64)),
        (
            "above",
            serde_json::json!({"$numberLong": (two53 + 3).to_string()}),
        ),
    ] {
        store
            .insert(coll, doc(serde_json::json!({"_id": id, "big": big})))
            .await
            .unwrap();
    }
    let exact = store
        .find(
            coll,
            FindOptions {
                selector: sel(serde_json::json!({"big": {"$numberLong": (two53 + 1).to_string()}})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(exact.len(), 1, "{exact:?}");
    assert_eq!(exact[0]["big"], Value::Long(two53 + 1));
    let ordered = store
        .find(
            coll,
            FindOptions {
                selector: sel(serde_json::json!({"big": {"$gte": two53 as f64}})),
                sort: comet::model::query::Sort::parse(&doc(serde_json::json!({"big":-1})))
                    .unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let ids: Vec<&str> = ordered.iter().map(|d| d["_id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["above", "long", "double"]);
    store
        .update(
            coll,
            sel(serde_json::json!({"_id":"long"})),
            upd(serde_json::json!({"$inc":{"big":1}})),
            comet::storage::UpdateOptions::default(),
        )
        .await
        .unwrap();
    let after = store
        .find(
            coll,
            FindOptions {
                selector: sel(serde_json::json!({"_id":"long"})),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(after[0]["big"], Value::Long(two53 + 2), "$inc stays exact");
}

#[tokio::test]
async fn embedded_store_meets_the_generic_contract() {
    let store: Arc<dyn Store> = open("generic").await;
    contract_crud_and_events(store.clone(), "crud").await;
    contract_bad_input(store.clone(), "bad").await;
    contract_upsert_and_indexes(store.clone(), "upsert").await;
    contract_exact_integers(store, "exact").await;
}

#[tokio::test]
async fn mongodb_store_meets_the_generic_contract() {
    let Ok(url) = std::env::var("COMET_TEST_MONGO_URL") else {
        eprintln!("skipped: MongoDB storage contract (set COMET_TEST_MONGO_URL to a replica set, e.g. mongodb://127.0.0.1/comet_test?replicaSet=rs0, to run it)");
        return;
    };
    let run = comet::model::random::random_id().to_lowercase();
    for oplog in [false, true] {
        let store: Arc<dyn Store> = MongoStore::connect(MongoOptions {
            url: url.clone(),
            oplog_url: oplog
                .then(|| std::env::var("COMET_TEST_MONGO_OPLOG_URL").ok())
                .flatten(),
            state_dir: temp_dir("mongo"),
            post_images: false,
        })
        .await
        .expect("MongoDB at COMET_TEST_MONGO_URL answers");
        if oplog && std::env::var("COMET_TEST_MONGO_OPLOG_URL").is_err() {
            eprintln!("skipped: oplog source (set COMET_TEST_MONGO_OPLOG_URL to the local database to run it)");
            continue;
        }
        let prefix = format!("contract_{run}_{}", if oplog { "oplog" } else { "stream" });
        contract_crud_and_events(store.clone(), &format!("{prefix}_crud")).await;
        contract_bad_input(store.clone(), &format!("{prefix}_bad")).await;
        contract_upsert_and_indexes(store.clone(), &format!("{prefix}_upsert")).await;
        contract_exact_integers(store, &format!("{prefix}_exact")).await;
    }
}

#[tokio::test]
async fn a_batch_is_one_transaction_all_or_nothing() {
    use comet::storage::{UpdateOptions, WriteOp, WriteOutcome};
    let store = open("batch").await;
    let mut feed = store.subscribe();
    let insert = |id: &str| WriteOp::Insert {
        collection: "msgs".into(),
        doc: doc(serde_json::json!({"_id": id, "n": 1})),
    };
    let bump = WriteOp::Update {
        collection: "rooms".into(),
        selector: sel(serde_json::json!({"_id": "r"})),
        update: upd(serde_json::json!({"$inc": {"msgs": 1}})),
        options: UpdateOptions {
            multi: false,
            upsert: true,
        },
    };
    let outcomes = store
        .write_all(vec![insert("m1"), bump.clone()])
        .await
        .unwrap();
    let seqs: Vec<u64> = outcomes.iter().map(WriteOutcome::seq).collect();
    assert_eq!(
        seqs[1],
        seqs[0] + 1,
        "one batch numbers its changes in order"
    );
    assert_eq!(next_event(&mut feed, "msgs").await.seq, seqs[0]);
    assert_eq!(next_event(&mut feed, "rooms").await.seq, seqs[1]);

    // The second insert of m1 fails: the counter bumped before it is rolled back too.
    let err = store
        .write_all(vec![bump.clone(), insert("m2"), insert("m1")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::DuplicateKey(_)), "{err}");
    let rooms = store.find("rooms", FindOptions::default()).await.unwrap();
    assert_eq!(
        rooms[0]["msgs"].as_f64(),
        Some(1.0),
        "nothing of a failed batch stays"
    );
    let msgs = store.find("msgs", FindOptions::default()).await.unwrap();
    assert_eq!(msgs.len(), 1, "m2 was not kept: {msgs:?}");
    assert_eq!(
        store.last_seq(),
        seqs[1],
        "a failed batch uses no sequence number"
    );

    // The next write numbers its change right after the last committed one.
    let ack = store
        .insert("msgs", doc(serde_json::json!({"_id": "m3"})))
        .await
        .unwrap();
    assert_eq!(ack.seq, seqs[1] + 1);
    let event = next_event(&mut feed, "msgs").await;
    assert_eq!(
        event.seq, ack.seq,
        "no event of the failed batch reached the feed"
    );
}

#[tokio::test]
async fn writes_committed_together_fail_or_succeed_each_on_its_own() {
    let store = open("group").await;
    let mut feed = store.subscribe();
    // Many writes at once share commits; every tenth is a duplicate that must fail alone.
    let writes = (0..200).map(|i| {
        let store = store.clone();
        async move {
            let id = if i % 10 == 9 {
                "dup".to_owned()
            } else {
                format!("d{i}")
            };
            store
                .insert("group", doc(serde_json::json!({"_id": id, "i": i})))
                .await
        }
    });
    store
        .insert("group", doc(serde_json::json!({"_id": "dup"})))
        .await
        .unwrap();
    let results = futures_util::future::join_all(writes).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(failed, 20, "only the duplicates fail");
    let mut seqs: Vec<u64> = results.iter().flatten().map(|a| a.seq).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(
        seqs.len(),
        180,
        "each acknowledged write has a number of its own"
    );
    assert_eq!(seqs[179] - seqs[0], 179, "with no gaps for the failed ones");
    let stored = store.find("group", FindOptions::default()).await.unwrap();
    assert_eq!(stored.len(), 181);
    let mut heard = Vec::new();
    while heard.len() < 181 {
        heard.push(next_event(&mut feed, "group").await.seq);
    }
    assert!(
        heard.windows(2).all(|w| w[1] == w[0] + 1),
        "events in order: {heard:?}"
    );
}

#[tokio::test]
async fn updates_by_id_see_rolled_back_and_other_processes_changes() {
    use comet::storage::{UpdateOptions, WriteOp};
    let dir = temp_dir("doc-cache");
    let a = EmbeddedStore::open(&dir).unwrap();
    let b = EmbeddedStore::open(&dir).unwrap();
    a.insert("rooms", doc(serde_json::json!({"_id": "r", "n": 0})))
        .await
        .unwrap();
    let by_id = || sel(serde_json::json!({"_id": "r"}));
    let bump = || upd(serde_json::json!({"$inc": {"n": 1}}));
    let n_of = |docs: Vec<Document>| docs[0]["n"].as_f64().unwrap();
    // Read and kept by a's writer.
    a.update("rooms", by_id(), bump(), UpdateOptions::default())
        .await
        .unwrap();
    // A bump rolled back with its batch leaves no trace in what a's writer keeps.
    let failed = a
        .write_all(vec![
            WriteOp::Update {
                collection: "rooms".into(),
                selector: by_id(),
                update: bump(),
                options: UpdateOptions::default(),
            },
            WriteOp::Insert {
                collection: "rooms".into(),
                doc: doc(serde_json::json!({"_id": "r"})),
            },
        ])
        .await;
    assert!(failed.is_err());
    // Another process bumps it too.
    b.update("rooms", by_id(), bump(), UpdateOptions::default())
        .await
        .unwrap();
    a.update("rooms", by_id(), bump(), UpdateOptions::default())
        .await
        .unwrap();
    let found = a.find("rooms", FindOptions::default()).await.unwrap();
    assert_eq!(
        n_of(found),
        3.0,
        "a's writer saw b's bump and not the rolled-back one"
    );
}
