//! Property tests (the fuzz smoke pass CI runs; `PROPTEST_CASES=200000` for a long run):
//! the client-frame and EJSON decoders never panic on any input, EJSON round-trips, and the
//! mergebox's frames always rebuild exactly the view Meteor's merge rules define.

#![allow(clippy::unwrap_used, clippy::type_complexity)] // test code: a failed unwrap is a failed test

use comet::engine::registry::SharedAdded;
use comet::model::{Document, Value};
use comet::protocol::decode_client_frame;
use comet::session::mergebox::Mergebox;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| f.to_string()),
        "[a-z$]{0,6}".prop_map(|s| format!("\"{s}\"")),
        Just("\"$date\"".to_owned()),
        Just("\"msg\"".to_owned()),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(|v| format!("[{}]", v.join(","))),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("$date"),
                        Just("$binary"),
                        Just("$type"),
                        Just("$value"),
                        Just("$escape"),
                        Just("$InfNaN"),
                        Just("$regexp"),
                        Just("$flags"),
                        Just("msg"),
                        Just("id"),
                        Just("params"),
                        Just("method"),
                        Just("name"),
                        Just("x")
                    ],
                    inner
                ),
                0..4
            )
            .prop_map(|kv| format!(
                "{{{}}}",
                kv.iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        ]
    })
}

proptest! {
    #[test]
    fn decoder_never_panics_on_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = decode_client_frame(&text);
    }

    #[test]
    fn decoder_never_panics_on_json_shapes(body in json_text(), msg in prop_oneof![
        Just("method"), Just("sub"), Just("connect"), Just("ping"), Just("unsub"), Just("x")]) {
        let _ = decode_client_frame(&body);
        let framed = format!(r#"{{"msg":"{msg}","id":"1","method":"m","name":"n","params":[{body}]}}"#);
        let _ = decode_client_frame(&framed);
    }

    #[test]
    fn ejson_decoding_then_encoding_is_stable(body in json_text()) {
        if let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) {
            if let Ok(value) = Value::from_json(json) {
                let text = value.to_ejson_string();
                let again: serde_json::Value = serde_json::from_str(&text).expect("we emit JSON");
                let value2 = Value::from_json(again).expect("what we emit decodes");
                prop_assert_eq!(&value, &value2);
                prop_assert_eq!(value2.to_ejson_string(), text);
            }
        }
    }
}

/// Meteor's merge rules written the naive way: per field, a list of (sub, value).
#[derive(Default)]
struct Reference {
    docs: BTreeMap<String, (Vec<u64>, BTreeMap<String, Vec<(u64, i64)>>)>,
}

impl Reference {
    fn added(&mut self, sub: u64, id: &str, fields: &[(String, i64)]) {
        let (holders, map) = self.docs.entry(id.to_owned()).or_default();
        if !holders.contains(&sub) {
            holders.push(sub);
        }
        for (k, v) in fields {
            let list = map.entry(k.clone()).or_default();
            match list.iter_mut().find(|(s, _)| *s == sub) {
                Some(entry) => entry.1 = *v,
                None => list.push((sub, *v)),
            }
        }
    }

    fn changed(&mut self, sub: u64, id: &str, fields: &[(String, i64)], cleared: &[String]) {
        let Some((holders, map)) = self.docs.get_mut(id) else {
            return;
        };
        if !holders.contains(&sub) {
            return;
        }
        for (k, v) in fields {
            let list = map.entry(k.clone()).or_default();
            match list.iter_mut().find(|(s, _)| *s == sub) {
                Some(entry) => entry.1 = *v,
                None => list.push((sub, *v)),
            }
        }
        for k in cleared {
            if let Some(list) = map.get_mut(k) {
                list.retain(|(s, _)| *s != sub);
                if list.is_empty() {
                    map.remove(k);
                }
            }
        }
    }

    fn removed(&mut self, sub: u64, id: &str) {
        let Some((holders, map)) = self.docs.get_mut(id) else {
            return;
        };
        if !holders.contains(&sub) {
            return;
        }
        holders.retain(|s| *s != sub);
        if holders.is_empty() {
            self.docs.remove(id);
            return;
        }
        for list in map.values_mut() {
            list.retain(|(s, _)| *s != sub);
        }
        map.retain(|_, l| !l.is_empty());
    }

    fn view(&self) -> BTreeMap<String, BTreeMap<String, i64>> {
        self.docs
            .iter()
            .map(|(id, (_, map))| {
                (
                    id.clone(),
                    map.iter().map(|(k, l)| (k.clone(), l[0].1)).collect(),
                )
            })
            .collect()
    }
}

