//! One MISP event read the way PyMISP's feed tooling reads it: validation, the
//! `manifest.json` entry (`MISPEvent.manifest`) and the `hashes.csv` values
//! (`MISPEvent.attributes_hashes("md5")`), reproduced field for field.
//!
//! What is reproduced from PyMISP (`pymisp/mispevent.py`, `pymisp/abstract.py`):
//! - manifest entry keys, in order: `Orgc` (`name`, `uuid`), `Tag` (each `colour`, `local`,
//!   `name`, `relationship_type`), `info`, `date`, `analysis`, `threat_level_id`,
//!   `timestamp`; `analysis`, `threat_level_id` and `timestamp` are integers, integers
//!   inside `Orgc` and `Tag` become strings (`_int_to_str`), `info` is copied as is;
//! - defaults: `analysis` 2, `threat_level_id` 4, tag `colour` `#ffffff`, `local` false,
//!   `relationship_type` `""`; a tag with `exportable: false` is left out; identical
//!   tags count once; a missing `timestamp` or `date` takes the delivery time (PyMISP takes
//!   "now" too; the date is taken in UTC);
//! - hashes: md5 of every event attribute value then of every object attribute value, in
//!   document order; a value whose type holds `|` (or is `malware-sample`) is split on `|`
//!   and each part hashed; object attribute values are stripped of whitespace and NULs and
//!   skipped when empty or null; a `datetime` value is hashed as Python prints it; a list
//!   value counts as one attribute per element.
//!
//! Deliberate differences: attribute types and categories are not checked against MISP's
//! `describeTypes` list (an event from a newer MISP still passes), and a `datetime` value
//! that is not ISO 8601 is hashed as written where PyMISP would try `dateutil`.
//!
//! Memory: the event is walked, never built into a `serde_json::Value` tree (whose
//! per-element overhead turns 16 MB of `[0,0,...]` into hundreds of MB). Attributes and
//! tags are read one at a time from the borrowed document ([`crate::json_scan`]). What
//! is kept is bounded: at most [`MAX_EVENT_TAGS`] tags in a `Tag` list of at most
//! [`MAX_TAG_LIST`] bytes, [`MAX_EVENT_HASHES`] `hashes.csv` values (16 bytes each), and
//! a list or object of at most 64 KiB where a scalar is expected (`info`, `Orgc` fields,
//! a tag); an event beyond is refused, naming the limit.

use crate::fsutil::{civil_from_days, days_in_month, is_uuid};
use crate::json_scan::{
    first_byte, for_each_element, for_each_member, is_null, members, raw_truthy, small_value,
};
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Most tags one event's manifest entry carries.
pub const MAX_EVENT_TAGS: usize = 10_000;
/// Largest `Tag` list of one event, in bytes of JSON.
pub const MAX_TAG_LIST: usize = 1 << 20;
/// Most `hashes.csv` values (md5 of attribute values) one event gives.
pub const MAX_EVENT_HASHES: usize = 1 << 20;
/// Characters of an offending value quoted in an error message.
const SHOWN: usize = 120;

/// Why a document is not an acceptable MISP event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventError {
    /// The bytes are not JSON.
    #[error("not valid JSON ({0}); it is not a MISP event: re-export it from MISP, or send it as kind `file`")]
    NotJson(String),
    /// Valid JSON, but no MISP event in it.
    #[error("holds no MISP event ({0}); expected {{\"Event\": {{...}}}}: send it as kind `file` or `stix`")]
    NotAnEvent(String),
    /// A REST export or list holding more than one event where one was expected.
    #[error("holds {0} events where one was expected: split it into one document per event (gapferry-send does so for kind `misp`)")]
    SeveralEvents(usize),
    /// An event that PyMISP's feed tooling would refuse too.
    #[error("MISP event {uuid} is malformed: {reason}; nothing was written: fix the event in the source MISP and export it again")]
    Malformed {
        /// The event's uuid, or `(no uuid)`.
        uuid: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The `Orgc` of a manifest entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestOrg {
    /// Organisation name.
    pub name: Value,
    /// Organisation uuid.
    pub uuid: Value,
}

/// One tag of a manifest entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestTag {
    /// Tag colour, `#ffffff` by default.
    pub colour: Value,
    /// Whether the tag is local, false by default.
    pub local: Value,
    /// Tag name.
    pub name: Value,
    /// Relationship type, `""` by default.
    pub relationship_type: Value,
}

