//! Selectors: parsing MongoDB query documents and matching documents against them.

use super::compare::{compare, equal, type_rank};
use super::path::{lookup, Branch};
use super::QueryError;
use crate::model::{Document, Value};
use std::cmp::Ordering;

/// A compiled selector.
#[derive(Clone, Debug)]
pub struct Selector {
    clauses: Vec<Clause>,
    /// The document this was compiled from: what a database server is sent.
    source: std::sync::Arc<Document>,
}

#[derive(Clone, Debug)]
enum Clause {
    And(Vec<Selector>),
    Or(Vec<Selector>),
    Nor(Vec<Selector>),
    Field { path: String, ops: Vec<Op> },
}

#[derive(Clone, Debug)]
enum Op {
    Eq(Value),
    Ne(Value),
    Cmp(Ordering, bool, Value),
    In(Vec<Pattern>),
    Nin(Vec<Pattern>),
    Exists(bool),
    Type(Vec<TypeSpec>),
    Size(usize),
    Mod(f64, f64),
    Regex(Box<regex::Regex>),
    All(Vec<Value>),
    ElemMatchOps(Vec<Op>),
    ElemMatchDoc(Selector),
    Not(Vec<Op>),
    Never,
}

/// What an index on one field may skip to: the field is one of the values, or lies between
/// the ends (each with whether it is included) within the type of the end given.
#[derive(Debug)]
pub enum IndexBound<'a> {
    OneOf(Vec<&'a Value>),
    Range {
        lower: Option<(&'a Value, bool)>,
        upper: Option<(&'a Value, bool)>,
    },
}

/// A member of `$in`/`$nin`: a value, or a regular expression.
#[derive(Clone, Debug)]
enum Pattern {
    Value(Value),
    Regex(Box<regex::Regex>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TypeSpec {
    Rank(u8),
    Array,
    Number,
    Integer,
    Double,
}

impl Selector {
    /// Compiles a selector document.
    pub fn parse(selector: &Document) -> Result<Self, QueryError> {
        parse_selector(selector, 0)
    }

    /// A selector for `{_id: id}`.
    pub fn by_id(id: Value) -> Self {
        let mut source = Document::default();
        source.insert("_id".into(), id.clone());
        Selector {
            clauses: vec![Clause::Field {
                path: "_id".into(),
                ops: vec![Op::Eq(id)],
            }],
            source: std::sync::Arc::new(source),
        }
    }

    /// The selector that matches everything.
    pub fn everything() -> Self {
        Selector {
            clauses: Vec::new(),
            source: std::sync::Arc::default(),
        }
    }

    /// The selector document as written.
    pub fn source(&self) -> &Document {
        &self.source
    }

    pub fn matches(&self, doc: &Document) -> bool {
        self.clauses.iter().all(|c| c.matches(doc))
    }

    /// The `_id` a top-level equality pins, whatever else the selector asks (`{_id: x,
    /// status: "online"}` pins `x`): at most that one document can match.
    pub fn pinned_id(&self) -> Option<&Value> {
        self.clauses.iter().find_map(|c| match c {
            Clause::Field { path, ops } if path == "_id" => ops.iter().find_map(|op| match op {
                Op::Eq(v) if !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null) => {
                    Some(v)
                }
                _ => None,
            }),
            _ => None,
        })
    }

    /// Top-level conditions an index on one field can serve, each a superset of what the
    /// selector matches on that field (the matcher still decides). Conditions on the same
    /// path are all to hold.
    pub fn index_bounds(&self) -> Vec<(&str, IndexBound<'_>)> {
        let indexable = |v: &Value| {
            !matches!(
                v,
                Value::Null | Value::Array(_) | Value::Object(_) | Value::Regex { .. }
            )
        };
        // Equal to null is also missing, which a key column holds as null too (a field
        // that is an array somewhere is not used through its key at all).
        let indexable_equal =
            |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_) | Value::Regex { .. });
        let mut out = Vec::new();
        for c in &self.clauses {
            let Clause::Field { path, ops } = c else {
                continue;
            };
            for op in ops {
                let bound = match op {
                    Op::Eq(v) if indexable_equal(v) => IndexBound::OneOf(vec![v]),
                    Op::In(patterns) => {
                        let values: Option<Vec<&Value>> = patterns
                            .iter()
                            .map(|p| match p {
                                Pattern::Value(v) if indexable_equal(v) => Some(v),
                                _ => None,
                            })
                            .collect();
                        match values {
                            Some(values) => IndexBound::OneOf(values),
                            None => continue,
                        }
                    }
                    Op::Cmp(dir, or_equal, v) if indexable(v) => {
                        let end = Some((v, *or_equal));
                        if *dir == Ordering::Greater {
                            IndexBound::Range {
                                lower: end,
                                upper: None,
                            }
                        } else {
                            IndexBound::Range {
                                lower: None,
                                upper: end,
                            }
                        }
                    }
                    _ => continue,
                };
                out.push((path.as_str(), bound));
            }
        }
        out
    }

    /// Equality conditions on plain (non-dotted) fields: what an index can serve.
    pub fn equalities(&self) -> Vec<(&str, &Value)> {
        let mut out = Vec::new();
        for c in &self.clauses {
            if let Clause::Field { path, ops } = c {
                for op in ops {
                    if let Op::Eq(v) = op {
                        if !matches!(v, Value::Object(_) | Value::Array(_) | Value::Null) {
                            out.push((path.as_str(), v));
                        }
                    }
                }
            }
        }
        out
    }
}

const MAX_DEPTH: usize = 100;

fn err<T>(message: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError::new(message))
}

