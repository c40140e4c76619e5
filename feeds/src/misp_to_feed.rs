//! Low side: one MISP event (an API export, `{"Event": {...}}`) converted to the feed form
//! PyMISP's `MISPEvent.to_feed()` writes, so that the high side stores exactly the bytes
//! whose blake3 crossed. Pure: no I/O; "now" is a parameter.
//!
//! Reproduced from PyMISP (`pymisp/mispevent.py`, `pymisp/abstract.py`, `to_feed` and the
//! `from_dict` loaders before it):
//! - kept fields, in PyMISP's order (each class's `_fields_for_feed`, sorted, then its
//!   lists): event `analysis`, `date`, `extends_uuid`, `info`, `protected`,
//!   `publish_timestamp`, `published`, `threat_level_id`, `timestamp`, `uuid`, then
//!   `Orgc` (`name`, `uuid`), `Tag`, `Attribute`, `Object`, `EventReport`; attribute
//!   `category`, `comment`, `data`, `deleted`, `disable_correlation`, `first_seen`,
//!   `last_seen`, (`object_relation`), `timestamp`, `to_ids`, `type`, `uuid`, `value`,
//!   `Tag`; object `comment`, `deleted`, `description`, `first_seen`, `last_seen`,
//!   `meta-category`, `name`, `template_uuid`, `template_version`, `timestamp`, `uuid`,
//!   `ObjectReference`, `Attribute`; reference `comment`, `object_uuid`,
//!   `referenced_uuid`, `relationship_type`, `timestamp`, `uuid`; report `content`,
//!   `deleted`, `name`, `timestamp`, `uuid`; tag `colour`, `local`, `name`,
//!   `relationship_type`. Everything else (`id`, `Org`, `event_creator_email`,
//!   `RelatedEvent`, `ShadowAttribute`, `SharingGroup`, `Galaxy`, `distribution`, ...) is
//!   dropped;
//! - values: integers become strings at the top level of each of those objects
//!   (`_int_to_str`), timestamps are `int()` of what was given, `date` is ISO, datetimes
//!   (`first_seen`, `last_seen`, a `datetime` attribute's value) are `isoformat()`,
//!   `to_ids` goes through `make_bool`, `published` is true only when it is JSON `true`;
//! - defaults: `analysis` 2, `threat_level_id` 4, `protected` false, `extends_uuid` "",
//!   `comment` "", `disable_correlation` false, object `description` `<unknown>` and
//!   `meta-category` `misc`, missing timestamps and date take "now";
//! - tags: identical tags count once, non-exportable tags are dropped (kept with
//!   [`FeedForm::keep_non_exportable_tags`]), local event tags are dropped when
//!   [`FeedForm::with_local_tags`] is false;
//! - distributions: an event whose `distribution` is outside
//!   [`FeedForm::valid_distributions`] is not exported at all ([`to_feed`] returns
//!   `None`); attributes, objects, object attributes and reports outside it are left out;
//! - object attributes whose value is null or blank after stripping whitespace and NULs
//!   are left out; a list value of an event attribute becomes one attribute per element;
//! - the text is Python's `json.dumps` (`", "` and `": "` separators, non-ASCII escaped).
//!
//! Deliberate differences, for lack of PyMISP's data files: an attribute without
//! `category` or `to_ids` keeps none (PyMISP takes the type's defaults from
//! `describeTypes.json`), a category that does not fit the type is kept (PyMISP replaces
//! it by the default), an object without `template_uuid` keeps none (PyMISP derives a
//! uuid5 from the name or takes the template's), a naive datetime is taken as UTC (PyMISP
//! takes the machine's zone), a missing uuid is derived from the event uuid and position
//! (PyMISP makes a random one), and `CryptographicKey` is dropped (PyMISP cannot export
//! it and fails the whole event).

