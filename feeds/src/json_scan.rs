//! Walking borrowed JSON without building a tree: the members of an object and the
//! elements of an array are handed one at a time, as raw slices of the document, to a
//! callback. Memory stays near the document's size whatever its shape (a `serde_json`
//! `Value` costs 32 to 80 bytes per element, so `[0,0,...]` inflates sixteenfold).

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;
use std::borrow::Cow;
use std::fmt;

/// Structured values (lists, objects) read into a `Value` at most, in bytes of JSON.
pub(crate) const MAX_STRUCTURED_VALUE: usize = 64 << 10;

/// The first byte of a raw value: `{`, `[`, `"`, a digit, `t`, `f`, `n` or `-`.
pub(crate) fn first_byte(raw: &RawValue) -> u8 {
    raw.get()
        .as_bytes()
        .iter()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
        .unwrap_or(b' ')
}

/// Whether a raw list or object is empty (`[]`, `{ }`); false for anything else.
fn is_empty_container(raw: &RawValue) -> bool {
    let text = raw.get().trim();
    matches!(first_byte(raw), b'[' | b'{') && text[1..text.len() - 1].trim().is_empty()
}

/// A key, borrowed from the document unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Calls `each(key, value)` for every member of the raw object `raw`, in document order
/// (a repeated key is seen each time; the last one is what a `Map` would keep).
pub(crate) fn for_each_member<'a>(
    raw: &'a RawValue,
    mut each: impl FnMut(&str, &'a RawValue) -> Result<(), String>,
) -> Result<(), String> {
    struct Scan<'s, F> {
        each: &'s mut F,
        stopped: &'s mut Option<String>,
    }
    impl<'a, F: FnMut(&str, &'a RawValue) -> Result<(), String>> DeserializeSeed<'a> for Scan<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'a, F: FnMut(&str, &'a RawValue) -> Result<(), String>> Visitor<'a> for Scan<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<M: MapAccess<'a>>(self, mut map: M) -> Result<(), M::Error> {
            while let Some(Key(key)) = map.next_key::<Key<'a>>()? {
                let value: &'a RawValue = map.next_value()?;
                if let Err(e) = (self.each)(&key, value) {
                    *self.stopped = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
            }
            Ok(())
        }
    }
    let mut stopped = None;
    let scan = Scan {
        each: &mut each,
        stopped: &mut stopped,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match scan.deserialize(&mut de) {
        Ok(()) => Ok(()),
        Err(e) => Err(stopped.take().unwrap_or_else(|| e.to_string())),
    }
}

/// Calls `each(index, element)` for every element of the raw array `raw`, in order.
pub(crate) fn for_each_element<'a>(
    raw: &'a RawValue,
    mut each: impl FnMut(usize, &'a RawValue) -> Result<(), String>,
) -> Result<(), String> {
    struct Scan<'s, F> {
        each: &'s mut F,
        stopped: &'s mut Option<String>,
    }
    impl<'a, F: FnMut(usize, &'a RawValue) -> Result<(), String>> DeserializeSeed<'a> for Scan<'_, F> {
        type Value = ();
        fn deserialize<D: Deserializer<'a>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_seq(self)
        }
    }
    impl<'a, F: FnMut(usize, &'a RawValue) -> Result<(), String>> Visitor<'a> for Scan<'_, F> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a JSON array")
        }
        fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
            let mut i = 0;
            while let Some(item) = seq.next_element::<&'a RawValue>()? {
                if let Err(e) = (self.each)(i, item) {
                    *self.stopped = Some(e);
                    return Err(de::Error::custom("stopped"));
                }
                i += 1;
            }
            Ok(())
        }
    }
    let mut stopped = None;
    let scan = Scan {
        each: &mut each,
        stopped: &mut stopped,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    match scan.deserialize(&mut de) {
        Ok(()) => Ok(()),
        Err(e) => Err(stopped.take().unwrap_or_else(|| e.to_string())),
    }
}

