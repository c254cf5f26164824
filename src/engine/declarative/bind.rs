//! Placeholders in declared selectors and rules (`"$args.N"`: the N-th parameter of the
//! call, `"$userId"`: the logged-in user) and their binding to one call's values.
//!
//! A bound value is always a value, never query code: where a placeholder stands for a
//! field's whole condition, an object, array or regular expression is compared with `$eq`
//! (so `{"$ne": "x"}` is a document to equal, not an operator); in `$in` / `$nin` / `$all`
//! lists a regular expression is refused (there it would be a pattern); a placeholder may
//! not stand for the operand of `$not`, `$elemMatch`, `$and`, `$or` or `$nor`. A placeholder
//! whose value is missing (no user, a parameter not sent) makes the whole selector match
//! nothing, except a parameter declared optional, which binds as `null` as Meteor's
//! `undefined` would. It must not run queries.

use crate::engine::args::{ArgKind, ArgType};
use crate::model::{Document, Value};

/// What a placeholder names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Placeholder {
    Arg(usize),
    UserId,
}

/// Where a placeholder's value goes, so a dry run can give a value of the right shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    Value,
    List,
}

/// Why a binding stopped.
#[derive(Debug, PartialEq)]
enum Stop {
    /// A value it names is missing: the selector matches nothing.
    Absent,
    /// The value cannot be used as a literal there: `Match failed`.
    Refused,
    /// The template itself is wrong (found when it is declared).
    Invalid(String),
}

/// A selector or rule with placeholders, checked once when declared.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    doc: Document,
    names_user: bool,
}

/// The values of one call.
pub(crate) struct Bindings<'a> {
    pub args: &'a [Value],
    /// The declared parameter types, when the publication declares them.
    pub declared: Option<&'a [ArgType]>,
    pub user_id: Option<&'a str>,
}

/// Why a binding gave no selector.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Unbound {
    /// A value it names is missing: nothing matches.
    Nothing,
    /// A value of the call cannot be used there (`Match failed`).
    MatchFailed,
}

fn placeholder(s: &str) -> Option<Result<Placeholder, String>> {
    if s == "$userId" {
        return Some(Ok(Placeholder::UserId));
    }
    let index = s.strip_prefix("$args.")?;
    Some(
        index
            .parse::<usize>()
            .ok()
            .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))
            .map(Placeholder::Arg)
            .ok_or_else(|| format!("{s:?} is not a placeholder (expected $args.<n> or $userId)")),
    )
}

fn placeholder_of(v: &Value) -> Result<Option<Placeholder>, Stop> {
    match v {
        Value::String(s) => placeholder(s).transpose().map_err(Stop::Invalid),
        _ => Ok(None),
    }
}

fn is_operator_doc(d: &Document) -> bool {
    d.keys().next().is_some_and(|k| k.starts_with('$'))
}

type Resolve<'r> = dyn FnMut(Placeholder, Want) -> Result<Value, Stop> + 'r;

/// A selector document: top-level operators and field conditions.
fn selector(doc: &Document, r: &mut Resolve<'_>) -> Result<Document, Stop> {
    let mut out = Document::with_capacity_and_hasher(doc.len(), Default::default());
    for (key, value) in doc {
        let bound = match key.as_str() {
            "$and" | "$or" | "$nor" => match value {
                Value::Array(items) => Value::Array(
                    items
                        .iter()
                        .map(|item| match item {
                            Value::Object(d) => selector(d, r).map(Value::Object),
                            other => literal(other, r),
                        })
                        .collect::<Result<_, _>>()?,
                ),
                other => no_placeholder(other, key, r)?,
            },
            k if k.starts_with('$') => no_placeholder(value, key, r)?,
            _ => condition(value, r)?,
        };
        out.insert(key.clone(), bound);
    }
    Ok(out)
}

/// A field's condition: a placeholder for it becomes an equality with the value.
fn condition(value: &Value, r: &mut Resolve<'_>) -> Result<Value, Stop> {
    if let Some(p) = placeholder_of(value)? {
        let bound = r(p, Want::Value)?;
        return Ok(match bound {
            Value::Object(_) | Value::Array(_) | Value::Regex { .. } => {
                let mut eq = Document::default();
                eq.insert("$eq".into(), bound);
                Value::Object(eq)
            }
            scalar => scalar,
        });
    }
    match value {
        Value::Object(d) if is_operator_doc(d) => operators(d, r).map(Value::Object),
        other => literal(other, r),
    }
}

fn operators(doc: &Document, r: &mut Resolve<'_>) -> Result<Document, Stop> {
    let mut out = Document::with_capacity_and_hasher(doc.len(), Default::default());
    for (op, operand) in doc {
        let bound = match op.as_str() {
            "$in" | "$nin" | "$all" => list(operand, r)?,
            "$not" => match operand {
                Value::Object(d) => operators(d, r).map(Value::Object)?,
                other => no_placeholder(other, op, r)?,
            },
            "$elemMatch" => match operand {
                Value::Object(d) if is_operator_doc(d) => operators(d, r).map(Value::Object)?,
                Value::Object(d) => selector(d, r).map(Value::Object)?,
                other => no_placeholder(other, op, r)?,
            },
            _ => literal(operand, r)?,
        };
        out.insert(op.clone(), bound);
    }
    Ok(out)
}