/// One value of `manifest.json` (the key is the event uuid), as PyMISP writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The creating organisation.
    #[serde(rename = "Orgc")]
    pub orgc: ManifestOrg,
    /// The exportable event tags.
    #[serde(rename = "Tag")]
    pub tags: Vec<ManifestTag>,
    /// The event title.
    pub info: Value,
    /// The event date, `YYYY-MM-DD`.
    pub date: String,
    /// Analysis state 0..=2.
    pub analysis: i64,
    /// Threat level 1..=4.
    pub threat_level_id: i64,
    /// Last change, seconds since the epoch.
    pub timestamp: i64,
}

/// A validated MISP event ready for a feed directory.
#[derive(Debug, Clone)]
pub struct MispEvent {
    /// The event uuid (names `<uuid>.json`).
    pub uuid: String,
    /// The event timestamp used for "newer wins".
    pub timestamp: i64,
    /// Its `manifest.json` entry.
    pub entry: ManifestEntry,
    /// Its `hashes.csv` values (md5), in PyMISP's order, duplicates kept.
    pub hashes: Vec<[u8; 16]>,
    /// The `{"Event": {...}}` document to write as `<uuid>.json`.
    pub document: Vec<u8>,
}

/// Validates one MISP event (`{"Event": {...}}`, a bare event object, or a REST export
/// or list holding exactly one event), using the current time for missing defaults.
pub fn parse_event(json: &[u8]) -> Result<MispEvent, EventError> {
    parse_event_at(json, SystemTime::now())
}

/// Like [`parse_event`], with `now` standing for the delivery time.
pub fn parse_event_at(json: &[u8], now: SystemTime) -> Result<MispEvent, EventError> {
    let (event, verbatim) = locate_single(json)?;
    let (uuid, timestamp, entry, hashes) = analyse(event, now)?;
    let document = if verbatim {
        json.to_vec()
    } else {
        wrap_event(event)
    };
    Ok(MispEvent {
        uuid,
        timestamp,
        entry,
        hashes,
        document,
    })
}

/// `{"Event": <event>}` around a raw event.
pub(crate) fn wrap_event(event: &RawValue) -> Vec<u8> {
    let mut doc = Vec::with_capacity(event.get().len() + 11);
    doc.extend_from_slice(b"{\"Event\":");
    doc.extend_from_slice(event.get().as_bytes());
    doc.push(b'}');
    doc
}

fn first_char(raw: &RawValue) -> u8 {
    raw.get().as_bytes().first().copied().unwrap_or(b' ')
}

/// The events a document holds, as raw event objects, with whether the document is
/// exactly `{"Event": ...}` (so it can be kept byte for byte).
pub(crate) fn locate_events(json: &[u8]) -> Result<(Vec<&RawValue>, bool), EventError> {
    let top: &RawValue =
        serde_json::from_slice(json).map_err(|e| EventError::NotJson(e.to_string()))?;
    match first_char(top) {
        b'{' => {
            let map: BTreeMap<String, &RawValue> =
                serde_json::from_str(top.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
            if let Some(ev) = map.get("Event") {
                Ok((vec![*ev], map.len() == 1))
            } else if let Some(resp) = map.get("response") {
                Ok((elements(resp)?, false))
            } else if map.contains_key("info") {
                Ok((vec![top], false))
            } else {
                Err(EventError::NotAnEvent(
                    "a JSON object without `Event`, `response` or `info`".into(),
                ))
            }
        }
        b'[' => Ok((elements(top)?, false)),
        _ => Err(EventError::NotAnEvent(
            "the top level is not a JSON object".into(),
        )),
    }
}

fn elements(list: &RawValue) -> Result<Vec<&RawValue>, EventError> {
    if first_char(list) != b'[' {
        return Err(EventError::NotAnEvent(
            "`response` is not a list of events".into(),
        ));
    }
    let items: Vec<&RawValue> =
        serde_json::from_str(list.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            if first_char(item) != b'{' {
                return Err(EventError::NotAnEvent(format!(
                    "element {i} of the event list is not an object"
                )));
            }
            let map: BTreeMap<String, &RawValue> =
                serde_json::from_str(item.get()).map_err(|e| EventError::NotJson(e.to_string()))?;
            if let Some(ev) = map.get("Event") {
                Ok(*ev)
            } else if map.contains_key("info") {
                Ok(item)
            } else {
                Err(EventError::NotAnEvent(format!(
                    "element {i} of the event list has no `Event`"
                )))
            }
        })
        .collect()
}

