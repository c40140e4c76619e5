//! Feed-ready MISP events from the low side: `gapferry-send` converts an API export to
//! PyMISP's feed form before hashing, so the high side stores exactly the bytes whose
//! blake3 crossed, without the low side's fields; the export on disk is not modified;
//! `--misp-feed-form false` sends the event as exported; restricted distributions drop
//! what is outside them.

use gapferry_feeds::misp_to_feed::{to_feed, FeedForm};
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::{with_outcome, TestReceiver};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

fn export() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(
        "../../shared/realdata/misp-events/pymisp-tests/mispevent_testfiles__existing_event.json",
    )
}

fn send(path: &Path, to: std::net::SocketAddr, extra: &[&str]) {
    send_with_binary(&[path], to, &[&["--rate", "400M"], extra].concat());
}

#[test]
fn an_api_export_arrives_in_feed_form_and_the_export_is_untouched() {
    let path = export();
    let before = std::fs::read(&path).unwrap();
    let doc = gapferry_feeds::split_misp(&before).unwrap().remove(0);
    let expected = to_feed(&doc.json, &FeedForm::default(), SystemTime::now())
        .unwrap()
        .unwrap();
    let rx = TestReceiver::start(|_| {});
    send(&path, rx.addr, &[]);
    let records = rx.wait_records(1, Duration::from_secs(30));
    let delivered = with_outcome(&records, "delivered");
    assert_eq!(delivered.len(), 1, "{records:#?}");
    let stored = std::fs::read(rx.out.join(format!("misp/{}.json", doc.uuid))).unwrap();
    assert_eq!(
        stored, expected,
        "the high side stores the sender's feed form"
    );
    assert_eq!(
        delivered[0]["blake3"].as_str().unwrap(),
        blake3::hash(&stored).to_hex().as_str(),
        "the bytes whose blake3 crossed"
    );
    let event: Value = serde_json::from_slice(&stored).unwrap();
    for low_side in [
        "id",
        "Org",
        "org_id",
        "event_creator_email",
        "RelatedEvent",
        "SharingGroup",
        "distribution",
        "Galaxy",
    ] {
        assert!(event["Event"].get(low_side).is_none(), "{low_side} kept");
    }
    let source: Value = serde_json::from_slice(&before).unwrap();
    assert!(
        source.get("Org").is_some() && source.get("event_creator_email").is_some(),
        "the export (a bare event) has low-side fields"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the export is unchanged"
    );
}

#[test]
fn feed_form_off_sends_the_export_and_distributions_filter() {
    let path = export();
    let original = std::fs::read(&path).unwrap();
    let doc = gapferry_feeds::split_misp(&original).unwrap().remove(0);
    let rx = TestReceiver::start(|_| {});
    send(&path, rx.addr, &["--misp-feed-form", "false"]);
    let records = rx.wait_records(1, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    let stored = std::fs::read(rx.out.join(format!("misp/{}.json", doc.uuid))).unwrap();
    assert_eq!(stored, doc.json);

    // Only the event's own distribution: its attributes and objects (all "inherit", 5)
    // are dropped, the event goes.
    let source: Value = serde_json::from_slice(&original).unwrap();
    let event_distribution = source["distribution"].as_str().unwrap().to_string();
    let attributes = source["Attribute"].as_array().unwrap();
    assert!(!attributes.is_empty() && attributes.iter().all(|a| a["distribution"] == "5"));
    assert_ne!(event_distribution, "5");
    let rx = TestReceiver::start(|_| {});
    send(
        &path,
        rx.addr,
        &["--misp-valid-distributions", &event_distribution],
    );
    let records = rx.wait_records(1, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    let stored: Value = serde_json::from_slice(
        &std::fs::read(rx.out.join(format!("misp/{}.json", doc.uuid))).unwrap(),
    )
    .unwrap();
    assert_eq!(stored["Event"]["Attribute"], serde_json::json!([]));
    assert_eq!(stored["Event"]["Object"], serde_json::json!([]));
    assert_eq!(stored["Event"]["uuid"], source["uuid"]);

    let other = if event_distribution == "0" { "1" } else { "0" };
    let rx = TestReceiver::start(|_| {});
    send(&path, rx.addr, &["--misp-valid-distributions", other]);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        rx.records().is_empty(),
        "an event outside the distributions is not sent"
    );
}
