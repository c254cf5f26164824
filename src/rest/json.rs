//! EJSON values as Rocket.Chat's REST answers show them: plain JSON, dates as ISO 8601
//! strings (`2024-01-02T03:04:05.678Z`), ids as strings.

use crate::model::Value;
use base64::Engine as _;

/// A value as REST JSON.
pub fn to_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Null => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        // Whole numbers as JavaScript's JSON.stringify writes them (`0`, never `0.0`).
        Value::Number(n) if n.fract() == 0.0 && n.abs() < 9_007_199_254_740_992.0 => {
            (*n as i64).into()
        }
        Value::Number(n) => {
            serde_json::Number::from_f64(*n).map_or(serde_json::Value::Null, Into::into)
        }
        Value::Long(n) => (*n).into(),
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => items.iter().map(to_json).collect(),
        Value::Object(doc) => doc
            .iter()
            .map(|(k, v)| (k.clone(), to_json(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        Value::Date(ms) => iso_date(*ms).map_or(serde_json::Value::Null, Into::into),
        Value::Binary { bytes, .. } => base64::engine::general_purpose::STANDARD
            .encode(bytes)
            .into(),
        Value::ObjectId(oid) => oid.to_hex().into(),
        Value::Regex { pattern, .. } => pattern.as_str().into(),
        Value::Decimal(text) => text.as_str().into(),
    }
}

/// Milliseconds since the epoch as JavaScript's `Date.toISOString()` writes them.
pub fn iso_date(ms: f64) -> Option<String> {
    if !ms.is_finite() {
        return None;
    }
    let total = ms.floor() as i64;
    let (days, in_day) = (total.div_euclid(86_400_000), total.rem_euclid(86_400_000));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s, milli) = (
        in_day / 3_600_000,
        in_day / 60_000 % 60,
        in_day / 1000 % 60,
        in_day % 1000,
    );
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z"
    ))
}

/// `YYYY-MM-DDTHH:MM:SS(.mmm)?Z` back to milliseconds since the epoch (what clients send in
/// query strings); anything else is `None`.
pub fn parse_iso_date(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || !text.ends_with('Z') || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, m, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let milli = match text.get(19..text.len() - 1)? {
        "" => 0,
        frac => {
            let digits = frac.strip_prefix('.')?;
            let padded = format!("{:0<3}", digits.get(..digits.len().min(3))?);
            padded.parse::<i64>().ok()?
        }
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    // Days since 1970-01-01 from the civil date (the inverse of `iso_date`'s algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((((days * 24 + h) * 60 + m) * 60 + s) as f64 * 1000.0 + milli as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_read_back_to_what_they_print() {
        for ms in [0.0, 1_700_000_000_123.0, 951_782_400_000.0, -86_400_000.0] {
            let text = iso_date(ms).unwrap();
            assert_eq!(parse_iso_date(&text), Some(ms), "{text}");
        }
        assert_eq!(
            parse_iso_date("2024-01-02T03:04:05Z"),
            Some(1_704_164_645_000.0)
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-02 03:04:05Z",
            "yesterday",
        ] {
            assert_eq!(parse_iso_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_print_as_javascript_iso_strings() {
        assert_eq!(iso_date(0.0).as_deref(), Some("1970-01-01T00:00:00.000Z"));
        assert_eq!(
            iso_date(1_704_164_645_678.0).as_deref(),
            Some("2024-01-02T03:04:05.678Z")
        );
        assert_eq!(iso_date(-1.0).as_deref(), Some("1969-12-31T23:59:59.999Z"));
        assert_eq!(
            iso_date(951_782_400_000.0).as_deref(),
            Some("2000-02-29T00:00:00.000Z")
        );
        assert_eq!(iso_date(f64::NAN), None);
    }

    #[test]
    fn whole_numbers_print_as_javascript_prints_them() {
        for (n, text) in [
            (0.0, "0"),
            (-0.0, "0"),
            (7.0, "7"),
            (1.5, "1.5"),
            (1e300, "1e+300"),
        ] {
            assert_eq!(to_json(&Value::Number(n)).to_string(), text, "{n}");
        }
        assert_eq!(to_json(&Value::Number(f64::NAN)), serde_json::Value::Null);
    }
}
