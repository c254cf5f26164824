//! Index push-down in the embedded store: with indexes declared, `find` returns exactly what
//! the matcher and sorter give over every document (checked against an in-memory oracle on
//! random data, including fields that hold arrays), and SQLite really uses the indexes.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use comet::model::query::{Projection, Selector, Sort};
use comet::model::{Document, Value};
use comet::storage::embedded::sort_documents;
use comet::storage::{EmbeddedStore, FindOptions, Store};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};

fn doc(json: serde_json::Value) -> Document {
    let Value::Object(d) = Value::from_json(json).unwrap() else {
        unreachable!()
    };
    d
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "comet-index-{name}-{}-{}",
        std::process::id(),
        comet::model::random::random_id()
    ))
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

/// A field value: mostly scalars of mixed types, sometimes an array or a document.
fn field_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        4 => (0i64..5).prop_map(|n| serde_json::json!(n)),
        1 => Just(serde_json::json!(2.5)),
        2 => "[a-c]{0,2}".prop_map(|s| serde_json::json!(s)),
        1 => Just(serde_json::json!(null)),
        1 => any::<bool>().prop_map(|b| serde_json::json!(b)),
        1 => (0i64..3).prop_map(|d| serde_json::json!({"$date": d * 1000})),
        1 => (0i64..5, 0i64..5).prop_map(|(a, b)| serde_json::json!([a, b])),
        1 => (0i64..5).prop_map(|a| serde_json::json!({"x": a})),
    ]
}

fn document() -> impl Strategy<Value = (Option<serde_json::Value>, Option<serde_json::Value>)> {
    (
        prop::option::weighted(0.9, field_value()),
        prop::option::weighted(0.9, field_value()),
    )
}

fn selector() -> impl Strategy<Value = serde_json::Value> {
    let field = prop_oneof![Just("a"), Just("b"), Just("u.v")];
    prop_oneof![
        Just(serde_json::json!({})),
        (field.clone(), field_value()).prop_map(|(f, v)| serde_json::json!({ f: v })),
        (field.clone(), 0i64..5).prop_map(|(f, v)| serde_json::json!({ f: {"$gt": v} })),
        (field.clone(), 0i64..5).prop_map(|(f, v)| serde_json::json!({ f: {"$lte": v} })),
        (field.clone(), "[a-c]{0,2}").prop_map(|(f, v)| serde_json::json!({ f: {"$gte": v} })),
        (field.clone(), 0i64..5, "[a-c]{1}")
            .prop_map(|(f, n, s)| serde_json::json!({ f: {"$in": [n, s]} })),
        (field.clone(), any::<bool>())
            .prop_map(|(f, b)| serde_json::json!({ f: {"$in": [b, null]} })),
        (0i64..5, 0i64..5).prop_map(|(a, b)| serde_json::json!({"a": a, "b": {"$lt": b}})),
        (0i64..5).prop_map(|a| serde_json::json!({"$or": [{"a": a}, {"b": a}]})),
        // `_id` pinned beside other conditions, and `_id` from a list: the primary key serves.
        (0i64..16, field_value()).prop_map(|(i, v)| serde_json::json!({"_id": format!("d{i:02}"), "a": v})),
        (0i64..16, 0i64..16, 0i64..5).prop_map(|(i, j, b)| serde_json::json!({"_id": {"$in": [format!("d{i:02}"), format!("d{j:02}"), 7]}, "b": {"$gte": b}})),
        (0i64..16).prop_map(|i| serde_json::json!({"_id": {"$eq": format!("d{i:02}"), "$ne": "d03"}})),
    ]
}

fn sort() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        Just(serde_json::json!({})),
        Just(serde_json::json!({"a": 1})),
        Just(serde_json::json!({"b": -1})),
        Just(serde_json::json!({"a": 1, "b": -1})),
        Just(serde_json::json!({"u.v": 1})),
    ]
}

/// What `find` must return: filter, sort (ties by `_id`), skip, limit over every document.
fn oracle(all: &[Document], options: &FindOptions) -> Vec<Document> {
    let mut docs: Vec<Document> = all
        .iter()
        .filter(|d| options.selector.matches(d))
        .cloned()
        .collect();
    sort_documents(&mut docs, &options.sort);
    docs.into_iter()
        .skip(options.skip)
        .take(options.limit.unwrap_or(usize::MAX))
        .collect()
}