use crate::misp_event::{
    manifest_tag, py_date, py_datetime_str, py_float_repr, py_int, py_int_to_str, py_strip,
    py_truthy, tag_identity, ManifestTag,
};
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// The options of `MISPEvent.to_feed` gapferry exposes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedForm {
    /// Distributions exported (PyMISP's default: 0 to 5, everything).
    pub valid_distributions: Vec<i64>,
    /// Keep local event tags (PyMISP's `with_local_tags`, default true).
    pub with_local_tags: bool,
    /// Keep tags marked `exportable: false` (PyMISP always drops them).
    pub keep_non_exportable_tags: bool,
    /// MISP object templates, for what an object or object attribute leaves out.
    pub object_templates: ObjectTemplates,
}

/// One MISP object template (`misp-objects/objects/<name>/definition.json`): the
/// defaults PyMISP takes from it when an object is of a known template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectTemplate {
    /// `uuid`, the object's `template_uuid`.
    pub uuid: Value,
    /// `version`, the object's `template_version`.
    pub version: Value,
    /// `description`.
    pub description: Value,
    /// `meta-category`.
    pub meta_category: Value,
    /// `attributes`: per object relation, `misp-attribute`, `categories`, `to_ids`,
    /// `disable_correlation`.
    pub attributes: Map<String, Value>,
}

/// MISP object templates by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObjectTemplates(pub HashMap<String, ObjectTemplate>);

impl ObjectTemplates {
    /// Reads every `<name>/definition.json` under `dir` (a misp-objects `objects`
    /// directory, e.g. PyMISP's `data/misp-objects/objects`); unreadable or malformed
    /// definitions are skipped.
    pub fn load(dir: &Path) -> std::io::Result<ObjectTemplates> {
        let mut out = HashMap::new();
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path().join("definition.json");
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let Ok(Value::Object(d)) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            let (Some(Value::String(name)), Some(uuid), Some(version), Some(Value::Object(attrs))) = (
                d.get("name"),
                d.get("uuid"),
                d.get("version"),
                d.get("attributes"),
            ) else {
                continue;
            };
            out.insert(
                name.clone(),
                ObjectTemplate {
                    uuid: uuid.clone(),
                    version: version.clone(),
                    description: d.get("description").cloned().unwrap_or(Value::Null),
                    meta_category: d.get("meta-category").cloned().unwrap_or(Value::Null),
                    attributes: attrs.clone(),
                },
            );
        }
        Ok(ObjectTemplates(out))
    }
}

impl Default for FeedForm {
    fn default() -> Self {
        FeedForm {
            valid_distributions: vec![0, 1, 2, 3, 4, 5],
            with_local_tags: true,
            keep_non_exportable_tags: false,
            object_templates: ObjectTemplates::default(),
        }
    }
}

/// Why an event cannot be put in feed form (PyMISP refuses it too).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("cannot be converted to MISP feed form: {0}; fix the event in the source MISP, or send it with --misp-feed-form=false")]
pub struct FeedFormError(pub String);

/// An object being built, keys in insertion order.
#[derive(Default)]
struct Obj(Vec<(String, Out)>);

enum Out {
    Json(Value),
    Obj(Obj),
    List(Vec<Out>),
}

impl Obj {
    fn put(&mut self, k: &str, v: Out) {
        self.0.push((k.to_string(), v));
    }
    fn val(&mut self, k: &str, v: Value) {
        self.put(k, Out::Json(v));
    }
}

type R<T> = Result<T, FeedFormError>;

fn err<T>(s: impl Into<String>) -> R<T> {
    Err(FeedFormError(s.into()))
}

fn secs(now: SystemTime) -> i64 {
    match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A present, non-null member.
fn get<'a>(m: &'a Map<String, Value>, k: &str) -> Option<&'a Value> {
    m.get(k).filter(|v| !v.is_null())
}