/// The single event of a document, walked member by member and element by element so
/// that no part of it is built into a tree; with whether the document is exactly
/// `{"Event": ...}`. Same answers as [`locate_events`], one event expected.
fn locate_single(json: &[u8]) -> Result<(&RawValue, bool), EventError> {
    let top: &RawValue =
        serde_json::from_slice(json).map_err(|e| EventError::NotJson(e.to_string()))?;
    match first_char(top) {
        b'{' => {
            let (mut event, mut response, mut info, mut others) = (None, None, false, false);
            for_each_member(top, |key, value| {
                match key {
                    "Event" => event = Some(value),
                    "response" => response = Some(value),
                    "info" => info = true,
                    _ => {}
                }
                others |= key != "Event";
                Ok(())
            })
            .map_err(EventError::NotJson)?;
            if let Some(ev) = event {
                Ok((ev, !others))
            } else if let Some(resp) = response {
                Ok((single_element(resp)?, false))
            } else if info {
                Ok((top, false))
            } else {
                Err(EventError::NotAnEvent(
                    "a JSON object without `Event`, `response` or `info`".into(),
                ))
            }
        }
        b'[' => Ok((single_element(top)?, false)),
        _ => Err(EventError::NotAnEvent(
            "the top level is not a JSON object".into(),
        )),
    }
}

/// The one event of a list of events, counting them without holding them.
fn single_element(list: &RawValue) -> Result<&RawValue, EventError> {
    if first_char(list) != b'[' {
        return Err(EventError::NotAnEvent(
            "`response` is not a list of events".into(),
        ));
    }
    let mut first = None;
    let mut count = 0usize;
    let mut refused = None;
    let walked = for_each_element(list, |i, item| match list_event(i, item) {
        Ok(ev) => {
            first.get_or_insert(ev);
            count += 1;
            Ok(())
        }
        Err(e) => {
            refused = Some(e);
            Err(String::new())
        }
    });
    if let Some(e) = refused {
        return Err(e);
    }
    walked.map_err(EventError::NotJson)?;
    match (count, first) {
        (1, Some(ev)) => Ok(ev),
        (0, _) => Err(EventError::NotAnEvent("an empty list of events".into())),
        (n, _) => Err(EventError::SeveralEvents(n)),
    }
}

/// Element `i` of a list of events: `{"Event": ...}` or a bare event.
fn list_event(i: usize, item: &RawValue) -> Result<&RawValue, EventError> {
    if first_char(item) != b'{' {
        return Err(EventError::NotAnEvent(format!(
            "element {i} of the event list is not an object"
        )));
    }
    let [event, info] = members(item, ["Event", "info"]).map_err(EventError::NotJson)?;
    match (event, info) {
        (Some(ev), _) => Ok(ev),
        (None, Some(_)) => Ok(item),
        (None, None) => Err(EventError::NotAnEvent(format!(
            "element {i} of the event list has no `Event`"
        ))),
    }
}

/// The uuid of a raw event object, when it has a canonical one.
pub(crate) fn raw_event_uuid(event: &RawValue) -> Result<String, String> {
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        uuid: Value,
    }
    if first_char(event) != b'{' {
        return Err("`Event` is not a JSON object".into());
    }
    let head: Head = serde_json::from_str(event.get()).map_err(|e| e.to_string())?;
    check_uuid(&head.uuid)
}

/// The event's uuid in lower case: uuids compare case-insensitively (RFC 4122), so the
/// same event in upper case names the same `<uuid>.json` and meets the same staleness check.
fn check_uuid(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) if is_uuid(s) => Ok(s.to_ascii_lowercase()),
        Value::Null => Err("it has no `uuid`".into()),
        other => Err(format!("its uuid {} is not a UUID", shown(other))),
    }
}

/// The members of an event the feed needs, borrowed from the document unparsed.
#[derive(Deserialize)]
struct EventView<'a> {
    #[serde(default, borrow)]
    uuid: Option<&'a RawValue>,
    #[serde(default, borrow)]
    info: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "Orgc")]
    orgc: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "Tag")]
    tag: Option<&'a RawValue>,
    #[serde(default, borrow)]
    date: Option<&'a RawValue>,
    #[serde(default, borrow)]
    analysis: Option<&'a RawValue>,
    #[serde(default, borrow)]
    threat_level_id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    timestamp: Option<&'a RawValue>,
    #[serde(default, borrow)]
    distribution: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "Attribute")]
    attribute: Option<&'a RawValue>,
    #[serde(default, borrow, rename = "Object")]
    object: Option<&'a RawValue>,
}

/// A value quoted in an error message, cut to [`SHOWN`] characters.
fn shown(v: &Value) -> String {
    cut(v.to_string())
}

