//! Python's value semantics as PyMISP relies on them, emulated on JSON values:
//! truthiness, `int()`, `str.strip()`, `repr(float)`, `str()` of numbers, ISO dates and
//! `str(datetime.fromisoformat(...))`, and PyMISP's `_int_to_str`.

use crate::fsutil::{civil_from_days, days_in_month};
use serde_json::Value;

/// Python's truthiness of a JSON value.
pub(crate) fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Python's `int(v)` for what JSON can hold (used for manifest timestamps too).
pub(crate) fn py_int_of(v: &Value) -> Option<i64> {
    py_int(v)
}

/// Python's `int(v)` for what JSON can hold.
pub(crate) fn py_int(v: &Value) -> Option<i64> {
    match v {
        Value::Bool(b) => Some(*b as i64),
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 9.2e18)
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => {
            let t = py_strip(s);
            let (neg, digits) = match t.as_bytes().first() {
                Some(b'-') => (true, &t[1..]),
                Some(b'+') => (false, &t[1..]),
                _ => (false, t),
            };
            if digits.is_empty()
                || digits.starts_with('_')
                || digits.ends_with('_')
                || digits.contains("__")
                || !digits.bytes().all(|c| c.is_ascii_digit() || c == b'_')
            {
                return None;
            }
            let n: i64 = digits.replace('_', "").parse().ok()?;
            Some(if neg { -n } else { n })
        }
        _ => None,
    }
}

/// PyMISP's `_int_to_str` applied to one value of a dict.
pub(crate) fn py_int_to_str(v: Value) -> Value {
    match v {
        Value::Number(n) if n.is_i64() || n.is_u64() => Value::String(n.to_string()),
        Value::Object(m) => {
            Value::Object(m.into_iter().map(|(k, v)| (k, py_int_to_str(v))).collect())
        }
        other => other,
    }
}

/// Python's `str.strip()` (Unicode whitespace, including U+001C..U+001F).
pub(crate) fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// Python's `str()` of a JSON number.
pub(crate) fn py_number_str(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    py_float_repr(f)
}

/// Python's `repr(float)`: shortest round-trip digits, scientific when the exponent is
/// below -4 or at least 16.
pub(crate) fn py_float_repr(f: f64) -> String {
    if !f.is_finite() {
        return if f.is_nan() {
            "nan".into()
        } else if f > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let sci = format!("{f:e}"); // e.g. "-1.5e-7", "1e16"
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if neg { "-" } else { "" };
    if !(-4..16).contains(&exp) {
        let (head, tail) = digits.split_at(1);
        let m = if tail.is_empty() {
            head.to_string()
        } else {
            format!("{head}.{tail}")
        };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{m}e{esign}{:02}", exp.abs());
    }
    let point = exp + 1; // digits before the decimal point
    let body = if point <= 0 {
        format!("0.{}{}", "0".repeat((-point) as usize), digits)
    } else if (point as usize) >= digits.len() {
        format!("{}{}.0", digits, "0".repeat(point as usize - digits.len()))
    } else {
        let (a, b) = digits.split_at(point as usize);
        format!("{a}.{b}")
    };
    format!("{sign}{body}")
}

/// A string of ASCII digits as a number.
fn num(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// `date.fromisoformat` for `YYYY-MM-DD` and `YYYYMMDD`.
fn iso_date(s: &str) -> Option<(i64, u32, u32)> {
    let (y, m, d) = match s.len() {
        10 if s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-' => {
            (num(&s[0..4])?, num(&s[5..7])?, num(&s[8..10])?)
        }
        8 => (num(&s[0..4])?, num(&s[4..6])?, num(&s[6..8])?),
        _ => return None,
    };
    let y = y as i64;
    (y >= 1 && d >= 1 && d <= days_in_month(y, m)).then_some((y, m, d))
}

/// PyMISP's event date: an ISO date, the date of an ISO date-time, or a timestamp.
pub(crate) fn py_date(v: &Value) -> Option<(i64, u32, u32)> {
    match v {
        Value::String(s) => iso_date(s).or_else(|| {
            let head = s.get(..10)?;
            let rest = &s[10..];
            if rest.starts_with('T') || rest.starts_with(' ') {
                iso_date(head)
            } else {
                None
            }
        }),
        Value::Number(n) => {
            let secs = n.as_f64()?.floor();
            if !secs.is_finite() {
                return None;
            }
            Some(civil_from_days((secs as i64).div_euclid(86_400)))
        }
        _ => None,
    }
}

/// `str(datetime.fromisoformat(s))` (Python 3.11 rules for the common forms).
pub(crate) fn py_datetime_str(s: &str) -> Option<String> {
    if !s.is_ascii() {
        return None;
    }
    let (date, rest) = if s.len() >= 10 && s.as_bytes()[4] == b'-' {
        (iso_date(&s[..10])?, &s[10..])
    } else if s.len() >= 8 {
        (iso_date(&s[..8])?, &s[8..])
    } else {
        return None;
    };
    let (mut hh, mut mm, mut ss, mut us) = (0, 0, 0, 0);
    let mut tz: Option<String> = None;
    if !rest.is_empty() {
        let time = &rest[1..]; // any single separator character
        let tz_at = time.find(['Z', '+', '-']).unwrap_or(time.len());
        let (clock, zone) = time.split_at(tz_at);
        let clock = clock.trim_end();
        (hh, mm, ss, us) = parse_clock(clock)?;
        if !zone.is_empty() {
            tz = Some(parse_zone(zone)?);
        }
    }
    let (y, m, d) = date;
    let mut out = format!("{y:04}-{m:02}-{d:02} {hh:02}:{mm:02}:{ss:02}");
    if us != 0 {
        out.push_str(&format!(".{us:06}"));
    }
    if let Some(z) = tz {
        out.push_str(&z);
    }
    Some(out)
}

fn parse_clock(clock: &str) -> Option<(u32, u32, u32, u32)> {
    let (main, frac) = match clock.find(['.', ',']) {
        Some(i) => (&clock[..i], Some(&clock[i + 1..])),
        None => (clock, None),
    };
    let parts: Vec<&str> = if main.contains(':') {
        main.split(':').collect()
    } else {
        main.as_bytes()
            .chunks(2)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect()
    };
    if parts.is_empty() || parts.len() > 3 || parts.iter().any(|p| p.len() != 2) {
        return None;
    }
    let hh = num(parts[0])?;
    let mm = parts.get(1).map_or(Some(0), |p| num(p))?;
    let ss = parts.get(2).map_or(Some(0), |p| num(p))?;
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    let us = match frac {
        None => 0,
        Some(f) => {
            if parts.len() != 3 || f.is_empty() || !f.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let mut six: String = f.chars().take(6).collect();
            while six.len() < 6 {
                six.push('0');
            }
            num(&six)?
        }
    };
    Some((hh, mm, ss, us))
}

fn parse_zone(zone: &str) -> Option<String> {
    if zone == "Z" {
        return Some("+00:00".into());
    }
    let sign = &zone[..1];
    let (hh, mm, ss, us) = parse_clock(&zone[1..])?;
    if (hh, mm, ss, us) == (0, 0, 0, 0) {
        return Some("+00:00".into());
    }
    let mut out = format!("{sign}{hh:02}:{mm:02}");
    if ss != 0 || us != 0 {
        out.push_str(&format!(":{ss:02}"));
    }
    if us != 0 {
        out.push_str(&format!(".{us:06}"));
    }
    Some(out)
}

#[cfg(test)]
mod tests;
