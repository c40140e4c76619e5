//! The value rules of the feed form shared by events, attributes, objects and reports:
//! timestamps, datetimes, distributions, tags, `to_ids`, `data`, defaults and the uuid
//! of an element without one.

use super::pyjson::{Obj, Out};
use super::{FeedForm, FeedFormError};
use crate::misp_event::{manifest_tag, tag_identity, ManifestTag};
use crate::pyformat::{py_datetime_str, py_int, py_int_to_str, py_truthy};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

/// What every conversion step is given: the options, "now" and the event uuid.
pub(super) struct Ctx<'a> {
    /// The options of `to_feed`.
    pub(super) opts: &'a FeedForm,
    /// PyMISP's "now", in seconds.
    pub(super) now: i64,
    /// The event uuid (derived uuids start from it).
    pub(super) uuid: String,
}

/// The object under `key` when `m` wraps one (`{"Attribute": {...}}`), else `m`.
pub(super) fn unwrapped<'a>(m: &'a Map<String, Value>, key: &str) -> &'a Map<String, Value> {
    match m.get(key) {
        Some(Value::Object(inner)) => inner,
        _ => m,
    }
}

/// Member `k` with `_int_to_str`, or `default` when absent or null.
pub(super) fn or_default(m: &Map<String, Value>, k: &str, default: Value) -> Value {
    py_int_to_str(get(m, k).cloned().unwrap_or(default))
}

/// The element's `uuid`, or one derived from the event uuid and `what`.
pub(super) fn uuid_or_derived(m: &Map<String, Value>, cx: &Ctx, what: &str) -> Value {
    match get(m, "uuid") {
        Some(u) => py_int_to_str(u.clone()),
        None => Value::String(derived_uuid(&cx.uuid, what)),
    }
}

/// `first_seen` and `last_seen` in ISO form, when set.
pub(super) fn first_last_seen(m: &Map<String, Value>, o: &mut Obj) {
    for k in ["first_seen", "last_seen"] {
        if let Some(t) = get(m, k).filter(|v| py_truthy(v)).and_then(iso_datetime) {
            o.val(k, Value::String(t));
        }
    }
}

/// The list under `key` when truthy; `owner` prefixes the refusal of a non-list.
pub(super) fn list_of<'a>(
    m: &'a Map<String, Value>,
    key: &str,
    owner: &str,
) -> R<Option<&'a Vec<Value>>> {
    match m.get(key).filter(|v| py_truthy(v)) {
        None => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(_) => err(format!("{owner}`{key}` is not a list")),
    }
}

/// Each element of `list` (an object, else refused as `{what} {i}`) converted by `f`,
/// those it leaves out skipped.
pub(super) fn each_object(
    list: &[Value],
    what: &str,
    mut f: impl FnMut(&Map<String, Value>, usize) -> R<Option<Obj>>,
) -> R<Vec<Out>> {
    let mut out = Vec::new();
    for (i, x) in list.iter().enumerate() {
        let Value::Object(x) = x else {
            return err(format!("{what} {i} is not an object"));
        };
        if let Some(converted) = f(x, i)? {
            out.push(Out::Obj(converted));
        }
    }
    Ok(out)
}

/// What a conversion step gives.
pub(super) type R<T> = Result<T, FeedFormError>;

/// A refusal saying `s`.
pub(super) fn err<T>(s: impl Into<String>) -> R<T> {
    Err(FeedFormError(s.into()))
}