/// `text` cut to [`SHOWN`] characters.
fn cut(mut text: String) -> String {
    if let Some((at, _)) = text.char_indices().nth(SHOWN) {
        text.truncate(at);
        text.push_str("...");
    }
    text
}

type Analysed = (String, i64, ManifestEntry, Vec<[u8; 16]>);

fn analyse(event: &RawValue, now: SystemTime) -> Result<Analysed, EventError> {
    if first_char(event) != b'{' {
        return Err(EventError::Malformed {
            uuid: "(no uuid)".into(),
            reason: "`Event` is not a JSON object".into(),
        });
    }
    let view: EventView = serde_json::from_str(event.get()).map_err(|e| EventError::Malformed {
        uuid: "(no uuid)".into(),
        reason: e.to_string(),
    })?;
    let uuid = small_value(view.uuid, "`uuid`")
        .and_then(|v| check_uuid(&v))
        .map_err(|reason| EventError::Malformed {
            uuid: "(no uuid)".into(),
            reason,
        })?;
    let bad = |reason: String| EventError::Malformed {
        uuid: uuid.clone(),
        reason,
    };
    let now_secs = match now.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    };

    if is_null(view.info) {
        return Err(bad("it has no `info` (title)".into()));
    }
    if !is_null(view.distribution) {
        let v = small_value(view.distribution, "`distribution`").map_err(&bad)?;
        match py_int(&v) {
            Some(0..=4) => {}
            _ => {
                return Err(bad(format!(
                    "distribution {} is not 0, 1, 2, 3 or 4",
                    shown(&v)
                )))
            }
        }
    }
    let threat_level_id = if is_null(view.threat_level_id) {
        4
    } else {
        let v = small_value(view.threat_level_id, "`threat_level_id`").map_err(&bad)?;
        match py_int(&v) {
            Some(v @ 1..=4) => v,
            _ => {
                return Err(bad(format!(
                    "threat_level_id {} is not 1, 2, 3 or 4",
                    shown(&v)
                )))
            }
        }
    };
    let analysis = if is_null(view.analysis) {
        2
    } else {
        let v = small_value(view.analysis, "`analysis`").map_err(&bad)?;
        match py_int(&v) {
            Some(v @ 0..=2) => v,
            _ => return Err(bad(format!("analysis {} is not 0, 1 or 2", shown(&v)))),
        }
    };
    let timestamp = if raw_truthy(view.timestamp) {
        let v = small_value(view.timestamp, "`timestamp`").map_err(&bad)?;
        py_int(&v).ok_or_else(|| bad(format!("timestamp {} is not an integer", shown(&v))))?
    } else {
        now_secs
    };
    let (y, m, d) = if raw_truthy(view.date) {
        let v = small_value(view.date, "`date`").map_err(&bad)?;
        py_date(&v).ok_or_else(|| bad(format!("date {} is not YYYY-MM-DD", shown(&v))))?
    } else {
        civil_from_days(now_secs.div_euclid(86_400))
    };
    let date = format!("{y:04}-{m:02}-{d:02}");

    let orgc = manifest_org(view.orgc).map_err(&bad)?;
    let tags = manifest_tags(view.tag).map_err(&bad)?;
    let hashes = attribute_hashes(view.attribute, view.object).map_err(&bad)?;
    let info = small_value(view.info, "`info`").map_err(&bad)?;

    let entry = ManifestEntry {
        orgc,
        tags,
        info,
        date,
        analysis,
        threat_level_id,
        timestamp,
    };
    Ok((uuid, timestamp, entry, hashes))
}

fn manifest_org(orgc: Option<&RawValue>) -> Result<ManifestOrg, String> {
    let orgc = match orgc {
        Some(o) if raw_truthy(Some(o)) => o,
        _ => return Err("it has no `Orgc` (creating organisation)".into()),
    };
    if first_byte(orgc) != b'{' {
        return Err("its `Orgc` is not an object".into());
    }
    let [inner, name, uuid] = members(orgc, ["Organisation", "name", "uuid"])?;
    let (name, uuid) = match inner {
        Some(inner) if first_byte(inner) == b'{' => {
            let [name, uuid] = members(inner, ["name", "uuid"])?;
            (name, uuid)
        }
        Some(_) => return Err("its `Orgc.Organisation` is not an object".into()),
        None => (name, uuid),
    };
    let field = |k: &str, v: Option<&RawValue>| {
        if is_null(v) {
            return Err(format!("its `Orgc` has no `{k}`"));
        }
        Ok(py_int_to_str(small_value(v, &format!("`Orgc.{k}`"))?))
    };
    Ok(ManifestOrg {
        name: field("name", name)?,
        uuid: field("uuid", uuid)?,
    })
}

