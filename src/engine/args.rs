//! Parameters read with the semantics of Meteor's `check()`: each declared position has a
//! type, a mismatch is `400 "Match failed"` before the handler does anything with the value.
//!
//! Owns the vocabulary of argument types (`string`, `number`, `integer`, `boolean`, `id`,
//! `date`, `object`, `any`, each optional with a trailing `?`) that configuration declares,
//! and [`Pattern`], the richer form services check their parameters with (Meteor's
//! `Match.Maybe`, `Match.Optional`, `Match.OneOf`, object shapes exact or including, arrays
//! of a pattern, literals, `Match.Where`). It must not interpret what the values mean:
//! callers decide how a checked value is used.

use super::error::ServiceError;
use crate::model::Value;
use std::fmt;
use std::str::FromStr;

/// What one parameter may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// Any string (Meteor's `String`).
    String,
    /// Any number (Meteor's `Number`).
    Number,
    /// A whole number in the 32-bit range (Meteor's `Match.Integer`).
    Integer,
    Boolean,
    /// A document id: a string of 1 to 64 letters, digits, `_` or `-` (Meteor's random ids,
    /// MongoDB's hexadecimal ObjectIds), or an ObjectId value.
    Id,
    Date,
    /// A plain object (an options argument).
    Object,
    /// Any EJSON value.
    Any,
}

/// A declared parameter: its kind, and whether it may be left out (or `null`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgType {
    pub kind: ArgKind,
    /// Absent or `null` is accepted (Meteor's `Match.Maybe`).
    pub optional: bool,
}

impl FromStr for ArgType {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (name, optional) = match text.strip_suffix('?') {
            Some(name) => (name, true),
            None => (text, false),
        };
        let kind = match name {
            "string" => ArgKind::String,
            "number" => ArgKind::Number,
            "integer" => ArgKind::Integer,
            "boolean" => ArgKind::Boolean,
            "id" => ArgKind::Id,
            "date" => ArgKind::Date,
            "object" => ArgKind::Object,
            "any" => ArgKind::Any,
            _ => {
                return Err(format!(
                    "unknown argument type {text:?} (expected string, number, integer, \
                     boolean, id, date, object or any, with ? when optional)"
                ))
            }
        };
        Ok(Self { kind, optional })
    }
}

impl fmt::Display for ArgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.kind {
            ArgKind::String => "string",
            ArgKind::Number => "number",
            ArgKind::Integer => "integer",
            ArgKind::Boolean => "boolean",
            ArgKind::Id => "id",
            ArgKind::Date => "date",
            ArgKind::Object => "object",
            ArgKind::Any => "any",
        };
        f.write_str(name)?;
        if self.optional {
            f.write_str("?")?;
        }
        Ok(())
    }
}

/// Whether `text` has the shape of a document id.
pub fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl ArgType {
    /// Whether `value` (`None`: the parameter was not sent) fits.
    pub fn accepts(&self, value: Option<&Value>) -> bool {
        let value = match value {
            None | Some(Value::Null) => return self.optional || self.kind == ArgKind::Any,
            Some(v) => v,
        };
        match self.kind {
            ArgKind::String => matches!(value, Value::String(_)),
            ArgKind::Number => matches!(value, Value::Number(_)),
            ArgKind::Integer => matches!(value, Value::Number(n)
                if n.fract() == 0.0 && *n >= f64::from(i32::MIN) && *n <= f64::from(i32::MAX)),
            ArgKind::Boolean => matches!(value, Value::Bool(_)),
            ArgKind::Id => match value {
                Value::String(s) => is_id(s),
                Value::ObjectId(_) => true,
                _ => false,
            },
            ArgKind::Date => matches!(value, Value::Date(ms) if ms.is_finite()),
            ArgKind::Object => matches!(value, Value::Object(_)),
            ArgKind::Any => true,
        }
    }

    /// `Ok` when `value` fits, else Meteor's `Match failed`.
    pub fn check(&self, value: Option<&Value>) -> Result<(), ServiceError> {
        if self.accepts(value) {
            Ok(())
        } else {
            Err(ServiceError::match_failed())
        }
    }
}

