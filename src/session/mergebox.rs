//! The per-session mergebox: what the client currently holds, merged from every subscription.
//!
//! Owns Meteor's merge rules: the first subscription to publish a field wins, a document stays
//! while any subscription holds it, and only the minimal `added`/`changed`/`removed` frames go
//! out. A document held through one subscription is stored as a reference to the publisher's
//! shared document, not a copy; one held through several subscriptions that published the
//! same fields keeps one reference per holder; only when their fields diverge does it fall
//! back to per-field precedence lists. A publisher that passes its whole new document with a
//! change (`after`) is referenced again instead of copied. It must not send anything itself:
//! it returns frames.
//! See `protocol-spec/behavior.md#mergebox`.

use crate::engine::registry::{SharedAdded, SubKey};
use crate::model::{Document, SharedDocument, Value};
use crate::protocol::server as frames;
use crate::protocol::Frame;
use indexmap::IndexMap;
use std::collections::HashMap;

/// Hash maps keyed by client-chosen strings: fast, and seeded per process.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
use std::sync::Arc;

/// One document as this session's client sees it.
enum DocView {
    /// Held by exactly one subscription; its fields are the publisher's document.
    Single { sub: SubKey, fields: SharedDocument },
    /// Held by several subscriptions whose documents have the same fields (the common case of
    /// overlapping publications), each by reference, in arrival order. Every holder published
    /// every field, so for each field the first holder wins: the client sees the first
    /// holder's document.
    Shared(Box<[(SubKey, SharedDocument)]>),
    /// Held by several subscriptions: per field, the values each one published, in
    /// arrival order; the first is what the client sees.
    Merged(Box<MergedDoc>),
}

impl DocView {
    /// Turns a shared form into the general one, for a change the shared forms cannot
    /// express. Precedence lists get the holders in arrival order, as they published.
    fn make_merged(&mut self) {
        let merged = match self {
            DocView::Merged(_) => return,
            DocView::Single { sub, fields } => MergedDoc::from_single(*sub, fields),
            DocView::Shared(holders) => {
                let mut merged = MergedDoc::from_single(holders[0].0, &holders[0].1);
                for (sub, fields) in &holders[1..] {
                    merged.holders.push(*sub);
                    for (k, v) in fields.iter() {
                        merged.set_field(*sub, k, v.clone());
                    }
                }
                merged
            }
        };
        *self = DocView::Merged(Box::new(merged));
    }

    fn holds(&self, sub: SubKey) -> bool {
        match self {
            DocView::Single { sub: holder, .. } => *holder == sub,
            DocView::Shared(holders) => holders.iter().any(|(s, _)| *s == sub),
            DocView::Merged(merged) => merged.holders.contains(&sub),
        }
    }
}

struct MergedDoc {
    holders: Vec<SubKey>,
    fields: IndexMap<String, Vec<(SubKey, Value)>, foldhash::fast::RandomState>,
}

impl MergedDoc {
    fn from_single(sub: SubKey, fields: &Document) -> Self {
        Self {
            holders: vec![sub],
            fields: fields
                .iter()
                .filter(|(k, _)| k.as_str() != "_id")
                .map(|(k, v)| (k.clone(), vec![(sub, v.clone())]))
                .collect(),
        }
    }

    /// Sets `sub`'s value of a field; returns the value the client must now see, if it changed.
    fn set_field(&mut self, sub: SubKey, key: &str, value: Value) -> Option<Value> {
        if key == "_id" {
            return None;
        }
        let Some(list) = self.fields.get_mut(key) else {
            self.fields
                .insert(key.to_owned(), vec![(sub, value.clone())]);
            return Some(value);
        };
        if let Some(pos) = list.iter().position(|(s, _)| *s == sub) {
            let report = pos == 0 && list[0].1 != value;
            list[pos].1 = value;
            return report.then(|| list[0].1.clone());
        }
        list.push((sub, value));
        None
    }

