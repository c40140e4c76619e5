//! Unit tests of the feed form: low-side fields dropped and defaults added, Python's
//! JSON text, and refusals.

use super::*;
use std::time::UNIX_EPOCH;

fn at(ts: u64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_secs(ts)
}

fn feed(v: Value, opts: &FeedForm) -> Option<Value> {
    to_feed(v.to_string().as_bytes(), opts, at(1_700_000_000))
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

#[test]
fn low_side_fields_go_and_defaults_come() {
    let ev = serde_json::json!({"Event": {
        "id": "12", "uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x",
        "Org": {"id": "1", "name": "us"}, "event_creator_email": "a@b",
        "Orgc": {"id": "2", "name": "them", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "RelatedEvent": [], "ShadowAttribute": [], "distribution": "1",
        "Tag": [{"name": "tlp:white", "exportable": true}, {"name": "internal", "exportable": false}],
        "Attribute": [{"type": "ip-dst", "category": "Network activity", "value": "1.2.3.4",
                       "to_ids": "1", "timestamp": 1600000000, "distribution": "5", "id": "9",
                       "uuid": "11111111-1111-4111-8111-111111111111"}],
    }});
    let out = feed(ev.clone(), &FeedForm::default()).unwrap();
    let e = &out["Event"];
    for gone in [
        "id",
        "Org",
        "event_creator_email",
        "RelatedEvent",
        "ShadowAttribute",
        "distribution",
    ] {
        assert!(e.get(gone).is_none(), "{gone}");
    }
    assert_eq!(e["analysis"], "2");
    assert_eq!(e["threat_level_id"], "4");
    assert_eq!(e["timestamp"], "1700000000");
    assert_eq!(e["date"], "2023-11-14");
    assert_eq!(e["published"], false);
    assert_eq!(
        e["Orgc"],
        serde_json::json!({"name": "them", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"})
    );
    assert_eq!(e["Tag"].as_array().unwrap().len(), 1);
    let a = &e["Attribute"][0];
    assert_eq!(a["to_ids"], true);
    assert_eq!(a["timestamp"], "1600000000");
    assert!(a.get("id").is_none() && a.get("distribution").is_none());
    // Restricted distributions: the attribute (5) goes, then the whole event (1).
    let only = |d: Vec<i64>| FeedForm {
        valid_distributions: d,
        ..FeedForm::default()
    };
    let out = feed(ev.clone(), &only(vec![1])).unwrap();
    assert_eq!(out["Event"]["Attribute"], serde_json::json!([]));
    assert!(feed(ev.clone(), &only(vec![3, 5])).is_none());
    // Non-exportable tags kept on request.
    let keep = FeedForm {
        keep_non_exportable_tags: true,
        ..FeedForm::default()
    };
    assert_eq!(
        feed(ev, &keep).unwrap()["Event"]["Tag"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn python_text_and_refusals() {
    let ev = br#"{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "caf\u00e9 \ud83d\ude00", "Orgc": {"name": "o", "uuid": "u"}, "timestamp": "5", "publish_timestamp": "5", "date": "2020-01-02", "published": true}}"#;
    let out = to_feed(ev, &FeedForm::default(), at(0)).unwrap().unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.starts_with(r#"{"Event": {"analysis": "2", "date": "2020-01-02", "extends_uuid": "", "info": "caf\u00e9 \ud83d\ude00", "protected": false"#), "{text}");
    assert!(
        text.ends_with(r#""Orgc": {"name": "o", "uuid": "u"}, "Tag": []}}"#),
        "{text}"
    );
    for (bad, why) in [
        (
            r#"{"Event": {"uuid": "u", "Orgc": {"name": "o", "uuid": "u"}}}"#,
            "info",
        ),
        (r#"{"Event": {"uuid": "u", "info": "x"}}"#, "Orgc"),
        (
            r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o"}}}"#,
            "uuid",
        ),
        (
            r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o", "uuid": "u"}, "analysis": "7"}}"#,
            "analysis",
        ),
        (
            r#"{"Event": {"uuid": "u", "info": "x", "Orgc": {"name": "o", "uuid": "u"}, "Attribute": [{"value": "v"}]}}"#,
            "type",
        ),
        (r#"[1]"#, "not a JSON object"),
    ] {
        let e = to_feed(bad.as_bytes(), &FeedForm::default(), at(0)).unwrap_err();
        assert!(e.to_string().contains(why), "{why}: {e}");
    }
}
