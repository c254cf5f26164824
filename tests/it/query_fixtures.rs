//! Table-driven tests of the query language from `fixtures/selectors`, `fixtures/sorts`,
//! `fixtures/projections` and `fixtures/updates`: every case is checked, and a failure names
//! the case.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

use comet::model::query::{Projection, Selector, Sort, Update};
use comet::model::{Document, Value};
use serde_json::Value as Json;

fn load(path: &str) -> Json {
    let full = format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&full).unwrap()).unwrap()
}

fn doc(json: &Json) -> Document {
    match Value::from_json(json.clone()).unwrap() {
        Value::Object(d) => d,
        other => panic!("not a document: {other:?}"),
    }
}

fn expect_error(name: &str, got: Option<String>, wanted: &Json) {
    let wanted = wanted.as_str().unwrap();
    match got {
        Some(message) => assert!(
            message.contains(wanted),
            "{name}: error {message:?} lacks {wanted:?}"
        ),
        None => panic!("{name}: expected an error containing {wanted:?}"),
    }
}

#[test]
fn selectors_match_as_mongodb_documents_them() {
    let fixture = load("selectors/inventory.json");
    let docs: Vec<(String, Document)> = fixture["docs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), doc(v)))
        .collect();
    let mut checked = 0;
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let parsed = Selector::parse(&doc(&case["selector"]));
        if let Some(wanted) = case.get("error") {
            expect_error(name, parsed.err().map(|e| e.to_string()), wanted);
            checked += 1;
            continue;
        }
        let selector = parsed.unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut got: Vec<&str> = docs
            .iter()
            .filter(|(_, d)| selector.matches(d))
            .map(|(k, _)| k.as_str())
            .collect();
        let mut want: Vec<&str> = case["matches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{name}");
        checked += docs.len();
    }
    assert!(checked > 500, "only {checked} checks");
}

#[test]
fn sorts_order_mixed_types_as_mongodb() {
    let fixture = load("sorts/mixed.json");
    let docs: Vec<Document> = fixture["docs"]
        .as_array()
        .unwrap()
        .iter()
        .map(doc)
        .collect();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let parsed = Sort::parse(&doc(&case["sort"]));
        if let Some(wanted) = case.get("error") {
            expect_error(name, parsed.err().map(|e| e.to_string()), wanted);
            continue;
        }
        let sort = parsed.unwrap();
        let mut sorted = docs.clone();
        sorted.sort_by(|a, b| {
            sort.compare(a, b)
                .then_with(|| comet::model::query::compare::compare(&a["_id"], &b["_id"]))
        });
        let ids: Vec<f64> = sorted.iter().map(|d| d["_id"].as_f64().unwrap()).collect();
        let want: Vec<f64> = case["order"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(ids, want, "{name}");
    }
}

#[test]
fn projections_keep_and_drop_fields() {
    let fixture = load("projections/basic.json");
    let source = doc(&fixture["doc"]);
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let parsed = Projection::parse(&doc(&case["projection"]));
        if let Some(wanted) = case.get("error") {
            expect_error(name, parsed.err().map(|e| e.to_string()), wanted);
            continue;
        }
        let got = parsed.unwrap().apply(&source);
        let want = doc(&case["result"]);
        assert_eq!(
            Value::Object(got).to_ejson_string(),
            Value::Object(want).to_ejson_string(),
            "{name}"
        );
    }
}

#[test]
fn update_operators_apply_as_mongodb() {
    let fixture = load("updates/operators.json");
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let source = doc(&case["doc"]);
        let matched = case
            .get("matched_index")
            .and_then(Json::as_u64)
            .map(|i| i as usize);
        let result =
            Update::parse(&doc(&case["update"])).and_then(|u| u.apply(&source, matched, false));
        if let Some(wanted) = case.get("error") {
            expect_error(name, result.err().map(|e| e.to_string()), wanted);
            continue;
        }
        let got = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let want = doc(&case["result"]);
        assert_eq!(
            Value::Object(got).to_ejson_string(),
            Value::Object(want).to_ejson_string(),
            "{name}"
        );
    }
}
