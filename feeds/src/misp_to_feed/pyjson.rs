//! The feed form's text: an ordered JSON tree ([`Obj`], [`Out`]) written as Python's
//! `json.dumps` writes it (`", "` and `": "` separators, non-ASCII escaped, floats as
//! `repr`, `Infinity`/`NaN` for the non-finite).

use crate::pyformat::py_float_repr;
use serde_json::Value;

/// An object being built, keys in insertion order.
#[derive(Default)]
pub(super) struct Obj(Vec<(String, Out)>);

/// A value of the feed form being built.
pub(super) enum Out {
    /// A value copied as JSON.
    Json(Value),
    /// An object with its keys in PyMISP's order.
    Obj(Obj),
    /// A list.
    List(Vec<Out>),
}

impl Obj {
    /// Appends member `k`.
    pub(super) fn put(&mut self, k: &str, v: Out) {
        self.0.push((k.to_string(), v));
    }
    /// Appends member `k` holding a JSON value.
    pub(super) fn val(&mut self, k: &str, v: Value) {
        self.put(k, Out::Json(v));
    }
}

/// Python's `json.dumps` of one value.
pub(super) fn write_out(o: &Out, w: &mut String) {
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
/// Python's `json.dumps` of a JSON value.
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