/// Checks positional parameters against their declared types; parameters beyond the
/// declared ones are refused unless `allow_extra` says they may be there.
pub fn check_params(
    types: &[ArgType],
    params: &[Value],
    allow_extra: impl Fn(usize, &Value) -> bool,
) -> Result<(), ServiceError> {
    for (i, ty) in types.iter().enumerate() {
        ty.check(params.get(i))?;
    }
    for (i, extra) in params.iter().enumerate().skip(types.len()) {
        if !allow_extra(i, extra) {
            return Err(ServiceError::match_failed());
        }
    }
    Ok(())
}

/// A pattern a value must match, as Meteor's `check()` takes it.
#[derive(Clone)]
pub enum Pattern {
    /// A value of this kind (not absent, not null, except for `Any`).
    Kind(ArgKind),
    /// Absent or null, or the inner pattern (`Match.Maybe`).
    Maybe(Box<Pattern>),
    /// Absent, or the inner pattern; null is refused (`Match.Optional`).
    Optional(Box<Pattern>),
    /// Any one of these (`Match.OneOf`).
    OneOf(Vec<Pattern>),
    /// An object with these fields; `others` allows more (`Match.ObjectIncluding`), else any
    /// other field fails, as a plain object pattern does.
    Object {
        fields: Vec<(&'static str, Pattern)>,
        others: bool,
    },
    /// An array whose every item matches (`[String]`).
    ArrayOf(Box<Pattern>),
    /// Exactly this value.
    Literal(Value),
    /// A value the inner pattern matches and the test accepts (`Match.Where`).
    Where(Box<Pattern>, fn(&Value) -> bool),
    /// A string of at most this many characters.
    StringUpTo(usize),
}

impl Pattern {
    pub const STRING: Pattern = Pattern::Kind(ArgKind::String);
    pub const NUMBER: Pattern = Pattern::Kind(ArgKind::Number);
    pub const INTEGER: Pattern = Pattern::Kind(ArgKind::Integer);
    pub const BOOLEAN: Pattern = Pattern::Kind(ArgKind::Boolean);
    pub const ID: Pattern = Pattern::Kind(ArgKind::Id);
    pub const DATE: Pattern = Pattern::Kind(ArgKind::Date);
    pub const OBJECT: Pattern = Pattern::Kind(ArgKind::Object);
    pub const ANY: Pattern = Pattern::Kind(ArgKind::Any);

    pub fn maybe(inner: Pattern) -> Self {
        Pattern::Maybe(Box::new(inner))
    }

    pub fn optional(inner: Pattern) -> Self {
        Pattern::Optional(Box::new(inner))
    }

    pub fn array_of(inner: Pattern) -> Self {
        Pattern::ArrayOf(Box::new(inner))
    }

