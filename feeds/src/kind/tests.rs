//! Unit tests of kind detection: the JSON shapes the probe tells apart, its scan limit,
//! and splitting MISP documents into events.

use super::*;

fn d(s: &str) -> Detected {
    detect_bytes(s.as_bytes())
}

#[test]
fn json_shapes() {
    assert_eq!(
        d(r#"{"Event": {"uuid": "x"}}"#),
        Detected::Misp(MispShape::Event)
    );
    assert_eq!(
        d(r#" {"a": [1, {"b": 2}], "Event": {}}"#),
        Detected::Misp(MispShape::Event)
    );
    assert_eq!(d(r#"{"Event": "not an object"}"#), Detected::File);
    assert_eq!(
        d(r#"{"response": [{"Event": {"info": "x"}}]}"#),
        Detected::Misp(MispShape::RestSearch)
    );
    assert_eq!(d(r#"{"response": []}"#), Detected::File);
    assert_eq!(
        d(r#"[{"Event": {}}]"#),
        Detected::Misp(MispShape::EventList)
    );
    assert_eq!(d(r#"[1, 2]"#), Detected::File);
    assert_eq!(
        d(r#"{"info": "x", "uuid": "u", "Orgc": {}}"#),
        Detected::Misp(MispShape::BareEvent)
    );
    assert_eq!(d(r#"{"info": "x", "date": "2020-01-01"}"#), Detected::File);
    assert_eq!(
        d(r#"{"id": "bundle--1", "objects": [], "type": "bundle"}"#),
        Detected::Stix
    );
    assert_eq!(d(r#"{"type": "campaign"}"#), Detected::File);
    assert_eq!(d(r#"{"type": {"nested": "bundle"}}"#), Detected::File);
    assert_eq!(d("\u{feff}{\"type\": \"bundle\"}"), Detected::Stix);
    assert_eq!(d("not json"), Detected::File);
    assert_eq!(d("{\"Event\": {"), Detected::Misp(MispShape::Event));
    assert_eq!(d(""), Detected::File);
}

#[test]
fn json_scan_limit() {
    let mut big = String::from("{\"pad\": \"");
    big.push_str(&"x".repeat(10_000));
    big.push_str("\", \"type\": \"bundle\"}");
    let small = DetectLimits {
        max_json_scan: 1000,
        ..DetectLimits::default()
    };
    assert_eq!(
        detect_reader(Cursor::new(big.as_bytes()), &small).unwrap(),
        Detected::File
    );
    assert_eq!(detect_bytes(big.as_bytes()), Detected::Stix);
}

#[test]
fn split_shapes() {
    let one = br#"{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x"}}"#;
    let docs = split_misp(one).unwrap();
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].json, one.to_vec());
    let list = br#"[{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f"}}, {"Event": {"uuid": "5a0ac036-6fbc-4855-83af-422b950d210f"}}]"#;
    let docs = split_misp(list).unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(
        docs[1].json,
        br#"{"Event":{"uuid": "5a0ac036-6fbc-4855-83af-422b950d210f"}}"#.to_vec()
    );
    let bad = br#"{"response": [{"Event": {"info": "no uuid"}}]}"#;
    assert!(split_misp(bad).unwrap_err().to_string().contains("event 0"));
    assert!(split_misp(br#"{"type": "bundle"}"#).is_err());
    assert!(split_misp(br#"{"response": []}"#).unwrap().is_empty());
}