    /// Clears `sub`'s value of a field. `Some(None)`: the field is gone for the client;
    /// `Some(Some(v))`: another subscription's value now shows.
    fn clear_field(&mut self, sub: SubKey, key: &str) -> Option<Option<Value>> {
        let list = self.fields.get_mut(key)?;
        let pos = list.iter().position(|(s, _)| *s == sub)?;
        let removed = list.remove(pos);
        if list.is_empty() {
            self.fields.shift_remove(key);
            return Some(None);
        }
        if pos == 0 && list[0].1 != removed.1 {
            return Some(Some(list[0].1.clone()));
        }
        None
    }
}

/// Whether two documents have the same fields (values aside).
fn same_keys(a: &Document, b: &Document) -> bool {
    a.len() == b.len() && a.keys().all(|k| b.contains_key(k))
}

/// Whether `after` is exactly `current` with `fields` set and `cleared` removed: then it can
/// stand for the holder's document without a copy.
fn is_result_of(
    current: &Document,
    fields: &Document,
    cleared: &[String],
    after: &Document,
) -> bool {
    let mut expected = current.len();
    for (k, v) in fields {
        if !current.contains_key(k) {
            expected += 1;
        }
        if after.get(k) != Some(v) {
            return false;
        }
    }
    for k in cleared {
        if fields.contains_key(k) {
            continue;
        }
        if current.contains_key(k) {
            expected -= 1;
        }
        if after.contains_key(k) {
            return false;
        }
    }
    after.len() == expected
        && current
            .iter()
            .all(|(k, v)| fields.contains_key(k) || cleared.contains(k) || after.get(k) == Some(v))
}

/// `current` with the change applied: `after` when it is exactly that, else a copy.
fn apply_change(
    current: &SharedDocument,
    fields: &Document,
    cleared: &[String],
    after: Option<&SharedDocument>,
) -> SharedDocument {
    if let Some(after) = after.filter(|a| is_result_of(current, fields, cleared, a)) {
        return after.clone();
    }
    let mut next = (**current).clone();
    for (k, v) in fields {
        if k != "_id" {
            next.insert(k.clone(), v.clone());
        }
    }
    for k in cleared {
        if !fields.contains_key(k) {
            next.shift_remove(k);
        }
    }
    Arc::new(next)
}

/// Collected changes to one document, turned into one `changed` frame.
#[derive(Default)]
struct Change {
    fields: Document,
    cleared: Vec<String>,
}

impl Change {
    fn field(&mut self, key: &str, value: Option<Value>) {
        match value {
            Some(v) => {
                self.cleared.retain(|c| c != key);
                self.fields.insert(key.to_owned(), v);
            }
            None => {
                self.fields.shift_remove(key);
                if !self.cleared.iter().any(|c| c == key) {
                    self.cleared.push(key.to_owned());
                }
            }
        }
    }

    fn frame(&self, collection: &str, id: &str) -> Option<Frame> {
        if self.fields.is_empty() && self.cleared.is_empty() {
            return None;
        }
        let cleared: Vec<&str> = self.cleared.iter().map(String::as_str).collect();
        Some(frames::changed(
            collection,
            id,
            self.fields.iter(),
            &cleared,
        ))
    }
}

/// The mergebox of one session.
#[derive(Default)]
pub struct Mergebox {
    collections: FastMap<Arc<str>, FastMap<Arc<str>, DocView>>,
}

