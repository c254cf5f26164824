//! Update documents: MongoDB's update operators, or a whole replacement document.

use super::compare::{compare, equal};
use super::matcher::Selector;
use super::QueryError;
use crate::model::{Document, Value};
use std::cmp::Ordering;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Modifier {
    Set,
    SetOnInsert,
    Unset,
    Inc,
    Mul,
    Min,
    Max,
    Push,
    AddToSet,
    Pop,
    Pull,
    PullAll,
    Rename,
    CurrentDate,
}

impl Modifier {
    fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "$set" => Modifier::Set,
            "$setOnInsert" => Modifier::SetOnInsert,
            "$unset" => Modifier::Unset,
            "$inc" => Modifier::Inc,
            "$mul" => Modifier::Mul,
            "$min" => Modifier::Min,
            "$max" => Modifier::Max,
            "$push" => Modifier::Push,
            "$addToSet" => Modifier::AddToSet,
            "$pop" => Modifier::Pop,
            "$pull" => Modifier::Pull,
            "$pullAll" => Modifier::PullAll,
            "$rename" => Modifier::Rename,
            "$currentDate" => Modifier::CurrentDate,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Modifier::Set => "$set",
            Modifier::SetOnInsert => "$setOnInsert",
            Modifier::Unset => "$unset",
            Modifier::Inc => "$inc",
            Modifier::Mul => "$mul",
            Modifier::Min => "$min",
            Modifier::Max => "$max",
            Modifier::Push => "$push",
            Modifier::AddToSet => "$addToSet",
            Modifier::Pop => "$pop",
            Modifier::Pull => "$pull",
            Modifier::PullAll => "$pullAll",
            Modifier::Rename => "$rename",
            Modifier::CurrentDate => "$currentDate",
        }
    }
}

/// A compiled update.
#[derive(Clone, Debug)]
pub enum Update {
    /// Replaces every field but `_id`.
    Replace(Document),
    Modify(Vec<(Modifier, String, Value)>),
}

fn err<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::new(message))
}

/// Field names MongoDB refuses in stored documents.
pub fn check_field_names(doc: &Document, top: bool) -> Result<(), QueryError> {
    for (k, v) in doc {
        if k.starts_with('$') {
            return err(format!("Document can't have $ prefixed field names: {k}"));
        }
        if k.contains('.') {
            return err(format!("Document can't have '.' in field names: {k}"));
        }
        if top && k == "_id" && matches!(v, Value::Array(_) | Value::Regex { .. }) {
            return err(format!(
                "The '_id' value cannot be of type {}",
                v.type_name()
            ));
        }
        check_nested(v)?;
    }
    Ok(())
}

fn check_nested(v: &Value) -> Result<(), QueryError> {
    match v {
        Value::Object(d) => check_field_names(d, false),
        Value::Array(items) => items.iter().try_for_each(check_nested),
        _ => Ok(()),
    }
}