/// Seconds since the epoch of `now`.
pub(super) fn secs(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A present, non-null member.
pub(super) fn get<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

/// `int(v)` as PyMISP's `_datetime_to_timestamp` takes it.
pub(super) fn timestamp(v: Option<&Value>, what: &str, now: i64) -> R<Value> {
    match v {
        None => Ok(Value::String(now.to_string())),
        Some(v) => match py_int(v) {
            Some(n) => Ok(Value::String(n.to_string())),
            None => err(format!("{what} {v} is not a timestamp")),
        },
    }
}

/// The timestamp as the `from_dict` loaders set it: taken when truthy, `now` otherwise
/// unless a falsy value was given (then used as is).
pub(super) fn loaded_timestamp(m: &Map<String, Value>, what: &str, now: i64) -> R<Value> {
    timestamp(get(m, "timestamp"), what, now)
}

/// `datetime.fromisoformat(s).isoformat()`, or `None` when PyMISP would skip the value.
pub(super) fn iso_datetime(v: &Value) -> Option<String> {
    let s = match v {
        Value::String(s) => py_datetime_str(s)?,
        Value::Number(n) => {
            let t = n.as_f64()?;
            if !t.is_finite() {
                return None;
            }
            let whole = t.floor() as i64;
            let (y, m, d) = crate::fsutil::civil_from_days(whole.div_euclid(86_400));
            let rem = whole.rem_euclid(86_400);
            let us = ((t - t.floor()) * 1e6).round() as i64;
            let mut s = format!(
                "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60
            );
            if us != 0 {
                s.push_str(&format!(".{us:06}"));
            }
            s.push_str("+00:00");
            s
        }
        _ => return None,
    };
    // `str()` separates with a space, `isoformat()` with `T`; naive is taken as UTC.
    let mut s = s.replacen(' ', "T", 1);
    if s.len() <= 26 && !s[19..].contains(['+', '-']) {
        s.push_str("+00:00");
    }
    Some(s)
}

/// A uuid for an element without one, derived from the event uuid and its position.
pub(super) fn derived_uuid(event_uuid: &str, path: &str) -> String {
    let h = blake3::hash(format!("{event_uuid}/{path}").as_bytes());
    let b = h.as_bytes();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-{}{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        ["8", "9", "a", "b"][(b[8] & 3) as usize],
        &hex[17..20],
        &hex[20..32]
    )
}

/// The distribution check of `to_feed`: false when it is set and not valid.
pub(super) fn distribution_ok(
    m: &Map<String, Value>,
    what: &str,
    opts: &FeedForm,
    max: i64,
) -> R<bool> {
    match get(m, "distribution") {
        None => Ok(true),
        Some(v) => match py_int(v) {
            Some(d) if (0..=max).contains(&d) => Ok(opts.valid_distributions.contains(&d)),
            _ => err(format!("{what} has distribution {v}, not 0 to {max}")),
        },
    }
}

/// A `Tag` list loaded as PyMISP loads it (identical tags once), in feed form.
pub(super) fn tags(
    list: Option<&Value>,
    what: &str,
    opts: &FeedForm,
    with_local: bool,
) -> R<Option<Out>> {
    let list = match list {
        Some(v) if py_truthy(v) => v,
        _ => return Ok(None),
    };
    let Value::Array(items) = list else {
        return err(format!("{what} `Tag` is not a list"));
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (i, t) in items.iter().enumerate() {
        let fields: Map<String, Value> = match t {
            Value::String(name) => {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(name.clone()));
                m
            }
            Value::Object(m) => {
                let m = match m.get("Tag") {
                    Some(Value::Object(inner)) if !inner.is_empty() => inner.clone(),
                    Some(inner) if py_truthy(inner) => {
                        return err(format!("{what} tag {i} has a `Tag` that is not an object"))
                    }
                    _ => m.clone(),
                };
                m.into_iter().filter(|(_, v)| !v.is_null()).collect()
            }
            _ => return err(format!("{what} tag {i} is neither an object nor a name")),
        };
        let identity = serde_json::to_string(&tag_identity(&fields)).unwrap_or_default();
        if !seen.insert(identity) {
            continue;
        }
        let mut shown = fields.clone();
        if opts.keep_non_exportable_tags {
            shown.remove("exportable");
        }
        let tag = manifest_tag(i, &shown).map_err(|e| FeedFormError(format!("{what} {e}")))?;
        let Some(ManifestTag {
            colour,
            local,
            name,
            relationship_type,
        }) = tag
        else {
            continue;
        };
        if !with_local && fields.get("local").is_some_and(py_truthy) {
            continue;
        }
        let mut o = Obj::default();
        o.val("colour", colour);
        o.val("local", local);
        o.val("name", name);
        o.val("relationship_type", relationship_type);
        out.push(Out::Obj(o));
    }
    Ok(Some(Out::List(out)))
}

/// `make_bool`.
pub(super) fn make_bool(v: &Value, what: &str) -> R<bool> {
    Ok(match v {
        Value::Bool(b) => *b,
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_f64() != Some(0.0),
        Value::String(s) => !(s.is_empty() || s == "0"),
        other if !py_truthy(other) => false,
        other => return err(format!("{what} `to_ids` {other} is not a boolean")),
    })
}

/// `data`: base64 as PyMISP re-encodes it (decoded, then encoded without line breaks).
pub(super) fn data(v: &Value) -> Option<Value> {
    match v {
        Value::String(s) if !s.is_empty() => {
            let clean: String = s
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='))
                .collect();
            Some(Value::String(clean))
        }
        other if py_truthy(other) => Some(other.clone()),
        _ => None,
    }
}