fn manifest_tags(tags: Option<&RawValue>) -> Result<Vec<ManifestTag>, String> {
    let tags = match tags {
        Some(t) if raw_truthy(Some(t)) => t,
        _ => return Ok(Vec::new()),
    };
    if first_byte(tags) != b'[' {
        return Err("its `Tag` is not a list".into());
    }
    if tags.get().len() > MAX_TAG_LIST {
        return Err(format!(
            "its `Tag` list is {} bytes, above the {MAX_TAG_LIST} bytes a feed's manifest entry may carry",
            tags.get().len()
        ));
    }
    // Loaded as PyMISP does: non-null fields only, identical tags once. Each distinct
    // tag becomes its manifest tag at once; the first one without a name is the error,
    // unless a later tag is malformed, which PyMISP finds first.
    let mut identities: HashSet<String> = HashSet::new();
    let mut out = Vec::new();
    let mut loaded = 0usize;
    let mut nameless: Option<String> = None;
    for_each_element(tags, |i, t| {
        if i >= MAX_EVENT_TAGS {
            return Err(format!(
                "it has more than {MAX_EVENT_TAGS} tags; split them over several events"
            ));
        }
        let t = small_value(Some(t), &format!("tag {i}"))?;
        let fields: Map<String, Value> = match t {
            Value::String(name) => {
                let mut m = Map::new();
                m.insert("name".into(), Value::String(name));
                m
            }
            Value::Object(m) => {
                let m = match m.get("Tag") {
                    Some(inner) if py_truthy(inner) => match inner {
                        Value::Object(inner) => inner.clone(),
                        _ => return Err(format!("tag {i} has a `Tag` that is not an object")),
                    },
                    _ => m,
                };
                m.into_iter().filter(|(_, v)| !v.is_null()).collect()
            }
            _ => return Err(format!("tag {i} is neither an object nor a name")),
        };
        // A `Map` is ordered by key: its JSON text identifies it.
        let identity = serde_json::to_string(&tag_identity(&fields)).map_err(|e| e.to_string())?;
        if identities.insert(identity) {
            if nameless.is_none() {
                match manifest_tag(loaded, &fields) {
                    Ok(Some(tag)) => out.push(tag),
                    Ok(None) => {}
                    Err(e) => nameless = Some(e),
                }
            }
            loaded += 1;
        }
        Ok(())
    })?;
    match nameless {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The manifest form of loaded tag `i`, `None` when it is not exportable.
pub(crate) fn manifest_tag(
    i: usize,
    t: &Map<String, Value>,
) -> Result<Option<ManifestTag>, String> {
    if let Some(exportable) = t.get("exportable") {
        if !py_truthy(exportable) {
            return Ok(None);
        }
    }
    let get = |k: &str, default: Value| py_int_to_str(t.get(k).cloned().unwrap_or(default));
    let name = t
        .get("name")
        .cloned()
        .ok_or_else(|| format!("tag {i} has no `name`"))?;
    Ok(Some(ManifestTag {
        colour: get("colour", Value::String("#ffffff".into())),
        local: get("local", Value::Bool(false)),
        name: py_int_to_str(name),
        relationship_type: get("relationship_type", Value::String(String::new())),
    }))
}

/// What PyMISP compares when it drops a duplicate tag (`AbstractMISP.to_dict`).
pub(crate) fn tag_identity(fields: &Map<String, Value>) -> Map<String, Value> {
    fields
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Array(a) if a.is_empty()))
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(py_strip(s).to_string()),
                other => other.clone(),
            };
            (k.clone(), py_int_to_str(v))
        })
        .collect()
}

/// `hashes.csv` values of one event, refusing more than [`MAX_EVENT_HASHES`].
#[derive(Default)]
struct Hashes(Vec<[u8; 16]>);

impl Hashes {
    fn push(&mut self, text: &str) -> Result<(), String> {
        if self.0.len() >= MAX_EVENT_HASHES {
            return Err(format!(
                "the event has more than {MAX_EVENT_HASHES} attribute values to index in hashes.csv; split it into smaller events in the source MISP"
            ));
        }
        self.0.push(md5(text));
        Ok(())
    }
}

/// An attribute's `type` when it is a string.
fn type_of(ty: Option<&RawValue>) -> Option<String> {
    ty.filter(|t| first_byte(t) == b'"')
        .and_then(|t| serde_json::from_str(t.get()).ok())
}