/// `int(v)` as PyMISP's `_datetime_to_timestamp` takes it.
fn timestamp(v: Option<&Value>, what: &str, now: i64) -> R<Value> {
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
fn loaded_timestamp(m: &Map<String, Value>, what: &str, now: i64) -> R<Value> {
    timestamp(get(m, "timestamp"), what, now)
}

/// `datetime.fromisoformat(s).isoformat()`, or `None` when PyMISP would skip the value.
fn iso_datetime(v: &Value) -> Option<String> {
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
fn derived_uuid(event_uuid: &str, path: &str) -> String {
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
fn distribution_ok(m: &Map<String, Value>, what: &str, opts: &FeedForm, max: i64) -> R<bool> {
    match get(m, "distribution") {
        None => Ok(true),
        Some(v) => match py_int(v) {
            Some(d) if (0..=max).contains(&d) => Ok(opts.valid_distributions.contains(&d)),
            _ => err(format!("{what} has distribution {v}, not 0 to {max}")),
        },
    }
}

/// A `Tag` list loaded as PyMISP loads it (identical tags once), in feed form.
fn tags(list: Option<&Value>, what: &str, opts: &FeedForm, with_local: bool) -> R<Option<Out>> {
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
fn make_bool(v: &Value, what: &str) -> R<bool> {
    Ok(match v {
        Value::Bool(b) => *b,
        Value::Number(n) if n.is_i64() || n.is_u64() => n.as_f64() != Some(0.0),
        Value::String(s) => !(s.is_empty() || s == "0"),
        other if !py_truthy(other) => false,
        other => return err(format!("{what} `to_ids` {other} is not a boolean")),
    })
}

/// `data`: base64 as PyMISP re-encodes it (decoded, then encoded without line breaks).
fn data(v: &Value) -> Option<Value> {
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

struct Ctx<'a> {
    opts: &'a FeedForm,
    now: i64,
    uuid: String,
}

/// One attribute in feed form; `relation` for object attributes.
fn attribute(
    a: &Map<String, Value>,
    value: Value,
    relation: Option<&Value>,
    definition: Option<&Map<String, Value>>,
    what: &str,
    cx: &Ctx,
) -> R<Obj> {
    let a = match a.get("Attribute") {
        Some(Value::Object(inner)) => inner,
        _ => a,
    };
    // An object attribute of a known template takes what it leaves out from it.
    let mut with_defaults;
    let a = match definition {
        Some(def) => {
            with_defaults = a.clone();
            for (key, from) in [
                ("type", "misp-attribute"),
                ("disable_correlation", "disable_correlation"),
                ("to_ids", "to_ids"),
            ] {
                if get(a, key).is_none() {
                    if let Some(v) = get(def, from) {
                        with_defaults.insert(key.into(), v.clone());
                    }
                }
            }
            if !a.contains_key("category") {
                if let Some(Value::Array(c)) = def.get("categories") {
                    if let Some(first) = c.first() {
                        with_defaults.insert("category".into(), first.clone());
                    }
                }
            }
            &with_defaults
        }
        None => a,
    };
    let ty = match get(a, "type") {
        Some(t) => t.clone(),
        None => return err(format!("{what} has no `type`")),
    };
    let is_datetime = ty == "datetime";
    let mut o = Obj::default();
    if let Some(c) = get(a, "category") {
        o.val("category", py_int_to_str(c.clone()));
    }
    o.val(
        "comment",
        py_int_to_str(
            get(a, "comment")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        ),
    );
    if let Some(d) = get(a, "data").and_then(data) {
        o.val("data", d);
    }
    if let Some(d) = get(a, "deleted") {
        o.val("deleted", py_int_to_str(d.clone()));
    }
    o.val(
        "disable_correlation",
        py_int_to_str(
            get(a, "disable_correlation")
                .cloned()
                .unwrap_or(Value::Bool(false)),
        ),
    );
    for k in ["first_seen", "last_seen"] {
        if let Some(t) = get(a, k).filter(|v| py_truthy(v)).and_then(iso_datetime) {
            o.val(k, Value::String(t));
        }
    }
    if let Some(r) = relation {
        o.val("object_relation", py_int_to_str(r.clone()));
    }
    o.val(
        "timestamp",
        loaded_timestamp(a, &format!("{what} timestamp"), cx.now)?,
    );
    if let Some(t) = get(a, "to_ids") {
        o.val("to_ids", Value::Bool(make_bool(t, what)?));
    }
    o.val("type", py_int_to_str(ty));
    let uuid = match get(a, "uuid") {
        Some(u) => py_int_to_str(u.clone()),
        None => Value::String(derived_uuid(&cx.uuid, what)),
    };
    o.val("uuid", uuid);
    let value = if is_datetime {
        match value.as_str().and_then(|_| iso_datetime(&value)) {
            Some(s) => Value::String(s),
            None if value.is_string() => {
                return err(format!("{what} value {value} is not a valid datetime"))
            }
            None => value,
        }
    } else {
        value
    };
    o.val("value", py_int_to_str(value));
    if let Some(t) = tags(a.get("Tag"), what, cx.opts, true)? {
        o.put("Tag", t);
    }
    Ok(o)
}

fn object(ob: &Map<String, Value>, i: usize, cx: &Ctx) -> R<Option<Obj>> {
    let ob = match ob.get("Object") {
        Some(Value::Object(inner)) => inner,
        _ => ob,
    };
    let what = format!("object {i}");
    let Some(name) = ob.get("name") else {
        return err(format!("{what} has no `name`"));
    };
    if !distribution_ok(ob, &what, cx.opts, 5)? {
        return Ok(None);
    }
    let uuid = match get(ob, "uuid") {
        Some(u) => py_int_to_str(u.clone()),
        None => Value::String(derived_uuid(&cx.uuid, &what)),
    };
    // PyMISP's template: its fields are the object's defaults; its attribute defaults
    // apply only while the object names the same template uuid and version.
    let found = name
        .as_str()
        .and_then(|n| cx.opts.object_templates.0.get(n));
    let template = found.filter(|t| {
        get(ob, "template_uuid")
            .filter(|v| py_truthy(v))
            .is_none_or(|u| *u == t.uuid)
            && get(ob, "template_version")
                .filter(|v| py_truthy(v))
                .is_none_or(|v| py_int(v).is_some() && py_int(v) == py_int(&t.version))
    });
    let from_template = |k: &str, f: fn(&ObjectTemplate) -> &Value| -> Option<Value> {
        get(ob, k)
            .cloned()
            .or_else(|| found.map(f).filter(|v| !v.is_null()).cloned())
    };
    let mut o = Obj::default();
    o.val(
        "comment",
        py_int_to_str(
            get(ob, "comment")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        ),
    );
    if let Some(d) = get(ob, "deleted") {
        o.val("deleted", py_int_to_str(d.clone()));
    }
    o.val(
        "description",
        py_int_to_str(
            from_template("description", |t| &t.description)
                .unwrap_or(Value::String("<unknown>".into())),
        ),
    );
    for k in ["first_seen", "last_seen"] {
        if let Some(t) = get(ob, k).filter(|v| py_truthy(v)).and_then(iso_datetime) {
            o.val(k, Value::String(t));
        }
    }
    o.val(
        "meta-category",
        py_int_to_str(
            from_template("meta-category", |t| &t.meta_category)
                .unwrap_or(Value::String("misc".into())),
        ),
    );
    o.val("name", py_int_to_str(name.clone()));
    if let Some(t) = from_template("template_uuid", |t| &t.uuid) {
        o.val("template_uuid", py_int_to_str(t));
    }
    if let Some(t) = from_template("template_version", |t| &t.version) {
        o.val("template_version", py_int_to_str(t));
    }
    o.val(
        "timestamp",
        loaded_timestamp(ob, &format!("{what} timestamp"), cx.now)?,
    );
    o.val("uuid", uuid.clone());
    if let Some(refs) = get(ob, "ObjectReference").filter(|v| py_truthy(v)) {
        let Value::Array(refs) = refs else {
            return err(format!("{what} `ObjectReference` is not a list"));
        };
        let mut out = Vec::new();
        for (j, r) in refs.iter().enumerate() {
            let rw = format!("{what} reference {j}");
            let Value::Object(r) = r else {
                return err(format!("{rw} is not an object"));
            };
            let r = match r.get("ObjectReference") {
                Some(Value::Object(inner)) => inner,
                _ => r,
            };
            let (Some(referenced), Some(relationship)) =
                (r.get("referenced_uuid"), r.get("relationship_type"))
            else {
                return err(format!(
                    "{rw} lacks `referenced_uuid` or `relationship_type`"
                ));
            };
            let mut ro = Obj::default();
            ro.val(
                "comment",
                py_int_to_str(
                    get(r, "comment")
                        .cloned()
                        .unwrap_or(Value::String(String::new())),
                ),
            );
            let object_uuid = match r.get("object_uuid") {
                Some(v) if py_truthy(v) => v.clone(),
                _ => uuid.clone(),
            };
            ro.val("object_uuid", py_int_to_str(object_uuid));
            ro.val("referenced_uuid", py_int_to_str(referenced.clone()));
            ro.val("relationship_type", py_int_to_str(relationship.clone()));
            ro.val(
                "timestamp",
                timestamp(get(r, "timestamp"), &format!("{rw} timestamp"), cx.now)?,
            );
            let ruuid = match get(r, "uuid") {
                Some(u) => py_int_to_str(u.clone()),
                None => Value::String(derived_uuid(&cx.uuid, &rw)),
            };
            ro.val("uuid", ruuid);
            out.push(Out::Obj(ro));
        }
        if !out.is_empty() {
            o.put("ObjectReference", Out::List(out));
        }
    }
    let mut attrs = Vec::new();
    if let Some(list) = get(ob, "Attribute").filter(|v| py_truthy(v)) {
        let Value::Array(list) = list else {
            return err(format!("{what} `Attribute` is not a list"));
        };
        for (j, a) in list.iter().enumerate() {
            let aw = format!("{what} attribute {j}");
            let Value::Object(a) = a else {
                return err(format!("{aw} is not an object"));
            };
            let Some(relation) = a.get("object_relation") else {
                return err(format!("{aw} has no `object_relation`"));
            };
            let value = match get(a, "value") {
                None => continue,
                Some(Value::String(s)) => {
                    let v = py_strip(s).trim_matches('\0');
                    if v.is_empty() {
                        continue;
                    }
                    Value::String(v.to_string())
                }
                Some(v) => v.clone(),
            };
            if !distribution_ok(a, &aw, cx.opts, 5)? {
                continue;
            }
            let definition = template.and_then(|t| match t.attributes.get(relation.as_str()?) {
                Some(Value::Object(d)) => Some(d),
                // Unknown to the template: no defaults.
                _ => None,
            });
            attrs.push(Out::Obj(attribute(
                a,
                value,
                Some(relation),
                definition,
                &aw,
                cx,
            )?));
        }
    }
    o.put("Attribute", Out::List(attrs));
    Ok(Some(o))
}

fn report(r: &Map<String, Value>, i: usize, cx: &Ctx) -> R<Option<Obj>> {
    let r = match r.get("EventReport") {
        Some(Value::Object(inner)) => inner,
        _ => r,
    };
    let what = format!("event report {i}");
    if !distribution_ok(r, &what, cx.opts, 5)? {
        return Ok(None);
    }
    let (Some(name), Some(content)) = (get(r, "name"), get(r, "content")) else {
        return err(format!("{what} lacks `name` or `content`"));
    };
    let mut o = Obj::default();
    o.val("content", py_int_to_str(content.clone()));
    if let Some(d) = r.get("deleted").filter(|v| py_truthy(v)) {
        o.val("deleted", py_int_to_str(d.clone()));
    }
    o.val("name", py_int_to_str(name.clone()));
    o.val(
        "timestamp",
        loaded_timestamp(r, &format!("{what} timestamp"), cx.now)?,
    );
    let uuid = match get(r, "uuid") {
        Some(u) => py_int_to_str(u.clone()),
        None => Value::String(derived_uuid(&cx.uuid, &what)),
    };
    o.val("uuid", uuid);
    Ok(Some(o))
}

/// The feed form of one `{"Event": {...}}` document (or a bare event object), as
/// PyMISP's `MISPEvent.to_feed()` with `opts` writes it; `None` when the event's
/// distribution is not exported. `now` stands for PyMISP's "now" (missing timestamps).
pub fn to_feed(doc: &[u8], opts: &FeedForm, now: SystemTime) -> R<Option<Vec<u8>>> {
    let top: Value = serde_json::from_slice(doc).map_err(|e| FeedFormError(e.to_string()))?;
    let Value::Object(mut top) = top else {
        return err("the document is not a JSON object");
    };
    let e = match top.remove("Event") {
        Some(Value::Object(e)) => e,
        Some(_) => return err("`Event` is not an object"),
        None => top,
    };
    let now_s = secs(now);
    let Some(info) = get(&e, "info") else {
        return err("it has no `info` (title)");
    };
    if !distribution_ok(&e, "the event", opts, 4)? {
        return Ok(None);
    }
    let small = |k: &str, lo: i64, hi: i64, default: i64| -> R<Value> {
        match get(&e, k) {
            None => Ok(Value::String(default.to_string())),
            Some(v) => match py_int(v) {
                Some(n) if (lo..=hi).contains(&n) => Ok(Value::String(n.to_string())),
                _ => err(format!("`{k}` {v} is not {lo} to {hi}")),
            },
        }
    };
    let uuid = match get(&e, "uuid") {
        Some(Value::String(u)) => u.clone(),
        _ => return err("it has no `uuid`"),
    };
    let cx = Ctx {
        opts,
        now: now_s,
        uuid: uuid.clone(),
    };
    let mut o = Obj::default();
    o.val("analysis", small("analysis", 0, 2, 2)?);
    let date = match e.get("date").filter(|v| py_truthy(v)) {
        Some(d) => py_date(d).ok_or_else(|| FeedFormError(format!("date {d} is not a date")))?,
        None => crate::fsutil::civil_from_days(now_s.div_euclid(86_400)),
    };
    o.val(
        "date",
        Value::String(format!("{:04}-{:02}-{:02}", date.0, date.1, date.2)),
    );
    o.val(
        "extends_uuid",
        py_int_to_str(
            get(&e, "extends_uuid")
                .cloned()
                .unwrap_or(Value::String(String::new())),
        ),
    );
    o.val("info", py_int_to_str(info.clone()));
    o.val(
        "protected",
        py_int_to_str(get(&e, "protected").cloned().unwrap_or(Value::Bool(false))),
    );
    o.val(
        "publish_timestamp",
        timestamp(
            e.get("publish_timestamp").filter(|v| !v.is_null()),
            "publish_timestamp",
            now_s,
        )?,
    );
    o.val(
        "published",
        Value::Bool(e.get("published") == Some(&Value::Bool(true))),
    );
    o.val("threat_level_id", small("threat_level_id", 1, 4, 4)?);
    o.val("timestamp", loaded_timestamp(&e, "timestamp", now_s)?);
    o.val("uuid", Value::String(uuid));

    let orgc = match e.get("Orgc") {
        Some(Value::Object(m)) if !m.is_empty() => match m.get("Organisation") {
            Some(Value::Object(inner)) => inner,
            _ => m,
        },
        _ => return err("it has no `Orgc` (creating organisation)"),
    };
    let mut org = Obj::default();
    for k in ["name", "uuid"] {
        match get(orgc, k) {
            Some(v) => org.val(k, py_int_to_str(v.clone())),
            None => return err(format!("its `Orgc` has no `{k}`")),
        }
    }
    o.put("Orgc", Out::Obj(org));
    o.put(
        "Tag",
        tags(e.get("Tag"), "the event", opts, opts.with_local_tags)?
            .unwrap_or(Out::List(Vec::new())),
    );

    if let Some(list) = e.get("Attribute").filter(|v| py_truthy(v)) {
        let Value::Array(list) = list else {
            return err("`Attribute` is not a list");
        };
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            let what = format!("attribute {i}");
            let Value::Object(a) = a else {
                return err(format!("{what} is not an object"));
            };
            let inner = match a.get("Attribute") {
                Some(Value::Object(inner)) => inner,
                _ => a,
            };
            let Some(value) = get(inner, "value") else {
                return err(format!("{what} has no `value`"));
            };
            if !distribution_ok(inner, &what, opts, 5)? {
                continue;
            }
            match value {
                Value::Array(values) => {
                    for (j, v) in values.iter().enumerate() {
                        let w = format!("{what} value {j}");
                        out.push(Out::Obj(attribute(inner, v.clone(), None, None, &w, &cx)?));
                    }
                }
                v => out.push(Out::Obj(attribute(
                    inner,
                    v.clone(),
                    None,
                    None,
                    &what,
                    &cx,
                )?)),
            }
        }
        o.put("Attribute", Out::List(out));
    }
    if let Some(list) = e.get("Object").filter(|v| py_truthy(v)) {
        let Value::Array(list) = list else {
            return err("`Object` is not a list");
        };
        let mut out = Vec::new();
        for (i, ob) in list.iter().enumerate() {
            let Value::Object(ob) = ob else {
                return err(format!("object {i} is not an object"));
            };
            if let Some(x) = object(ob, i, &cx)? {
                out.push(Out::Obj(x));
            }
        }
        o.put("Object", Out::List(out));
    }
    if let Some(list) = e.get("EventReport").filter(|v| py_truthy(v)) {
        let Value::Array(list) = list else {
            return err("`EventReport` is not a list");
        };
        let mut out = Vec::new();
        for (i, r) in list.iter().enumerate() {
            let Value::Object(r) = r else {
                return err(format!("event report {i} is not an object"));
            };
            if let Some(x) = report(r, i, &cx)? {
                out.push(Out::Obj(x));
            }
        }
        o.put("EventReport", Out::List(out));
    }
    let mut top = Obj::default();
    top.put("Event", Out::Obj(o));
    let mut text = String::with_capacity(doc.len() + 4096);
    write_out(&Out::Obj(top), &mut text);
    Ok(Some(text.into_bytes()))
}

/// Python's `json.dumps` of one value.
fn write_out(o: &Out, w: &mut String) {
    match o {
        Out::Json(v) => write_value(v, w),
        Out::List(items) => {
            w.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    w.push_str(", ");
                }
                write_out(x, w);
            }
            w.push(']');
        }
        Out::Obj(Obj(members)) => {
            w.push('{');
            for (i, (k, v)) in members.iter().enumerate() {
                if i > 0 {
                    w.push_str(", ");
                }
                write_str(k, w);
                w.push_str(": ");
                write_out(v, w);
            }
            w.push('}');
        }
    }
}

fn write_value(v: &Value, w: &mut String) {
    match v {
        Value::Null => w.push_str("null"),
        Value::Bool(b) => w.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) if n.is_i64() || n.is_u64() => w.push_str(&n.to_string()),
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or(0.0);
            let r = py_float_repr(f);
            w.push_str(match r.as_str() {
                "inf" => "Infinity",
                "-inf" => "-Infinity",
                "nan" => "NaN",
                other => other,
            });
        }
        Value::String(s) => write_str(s, w),
        Value::Array(items) => {
            w.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    w.push_str(", ");
                }
                write_value(x, w);
            }
            w.push(']');
        }
        Value::Object(m) => {
            w.push('{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    w.push_str(", ");
                }
                write_str(k, w);
                w.push_str(": ");
                write_value(x, w);
            }
            w.push('}');
        }
    }
}

