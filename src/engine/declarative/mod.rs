//! Publications and collections declared in configuration (`[[publications]]`,
//! `[[collections]]`), so that a Meteor client application gets live data with no Meteor
//! server: each publication is a live query, each collection gets Meteor's
//! `/<name>/insert|update|remove` methods guarded by allow rules, with the checks and error
//! texts of Meteor's `allow-deny` package.
//!
//! What a client sends is bound into selectors and rules as values only (`bind`); declared
//! argument types are checked before any query runs.

mod bind;

use super::args::{check_params, ArgType};
use super::error::ServiceError;
use super::publish::observe_into;
use super::registry::{Publish, Registry};
use crate::model::query::{Selector, Sort, Update};
use crate::model::{Document, MeteorError, Value};
use crate::observe::{Cursor, ObserveHub};
use crate::storage::{valid_collection_name, FindOptions, Store, StoreError};
use bind::{Bindings, Template, Unbound};
use serde::Deserialize;
use std::collections::HashSet;
use std::sync::Arc;

/// A `[[publications]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicationConfig {
    pub name: String,
    pub collection: String,
    /// The types of the subscription's parameters (`"string"`, `"id?"`, ...), checked
    /// before any query runs.
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub selector: Option<toml::Table>,
    #[serde(default)]
    pub sort: Option<toml::Table>,
    /// The most documents a subscriber gets; a client may ask for fewer. 0: no limit.
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub fields: Option<toml::Table>,
    #[serde(default)]
    pub login_required: bool,
    /// Run for every session without being asked, again whenever its user changes (Meteor's
    /// `Meteor.publish(null, ...)`); takes no arguments and sends no `ready`.
    #[serde(default)]
    pub universal: bool,
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
    /// Which entry of that name (0: the first), to point at its line.
    pub occurrence: usize,
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

fn store_error(err: StoreError) -> ServiceError {
    ServiceError::from_store(&err)
}

fn access_denied(reason: impl Into<String>) -> ServiceError {
    ServiceError::Client(MeteorError::new(403, reason))
}

/// Meteor's answer when an operation has no allow rule: refused before any look-up, so
/// whether the id exists is never revealed.
fn no_rule(method: &str) -> ServiceError {
    access_denied(format!(
        "Access denied. No allow validators set on restricted collection for method '{method}'."
    ))
}

/// The update operators Meteor allows in a restricted collection: those that change only
/// the fields they name.
const ALLOWED_UPDATE_OPERATORS: [&str; 10] = [
    "$inc",
    "$set",
    "$unset",
    "$addToSet",
    "$pop",
    "$pullAll",
    "$pull",
    "$pushAll",
    "$push",
    "$bit",
];

/// Refuses replacements and operators outside Meteor's list, with Meteor's texts.
fn check_restricted_modifier(modifier: &Document) -> Result<(), ServiceError> {
    const NO_REPLACE: &str = "Access denied. In a restricted collection you can only update \
         documents, not replace them. Use a Mongo update operator, such as '$set'.";
    if modifier.is_empty() {
        return Err(access_denied(NO_REPLACE));
    }
    for op in modifier.keys() {
        if !op.starts_with('$') {
            return Err(access_denied(NO_REPLACE));
        }
        if !ALLOWED_UPDATE_OPERATORS.contains(&op.as_str()) {
            return Err(access_denied(format!(
                "Access denied. Operator {op} not allowed in a restricted collection."
            )));
        }
    }
    Ok(())
}

/// An allow rule: the document must match it. A rule that names a value the call lacks
/// (`$userId` without a user) never matches.
#[derive(Clone)]
struct Rule(Template);

impl Rule {
    fn allows(&self, doc: &Document, user_id: Option<&str>) -> Result<bool, ServiceError> {
        let bound = self.0.bind(&Bindings {
            args: &[],
            declared: Some(&[]),
            user_id,
        });
        match bound {
            Ok(selector) => Ok(Selector::parse(&selector)
                .map_err(ServiceError::internal)?
                .matches(doc)),
            Err(Unbound::Nothing) => Ok(false),
            Err(Unbound::MatchFailed) => Err(ServiceError::match_failed()),
        }
    }
}

