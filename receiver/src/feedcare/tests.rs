//! Tests of the feed's care: the tracker of versions at risk, the feed lock, and the
//! keeper putting back what MISP deleted unread.

use super::*;

const U: &str = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";

fn present(uuids: &[&str]) -> HashSet<String> {
    uuids.iter().map(|u| u.to_string()).collect()
}

fn replaced(t: i64) -> EventOutcome {
    EventOutcome::Replaced {
        previous_timestamp: t,
    }
}

#[test]
fn a_replacing_version_that_vanishes_is_republished_then_forgotten() {
    let mut t = Tracker::default();
    t.delivered(U, 100, &EventOutcome::New, false);
    assert!(t.is_empty(), "a first version is read before it is deleted");
    t.delivered(U, 200, &replaced(100), true);
    assert!(t.vanished(&present(&[U])).is_empty());
    assert_eq!(t.vanished(&present(&[])), [(U.to_string(), 200)]);
    assert!(t.is_empty());
    // Republished while the manifest on disk lists it at that same version: safe.
    t.delivered(U, 200, &EventOutcome::New, false);
    assert!(t.vanished(&present(&[])).is_empty());
}

#[test]
fn a_new_file_is_at_risk_only_while_a_manifest_lists_an_older_version() {
    let mut t = Tracker::default();
    t.delivered(U, 100, &EventOutcome::New, false);
    assert!(t.vanished(&present(&[])).is_empty());
    // The file was gone but a stale manifest listed the uuid at an older version.
    t.delivered(U, 200, &EventOutcome::New, true);
    assert_eq!(t.vanished(&present(&[])), [(U.to_string(), 200)]);
    // A same-version delivery writes nothing and changes nothing.
    t.delivered(U, 300, &replaced(200), true);
    t.delivered(U, 300, &EventOutcome::AlreadyCurrent, true);
    assert_eq!(t.vanished(&present(&[])), [(U.to_string(), 300)]);
}

#[test]
fn a_newer_safe_version_clears_the_risk_of_the_older_one() {
    let mut t = Tracker::default();
    t.delivered(U, 200, &replaced(100), true);
    t.delivered(U, 300, &EventOutcome::New, false);
    assert!(t.vanished(&present(&[])).is_empty());
    assert!(t.is_empty());
}

#[test]
fn the_feed_lock_excludes_a_second_holder_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let first = FeedLock::acquire(dir.path()).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let d = dir.path().to_path_buf();
    let t = std::thread::spawn(move || {
        let _second = FeedLock::acquire(&d).unwrap();
        tx.send(()).unwrap();
    });
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
    drop(first);
    rx.recv_timeout(Duration::from_secs(10)).unwrap();
    t.join().unwrap();
}

mod keeper_tests {
    use super::*;
    use gapferry_feeds::misp_feed::{HASHES, MANIFEST};

    const U: &str = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";

    fn event(timestamp: i64) -> Vec<u8> {
        serde_json::json!({"Event": {
            "uuid": U, "info": "keeper", "date": "2024-01-02",
            "timestamp": timestamp.to_string(),
            "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
            "Attribute": [{"type": "domain", "category": "Network activity", "value": "a.example"}],
        }})
        .to_string()
        .into_bytes()
    }

    struct Setup {
        _dir: tempfile::TempDir,
        state: PathBuf,
        feed_dir: PathBuf,
        feed: MispFeed,
        tracker: SharedTracker,
        keeper: FeedKeeper,
    }

    fn setup() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join(".gapferry");
        let feed_dir = dir.path().join("misp");
        let archive = Archive::new(state.join(ARCHIVE_DIR));
        let feed = MispFeed::new(&feed_dir).with_archive(archive.clone());
        let tracker = SharedTracker::default();
        let keeper = FeedKeeper::new(
            &state,
            &feed_dir,
            Publish::default(),
            Some((archive, Duration::from_secs(86_400))),
            tracker.clone(),
            ReceiverMetrics::default(),
        );
        Setup {
            _dir: dir,
            state,
            feed_dir,
            feed,
            tracker,
            keeper,
        }
    }

    fn deliver(s: &mut Setup, ts: i64) {
        let d = s.feed.deliver_event(&event(ts)).unwrap();
        s.tracker
            .lock()
            .unwrap()
            .delivered(&d.uuid, d.timestamp, &d.outcome, d.listed);
    }

    fn manifest(s: &Setup) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(s.feed_dir.join(MANIFEST)).unwrap()).unwrap()
    }

    #[test]
    fn a_replacing_version_misp_deleted_is_put_back_from_the_archive_once() {
        let mut s = setup();
        deliver(&mut s, 100);
        deliver(&mut s, 200);
        let file = s.feed_dir.join(format!("{U}.json"));
        std::fs::remove_file(&file).unwrap();
        let r = s.keeper.tick();
        assert_eq!(r.republished, 1);
        let back: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(back["Event"]["timestamp"], "200");
        assert_eq!(manifest(&s)[U]["timestamp"], 200);
        // Consumed again: not republished a second time; the feed is emptied instead.
        std::fs::remove_file(&file).unwrap();
        std::fs::remove_file(s.feed_dir.join(MANIFEST)).unwrap();
        let r = s.keeper.tick();
        assert_eq!(r.republished, 0);
        assert!(r.emptied);
        assert_eq!(std::fs::read(s.feed_dir.join(MANIFEST)).unwrap(), b"{}");
        assert_eq!(std::fs::read(s.feed_dir.join(HASHES)).unwrap(), b"");
        // Nothing more to do on the next tick.
        assert_eq!(s.keeper.tick(), TickReport::default());
        assert!(s.state.join(FEED_LOCK).is_file());
    }

    #[test]
    fn a_missing_manifest_with_events_present_is_rebuilt_without_a_delivery() {
        let mut s = setup();
        deliver(&mut s, 100);
        let before = manifest(&s);
        std::fs::remove_file(s.feed_dir.join(MANIFEST)).unwrap();
        let r = s.keeper.tick();
        assert!(r.manifest_rebuilt);
        assert_eq!(manifest(&s), before);
        // A new event file is present: nothing republished, nothing else to do.
        assert_eq!(s.keeper.tick(), TickReport::default());
    }

    #[test]
    fn a_fresh_empty_directory_is_left_alone() {
        let mut s = setup();
        std::fs::create_dir_all(&s.feed_dir).unwrap();
        assert_eq!(s.keeper.tick(), TickReport::default());
        assert_eq!(std::fs::read_dir(&s.feed_dir).unwrap().count(), 0);
    }
}
