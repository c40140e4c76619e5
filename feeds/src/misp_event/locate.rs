//! Finding the MISP event(s) in a document: `{"Event": ...}`, a bare event, a REST
//! search export or a list of events, as raw slices of the document; and the uuid of a
//! raw event.

use super::{check_uuid, EventError};
use crate::json_scan::{for_each_element, for_each_member, members};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::BTreeMap;

/// `{"Event": <event>}` around a raw event.
pub(crate) fn wrap_event(event: &RawValue) -> Vec<u8> {
    let mut doc = Vec::with_capacity(event.get().len() + 11);
    doc.extend_from_slice(b"{\"Event\":");
    doc.extend_from_slice(event.get().as_bytes());
    doc.push(b'}');
    doc
}

/// The first byte of a raw value.
pub(super) fn first_char(raw: &RawValue) -> u8 {
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
pub(super) fn locate_single(json: &[u8]) -> Result<(&RawValue, bool), EventError> {
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
