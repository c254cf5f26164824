//! Publications and collections declared in configuration (`[[publications]]`,
//! `[[collections]]`), so that a Meteor client application gets live data with no Meteor
//! server: each publication is a live query, each collection gets Meteor's
//! `/<name>/insert|update|remove` methods guarded by allow rules.

use super::error::ServiceError;
use super::registry::{Publish, Registry, Subscription};
use crate::model::query::{Selector, Sort, Update};
use crate::model::{Document, MeteorError, Value};
use crate::observe::{Cursor, ObserveEvent, ObserveHub, ObserveSink};
use crate::storage::{FindOptions, Store, StoreError};
use serde::Deserialize;
use std::sync::Arc;

/// A `[[publications]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationConfig {
    pub name: String,
    pub collection: String,
    #[serde(default)]
    pub selector: Option<toml::Table>,
    #[serde(default)]
    pub sort: Option<toml::Table>,
    /// The most documents a subscriber gets; a client may ask for fewer.
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub fields: Option<toml::Table>,
    #[serde(default)]
    pub login_required: bool,
}

/// A `[[collections]]` entry: which client writes are allowed.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionConfig {
    pub name: String,
    /// The new document must match this selector.
    #[serde(default)]
    pub insert: Option<toml::Table>,
    /// The document before and after must match.
    #[serde(default)]
    pub update: Option<toml::Table>,
    /// The document must match.
    #[serde(default)]
    pub remove: Option<toml::Table>,
    /// Indexes to keep, each `{field = 1 | -1, ...}` in key order.
    #[serde(default)]
    pub indexes: Vec<toml::Table>,
}

/// An index the declarations need: a collection and its keys.
#[derive(Clone, Debug)]
pub struct IndexDeclaration {
    pub collection: String,
    pub keys: Sort,
}

/// Why declared publications or collections cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{what} '{name}': {problem}")]
pub struct DeclarationError {
    pub what: &'static str,
    pub name: String,
    pub problem: String,
}

fn to_document(table: &Option<toml::Table>) -> Result<Document, String> {
    let Some(table) = table else {
        return Ok(Document::default());
    };
    let json = serde_json::to_value(table).map_err(|e| e.to_string())?;
    match Value::from_json(json).map_err(|e| e.to_string())? {
        Value::Object(d) => Ok(d),
        _ => Err("expected a table".into()),
    }
}

/// Replaces `"$args.N"` with the subscription's N-th parameter and `"$userId"` with the user.
fn substitute(value: &Value, args: &[Value], user_id: Option<&str>) -> Value {
    match value {
        Value::String(s) if s == "$userId" => {
            user_id.map_or(Value::Null, |u| Value::String(u.to_owned()))
        }
        Value::String(s) if s.starts_with("$args.") => s["$args.".len()..]
            .parse::<usize>()
            .ok()
            .and_then(|i| args.get(i).cloned())
            .unwrap_or(Value::Null),
        Value::Object(d) => Value::Object(
            d.iter()
                .map(|(k, v)| (k.clone(), substitute(v, args, user_id)))
                .collect(),
        ),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| substitute(v, args, user_id)).collect())
        }
        other => other.clone(),
    }
}

fn substitute_doc(doc: &Document, args: &[Value], user_id: Option<&str>) -> Document {
    match substitute(&Value::Object(doc.clone()), args, user_id) {
        Value::Object(d) => d,
        _ => Document::default(),
    }
}

fn store_error(err: StoreError) -> ServiceError {
    match err {
        StoreError::InvalidDocument(m) | StoreError::DuplicateKey(m) => {
            ServiceError::Client(MeteorError::new(409, m))
        }
        StoreError::InvalidQuery(q) => ServiceError::Client(MeteorError::new(400, q.0)),
        other => ServiceError::internal(other),
    }
}

fn access_denied() -> ServiceError {
    ServiceError::Client(MeteorError::new(403, "Access denied"))
}

/// Forwards a live query's events to one subscription.
/// Forwards a live query's events to a subscription.
pub(crate) struct SubscriptionSink(pub(crate) Subscription);

impl ObserveSink for SubscriptionSink {
    fn event(&self, event: &ObserveEvent) -> bool {
        if self.0.is_stopped() {
            return false;
        }
        match event {
            ObserveEvent::Added(doc) | ObserveEvent::AddedBefore { doc, .. } => {
                self.0.added_shared(doc.clone())
            }
            // A publication is unordered, as Meteor's are: the client keeps no order.
            ObserveEvent::MovedBefore { .. } => {}
            ObserveEvent::Changed {
                fields,
                cleared,
                doc,
                ..
            } => self.0.changed_shared(doc, fields.clone(), cleared.clone()),
            ObserveEvent::Removed { collection, id } => self.0.removed_wire(collection, id),
        }
        true
    }
}

