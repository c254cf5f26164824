//! EJSON values: the document model every layer shares.
//!
//! Owns the in-memory form of Meteor's EJSON (`$date`, `$binary`, `$InfNaN`, `$regexp`,
//! `$type`/`$value` for ObjectId and Decimal, `$escape`, and `$numberLong` for integers a
//! JavaScript number cannot hold), its decoding from parsed JSON and
//! its encoding to wire text. It must not know about DDP messages or I/O.
//! See `protocol-spec/behavior.md#ejson`.

use base64::Engine as _;
use indexmap::IndexMap;
use std::fmt::Write as _;
use std::sync::Arc;

/// An ordered document: insertion order is kept, as Meteor and MongoDB keep it.
pub type Document = IndexMap<String, Value, foldhash::fast::RandomState>;

/// A 12-byte MongoDB ObjectId.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 12]);

impl ObjectId {
    /// Parses 24 hexadecimal digits (either case).
    pub fn parse_hex(text: &str) -> Option<Self> {
        if text.len() != 24 {
            return None;
        }
        let mut out = [0u8; 12];
        for (i, chunk) in text.as_bytes().chunks(2).enumerate() {
            let hi = (chunk[0] as char).to_digit(16)?;
            let lo = (chunk[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    /// Lowercase hexadecimal form, as Meteor writes it.
    pub fn to_hex(&self) -> String {
        let mut s = String::with_capacity(24);
        for b in self.0 {
            let _ = write!(s, "{b:02x}");
        }
        s
    }
}

/// One EJSON value.
#[derive(Clone, Debug)]
pub enum Value {
    Null,
    Bool(bool),
    /// Every JSON number is a JavaScript number: an `f64`. NaN and infinities travel as `$InfNaN`.
    Number(f64),
    String(String),
    Array(Vec<Value>),
    Object(Document),
    /// Milliseconds since the epoch; NaN is an invalid date (`{"$date":null}`).
    Date(f64),
    /// Binary data and its BSON subtype (0: generic; 4: a UUID). Clients see `$binary`, which
    /// has no subtype; the store gets the subtype back, so a UUID `_id` still matches.
    Binary {
        subtype: u8,
        bytes: Vec<u8>,
    },
    ObjectId(ObjectId),
    Regex {
        pattern: String,
        flags: String,
    },
    /// Decimal128 as Meteor's mongo-decimal writes it: the decimal's text.
    Decimal(String),
    /// A 64-bit integer beyond ±2^53, which a JavaScript number would round. Only
    /// [`Value::integer`] makes one, so a smaller integer is always a `Number` and each
    /// integer has one form. Clients see `{"$numberLong": "<digits>"}`, a plain object to
    /// Meteor's EJSON that keeps every digit; the store gets the exact int64 back.
    Long(i64),
}

/// The largest integer a JavaScript number holds exactly (`Number.MAX_SAFE_INTEGER` + 1).
pub const SAFE_INTEGER_LIMIT: i64 = 1 << 53;

/// Why an EJSON text could not be decoded. Each maps to DDP's "Parse error".
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EjsonError {
    #[error("custom EJSON type {0} is not defined")]
    UnknownType(String),
    #[error("invalid {0} value")]
    InvalidValue(&'static str),
    #[error("nesting deeper than {0} levels")]
    TooDeep(usize),
}

/// Deepest nesting accepted when decoding; JSON parsing already stops at 128.
pub const MAX_DEPTH: usize = 200;

impl Value {
    /// Decodes parsed JSON into EJSON values, interpreting the `$`-forms.
    pub fn from_json(json: serde_json::Value) -> Result<Self, EjsonError> {
        decode(json, 0)
    }

    /// Plain JSON conversion with no EJSON interpretation (used for `details` and
    /// `offendingMessage`, which Meteor leaves as plain JSON).
    pub fn from_plain_json(json: serde_json::Value) -> Self {
        match json {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => Value::Number(n.as_f64().unwrap_or(f64::NAN)),
            serde_json::Value::String(s) => Value::String(s),
            serde_json::Value::Array(items) => {
                Value::Array(items.into_iter().map(Value::from_plain_json).collect())
            }
            serde_json::Value::Object(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k, Value::from_plain_json(v)))
                    .collect(),
            ),
        }
    }

    /// EJSON wire text.
    pub fn to_ejson_string(&self) -> String {
        let mut out = String::new();
        write_ejson(self, &mut out);
        out
    }

    /// An integer in its one form: a `Number` when a JavaScript number holds it exactly,
    /// else a `Long`.
    pub fn integer(n: i64) -> Self {
        if (-SAFE_INTEGER_LIMIT..=SAFE_INTEGER_LIMIT).contains(&n) {
            Value::Number(n as f64)
        } else {
            Value::Long(n)
        }
    }

    /// Generic binary data (subtype 0), as EJSON's `$binary` decodes.
    pub fn binary(bytes: Vec<u8>) -> Self {
        Value::Binary { subtype: 0, bytes }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// A number's value; an int64 beyond 2^53 rounded to the nearest double.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            Value::Long(n) => Some(*n as f64),
            _ => None,
        }
    }

    /// An integer's exact value: a `Long`, or a `Number` that is a whole number a JavaScript
    /// number holds exactly.
    pub fn as_exact_integer(&self) -> Option<i64> {
        match self {
            Value::Long(n) => Some(*n),
            Value::Number(n) if n.fract() == 0.0 && n.abs() <= SAFE_INTEGER_LIMIT as f64 => {
                Some(*n as i64)
            }
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Document> {
        match self {
            Value::Object(d) => Some(d),
            _ => None,
        }
    }

    /// Name of the value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Date(_) => "date",
            Value::Binary { .. } => "binData",
            Value::ObjectId(_) => "objectId",
            Value::Regex { .. } => "regex",
            Value::Decimal(_) => "decimal",
            Value::Long(_) => "long",
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<f64> for Value {
    fn from(n: f64) -> Self {
        Value::Number(n)
    }
}
impl From<i64> for Value {
    fn from(n: i64) -> Self {
        Value::integer(n)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Document> for Value {
    fn from(d: Document) -> Self {
        Value::Object(d)
    }
}
impl From<Vec<Value>> for Value {
    fn from(v: Vec<Value>) -> Self {
        Value::Array(v)
    }
}

/// EJSON equality as `EJSON.equals` defines it: key order ignored, NaN equals NaN,
/// dates by time, binaries bytewise.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Number(a), Value::Number(b)) => a == b || (a.is_nan() && b.is_nan()),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            (Value::Object(a), Value::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| b.get(k) == Some(v))
            }
            (Value::Date(a), Value::Date(b)) => a == b || (a.is_nan() && b.is_nan()),
            (
                Value::Binary {
                    subtype: s1,
                    bytes: a,
                },
                Value::Binary {
                    subtype: s2,
                    bytes: b,
                },
            ) => s1 == s2 && a == b,
            (Value::ObjectId(a), Value::ObjectId(b)) => a == b,
            (
                Value::Regex {
                    pattern: p1,
                    flags: f1,
                },
                Value::Regex {
                    pattern: p2,
                    flags: f2,
                },
            ) => p1 == p2 && f1 == f2,
            (Value::Decimal(a), Value::Decimal(b)) => a == b,
            (Value::Long(a), Value::Long(b)) => a == b,
            _ => false,
        }
    }
}

fn is_candidate(map: &serde_json::Map<String, serde_json::Value>) -> bool {
    !map.is_empty() && map.len() <= 2 && map.keys().all(|k| k.starts_with('$'))
}

fn decode(json: serde_json::Value, depth: usize) -> Result<Value, EjsonError> {
    if depth > MAX_DEPTH {
        return Err(EjsonError::TooDeep(MAX_DEPTH));
    }
    Ok(match json {
        serde_json::Value::Object(map) => {
            if is_candidate(&map) {
                if let Some(v) = decode_special(&map, depth)? {
                    return Ok(v);
                }
            }
            let mut doc = Document::with_capacity_and_hasher(map.len(), Default::default());
            for (k, v) in map {
                doc.insert(k, decode(v, depth + 1)?);
            }
            Value::Object(doc)
        }
        serde_json::Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| decode(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        other => Value::from_plain_json(other),
    })
}

/// Decodes the `$`-forms; `None` when the object is an ordinary one.
fn decode_special(
    map: &serde_json::Map<String, serde_json::Value>,
    depth: usize,
) -> Result<Option<Value>, EjsonError> {
    let one = map.len() == 1;
    if one {
        if let Some(v) = map.get("$date") {
            return Ok(Some(Value::Date(match v {
                serde_json::Value::Number(n) => {
                    let ms = n.as_f64().unwrap_or(f64::NAN);
                    // JavaScript's Date holds ±8.64e15 ms; beyond it a client cannot build one.
                    if ms.abs() > MAX_DATE_MS {
                        return Err(EjsonError::InvalidValue("$date"));
                    }
                    ms
                }
                _ => f64::NAN,
            })));
        }
        if map.contains_key("$regexp") {
            // A `$regexp` without `$flags` is no EJSON value and no usable document either.
            return Err(EjsonError::InvalidValue("$regexp"));
        }
    }
    if map.len() == 2 {
        if let (Some(p), Some(f)) = (map.get("$regexp"), map.get("$flags")) {
            let (Some(pattern), Some(flags)) = (p.as_str(), f.as_str()) else {
                return Err(EjsonError::InvalidValue("$regexp"));
            };
            if !is_javascript_regexp(pattern) {
                return Err(EjsonError::InvalidValue("$regexp"));
            }
            return Ok(Some(Value::Regex {
                pattern: pattern.to_owned(),
                flags: sanitize_regex_flags(flags),
            }));
        }
    }
    if one {
        if let Some(v) = map.get("$InfNaN") {
            let sign = v.as_f64().ok_or(EjsonError::InvalidValue("$InfNaN"))?;
            return Ok(Some(Value::Number(if sign > 0.0 {
                f64::INFINITY
            } else if sign < 0.0 {
                f64::NEG_INFINITY
            } else {
                f64::NAN
            })));
        }
        if let Some(v) = map.get("$binary") {
            let text = v.as_str().ok_or(EjsonError::InvalidValue("$binary"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|_| EjsonError::InvalidValue("$binary"))?;
            return Ok(Some(Value::binary(bytes)));
        }
        if let Some(serde_json::Value::String(digits)) = map.get("$numberLong") {
            return digits
                .parse::<i64>()
                .map(|n| Some(Value::integer(n)))
                .map_err(|_| EjsonError::InvalidValue("$numberLong"));
        }
        if let Some(v) = map.get("$escape") {
            let serde_json::Value::Object(inner) = v else {
                return Err(EjsonError::InvalidValue("$escape"));
            };
            let mut doc = Document::with_capacity_and_hasher(inner.len(), Default::default());
            for (k, v) in inner {
                doc.insert(k.clone(), decode(v.clone(), depth + 1)?);
            }
            return Ok(Some(Value::Object(doc)));
        }
    }
    if map.len() == 2 {
        if let (Some(t), Some(v)) = (map.get("$type"), map.get("$value")) {
            let type_name = t.as_str().ok_or(EjsonError::InvalidValue("$type"))?;
            return match (type_name, v) {
                ("oid", serde_json::Value::String(hex)) => ObjectId::parse_hex(hex)
                    .map(|oid| Some(Value::ObjectId(oid)))
                    .ok_or(EjsonError::InvalidValue("oid")),
                ("oid", _) => Err(EjsonError::InvalidValue("oid")),
                ("Decimal", serde_json::Value::String(text)) => {
                    Ok(Some(Value::Decimal(text.clone())))
                }
                ("Decimal", _) => Err(EjsonError::InvalidValue("Decimal")),
                (other, _) => Err(EjsonError::UnknownType(other.to_owned())),
            };
        }
    }
    Ok(None)
}

/// Meteor keeps at most 50 characters of flags, only `gimuy`, each once.
/// The largest distance from the epoch a JavaScript `Date` can hold, in milliseconds.
pub const MAX_DATE_MS: f64 = 8.64e15;

/// Whether `pattern` is a regular expression a JavaScript client could have built, as far as
/// its syntax goes: look-around and back-references are JavaScript (which comet's matcher
/// refuses later with its own message), an unclosed group or a stray quantifier is not.
fn is_javascript_regexp(pattern: &str) -> bool {
    use regex_syntax::ast::ErrorKind;
    match regex_syntax::ast::parse::Parser::new().parse(pattern) {
        Ok(_) => true,
        Err(e) => matches!(
            e.kind(),
            ErrorKind::UnsupportedLookAround
                | ErrorKind::UnsupportedBackreference
                | ErrorKind::EscapeUnrecognized
                | ErrorKind::GroupNameInvalid
                | ErrorKind::FlagUnrecognized
        ),
    }
}

fn sanitize_regex_flags(flags: &str) -> String {
    let mut out = String::new();
    for c in flags.chars().take(50) {
        if "gimuy".contains(c) && !out.contains(c) {
            out.push(c);
        }
    }
    out
}

/// Whether a plain object would be mistaken for an EJSON form on the way back, and so must
/// travel inside `$escape`.
fn needs_escape(doc: &Document) -> bool {
    if doc.is_empty() || doc.len() > 2 || !doc.keys().all(|k| k.starts_with('$')) {
        return false;
    }
    let has = |k: &str| doc.contains_key(k);
    match doc.len() {
        1 => {
            has("$date")
                || has("$regexp")
                || has("$InfNaN")
                || has("$binary")
                || has("$escape")
                || matches!(doc.get("$numberLong"), Some(Value::String(_)))
        }
        _ => (has("$regexp") && has("$flags")) || (has("$type") && has("$value")),
    }
}

/// Writes EJSON wire text.
pub fn write_ejson(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_finite() {
                write_number(*n, out)
            } else {
                let sign = if n.is_nan() {
                    "0"
                } else if *n > 0.0 {
                    "1"
                } else {
                    "-1"
                };
                out.push_str("{\"$InfNaN\":");
                out.push_str(sign);
                out.push('}');
            }
        }
        Value::String(s) => write_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_ejson(item, out);
            }
            out.push(']');
        }
        Value::Object(doc) => {
            if needs_escape(doc) {
                out.push_str("{\"$escape\":");
                write_object(doc, out);
                out.push('}');
            } else {
                write_object(doc, out);
            }
        }
        Value::Date(ms) => {
            out.push_str("{\"$date\":");
            if ms.is_finite() {
                write_number(*ms, out);
            } else {
                out.push_str("null");
            }
            out.push('}');
        }
        Value::Binary { bytes, .. } => {
            out.push_str("{\"$binary\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push_str("\"}");
        }
        Value::ObjectId(oid) => {
            out.push_str("{\"$type\":\"oid\",\"$value\":\"");
            out.push_str(&oid.to_hex());
            out.push_str("\"}");
        }
        Value::Regex { pattern, flags } => {
            out.push_str("{\"$regexp\":");
            write_str(pattern, out);
            out.push_str(",\"$flags\":");
            write_str(flags, out);
            out.push('}');
        }
        Value::Decimal(text) => {
            out.push_str("{\"$type\":\"Decimal\",\"$value\":");
            write_str(text, out);
            out.push('}');
        }
        Value::Long(n) => {
            let _ = write!(out, "{{\"$numberLong\":\"{n}\"}}");
        }
    }
}

/// Writes an object's members as EJSON, in insertion order.
pub fn write_object(doc: &Document, out: &mut String) {
    out.push('{');
    for (i, (k, v)) in doc.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(k, out);
        out.push(':');
        write_ejson(v, out);
    }
    out.push('}');
}

