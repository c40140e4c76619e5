//! Objects (with their references and attributes) and event reports in feed form, an
//! object taking what it leaves out from its MISP object template.

use super::attribute::{attribute, InObject};
use super::pyjson::{Obj, Out};
use super::values::{
    distribution_ok, err, first_last_seen, get, list_of, loaded_timestamp, or_default, timestamp,
    unwrapped, uuid_or_derived, Ctx, R,
};
use super::ObjectTemplate;
use crate::pyformat::{py_int, py_int_to_str, py_strip, py_truthy};
use serde_json::{Map, Value};

/// Object `i` in feed form; `None` when its distribution is not exported.
pub(super) fn object(ob: &Map<String, Value>, i: usize, cx: &Ctx) -> R<Option<Obj>> {
    let ob = unwrapped(ob, "Object");
    let what = format!("object {i}");
    let Some(name) = ob.get("name") else {
        return err(format!("{what} has no `name`"));
    };
    if !distribution_ok(ob, &what, cx.opts, 5)? {
        return Ok(None);
    }
    let uuid = uuid_or_derived(ob, cx, &what);
    // PyMISP's template: its fields are the object's defaults; its attribute defaults
    // apply only while the object names the same template uuid and version.
    let found = name
        .as_str()
        .and_then(|n| cx.opts.object_templates.0.get(n));
    let template = found.filter(|t| names_template(ob, t));
    let mut o = object_fields(ob, name, found, &what, cx)?;
    o.val("uuid", uuid.clone());
    if let Some(refs) = list_of(ob, "ObjectReference", &format!("{what} "))? {
        let out = refs
            .iter()
            .enumerate()
            .map(|(j, r)| reference(r, &uuid, &format!("{what} reference {j}"), cx))
            .collect::<R<Vec<Out>>>()?;
        if !out.is_empty() {
            o.put("ObjectReference", Out::List(out));
        }
    }
    let attrs = match list_of(ob, "Attribute", &format!("{what} "))? {
        Some(list) => object_attributes(list, template, &what, cx)?,
        None => Vec::new(),
    };
    o.put("Attribute", Out::List(attrs));
    Ok(Some(o))
}

/// Whether the object names template `t` (or names none): then the template's attribute
/// defaults apply.
fn names_template(ob: &Map<String, Value>, t: &ObjectTemplate) -> bool {
    get(ob, "template_uuid")
        .filter(|v| py_truthy(v))
        .is_none_or(|u| *u == t.uuid)
        && get(ob, "template_version")
            .filter(|v| py_truthy(v))
            .is_none_or(|v| py_int(v).is_some() && py_int(v) == py_int(&t.version))
}

/// The object's own fields, `comment` to `timestamp`, defaults from template `found`.
fn object_fields(
    ob: &Map<String, Value>,
    name: &Value,
    found: Option<&ObjectTemplate>,
    what: &str,
    cx: &Ctx,
) -> R<Obj> {
    let from_template = |k: &str, f: fn(&ObjectTemplate) -> &Value| -> Option<Value> {
        get(ob, k)
            .cloned()
            .or_else(|| found.map(f).filter(|v| !v.is_null()).cloned())
    };
    let mut o = Obj::default();
    o.val(
        "comment",
        or_default(ob, "comment", Value::String(String::new())),
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
    first_last_seen(ob, &mut o);
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
    Ok(o)
}

/// One object reference (`rw` names it) of the object whose uuid is `object_uuid`.
fn reference(r: &Value, object_uuid: &Value, rw: &str, cx: &Ctx) -> R<Out> {
    let Value::Object(r) = r else {
        return err(format!("{rw} is not an object"));
    };
    let r = unwrapped(r, "ObjectReference");
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
        or_default(r, "comment", Value::String(String::new())),
    );
    let object_uuid = match r.get("object_uuid") {
        Some(v) if py_truthy(v) => v.clone(),
        _ => object_uuid.clone(),
    };
    ro.val("object_uuid", py_int_to_str(object_uuid));
    ro.val("referenced_uuid", py_int_to_str(referenced.clone()));
    ro.val("relationship_type", py_int_to_str(relationship.clone()));
    ro.val(
        "timestamp",
        timestamp(get(r, "timestamp"), &format!("{rw} timestamp"), cx.now)?,
    );
    ro.val("uuid", uuid_or_derived(r, cx, rw));
    Ok(Out::Obj(ro))
}

/// The object's attributes in feed form: blank or null values and those whose
/// distribution is not exported are left out.
fn object_attributes(
    list: &[Value],
    template: Option<&ObjectTemplate>,
    what: &str,
    cx: &Ctx,
) -> R<Vec<Out>> {
    let mut attrs = Vec::new();
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
        let place = InObject {
            relation: Some(relation),
            definition,
        };
        attrs.push(Out::Obj(attribute(a, value, place, &aw, cx)?));
    }
    Ok(attrs)
}

/// Event report `i` in feed form; `None` when its distribution is not exported.
pub(super) fn report(r: &Map<String, Value>, i: usize, cx: &Ctx) -> R<Option<Obj>> {
    let r = unwrapped(r, "EventReport");
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
    o.val("uuid", uuid_or_derived(r, cx, &what));
    Ok(Some(o))
}
