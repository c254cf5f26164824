//! MongoDB's ordering and equality of values across types.

use crate::model::Value;
use std::cmp::Ordering;

/// BSON's canonical type order: null < numbers < strings < objects < arrays < binary <
/// ObjectId < booleans < dates < regular expressions.
pub fn type_rank(v: &Value) -> u8 {
    match v {
        Value::Null => 2,
        Value::Number(_) | Value::Long(_) | Value::Decimal(_) => 3,
        Value::String(_) => 4,
        Value::Object(_) => 5,
        Value::Array(_) => 6,
        Value::Binary { .. } => 7,
        Value::ObjectId(_) => 8,
        Value::Bool(_) => 9,
        Value::Date(_) => 10,
        Value::Regex { .. } => 12,
    }
}

fn number(v: &Value) -> f64 {
    match v {
        Value::Number(n) => *n,
        Value::Long(n) => *n as f64,
        Value::Decimal(text) => text.parse().unwrap_or(f64::NAN),
        _ => f64::NAN,
    }
}

/// Total order of two values (MongoDB's comparison for sorting and range queries).
pub fn compare(a: &Value, b: &Value) -> Ordering {
    let (ra, rb) = (type_rank(a), type_rank(b));
    if ra != rb {
        return ra.cmp(&rb);
    }
    match (a, b) {
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Object(x), Value::Object(y)) => {
            for ((kx, vx), (ky, vy)) in x.iter().zip(y.iter()) {
                let by_type = type_rank(vx).cmp(&type_rank(vy));
                if by_type != Ordering::Equal {
                    return by_type;
                }
                let by_key = kx.as_bytes().cmp(ky.as_bytes());
                if by_key != Ordering::Equal {
                    return by_key;
                }
                let by_value = compare(vx, vy);
                if by_value != Ordering::Equal {
                    return by_value;
                }
            }
            x.len().cmp(&y.len())
        }
        (Value::Array(x), Value::Array(y)) => {
            for (vx, vy) in x.iter().zip(y.iter()) {
                let c = compare(vx, vy);
                if c != Ordering::Equal {
                    return c;
                }
            }
            x.len().cmp(&y.len())
        }
        // MongoDB's order: length, then subtype, then bytes.
        (
            Value::Binary {
                subtype: s,
                bytes: x,
            },
            Value::Binary {
                subtype: t,
                bytes: y,
            },
        ) => x
            .len()
            .cmp(&y.len())
            .then_with(|| s.cmp(t))
            .then_with(|| x.cmp(y)),
        (Value::ObjectId(x), Value::ObjectId(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.total_cmp(y),
        (
            Value::Regex {
                pattern: p1,
                flags: f1,
            },
            Value::Regex {
                pattern: p2,
                flags: f2,
            },
        ) => p1.cmp(p2).then_with(|| f1.cmp(f2)),
        (Value::Null, Value::Null) => Ordering::Equal,
        (Value::Long(x), Value::Long(y)) => x.cmp(y),
        (Value::Long(x), Value::Number(y)) => compare_long_with_double(*x, *y),
        (Value::Number(x), Value::Long(y)) => compare_long_with_double(*y, *x).reverse(),
        _ => {
            // Numbers: NaN sorts below every other number, as in MongoDB.
            let (x, y) = (number(a), number(b));
            match (x.is_nan(), y.is_nan()) {
                (true, true) => Ordering::Equal,
                (true, false) => Ordering::Less,
                (false, true) => Ordering::Greater,
                _ => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            }
        }
    }
}

/// An int64 against a double, exactly: the int64's nearest double decides unless it ties,
/// and a tie means the double is an integer that `i128` holds exactly.
fn compare_long_with_double(long: i64, double: f64) -> Ordering {
    if double.is_nan() {
        return Ordering::Greater;
    }
    match (long as f64).partial_cmp(&double) {
        Some(Ordering::Equal) => i128::from(long).cmp(&(double as i128)),
        Some(other) => other,
        None => Ordering::Equal,
    }
}

/// MongoDB equality: like [`compare`] giving `Equal`, so embedded documents must have the
/// same fields in the same order, and `1` equals `1.0`.
pub fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y.iter())
                    .all(|((kx, vx), (ky, vy))| kx == ky && equal(vx, vy))
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(vx, vy)| equal(vx, vy))
        }
        _ => type_rank(a) == type_rank(b) && compare(a, b) == Ordering::Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ObjectId;

    #[test]
    fn int64_beyond_two_to_the_53_compares_exactly_with_doubles() {
        let two53 = 1i64 << 53;
        let long = Value::integer(two53 + 1);
        assert_eq!(
            compare(&long, &Value::Number(two53 as f64)),
            Ordering::Greater
        );
        assert_eq!(
            compare(&long, &Value::Number((two53 + 2) as f64)),
            Ordering::Less
        );
        assert_eq!(
            compare(&Value::Long(i64::MAX), &Value::Number(2f64.powi(63))),
            Ordering::Less,
            "2^63 is above every int64"
        );
        assert_eq!(
            compare(&Value::Long(1 << 60), &Value::Number((1u64 << 60) as f64)),
            Ordering::Equal
        );
        assert!(equal(
            &Value::Long(1 << 60),
            &Value::Number((1u64 << 60) as f64)
        ));
        assert_eq!(compare(&long, &Value::Number(f64::NAN)), Ordering::Greater);
        assert_eq!(compare(&Value::Long(two53 + 3), &long), Ordering::Greater);
    }

    #[test]
    fn types_order_as_bson_does() {
        let ordered = [
            Value::Null,
            Value::Number(-5.0),
            Value::Number(3.0),
            Value::from("a"),
            Value::from("b"),
            Value::Object(Default::default()),
            Value::Array(vec![]),
            Value::binary(vec![1]),
            Value::ObjectId(ObjectId([0; 12])),
            Value::Bool(false),
            Value::Bool(true),
            Value::Date(0.0),
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                compare(&w[0], &w[1]),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
        }
    }
}