/// A subscription's trailing options parameter (`{limit: n}`), which Meteor apps commonly
/// pass after the positional ones.
fn is_options(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.keys().all(|k| k == "limit"))
}

/// The limit a subscriber gets: the declared maximum, or less when the client asks for
/// less. 0 means no limit, as in MongoDB.
fn effective_limit(max: Option<u64>, params: &[Value]) -> Option<usize> {
    let max = max.filter(|m| *m > 0).map(|m| m as usize);
    let asked = params
        .last()
        .filter(|p| is_options(p))
        .and_then(|p| p.as_object())
        .and_then(|o| o.get("limit"))
        .and_then(Value::as_f64)
        .filter(|a| a.is_finite() && *a >= 1.0)
        .map(|a| a as usize);
    match (max, asked) {
        (Some(m), Some(a)) => Some(m.min(a)),
        (m, a) => m.or(a),
    }
}

/// Checks what every declared name must be: a usable collection name, and no name twice.
fn check_names(
    publications: &[PublicationConfig],
    collections: &[CollectionConfig],
) -> Result<(), DeclarationError> {
    let mut seen = HashSet::new();
    for p in publications {
        let fail = |problem: String, occurrence| DeclarationError {
            what: "publication",
            name: p.name.clone(),
            occurrence,
            problem,
        };
        if p.name.is_empty() {
            return Err(fail("a publication needs a name".into(), 0));
        }
        if !seen.insert(p.name.as_str()) {
            return Err(fail("declared twice".into(), 1));
        }
        if !valid_collection_name(&p.collection) {
            return Err(fail(
                format!("invalid collection name {:?}: {}", p.collection, NAME_RULE),
                0,
            ));
        }
    }
    let mut seen = HashSet::new();
    for c in collections {
        let fail = |problem: String, occurrence| DeclarationError {
            what: "collection",
            name: c.name.clone(),
            occurrence,
            problem,
        };
        if !valid_collection_name(&c.name) {
            return Err(fail(format!("invalid collection name: {NAME_RULE}"), 0));
        }
        if !seen.insert(c.name.as_str()) {
            return Err(fail("declared twice".into(), 1));
        }
    }
    Ok(())
}

const NAME_RULE: &str = "1 to 120 letters, digits, '_', '-' or '.', not starting with \
     'system.' or '$'";

