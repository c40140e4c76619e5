//! The feed's kept index (issue 12: cost per event that does not grow with the feed):
//! a feed that keeps its index between batches and appends to `hashes.csv` must leave
//! byte for byte the files a feed loading everything from disk every batch leaves, through
//! replacements, MISP's deletions, other writers and an interrupted batch; and what it
//! leaves must be what a full `rebuild()` of the directory gives.

use gapferry_feeds::misp_feed::{HASHES, MANIFEST, PENDING};
use gapferry_feeds::{DeliveredEvent, MispError, MispFeed};
use std::fs;
use std::path::Path;

/// Events already in the feed before the steps.
const PREFILLED: u64 = 800;

/// Event `n` at `timestamp`, with three attributes (one composite) of its own.
fn event(n: u64, timestamp: i64) -> Vec<u8> {
    serde_json::json!({"Event": {
        "uuid": uuid(n),
        "info": format!("event {n} at {timestamp}"),
        "date": "2024-01-02",
        "timestamp": timestamp.to_string(),
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Tag": [{"name": format!("tlp:n{}", n % 3)}],
        "Attribute": [
            {"type": "domain", "category": "Network activity", "value": format!("h{n}.example")},
            {"type": "ip-dst|port", "category": "Network activity", "value": format!("10.0.{}.{}|{timestamp}", n / 256 % 256, n % 256)},
        ],
        "Object": [{"name": "file", "Attribute": [{"type": "md5", "value": format!("{n:032x}")}]}],
    }})
    .to_string()
    .into_bytes()
}

fn uuid(n: u64) -> String {
    format!("5a0a9aa9-23a4-4607-b6df-{n:012x}")
}

/// What a delivery reported, without the directory in the path.
fn report(results: Vec<Result<DeliveredEvent, MispError>>) -> Vec<String> {
    results
        .into_iter()
        .map(|r| match r {
            Ok(d) => format!(
                "{} {:?} listed={} hashes={}",
                d.uuid, d.outcome, d.listed, d.hashes
            ),
            Err(e) => format!("refused: {e}"),
        })
        .collect()
}

/// The feed that keeps its index, and a reference directory written by a fresh feed
/// every batch (which loads manifest and hashes from disk each time).
struct Pair {
    _tmp: tempfile::TempDir,
    kept: MispFeed,
    reference: std::path::PathBuf,
}

impl Pair {
    fn new() -> Pair {
        let tmp = tempfile::tempdir().unwrap();
        let kept = MispFeed::new(tmp.path().join("kept"));
        let reference = tmp.path().join("reference");
        Pair {
            _tmp: tmp,
            kept,
            reference,
        }
    }

    fn dirs(&self) -> [&Path; 2] {
        [self.kept.dir(), &self.reference]
    }

    /// Delivers `docs` into both and checks that both report the same and leave the same
    /// bytes.
    fn deliver(&mut self, docs: &[Vec<u8>], step: &str) {
        let kept = report(self.kept.deliver_batch(docs).unwrap());
        let fresh = report(MispFeed::new(&self.reference).deliver_batch(docs).unwrap());
        assert_eq!(kept, fresh, "{step}: the deliveries reported differently");
        self.assert_same_files(step);
    }

    fn assert_same_files(&self, step: &str) {
        for name in [MANIFEST, HASHES] {
            let [a, b] = self.dirs().map(|d| fs::read(d.join(name)).unwrap());
            assert!(
                a == b,
                "{step}: {name} differs from the one a feed loading from disk writes ({} vs {} bytes)",
                a.len(),
                b.len()
            );
        }
    }

