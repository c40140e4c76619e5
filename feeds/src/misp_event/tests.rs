//! Unit tests of one MISP event read as PyMISP reads it: defaults and types, tags,
//! hashes, refusals, and the shapes a single event may come in.

use super::hashes::md5_hex;
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
