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
//! Rooms: `locate.rs` finds the event(s) in a document, `manifest.rs` makes the manifest
//! entry, `hashes.rs` the `hashes.csv` values; Python's value formatting is
//! `pyformat.rs`.
//!
//! Memory: the event is walked, never built into a `serde_json::Value` tree (whose
//! per-element overhead turns 16 MB of `[0,0,...]` into hundreds of MB). Attributes and
//! tags are read one at a time from the borrowed document ([`crate::json_scan`]). What
//! is kept is bounded: at most [`MAX_EVENT_TAGS`] tags in a `Tag` list of at most
//! [`MAX_TAG_LIST`] bytes, [`MAX_EVENT_HASHES`] `hashes.csv` values (16 bytes each), and
//! a list or object of at most 64 KiB where a scalar is expected (`info`, `Orgc` fields,
//! a tag); an event beyond is refused, naming the limit.

use crate::fsutil::{civil_from_days, is_uuid};
use crate::json_scan::{is_null, raw_truthy, small_value};
use crate::pyformat::{py_date, py_int};
use hashes::attribute_hashes;
use locate::{first_char, locate_single};
use manifest::{manifest_org, manifest_tags};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};
use thiserror::Error;

mod hashes;
mod locate;
mod manifest;
#[cfg(test)]
mod tests;

pub(crate) use locate::{locate_events, raw_event_uuid, wrap_event};
pub(crate) use manifest::{manifest_tag, tag_identity};

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

/// What [`analyse`] finds: uuid, timestamp, manifest entry and hash values.
type Analysed = (String, i64, ManifestEntry, Vec<[u8; 16]>);

/// Validates one raw event and derives its manifest entry and hash values.
fn analyse(event: &RawValue, now: SystemTime) -> Result<Analysed, EventError> {
    let view = event_view(event)?;
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
    ranged(
        view.distribution,
        "distribution",
        0..=4,
        0,
        "0, 1, 2, 3 or 4",
    )
    .map_err(&bad)?;
    let threat_level_id = ranged(
        view.threat_level_id,
        "threat_level_id",
        1..=4,
        4,
        "1, 2, 3 or 4",
    )
    .map_err(&bad)?;
    let analysis = ranged(view.analysis, "analysis", 0..=2, 2, "0, 1 or 2").map_err(&bad)?;
    let timestamp = if raw_truthy(view.timestamp) {
        let v = small_value(view.timestamp, "`timestamp`").map_err(&bad)?;
        py_int(&v).ok_or_else(|| bad(format!("timestamp {} is not an integer", shown(&v))))?
    } else {
        now_secs
    };
    // Checked in PyMISP's order: the first problem found is the one reported.
    let date = event_date(view.date, now_secs).map_err(&bad)?;
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

/// The members of a raw event the feed needs.
fn event_view(event: &RawValue) -> Result<EventView<'_>, EventError> {
    if first_char(event) != b'{' {
        return Err(EventError::Malformed {
            uuid: "(no uuid)".into(),
            reason: "`Event` is not a JSON object".into(),
        });
    }
    serde_json::from_str(event.get()).map_err(|e| EventError::Malformed {
        uuid: "(no uuid)".into(),
        reason: e.to_string(),
    })
}

/// A small integer field within `range`, `default` when absent or null; otherwise
/// refused saying it is not one of `allowed`.
fn ranged(
    raw: Option<&RawValue>,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
    default: i64,
    allowed: &str,
) -> Result<i64, String> {
    if is_null(raw) {
        return Ok(default);
    }
    let v = small_value(raw, &format!("`{name}`"))?;
    match py_int(&v) {
        Some(n) if range.contains(&n) => Ok(n),
        _ => Err(format!("{name} {} is not {allowed}", shown(&v))),
    }
}

/// The event's `date` as `YYYY-MM-DD`; the UTC date of `now_secs` when absent.
fn event_date(raw: Option<&RawValue>, now_secs: i64) -> Result<String, String> {
    let (y, m, d) = if raw_truthy(raw) {
        let v = small_value(raw, "`date`")?;
        py_date(&v).ok_or_else(|| format!("date {} is not YYYY-MM-DD", shown(&v)))?
    } else {
        civil_from_days(now_secs.div_euclid(86_400))
    };
    Ok(format!("{y:04}-{m:02}-{d:02}"))
}