/// Registers the declared publications and collection methods.
pub fn register(
    registry: &mut Registry,
    publications: &[PublicationConfig],
    collections: &[CollectionConfig],
    store: Arc<dyn Store>,
    observe: Arc<ObserveHub>,
) -> Result<Vec<IndexDeclaration>, DeclarationError> {
    let mut indexes = Vec::new();
    for p in publications {
        let fail = |problem: String| DeclarationError {
            what: "publication",
            name: p.name.clone(),
            problem,
        };
        let selector = to_document(&p.selector).map_err(&fail)?;
        let sort = to_document(&p.sort).map_err(&fail)?;
        let fields = to_document(&p.fields).map_err(&fail)?;
        // Validate once with placeholders filled by null, so a bad operator stops start-up.
        Cursor::new(
            &p.collection,
            &substitute_doc(&selector, &[], None),
            &sort,
            0,
            None,
            &fields,
        )
        .map_err(|e| fail(e.0))?;
        indexes.extend(publication_index(&p.collection, &selector, &sort));
        let max = p.limit.map(|l| l as usize);
        let (collection, login_required, observe) =
            (p.collection.clone(), p.login_required, observe.clone());
        registry.publication(&p.name, move |sub, params| {
            let (selector, sort, fields, collection, observe) = (
                selector.clone(),
                sort.clone(),
                fields.clone(),
                collection.clone(),
                observe.clone(),
            );
            async move {
                if login_required && sub.user_id.is_none() {
                    return Ok(Publish::Ready);
                }
                let asked = params
                    .last()
                    .and_then(|p| p.as_object())
                    .and_then(|o| o.get("limit"))
                    .and_then(Value::as_f64);
                let limit = match (max, asked) {
                    (Some(m), Some(a)) if a >= 0.0 => Some(m.min(a as usize)),
                    (None, Some(a)) if a >= 0.0 => Some(a as usize),
                    (m, _) => m,
                };
                let selector = substitute_doc(&selector, &params, sub.user_id.as_deref());
                let cursor = Cursor::new(&collection, &selector, &sort, 0, limit, &fields)
                    .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
                let handle = observe
                    .observe(cursor, Arc::new(SubscriptionSink(sub.clone())))
                    .await
                    .map_err(store_error)?;
                // The observation lasts as long as the subscription.
                tokio::spawn(async move {
                    sub.stopped().await;
                    drop(handle);
                });
                Ok(Publish::Ready)
            }
        });
    }
    for c in collections {
        let fail = |problem: String| DeclarationError {
            what: "collection",
            name: c.name.clone(),
            problem,
        };
        let rule = |t: &Option<toml::Table>| -> Result<Option<Document>, DeclarationError> {
            match t {
                None => Ok(None),
                Some(_) => {
                    let d = to_document(t).map_err(&fail)?;
                    Selector::parse(&substitute_doc(&d, &[], None)).map_err(|e| fail(e.0))?;
                    Ok(Some(d))
                }
            }
        };
        let (insert_rule, update_rule, remove_rule) =
            (rule(&c.insert)?, rule(&c.update)?, rule(&c.remove)?);
        for keys in &c.indexes {
            let keys = to_document(&Some(keys.clone())).map_err(&fail)?;
            if keys.is_empty() {
                return Err(fail("an index needs at least one field".into()));
            }
            let keys = Sort::parse(&keys).map_err(|e| fail(format!("index: {}", e.0)))?;
            indexes.push(IndexDeclaration {
                collection: c.name.clone(),
                keys,
            });
        }
        let name = c.name.clone();
        let allows = move |rule: &Option<Document>,
                           doc: &Document,
                           user: Option<&str>|
              -> Result<bool, ServiceError> {
            let Some(rule) = rule else { return Ok(false) };
            let selector = Selector::parse(&substitute_doc(rule, &[], user))
                .map_err(ServiceError::internal)?;
            Ok(selector.matches(doc))
        };
        let allows = Arc::new(allows);

        let (store_i, allows_i, name_i) = (store.clone(), allows.clone(), name.clone());
        registry.method(&format!("/{name}/insert"), move |ctx, params| {
            let (store, allows, name, rule) = (
                store_i.clone(),
                allows_i.clone(),
                name_i.clone(),
                insert_rule.clone(),
            );
            async move {
                let Some(Value::Object(mut doc)) = params.into_iter().next() else {
                    return Err(ServiceError::match_failed());
                };
                if !doc.contains_key("_id") {
                    // The id the client simulated: Meteor derives it from the call's seed.
                    let id = ctx.random_stream(&format!("/collection/{name}")).id();
                    doc.shift_insert(0, "_id".into(), Value::String(id));
                }
                if !allows(&rule, &doc, ctx.user_id.as_deref())? {
                    return Err(access_denied());
                }
                let ack = store.insert(&name, doc).await.map_err(store_error)?;
                ctx.record_write(ack.seq);
                Ok(Some(ack.id))
            }
        });

        let (store_u, allows_u, name_u) = (store.clone(), allows.clone(), name.clone());
        registry.method(&format!("/{name}/update"), move |ctx, params| {
            let (store, allows, name, rule) = (
                store_u.clone(),
                allows_u.clone(),
                name_u.clone(),
                update_rule.clone(),
            );
            async move {
                let id = id_from_selector(params.first())?;
                let Some(Value::Object(modifier)) = params.get(1) else {
                    return Err(ServiceError::match_failed());
                };
                if let Some(Value::Object(opts)) = params.get(2) {
                    if matches!(opts.get("upsert"), Some(Value::Bool(true))) {
                        return Err(ServiceError::Client(MeteorError::new(
                            403,
                            "Access denied. Upserts not allowed in a restricted collection.",
                        )));
                    }
                }
                let update = Update::parse(modifier)
                    .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
                let Some(before) = find_by_id(&store, &name, &id).await? else {
                    return Ok(Some(Value::Number(0.0)));
                };
                let after = update
                    .apply(&before, None, false)
                    .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
                let user = ctx.user_id.as_deref();
                if !allows(&rule, &before, user)? || !allows(&rule, &after, user)? {
                    return Err(access_denied());
                }
                let ack = store
                    .update(&name, Selector::by_id(id), update, false, false)
                    .await
                    .map_err(store_error)?;
                ctx.record_write(ack.seq);
                Ok(Some(Value::Number(ack.matched as f64)))
            }
        });

        let (store_r, allows_r, name_r) = (store.clone(), allows.clone(), name.clone());
        registry.method(&format!("/{name}/remove"), move |ctx, params| {
            let (store, allows, name, rule) = (
                store_r.clone(),
                allows_r.clone(),
                name_r.clone(),
                remove_rule.clone(),
            );
            async move {
                let id = id_from_selector(params.first())?;
                let Some(before) = find_by_id(&store, &name, &id).await? else {
                    return Ok(Some(Value::Number(0.0)));
                };
                if !allows(&rule, &before, ctx.user_id.as_deref())? {
                    return Err(access_denied());
                }
                let ack = store
                    .remove(&name, Selector::by_id(id), false)
                    .await
                    .map_err(store_error)?;
                ctx.record_write(ack.seq);
                Ok(Some(Value::Number(ack.matched as f64)))
            }
        });
    }
    Ok(indexes)
}