/// The operand of `$in`, `$nin` or `$all`: values, none of them a pattern.
fn list(operand: &Value, r: &mut Resolve<'_>) -> Result<Value, Stop> {
    let not_pattern = |v: Value| match v {
        Value::Regex { .. } => Err(Stop::Refused),
        v => Ok(v),
    };
    if let Some(p) = placeholder_of(operand)? {
        return match r(p, Want::List)? {
            Value::Array(items) => Ok(Value::Array(
                items
                    .into_iter()
                    .map(not_pattern)
                    .collect::<Result<_, _>>()?,
            )),
            _ => Err(Stop::Refused),
        };
    }
    match operand {
        Value::Array(items) => Ok(Value::Array(
            items
                .iter()
                .map(|item| match placeholder_of(item)? {
                    Some(p) => not_pattern(r(p, Want::Value)?),
                    None => literal(item, r),
                })
                .collect::<Result<_, _>>()?,
        )),
        other => literal(other, r),
    }
}

/// A value compared as it is: placeholders inside become their values.
fn literal(value: &Value, r: &mut Resolve<'_>) -> Result<Value, Stop> {
    if let Some(p) = placeholder_of(value)? {
        return r(p, Want::Value);
    }
    Ok(match value {
        Value::Object(d) => Value::Object(
            d.iter()
                .map(|(k, v)| Ok((k.clone(), literal(v, r)?)))
                .collect::<Result<_, Stop>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| literal(v, r))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// Operands that are query code: a placeholder may not stand for them.
fn no_placeholder(value: &Value, op: &str, r: &mut Resolve<'_>) -> Result<Value, Stop> {
    if placeholder_of(value)?.is_some() {
        return Err(Stop::Invalid(format!(
            "a placeholder cannot stand for the operand of {op}: it would be query code"
        )));
    }
    literal(value, r)
}

/// A value of the declared kind, for the dry run that checks a template's operators.
fn sample(kind: Option<ArgKind>) -> Value {
    match kind {
        Some(ArgKind::Number | ArgKind::Integer) => Value::Number(0.0),
        Some(ArgKind::Boolean) => Value::Bool(false),
        Some(ArgKind::Date) => Value::Date(0.0),
        Some(ArgKind::Object) => Value::Object(Document::default()),
        _ => Value::String("x".into()),
    }
}

impl Template {
    /// Checks where placeholders stand and what they name; `declared` are the parameter
    /// types, when declared (a placeholder past them is an error).
    pub(crate) fn parse(doc: Document, declared: Option<&[ArgType]>) -> Result<Self, String> {
        let (mut args_named, mut names_user) = (0, false);
        let mut record = |p: Placeholder, _: Want| {
            match p {
                Placeholder::Arg(i) => args_named = args_named.max(i + 1),
                Placeholder::UserId => names_user = true,
            }
            Ok(Value::Null)
        };
        match selector(&doc, &mut record) {
            Err(Stop::Invalid(problem)) => return Err(problem),
            Ok(_) | Err(Stop::Absent | Stop::Refused) => {}
        }
        if let Some(types) = declared {
            if args_named > types.len() {
                return Err(format!(
                    "names $args.{} but declares {} argument(s)",
                    args_named - 1,
                    types.len()
                ));
            }
        }
        Ok(Self { doc, names_user })
    }

    /// Whether it names `$userId`.
    pub(crate) fn names_user(&self) -> bool {
        self.names_user
    }

    /// The selector with every placeholder given a sample value of its declared kind, to
    /// check its operators when it is declared.
    pub(crate) fn sample(&self, declared: Option<&[ArgType]>) -> Document {
        let mut fill = |p: Placeholder, want: Want| {
            Ok(match (p, want) {
                (_, Want::List) => Value::Array(Vec::new()),
                (Placeholder::UserId, Want::Value) => Value::String("x".into()),
                (Placeholder::Arg(i), Want::Value) => {
                    sample(declared.and_then(|t| t.get(i)).map(|t| t.kind))
                }
            })
        };
        selector(&self.doc, &mut fill).unwrap_or_default()
    }

    /// The selector for one call.
    pub(crate) fn bind(&self, b: &Bindings<'_>) -> Result<Document, Unbound> {
        let mut resolve = |p: Placeholder, _: Want| match p {
            Placeholder::UserId => b
                .user_id
                .map(|u| Value::String(u.to_owned()))
                .ok_or(Stop::Absent),
            Placeholder::Arg(i) => match b.args.get(i) {
                Some(v) if !matches!(v, Value::Null) => Ok(v.clone()),
                // Declared optional and not sent: null, as Meteor's `undefined` would be.
                _ if b
                    .declared
                    .and_then(|t| t.get(i))
                    .is_some_and(|t| t.optional) =>
                {
                    Ok(Value::Null)
                }
                _ => Err(Stop::Absent),
            },
        };
        selector(&self.doc, &mut resolve).map_err(|stop| match stop {
            Stop::Absent => Unbound::Nothing,
            Stop::Refused | Stop::Invalid(_) => Unbound::MatchFailed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::query::Selector;

    fn doc(json: serde_json::Value) -> Document {
        match Value::from_json(json).expect("ejson") {
            Value::Object(d) => d,
            _ => panic!("not a document"),
        }
    }

    fn bind(template: serde_json::Value, args: serde_json::Value) -> Result<Document, Unbound> {
        let args: Vec<Value> = match Value::from_json(args).expect("ejson") {
            Value::Array(a) => a,
            _ => panic!("args are an array"),
        };
        Template::parse(doc(template), None)
            .expect("valid template")
            .bind(&Bindings {
                args: &args,
                declared: None,
                user_id: None,
            })
    }

    fn matches(selector: &Document, d: serde_json::Value) -> bool {
        Selector::parse(selector).expect("parses").matches(&doc(d))
    }

    #[test]
    fn an_operator_object_argument_is_a_value_to_equal() {
        let s = bind(
            serde_json::json!({"owner": "$args.0"}),
            serde_json::json!([{"$ne": "x"}]),
        )
        .expect("binds");
        assert!(!matches(&s, serde_json::json!({"owner": "ann"})));
        assert!(matches(&s, serde_json::json!({"owner": {"$ne": "x"}})));
        let s = bind(
            serde_json::json!({"owner": "$args.0"}),
            serde_json::json!([{"$regexp": ".", "$flags": ""}]),
        )
        .expect("binds");
        assert!(!matches(&s, serde_json::json!({"owner": "ann"})));
    }

    #[test]
    fn nested_paths_and_literal_documents_stay_literal() {
        let s = bind(
            serde_json::json!({"a.b": "$args.0", "c": {"d": "$args.0"}}),
            serde_json::json!([{"$gt": ""}]),
        )
        .expect("binds");
        assert!(!matches(
            &s,
            serde_json::json!({"a": {"b": "z"}, "c": {"d": "z"}})
        ));
        assert!(matches(
            &s,
            serde_json::json!({"a": {"b": {"$gt": ""}}, "c": {"d": {"$gt": ""}}})
        ));
    }

    #[test]
    fn lists_refuse_patterns_and_elem_match_binds_as_a_selector() {
        let t = serde_json::json!({"owner": {"$in": ["$args.0", "bob"]}});
        assert_eq!(
            bind(
                t.clone(),
                serde_json::json!([{"$regexp": ".", "$flags": ""}])
            ),
            Err(Unbound::MatchFailed)
        );
        let s = bind(t, serde_json::json!(["ann"])).expect("binds");
        assert!(matches(&s, serde_json::json!({"owner": "ann"})));
        assert!(!matches(&s, serde_json::json!({"owner": "carl"})));
        let s = bind(
            serde_json::json!({"tags": {"$elemMatch": {"name": "$args.0"}}}),
            serde_json::json!([{"$exists": true}]),
        )
        .expect("binds");
        assert!(!matches(&s, serde_json::json!({"tags": [{"name": "a"}]})));
        let whole_list = serde_json::json!({"owner": {"$in": "$args.0"}});
        assert_eq!(
            bind(whole_list.clone(), serde_json::json!(["ann"])),
            Err(Unbound::MatchFailed)
        );
        let s = bind(whole_list, serde_json::json!([["ann", "bob"]])).expect("binds");
        assert!(matches(&s, serde_json::json!({"owner": "bob"})));
    }

    #[test]
    fn a_missing_value_matches_nothing_unless_declared_optional() {
        assert_eq!(
            bind(
                serde_json::json!({"owner": "$userId"}),
                serde_json::json!([])
            ),
            Err(Unbound::Nothing)
        );
        assert_eq!(
            bind(
                serde_json::json!({"list": "$args.0"}),
                serde_json::json!([null])
            ),
            Err(Unbound::Nothing)
        );
        let declared = ["string?".parse::<ArgType>().expect("type")];
        let s = Template::parse(doc(serde_json::json!({"list": "$args.0"})), Some(&declared))
            .expect("valid")
            .bind(&Bindings {
                args: &[],
                declared: Some(&declared),
                user_id: None,
            })
            .expect("binds");
        assert!(matches(&s, serde_json::json!({"x": 1})));
        assert!(!matches(&s, serde_json::json!({"list": "a"})));
    }

    #[test]
    fn placeholders_for_query_code_and_past_the_declared_args_are_refused() {
        for bad in [
            serde_json::json!({"a": {"$not": "$args.0"}}),
            serde_json::json!({"a": {"$elemMatch": "$args.0"}}),
            serde_json::json!({"$or": "$args.0"}),
            serde_json::json!({"a": "$args.x"}),
        ] {
            assert!(Template::parse(doc(bad.clone()), None).is_err(), "{bad}");
        }
        let declared = ["string".parse::<ArgType>().expect("type")];
        let err = Template::parse(doc(serde_json::json!({"a": "$args.1"})), Some(&declared))
            .expect_err("past the declared args");
        assert!(err.contains("$args.1"), "{err}");
    }
}