fn attribute_hashes(
    attributes: Option<&RawValue>,
    objects: Option<&RawValue>,
) -> Result<Vec<[u8; 16]>, String> {
    let mut out = Hashes::default();
    if let Some(list) = attributes.filter(|a| raw_truthy(Some(a))) {
        if first_byte(list) != b'[' {
            return Err("its `Attribute` is not a list".into());
        }
        for_each_element(list, |i, a| {
            if first_byte(a) != b'{' {
                return Err(format!("attribute {i} is not an object"));
            }
            let [ty, value] = members(a, ["type", "value"])?;
            let Some(ty) = type_of(ty) else {
                return Err(format!("attribute {i} has no `type`"));
            };
            match value {
                Some(v) if !is_null(Some(v)) => event_attribute_hashes(&ty, v, &mut out)
                    .map_err(|r| format!("attribute {i} ({ty}): {r}")),
                _ => Err(format!("attribute {i} ({ty}) has no `value`")),
            }
        })?;
    }
    if let Some(list) = objects.filter(|o| raw_truthy(Some(o))) {
        if first_byte(list) != b'[' {
            return Err("its `Object` is not a list".into());
        }
        for_each_element(list, |i, o| {
            if first_byte(o) != b'{' {
                return Err(format!("object {i} is not an object"));
            }
            let [attrs] = members(o, ["Attribute"])?;
            let Some(attrs) = attrs.filter(|a| raw_truthy(Some(a))) else {
                return Ok(());
            };
            if first_byte(attrs) != b'[' {
                return Err(format!("object {i} has an `Attribute` that is not a list"));
            }
            for_each_element(attrs, |j, a| {
                if first_byte(a) != b'{' {
                    return Err(format!("attribute {j} of object {i} is not an object"));
                }
                let [ty, value] = members(a, ["type", "value"])?;
                let ty = type_of(ty).unwrap_or_default();
                let value = match value {
                    None => return Ok(()),
                    Some(v) => match first_byte(v) {
                        b'n' => return Ok(()),
                        b'[' | b'{' => {
                            return Err(format!(
                                "attribute {j} of object {i} has a value that is not a scalar: {}",
                                cut(v.get().to_string())
                            ))
                        }
                        _ => small_value(Some(v), "value")?,
                    },
                };
                let value = match value {
                    Value::String(s) => {
                        let s = py_strip(&s).trim_matches('\0');
                        if s.is_empty() {
                            return Ok(());
                        }
                        Value::String(s.to_string())
                    }
                    v => v,
                };
                hash_value(&ty, &value, &mut out)
                    .map_err(|r| format!("attribute {j} of object {i} ({ty}): {r}"))
            })
        })?;
    }
    Ok(out.0)
}

fn event_attribute_hashes(ty: &str, v: &RawValue, out: &mut Hashes) -> Result<(), String> {
    match first_byte(v) {
        b'[' => for_each_element(v, |_, item| {
            if first_byte(item) == b'n' {
                return Err("a null value in its value list".into());
            }
            event_attribute_hashes(ty, item, out)
        }),
        b'{' => Err(format!(
            "its value is not a scalar: {}",
            cut(v.get().to_string())
        )),
        _ => hash_value(ty, &small_value(Some(v), "value")?, out),
    }
}

/// `MISPAttribute.hash_values("md5")`.
fn hash_value(ty: &str, v: &Value, out: &mut Hashes) -> Result<(), String> {
    let composite = ty.contains('|') || ty == "malware-sample";
    let text = match v {
        Value::String(s) if ty == "datetime" => py_datetime_str(s).unwrap_or_else(|| s.clone()),
        Value::String(s) => s.clone(),
        Value::Number(_) | Value::Bool(_) if composite => {
            return Err("a composite value must be a string".into())
        }
        Value::Number(n) => py_number_str(n),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Null | Value::Array(_) | Value::Object(_) => {
            return Err(format!("its value is not a scalar: {}", shown(v)))
        }
    };
    if composite {
        for part in text.split('|') {
            out.push(part)?;
        }
        Ok(())
    } else {
        out.push(&text)
    }
}

/// md5 of a string's UTF-8.
fn md5(s: &str) -> [u8; 16] {
    Md5::digest(s.as_bytes()).into()
}