/// The index that serves a publication: its selector's plain equality fields, then its sort.
fn publication_index(
    collection: &str,
    selector: &Document,
    sort: &Document,
) -> Option<IndexDeclaration> {
    let mut keys = Document::default();
    for (field, value) in selector {
        let plain = !field.starts_with('$')
            && !matches!(
                value,
                Value::Object(_) | Value::Array(_) | Value::Regex { .. }
            );
        if plain {
            keys.insert(field.clone(), Value::Number(1.0));
        }
    }
    for (field, dir) in sort {
        keys.entry(field.clone()).or_insert_with(|| dir.clone());
    }
    if keys.is_empty() {
        return None;
    }
    Sort::parse(&keys).ok().map(|keys| IndexDeclaration {
        collection: collection.to_owned(),
        keys,
    })
}

async fn find_by_id(
    store: &Arc<dyn Store>,
    collection: &str,
    id: &Value,
) -> Result<Option<Document>, ServiceError> {
    let options = FindOptions {
        selector: Selector::by_id(id.clone()),
        ..Default::default()
    };
    let found = store.find(collection, options).await.map_err(store_error)?;
    Ok(found.into_iter().next())
}

/// Untrusted code may only name documents by `_id`, as Meteor's allow/deny requires.
fn id_from_selector(selector: Option<&Value>) -> Result<Value, ServiceError> {
    match selector {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::ObjectId(o)) => Ok(Value::ObjectId(*o)),
        Some(Value::Object(d)) if d.len() == 1 => match d.get("_id") {
            Some(v @ (Value::String(_) | Value::ObjectId(_) | Value::Number(_))) => Ok(v.clone()),
            _ => Err(not_by_id()),
        },
        _ => Err(not_by_id()),
    }
}

fn not_by_id() -> ServiceError {
    ServiceError::Client(MeteorError::new(
        403,
        "Not permitted. Untrusted code may only update documents by ID.",
    ))
}
