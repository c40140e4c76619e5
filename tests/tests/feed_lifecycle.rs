//! The MISP feed's life with a consumer that deletes what it consumed, as MISP's local feed
//! does with "Remove input after ingestion" (`app/Model/Feed.php`: read `manifest.json`,
//! delete the files of events it already has, fetch each other listed event and delete its
//! file, then delete the manifest), against the real binaries and the real Infoblox
//! events: no newest version is lost to the race, a consumed feed is emptied and can be
//! republished equal to PyMISP's, and `gapferry-recv feed` refuses bad input.

use gapferry_tests::harness::free_port;
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::spawn_listening;
use gapferry_tests::harness::{binary, read_records, strip_ansi, with_outcome, ChildGuard};
use gapferry_tests::realdata::{assert_feed_matches_infoblox_reference, infoblox_events, realdata};
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `gapferry-recv listen` on loopback, logging to a file.
struct Listen {
    child: ChildGuard,
    to: String,
    log: PathBuf,
}

impl Listen {
    fn start(out: &Path) -> Listen {
        let to = format!("127.0.0.1:{}", free_port(true));
        let log = out.with_extension("log");
        let mut cmd = Command::new(binary("gapferry-recv"));
        cmd.args(["listen", "--bind", &to, "--out"])
            .arg(out)
            .env("GAPFERRY_LOG", "info");
        let child = spawn_listening(cmd, &log);
        Listen { child, to, log }
    }

    fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }
}

fn send(paths: &[&Path], to: &str) {
    send_with_binary(paths, to, &["--rate", "400M"]);
}