impl Mergebox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of documents the client holds (all collections).
    pub fn document_count(&self) -> usize {
        self.collections.values().map(FastMap::len).sum()
    }

    /// A subscription publishes a document.
    pub fn added(&mut self, sub: SubKey, doc: &Arc<SharedAdded>, out: &mut Vec<Frame>) {
        let docs = self.collections.entry(doc.collection.clone()).or_default();
        let Some(view) = docs.get_mut(&doc.id) else {
            docs.insert(
                doc.id.clone(),
                DocView::Single {
                    sub,
                    fields: doc.fields.clone(),
                },
            );
            let bytes = doc.frame(|| {
                frames::added(&doc.collection, &doc.id, &doc.fields)
                    .bytes()
                    .clone()
            });
            out.push(Frame::from_shared(bytes));
            return;
        };
        let mut change = Change::default();
        match view {
            DocView::Single {
                sub: holder,
                fields,
            } if *holder == sub => {
                // The same subscription adds again: its values replace its old ones.
                let current = Arc::make_mut(fields);
                for (k, v) in doc.fields.iter().filter(|(k, _)| k.as_str() != "_id") {
                    if current.get(k) != Some(v) {
                        current.insert(k.clone(), v.clone());
                        change.field(k, Some(v.clone()));
                    }
                }
            }
            DocView::Single {
                sub: holder,
                fields,
            } if same_keys(fields, &doc.fields) => {
                // The same fields from another publication: the first holder's values show,
                // so the client sees nothing new.
                *view = DocView::Shared(Box::new([
                    (*holder, fields.clone()),
                    (sub, doc.fields.clone()),
                ]));
            }
            DocView::Shared(holders)
                if !holders.iter().any(|(s, _)| *s == sub)
                    && same_keys(&holders[0].1, &doc.fields) =>
            {
                let mut all = holders.to_vec();
                all.push((sub, doc.fields.clone()));
                *holders = all.into_boxed_slice();
            }
            DocView::Single { .. } | DocView::Shared(_) => {
                let holder_adds_again = view.holds(sub);
                view.make_merged();
                let DocView::Merged(merged) = view else {
                    return;
                };
                if !holder_adds_again {
                    merged.holders.push(sub);
                }
                for (k, v) in doc.fields.iter() {
                    if let Some(shown) = merged.set_field(sub, k, v.clone()) {
                        change.field(k, Some(shown));
                    }
                }
            }
            DocView::Merged(merged) => {
                if !merged.holders.contains(&sub) {
                    merged.holders.push(sub);
                }
                for (k, v) in doc.fields.iter() {
                    if let Some(shown) = merged.set_field(sub, k, v.clone()) {
                        change.field(k, Some(shown));
                    }
                }
            }
        }
        out.extend(change.frame(&doc.collection, &doc.id));
    }

    /// A subscription changes fields of a document it published. Changes to documents the
    /// subscription does not hold are ignored (newest Meteor tolerates them too).
    #[allow(clippy::too_many_arguments)] // the change's parts arrive separately from the sink
    pub fn changed(
        &mut self,
        sub: SubKey,
        collection: &str,
        id: &str,
        fields: Document,
        cleared: &[String],
        after: Option<&SharedDocument>,
        out: &mut Vec<Frame>,
    ) {
        let Some(view) = self
            .collections
            .get_mut(collection)
            .and_then(|d| d.get_mut(id))
        else {
            return;
        };
        let mut change = Change::default();
        // A change that keeps a shared document's fields (values only) stays shared.
        let keeps_fields = |doc: &Document| {
            fields.keys().all(|k| doc.contains_key(k))
                && !cleared
                    .iter()
                    .any(|k| doc.contains_key(k) && !fields.contains_key(k))
        };
        let shared_position = match view {
            DocView::Shared(holders) => holders
                .iter()
                .position(|(s, d)| *s == sub && keeps_fields(d)),
            _ => None,
        };
        match view {
            DocView::Single {
                sub: holder,
                fields: current,
            } if *holder == sub => {
                for (k, v) in &fields {
                    if k != "_id" && current.get(k) != Some(v) {
                        change.field(k, Some(v.clone()));
                    }
                }
                for k in cleared {
                    if current.contains_key(k) && !fields.contains_key(k) {
                        change.field(k, None);
                    }
                }
                *current = apply_change(current, &fields, cleared, after);
            }
            DocView::Single { .. } => return,
            DocView::Shared(holders) if shared_position.is_some() => {
                let pos = shared_position.unwrap_or(0);
                let old = holders[pos].1.clone();
                if pos == 0 {
                    for (k, v) in &fields {
                        if k != "_id" && old.get(k) != Some(v) {
                            change.field(k, Some(v.clone()));
                        }
                    }
                }
                holders[pos].1 = apply_change(&old, &fields, cleared, after);
            }
            DocView::Shared(_) | DocView::Merged(_) => {
                if !view.holds(sub) {
                    return;
                }
                view.make_merged();
                let DocView::Merged(merged) = view else {
                    return;
                };
                for (k, v) in fields {
                    if let Some(shown) = merged.set_field(sub, &k, v) {
                        change.field(&k, Some(shown));
                    }
                }
                for k in cleared {
                    if let Some(shown) = merged.clear_field(sub, k) {
                        change.field(k, shown);
                    }
                }
            }
        }
        out.extend(change.frame(collection, id));
    }

    /// A subscription stops publishing a document.
    pub fn removed(&mut self, sub: SubKey, collection: &str, id: &str, out: &mut Vec<Frame>) {
        let Some(docs) = self.collections.get_mut(collection) else {
            return;
        };
        let Some(view) = docs.get_mut(id) else {
            return;
        };
        let gone = match view {
            DocView::Single { sub: holder, .. } => *holder == sub,
            DocView::Shared(holders) => {
                let Some(pos) = holders.iter().position(|(s, _)| *s == sub) else {
                    return;
                };
                let mut rest = holders.to_vec();
                let (_, gone) = rest.remove(pos);
                if pos == 0 {
                    // The next holder's values show now (it has the same fields).
                    let mut change = Change::default();
                    for (k, v) in rest[0].1.iter() {
                        if k != "_id" && gone.get(k) != Some(v) {
                            change.field(k, Some(v.clone()));
                        }
                    }
                    out.extend(change.frame(collection, id));
                }
                *view = match rest.as_slice() {
                    [(only, fields)] => DocView::Single {
                        sub: *only,
                        fields: fields.clone(),
                    },
                    _ => DocView::Shared(rest.into_boxed_slice()),
                };
                false
            }
            DocView::Merged(merged) => {
                let Some(pos) = merged.holders.iter().position(|s| *s == sub) else {
                    return;
                };
                merged.holders.remove(pos);
                if merged.holders.is_empty() {
                    true
                } else {
                    let mut change = Change::default();
                    let keys: Vec<String> = merged.fields.keys().cloned().collect();
                    for k in keys {
                        if let Some(shown) = merged.clear_field(sub, &k) {
                            change.field(&k, shown);
                        }
                    }
                    if merged.holders.len() == 1 {
                        Self::demote(view);
                    }
                    out.extend(change.frame(collection, id));
                    false
                }
            }
        };
        if gone {
            docs.remove(id);
            out.push(frames::removed(collection, id));
            if docs.is_empty() {
                self.collections.remove(collection);
            }
        }
    }

    /// Back to the cheap form once a single subscription holds the document again.
    fn demote(view: &mut DocView) {
        if let DocView::Merged(merged) = view {
            let sub = merged.holders[0];
            let fields: Document = merged
                .fields
                .iter()
                .filter_map(|(k, list)| list.first().map(|(_, v)| (k.clone(), v.clone())))
                .collect();
            *view = DocView::Single {
                sub,
                fields: Arc::new(fields),
            };
        }
    }

    /// Everything a subscription held goes (unsub, stop, error).
    pub fn remove_subscription(&mut self, sub: SubKey, out: &mut Vec<Frame>) {
        let mut targets: Vec<(Arc<str>, Arc<str>)> = Vec::new();
        for (collection, docs) in &self.collections {
            for (id, view) in docs {
                if view.holds(sub) {
                    targets.push((collection.clone(), id.clone()));
                }
            }
        }
        for (collection, id) in targets {
            self.removed(sub, &collection, &id, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(pairs: &[(&str, &str)]) -> Document {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::from(*v)))
            .collect()
    }

    fn add(mb: &mut Mergebox, sub: SubKey, id: &str, pairs: &[(&str, &str)]) -> Vec<String> {
        let mut out = Vec::new();
        let shared = SharedAdded::new("c".into(), id.into(), Arc::new(doc(pairs)));
        mb.added(sub, &shared, &mut out);
        out.iter().map(|f| f.as_str().to_owned()).collect()
    }

    fn remove(mb: &mut Mergebox, sub: SubKey, id: &str) -> Vec<String> {
        let mut out = Vec::new();
        mb.removed(sub, "c", id, &mut out);
        out.iter().map(|f| f.as_str().to_owned()).collect()
    }

    #[test]
    fn first_publisher_wins_and_the_next_shows_on_removal() {
        let mut mb = Mergebox::new();
        assert_eq!(
            add(&mut mb, 1, "A1", &[("foo", "bar")]),
            [r#"{"msg":"added","collection":"c","id":"A1","fields":{"foo":"bar"}}"#]
        );
        assert!(add(&mut mb, 2, "A1", &[("foo", "baz")]).is_empty());
        assert_eq!(
            remove(&mut mb, 1, "A1"),
            [r#"{"msg":"changed","collection":"c","id":"A1","fields":{"foo":"baz"}}"#]
        );
        assert_eq!(
            remove(&mut mb, 2, "A1"),
            [r#"{"msg":"removed","collection":"c","id":"A1"}"#]
        );
        assert_eq!(mb.document_count(), 0);
    }

    #[test]
    fn overlapping_fields_add_only_what_is_new() {
        let mut mb = Mergebox::new();
        add(&mut mb, 1, "A1", &[("a", "foo")]);
        assert_eq!(
            add(&mut mb, 2, "A1", &[("a", "foo"), ("b", "bar")]),
            [r#"{"msg":"changed","collection":"c","id":"A1","fields":{"b":"bar"}}"#]
        );
        assert!(remove(&mut mb, 1, "A1").is_empty());
    }

    #[test]
    fn disjoint_fields_are_cleared_when_their_publisher_goes() {
        let mut mb = Mergebox::new();
        add(&mut mb, 1, "A1", &[("foo", "bar")]);
        add(&mut mb, 2, "A1", &[("hi", "there")]);
        assert_eq!(
            remove(&mut mb, 1, "A1"),
            [r#"{"msg":"changed","collection":"c","id":"A1","cleared":["foo"]}"#]
        );
    }

    #[test]
    fn changes_and_clears_follow_precedence() {
        let mut mb = Mergebox::new();
        add(&mut mb, 1, "A1", &[("foo", "bar"), ("baz", "quux")]);
        add(&mut mb, 2, "A1", &[("foo", "baz")]);
        let mut out = Vec::new();
        mb.changed(
            1,
            "c",
            "A1",
            doc(&[("thing", "stuff")]),
            &["foo".into(), "baz".into()],
            None,
            &mut out,
        );
        assert_eq!(
            out[0].as_str(),
            r#"{"msg":"changed","collection":"c","id":"A1","fields":{"thing":"stuff","foo":"baz"},"cleared":["baz"]}"#
        );
        assert_eq!(
            remove(&mut mb, 1, "A1"),
            [r#"{"msg":"changed","collection":"c","id":"A1","cleared":["thing"]}"#]
        );
    }

    #[test]
    fn changes_without_effect_send_nothing() {
        let mut mb = Mergebox::new();
        add(&mut mb, 1, "x", &[("f", "v")]);
        let mut out = Vec::new();
        mb.changed(
            1,
            "c",
            "x",
            doc(&[("f", "v")]),
            &["missing".into()],
            None,
            &mut out,
        );
        assert!(out.is_empty());
        mb.changed(
            1,
            "c",
            "x",
            Document::default(),
            &["f".into()],
            None,
            &mut out,
        );
        assert_eq!(
            out[0].as_str(),
            r#"{"msg":"changed","collection":"c","id":"x","cleared":["f"]}"#
        );
    }

    #[test]
    fn a_shared_added_frame_is_serialized_once() {
        let shared = SharedAdded::new("c".into(), "x".into(), Arc::new(doc(&[("a", "b")])));
        let (mut one, mut two) = (Mergebox::new(), Mergebox::new());
        let (mut out1, mut out2) = (Vec::new(), Vec::new());
        one.added(1, &shared, &mut out1);
        two.added(7, &shared, &mut out2);
        assert_eq!(out1[0].bytes().as_ptr(), out2[0].bytes().as_ptr());
    }

    #[test]
    fn removing_a_subscription_removes_only_its_documents() {
        let mut mb = Mergebox::new();
        add(&mut mb, 1, "x1", &[("a", "1")]);
        add(&mut mb, 1, "x2", &[("a", "2")]);
        add(&mut mb, 2, "x2", &[("a", "2")]);
        let mut out = Vec::new();
        mb.remove_subscription(1, &mut out);
        let texts: Vec<&str> = out.iter().map(Frame::as_str).collect();
        assert_eq!(texts, [r#"{"msg":"removed","collection":"c","id":"x1"}"#]);
        assert_eq!(mb.document_count(), 1);
    }
}
