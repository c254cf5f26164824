//! Normalization of MongoDB's change sources into [`ChangeEvent`]s: change-stream events and
//! oplog entries (`i`, `u` with `$v: 1` modifiers or `$v: 2` diffs, `d`, `c` with drop,
//! dropDatabase, renameCollection and applyOps), given as MongoDB Extended JSON.
//!
//! Whatever cannot be understood becomes [`Normalized::Resync`]: downstream re-queries rather
//! than guessing. Nothing here panics on input.

use super::{ChangeEvent, OperationType, UpdateDescription};
use crate::model::{Document, ObjectId, Value};
use base64::Engine as _;
use serde_json::Value as Json;
use std::sync::Arc;

/// The outcome of normalizing one source record.
#[derive(Debug)]
pub enum Normalized {
    Events(Vec<ChangeEvent>),
    /// Nothing for observers (no-op entries, other databases, index builds).
    Nothing,
    /// Not understood: re-query everything that could be affected.
    Resync(String),
    /// Writes of a transaction that has not committed yet (a prepared transaction, or one
    /// entry of a transaction spread over several): held under the transaction's key.
    Pending {
        txn: String,
        events: Vec<ChangeEvent>,
    },
    /// A transaction commits: what it held applies now, then `events` (this entry's own).
    Commit {
        txn: String,
        events: Vec<ChangeEvent>,
    },
    /// A transaction was aborted: what it held is dropped.
    Abort {
        txn: String,
    },
}

/// Resolves the transaction forms of [`Normalized`] against what `pending` holds: pending
/// writes are kept, a commit releases them in order, an abort drops them.
pub fn settle_transactions(
    pending: &mut std::collections::HashMap<String, Vec<ChangeEvent>>,
    normalized: Normalized,
) -> Normalized {
    match normalized {
        Normalized::Pending { txn, events } => {
            pending.entry(txn).or_default().extend(events);
            Normalized::Nothing
        }
        Normalized::Commit { txn, events } => {
            let mut all = pending.remove(&txn).unwrap_or_default();
            all.extend(events);
            if all.is_empty() {
                Normalized::Nothing
            } else {
                Normalized::Events(all)
            }
        }
        Normalized::Abort { txn } => {
            pending.remove(&txn);
            Normalized::Nothing
        }
        other => other,
    }
}

/// The key of the transaction an oplog entry belongs to: its session and transaction number.
fn transaction_key(entry: &Json) -> Option<String> {
    let lsid = entry.get("lsid")?;
    let number = entry.get("txnNumber")?;
    Some(format!("{lsid}/{number}"))
}