fn wait_delivered(out: &Path, n: usize, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let records = read_records(out);
        let delivered = with_outcome(&records, "delivered").len();
        if delivered >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {n} delivered: {:#?}",
            with_outcome(&records, "failed")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn timestamp_of(doc: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(doc).ok()?;
    let ts = &v["Event"]["timestamp"];
    ts.as_i64()
        .or_else(|| ts.as_str().and_then(|s| s.parse().ok()))
}

fn uuid_of(path: &Path) -> String {
    path.file_stem().unwrap().to_str().unwrap().to_string()
}

/// MISP's view: the events it holds (its database) and what it did.
#[derive(Default)]
struct Misp {
    /// uuid -> timestamp of the version imported.
    known: HashMap<String, i64>,
    /// uuid -> every timestamp read from the feed.
    read: HashMap<String, BTreeSet<i64>>,
}

/// Files a consumer deleted while they held a version it had not read: (uuid, timestamp).
type Unread = Mutex<Vec<(String, i64)>>;

/// One fetch of the local feed with "Remove input after ingestion", in Feed.php's order;
/// `import` is the time an import takes between reading a file and deleting it. Notes in
/// `unread` each file it deleted holding a version it had not read (the race). A fetch
/// interrupted by `stop` leaves the rest of the feed as it is.
fn misp_fetch(feed: &Path, misp: &mut Misp, import: Duration, stop: &AtomicBool, unread: &Unread) {
    let note = |uuid: &str, path: &Path| {
        if let Some(ts) = std::fs::read(path).ok().and_then(|b| timestamp_of(&b)) {
            unread.lock().unwrap().push((uuid.to_string(), ts));
        }
    };
    let Ok(bytes) = std::fs::read(feed.join("manifest.json")) else {
        return; // MISP logs "Could not fetch event manifest" and stops
    };
    let Ok(manifest) = serde_json::from_slice::<Map<String, Value>>(&bytes) else {
        return;
    };
    let mut fetch = Vec::new();
    for (uuid, entry) in &manifest {
        let listed = entry["timestamp"].as_i64().unwrap_or(i64::MAX);
        let path = feed.join(format!("{uuid}.json"));
        if misp.known.get(uuid).is_some_and(|&k| k >= listed) {
            // getNewEventUuids: already known at that timestamp: the file is deleted unread.
            let holds = std::fs::read(&path).ok().and_then(|b| timestamp_of(&b));
            if holds.is_some_and(|t| t > misp.known[uuid]) {
                note(uuid, &path);
            }
            let _ = std::fs::remove_file(&path);
        } else {
            fetch.push((uuid.clone(), path));
        }
    }
    if fetch.is_empty() {
        return; // nothing to add or edit: the manifest stays
    }
    for (uuid, path) in fetch {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mut f) = std::fs::File::open(&path) {
            let ino = f.metadata().unwrap().ino();
            let mut bytes = Vec::new();
            use std::io::Read;
            if f.read_to_end(&mut bytes).is_ok() {
                if let Some(ts) = timestamp_of(&bytes) {
                    misp.read.entry(uuid.clone()).or_default().insert(ts);
                    let k = misp.known.entry(uuid.clone()).or_insert(ts);
                    *k = (*k).max(ts);
                }
            }
            std::thread::sleep(import);
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.ino() != ino) {
                note(&uuid, &path);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    let _ = std::fs::remove_file(feed.join("manifest.json"));
}

#[test]
fn a_misp_consumer_racing_newer_versions_loses_no_newest_version() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rx = Listen::start(&out);
    let feed = out.join("misp");
    let events = infoblox_events();
    let originals: Vec<(String, Value)> = events
        .iter()
        .map(|p| {
            (
                uuid_of(p),
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap(),
            )
        })
        .collect();
    let base: HashMap<String, i64> = events
        .iter()
        .map(|p| {
            (
                uuid_of(p),
                timestamp_of(&std::fs::read(p).unwrap()).unwrap(),
            )
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let unread = Arc::new(Unread::default());
    let consumer = {
        let (stop, unread, feed) = (stop.clone(), unread.clone(), feed.clone());
        std::thread::spawn(move || {
            let mut misp = Misp::default();
            while !stop.load(Ordering::Relaxed) {
                // A slow import keeps each fetch going (about 20 s) while the next
                // versions arrive (about every 10 s).
                misp_fetch(&feed, &mut misp, Duration::from_millis(500), &stop, &unread);
                // MISP fetches on a schedule; here far more often than any real one.
                std::thread::sleep(Duration::from_millis(1200));
            }
            misp
        })
    };

    // Rounds of newer versions of every event, until the consumer has deleted a newest
    // version it had not read (the race this test is about: without a republish, that
    // version would be lost, no later round replacing it).
    let mut round = 0;
    loop {
        round += 1;
        let started = Instant::now();
        let src = dir.path().join(format!("round{round}"));
        std::fs::create_dir(&src).unwrap();
        for (uuid, doc) in &originals {
            let mut doc = doc.clone();
            doc["Event"]["timestamp"] = Value::String((base[uuid] + round).to_string());
            std::fs::write(
                src.join(format!("{uuid}.json")),
                serde_json::to_vec(&doc).unwrap(),
            )
            .unwrap();
        }
        send(&[&src], &rx.to);
        wait_delivered(&out, 41 * round as usize, Duration::from_secs(120));
        // Give the consumer, mid-fetch, time to delete what just arrived.
        std::thread::sleep(Duration::from_millis(1500));
        let hit = |unread: &Unread| {
            unread
                .lock()
                .unwrap()
                .iter()
                .any(|(uuid, ts)| *ts == base[uuid] + round)
        };
        eprintln!(
            "round {round} delivered in {:?}; unread deletes so far: {}",
            started.elapsed(),
            unread.lock().unwrap().len()
        );
        if hit(&unread) || round >= 20 {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let misp = consumer.join().unwrap();
    let unread = unread.lock().unwrap().clone();
    assert!(
        unread.iter().any(|(uuid, ts)| *ts == base[uuid] + round),
        "the consumer never deleted a newest version it had not read in {round} rounds: the race did not happen ({unread:?})"
    );
    let unread = unread.len();

    // Every newest version is in the feed or was read by the consumer, within seconds.
    let lost = |misp: &Misp| -> Vec<String> {
        base.iter()
            .filter(|(uuid, ts)| {
                let newest = *ts + round;
                let read = misp.read.get(*uuid).is_some_and(|r| r.contains(&newest));
                let in_feed = std::fs::read(feed.join(format!("{uuid}.json")))
                    .ok()
                    .and_then(|b| timestamp_of(&b))
                    == Some(newest);
                !read && !in_feed
            })
            .map(|(u, _)| u.clone())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut missing = lost(&misp);
    while !missing.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        missing = lost(&misp);
    }
    let log = rx.log();
    let republished = log
        .matches("republished an event MISP may have deleted unread")
        .count();
    let about: Vec<&str> = log
        .lines()
        .filter(|l| missing.iter().any(|u| l.contains(u.as_str())))
        .collect();
    assert!(
        missing.is_empty(),
        "newest versions lost after {round} rounds ({unread} unread deletes, {republished} republished): {missing:?}\nreceiver log about them:\n{}\nconsumer read: {:?}",
        about.join("\n"),
        missing.iter().map(|u| (u, misp.read.get(u))).collect::<Vec<_>>()
    );
    assert!(
        republished > 0,
        "{unread} unread deletes but nothing republished"
    );
    // The feed's index lists exactly the event files present.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let files: BTreeSet<String> = std::fs::read_dir(&feed)
            .unwrap()
            .filter_map(|e| {
                let n = e.unwrap().file_name().into_string().unwrap();
                n.strip_suffix(".json")
                    .filter(|s| s.len() == 36)
                    .map(str::to_string)
            })
            .collect();
        let listed: BTreeSet<String> = std::fs::read(feed.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Map<String, Value>>(&b).ok())
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        if files == listed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "manifest {listed:?} != files {files:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut child = rx.child;
    child.terminate();
}

fn recv_feed(args: &[&str], out: &Path) -> std::process::Output {
    Command::new(binary("gapferry-recv"))
        .arg("feed")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

#[test]
fn a_consumed_feed_is_emptied_then_republished_equal_to_pymisps_while_listen_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rx = Listen::start(&out);
    let feed = out.join("misp");
    let events = infoblox_events();
    let paths: Vec<&Path> = events.iter().map(PathBuf::as_path).collect();

    // `feed rebuild` runs over and over while the events are delivered.
    let stop = Arc::new(AtomicBool::new(false));
    let rebuilds = {
        let (stop, out) = (stop.clone(), out.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let o = recv_feed(&["rebuild"], &out);
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                assert!(String::from_utf8_lossy(&o.stdout).contains("feed rebuilt"));
                n += 1;
            }
            n
        })
    };
    send(&paths, &rx.to);
    wait_delivered(&out, 41, Duration::from_secs(120));
    stop.store(true, Ordering::Relaxed);
    assert!(rebuilds.join().unwrap() > 0);
    assert_feed_matches_infoblox_reference(&feed);

    // MISP deleted the manifest just after it was written: rebuilt without a delivery.
    std::fs::remove_file(feed.join("manifest.json")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !feed.join("manifest.json").exists() {
        assert!(Instant::now() < deadline, "manifest.json not rebuilt");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_feed_matches_infoblox_reference(&feed);

    // MISP consumes everything: the feed is emptied, hashes.csv too, manifest {}.
    let mut misp = Misp::default();
    misp_fetch(
        &feed,
        &mut misp,
        Duration::ZERO,
        &AtomicBool::new(false),
        &Unread::default(),
    );
    assert_eq!(misp.read.len(), 41);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let manifest = std::fs::read(feed.join("manifest.json")).unwrap_or_default();
        let hashes = std::fs::read(feed.join("hashes.csv")).unwrap_or_default();
        if manifest == b"{}" && hashes.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "consumed feed not emptied: manifest {} bytes, hashes.csv {} bytes",
            manifest.len(),
            hashes.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // A second fetch of the emptied feed finds nothing and breaks nothing.
    misp_fetch(
        &feed,
        &mut misp,
        Duration::ZERO,
        &AtomicBool::new(false),
        &Unread::default(),
    );
    assert_eq!(misp.read.len(), 41);

    // Republished from the archive while listen runs: equal to PyMISP's feed again.
    let o = recv_feed(&["republish", "--since", "2000-01-01"], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        stdout.contains("republished 41 of 41 archived events"),
        "{stdout}"
    );
    assert!(stdout.contains("manifest.json lists 41 events"), "{stdout}");
    assert_feed_matches_infoblox_reference(&feed);
    // Once more: every event is already there.
    let o = recv_feed(&["republish", "--uuid", &uuid_of(&events[0])], &out);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("republished 0 of 1"), "{stdout}");
    assert!(stdout.contains("1 already in the feed"), "{stdout}");
    assert_feed_matches_infoblox_reference(&feed);
    let mut child = rx.child;
    child.terminate();
}

#[test]
fn feed_commands_refuse_bad_input_with_the_reason_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // Not a receiver's --out yet.
    let o = recv_feed(&["rebuild"], &out);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("holds no receiver state"));
    std::fs::create_dir_all(out.join(".gapferry")).unwrap();
    for (args, expect) in [
        (
            vec!["republish", "--uuid", "../../etc/passwd"],
            "is not an event uuid",
        ),
        (
            vec![
                "republish",
                "--uuid",
                "5a0a9aa9-23a4-4607-b6df-41a9950d210f",
            ],
            "is not in the archive",
        ),
        (vec!["republish", "--since", "yesterday"], "is not a date"),
        (vec!["republish", "--since", "2026-13-45"], "is not a date"),
    ] {
        let o = recv_feed(&args, &out);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
    }
    assert!(
        !out.join("misp").exists(),
        "a refused command wrote the feed"
    );
    assert!(!out.join("etc").exists());
}

#[test]
fn delivered_events_and_bundles_are_archived_unless_the_archive_is_disabled() {
    use gapferry_tests::harness::{send as send_in_process, sender_config, TestReceiver};
    let event = realdata().join("misp-feed/infoblox/0472809b-1582-4dde-88a9-d82848e9e660.json");
    let bundle = realdata().join("stix21/misp-stix-tests/test_event1_stix21.json");
    for enabled in [true, false] {
        let rx = TestReceiver::start(|c| c.destinations.archive.enabled = enabled);
        send_in_process(
            &[event.clone(), bundle.clone()],
            rx.addr,
            sender_config(200_000_000),
        );
        let records = rx.wait_records(2, Duration::from_secs(60));
        let delivered = with_outcome(&records, "delivered");
        assert_eq!(delivered.len(), 2, "{records:#?}");
        let archive = rx.out.join(".gapferry/archive");
        let archived_event = archive.join("misp/0472809b-1582-4dde-88a9-d82848e9e660.json");
        let stix_path = delivered
            .iter()
            .find(|r| r["kind"] == "stix")
            .and_then(|r| r["path"].as_str())
            .map(PathBuf::from)
            .unwrap();
        let archived_bundle = archive.join("stix").join(stix_path.file_name().unwrap());
        if enabled {
            // The event as the feed holds it; the bundle as it crossed.
            assert_eq!(
                std::fs::read(&archived_event).unwrap(),
                std::fs::read(
                    rx.out
                        .join("misp/0472809b-1582-4dde-88a9-d82848e9e660.json")
                )
                .unwrap()
            );
            assert_eq!(
                std::fs::read(&archived_bundle).unwrap(),
                std::fs::read(&bundle).unwrap()
            );
        } else {
            assert!(!archive.exists(), "archive written while disabled");
        }
        rx.stop();
    }
}
