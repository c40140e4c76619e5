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

use crate::fsutil::civil_from_days;
use crate::pyformat::{py_date, py_int, py_int_to_str, py_truthy};
use attribute::{attribute, InObject};
use object::{object, report};
use pyjson::{write_out, Obj, Out};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;
use thiserror::Error;
use values::{
    distribution_ok, each_object, err, get, list_of, loaded_timestamp, or_default, secs, tags,
    timestamp, unwrapped, Ctx, R,
};

mod attribute;
mod object;
mod pyjson;
#[cfg(test)]
mod tests;
mod values;

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

/// The feed form of one `{"Event": {...}}` document (or a bare event object), as
/// PyMISP's `MISPEvent.to_feed()` with `opts` writes it; `None` when the event's
/// distribution is not exported. `now` stands for PyMISP's "now" (missing timestamps).
pub fn to_feed(doc: &[u8], opts: &FeedForm, now: SystemTime) -> R<Option<Vec<u8>>> {
    let e = event_object(doc)?;
    let Some(info) = get(&e, "info") else {
        return err("it has no `info` (title)");
    };
    if !distribution_ok(&e, "the event", opts, 4)? {
        return Ok(None);
    }
    let uuid = match get(&e, "uuid") {
        Some(Value::String(u)) => u.clone(),
        _ => return err("it has no `uuid`"),
    };
    let cx = Ctx {
        opts,
        now: secs(now),
        uuid,
    };
    let mut o = event_fields(&e, info, &cx)?;
    o.put("Orgc", Out::Obj(orgc(&e)?));
    o.put(
        "Tag",
        tags(e.get("Tag"), "the event", opts, opts.with_local_tags)?
            .unwrap_or(Out::List(Vec::new())),
    );
    if let Some(list) = list_of(&e, "Attribute", "")? {
        o.put("Attribute", Out::List(event_attributes(list, &cx)?));
    }
    if let Some(list) = list_of(&e, "Object", "")? {
        let out = each_object(list, "object", |ob, i| object(ob, i, &cx))?;
        o.put("Object", Out::List(out));
    }
    if let Some(list) = list_of(&e, "EventReport", "")? {
        let out = each_object(list, "event report", |r, i| report(r, i, &cx))?;
        o.put("EventReport", Out::List(out));
    }
    let mut top = Obj::default();
    top.put("Event", Out::Obj(o));
    let mut text = String::with_capacity(doc.len() + 4096);
    write_out(&Out::Obj(top), &mut text);
    Ok(Some(text.into_bytes()))
}

/// The event object of a `{"Event": {...}}` document or of a bare event.
fn event_object(doc: &[u8]) -> R<Map<String, Value>> {
    let top: Value = serde_json::from_slice(doc).map_err(|e| FeedFormError(e.to_string()))?;
    let Value::Object(mut top) = top else {
        return err("the document is not a JSON object");
    };
    match top.remove("Event") {
        Some(Value::Object(e)) => Ok(e),
        Some(_) => err("`Event` is not an object"),
        None => Ok(top),
    }
}

/// The event's own fields, `analysis` to `uuid`, in PyMISP's order.
fn event_fields(e: &Map<String, Value>, info: &Value, cx: &Ctx) -> R<Obj> {
    let small = |k: &str, lo: i64, hi: i64, default: i64| -> R<Value> {
        match get(e, k) {
            None => Ok(Value::String(default.to_string())),
            Some(v) => match py_int(v) {
                Some(n) if (lo..=hi).contains(&n) => Ok(Value::String(n.to_string())),
                _ => err(format!("`{k}` {v} is not {lo} to {hi}")),
            },
        }
    };
    let mut o = Obj::default();
    o.val("analysis", small("analysis", 0, 2, 2)?);
    let date = match e.get("date").filter(|v| py_truthy(v)) {
        Some(d) => py_date(d).ok_or_else(|| FeedFormError(format!("date {d} is not a date")))?,
        None => civil_from_days(cx.now.div_euclid(86_400)),
    };
    o.val(
        "date",
        Value::String(format!("{:04}-{:02}-{:02}", date.0, date.1, date.2)),
    );
    o.val(
        "extends_uuid",
        or_default(e, "extends_uuid", Value::String(String::new())),
    );
    o.val("info", py_int_to_str(info.clone()));
    o.val("protected", or_default(e, "protected", Value::Bool(false)));
    o.val(
        "publish_timestamp",
        timestamp(
            e.get("publish_timestamp").filter(|v| !v.is_null()),
            "publish_timestamp",
            cx.now,
        )?,
    );
    o.val(
        "published",
        Value::Bool(e.get("published") == Some(&Value::Bool(true))),
    );
    o.val("threat_level_id", small("threat_level_id", 1, 4, 4)?);
    o.val("timestamp", loaded_timestamp(e, "timestamp", cx.now)?);
    o.val("uuid", Value::String(cx.uuid.clone()));
    Ok(o)
}

/// The creating organisation, `name` and `uuid`.
fn orgc(e: &Map<String, Value>) -> R<Obj> {
    let orgc = match e.get("Orgc") {
        Some(Value::Object(m)) if !m.is_empty() => unwrapped(m, "Organisation"),
        _ => return err("it has no `Orgc` (creating organisation)"),
    };
    let mut org = Obj::default();
    for k in ["name", "uuid"] {
        match get(orgc, k) {
            Some(v) => org.val(k, py_int_to_str(v.clone())),
            None => return err(format!("its `Orgc` has no `{k}`")),
        }
    }
    Ok(org)
}

/// The event's attributes in feed form, a list value giving one attribute per element.
fn event_attributes(list: &[Value], cx: &Ctx) -> R<Vec<Out>> {
    let mut out = Vec::new();
    for (i, a) in list.iter().enumerate() {
        let what = format!("attribute {i}");
        let Value::Object(a) = a else {
            return err(format!("{what} is not an object"));
        };
        let inner = unwrapped(a, "Attribute");
        let Some(value) = get(inner, "value") else {
            return err(format!("{what} has no `value`"));
        };
        if !distribution_ok(inner, &what, cx.opts, 5)? {
            continue;
        }
        let place = InObject::default();
        match value {
            Value::Array(values) => {
                for (j, v) in values.iter().enumerate() {
                    let w = format!("{what} value {j}");
                    out.push(Out::Obj(attribute(inner, v.clone(), place, &w, cx)?));
                }
            }
            v => out.push(Out::Obj(attribute(inner, v.clone(), place, &what, cx)?)),
        }
    }
    Ok(out)
}
