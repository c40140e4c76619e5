//! MISP events built to inflate: the parser walks them without building a JSON tree, so
//! the memory it takes stays near the document's size, and what it keeps per event is
//! bounded (tags, hashes, values quoted in errors).

use gapferry_feeds::misp_event::{MAX_EVENT_HASHES, MAX_EVENT_TAGS};
use gapferry_feeds::{parse_event, EventError, MispFeed};

/// Peak resident set of this process so far, bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

const HEAD: &str = r#"{"Event":{"uuid":"5a0a9aa9-23a4-4607-b6df-41a9950d210f","info":"inflated","Orgc":{"name":"CIRCL","uuid":"55f6ea5e-2c60-40e5-964f-47a8950d210f"},"timestamp":"1700000000","date":"2023-11-14""#;

/// `{"Event":{..., <member>}}`.
fn event_with(member: &str) -> Vec<u8> {
    format!("{HEAD},{member}}}}}").into_bytes()
}

/// `[item,item,...]` of `n` items.
fn list(item: &str, n: usize) -> String {
    let mut s = String::with_capacity((item.len() + 1) * n + 2);
    s.push('[');
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push_str(item);
    }
    s.push(']');
    s
}

fn malformed(r: Result<gapferry_feeds::MispEvent, EventError>) -> String {
    match r {
        Err(EventError::Malformed { reason, .. }) => reason,
        other => panic!(
            "expected a malformed event, got {:?}",
            other.map(|e| e.uuid)
        ),
    }
}

#[test]
fn sixteen_mb_of_zeros_in_the_attribute_list_cost_about_their_own_size() {
    // 8 Mi elements: as a serde_json tree that is 256 MiB and more.
    let doc = event_with(&format!("\"Attribute\":{}", list("0", 8 << 20)));
    assert!(doc.len() > 16 << 20);
    let before = peak_rss();
    let reason = malformed(parse_event(&doc));
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(reason, "attribute 0 is not an object");
    assert!(grew < 32 << 20, "parsing grew the peak RSS by {grew} bytes");
}