/// Writes a number as JavaScript's `JSON.stringify` would for a finite number
/// (`1`, not `1.0`; `-0` as `0`).
pub fn write_number(n: f64, out: &mut String) {
    if n == 0.0 {
        out.push('0');
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        if n.abs() < 9.007_199_254_740_992e15 {
            let _ = write!(out, "{}", n as i64);
        } else {
            let _ = write!(out, "{n}");
        }
    } else if n.abs() >= 1e21 || n.abs() < 1e-6 {
        let _ = write!(out, "{n:e}");
    } else {
        let _ = write!(out, "{n}");
    }
}

/// Writes a JSON string literal with the escapes `JSON.stringify` uses.
pub fn write_str(s: &str, out: &mut String) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => None,
            _ => continue,
        };
        out.push_str(&s[start..i]);
        match escape {
            Some(e) => out.push_str(e),
            None => {
                let _ = write!(out, "\\u{b:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Writes plain JSON (no EJSON forms): used for `details` and `offendingMessage`.
pub fn write_plain_json(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Null => out.push_str("null"),
        serde_json::Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => write_number(f, out),
            _ => {
                let _ = write!(out, "{n}");
            }
        },
        serde_json::Value::String(s) => write_str(s, out),
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_plain_json(item, out);
            }
            out.push(']');
        }
        serde_json::Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(k, out);
                out.push(':');
                write_plain_json(v, out);
            }
            out.push('}');
        }
    }
}