/// The last value of each of `names` in the raw object `raw` (`None` when absent).
pub(crate) fn members<'a, const N: usize>(
    raw: &'a RawValue,
    names: [&str; N],
) -> Result<[Option<&'a RawValue>; N], String> {
    let mut out = [None; N];
    for_each_member(raw, |key, value| {
        if let Some(i) = names.iter().position(|n| *n == key) {
            out[i] = Some(value);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A raw value as a `Value`, refusing lists and objects above [`MAX_STRUCTURED_VALUE`]
/// bytes (scalars are read whatever their length: they cost their own bytes).
pub(crate) fn small_value(raw: Option<&RawValue>, what: &str) -> Result<Value, String> {
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    let len = raw.get().len();
    if matches!(first_byte(raw), b'[' | b'{') && len > MAX_STRUCTURED_VALUE {
        return Err(format!(
            "its {what} is a {len}-byte list or object, above the {MAX_STRUCTURED_VALUE} bytes this receiver reads there"
        ));
    }
    serde_json::from_str(raw.get()).map_err(|e| e.to_string())
}

/// Python's truthiness of a raw value, without reading a list or object whole.
pub(crate) fn raw_truthy(raw: Option<&RawValue>) -> bool {
    let Some(raw) = raw else { return false };
    match first_byte(raw) {
        b'[' | b'{' => !is_empty_container(raw),
        b'n' => false,
        b't' => true,
        b'f' => false,
        b'"' => raw.get().trim() != "\"\"",
        _ => serde_json::from_str::<Value>(raw.get())
            .ok()
            .and_then(|v| v.as_f64())
            .is_some_and(|f| f != 0.0),
    }
}

/// Whether `raw` is JSON null or absent.
pub(crate) fn is_null(raw: Option<&RawValue>) -> bool {
    raw.is_none_or(|r| first_byte(r) == b'n')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> &RawValue {
        serde_json::from_str(s).unwrap()
    }

    #[test]
    fn members_and_elements_come_one_at_a_time_and_a_callback_error_stops_the_walk() {
        let obj = raw(r#"{"a": 1, "b\u0041": [2, 3], "a": {"x": null}}"#);
        let mut seen = Vec::new();
        for_each_member(obj, |k, v| {
            seen.push((k.to_string(), v.get().to_string()));
            Ok(())
        })
        .unwrap();
        assert_eq!(
            seen,
            [
                ("a".to_string(), "1".to_string()),
                ("bA".to_string(), "[2, 3]".to_string()),
                ("a".to_string(), r#"{"x": null}"#.to_string())
            ]
        );
        let [a, b, c] = members(obj, ["a", "bA", "c"]).unwrap();
        assert_eq!(
            (a.unwrap().get(), b.unwrap().get()),
            (r#"{"x": null}"#, "[2, 3]")
        );
        assert!(c.is_none());
        let mut count = 0;
        let err = for_each_element(raw("[1, 2, 3, 4]"), |i, _| {
            count += 1;
            if i == 1 {
                Err("stop at 1".into())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!((err.as_str(), count), ("stop at 1", 2));
        assert!(for_each_element(raw("{}"), |_, _| Ok(())).is_err());
    }

    #[test]
    fn truthiness_and_bounded_values() {
        for (s, t) in [
            ("[]", false),
            ("[ ]", false),
            ("{}", false),
            ("[0]", true),
            ("\"\"", false),
            ("\"x\"", true),
            ("0", false),
            ("0.0", false),
            ("-1", true),
            ("null", false),
            ("false", false),
            ("true", true),
        ] {
            assert_eq!(raw_truthy(Some(raw(s))), t, "{s}");
        }
        assert!(!raw_truthy(None));
        let big = format!("[{}0]", "0,".repeat(MAX_STRUCTURED_VALUE));
        assert!(small_value(Some(raw(&big)), "`info`")
            .unwrap_err()
            .contains("`info`"));
        let long = format!("\"{}\"", "x".repeat(MAX_STRUCTURED_VALUE * 2));
        assert!(small_value(Some(raw(&long)), "`info`").unwrap().is_string());
        assert_eq!(small_value(None, "x").unwrap(), Value::Null);
    }
}
