//! `fixtures/change-events/`: change-stream events and oplog entries, each normalized into the
//! one `ChangeEvent` shape (or a resync, never a panic).

#![allow(clippy::unwrap_used)] // test code

use comet::model::Value;
use comet::storage::normalize::{from_change_stream, from_oplog, Normalized};
use serde_json::Value as Json;

fn ejson(v: &Value) -> Json {
    serde_json::from_str(&v.to_ejson_string()).unwrap()
}

#[test]
fn every_fixture_normalizes_as_expected() {
    let dir = format!("{}/fixtures/change-events", env!("CARGO_MANIFEST_DIR"));
    let mut count = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let fixture: Json = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let got = match fixture["source"].as_str().unwrap() {
            "change_stream" => from_change_stream(&fixture["input"]),
            _ => from_oplog(&fixture["input"], fixture["db"].as_str().unwrap()),
        };
        let expected = &fixture["expected"];
        match (expected["kind"].as_str().unwrap(), got) {
            ("resync", Normalized::Resync(_)) | ("nothing", Normalized::Nothing) => {}
            ("events", Normalized::Events(events)) => {
                let want = expected["events"].as_array().unwrap();
                assert_eq!(events.len(), want.len(), "{name}");
                for (e, w) in events.iter().zip(want) {
                    assert_eq!(e.operation.as_str(), w["operation"], "{name}");
                    assert_eq!(&*e.collection, w["collection"].as_str().unwrap(), "{name}");
                    if let Some(id) = w.get("id") {
                        assert_eq!(e.id.as_ref().map(ejson).as_ref(), Some(id), "{name}: id");
                    }
                    if let Some(full) = w.get("full_document") {
                        let got = e
                            .full_document
                            .as_ref()
                            .map(|d| ejson(&Value::Object((**d).clone())))
                            .unwrap_or(Json::Null);
                        assert_eq!(&got, full, "{name}: fullDocument");
                    }
                    if let Some(updated) = w.get("updated_fields") {
                        let d = e.update_description.as_ref().unwrap();
                        assert_eq!(
                            &ejson(&Value::Object(d.updated_fields.clone())),
                            updated,
                            "{name}: updatedFields"
                        );
                        let removed: Vec<Json> = d
                            .removed_fields
                            .iter()
                            .map(|s| Json::String(s.clone()))
                            .collect();
                        assert_eq!(
                            &Json::Array(removed),
                            &w["removed_fields"],
                            "{name}: removedFields"
                        );
                    }
                    if let Some(to) = w.get("rename_to") {
                        assert_eq!(e.rename_to.as_deref(), to.as_str(), "{name}: rename target");
                    }
                }
            }
            (kind, other) => panic!("{name}: expected {kind}, got {other:?}"),
        }
        count += 1;
    }
    assert!(count >= 20, "only {count} fixtures");
}

proptest::proptest! {
    #[test]
    fn arbitrary_json_never_panics(text in "[\\[\\]{}\":,a-z$0-9 .]{0,200}") {
        if let Ok(json) = serde_json::from_str::<Json>(&text) {
            let _ = from_change_stream(&json);
            let _ = from_oplog(&json, "app");
        }
    }
}