/// Registers the declared publications and collection methods.
pub fn register(
    registry: &mut Registry,
    publications: &[PublicationConfig],
    collections: &[CollectionConfig],
    store: Arc<dyn Store>,
    observe: Arc<ObserveHub>,
) -> Result<Vec<IndexDeclaration>, DeclarationError> {
    check_names(publications, collections)?;
    let mut indexes = Vec::new();
    for p in publications {
        let fail = |problem: String| DeclarationError {
            what: "publication",
            name: p.name.clone(),
            occurrence: 0,
            problem,
        };
        let declared: Option<Arc<[ArgType]>> = match &p.args {
            None => None,
            Some(names) => Some(
                names
                    .iter()
                    .map(|n| n.parse::<ArgType>())
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(&fail)?
                    .into(),
            ),
        };
        let selector = to_document(&p.selector).map_err(&fail)?;
        let sort = to_document(&p.sort).map_err(&fail)?;
        let fields = to_document(&p.fields).map_err(&fail)?;
        let template = Template::parse(selector.clone(), declared.as_deref())
            .map_err(|e| fail(format!("selector {e}")))?;
        // Check the operators once, with sample values in place of the placeholders.
        Cursor::new(
            &p.collection,
            &template.sample(declared.as_deref()),
            &sort,
            0,
            None,
            &fields,
        )
        .map_err(|e| fail(e.0))?;
        indexes.extend(publication_index(&p.collection, &selector, &sort));
        let (max, login_required) = (p.limit, p.login_required || template.names_user());
        let refuse_anonymous = p.login_required;
        let collection: Arc<str> = p.collection.as_str().into();
        let observe = observe.clone();
        if p.universal && declared.as_ref().is_some_and(|d| !d.is_empty()) {
            return Err(fail("a universal publication takes no arguments".into()));
        }
        let handler = move |sub: crate::engine::Subscription, params: Vec<Value>| {
            let (template, declared, sort, fields, collection, observe) = (
                template.clone(),
                declared.clone(),
                sort.clone(),
                fields.clone(),
                collection.clone(),
                observe.clone(),
            );
            async move {
                if let Some(types) = &declared {
                    let positional = types.len();
                    check_params(types, &params, |i, v| i == positional && is_options(v))?;
                }
                if sub.user_id.is_none() && login_required {
                    if refuse_anonymous {
                        return Err(access_denied("Access denied"));
                    }
                    // Names the user and there is none: nothing to publish.
                    return Ok(Publish::Ready);
                }
                let bound = template.bind(&Bindings {
                    args: &params,
                    declared: declared.as_deref(),
                    user_id: sub.user_id.as_deref(),
                });
                let selector = match bound {
                    Ok(s) => s,
                    Err(Unbound::Nothing) => return Ok(Publish::Ready),
                    Err(Unbound::MatchFailed) => return Err(ServiceError::match_failed()),
                };
                let limit = effective_limit(max, &params);
                let cursor = Cursor::new(&collection, &selector, &sort, 0, limit, &fields)
                    .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
                observe_into(&observe, cursor, sub)
                    .await
                    .map_err(store_error)
            }
        };
        if p.universal {
            registry.universal_publication(&p.name, handler);
        } else {
            registry.publication(&p.name, handler);
        }
    }
    for c in collections {
        let fail = |problem: String| DeclarationError {
            what: "collection",
            name: c.name.clone(),
            occurrence: 0,
            problem,
        };
        let rule =
            |what: &str, t: &Option<toml::Table>| -> Result<Option<Rule>, DeclarationError> {
                let Some(_) = t else { return Ok(None) };
                let d = to_document(t).map_err(&fail)?;
                let template = Template::parse(d, Some(&[]))
                    .map_err(|e| fail(format!("{what} rule {e} (rules may name only $userId)")))?;
                Selector::parse(&template.sample(Some(&[])))
                    .map_err(|e| fail(format!("{what} rule: {}", e.0)))?;
                Ok(Some(Rule(template)))
            };
        let (insert_rule, update_rule, remove_rule) = (
            rule("insert", &c.insert)?,
            rule("update", &c.update)?,
            rule("remove", &c.remove)?,
        );
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
        let name: Arc<str> = c.name.as_str().into();
        register_insert(registry, &name, insert_rule, store.clone());
        register_update(registry, &name, update_rule, store.clone());
        register_remove(registry, &name, remove_rule, store.clone());
    }
    Ok(indexes)
}

fn register_insert(
    registry: &mut Registry,
    name: &Arc<str>,
    rule: Option<Rule>,
    store: Arc<dyn Store>,
) {
    let name = name.clone();
    registry.method(&format!("/{name}/insert"), move |ctx, params| {
        let (store, name, rule) = (store.clone(), name.clone(), rule.clone());
        async move {
            let Some(Value::Object(mut doc)) = params.into_iter().next() else {
                return Err(ServiceError::match_failed());
            };
            if !doc.contains_key("_id") {
                // The id the client simulated: Meteor derives it from the call's seed.
                let id = ctx.random_stream(&format!("/collection/{name}")).id();
                doc.shift_insert(0, "_id".into(), Value::String(id));
            }
            let Some(rule) = rule else {
                return Err(no_rule("insert"));
            };
            if !rule.allows(&doc, ctx.user_id.as_deref())? {
                return Err(access_denied("Access denied"));
            }
            let ack = store.insert(&name, doc).await.map_err(store_error)?;
            ctx.record_write(ack.seq);
            Ok(Some(ack.id))
        }
    });
}

