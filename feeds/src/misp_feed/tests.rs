//! Unit tests of the feed: uuid case, and `listed` while a stale manifest is on disk.

use super::*;

fn event(uuid: &str, timestamp: i64) -> Vec<u8> {
    serde_json::json!({"Event": {
        "uuid": uuid,
        "info": format!("event at {timestamp}"),
        "date": "2024-01-02",
        "timestamp": timestamp.to_string(),
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": [{"type": "domain", "category": "Network activity", "value": "a.example"}],
    }})
    .to_string()
    .into_bytes()
}

#[test]
fn an_upper_case_uuid_is_the_same_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = MispFeed::new(dir.path());
    let lower = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";
    let upper = lower.to_ascii_uppercase();
    let d = feed.deliver_event(&event(lower, 200)).unwrap();
    assert_eq!(d.uuid, lower);
    // An older copy in upper case meets the staleness check of the same event.
    let err = feed.deliver_event(&event(&upper, 100)).unwrap_err();
    assert!(
        matches!(
            err,
            MispError::Stale {
                incoming: 100,
                existing: 200,
                ..
            }
        ),
        "{err}"
    );
    // A newer one replaces it, under the same lower-case name: one event in the feed.
    let d = feed.deliver_event(&event(&upper, 300)).unwrap();
    assert_eq!(d.uuid, lower);
    assert_eq!(d.path, dir.path().join(format!("{lower}.json")));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(MANIFEST)).unwrap()).unwrap();
    let keys: Vec<&String> = manifest.as_object().unwrap().keys().collect();
    assert_eq!(keys, [lower]);
    assert_eq!(manifest[lower]["timestamp"], 300);
    assert!(!dir.path().join(format!("{upper}.json")).exists());
}

#[test]
fn a_version_written_while_a_stale_manifest_lists_an_older_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = MispFeed::new(dir.path());
    let u = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";
    let file = dir.path().join(format!("{u}.json"));
    assert!(!feed.deliver_event(&event(u, 100)).unwrap().listed);
    let d = feed.deliver_event(&event(u, 200)).unwrap();
    assert!(d.listed, "replaced while listed at 100");
    // MISP deleted the file but not (yet) the manifest, which lists 200.
    fs::remove_file(&file).unwrap();
    let d = feed.deliver_event(&event(u, 300)).unwrap();
    assert_eq!(d.outcome, EventOutcome::New);
    assert!(d.listed, "the manifest on disk listed 200");
    fs::remove_file(&file).unwrap();
    // The same version again while listed at it: MISP has it, no risk.
    let d = feed.deliver_event(&event(u, 300)).unwrap();
    assert!(!d.listed);
    // MISP deleted file and manifest: nothing lists the uuid.
    fs::remove_file(&file).unwrap();
    fs::remove_file(dir.path().join(MANIFEST)).unwrap();
    assert!(!feed.deliver_event(&event(u, 400)).unwrap().listed);
}

/// The uuids `manifest.json` lists.
fn listed(dir: &Path) -> Vec<String> {
    let manifest: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    manifest.keys().cloned().collect()
}

#[test]
fn changes_during_a_batch_are_seen_by_the_commit_or_the_next_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut feed = MispFeed::new(dir.path());
    let [a, b, c, d] = [
        "5a0a9aa9-23a4-4607-b6df-41a9950d210a",
        "5a0a9aa9-23a4-4607-b6df-41a9950d210b",
        "5a0a9aa9-23a4-4607-b6df-41a9950d210c",
        "5a0a9aa9-23a4-4607-b6df-41a9950d210d",
    ];
    for r in feed.deliver_batch([event(a, 1), event(b, 1)]).unwrap() {
        r.unwrap();
    }
    let mut batch = feed.batch().unwrap();
    batch.add(&event(c, 1)).unwrap();
    // MISP deletes a listed event while the batch runs; someone drops in an unlisted one.
    fs::remove_file(dir.path().join(format!("{a}.json"))).unwrap();
    fs::write(dir.path().join(format!("{d}.json")), event(d, 1)).unwrap();
    let summary = batch.commit().unwrap();
    assert_eq!(summary.dropped, 1, "{summary:?}");
    assert_eq!(
        listed(dir.path()),
        [b, c],
        "the deleted event is no longer listed"
    );
    // The next batch, with nothing of its own, indexes the file that appeared.
    let summary = feed.batch().unwrap().commit().unwrap();
    assert_eq!(summary.reindexed, 1, "{summary:?}");
    assert_eq!(listed(dir.path()), [b, c, d]);
    // A deletion between batches is seen by the next one, and said so.
    fs::remove_file(dir.path().join(format!("{b}.json"))).unwrap();
    let summary = feed.batch().unwrap().commit().unwrap();
    assert_eq!((summary.dropped, summary.written), (1, true), "{summary:?}");
    assert_eq!(listed(dir.path()), [c, d]);
}
