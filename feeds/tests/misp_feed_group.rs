//! Group commit into the MISP feed (issue 12): a batch's event files stay invisible until
//! its commit makes them durable together, and a manifest spliced from the previous one
//! (batches that only add uuids, anywhere in the sort order) is byte for byte the manifest
//! a full `rebuild()` of the same directory writes, through consumer deletes and
//! replacements between batches.

use gapferry_feeds::misp_feed::{HASHES, MANIFEST, PENDING};
use gapferry_feeds::{MispError, MispFeed};
use std::fs;
use std::path::Path;

/// Events already in the feed before the batches.
const PREFILLED: u64 = 2_000;

/// A uuid for `n` spread over the sort order (so that new events land between old ones).
fn uuid(n: u64) -> String {
    let h = blake3::hash(&n.to_le_bytes());
    let b = h.as_bytes();
    let hex: String = b[..16].iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-4{}-8{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..32]
    )
}

fn event(n: u64, timestamp: i64) -> Vec<u8> {
    serde_json::json!({"Event": {
        "uuid": uuid(n),
        "info": format!("event {n} at {timestamp}"),
        "date": "2024-01-02",
        "timestamp": timestamp.to_string(),
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": [
            {"type": "domain", "category": "Network activity", "value": format!("h{n}.example")},
            {"type": "ip-dst", "category": "Network activity", "value": format!("10.1.{}.{}", n / 256 % 256, n % 256)},
        ],
    }})
    .to_string()
    .into_bytes()
}

/// Sorted lines of a file.
fn lines(path: &Path) -> Vec<String> {
    let mut l: Vec<String> = fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

/// Copies the event files of `feed` into a fresh directory, rebuilds it there and checks
/// that `manifest.json` is byte-equal and `hashes.csv` holds the same lines.
fn assert_as_rebuilt(feed: &Path, step: &str) {
    let copy = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(feed).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.ends_with(".json") && name != MANIFEST {
            fs::copy(entry.path(), copy.path().join(&name)).unwrap();
        }
    }
    MispFeed::new(copy.path()).rebuild().unwrap();
    let [ours, rebuilt] = [feed, copy.path()].map(|d| fs::read(d.join(MANIFEST)).unwrap());
    assert!(
        ours == rebuilt,
        "{step}: manifest.json ({} B) differs from a rebuild's ({} B)",
        ours.len(),
        rebuilt.len()
    );
    assert_eq!(
        lines(&feed.join(HASHES)),
        lines(&copy.path().join(HASHES)),
        "{step}: hashes.csv differs from a rebuild's"
    );
    let tail = fs::read(feed.join(HASHES)).unwrap();
    assert!(
        tail.is_empty() || tail.ends_with(b"\n"),
        "{step}: hashes.csv ends in a partial line"
    );
}

#[test]
fn batches_into_a_prefilled_feed_leave_the_manifest_of_a_rebuild() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("feed");
    fs::create_dir_all(&dir).unwrap();
    for n in 0..PREFILLED {
        fs::write(dir.join(format!("{}.json", uuid(n))), event(n, 1_000)).unwrap();
    }
    MispFeed::new(&dir).rebuild().unwrap();
    let mut feed = MispFeed::new(&dir);
    let mut next = PREFILLED;
    let batch = |feed: &mut MispFeed, next: &mut u64, count: u64, step: &str| {
        let docs: Vec<Vec<u8>> = (*next..*next + count).map(|n| event(n, 1_000)).collect();
        *next += count;
        for r in feed.deliver_batch(&docs).unwrap() {
            r.unwrap();
        }
        assert_as_rebuilt(&dir, step);
    };
    // The first batch loads from disk; the next ones only add uuids (spliced).
    for i in 0..3 {
        batch(
            &mut feed,
            &mut next,
            40 + i,
            &format!("new events, batch {i}"),
        );
    }
    // MISP consumed (deleted) events between batches.
    for n in [5, 77, 1_999, PREFILLED + 3] {
        fs::remove_file(dir.join(format!("{}.json", uuid(n)))).unwrap();
    }
    batch(&mut feed, &mut next, 30, "after consumer deletes");
    batch(&mut feed, &mut next, 30, "new events after the deletes");
    // A replacement (full rewrite), then new events only again.
    feed.deliver_batch([event(10, 2_000), event(next, 1_000)])
        .unwrap()
        .into_iter()
        .for_each(|r| drop(r.unwrap()));
    next += 1;
    assert_as_rebuilt(&dir, "after a replacement");
    batch(&mut feed, &mut next, 1, "a single new event");
    batch(&mut feed, &mut next, 25, "last batch");
    let listed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&fs::read(dir.join(MANIFEST)).unwrap()).unwrap();
    assert_eq!(listed.len() as u64, next - 4, "all but the four consumed");
    assert_eq!(listed[&uuid(10)]["timestamp"], 2_000);
    assert!(!dir.join(PENDING).exists(), "no batch left pending");
}

#[test]
fn a_batch_not_committed_leaves_no_event_file_visible() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("feed");
    let mut feed = MispFeed::new(&dir);
    feed.deliver_event(&event(1, 1_000)).unwrap();
    let manifest = fs::read(dir.join(MANIFEST)).unwrap();
    {
        // A failure between staging and the commit (the batch is dropped).
        let mut batch = feed.batch().unwrap();
        batch.add(&event(2, 1_000)).unwrap();
        batch.add(&event(1, 2_000)).unwrap();
        assert!(
            !dir.join(format!("{}.json", uuid(2))).exists(),
            "a staged event is visible before its commit"
        );
    }
    let names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".gapferry-stage-")),
        "staging files left behind: {names:?}"
    );
    assert!(!dir.join(format!("{}.json", uuid(2))).exists());
    assert_eq!(fs::read(dir.join(MANIFEST)).unwrap(), manifest);
    let kept: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(format!("{}.json", uuid(1)))).unwrap()).unwrap();
    assert_eq!(kept["Event"]["timestamp"], "1000", "the old version stays");
    // The next batch delivers as if nothing happened.
    feed.deliver_event(&event(2, 1_000)).unwrap();
    assert_as_rebuilt(&dir, "after the dropped batch");
}

#[test]
fn the_same_event_twice_in_one_batch_is_judged_against_the_staged_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("feed");
    let mut feed = MispFeed::new(&dir);
    let results = feed
        .deliver_batch([
            event(1, 2_000),
            event(1, 1_000),
            event(1, 2_000),
            event(1, 3_000),
        ])
        .unwrap();
    let outcomes: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(d) => format!("{:?}", d.outcome),
            Err(MispError::Stale { existing, .. }) => format!("Stale below {existing}"),
            Err(e) => format!("refused: {e}"),
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            "New",
            "Stale below 2000",
            "AlreadyCurrent",
            "Replaced { previous_timestamp: 2000 }"
        ]
    );
    let kept: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.join(format!("{}.json", uuid(1)))).unwrap()).unwrap();
    assert_eq!(kept["Event"]["timestamp"], "3000", "the last version wins");
    assert_as_rebuilt(&dir, "one event four times");
}
