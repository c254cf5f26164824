//! Dotted paths and MongoDB's traversal of arrays along them.

use crate::model::{Document, Value};

/// One value a path reaches in a document, or `None` where the path reaches nothing.
pub type Branch<'a> = Option<&'a Value>;

/// Every value `path` reaches in `doc`, expanding arrays along the way as MongoDB does: a
/// path component that is not an index is looked up in each element of an array.
pub fn lookup<'a>(doc: &'a Document, path: &str) -> Vec<Branch<'a>> {
    // A plain field (the common case, `_id` above all) needs no split.
    let Some((head, rest)) = path.split_once('.') else {
        return vec![doc.get(path)];
    };
    let parts: Vec<&str> = rest.split('.').collect();
    let mut out = Vec::new();
    match doc.get(head) {
        Some(v) => walk(v, &parts, &mut out),
        None => out.push(None),
    }
    out
}

fn walk<'a>(value: &'a Value, rest: &[&str], out: &mut Vec<Branch<'a>>) {
    let Some((head, tail)) = rest.split_first() else {
        out.push(Some(value));
        return;
    };
    match value {
        Value::Object(doc) => match doc.get(*head) {
            Some(v) => walk(v, tail, out),
            None => out.push(None),
        },
        Value::Array(items) => {
            let before = out.len();
            if let Ok(index) = head.parse::<usize>() {
                if let Some(item) = items.get(index) {
                    walk(item, tail, out);
                }
            }
            for item in items {
                if let Value::Object(doc) = item {
                    match doc.get(*head) {
                        Some(v) => walk(v, tail, out),
                        None => out.push(None),
                    }
                }
            }
            if out.len() == before {
                out.push(None);
            }
        }
        _ => out.push(None),
    }
}

/// The single value at a path without array expansion (numeric components index arrays).
pub fn get_path<'a>(doc: &'a Document, path: &str) -> Option<&'a Value> {
    let mut parts = path.split('.');
    let mut current = doc.get(parts.next()?)?;
    for part in parts {
        current = match current {
            Value::Object(d) => d.get(part)?,
            Value::Array(items) => items.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: serde_json::Value) -> Document {
        match Value::from_json(json).unwrap() {
            Value::Object(d) => d,
            _ => unreachable!(),
        }
    }

    #[test]
    fn arrays_are_traversed() {
        let d = doc(serde_json::json!({"a": [{"b": 1}, {"c": 2}, {"b": [3]}]}));
        let got: Vec<Option<String>> = lookup(&d, "a.b")
            .into_iter()
            .map(|b| b.map(Value::to_ejson_string))
            .collect();
        assert_eq!(got, vec![Some("1".into()), None, Some("[3]".into())]);
        assert_eq!(
            get_path(&d, "a.2.b").map(Value::to_ejson_string),
            Some("[3]".into())
        );
        assert_eq!(lookup(&d, "x"), vec![None]);
    }
}
