//! An event's `hashes.csv` values as PyMISP's `MISPEvent.attributes_hashes("md5")`
//! gives them: md5 of every event attribute value, then of every object attribute value.

use super::{cut, shown, MAX_EVENT_HASHES};
use crate::json_scan::{first_byte, for_each_element, is_null, members, raw_truthy, small_value};
use crate::pyformat::{py_datetime_str, py_number_str, py_strip};
use md5::{Digest, Md5};
use serde_json::value::RawValue;
use serde_json::Value;

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

/// The md5 values of the event's attributes, then of its objects' attributes.
pub(super) fn attribute_hashes(
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

/// The values of one event attribute (a list value gives one per element).
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
pub(super) fn md5_hex(s: &str) -> String {
    crate::fsutil::hex(&Md5::digest(s.as_bytes()))
}
