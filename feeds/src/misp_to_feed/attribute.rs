//! One attribute in feed form, of the event or of an object: the fields PyMISP's
//! `MISPAttribute` keeps for a feed, an object attribute taking what it leaves out from
//! its object template's definition.

use super::pyjson::Obj;
use super::values::{
    data, err, first_last_seen, get, iso_datetime, loaded_timestamp, make_bool, or_default, tags,
    unwrapped, uuid_or_derived, Ctx, R,
};
use crate::pyformat::py_int_to_str;
use serde_json::{Map, Value};
use std::borrow::Cow;

/// Where an attribute sits: for an object attribute, its relation and the template's
/// definition of that relation.
#[derive(Default, Clone, Copy)]
pub(super) struct InObject<'a> {
    /// `object_relation`.
    pub(super) relation: Option<&'a Value>,
    /// The template's definition of the relation, when the object's template is known.
    pub(super) definition: Option<&'a Map<String, Value>>,
}

/// One attribute in feed form, with `value` (one element of a list value, or the value
/// cleaned of blanks for an object attribute); `what` names it in refusals.
pub(super) fn attribute(
    a: &Map<String, Value>,
    value: Value,
    place: InObject,
    what: &str,
    cx: &Ctx,
) -> R<Obj> {
    let a = with_template_defaults(unwrapped(a, "Attribute"), place.definition);
    let ty = match get(&a, "type") {
        Some(t) => t.clone(),
        None => return err(format!("{what} has no `type`")),
    };
    let is_datetime = ty == "datetime";
    let mut o = Obj::default();
    if let Some(c) = get(&a, "category") {
        o.val("category", py_int_to_str(c.clone()));
    }
    o.val(
        "comment",
        or_default(&a, "comment", Value::String(String::new())),
    );
    if let Some(d) = get(&a, "data").and_then(data) {
        o.val("data", d);
    }
    if let Some(d) = get(&a, "deleted") {
        o.val("deleted", py_int_to_str(d.clone()));
    }
    o.val(
        "disable_correlation",
        or_default(&a, "disable_correlation", Value::Bool(false)),
    );
    first_last_seen(&a, &mut o);
    if let Some(r) = place.relation {
        o.val("object_relation", py_int_to_str(r.clone()));
    }
    o.val(
        "timestamp",
        loaded_timestamp(&a, &format!("{what} timestamp"), cx.now)?,
    );
    if let Some(t) = get(&a, "to_ids") {
        o.val("to_ids", Value::Bool(make_bool(t, what)?));
    }
    o.val("type", py_int_to_str(ty));
    o.val("uuid", uuid_or_derived(&a, cx, what));
    let value = if is_datetime {
        datetime_value(value, what)?
    } else {
        value
    };
    o.val("value", py_int_to_str(value));
    if let Some(t) = tags(a.get("Tag"), what, cx.opts, true)? {
        o.put("Tag", t);
    }
    Ok(o)
}

/// The attribute with what it leaves out (type, correlation, `to_ids`, category) taken
/// from its template `definition`, when there is one.
fn with_template_defaults<'a>(
    a: &'a Map<String, Value>,
    definition: Option<&Map<String, Value>>,
) -> Cow<'a, Map<String, Value>> {
    let Some(def) = definition else {
        return Cow::Borrowed(a);
    };
    let mut with_defaults = a.clone();
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
    Cow::Owned(with_defaults)
}

/// The value of a `datetime` attribute in ISO form; a string that is no datetime is
/// refused, any other value kept.
fn datetime_value(value: Value, what: &str) -> R<Value> {
    match value.as_str().and_then(|_| iso_datetime(&value)) {
        Some(s) => Ok(Value::String(s)),
        None if value.is_string() => err(format!("{what} value {value} is not a valid datetime")),
        None => Ok(value),
    }
}