/// md5 of a string's UTF-8, lower-case hex.
#[cfg(test)]
fn md5_hex(s: &str) -> String {
    crate::fsutil::hex(&Md5::digest(s.as_bytes()))
}

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
fn py_number_str(n: &serde_json::Number) -> String {
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
mod tests {
    use super::*;
    use serde_json::json;

    fn at(ts: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(ts)
    }

    fn event(v: Value) -> Result<MispEvent, EventError> {
        parse_event_at(v.to_string().as_bytes(), at(1_700_000_000))
    }

    fn base() -> Value {
        json!({"Event": {
            "uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f",
            "info": "test",
            "Orgc": {"name": "CIRCL", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        }})
    }

    #[test]
    fn python_float_repr() {
        // Expected strings printed by CPython 3.11's repr().
        for (f, s) in [
            (1.0, "1.0"),
            (1.5, "1.5"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (1e-5, "1e-05"),
            (0.0001, "0.0001"),
            (1.5e-7, "1.5e-07"),
            (-2.0, "-2.0"),
            (0.1, "0.1"),
            (1e22, "1e+22"),
            (12345.678, "12345.678"),
        ] {
            assert_eq!(py_float_repr(f), s, "{f}");
        }
    }

    #[test]
    fn python_datetime_str() {
        // Expected strings printed by CPython 3.11's str(datetime.fromisoformat(s)).
        for (s, want) in [
            ("2020-01-02", Some("2020-01-02 00:00:00")),
            ("20200102", Some("2020-01-02 00:00:00")),
            ("2020-01-02T03:04", Some("2020-01-02 03:04:00")),
            ("2020-01-02T03", Some("2020-01-02 03:00:00")),
            ("2020-01-02 03:04:05", Some("2020-01-02 03:04:05")),
            ("2020-01-02T03:04:05.1", Some("2020-01-02 03:04:05.100000")),
            (
                "2020-01-02T03:04:05.123456789",
                Some("2020-01-02 03:04:05.123456"),
            ),
            ("2020-01-02T03:04:05,5", Some("2020-01-02 03:04:05.500000")),
            ("2020-01-02T03:04:05Z", Some("2020-01-02 03:04:05+00:00")),
            (
                "2020-01-02T03:04:05+02:00",
                Some("2020-01-02 03:04:05+02:00"),
            ),
            (
                "2020-01-02T03:04:05-0130",
                Some("2020-01-02 03:04:05-01:30"),
            ),
            ("2020-01-02T030405", Some("2020-01-02 03:04:05")),
            ("2020-01-02x03:04:05", Some("2020-01-02 03:04:05")),
            (
                "2020-01-02T03:04:05.000+00:00",
                Some("2020-01-02 03:04:05+00:00"),
            ),
            ("2020-01-02T24:00:00", None),
            ("2020-01-02T03:04:05+02", Some("2020-01-02 03:04:05+02:00")),
            (
                "2020-01-02T03:04:05+02:00:30",
                Some("2020-01-02 03:04:05+02:00:30"),
            ),
            (
                "2020-01-02T03:04:05.5Z",
                Some("2020-01-02 03:04:05.500000+00:00"),
            ),
            ("2020-1-2", None),
            (
                "2020-01-02T03:04:05 +02:00",
                Some("2020-01-02 03:04:05+02:00"),
            ),
            ("2020-01-02T0304", Some("2020-01-02 03:04:00")),
        ] {
            assert_eq!(py_datetime_str(s).as_deref(), want, "{s}");
        }
    }

    #[test]
    fn python_int() {
        assert_eq!(py_int(&json!("2")), Some(2));
        assert_eq!(py_int(&json!(" 2 ")), Some(2));
        assert_eq!(py_int(&json!("1_000")), Some(1000));
        assert_eq!(py_int(&json!("2.0")), None);
        assert_eq!(py_int(&json!(2.7)), Some(2));
        assert_eq!(py_int(&json!("")), None);
        assert_eq!(py_int(&json!([])), None);
    }

    #[test]
    fn defaults_and_types() {
        let e = event(base()).unwrap();
        assert_eq!(e.entry.analysis, 2);
        assert_eq!(e.entry.threat_level_id, 4);
        assert_eq!(e.entry.timestamp, 1_700_000_000);
        assert_eq!(e.entry.date, "2023-11-14");
        assert!(e.entry.tags.is_empty());
        // Verbatim document when it is exactly {"Event": ...}.
        assert_eq!(e.document, base().to_string().into_bytes());
        let v = serde_json::to_value(&e.entry).unwrap();
        assert_eq!(v["analysis"], json!(2));
        let keys: Vec<String> = serde_json::from_str::<serde_json::Map<String, Value>>(
            &serde_json::to_string(&e.entry).unwrap(),
        )
        .unwrap()
        .keys()
        .cloned()
        .collect();
        assert_eq!(keys.len(), 7);
        let text = serde_json::to_string(&e.entry).unwrap();
        let order = [
            "\"Orgc\"",
            "\"Tag\"",
            "\"info\"",
            "\"date\"",
            "\"analysis\"",
            "\"threat_level_id\"",
            "\"timestamp\"",
        ];
        let pos: Vec<usize> = order.iter().map(|k| text.find(k).unwrap()).collect();
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    #[test]
    fn tags_like_pymisp() {
        let mut v = base();
        v["Event"]["Tag"] = json!([
            {"name": "tlp:white", "colour": "#ffffff", "exportable": true, "id": 3},
            {"name": "tlp:white", "colour": "#ffffff", "exportable": true, "id": "3"},
            {"name": "hidden", "exportable": false},
            {"Tag": {"name": "wrapped", "colour": "#000000", "local": 0}},
            "plain",
            {"name": 5, "relationship_type": null},
        ]);
        let e = event(v).unwrap();
        let tags = serde_json::to_value(&e.entry.tags).unwrap();
        assert_eq!(
            tags,
            json!([
                {"colour": "#ffffff", "local": false, "name": "tlp:white", "relationship_type": ""},
                {"colour": "#000000", "local": "0", "name": "wrapped", "relationship_type": ""},
                {"colour": "#ffffff", "local": false, "name": "plain", "relationship_type": ""},
                {"colour": "#ffffff", "local": false, "name": "5", "relationship_type": ""},
            ])
        );
    }

    #[test]
    fn hashes_like_pymisp() {
        let mut v = base();
        v["Event"]["Attribute"] = json!([
            {"type": "ip-dst|port", "value": "1.2.3.4|80"},
            {"type": "domain", "value": " spaced "},
            {"type": "comment", "value": ["a", "b"]},
            {"type": "counter", "value": 3},
        ]);
        v["Event"]["Object"] = json!([
            {"name": "file", "Attribute": [
                {"type": "filename", "value": "  x.exe \u{0}"},
                {"type": "text", "value": "   "},
                {"type": "text", "value": null},
                {"type": "malware-sample", "value": "x.exe|0123"},
            ]},
            {"name": "empty"}
        ]);
        let e = event(v).unwrap();
        // The same event through PyMISP 2.5.34.4 gives these values (whitespace is
        // stripped before NULs, so "x.exe " keeps its space).
        let want: Vec<String> = [
            "1.2.3.4", "80", " spaced ", "a", "b", "3", "x.exe ", "x.exe", "0123",
        ]
        .iter()
        .map(|s| md5_hex(s))
        .collect();
        let got: Vec<String> = e.hashes.iter().map(|h| crate::fsutil::hex(h)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases: Vec<(Value, &str)> = vec![
            (json!({"Event": {"info": "x"}}), "no `uuid`"),
            (
                json!({"Event": {"uuid": "../../etc/passwd", "info": "x"}}),
                "not a UUID",
            ),
            (
                json!({"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "Orgc": {"name": "a", "uuid": "b"}}}),
                "no `info`",
            ),
            (
                json!({"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x"}}),
                "no `Orgc`",
            ),
            (
                json!({"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x", "Orgc": {"name": "a"}}}),
                "has no `uuid`",
            ),
        ];
        for (v, want) in cases {
            let err = event(v.clone()).unwrap_err().to_string();
            assert!(err.contains(want), "{v}: {err}");
        }
        let mut v = base();
        v["Event"]["threat_level_id"] = json!("9");
        assert!(event(v)
            .unwrap_err()
            .to_string()
            .contains("threat_level_id"));
        let mut v = base();
        v["Event"]["Attribute"] = json!([{"type": "domain"}]);
        assert!(event(v).unwrap_err().to_string().contains("no `value`"));
        let mut v = base();
        v["Event"]["date"] = json!("yesterday");
        assert!(event(v).unwrap_err().to_string().contains("date"));
        assert!(matches!(
            parse_event(b"not json"),
            Err(EventError::NotJson(_))
        ));
        assert!(matches!(
            parse_event(br#"{"type": "bundle"}"#),
            Err(EventError::NotAnEvent(_))
        ));
        let two = json!({"response": [base(), base()]});
        assert!(matches!(
            parse_event(two.to_string().as_bytes()),
            Err(EventError::SeveralEvents(2))
        ));
    }

    #[test]
    fn bare_and_rest_single_are_wrapped() {
        let bare = base()["Event"].clone();
        let e = event(bare.clone()).unwrap();
        let doc: Value = serde_json::from_slice(&e.document).unwrap();
        assert_eq!(doc, json!({ "Event": bare }));
        let rest = json!({"response": [base()]});
        let e = event(rest).unwrap();
        let doc: Value = serde_json::from_slice(&e.document).unwrap();
        assert_eq!(doc, base());
    }
}
