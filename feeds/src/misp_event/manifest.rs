//! An event's `manifest.json` entry as PyMISP's `MISPEvent.manifest` makes it: the
//! creating organisation and the exportable tags (loaded as PyMISP loads them, identical
//! tags once).

use super::{ManifestOrg, ManifestTag, MAX_EVENT_TAGS, MAX_TAG_LIST};
use crate::json_scan::{first_byte, for_each_element, is_null, members, raw_truthy, small_value};
use crate::pyformat::{py_int_to_str, py_strip, py_truthy};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::collections::HashSet;

/// The manifest's `Orgc`: `name` and `uuid` of the creating organisation.
pub(super) fn manifest_org(orgc: Option<&RawValue>) -> Result<ManifestOrg, String> {
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

/// The manifest's `Tag` list: exportable tags, identical ones once.
pub(super) fn manifest_tags(tags: Option<&RawValue>) -> Result<Vec<ManifestTag>, String> {
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
