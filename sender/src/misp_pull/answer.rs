//! Reading restSearch's answer: each event's uuid and timestamp, its bytes kept as sent.

use serde::Deserialize;
use serde_json::value::RawValue;

/// An event of a restSearch answer.
pub(super) struct PulledEvent {
    pub(super) uuid: String,
    pub(super) timestamp: u64,
    pub(super) raw: Box<RawValue>,
}

/// Parses `{"response": [{"Event": {...}}, ...]}`, keeping each element's bytes as sent.
pub(super) fn parse_answer(body: &[u8]) -> Result<Vec<PulledEvent>, String> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        response: Vec<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(rename = "Event")]
        event: Head,
    }
    #[derive(Deserialize)]
    struct Head {
        uuid: String,
        timestamp: serde_json::Value,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(answer.response.len());
    for (i, raw) in answer.response.into_iter().enumerate() {
        let w: Wrapped = serde_json::from_str(raw.get()).map_err(|e| {
            format!("element {i} is not {{\"Event\": {{...}}}} with uuid and timestamp: {e}")
        })?;
        let uuid = w.event.uuid.to_ascii_lowercase();
        if !is_uuid(&uuid) {
            return Err(format!("element {i}: {:?} is not a UUID", w.event.uuid));
        }
        let timestamp = match &w.event.timestamp {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "element {i} ({uuid}): timestamp {} is not Unix seconds",
                w.event.timestamp
            )
        })?;
        events.push(PulledEvent {
            uuid,
            timestamp,
            raw: raw.to_owned(),
        });
    }
    Ok(events)
}

/// `8-4-4-4-12` hex digits: the only names written into the outbox.
pub(super) fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}