impl Update {
    pub fn parse(spec: &Document) -> Result<Self, QueryError> {
        let is_modifier = spec.keys().next().is_some_and(|k| k.starts_with('$'));
        if !is_modifier {
            if let Some(k) = spec.keys().find(|k| k.starts_with('$')) {
                return err(format!(
                    "The dollar ($) prefixed field '{k}' in '{k}' is not allowed in the context of an update's replacement document."
                ));
            }
            check_field_names(spec, true)?;
            return Ok(Update::Replace(spec.clone()));
        }
        let mut ops = Vec::new();
        let mut paths: Vec<String> = Vec::new();
        for (name, operand) in spec {
            let Some(modifier) = Modifier::parse(name) else {
                return err(format!(
                    "Unknown modifier: {name}. Expected a valid update modifier or pipeline-style update specified as an array"
                ));
            };
            let Value::Object(fields) = operand else {
                return err(format!(
                    "Modifiers operate on fields but we found type {} instead. For example: {{$mod: {{<field>: ...}}}} not {{{name}: {}}}",
                    operand.type_name(),
                    operand.to_ejson_string()
                ));
            };
            for (path, value) in fields {
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return err(format!("The update path '{path}' contains an empty field name, which is not allowed."));
                }
                if path.split('.').any(|p| p.starts_with('$') && p != "$") {
                    return err(format!(
                        "The dollar ($) prefixed field '{path}' is not valid for storage."
                    ));
                }
                let mut targets = vec![path.clone()];
                if modifier == Modifier::Rename {
                    let Value::String(to) = value else {
                        return err(format!(
                            "The 'to' field for $rename must be a string: {path}: {}",
                            value.to_ejson_string()
                        ));
                    };
                    if to == path {
                        return err(format!(
                            "The source and target field for $rename must differ: {path}: \"{to}\""
                        ));
                    }
                    targets.push(to.clone());
                }
                for target in targets {
                    for existing in &paths {
                        if conflicts(existing, &target) {
                            let common = if existing.len() <= target.len() {
                                existing
                            } else {
                                &target
                            };
                            return err(format!("Updating the path '{target}' would create a conflict at '{common}'"));
                        }
                    }
                    paths.push(target);
                }
                validate_operand(modifier, path, value)?;
                ops.push((modifier, path.clone(), value.clone()));
            }
        }
        Ok(Update::Modify(ops))
    }

    /// Applies to `doc`. `matched_index` is the array position a query matched, for the
    /// positional `$`. `inserting` applies `$setOnInsert`.
    pub fn apply(
        &self,
        doc: &Document,
        matched_index: Option<usize>,
        inserting: bool,
    ) -> Result<Document, QueryError> {
        let mut out = match self {
            Update::Replace(replacement) => {
                let mut out = Document::default();
                if let Some(id) = doc.get("_id") {
                    out.insert("_id".into(), id.clone());
                }
                for (k, v) in replacement {
                    out.insert(k.clone(), v.clone());
                }
                out
            }
            Update::Modify(ops) => {
                let mut out = doc.clone();
                for (modifier, path, operand) in ops {
                    if *modifier == Modifier::SetOnInsert && !inserting {
                        continue;
                    }
                    let parts = resolve_positional(path, matched_index)?;
                    apply_one(&mut out, *modifier, &parts, operand, doc)?;
                }
                out
            }
        };
        match (doc.get("_id"), out.get("_id")) {
            (Some(before), Some(after)) if !equal(before, after) => {
                return err(
                    "Performing an update on the path '_id' would modify the immutable field '_id'",
                );
            }
            (Some(before), None) => {
                out.shift_insert(0, "_id".into(), before.clone());
            }
            _ => {}
        }
        Ok(out)
    }

    /// The update as a document: the replacement, or `{$op: {path: operand}}` grouped by
    /// operator in first-use order.
    pub fn to_document(&self) -> Document {
        match self {
            Update::Replace(doc) => doc.clone(),
            Update::Modify(ops) => {
                let mut out = Document::default();
                for (modifier, path, operand) in ops {
                    let entry = out
                        .entry(modifier.name().to_owned())
                        .or_insert_with(|| Value::Object(Document::default()));
                    if let Value::Object(fields) = entry {
                        fields.insert(path.clone(), operand.clone());
                    }
                }
                out
            }
        }
    }

    pub fn is_replacement(&self) -> bool {
        matches!(self, Update::Replace(_))
    }
}

fn conflicts(a: &str, b: &str) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    long == short || long.starts_with(&format!("{short}."))
}