    /// Does `change` to both directories (what MISP or another writer does).
    fn outside(&self, change: impl Fn(&Path)) {
        for d in self.dirs() {
            change(d);
        }
    }
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

fn prefill(pair: &mut Pair) {
    let docs: Vec<Vec<u8>> = (0..PREFILLED).map(|n| event(n, 1_000)).collect();
    for chunk in docs.chunks(300) {
        pair.deliver(chunk, "prefill");
    }
}

/// New events only, then new versions of listed events among new ones, then a stale
/// copy and a copy already current.
fn deliveries(pair: &mut Pair) {
    let new: Vec<Vec<u8>> = (PREFILLED..PREFILLED + 20)
        .map(|n| event(n, 1_000))
        .collect();
    pair.deliver(&new, "new events only (appended)");
    let mut mixed: Vec<Vec<u8>> = (0..5).map(|n| event(n * 97, 2_000)).collect();
    mixed.extend((PREFILLED + 20..PREFILLED + 30).map(|n| event(n, 1_000)));
    mixed.push(event(PREFILLED + 20, 3_000));
    pair.deliver(&mixed, "replacements among new events");
    let again = [
        event(97, 1_500),
        event(194, 2_000),
        event(PREFILLED + 40, 1),
    ];
    pair.deliver(&again, "a stale copy and a current one");
}

/// What MISP and other writers do between batches.
fn outside_changes(pair: &mut Pair) {
    pair.outside(|d| {
        for n in [3, 500, PREFILLED + 21] {
            fs::remove_file(d.join(format!("{}.json", uuid(n)))).unwrap();
        }
    });
    // One of them comes back newer: the manifest on disk still listed it.
    pair.deliver(
        &[event(PREFILLED + 50, 1_000), event(3, 2_000)],
        "after MISP deleted events",
    );
    // An event file put there by hand, unlisted.
    pair.outside(|d| {
        let name = format!("{}.json", uuid(PREFILLED + 80));
        fs::write(d.join(name), event(PREFILLED + 80, 1_000)).unwrap();
    });
    pair.deliver(&[event(PREFILLED + 81, 1_000)], "after a file put by hand");
    // Another writer (`feed republish` under the feed lock) adds an event.
    pair.outside(|d| {
        MispFeed::new(d)
            .deliver_event(&event(PREFILLED + 60, 1_000))
            .unwrap();
    });
    pair.deliver(&[event(PREFILLED + 61, 1_000)], "after another writer");
    pair.outside(|d| fs::remove_file(d.join(MANIFEST)).unwrap());
    pair.deliver(
        &[event(PREFILLED + 62, 1_000)],
        "after MISP deleted the manifest",
    );
    // Lines appended in place by someone else: the file keeps its inode.
    pair.outside(|d| {
        use std::io::Write;
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(d.join(HASHES))
            .unwrap();
        writeln!(f, "00000000000000000000000000000000,{}", uuid(999_999)).unwrap();
    });
    pair.deliver(
        &[event(PREFILLED + 63, 1_000)],
        "after junk appended to hashes.csv",
    );
    // An interrupted batch: its event file is there, the marker names it, nothing indexed.
    pair.outside(|d| {
        fs::write(d.join(format!("{}.json", uuid(7))), event(7, 5_000)).unwrap();
        fs::write(d.join(PENDING), format!("{}\n", uuid(7))).unwrap();
    });
    pair.deliver(
        &[event(PREFILLED + 64, 1_000)],
        "after an interrupted batch",
    );
}

#[test]
fn a_kept_index_leaves_the_bytes_of_a_full_load_and_of_a_rebuild() {
    let mut pair = Pair::new();
    prefill(&mut pair);
    deliveries(&mut pair);
    outside_changes(&mut pair);
    pair.deliver(
        &[event(PREFILLED + 70, 1_000), event(PREFILLED + 71, 1_000)],
        "last batch",
    );

    let dir = pair.kept.dir().to_path_buf();
    let manifest = fs::read(dir.join(MANIFEST)).unwrap();
    let hashes = lines(&dir.join(HASHES));
    let listed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&manifest).unwrap();
    assert_eq!(listed.len() as u64, PREFILLED + 39);
    assert_eq!(
        listed[&uuid(7)]["timestamp"],
        5_000,
        "the interrupted batch's event"
    );
    assert!(!listed.contains_key(&uuid(500)), "deleted by MISP");
    assert_eq!(
        listed[&uuid(3)]["timestamp"],
        2_000,
        "deleted, then delivered again"
    );
    assert!(
        listed.contains_key(&uuid(PREFILLED + 80)),
        "put there by hand"
    );
    assert_eq!(hashes.len(), listed.len() * 4, "four values per event");
    let summary = MispFeed::new(&dir).rebuild().unwrap();
    assert_eq!(summary.entries, listed.len());
    assert!(
        fs::read(dir.join(MANIFEST)).unwrap() == manifest,
        "manifest.json differs from a rebuild of the same directory"
    );
    assert_eq!(
        lines(&dir.join(HASHES)),
        hashes,
        "hashes.csv differs from a rebuild's"
    );
}
