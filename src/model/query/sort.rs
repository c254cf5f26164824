//! Sort specifications with MongoDB's mixed-type order.

use super::compare::compare;
use super::path::lookup;
use super::QueryError;
use crate::model::{Document, Value};
use std::cmp::Ordering;

/// A compiled sort: fields with their direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sort {
    keys: Vec<(String, bool)>,
}

impl Sort {
    /// Parses `{field: 1 | -1, ...}`.
    pub fn parse(spec: &Document) -> Result<Self, QueryError> {
        let mut keys = Vec::with_capacity(spec.len());
        for (field, dir) in spec {
            if field == "$natural" {
                return Err(QueryError::new("$natural sort is not supported"));
            }
            if field.is_empty() || field.starts_with('$') || field.split('.').any(str::is_empty) {
                return Err(QueryError::new(format!(
                    "bad sort specification: invalid field '{field}'"
                )));
            }
            let ascending = match dir {
                Value::Number(n) if *n == 1.0 => true,
                Value::Number(n) if *n == -1.0 => false,
                _ => {
                    return Err(QueryError::new(
                        "$sort key ordering must be 1 (for ascending) or -1 (for descending)",
                    ))
                }
            };
            keys.push((field.clone(), ascending));
        }
        Ok(Self { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The specification as a document (`{field: 1 | -1}`).
    pub fn to_document(&self) -> Document {
        self.keys
            .iter()
            .map(|(f, asc)| (f.clone(), Value::Number(if *asc { 1.0 } else { -1.0 })))
            .collect()
    }

    /// The fields and directions, in order.
    pub fn keys(&self) -> &[(String, bool)] {
        &self.keys
    }

    /// Compares two documents; ties are left to the caller (which breaks them by `_id`).
    pub fn compare(&self, a: &Document, b: &Document) -> Ordering {
        for (field, ascending) in &self.keys {
            let ka = sort_key(a, field, *ascending);
            let kb = sort_key(b, field, *ascending);
            let c = compare(&ka, &kb);
            let c = if *ascending { c } else { c.reverse() };
            if c != Ordering::Equal {
                return c;
            }
        }
        Ordering::Equal
    }
}

/// The value a document sorts by on one field: arrays sort by their smallest element
/// ascending and their largest descending; missing and empty arrays sort as null.
fn sort_key(doc: &Document, field: &str, ascending: bool) -> Value {
    let null = Value::Null;
    let branches = lookup(doc, field);
    let mut candidates: Vec<&Value> = Vec::new();
    for branch in &branches {
        match branch {
            None => candidates.push(&null),
            Some(Value::Array(items)) if items.is_empty() => candidates.push(&null),
            Some(Value::Array(items)) => candidates.extend(items.iter()),
            Some(v) => candidates.push(v),
        }
    }
    let best = if ascending {
        candidates.into_iter().min_by(|a, b| compare(a, b))
    } else {
        candidates.into_iter().max_by(|a, b| compare(a, b))
    };
    best.cloned().unwrap_or(Value::Null)
}