fn validate_operand(modifier: Modifier, path: &str, value: &Value) -> Result<(), QueryError> {
    match modifier {
        Modifier::Inc | Modifier::Mul if !matches!(value, Value::Number(_) | Value::Long(_)) => err(format!(
            "Cannot {} with non-numeric argument: {{{path}: {}}}",
            if modifier == Modifier::Inc { "increment" } else { "multiply" },
            value.to_ejson_string()
        )),
        Modifier::Pop => match value {
            Value::Number(n) if *n == 1.0 || *n == -1.0 => Ok(()),
            _ => err(format!("$pop expects 1 or -1, found: {}", value.to_ejson_string())),
        },
        Modifier::PullAll if !matches!(value, Value::Array(_)) => err(format!(
            "$pullAll requires an array argument but was given a {}",
            value.type_name()
        )),
        Modifier::CurrentDate => match value {
            Value::Bool(true) => Ok(()),
            Value::Object(d) if matches!(d.get("$type"), Some(Value::String(t)) if t == "date" || t == "timestamp") && d.len() == 1 => Ok(()),
            _ => err(format!("{} is not valid type for $currentDate. Please use a boolean ('true') or a $type expression ({{$type: 'timestamp/date'}}).", value.type_name())),
        },
        Modifier::Push | Modifier::AddToSet => {
            if let Value::Object(d) = value {
                if d.contains_key("$each") && !matches!(d.get("$each"), Some(Value::Array(_))) {
                    return err(format!("The argument to $each in {} must be an array but it was of type: {}", modifier.name(), d.get("$each").map_or("missing", Value::type_name)));
                }
                if modifier == Modifier::AddToSet {
                    if let Some(k) = d.keys().find(|k| k.starts_with('$') && *k != "$each") {
                        return err(format!("Found unexpected fields after $each in $addToSet: {k}"));
                    }
                } else if d.contains_key("$each") {
                    for k in d.keys() {
                        if !matches!(k.as_str(), "$each" | "$slice" | "$position" | "$sort") {
                            return err(format!("Unrecognized clause in $push: {k}"));
                        }
                    }
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn resolve_positional(path: &str, matched: Option<usize>) -> Result<Vec<String>, QueryError> {
    path.split('.')
        .map(|p| {
            if p == "$" {
                matched.map(|i| i.to_string()).ok_or_else(|| {
                    QueryError::new(
                        "The positional operator did not find the match needed from the query.",
                    )
                })
            } else {
                Ok(p.to_owned())
            }
        })
        .collect()
}

/// Short form of a document for error messages: `{_id: "x"}`.
fn id_text(original: &Document) -> String {
    match original.get("_id") {
        Some(id) => format!("{{_id: {}}}", id.to_ejson_string()),
        None => "{}".into(),
    }
}

/// Walks to the parent container of the last part, creating objects when `create`.
fn parent_mut<'a>(
    doc: &'a mut Document,
    parts: &[String],
    create: bool,
) -> Result<Option<Container<'a>>, QueryError> {
    let mut current = Container::Object(doc);
    for part in &parts[..parts.len() - 1] {
        let next: &'a mut Value = match current {
            Container::Object(map) => {
                if !map.contains_key(part.as_str()) {
                    if !create {
                        return Ok(None);
                    }
                    map.insert(part.clone(), Value::Object(Document::default()));
                }
                match map.get_mut(part.as_str()) {
                    Some(v) => v,
                    None => return Ok(None),
                }
            }
            Container::Array(items) => {
                let Ok(index) = part.parse::<usize>() else {
                    return err(format!(
                        "Cannot create field '{part}' in element {{{}}}",
                        "array"
                    ));
                };
                if index >= items.len() {
                    if !create {
                        return Ok(None);
                    }
                    items.resize(index + 1, Value::Null);
                    items[index] = Value::Object(Document::default());
                }
                &mut items[index]
            }
        };
        current = match next {
            Value::Object(map) => Container::Object(map),
            Value::Array(items) => Container::Array(items),
            Value::Null if create => {
                *next = Value::Object(Document::default());
                match next {
                    Value::Object(map) => Container::Object(map),
                    _ => return Ok(None),
                }
            }
            other => {
                if !create {
                    return Ok(None);
                }
                let idx = parts.iter().position(|p| p == part).map_or(0, |i| i + 1);
                return err(format!(
                    "Cannot create field '{}' in element {{{part}: {}}}",
                    parts.get(idx).map_or("", String::as_str),
                    other.to_ejson_string()
                ));
            }
        };
    }
    Ok(Some(current))
}

enum Container<'a> {
    Object(&'a mut Document),
    Array(&'a mut Vec<Value>),
}

impl Container<'_> {
    fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Container::Object(m) => m.get(key),
            Container::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        }
    }

    fn set(&mut self, key: &str, value: Value) -> Result<(), QueryError> {
        match self {
            Container::Object(m) => {
                m.insert(key.to_owned(), value);
                Ok(())
            }
            Container::Array(items) => {
                let Ok(i) = key.parse::<usize>() else {
                    return err(format!("Cannot create field '{key}' in element {{array}}"));
                };
                if i >= items.len() {
                    items.resize(i + 1, Value::Null);
                }
                items[i] = value;
                Ok(())
            }
        }
    }

    fn remove(&mut self, key: &str) -> Option<Value> {
        match self {
            Container::Object(m) => m.shift_remove(key),
            Container::Array(items) => {
                // $unset of an array element leaves null in its place, as MongoDB does.
                let i = key.parse::<usize>().ok()?;
                items
                    .get_mut(i)
                    .map(|slot| std::mem::replace(slot, Value::Null))
            }
        }
    }
}

