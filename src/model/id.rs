//! Document ids and how they travel in DDP's `id` fields (Meteor's `idStringify`/`idParse`).
//!
//! Owns the mapping between a document's `_id` value and the string a client sees. It must not
//! know about messages or sessions. See `protocol-spec/behavior.md#ids`.

use super::value::{ObjectId, Value};

/// Why a value cannot be a document id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a document id cannot be of type {0}")]
pub struct IdError(pub &'static str);

fn is_lower_hex_24(s: &str) -> bool {
    s.len() == 24
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The DDP wire form of an `_id`.
pub fn id_to_wire(id: &Value) -> Result<String, IdError> {
    Ok(match id {
        Value::String(s) if s.is_empty() => String::new(),
        Value::String(s) => {
            let first = s.as_bytes()[0];
            if first == b'-' || first == b'~' || first == b'{' || is_lower_hex_24(s) {
                format!("-{s}")
            } else {
                s.clone()
            }
        }
        Value::ObjectId(oid) => oid.to_hex(),
        Value::Number(_) | Value::Bool(_) | Value::Null => {
            let mut out = String::from("~");
            super::value::write_ejson(id, &mut out);
            out
        }
        other => return Err(IdError(other.type_name())),
    })
}

/// The `_id` a DDP wire id stands for.
pub fn id_from_wire(wire: &str) -> Value {
    if let Some(rest) = wire.strip_prefix('-') {
        return Value::String(rest.to_owned());
    }
    if let Some(rest) = wire.strip_prefix('~') {
        return match serde_json::from_str::<serde_json::Value>(rest) {
            Ok(json) => Value::from_plain_json(json),
            Err(_) => Value::String(wire.to_owned()),
        };
    }
    if is_lower_hex_24(wire) {
        if let Some(oid) = ObjectId::parse_hex(wire) {
            return Value::ObjectId(oid);
        }
    }
    Value::String(wire.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_follow_meteor_escaping() {
        let oid = Value::ObjectId(ObjectId::parse_hex("5f1d7a2b9c1e4a0012345678").unwrap());
        let cases = [
            (oid, "5f1d7a2b9c1e4a0012345678"),
            (Value::from("-x"), "--x"),
            (Value::from("~x"), "-~x"),
            (Value::from("{x"), "-{x"),
            (
                Value::from("5f1d7a2b9c1e4a0012345678"),
                "-5f1d7a2b9c1e4a0012345678",
            ),
            (
                Value::from("5F1D7A2B9C1E4A0012345678"),
                "5F1D7A2B9C1E4A0012345678",
            ),
            (Value::from("abc"), "abc"),
            (Value::from(""), ""),
            (Value::Number(5.0), "~5"),
            (Value::Bool(true), "~true"),
            (Value::Null, "~null"),
        ];
        for (id, wire) in cases {
            assert_eq!(id_to_wire(&id).unwrap(), wire);
            assert_eq!(id_from_wire(wire), id, "parsing {wire}");
        }
    }

    #[test]
    fn objects_cannot_be_ids() {
        assert_eq!(
            id_to_wire(&Value::Object(Default::default())),
            Err(IdError("object"))
        );
    }
}