#[test]
fn a_large_valid_event_is_indexed_in_bounded_memory() {
    // 2 Mi values in one attribute's list: 2 Mi hashes of 16 bytes, 32 MiB.
    let n = MAX_EVENT_HASHES / 2;
    let attribute = format!(r#"[{{"type":"comment","value":{}}}]"#, list("\"v\"", n));
    let doc = event_with(&format!("\"Attribute\":{attribute}"));
    let before = peak_rss();
    let event = parse_event(&doc).unwrap();
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(event.hashes.len(), n);
    assert!(event.hashes.iter().all(|h| *h == event.hashes[0]));
    assert_eq!(event.document, doc);
    // The document, its copy and 16 bytes a hash.
    let bound = 3 * doc.len() as u64 + (16 * n) as u64 + (16 << 20);
    assert!(grew < bound, "grew {grew} bytes, bound {bound}");
    // What the feed writes for it is one line per value.
    let dir = tempfile::tempdir().unwrap();
    let delivered = MispFeed::new(dir.path()).deliver_event(&doc).unwrap();
    assert_eq!(delivered.hashes, n);
    let csv = std::fs::read_to_string(dir.path().join("hashes.csv")).unwrap();
    assert_eq!(csv.lines().count(), n);
}

#[test]
fn more_hashes_than_an_event_may_give_are_refused() {
    // A composite value splits on every `|`: one hash per byte.
    let value = "|".repeat(MAX_EVENT_HASHES);
    let doc = event_with(&format!(
        r#""Attribute":[{{"type":"ip-dst|port","value":"{value}"}}]"#
    ));
    let reason = malformed(parse_event(&doc));
    assert!(
        reason.contains(&format!("more than {MAX_EVENT_HASHES} attribute values")),
        "{reason}"
    );
    // One fewer `|` is exactly the limit.
    let value = "|".repeat(MAX_EVENT_HASHES - 1);
    let doc = event_with(&format!(
        r#""Attribute":[{{"type":"ip-dst|port","value":"{value}"}}]"#
    ));
    assert_eq!(parse_event(&doc).unwrap().hashes.len(), MAX_EVENT_HASHES);
}

#[test]
fn tag_lists_and_structured_fields_beyond_their_limits_are_refused() {
    let tags = list("\"tlp:white\"", MAX_EVENT_TAGS + 1);
    let reason = malformed(parse_event(&event_with(&format!("\"Tag\":{tags}"))));
    assert!(
        reason.contains(&format!("more than {MAX_EVENT_TAGS} tags")),
        "{reason}"
    );
    // As many identical tags as allowed load as one.
    let tags = list("\"tlp:white\"", MAX_EVENT_TAGS);
    let e = parse_event(&event_with(&format!("\"Tag\":{tags}"))).unwrap();
    assert_eq!(e.entry.tags.len(), 1);
    let big = list("{\"name\":\"x\"}", 200_000);
    let reason = malformed(parse_event(&event_with(&format!("\"Tag\":{big}"))));
    assert!(reason.contains("`Tag` list is"), "{reason}");
    let doc = format!(
        r#"{{"Event":{{"uuid":"5a0a9aa9-23a4-4607-b6df-41a9950d210f","info":"x","Orgc":{{"name":{},"uuid":"x"}}}}}}"#,
        list("0", 100_000)
    );
    let reason = malformed(parse_event(doc.as_bytes()));
    assert!(reason.contains("`Orgc.name`"), "{reason}");
}

#[test]
fn errors_quote_at_most_a_short_piece_of_an_offending_value() {
    let huge = "9".repeat(1 << 20);
    for member in [
        format!("\"threat_level_id\":\"{huge}\""),
        format!("\"analysis\":[{}]", list("1", 30_000)),
        format!(r#""Attribute":[{{"type":"x","value":{{"a":"{huge}"}}}}]"#),
    ] {
        let reason = malformed(parse_event(&event_with(&member)));
        assert!(
            reason.len() < 400,
            "{} bytes: {}",
            reason.len(),
            &reason[..200]
        );
    }
}

#[test]
fn a_list_of_many_events_is_counted_without_being_held() {
    let one = format!("{HEAD}}}}}");
    let doc = format!("{{\"response\":{}}}", list(&one, 20_000));
    match parse_event(doc.as_bytes()) {
        Err(EventError::SeveralEvents(n)) => assert_eq!(n, 20_000),
        other => panic!("{:?}", other.map(|e| e.uuid)),
    }
    let doc = format!("{{\"response\":[{one},0]}}");
    match parse_event(doc.as_bytes()) {
        Err(EventError::NotAnEvent(r)) => assert!(r.contains("element 1"), "{r}"),
        other => panic!("{:?}", other.map(|e| e.uuid)),
    }
}

#[test]
fn a_batch_commits_when_its_hashes_pass_the_budget_and_loses_none() {
    use gapferry_feeds::misp_feed::BATCH_HASHES;
    let per_event = BATCH_HASHES / 2 + 1;
    let uuids = [
        "5a0a9aa9-23a4-4607-b6df-41a9950d2101",
        "5a0a9aa9-23a4-4607-b6df-41a9950d2102",
        "5a0a9aa9-23a4-4607-b6df-41a9950d2103",
    ];
    let docs: Vec<Vec<u8>> = uuids
        .iter()
        .enumerate()
        .map(|(i, uuid)| {
            format!(
                r#"{{"Event":{{"uuid":"{uuid}","info":"e{i}","Orgc":{{"name":"o","uuid":"u"}},"timestamp":"1700000000","Attribute":[{{"type":"comment","value":{}}}]}}}}"#,
                list(&format!("\"v{i}\""), per_event)
            )
            .into_bytes()
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let results = MispFeed::new(dir.path()).deliver_batch(&docs).unwrap();
    assert!(results.iter().all(|r| r.is_ok()), "{results:?}");
    let csv = std::fs::read_to_string(dir.path().join("hashes.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3 * per_event);
    for uuid in uuids {
        assert_eq!(
            csv.lines().filter(|l| l.ends_with(uuid)).count(),
            per_event,
            "{uuid}"
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest.as_object().unwrap().len(), 3);
    assert!(!dir.path().join(".gapferry-pending").exists());
}