fn apply_one(
    doc: &mut Document,
    modifier: Modifier,
    parts: &[String],
    operand: &Value,
    original: &Document,
) -> Result<(), QueryError> {
    let last = parts[parts.len() - 1].as_str();
    let path = parts.join(".");
    match modifier {
        Modifier::Set | Modifier::SetOnInsert => {
            if let Some(mut parent) = parent_mut(doc, parts, true)? {
                parent.set(last, operand.clone())?;
            }
        }
        Modifier::Unset => {
            if let Some(mut parent) = parent_mut(doc, parts, false)? {
                parent.remove(last);
            }
        }
        Modifier::Inc | Modifier::Mul => {
            let Some(mut parent) = parent_mut(doc, parts, true)? else {
                return Ok(());
            };
            let current = match parent.get(last) {
                None => Value::Number(0.0),
                Some(v @ (Value::Number(_) | Value::Long(_))) => v.clone(),
                Some(other) => {
                    return err(format!(
                        "Cannot apply {} to a value of non-numeric type. {} has the field '{last}' of non-numeric type {}",
                        modifier.name(),
                        id_text(original),
                        other.type_name()
                    ))
                }
            };
            // Integers stay exact (an int64 beyond 2^53 included) unless the result
            // overflows; anything else is double arithmetic, as in JavaScript.
            let exact = match (current.as_exact_integer(), operand.as_exact_integer()) {
                (Some(a), Some(b)) if modifier == Modifier::Inc => a.checked_add(b),
                (Some(a), Some(b)) => a.checked_mul(b),
                _ => None,
            };
            let new = match exact {
                Some(n) => Value::integer(n),
                None => {
                    let (a, b) = (
                        current.as_f64().unwrap_or(0.0),
                        operand.as_f64().unwrap_or(0.0),
                    );
                    Value::Number(if modifier == Modifier::Inc {
                        a + b
                    } else {
                        a * b
                    })
                }
            };
            parent.set(last, new)?;
        }
        Modifier::Min | Modifier::Max => {
            let Some(mut parent) = parent_mut(doc, parts, true)? else {
                return Ok(());
            };
            let replace = match parent.get(last) {
                None => true,
                Some(current) => {
                    let c = compare(operand, current);
                    (modifier == Modifier::Min && c == Ordering::Less)
                        || (modifier == Modifier::Max && c == Ordering::Greater)
                }
            };
            if replace {
                parent.set(last, operand.clone())?;
            }
        }
        Modifier::CurrentDate => {
            let Some(mut parent) = parent_mut(doc, parts, true)? else {
                return Ok(());
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_millis() as f64);
            parent.set(last, Value::Date(now))?;
        }
        Modifier::Rename => {
            let Value::String(to) = operand else {
                return Ok(());
            };
            let value = match parent_mut(doc, parts, false)? {
                Some(mut parent) => parent.remove(last),
                None => None,
            };
            if let Some(value) = value {
                let to_parts: Vec<String> = to.split('.').map(str::to_owned).collect();
                if let Some(mut parent) = parent_mut(doc, &to_parts, true)? {
                    parent.set(&to_parts[to_parts.len() - 1], value)?;
                }
            }
        }
        Modifier::Push
        | Modifier::AddToSet
        | Modifier::Pop
        | Modifier::Pull
        | Modifier::PullAll => {
            let Some(mut parent) = parent_mut(
                doc,
                parts,
                modifier != Modifier::Pop
                    && modifier != Modifier::Pull
                    && modifier != Modifier::PullAll,
            )?
            else {
                return Ok(());
            };
            let mut items = match parent.get(last) {
                None => {
                    if matches!(modifier, Modifier::Pop | Modifier::Pull | Modifier::PullAll) {
                        return Ok(());
                    }
                    Vec::new()
                }
                Some(Value::Array(items)) => items.clone(),
                Some(other) => {
                    return err(if matches!(modifier, Modifier::Push | Modifier::AddToSet) {
                        format!(
                            "The field '{path}' must be an array but is of type {} in document {}",
                            other.type_name(),
                            id_text(original)
                        )
                    } else {
                        format!(
                            "Path '{path}' contains an element of non-array type '{}'",
                            other.type_name()
                        )
                    })
                }
            };
            array_op(modifier, &mut items, operand)?;
            parent.set(last, Value::Array(items))?;
        }
    }
    Ok(())
}