/// Converts MongoDB Extended JSON (canonical or relaxed) to EJSON values.
pub fn from_extended_json(json: &Json) -> Result<Value, String> {
    Ok(match json {
        Json::Object(map) => {
            if map.len() == 1 {
                let (k, v) = map.iter().next().ok_or("empty")?;
                match (k.as_str(), v) {
                    ("$oid", Json::String(hex)) => {
                        return ObjectId::parse_hex(hex)
                            .map(Value::ObjectId)
                            .ok_or_else(|| format!("bad $oid {hex}"))
                    }
                    ("$date", Json::Object(inner)) => {
                        let ms = inner
                            .get("$numberLong")
                            .and_then(Json::as_str)
                            .and_then(|s| s.parse::<f64>().ok());
                        return ms.map(Value::Date).ok_or_else(|| "bad $date".to_owned());
                    }
                    ("$date", Json::Number(n)) => {
                        return Ok(Value::Date(n.as_f64().unwrap_or(f64::NAN)))
                    }
                    ("$date", Json::String(iso)) => return parse_iso_date(iso).map(Value::Date),
                    ("$numberLong", Json::String(s)) => {
                        return s
                            .parse::<i64>()
                            .map(Value::integer)
                            .map_err(|_| format!("bad int64 {s}"))
                    }
                    ("$numberInt" | "$numberDouble", Json::String(s)) => {
                        return Ok(Value::Number(match s.as_str() {
                            "NaN" => f64::NAN,
                            "Infinity" => f64::INFINITY,
                            "-Infinity" => f64::NEG_INFINITY,
                            other => other.parse().map_err(|_| format!("bad number {other}"))?,
                        }))
                    }
                    ("$numberDecimal", Json::String(s)) => return Ok(Value::Decimal(s.clone())),
                    ("$binary", Json::Object(b)) => {
                        let data = b
                            .get("base64")
                            .and_then(Json::as_str)
                            .ok_or("bad $binary")?;
                        let bytes = base64::engine::general_purpose::STANDARD
                            .decode(data)
                            .map_err(|e| e.to_string())?;
                        let subtype = match b.get("subType").and_then(Json::as_str) {
                            Some(hex) => u8::from_str_radix(hex, 16)
                                .map_err(|_| format!("bad binary subtype {hex}"))?,
                            None => 0,
                        };
                        return Ok(Value::Binary { subtype, bytes });
                    }
                    ("$regularExpression", Json::Object(r)) => {
                        return Ok(Value::Regex {
                            pattern: r
                                .get("pattern")
                                .and_then(Json::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            flags: r
                                .get("options")
                                .and_then(Json::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                        })
                    }
                    // BSON timestamps have no EJSON form: kept as a document, as Meteor keeps them raw.
                    ("$timestamp", Json::Object(_)) => {}
                    _ => {}
                }
            }
            let mut doc = Document::default();
            for (k, v) in map {
                doc.insert(k.clone(), from_extended_json(v)?);
            }
            Value::Object(doc)
        }
        Json::Array(items) => Value::Array(
            items
                .iter()
                .map(from_extended_json)
                .collect::<Result<_, _>>()?,
        ),
        other => Value::from_plain_json(other.clone()),
    })
}

/// `YYYY-MM-DDTHH:MM:SS(.sss)Z` to milliseconds since the epoch.
fn parse_iso_date(s: &str) -> Result<f64, String> {
    let bad = || format!("bad date {s}");
    let (date, time) = s.trim_end_matches('Z').split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let mut t = time.split(':');
    let (Some(h), Some(min), Some(sec)) = (t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    let (h, min): (i64, i64) = (
        h.parse().map_err(|_| bad())?,
        min.parse().map_err(|_| bad())?,
    );
    let sec: f64 = sec.parse().map_err(|_| bad())?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + h * 3600 + min * 60) as f64 + sec) * 1000.0)
}

fn doc_of(json: Option<&Json>) -> Result<Option<Document>, String> {
    match json {
        None | Some(Json::Null) => Ok(None),
        Some(j) => match from_extended_json(j)? {
            Value::Object(d) => Ok(Some(d)),
            _ => Err("expected a document".into()),
        },
    }
}

fn event(op: OperationType, collection: &str, id: Option<Value>) -> ChangeEvent {
    ChangeEvent::for_document(0, op, collection.into(), id, None, None)
}

/// A change-stream event (as the driver returns it, in Extended JSON).
pub fn from_change_stream(json: &Json) -> Normalized {
    match change_stream_inner(json) {
        Ok(n) => n,
        Err(why) => Normalized::Resync(why),
    }
}