/// A document shared between every session that publishes it.
pub type SharedDocument = Arc<Document>;

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(text: &str) -> String {
        let json: serde_json::Value = serde_json::from_str(text).unwrap();
        Value::from_json(json).unwrap().to_ejson_string()
    }

    #[test]
    fn ejson_forms_round_trip_exactly() {
        for text in [
            r#"{"$date":5}"#,
            r#"{"$binary":"AAEC"}"#,
            r#"{"$InfNaN":-1}"#,
            r#"{"$InfNaN":1}"#,
            r#"{"$InfNaN":0}"#,
            r#"{"$escape":{"$date":1}}"#,
            r#"{"$type":"oid","$value":"5f1d7a2b9c1e4a0012345678"}"#,
            r#"{"$type":"Decimal","$value":"1.50"}"#,
            r#"{"$regexp":"a.b","$flags":"gi"}"#,
            r#"{"a":[1,2.5,"x",null,true,{"$date":0}]}"#,
            r#"{"$set":{"a":1}}"#,
        ] {
            assert_eq!(round_trip(text), text);
        }
    }

    #[test]
    fn escaped_date_key_holds_a_real_date() {
        let json = serde_json::json!({"$escape": {"$date": {"$date": 32491}}});
        let value = Value::from_json(json).unwrap();
        let doc = value.as_object().unwrap();
        assert!(matches!(doc.get("$date"), Some(Value::Date(ms)) if *ms == 32491.0));
    }

    #[test]
    fn an_escaped_lone_regexp_key_stays_escaped() {
        // Found by the property test: `{"$regexp": null}` alone is refused when decoded, so
        // a user object of that shape must travel inside `$escape`.
        let text = r#"{"$escape":{"$regexp":null}}"#;
        assert_eq!(round_trip(text), text);
    }

    #[test]
    fn unknown_custom_type_is_an_error() {
        let json = serde_json::json!({"$type": "nope", "$value": 1});
        assert_eq!(
            Value::from_json(json),
            Err(EjsonError::UnknownType("nope".into()))
        );
    }

    #[test]
    fn bad_binary_is_an_error() {
        let json = serde_json::json!({"$binary": "***"});
        assert_eq!(
            Value::from_json(json),
            Err(EjsonError::InvalidValue("$binary"))
        );
    }

    #[test]
    fn numbers_print_like_javascript() {
        let mut s = String::new();
        for n in [1.0, -0.0, 2.5, 1e21, 123456789012.0, -3.0, 1e-7] {
            write_number(n, &mut s);
            s.push(' ');
        }
        assert_eq!(s, "1 0 2.5 1e21 123456789012 -3 1e-7 ");
    }

    #[test]
    fn strings_escape_control_characters() {
        let mut s = String::new();
        write_str("a\"b\\c\n\u{1}é", &mut s);
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
    }

    #[test]
    fn equality_ignores_key_order_and_treats_nan_as_equal() {
        let a = Value::from_json(serde_json::json!({"a": 1, "b": {"$InfNaN": 0}})).unwrap();
        let b = Value::from_json(serde_json::json!({"b": {"$InfNaN": 0}, "a": 1})).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn dates_beyond_javascript_and_broken_patterns_are_refused() {
        for bad in [
            serde_json::json!({"$date": 1e300}),
            serde_json::json!({"$date": -8.7e15}),
            serde_json::json!({"a": [{"$date": 9e15}]}),
            serde_json::json!({"$regexp": "(", "$flags": ""}),
            serde_json::json!({"$regexp": "*a", "$flags": "g"}),
            serde_json::json!({"$regexp": "[b-a]", "$flags": ""}),
            serde_json::json!({"$regexp": "("}),
            serde_json::json!({"$regexp": "a"}),
        ] {
            assert!(Value::from_json(bad.clone()).is_err(), "{bad}");
        }
        for good in [
            serde_json::json!({"$date": 8.64e15}),
            serde_json::json!({"$date": -8.64e15}),
            serde_json::json!({"$regexp": "(?<=a)b", "$flags": ""}),
            serde_json::json!({"$regexp": "(a)\\1", "$flags": "i"}),
            serde_json::json!({"$regexp": "^[a-z]+$", "$flags": "i"}),
        ] {
            assert!(Value::from_json(good.clone()).is_ok(), "{good}");
        }
    }

    #[test]
    fn number_long_keeps_every_digit_and_small_ones_are_numbers() {
        let text = r#"{"a":{"$numberLong":"9007199254740993"},"b":{"$numberLong":"-9223372036854775808"}}"#;
        assert_eq!(round_trip(text), text);
        let v = Value::from_json(serde_json::from_str(text).unwrap()).unwrap();
        assert_eq!(
            v.as_object().and_then(|d| d.get("a")),
            Some(&Value::Long(9_007_199_254_740_993))
        );
        assert_eq!(round_trip(r#"{"$numberLong":"12"}"#), "12");
        assert_eq!(
            Value::from_json(serde_json::json!({"$numberLong": "1e3"})),
            Err(EjsonError::InvalidValue("$numberLong"))
        );
        assert_eq!(
            round_trip(r#"{"$numberLong":5}"#),
            r#"{"$numberLong":5}"#,
            "only the digits form is special"
        );
        let mut plain = Document::default();
        plain.insert("$numberLong".into(), Value::from("12"));
        assert_eq!(
            Value::Object(plain).to_ejson_string(),
            r#"{"$escape":{"$numberLong":"12"}}"#,
            "a plain object of that shape travels escaped"
        );
    }

    #[test]
    fn invalid_date_prints_null() {
        let v = Value::from_json(serde_json::json!({"$date": "soon"})).unwrap();
        assert_eq!(v.to_ejson_string(), r#"{"$date":null}"#);
    }
}
