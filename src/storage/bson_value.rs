//! Conversion between EJSON values and BSON, for the MongoDB backend.
//!
//! Numbers follow the Node driver Meteor uses: an integral value in the 32-bit range is stored
//! as `int32`, anything else as `double`, so documents written by comet and by a Meteor server
//! look alike. Reading goes through canonical Extended JSON and [`from_extended_json`], the
//! same path change events take, so a document read by `find` and the same document in a
//! change event are equal value for value.

use super::normalize::from_extended_json;
use crate::model::{Document, Value};
use mongodb::bson::{self, Bson};

/// An EJSON value as BSON.
pub fn to_bson(value: &Value) -> Bson {
    match value {
        Value::Null => Bson::Null,
        Value::Bool(b) => Bson::Boolean(*b),
        Value::Number(n) => {
            let integral = n.fract() == 0.0
                && *n >= f64::from(i32::MIN)
                && *n <= f64::from(i32::MAX)
                && !(*n == 0.0 && n.is_sign_negative());
            if integral {
                Bson::Int32(*n as i32)
            } else {
                Bson::Double(*n)
            }
        }
        Value::String(s) => Bson::String(s.clone()),
        Value::Array(items) => Bson::Array(items.iter().map(to_bson).collect()),
        Value::Object(doc) => Bson::Document(to_bson_document(doc)),
        // An invalid date has no BSON form; null is what a JavaScript driver stores for it.
        Value::Date(ms) if ms.is_nan() => Bson::Null,
        Value::Date(ms) => Bson::DateTime(bson::DateTime::from_millis(*ms as i64)),
        Value::Binary { subtype, bytes } => Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::from(*subtype),
            bytes: bytes.clone(),
        }),
        Value::ObjectId(oid) => Bson::ObjectId(bson::oid::ObjectId::from_bytes(oid.0)),
        Value::Regex { pattern, flags } => {
            let mut options: Vec<char> = flags.chars().collect();
            options.sort_unstable();
            Bson::RegularExpression(bson::Regex {
                pattern: pattern.clone(),
                options: options.into_iter().collect(),
            })
        }
        Value::Long(n) => Bson::Int64(*n),
        Value::Decimal(text) => match text.parse::<bson::Decimal128>() {
            Ok(d) => Bson::Decimal128(d),
            Err(_) => Bson::String(text.clone()),
        },
    }
}

/// A document as BSON.
pub fn to_bson_document(doc: &Document) -> bson::Document {
    doc.iter().map(|(k, v)| (k.clone(), to_bson(v))).collect()
}

/// A BSON value as EJSON.
pub fn from_bson(value: Bson) -> Result<Value, String> {
    from_extended_json(&value.into_canonical_extjson())
}

/// A BSON document as an EJSON document.
pub fn from_bson_document(doc: bson::Document) -> Result<Document, String> {
    match from_bson(Bson::Document(doc))? {
        Value::Object(d) => Ok(d),
        other => Err(format!("expected a document, got {}", other.type_name())),
    }
}

/// A BSON timestamp packed into one ordered number (seconds high, increment low): the
/// sequence number of MongoDB changes and writes.
pub fn timestamp_seq(ts: bson::Timestamp) -> u64 {
    (u64::from(ts.time) << 32) | u64::from(ts.increment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectId;

    fn round_trip(v: Value) -> Value {
        from_bson(to_bson(&v)).unwrap()
    }

    #[test]
    fn values_survive_a_round_trip() {
        let cases = vec![
            Value::Null,
            Value::Bool(true),
            Value::Number(42.0),
            Value::Number(-0.5),
            Value::Number(1e300),
            Value::Number(4_000_000_000.0),
            Value::String("héllo".into()),
            Value::Date(1_700_000_000_123.0),
            Value::binary(vec![0, 1, 255]),
            Value::Binary {
                subtype: 4,
                bytes: vec![7; 16],
            },
            Value::ObjectId(ObjectId([7; 12])),
            Value::Regex {
                pattern: "^a.c$".into(),
                flags: "mi".into(),
            },
            Value::Decimal("1.5".into()),
            Value::Array(vec![Value::Number(1.0), Value::String("x".into())]),
        ];
        let uuid = Value::Binary {
            subtype: 4,
            bytes: vec![7; 16],
        };
        assert_eq!(round_trip(uuid.clone()), uuid, "the subtype survives");
        let stored = Bson::Binary(bson::Binary {
            subtype: bson::spec::BinarySubtype::Uuid,
            bytes: vec![9; 16],
        });
        assert_eq!(
            to_bson(&from_bson(stored.clone()).expect("decodes")),
            stored,
            "a UUID read from the store is written back as a UUID"
        );
        for v in cases {
            let back = round_trip(v.clone());
            match (&v, &back) {
                (Value::Regex { pattern, .. }, Value::Regex { pattern: p2, flags }) => {
                    assert_eq!(pattern, p2);
                    assert_eq!(flags, "im", "options are stored sorted");
                }
                _ => assert_eq!(
                    v.to_ejson_string(),
                    back.to_ejson_string(),
                    "round trip of {v:?}"
                ),
            }
        }
    }

    #[test]
    fn integers_are_int32_when_they_fit_and_doubles_otherwise() {
        assert_eq!(to_bson(&Value::Number(7.0)), Bson::Int32(7));
        assert_eq!(to_bson(&Value::Number(7.5)), Bson::Double(7.5));
        assert_eq!(to_bson(&Value::Number(3e9)), Bson::Double(3e9));
        assert_eq!(to_bson(&Value::Number(-0.0)), Bson::Double(-0.0));
    }

    #[test]
    fn int64_beyond_two_to_the_53_round_trips_exactly() {
        let big = (1i64 << 53) + 1;
        let read = from_bson(Bson::Int64(big)).expect("decodes");
        assert_eq!(read, Value::Long(big), "not rounded to a double");
        assert_eq!(
            to_bson(&read),
            Bson::Int64(big),
            "written back as the same int64"
        );
        assert_eq!(
            read.to_ejson_string(),
            format!(r#"{{"$numberLong":"{big}"}}"#)
        );
        assert_eq!(
            from_bson(Bson::Int64(42)).expect("decodes"),
            Value::Number(42.0),
            "a small int64 is a plain number for clients"
        );
        assert_eq!(to_bson(&Value::Long(i64::MIN)), Bson::Int64(i64::MIN));
    }

    #[test]
    fn documents_keep_field_order() {
        let doc: Document = [
            ("b".to_owned(), Value::Number(1.0)),
            ("a".to_owned(), Value::Number(2.0)),
        ]
        .into_iter()
        .collect();
        let back = from_bson_document(to_bson_document(&doc)).unwrap();
        assert_eq!(back.keys().collect::<Vec<_>>(), vec!["b", "a"]);
    }

    #[test]
    fn timestamps_pack_in_order() {
        let a = timestamp_seq(bson::Timestamp {
            time: 10,
            increment: 5,
        });
        let b = timestamp_seq(bson::Timestamp {
            time: 11,
            increment: 1,
        });
        assert!(a < b);
        assert_eq!(a, (10 << 32) | 5);
    }
}