fn parse_selector(selector: &Document, depth: usize) -> Result<Selector, QueryError> {
    if depth > MAX_DEPTH {
        return err("exceeded depth limit of 100 when parsing the selector");
    }
    let mut clauses = Vec::with_capacity(selector.len());
    for (key, value) in selector {
        if let Some(op) = key.strip_prefix('$') {
            let list = |name: &str| -> Result<Vec<Selector>, QueryError> {
                let Value::Array(items) = value else {
                    return err(format!("${name} must be an array"));
                };
                if items.is_empty() {
                    return err("$and/$or/$nor must be a nonempty array");
                }
                items
                    .iter()
                    .map(|item| match item {
                        Value::Object(d) => parse_selector(d, depth + 1),
                        _ => err("$or/$and/$nor entries need to be full objects"),
                    })
                    .collect()
            };
            match op {
                "and" => clauses.push(Clause::And(list("and")?)),
                "or" => clauses.push(Clause::Or(list("or")?)),
                "nor" => clauses.push(Clause::Nor(list("nor")?)),
                "comment" => {}
                "where" => return err("$where is not allowed: comet does not run JavaScript"),
                _ => return err(format!("unknown top level operator: {key}")),
            }
            continue;
        }
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return err(format!("invalid path '{key}': empty field name"));
        }
        let ops = parse_condition(value, depth)?;
        clauses.push(Clause::Field {
            path: key.clone(),
            ops,
        });
    }
    Ok(Selector {
        clauses,
        source: std::sync::Arc::new(selector.clone()),
    })
}

/// The condition on one field: an operator document, a regular expression, or a value.
fn parse_condition(value: &Value, depth: usize) -> Result<Vec<Op>, QueryError> {
    match value {
        Value::Object(d) if d.keys().next().is_some_and(|k| k.starts_with('$')) => {
            parse_operators(d, depth)
        }
        Value::Regex { pattern, flags } => {
            Ok(vec![Op::Regex(Box::new(compile_regex(pattern, flags)?))])
        }
        other => Ok(vec![Op::Eq(other.clone())]),
    }
}