fn ids(docs: &[Document]) -> Vec<String> {
    docs.iter().map(|d| d["_id"].to_ejson_string()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn indexed_find_equals_the_matcher_over_every_document(
        docs in prop::collection::vec(document(), 0..14),
        queries in prop::collection::vec((selector(), sort(), 0usize..3, prop::option::of(0usize..5)), 1..6),
        index_first in any::<bool>(),
    ) {
        runtime().block_on(async {
            let dir = temp_dir("prop");
            let store = EmbeddedStore::open(&dir).unwrap();
            let declare = |store: Arc<EmbeddedStore>| async move {
                for keys in [serde_json::json!({"a": 1}), serde_json::json!({"b": -1, "a": 1}), serde_json::json!({"u.v": 1})] {
                    store.ensure_index("t", Sort::parse(&doc(keys)).unwrap()).await.unwrap();
                }
            };
            if index_first {
                declare(store.clone()).await;
            }
            let mut all = Vec::new();
            for (i, (a, b)) in docs.iter().enumerate() {
                let mut d = serde_json::Map::new();
                d.insert("_id".into(), serde_json::json!(format!("d{i:02}")));
                if let Some(a) = a { d.insert("a".into(), a.clone()); }
                if let Some(b) = b {
                    d.insert("b".into(), b.clone());
                    d.insert("u".into(), serde_json::json!({"v": b}));
                }
                let d = doc(serde_json::Value::Object(d));
                store.insert("t", d.clone()).await.unwrap();
                all.push(d);
            }
            if !index_first {
                declare(store.clone()).await;
            }
            for (selector, sort, skip, limit) in &queries {
                let options = FindOptions {
                    selector: Selector::parse(&doc(selector.clone())).unwrap(),
                    sort: Sort::parse(&doc(sort.clone())).unwrap(),
                    skip: *skip,
                    limit: *limit,
                    projection: Projection::all(),
                };
                let got = store.find("t", options.clone()).await.unwrap();
                let want = oracle(&all, &options);
                assert_eq!(ids(&got), ids(&want), "selector {selector} sort {sort} skip {skip} limit {limit:?}");
            }
            let _ = std::fs::remove_dir_all(&dir);
        });
    }
}

#[tokio::test]
async fn declared_indexes_serve_filters_and_sorts_and_survive_restarts() {
    let dir = temp_dir("plan");
    let store = EmbeddedStore::open(&dir).unwrap();
    store
        .ensure_index(
            "messages",
            Sort::parse(&doc(serde_json::json!({"rid": 1, "ts": -1}))).unwrap(),
        )
        .await
        .unwrap();
    for i in 0..50 {
        store
            .insert(
                "messages",
                doc(serde_json::json!({"_id": format!("m{i:02}"), "rid": format!("r{}", i % 5), "ts": {"$date": i * 1000}})),
            )
            .await
            .unwrap();
    }
    let options = FindOptions {
        selector: Selector::parse(&doc(serde_json::json!({"rid": "r3"}))).unwrap(),
        sort: Sort::parse(&doc(serde_json::json!({"ts": -1}))).unwrap(),
        limit: Some(3),
        ..Default::default()
    };
    let plan = store.query_plan("messages", &options).await.unwrap();
    assert!(plan.contains("USING INDEX"), "{plan}");
    let got = store.find("messages", options.clone()).await.unwrap();
    assert_eq!(ids(&got), vec!["\"m48\"", "\"m43\"", "\"m38\""]);
    // History pages by time with ties broken on `_id`: the (rid, ts) index (which ends in
    // `_id`) serves that order read backwards, with no sort of its own.
    store
        .ensure_index(
            "history",
            Sort::parse(&doc(serde_json::json!({"rid": 1, "ts": 1}))).unwrap(),
        )
        .await
        .unwrap();
    for (id, ts) in [("a", 5), ("c", 7), ("b", 7), ("d", 9)] {
        store
            .insert(
                "history",
                doc(serde_json::json!({"_id": id, "rid": "r", "ts": {"$date": ts}})),
            )
            .await
            .unwrap();
    }
    let newest_first = FindOptions {
        selector: Selector::parse(&doc(serde_json::json!({"rid": "r"}))).unwrap(),
        sort: Sort::parse(&doc(serde_json::json!({"ts": -1, "_id": -1}))).unwrap(),
        ..Default::default()
    };
    let plan = store.query_plan("history", &newest_first).await.unwrap();
    assert!(
        plan.contains("USING INDEX") && !plan.contains("TEMP B-TREE"),
        "{plan}"
    );
    let got = store.find("history", newest_first).await.unwrap();
    assert_eq!(ids(&got), vec!["\"d\"", "\"c\"", "\"b\"", "\"a\""]);
    drop(store);

    // After a restart the index is still known and still used.
    let store = EmbeddedStore::open(&dir).unwrap();
    let plan = store.query_plan("messages", &options).await.unwrap();
    assert!(plan.contains("USING INDEX"), "{plan}");
    // A document with an array where the index expects scalars: the field stops serving
    // queries, and results stay right.
    store
        .insert(
            "messages",
            doc(serde_json::json!({"_id": "arr", "rid": ["r3", "r4"], "ts": {"$date": 99_000}})),
        )
        .await
        .unwrap();
    let got = store.find("messages", options.clone()).await.unwrap();
    assert_eq!(ids(&got), vec!["\"arr\"", "\"m48\"", "\"m43\""]);
    let plan = store.query_plan("messages", &options).await.unwrap();
    assert!(
        !plan.contains("k:rid="),
        "the complex field is not used: {plan}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_id_among_other_conditions_reads_one_row_by_the_primary_key() {
    let dir = temp_dir("pk");
    let store = EmbeddedStore::open(&dir).unwrap();
    store
        .ensure_index(
            "users",
            Sort::parse(&doc(serde_json::json!({"username": 1}))).unwrap(),
        )
        .await
        .unwrap();
    for i in 0..20 {
        store
            .insert(
                "users",
                doc(serde_json::json!({"_id": format!("u{i:02}"), "username": format!("n{i}"), "status": "offline"})),
            )
            .await
            .unwrap();
    }
    let options = FindOptions {
        selector: Selector::parse(&doc(
            serde_json::json!({"_id": {"$in": ["u03", "u07", "nobody"]}, "status": "offline"}),
        ))
        .unwrap(),
        ..Default::default()
    };
    let plan = store.query_plan("users", &options).await.unwrap();
    assert!(
        plan.contains("PRIMARY KEY") || plan.contains("USING INDEX sqlite_autoindex"),
        "{plan}"
    );
    let got = store.find("users", options).await.unwrap();
    assert_eq!(ids(&got), vec!["\"u03\"", "\"u07\""]);
    // A guarded update (`_id` plus the state it expects) changes that user only when the
    // guard holds.
    let guarded = |status: &str| {
        Selector::parse(&doc(serde_json::json!({"_id": "u05", "status": status}))).unwrap()
    };
    let set =
        comet::model::query::Update::parse(&doc(serde_json::json!({"$set": {"status": "online"}})))
            .unwrap();
    let ack = store
        .update("users", guarded("away"), set.clone(), Default::default())
        .await
        .unwrap();
    assert_eq!(ack.matched, 0);
    let ack = store
        .update("users", guarded("offline"), set, Default::default())
        .await
        .unwrap();
    assert_eq!(ack.matched, 1);
    let online = store
        .find(
            "users",
            FindOptions {
                selector: Selector::parse(&doc(serde_json::json!({"status": "online"}))).unwrap(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(ids(&online), vec!["\"u05\""]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn index_declarations_are_checked() {
    let store = EmbeddedStore::open(&temp_dir("bad")).unwrap();
    let err = Store::ensure_index(&*store, "t", Sort::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("Index keys cannot be empty"),
        "{err}"
    );
    let err = store
        .ensure_index(
            "$bad",
            Sort::parse(&doc(serde_json::json!({"a": 1}))).unwrap(),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("Invalid collection name"), "{err}");
    // Declaring twice is fine.
    for _ in 0..2 {
        store
            .ensure_index("t", Sort::parse(&doc(serde_json::json!({"a": 1}))).unwrap())
            .await
            .unwrap();
    }
}