fn change_stream_inner(json: &Json) -> Result<Normalized, String> {
    let op = json
        .get("operationType")
        .and_then(Json::as_str)
        .ok_or("no operationType")?;
    let operation =
        OperationType::parse(op).ok_or_else(|| format!("unknown operationType {op}"))?;
    let coll = json
        .pointer("/ns/coll")
        .and_then(Json::as_str)
        .unwrap_or("");
    let id = match json.pointer("/documentKey/_id") {
        Some(j) => Some(from_extended_json(j)?),
        None => None,
    };
    let mut e = event(operation, coll, id);
    match operation {
        OperationType::Insert | OperationType::Replace => {
            e.full_document = doc_of(json.get("fullDocument"))?.map(Arc::new);
            if e.full_document.is_none() {
                return Err(format!("{op} without fullDocument"));
            }
        }
        OperationType::Update => {
            // fullDocument is there with updateLookup or post-images; null when the document
            // was deleted before the lookup (then observers re-query).
            e.full_document = doc_of(json.get("fullDocument"))?.map(Arc::new);
            let desc = json
                .get("updateDescription")
                .ok_or("update without updateDescription")?;
            let updated_fields = doc_of(desc.get("updatedFields"))?.unwrap_or_default();
            let removed_fields = desc
                .get("removedFields")
                .and_then(Json::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            e.update_description = Some(UpdateDescription {
                updated_fields,
                removed_fields,
            });
        }
        OperationType::Delete => {
            if e.id.is_none() {
                return Err("delete without documentKey".into());
            }
        }
        OperationType::Rename => {
            e.rename_to = json
                .pointer("/to/coll")
                .and_then(Json::as_str)
                .map(Arc::from);
        }
        OperationType::Drop | OperationType::DropDatabase | OperationType::Invalidate => {}
        // Not a change-stream operation type: never parsed from one.
        OperationType::Progress => return Ok(Normalized::Nothing),
    }
    Ok(Normalized::Events(vec![e]))
}

/// An oplog entry of database `db` (entries of other databases give `Nothing`).
pub fn from_oplog(json: &Json, db: &str) -> Normalized {
    match oplog_inner(json, db, 0) {
        Ok(n) => n,
        Err(why) => Normalized::Resync(why),
    }
}

fn oplog_inner(json: &Json, db: &str, depth: usize) -> Result<Normalized, String> {
    if depth > 4 {
        return Err("applyOps nested too deeply".into());
    }
    let op = json.get("op").and_then(Json::as_str).ok_or("no op")?;
    let ns = json.get("ns").and_then(Json::as_str).unwrap_or("");
    let (entry_db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    if op == "n" {
        return Ok(Normalized::Nothing);
    }
    if entry_db != db && !(op == "c" && entry_db == "admin") {
        return Ok(Normalized::Nothing);
    }
    let o = json.get("o").ok_or("entry without o")?;
    match op {
        "i" => {
            let doc = doc_of(Some(o))?.ok_or("insert without document")?;
            let mut e = event(OperationType::Insert, coll, doc.get("_id").cloned());
            e.full_document = Some(Arc::new(doc));
            Ok(Normalized::Events(vec![e]))
        }
        "d" => {
            let id = from_extended_json(o.get("_id").ok_or("delete without _id")?)?;
            Ok(Normalized::Events(vec![event(
                OperationType::Delete,
                coll,
                Some(id),
            )]))
        }
        "u" => {
            let id = from_extended_json(json.pointer("/o2/_id").ok_or("update without o2._id")?)?;
            let map = o.as_object().ok_or("update o is not a document")?;
            if let Some(diff) = map.get("diff") {
                let mut desc = UpdateDescription::default();
                apply_v2_diff(diff, "", &mut desc)?;
                let mut e = event(OperationType::Update, coll, Some(id));
                e.update_description = Some(desc);
                return Ok(Normalized::Events(vec![e]));
            }
            let is_modifier = map.keys().any(|k| k.starts_with('$'));
            if !is_modifier {
                let mut doc = doc_of(Some(o))?.unwrap_or_default();
                if !doc.contains_key("_id") {
                    doc.shift_insert(0, "_id".into(), id.clone());
                }
                let mut e = event(OperationType::Replace, coll, Some(id));
                e.full_document = Some(Arc::new(doc));
                return Ok(Normalized::Events(vec![e]));
            }
            let mut desc = UpdateDescription::default();
            for (k, v) in map {
                match k.as_str() {
                    "$v" => {}
                    "$set" => desc
                        .updated_fields
                        .extend(doc_of(Some(v))?.unwrap_or_default()),
                    "$unset" => desc.removed_fields.extend(
                        v.as_object()
                            .map(|m| m.keys().cloned().collect::<Vec<_>>())
                            .unwrap_or_default(),
                    ),
                    other => return Err(format!("oplog modifier {other} not understood")),
                }
            }
            let mut e = event(OperationType::Update, coll, Some(id));
            e.update_description = Some(desc);
            Ok(Normalized::Events(vec![e]))
        }
        "c" => {
            let map = o.as_object().ok_or("command o is not a document")?;
            if let Some(target) = map.get("drop").and_then(Json::as_str) {
                return Ok(Normalized::Events(vec![event(
                    OperationType::Drop,
                    target,
                    None,
                )]));
            }
            if map.contains_key("dropDatabase") {
                return Ok(Normalized::Events(vec![event(
                    OperationType::DropDatabase,
                    "",
                    None,
                )]));
            }
            if let Some(from) = map.get("renameCollection").and_then(Json::as_str) {
                let to = map.get("to").and_then(Json::as_str).unwrap_or("");
                let from_coll = from.split_once('.').map_or(from, |(_, c)| c);
                let mut e = event(OperationType::Rename, from_coll, None);
                e.rename_to = Some(to.split_once('.').map_or(to, |(_, c)| c).into());
                return Ok(Normalized::Events(vec![e]));
            }
            let txn = if depth == 0 {
                transaction_key(json)
            } else {
                None
            };
            if let Some(Json::Array(ops)) = map.get("applyOps") {
                let mut all = Vec::new();
                for inner in ops {
                    match oplog_inner(inner, db, depth + 1)? {
                        Normalized::Events(es) => all.extend(es),
                        Normalized::Resync(why) => return Ok(Normalized::Resync(why)),
                        _ => {}
                    }
                }
                let flag = |k: &str| map.get(k).and_then(Json::as_bool).unwrap_or(false);
                return Ok(match txn {
                    // Prepared: applied at `commitTransaction`. Partial: more entries follow,
                    // the last without `partialTxn` commits them.
                    Some(txn) if flag("prepare") || flag("partialTxn") => {
                        Normalized::Pending { txn, events: all }
                    }
                    Some(txn) => Normalized::Commit { txn, events: all },
                    None => Normalized::Events(all),
                });
            }
            if map.contains_key("commitTransaction") {
                let txn = txn.ok_or("commitTransaction without a transaction")?;
                return Ok(Normalized::Commit {
                    txn,
                    events: Vec::new(),
                });
            }
            if map.contains_key("abortTransaction") {
                let txn = txn.ok_or("abortTransaction without a transaction")?;
                return Ok(Normalized::Abort { txn });
            }
            // Index builds and collection options change no document.
            const NO_DOCUMENT_CHANGES: [&str; 7] = [
                "create",
                "createIndexes",
                "dropIndexes",
                "startIndexBuild",
                "commitIndexBuild",
                "abortIndexBuild",
                "collMod",
            ];
            if NO_DOCUMENT_CHANGES.iter().any(|k| map.contains_key(*k)) {
                return Ok(Normalized::Nothing);
            }
            Err(format!("command {:?} not understood", map.keys().next()))
        }
        other => Err(format!("oplog op {other} not understood")),
    }
}

/// Flattens a `$v: 2` oplog diff into dotted updated and removed fields: `u` updates,
/// `i` inserts, `d` deletes, `s<field>` descends into a subdocument or array; array diffs
/// (`a: true`) carry `u<index>` updates and `l` (new length, ignored: a truncation).
fn apply_v2_diff(diff: &Json, prefix: &str, desc: &mut UpdateDescription) -> Result<(), String> {
    let map = diff.as_object().ok_or("diff is not a document")?;
    let path = |k: &str| {
        if prefix.is_empty() {
            k.to_owned()
        } else {
            format!("{prefix}.{k}")
        }
    };
    let is_array = map.get("a").and_then(Json::as_bool) == Some(true);
    for (key, value) in map {
        match key.as_str() {
            "a" | "l" if is_array => {}
            "u" | "i" => {
                for (k, v) in value.as_object().ok_or("u/i is not a document")? {
                    desc.updated_fields.insert(path(k), from_extended_json(v)?);
                }
            }
            "d" => {
                for k in value.as_object().ok_or("d is not a document")?.keys() {
                    desc.removed_fields.push(path(k));
                }
            }
            k if is_array && k.starts_with('u') && k[1..].parse::<usize>().is_ok() => {
                desc.updated_fields
                    .insert(path(&k[1..]), from_extended_json(value)?);
            }
            k if k.starts_with('s') && k.len() > 1 => apply_v2_diff(value, &path(&k[1..]), desc)?,
            other => return Err(format!("diff key {other} not understood")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod transaction_tests {
    use super::*;
    use std::collections::HashMap;

    fn entry(json: serde_json::Value) -> Normalized {
        from_oplog(&json, "app")
    }

    fn txn_fields(mut o: serde_json::Value) -> serde_json::Value {
        o["lsid"] = serde_json::json!({"id": {"$binary": {"base64": "AAAA", "subType": "04"}}});
        o["txnNumber"] = serde_json::json!({"$numberLong": "7"});
        o
    }

    fn ids(n: &Normalized) -> Vec<String> {
        match n {
            Normalized::Events(es) => es
                .iter()
                .map(|e| {
                    e.id.as_ref()
                        .map(|v| v.to_ejson_string())
                        .unwrap_or_default()
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    #[test]
    fn a_prepared_transaction_applies_at_commit_and_not_at_abort() {
        let prepare = txn_fields(serde_json::json!({"op": "c", "ns": "admin.$cmd", "o": {
            "applyOps": [{"op": "i", "ns": "app.tasks", "o": {"_id": "a"}}], "prepare": true}}));
        let commit = txn_fields(serde_json::json!({"op": "c", "ns": "admin.$cmd",
            "o": {"commitTransaction": 1, "commitTimestamp": {"$timestamp": {"t": 2, "i": 1}}}}));
        let abort = txn_fields(serde_json::json!({"op": "c", "ns": "admin.$cmd",
            "o": {"abortTransaction": 1}}));
        let mut pending = HashMap::new();
        let at_prepare = settle_transactions(&mut pending, entry(prepare.clone()));
        assert!(
            matches!(at_prepare, Normalized::Nothing),
            "nothing at prepare"
        );
        let at_commit = settle_transactions(&mut pending, entry(commit));
        assert_eq!(ids(&at_commit), ["\"a\""]);
        assert!(pending.is_empty());
        settle_transactions(&mut pending, entry(prepare));
        let at_abort = settle_transactions(&mut pending, entry(abort));
        assert!(matches!(at_abort, Normalized::Nothing) && pending.is_empty());
    }

    #[test]
    fn a_transaction_over_several_entries_applies_with_its_last() {
        let part = txn_fields(serde_json::json!({"op": "c", "ns": "admin.$cmd", "o": {
            "applyOps": [{"op": "i", "ns": "app.tasks", "o": {"_id": "a"}}], "partialTxn": true}}));
        let last = txn_fields(serde_json::json!({"op": "c", "ns": "admin.$cmd", "o": {
            "applyOps": [{"op": "d", "ns": "app.tasks", "o": {"_id": "b"}}]}}));
        let mut pending = HashMap::new();
        assert!(matches!(
            settle_transactions(&mut pending, entry(part)),
            Normalized::Nothing
        ));
        assert_eq!(
            ids(&settle_transactions(&mut pending, entry(last))),
            ["\"a\"", "\"b\""]
        );
    }

    #[test]
    fn index_builds_change_no_document() {
        for o in [
            serde_json::json!({"startIndexBuild": "tasks", "indexBuildUUID": {"$binary": {"base64": "AAAA", "subType": "04"}}, "indexes": []}),
            serde_json::json!({"commitIndexBuild": "tasks", "indexes": []}),
            serde_json::json!({"abortIndexBuild": "tasks"}),
            serde_json::json!({"collMod": "tasks"}),
        ] {
            let n = entry(serde_json::json!({"op": "c", "ns": "app.$cmd", "o": o}));
            assert!(matches!(n, Normalized::Nothing), "{o}");
        }
    }
}