fn parse_operators(d: &Document, depth: usize) -> Result<Vec<Op>, QueryError> {
    let mut ops = Vec::with_capacity(d.len());
    for (key, operand) in d {
        let op = match key.as_str() {
            "$eq" => Op::Eq(operand.clone()),
            "$ne" => Op::Ne(operand.clone()),
            "$gt" => Op::Cmp(Ordering::Greater, false, operand.clone()),
            "$gte" => Op::Cmp(Ordering::Greater, true, operand.clone()),
            "$lt" => Op::Cmp(Ordering::Less, false, operand.clone()),
            "$lte" => Op::Cmp(Ordering::Less, true, operand.clone()),
            "$in" | "$nin" => {
                let Value::Array(items) = operand else {
                    return err(format!("{key} needs an array"));
                };
                let patterns = items
                    .iter()
                    .map(|v| match v {
                        Value::Regex { pattern, flags } => {
                            Ok(Pattern::Regex(Box::new(compile_regex(pattern, flags)?)))
                        }
                        Value::Object(o) if o.keys().next().is_some_and(|k| k.starts_with('$')) => {
                            err(format!("cannot nest $ under {key}"))
                        }
                        other => Ok(Pattern::Value(other.clone())),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if key == "$in" {
                    Op::In(patterns)
                } else {
                    Op::Nin(patterns)
                }
            }
            "$exists" => Op::Exists(truthy(operand)),
            "$type" => Op::Type(parse_types(operand)?),
            "$size" => match operand {
                Value::Number(n) if *n >= 0.0 && n.fract() == 0.0 => Op::Size(*n as usize),
                Value::Number(n) if n.fract() != 0.0 => {
                    return err(format!(
                        "Failed to parse $size. Expected an integer in: $size: {n}"
                    ))
                }
                Value::Number(_) => {
                    return err("Failed to parse $size. Expected a non-negative number in: $size")
                }
                _ => return err("Failed to parse $size. Expected a number in: $size"),
            },
            "$mod" => {
                let Value::Array(items) = operand else {
                    return err("malformed mod, needs to be an array");
                };
                if items.len() < 2 {
                    return err("malformed mod, not enough elements");
                }
                if items.len() > 2 {
                    return err("malformed mod, too many elements");
                }
                let (Some(divisor), Some(remainder)) = (items[0].as_f64(), items[1].as_f64())
                else {
                    return err("malformed mod, divisor and remainder must be numbers");
                };
                if divisor.trunc() == 0.0 {
                    return err("divisor cannot be 0");
                }
                Op::Mod(divisor.trunc(), remainder.trunc())
            }
            "$regex" => {
                let flags = match d.get("$options") {
                    Some(Value::String(o)) => o.clone(),
                    Some(_) => return err("$options has to be a string"),
                    None => String::new(),
                };
                match operand {
                    Value::String(p) => Op::Regex(Box::new(compile_regex(p, &flags)?)),
                    Value::Regex {
                        pattern,
                        flags: own,
                    } => {
                        let merged = if flags.is_empty() { own.clone() } else { flags };
                        Op::Regex(Box::new(compile_regex(pattern, &merged)?))
                    }
                    _ => return err("$regex has to be a string"),
                }
            }
            "$options" => {
                if !d.contains_key("$regex") {
                    return err("$options needs a $regex");
                }
                continue;
            }
            "$all" => {
                let Value::Array(items) = operand else {
                    return err("$all needs an array");
                };
                if items.is_empty() {
                    Op::Never
                } else {
                    Op::All(items.clone())
                }
            }
            "$elemMatch" => {
                let Value::Object(spec) = operand else {
                    return err("$elemMatch needs an Object");
                };
                if spec.keys().next().is_some_and(|k| k.starts_with('$'))
                    && !matches!(
                        spec.keys().next().map(String::as_str),
                        Some("$and" | "$or" | "$nor" | "$where")
                    )
                {
                    Op::ElemMatchOps(parse_operators(spec, depth + 1)?)
                } else {
                    Op::ElemMatchDoc(parse_selector(spec, depth + 1)?)
                }
            }
            "$not" => match operand {
                Value::Regex { pattern, flags } => {
                    Op::Not(vec![Op::Regex(Box::new(compile_regex(pattern, flags)?))])
                }
                Value::Object(spec) => {
                    if spec.is_empty() {
                        return err("$not cannot be empty");
                    }
                    if !spec.keys().all(|k| k.starts_with('$')) {
                        return err("$not needs a regex or a document of operators");
                    }
                    Op::Not(parse_operators(spec, depth + 1)?)
                }
                _ => return err("$not needs a regex or a document"),
            },
            "$where" => return err("$where is not allowed: comet does not run JavaScript"),
            other => return err(format!("unknown operator: {other}")),
        };
        ops.push(op);
    }
    Ok(ops)
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => *n != 0.0,
        _ => true,
    }
}

fn parse_types(operand: &Value) -> Result<Vec<TypeSpec>, QueryError> {
    let one = |v: &Value| -> Result<TypeSpec, QueryError> {
        Ok(match v {
            Value::Number(n) => match *n as i64 {
                1 => TypeSpec::Double,
                2 => TypeSpec::Rank(4),
                3 => TypeSpec::Rank(5),
                4 => TypeSpec::Array,
                5 => TypeSpec::Rank(7),
                7 => TypeSpec::Rank(8),
                8 => TypeSpec::Rank(9),
                9 => TypeSpec::Rank(10),
                10 => TypeSpec::Rank(2),
                11 => TypeSpec::Rank(12),
                16 | 18 => TypeSpec::Integer,
                19 => TypeSpec::Number,
                other => return err(format!("Invalid numerical type code: {other}")),
            },
            Value::String(s) => match s.as_str() {
                "double" => TypeSpec::Double,
                "string" => TypeSpec::Rank(4),
                "object" => TypeSpec::Rank(5),
                "array" => TypeSpec::Array,
                "binData" => TypeSpec::Rank(7),
                "objectId" => TypeSpec::Rank(8),
                "bool" => TypeSpec::Rank(9),
                "date" => TypeSpec::Rank(10),
                "null" => TypeSpec::Rank(2),
                "regex" => TypeSpec::Rank(12),
                "int" | "long" => TypeSpec::Integer,
                "decimal" | "number" => TypeSpec::Number,
                other => return err(format!("Unknown type name alias: {other}")),
            },
            _ => return err("type must be represented as a number or a string"),
        })
    };
    match operand {
        Value::Array(items) => items.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

/// Compiles a MongoDB (PCRE) regular expression with the `regex` crate; features it lacks
/// (look-around, back-references) are refused with a clear message.
pub fn compile_regex(pattern: &str, flags: &str) -> Result<regex::Regex, QueryError> {
    let mut builder = regex::RegexBuilder::new(pattern);
    for flag in flags.chars() {
        match flag {
            'i' => builder.case_insensitive(true),
            'm' => builder.multi_line(true),
            's' => builder.dot_matches_new_line(true),
            'x' => builder.ignore_whitespace(true),
            'u' | 'g' => &mut builder,
            other => return err(format!("invalid flag in regex options: {other}")),
        };
    }
    builder.size_limit(1 << 20);
    builder.build().map_err(|e| {
        // The library's text spans lines and draws carets: fine for a log, not for a client.
        tracing::debug!(pattern, detail = %e, "regular expression refused");
        use regex_syntax::ast::ErrorKind;
        let unsupported = regex_syntax::ast::parse::Parser::new()
            .parse(pattern)
            .err()
            .is_some_and(|e| {
                matches!(
                    e.kind(),
                    ErrorKind::UnsupportedLookAround | ErrorKind::UnsupportedBackreference
                )
            });
        QueryError::new(if unsupported {
            "Invalid regular expression: look-around and back-references are not supported"
        } else {
            "Invalid regular expression"
        })
    })
}

impl Clause {
    fn matches(&self, doc: &Document) -> bool {
        match self {
            Clause::And(list) => list.iter().all(|s| s.matches(doc)),
            Clause::Or(list) => list.iter().any(|s| s.matches(doc)),
            Clause::Nor(list) => !list.iter().any(|s| s.matches(doc)),
            Clause::Field { path, ops } => {
                let branches = lookup(doc, path);
                ops.iter().all(|op| op.matches(&branches))
            }
        }
    }
}

/// Each branch's value, and for arrays each element too (MongoDB's implicit array matching).
fn each_value<'a>(branches: &[Branch<'a>], mut f: impl FnMut(&'a Value) -> bool) -> bool {
    for v in branches.iter().flatten() {
        if f(v) {
            return true;
        }
        if let Value::Array(items) = v {
            if items.iter().any(&mut f) {
                return true;
            }
        }
    }
    false
}

fn eq_matches(branches: &[Branch<'_>], target: &Value) -> bool {
    if matches!(target, Value::Null) && branches.iter().any(Option::is_none) {
        return true;
    }
    each_value(branches, |v| equal(v, target))
}

fn pattern_matches(branches: &[Branch<'_>], patterns: &[Pattern]) -> bool {
    patterns.iter().any(|p| match p {
        Pattern::Value(v) => eq_matches(branches, v),
        Pattern::Regex(re) => regex_matches(branches, re),
    })
}

fn regex_matches(branches: &[Branch<'_>], re: &regex::Regex) -> bool {
    each_value(branches, |v| match v {
        Value::String(s) => re.is_match(s),
        Value::Regex { pattern, .. } => pattern == re.as_str(),
        _ => false,
    })
}

fn type_matches(v: &Value, spec: TypeSpec) -> bool {
    match spec {
        TypeSpec::Rank(r) => type_rank(v) == r && !matches!(v, Value::Array(_)),
        TypeSpec::Array => matches!(v, Value::Array(_)),
        TypeSpec::Number => matches!(v, Value::Number(_) | Value::Long(_) | Value::Decimal(_)),
        TypeSpec::Integer => {
            matches!(v, Value::Number(n) if n.fract() == 0.0) || matches!(v, Value::Long(_))
        }
        TypeSpec::Double => matches!(v, Value::Number(_)),
    }
}

impl Op {
    fn matches(&self, branches: &[Branch<'_>]) -> bool {
        match self {
            Op::Eq(v) => eq_matches(branches, v),
            Op::Ne(v) => !eq_matches(branches, v),
            Op::Cmp(dir, or_equal, target) => {
                if matches!(target, Value::Null) {
                    // Only $gte/$lte null match, and then null or missing.
                    return *or_equal && eq_matches(branches, target);
                }
                each_value(branches, |v| {
                    type_rank(v) == type_rank(target) && {
                        let c = compare(v, target);
                        c == *dir || (*or_equal && c == Ordering::Equal)
                    }
                })
            }
            Op::In(patterns) => pattern_matches(branches, patterns),
            Op::Nin(patterns) => !pattern_matches(branches, patterns),
            Op::Exists(want) => branches.iter().any(Option::is_some) == *want,
            Op::Type(specs) => branches.iter().flatten().any(|v| {
                specs.iter().any(|s| {
                    type_matches(v, *s)
                        || matches!(v, Value::Array(items) if items.iter().any(|e| type_matches(e, *s)))
                })
            }),
            Op::Size(n) => branches
                .iter()
                .flatten()
                .any(|v| matches!(v, Value::Array(items) if items.len() == *n)),
            Op::Mod(divisor, remainder) => each_value(branches, |v| match v {
                Value::Number(x) if x.is_finite() => (x.trunc() % divisor) == *remainder,
                _ => false,
            }),
            Op::Regex(re) => regex_matches(branches, re),
            Op::All(values) => values.iter().all(|target| match target {
                Value::Object(spec) if spec.contains_key("$elemMatch") => {
                    parse_operators(spec, 0).is_ok_and(|ops| ops.iter().all(|op| op.matches(branches)))
                }
                _ => eq_matches(branches, target),
            }),
            Op::ElemMatchOps(ops) => branches.iter().flatten().any(|v| match v {
                Value::Array(items) => items.iter().any(|item| {
                    let single = [Some(item)];
                    ops.iter().all(|op| op.matches_single(&single))
                }),
                _ => false,
            }),
            Op::ElemMatchDoc(selector) => branches.iter().flatten().any(|v| match v {
                Value::Array(items) => items
                    .iter()
                    .any(|item| matches!(item, Value::Object(d) if selector.matches(d))),
                _ => false,
            }),
            Op::Not(ops) => !ops.iter().all(|op| op.matches(branches)),
            Op::Never => false,
        }
    }

    /// Inside `$elemMatch`, an element is tested as itself: an array element that is an
    /// array is not expanded again.
    fn matches_single(&self, single: &[Branch<'_>; 1]) -> bool {
        match (self, single[0]) {
            (Op::Eq(t), Some(v)) => equal(v, t),
            (Op::Ne(t), Some(v)) => !equal(v, t),
            (Op::Cmp(dir, or_equal, t), Some(v)) => {
                type_rank(v) == type_rank(t) && {
                    let c = compare(v, t);
                    c == *dir || (*or_equal && c == Ordering::Equal)
                }
            }
            _ => self.matches(single),
        }
    }
}
