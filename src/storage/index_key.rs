//! Index keys for the embedded store: a field's value encoded as bytes whose order (SQLite
//! compares BLOBs bytewise, shorter first on a common prefix) is MongoDB's order of values,
//! as [`crate::model::query::compare::compare`] defines it.
//!
//! Only scalars get a key. A field that holds an array or an embedded document in some
//! document (or whose path crosses an array) is "complex": MongoDB's multikey matching and
//! array sort order cannot be read off one key, so the store stops using that field's
//! index and applies the matcher to every document instead.

use crate::model::query::compare::type_rank;
use crate::model::{Document, Value};

/// A field's key in one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FieldKey {
    /// The encoded scalar (missing encodes as null, as MongoDB sorts it).
    Key(Vec<u8>),
    /// An array or document: this field's index can no longer be trusted.
    Complex,
}

/// The key of `path` (dotted) in `doc`.
pub fn field_key(doc: &Document, path: &str) -> FieldKey {
    let mut parts = path.split('.');
    let Some(first) = parts.next() else {
        return FieldKey::Complex;
    };
    let mut current = doc.get(first);
    for part in parts {
        current = match current {
            None => None,
            Some(Value::Object(inner)) => inner.get(part),
            Some(Value::Array(_)) => return FieldKey::Complex,
            // A scalar has no fields: the path is missing.
            Some(_) => None,
        };
    }
    match current {
        None => FieldKey::Key(vec![type_rank(&Value::Null)]),
        Some(v) => encode(v).map_or(FieldKey::Complex, FieldKey::Key),
    }
}

/// The key of one scalar value; `None` for arrays, documents and regular expressions.
pub fn encode(value: &Value) -> Option<Vec<u8>> {
    let mut out = vec![type_rank(value)];
    match value {
        Value::Null => {}
        Value::Number(n) => out.extend(number_bytes(*n)),
        Value::Decimal(text) => out.extend(number_bytes(text.parse().unwrap_or(f64::NAN))),
        Value::Long(n) => {
            // The largest double not above the integer, then how far above it the integer
            // lies: a double equal to the integer keys the same, one between two integers
            // that round alike keys between them.
            let mut below = *n as f64;
            if below as i128 > i128::from(*n) {
                below = below.next_down();
            }
            out.extend(number_bytes(below));
            let above = (i128::from(*n) - below as i128) as u64;
            if above > 0 {
                out.extend(above.to_be_bytes());
            }
        }
        Value::String(s) => out.extend_from_slice(s.as_bytes()),
        Value::Binary { subtype, bytes } => {
            // Binary data orders by length, then subtype, then bytes.
            out.extend((bytes.len() as u64).to_be_bytes());
            out.push(*subtype);
            out.extend_from_slice(bytes);
        }
        Value::ObjectId(oid) => out.extend_from_slice(&oid.0),
        Value::Bool(b) => out.push(u8::from(*b)),
        Value::Date(ms) => out.extend(total_order_bytes(*ms)),
        Value::Array(_) | Value::Object(_) | Value::Regex { .. } => return None,
    }
    Some(out)
}

/// The smallest key of the type after `value`'s: the exclusive end of its type's range.
pub fn type_end(value: &Value) -> Vec<u8> {
    vec![type_rank(value) + 1]
}

/// The smallest key of `value`'s type.
pub fn type_start(value: &Value) -> Vec<u8> {
    vec![type_rank(value)]
}

/// Numbers: NaN below every number, -0 equal to 0, as MongoDB compares them.
fn number_bytes(n: f64) -> [u8; 8] {
    if n.is_nan() {
        return [0; 8];
    }
    let n = if n == 0.0 { 0.0 } else { n };
    total_order_bytes(n)
}

/// `f64::total_cmp` order as bytes.
fn total_order_bytes(n: f64) -> [u8; 8] {
    let bits = n.to_bits();
    let ordered = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    ordered.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::compare::compare;
    use crate::model::ObjectId;
    use proptest::prelude::*;

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<f64>().prop_map(Value::Number),
            prop_oneof![Just(0.0), Just(-0.0), Just(1.5), Just(-2.0)].prop_map(Value::Number),
            // Integers beyond 2^53 and the doubles around them.
            any::<i64>().prop_map(Value::integer),
            (
                -(1i64 << 12)..(1i64 << 12),
                prop_oneof![
                    Just(1i64 << 53),
                    Just(1i64 << 62),
                    Just(i64::MAX),
                    Just(-(1i64 << 60))
                ]
            )
                .prop_map(|(d, base)| Value::integer(base.saturating_add(d))),
            (
                -(1i64 << 12)..(1i64 << 12),
                prop_oneof![Just(1i64 << 53), Just(1i64 << 62), Just(-(1i64 << 60))]
            )
                .prop_map(|(d, base)| Value::Number((base + d) as f64)),
            "[a-c\u{e9}]{0,4}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            (-1e12f64..1e12).prop_map(Value::Date),
            proptest::collection::vec(any::<u8>(), 0..4).prop_map(Value::binary),
            any::<[u8; 12]>().prop_map(|b| Value::ObjectId(ObjectId(b))),
        ]
    }

    proptest! {
        #[test]
        fn key_order_is_mongodb_order(a in scalar(), b in scalar()) {
            let (ka, kb) = (encode(&a).unwrap(), encode(&b).unwrap());
            prop_assert_eq!(ka.cmp(&kb), compare(&a, &b), "{:?} vs {:?}", a, b);
        }

        #[test]
        fn every_key_lies_within_its_type_range(a in scalar()) {
            let k = encode(&a).unwrap();
            prop_assert!(k >= type_start(&a) && k < type_end(&a));
        }
    }

    #[test]
    fn missing_fields_key_as_null_and_arrays_are_complex() {
        let Value::Object(doc) = Value::from_json(serde_json::json!({
            "a": 1, "u": {"_id": "x"}, "tags": ["p"], "list": [{"b": 1}]
        }))
        .unwrap() else {
            unreachable!()
        };
        assert_eq!(
            field_key(&doc, "nope"),
            FieldKey::Key(encode(&Value::Null).unwrap())
        );
        assert_eq!(
            field_key(&doc, "a.b"),
            FieldKey::Key(encode(&Value::Null).unwrap())
        );
        assert_eq!(
            field_key(&doc, "u._id"),
            FieldKey::Key(encode(&"x".into()).unwrap())
        );
        assert_eq!(field_key(&doc, "tags"), FieldKey::Complex);
        assert_eq!(field_key(&doc, "list.b"), FieldKey::Complex);
        assert_eq!(field_key(&doc, "u"), FieldKey::Complex);
    }
}