/// A JSON string as Python writes it with `ensure_ascii`.
fn write_str(s: &str, w: &mut String) {
    w.push('"');
    for c in s.chars() {
        match c {
            '"' => w.push_str("\\\""),
            '\\' => w.push_str("\\\\"),
            '\n' => w.push_str("\\n"),
            '\r' => w.push_str("\\r"),
            '\t' => w.push_str("\\t"),
            '\u{8}' => w.push_str("\\b"),
            '\u{c}' => w.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    w.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => w.push(c),
        }
    }
    w.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ts: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(ts)
    }

    fn feed(v: Value, opts: &FeedForm) -> Option<Value> {
        to_feed(v.to_string().as_bytes(), opts, at(1_700_000_000))
            .unwrap()
            .map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn low_side_fields_go_and_defaults_come() {
        let ev = serde_json::json!({"Event": {
            "id": "12", "uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x",
            "Org": {"id": "1", "name": "us"}, "event_creator_email": "a@b",
            "Orgc": {"id": "2", "name": "them", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
            "RelatedEvent": [], "ShadowAttribute": [], "distribution": "1",
            "Tag": [{"name": "tlp:white", "exportable": true}, {"name": "internal", "exportable": false}],
            "Attribute": [{"type": "ip-dst", "category": "Network activity", "value": "1.2.3.4",
                           "to_ids": "1", "timestamp": 1600000000, "distribution": "5", "id": "9",
                           "uuid": "11111111-1111-4111-8111-111111111111"}],
        }});
        let out = feed(ev.clone(), &FeedForm::default()).unwrap();
        let e = &out["Event"];
        for gone in [
            "id",
            "Org",
            "event_creator_email",
            "RelatedEvent",
            "ShadowAttribute",
            "distribution",
        ] {
            assert!(e.get(gone).is_none(), "{gone}");
        }
        assert_eq!(e["analysis"], "2");
        assert_eq!(e["threat_level_id"], "4");
        assert_eq!(e["timestamp"], "1700000000");
        assert_eq!(e["date"], "2023-11-14");
        assert_eq!(e["published"], false);
        assert_eq!(
            e["Orgc"],
            serde_json::json!({"name": "them", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"})
        );
        assert_eq!(e["Tag"].as_array().unwrap().len(), 1);
        let a = &e["Attribute"][0];
        assert_eq!(a["to_ids"], true);
        assert_eq!(a["timestamp"], "1600000000");
        assert!(a.get("id").is_none() && a.get("distribution").is_none());
        // Restricted distributions: the attribute (5) goes, then the whole event (1).
        let only = |d: Vec<i64>| FeedForm {
            valid_distributions: d,
            ..FeedForm::default()
        };
        let out = feed(ev.clone(), &only(vec![1])).unwrap();
        assert_eq!(out["Event"]["Attribute"], serde_json::json!([]));
        assert!(feed(ev.clone(), &only(vec![3, 5])).is_none());
        // Non-exportable tags kept on request.
        let keep = FeedForm {
            keep_non_exportable_tags: true,
            ..FeedForm::default()
        };
        assert_eq!(
            feed(ev, &keep).unwrap()["Event"]["Tag"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn python_text_and_refusals() {
        let ev = br#"{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "caf\u00e9 \ud83d\ude00", "Orgc": {"name": "o", "uuid": "u"}, "timestamp": "5", "publish_timestamp": "5", "date": "2020-01-02", "published": true}}"#;
        let out = to_feed(ev, &FeedForm::default(), at(0)).unwrap().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with(r#"{"Event": {"analysis": "2", "date": "2020-01-02", "extends_uuid": "", "info": "caf\u00e9 \ud83d\ude00", "protected": false"#), "{text}");
        assert!(
            text.ends_with(r#""Orgc": {"name": "o", "uuid": "u"}, "Tag": []}}"#),
            "{text}"
        );
        for (bad, why) in [
            (
                r#"{"Event": {"uuid": "u", "Orgc": {"name": "o", "uuid": "u"}}}"#,
                "info",
            ),
            (r#"{"Event": {"uuid": "u", "info": "x"}}"#, "Orgc"),
            (
                r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o"}}}"#,
                "uuid",
            ),
            (
                r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o", "uuid": "u"}, "analysis": "7"}}"#,
                "analysis",
            ),
            (
                r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o", "uuid": "u"}, "Attribute": [{"value": "v"}]}}"#,
                "type",
            ),
            (r#"[1]"#, "not a JSON object"),
        ] {
            let e = to_feed(bad.as_bytes(), &FeedForm::default(), at(0)).unwrap_err();
            assert!(e.to_string().contains(why), "{why}: {e}");
        }
    }
}