/// Applies frames the way a DDP client does.
fn apply(client: &mut BTreeMap<String, BTreeMap<String, i64>>, frame: &str) -> Result<(), String> {
    let m: serde_json::Value = serde_json::from_str(frame).map_err(|e| e.to_string())?;
    let id = m["id"].as_str().ok_or("no id")?.to_owned();
    let fields = |m: &serde_json::Value| -> Vec<(String, i64)> {
        m.get("fields")
            .and_then(|f| f.as_object())
            .map(|o| {
                o.iter()
                    .map(|(k, v)| (k.clone(), v.as_f64().unwrap() as i64))
                    .collect()
            })
            .unwrap_or_default()
    };
    match m["msg"].as_str() {
        Some("added") => {
            if client.contains_key(&id) {
                return Err(format!("added twice: {frame}"));
            }
            if m.get("fields")
                .is_some_and(|f| f.as_object().is_some_and(|o| o.is_empty()))
            {
                return Err(format!("empty fields sent: {frame}"));
            }
            client.insert(id, fields(&m).into_iter().collect());
        }
        Some("changed") => {
            let doc = client
                .get_mut(&id)
                .ok_or_else(|| format!("changed unknown doc: {frame}"))?;
            let f = fields(&m);
            let cleared: Vec<String> = m
                .get("cleared")
                .and_then(|c| c.as_array())
                .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            if f.is_empty() && cleared.is_empty() {
                return Err(format!("empty changed: {frame}"));
            }
            for (k, v) in f {
                doc.insert(k, v);
            }
            for k in cleared {
                doc.remove(&k);
            }
        }
        Some("removed") => {
            client
                .remove(&id)
                .ok_or_else(|| format!("removed unknown doc: {frame}"))?;
        }
        other => return Err(format!("unexpected {other:?}")),
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    Add(u64, u8, Vec<(u8, i64)>),
    /// Publishes the one shared document of this id (the same `Arc` for every subscription).
    AddShared(u64, u8),
    /// Changes a field of the shared document of this id, passing the whole new document.
    ChangeShared(u64, u8, u8, i64),
    Change(u64, u8, Vec<(u8, i64)>, Vec<u8>),
    Remove(u64, u8),
    Unsub(u64),
}

fn op() -> impl Strategy<Value = Op> {
    let sub = 1u64..4;
    let id = 0u8..4;
    let fields = prop::collection::vec((0u8..4, 0i64..3), 0..3);
    prop_oneof![
        (sub.clone(), id.clone(), fields.clone()).prop_map(|(s, i, f)| Op::Add(s, i, f)),
        (sub.clone(), id.clone()).prop_map(|(s, i)| Op::AddShared(s, i)),
        (sub.clone(), id.clone(), 0u8..4, 0i64..3)
            .prop_map(|(s, i, f, v)| Op::ChangeShared(s, i, f, v)),
        (
            sub.clone(),
            id.clone(),
            fields,
            prop::collection::vec(0u8..4, 0..2)
        )
            .prop_map(|(s, i, f, c)| Op::Change(s, i, f, c)),
        (sub.clone(), id).prop_map(|(s, i)| Op::Remove(s, i)),
        sub.prop_map(Op::Unsub),
    ]
}

proptest! {
    #[test]
    fn mergebox_frames_rebuild_meteors_view(ops in prop::collection::vec(op(), 1..60)) {
        let mut mb = Mergebox::new();
        let mut reference = Reference::default();
        let mut client = BTreeMap::new();
        let mut out = Vec::new();
        let name = |k: u8| format!("f{k}");
        let mut shared: Vec<Arc<SharedAdded>> = (0..4u8)
            .map(|i| {
                let doc: Document = [("f0".to_owned(), Value::Number(f64::from(i))), ("f2".to_owned(), Value::Number(9.0))].into_iter().collect();
                SharedAdded::new("c".into(), format!("d{i}").into(), Arc::new(doc))
            })
            .collect();
        let dedupe = |f: &[(u8, i64)]| -> Vec<(String, i64)> {
            let mut m: HashMap<String, i64> = HashMap::new();
            let mut order = Vec::new();
            for (k, v) in f { if m.insert(name(*k), *v).is_none() { order.push(name(*k)); } }
            order.into_iter().map(|k| { let v = m[&k]; (k, v) }).collect()
        };
        for op in ops {
            out.clear();
            match &op {
                Op::Add(s, i, f) => {
                    let f = dedupe(f);
                    let doc: Document = f.iter().map(|(k, v)| (k.clone(), Value::Number(*v as f64))).collect();
                    let id = format!("d{i}");
                    mb.added(*s, &SharedAdded::new("c".into(), id.as_str().into(), Arc::new(doc)), &mut out);
                    reference.added(*s, &id, &f);
                }
                Op::AddShared(s, i) => {
                    let id = format!("d{i}");
                    let doc = shared[*i as usize].clone();
                    mb.added(*s, &doc, &mut out);
                    let fields: Vec<(String, i64)> = doc.fields.iter().map(|(k, v)| (k.clone(), v.as_f64().unwrap() as i64)).collect();
                    reference.added(*s, &id, &fields);
                }
                Op::ChangeShared(s, i, f, v) => {
                    let id = format!("d{i}");
                    let old = shared[*i as usize].clone();
                    let mut fields = (*old.fields).clone();
                    fields.insert(name(*f), Value::Number(*v as f64));
                    let new = SharedAdded::new("c".into(), id.as_str().into(), Arc::new(fields));
                    let delta: Document = [(name(*f), Value::Number(*v as f64))].into_iter().collect();
                    mb.changed(*s, "c", &id, delta, &[], Some(&new.fields), &mut out);
                    reference.changed(*s, &id, &[(name(*f), *v)], &[]);
                    shared[*i as usize] = new;
                }
                Op::Change(s, i, f, c) => {
                    let f = dedupe(f);
                    let cleared: Vec<String> = c.iter().map(|k| name(*k)).filter(|k| !f.iter().any(|(n, _)| n == k)).collect();
                    let doc: Document = f.iter().map(|(k, v)| (k.clone(), Value::Number(*v as f64))).collect();
                    let id = format!("d{i}");
                    mb.changed(*s, "c", &id, doc, &cleared, None, &mut out);
                    reference.changed(*s, &id, &f, &cleared);
                }
                Op::Remove(s, i) => {
                    let id = format!("d{i}");
                    mb.removed(*s, "c", &id, &mut out);
                    reference.removed(*s, &id);
                }
                Op::Unsub(s) => {
                    mb.remove_subscription(*s, &mut out);
                    let ids: Vec<String> = reference.docs.keys().cloned().collect();
                    for id in ids { reference.removed(*s, &id); }
                }
            }
            for frame in &out {
                apply(&mut client, frame.as_str()).map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
            }
            prop_assert_eq!(&client, &reference.view(), "after {:?}", op);
        }
    }
}
