//! Projections: inclusion or exclusion of (dotted) fields.

use super::QueryError;
use crate::model::{Document, Value};

/// A compiled projection.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    /// True: keep only the listed fields; false: drop them.
    include: bool,
    fields: Vec<String>,
    keep_id: bool,
}

impl Projection {
    /// Parses `{field: 1 | 0 | true | false, ...}`; `_id` may differ from the rest.
    pub fn parse(spec: &Document) -> Result<Self, QueryError> {
        let mut include: Option<bool> = None;
        let mut keep_id = true;
        let mut fields = Vec::new();
        for (field, v) in spec {
            let on = match v {
                Value::Number(n) => *n != 0.0,
                Value::Bool(b) => *b,
                _ => {
                    return Err(QueryError::new(format!(
                        "Unsupported projection option: {field}: {}",
                        v.to_ejson_string()
                    )))
                }
            };
            if field.is_empty() || field.starts_with('$') || field.split('.').any(str::is_empty) {
                return Err(QueryError::new(format!(
                    "FieldPath field names may not be empty or start with '$': {field}"
                )));
            }
            if field == "_id" {
                keep_id = on;
                continue;
            }
            match include {
                None => include = Some(on),
                Some(mode) if mode != on => {
                    return Err(QueryError::new(if mode {
                        format!("Cannot do exclusion on field {field} in inclusion projection")
                    } else {
                        format!("Cannot do inclusion on field {field} in exclusion projection")
                    }))
                }
                _ => {}
            }
            fields.push(field.clone());
        }
        // `{_id: 0}` alone is an exclusion projection; `{}` keeps everything.
        Ok(Self {
            include: include.unwrap_or(false),
            fields,
            keep_id,
        })
    }

    /// Keeps everything.
    pub fn all() -> Self {
        Self {
            include: false,
            fields: Vec::new(),
            keep_id: true,
        }
    }

    /// The specification as a document (`{field: 1}` or `{field: 0}`, `_id` as given).
    pub fn to_document(&self) -> Document {
        let on = Value::Number(if self.include { 1.0 } else { 0.0 });
        let mut out: Document = self
            .fields
            .iter()
            .map(|f| (f.clone(), on.clone()))
            .collect();
        if !self.keep_id {
            out.insert("_id".into(), Value::Number(0.0));
        }
        out
    }

    pub fn is_all(&self) -> bool {
        !self.include && self.fields.is_empty() && self.keep_id
    }

    /// The top-level fields an inclusion projection keeps (`None` for exclusions).
    pub fn included_top_level(&self) -> Option<Vec<&str>> {
        self.include.then(|| {
            self.fields
                .iter()
                .map(|f| f.split('.').next().unwrap_or(f))
                .collect()
        })
    }

    pub fn apply(&self, doc: &Document) -> Document {
        let mut out = if self.include {
            let mut out = Document::default();
            for field in &self.fields {
                let parts: Vec<&str> = field.split('.').collect();
                include_path(doc, &parts, &mut out);
            }
            // Keep the source order of fields.
            let mut ordered = Document::default();
            for (k, _) in doc {
                if let Some(v) = out.swap_remove(k) {
                    ordered.insert(k.clone(), v);
                }
            }
            ordered
        } else {
            let mut out = doc.clone();
            for field in &self.fields {
                let parts: Vec<&str> = field.split('.').collect();
                exclude_path(&mut out, &parts);
            }
            out
        };
        if self.keep_id {
            if let Some(id) = doc.get("_id") {
                if !out.contains_key("_id") {
                    out.shift_insert(0, "_id".into(), id.clone());
                }
            }
        } else {
            out.shift_remove("_id");
        }
        out
    }
}

fn include_path(src: &Document, parts: &[&str], out: &mut Document) {
    let Some(v) = src.get(parts[0]) else { return };
    if parts.len() == 1 {
        out.insert(parts[0].to_owned(), v.clone());
        return;
    }
    match v {
        Value::Object(inner) => {
            let slot = out
                .entry(parts[0].to_owned())
                .or_insert_with(|| Value::Object(Document::default()));
            if let Value::Object(target) = slot {
                include_path(inner, &parts[1..], target);
            }
        }
        Value::Array(items) => {
            let projected: Vec<Value> = items
                .iter()
                .filter_map(|item| match item {
                    Value::Object(inner) => {
                        let mut t = Document::default();
                        include_path(inner, &parts[1..], &mut t);
                        Some(Value::Object(t))
                    }
                    _ => None,
                })
                .collect();
            match out.get_mut(parts[0]) {
                Some(Value::Array(existing)) => {
                    for (slot, new) in existing.iter_mut().zip(projected) {
                        if let (Value::Object(a), Value::Object(b)) = (slot, new) {
                            a.extend(b);
                        }
                    }
                }
                _ => {
                    out.insert(parts[0].to_owned(), Value::Array(projected));
                }
            }
        }
        _ => {}
    }
}

fn exclude_path(doc: &mut Document, parts: &[&str]) {
    if parts.len() == 1 {
        doc.shift_remove(parts[0]);
        return;
    }
    match doc.get_mut(parts[0]) {
        Some(Value::Object(inner)) => exclude_path(inner, &parts[1..]),
        Some(Value::Array(items)) => {
            for item in items {
                if let Value::Object(inner) = item {
                    exclude_path(inner, &parts[1..]);
                }
            }
        }
        _ => {}
    }
}