fn array_op(modifier: Modifier, items: &mut Vec<Value>, operand: &Value) -> Result<(), QueryError> {
    let each = |operand: &Value| -> Vec<Value> {
        match operand {
            Value::Object(d) if d.contains_key("$each") => match d.get("$each") {
                Some(Value::Array(list)) => list.clone(),
                _ => Vec::new(),
            },
            other => vec![other.clone()],
        }
    };
    match modifier {
        Modifier::Push => {
            let values = each(operand);
            let opts = match operand {
                Value::Object(d) if d.contains_key("$each") => Some(d),
                _ => None,
            };
            let position = match opts.and_then(|d| d.get("$position")) {
                None => items.len(),
                Some(Value::Number(p)) if p.fract() == 0.0 => {
                    let p = *p as i64;
                    if p < 0 {
                        (items.len() as i64 + p).max(0) as usize
                    } else {
                        (p as usize).min(items.len())
                    }
                }
                Some(other) => {
                    return err(format!(
                        "The value for $position must be an integer value, not of type: {}",
                        other.type_name()
                    ))
                }
            };
            for (offset, v) in values.into_iter().enumerate() {
                items.insert(position + offset, v);
            }
            if let Some(sort) = opts.and_then(|d| d.get("$sort")) {
                match sort {
                    Value::Number(n) if *n == 1.0 || *n == -1.0 => {
                        let asc = *n == 1.0;
                        items.sort_by(|a, b| if asc { compare(a, b) } else { compare(b, a) });
                    }
                    Value::Object(spec) => {
                        let sorter = super::Sort::parse(spec)?;
                        items.sort_by(|a, b| match (a, b) {
                            (Value::Object(x), Value::Object(y)) => sorter.compare(x, y),
                            _ => compare(a, b),
                        });
                    }
                    _ => return err("The $sort is invalid: use 1/-1 to sort the whole element, or {field:1/-1} to sort embedded fields"),
                }
            }
            match opts.and_then(|d| d.get("$slice")) {
                None => {}
                Some(Value::Number(n)) if n.fract() == 0.0 => {
                    let n = *n as i64;
                    if n >= 0 {
                        items.truncate(n as usize);
                    } else {
                        let keep = (-n) as usize;
                        if items.len() > keep {
                            items.drain(..items.len() - keep);
                        }
                    }
                }
                Some(other) => {
                    return err(format!(
                        "The value for $slice must be an integer value but was given type: {}",
                        other.type_name()
                    ))
                }
            }
        }
        Modifier::AddToSet => {
            for v in each(operand) {
                if !items.iter().any(|e| equal(e, &v)) {
                    items.push(v);
                }
            }
        }
        Modifier::Pop => {
            if operand.as_f64() == Some(1.0) {
                items.pop();
            } else if !items.is_empty() {
                items.remove(0);
            }
        }
        Modifier::PullAll => {
            if let Value::Array(list) = operand {
                items.retain(|e| !list.iter().any(|v| equal(e, v)));
            }
        }
        Modifier::Pull => match operand {
            Value::Object(spec) if spec.keys().next().is_some_and(|k| k.starts_with('$')) => {
                let mut wrapper = Document::default();
                wrapper.insert("v".into(), operand.clone());
                let selector = Selector::parse(&wrapper)?;
                items.retain(|e| {
                    let mut d = Document::default();
                    d.insert("v".into(), e.clone());
                    !selector.matches(&d)
                });
            }
            Value::Object(spec) => {
                let selector = Selector::parse(spec)?;
                items.retain(|e| !matches!(e, Value::Object(d) if selector.matches(d)));
            }
            other => items.retain(|e| !equal(e, other)),
        },
        _ => {}
    }
    Ok(())
}