    /// An object with exactly these fields (those whose pattern is `Maybe` or `Optional`
    /// may be left out).
    pub fn object(fields: Vec<(&'static str, Pattern)>) -> Self {
        Pattern::Object {
            fields,
            others: false,
        }
    }

    /// An object with at least these fields.
    pub fn object_including(fields: Vec<(&'static str, Pattern)>) -> Self {
        Pattern::Object {
            fields,
            others: true,
        }
    }

    /// A string of at most `max` characters: a bound every free-text field needs.
    pub fn string_up_to(max: usize) -> Self {
        Pattern::StringUpTo(max)
    }

    /// Whether `value` (`None`: absent) matches.
    pub fn matches(&self, value: Option<&Value>) -> bool {
        match self {
            Pattern::Kind(kind) => ArgType {
                kind: *kind,
                optional: false,
            }
            .accepts(value),
            Pattern::Maybe(inner) => {
                matches!(value, None | Some(Value::Null)) || inner.matches(value)
            }
            Pattern::Optional(inner) => value.is_none() || inner.matches(value),
            Pattern::OneOf(options) => options.iter().any(|p| p.matches(value)),
            Pattern::Object { fields, others } => {
                let Some(Value::Object(doc)) = value else {
                    return false;
                };
                fields.iter().all(|(name, p)| p.matches(doc.get(*name)))
                    && (*others || doc.keys().all(|k| fields.iter().any(|(n, _)| n == k)))
            }
            Pattern::ArrayOf(inner) => match value {
                Some(Value::Array(items)) => items.iter().all(|item| inner.matches(Some(item))),
                _ => false,
            },
            Pattern::Literal(expected) => value == Some(expected),
            Pattern::StringUpTo(max) => value.is_some_and(|v| text_within(v, *max)),
            Pattern::Where(inner, test) => inner.matches(value) && value.is_some_and(test),
        }
    }

    /// `Ok` when `value` matches, else Meteor's `Match failed` (400).
    pub fn check(&self, value: Option<&Value>) -> Result<(), ServiceError> {
        if self.matches(value) {
            Ok(())
        } else {
            Err(ServiceError::match_failed())
        }
    }
}

fn text_within(value: &Value, max: usize) -> bool {
    value.as_str().is_some_and(|s| s.chars().count() <= max)
}

/// Checks a method's parameters: one pattern per position, nothing beyond them.
pub fn check_all(patterns: &[Pattern], params: &[Value]) -> Result<(), ServiceError> {
    let params = without_second_factor_slot(patterns.len(), params);
    if params.len() > patterns.len() {
        return Err(ServiceError::match_failed());
    }
    for (i, pattern) in patterns.iter().enumerate() {
        pattern.check(params.get(i))?;
    }
    Ok(())
}

/// `params` without the one argument Rocket.Chat's SDKs add after a method's own: the
/// second-factor slot, `""` or a code (a string, or `{twoFactorCode, twoFactorMethod}`).
/// Rocket.Chat's methods never see it (its two-factor wrapper takes it off, and Meteor's
/// `check` ignores what it is not asked about); anything else past the declared arguments
/// still fails.
pub fn without_second_factor_slot(declared: usize, params: &[Value]) -> &[Value] {
    if params.len() != declared + 1 {
        return params;
    }
    let is_slot = match params.last() {
        Some(Value::String(code)) => code.len() <= 256,
        Some(Value::Object(fields)) => {
            !fields.is_empty()
                && fields.iter().all(|(k, v)| {
                    matches!(k.as_str(), "twoFactorCode" | "twoFactorMethod")
                        && v.as_str().is_some_and(|s| s.len() <= 256)
                })
        }
        _ => false,
    };
    if is_slot {
        &params[..declared]
    } else {
        params
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_second_factor_slot_after_the_declared_arguments_is_accepted_and_nothing_else() {
        let one = [Pattern::string_up_to(10)];
        let id = Value::String("abc".into());
        assert!(check_all(&one, &[id.clone(), Value::String(String::new())]).is_ok());
        let code = Value::from_json(
            serde_json::json!({"twoFactorCode": "123456", "twoFactorMethod": "totp"}),
        )
        .expect("a value");
        assert!(check_all(&one, &[id.clone(), code]).is_ok());
        // A number, an object of other keys, or two extra arguments are still refused.
        assert!(check_all(&one, &[id.clone(), Value::Number(1.0)]).is_err());
        let other = Value::from_json(serde_json::json!({"$where": "1"})).expect("a value");
        assert!(check_all(&one, &[id.clone(), other]).is_err());
        let two = [
            id.clone(),
            Value::String(String::new()),
            Value::String(String::new()),
        ];
        assert!(check_all(&one, &two).is_err());
    }

    fn ty(s: &str) -> ArgType {
        s.parse().expect("a known type")
    }

    #[test]
    fn types_parse_and_print_back() {
        for name in [
            "string", "number", "integer", "boolean", "id", "date", "object", "any", "id?",
        ] {
            assert_eq!(ty(name).to_string(), name);
        }
        assert!("str".parse::<ArgType>().is_err());
        assert!("?".parse::<ArgType>().is_err());
    }

    #[test]
    fn values_are_checked_like_meteor_check() {
        let s = Value::from("abc");
        let op = Value::from_json(serde_json::json!({"$ne": "x"})).expect("ejson");
        let re = Value::Regex {
            pattern: ".".into(),
            flags: String::new(),
        };
        assert!(ty("string").accepts(Some(&s)));
        assert!(!ty("string").accepts(Some(&op)));
        assert!(!ty("string").accepts(Some(&re)));
        assert!(!ty("string").accepts(None));
        assert!(!ty("string").accepts(Some(&Value::Null)));
        assert!(ty("string?").accepts(None));
        assert!(ty("string?").accepts(Some(&Value::Null)));
        assert!(!ty("string?").accepts(Some(&Value::from(1.0))));
        assert!(ty("integer").accepts(Some(&Value::from(3.0))));
        assert!(!ty("integer").accepts(Some(&Value::from(3.5))));
        assert!(!ty("integer").accepts(Some(&Value::from(1e12))));
        assert!(ty("id").accepts(Some(&Value::from("Ab3_-x"))));
        assert!(!ty("id").accepts(Some(&Value::from(""))));
        assert!(!ty("id").accepts(Some(&Value::from("a b"))));
        assert!(!ty("id").accepts(Some(&Value::from("$where"))));
        assert!(ty("date").accepts(Some(&Value::Date(0.0))));
        assert!(!ty("date").accepts(Some(&Value::Date(f64::NAN))));
        assert!(ty("boolean").accepts(Some(&Value::Bool(false))));
        assert!(ty("object").accepts(Some(&op)));
        assert!(ty("any").accepts(None));
    }

    #[test]
    fn extra_parameters_are_refused_unless_allowed() {
        let types = [ty("string")];
        let params = [Value::from("a"), Value::from("b")];
        assert!(check_params(&types, &params, |_, _| false).is_err());
        assert!(check_params(&types, &params, |i, _| i == 1).is_ok());
        assert!(check_params(&types, &[], |_, _| true).is_err());
    }

    #[test]
    fn patterns_follow_meteor_match() {
        let v = |j: serde_json::Value| Value::from_json(j).expect("ejson");
        let login = Pattern::object(vec![
            (
                "user",
                Pattern::OneOf(vec![
                    Pattern::object(vec![("username", Pattern::STRING)]),
                    Pattern::object(vec![("email", Pattern::STRING)]),
                ]),
            ),
            (
                "password",
                Pattern::OneOf(vec![
                    Pattern::string_up_to(256),
                    Pattern::object(vec![
                        ("digest", Pattern::STRING),
                        ("algorithm", Pattern::Literal(Value::from("sha-256"))),
                    ]),
                ]),
            ),
            ("code", Pattern::optional(Pattern::STRING)),
        ]);
        let ok = v(
            serde_json::json!({"user": {"username": "ann"}, "password": {"digest": "ab", "algorithm": "sha-256"}}),
        );
        assert!(login.matches(Some(&ok)));
        for bad in [
            serde_json::json!({"user": {"username": "ann"}, "password": {"digest": "ab", "algorithm": "md5"}}),
            serde_json::json!({"user": {"username": {"$ne": 1}}, "password": "x"}),
            serde_json::json!({"user": {"username": "ann"}, "password": "x", "extra": 1}),
            serde_json::json!({"user": {"username": "ann"}, "password": "x", "code": null}),
            serde_json::json!({"user": {"username": "ann"}, "password": "x".repeat(257)}),
            serde_json::json!({"password": "x"}),
        ] {
            assert!(!login.matches(Some(&v(bad.clone()))), "{bad}");
        }
        let including = Pattern::object_including(vec![("a", Pattern::NUMBER)]);
        assert!(including.matches(Some(&v(serde_json::json!({"a": 1, "b": 2})))));
        assert!(Pattern::maybe(Pattern::STRING).matches(Some(&Value::Null)));
        assert!(!Pattern::optional(Pattern::STRING).matches(Some(&Value::Null)));
        assert!(Pattern::array_of(Pattern::ID).matches(Some(&v(serde_json::json!(["a", "b"])))));
        assert!(!Pattern::array_of(Pattern::ID).matches(Some(&v(serde_json::json!(["a", 1])))));
        assert!(check_all(&[Pattern::STRING], &[Value::from("a"), Value::Number(2.0)]).is_err());
        assert!(check_all(
            &[Pattern::STRING, Pattern::maybe(Pattern::NUMBER)],
            &[Value::from("a")]
        )
        .is_ok());
    }
}