fn register_update(
    registry: &mut Registry,
    name: &Arc<str>,
    rule: Option<Rule>,
    store: Arc<dyn Store>,
) {
    let name = name.clone();
    registry.method(&format!("/{name}/update"), move |ctx, params| {
        let (store, name, rule) = (store.clone(), name.clone(), rule.clone());
        async move {
            let id = id_from_selector(params.first(), "update")?;
            let Some(rule) = rule else {
                return Err(no_rule("update"));
            };
            let Some(Value::Object(modifier)) = params.get(1) else {
                return Err(ServiceError::match_failed());
            };
            if let Some(Value::Object(opts)) = params.get(2) {
                if matches!(opts.get("upsert"), Some(Value::Bool(true))) {
                    return Err(access_denied(
                        "Access denied. Upserts not allowed in a restricted collection.",
                    ));
                }
            }
            check_restricted_modifier(modifier)?;
            let update = Update::parse(modifier)
                .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
            let Some(before) = find_by_id(&store, &name, &id).await? else {
                return Ok(Some(Value::Number(0.0)));
            };
            let after = update
                .apply(&before, None, false)
                .map_err(|e| ServiceError::Client(MeteorError::new(400, e.0)))?;
            let user = ctx.user_id.as_deref();
            if !rule.allows(&before, user)? || !rule.allows(&after, user)? {
                return Err(access_denied("Access denied"));
            }
            let ack = store
                .update(
                    &name,
                    Selector::by_id(id),
                    update,
                    crate::storage::UpdateOptions::default(),
                )
                .await
                .map_err(store_error)?;
            ctx.record_write(ack.seq);
            Ok(Some(Value::Number(ack.matched as f64)))
        }
    });
}

fn register_remove(
    registry: &mut Registry,
    name: &Arc<str>,
    rule: Option<Rule>,
    store: Arc<dyn Store>,
) {
    let name = name.clone();
    registry.method(&format!("/{name}/remove"), move |ctx, params| {
        let (store, name, rule) = (store.clone(), name.clone(), rule.clone());
        async move {
            let id = id_from_selector(params.first(), "remove")?;
            let Some(rule) = rule else {
                return Err(no_rule("remove"));
            };
            let Some(before) = find_by_id(&store, &name, &id).await? else {
                return Ok(Some(Value::Number(0.0)));
            };
            if !rule.allows(&before, ctx.user_id.as_deref())? {
                return Err(access_denied("Access denied"));
            }
            let ack = store
                .remove(
                    &name,
                    Selector::by_id(id),
                    crate::storage::RemoveOptions::default(),
                )
                .await
                .map_err(store_error)?;
            ctx.record_write(ack.seq);
            Ok(Some(Value::Number(ack.matched as f64)))
        }
    });
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
    // Live queries sort by `_id` after the declared sort (a window is then the same on
    // every read): the index ends with it too, so the server never sorts in memory.
    if !sort.is_empty() {
        keys.entry("_id".into()).or_insert(Value::Number(1.0));
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
fn id_from_selector(selector: Option<&Value>, method: &str) -> Result<Value, ServiceError> {
    match selector {
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::ObjectId(o)) => Ok(Value::ObjectId(*o)),
        Some(Value::Object(d)) if d.len() == 1 => match d.get("_id") {
            Some(v @ (Value::String(_) | Value::ObjectId(_) | Value::Number(_))) => Ok(v.clone()),
            _ => Err(not_by_id(method)),
        },
        _ => Err(not_by_id(method)),
    }
}

fn not_by_id(method: &str) -> ServiceError {
    access_denied(format!(
        "Not permitted. Untrusted code may only {method} documents by ID."
    ))
}
