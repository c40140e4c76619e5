//! The MISP feed against real data: the 41 Infoblox events must rebuild the published
//! manifest entries and PyMISP's hashes.csv; merge rules; the odd events of MISP's and
//! PyMISP's own test suites against PyMISP's output (fixtures/pymisp_reference.json).

use gapferry_feeds::{split_misp, EventError, EventOutcome, MispError, MispFeed};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

fn infoblox_dir() -> PathBuf {
    realdata().join("misp-feed/infoblox")
}

/// The 41 event files (everything but manifest.json), sorted.
fn infoblox_events() -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(infoblox_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap() != "manifest.json")
        .map(|p| {
            let uuid = p.file_stem().unwrap().to_str().unwrap().to_string();
            (uuid, fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    assert_eq!(
        out.len(),
        41,
        "the realdata feed should hold 41 event files"
    );
    out
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

/// Keys of a JSON object in document order.
fn key_order(raw: &str) -> Vec<String> {
    struct Keys;
    impl<'de> Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<String>, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = map.next_key::<String>()? {
                map.next_value::<IgnoredAny>()?;
                keys.push(k);
            }
            Ok(keys)
        }
    }
    let mut de = serde_json::Deserializer::from_str(raw);
    serde::Deserializer::deserialize_map(&mut de, Keys).unwrap()
}

/// Our manifest entries compared with the published ones: values, types and key order.
fn assert_manifest_matches_published(feed_dir: &Path, uuids: &[String]) {
    let published = read_json(&infoblox_dir().join("manifest.json"));
    let ours = read_json(&feed_dir.join("manifest.json"));
    let ours_obj = ours.as_object().unwrap();
    assert_eq!(ours_obj.len(), uuids.len(), "one manifest entry per event");
    let raw_ours: BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&fs::read(feed_dir.join("manifest.json")).unwrap()).unwrap();
    let raw_published: BTreeMap<String, Box<serde_json::value::RawValue>> =
        serde_json::from_slice(&fs::read(infoblox_dir().join("manifest.json")).unwrap()).unwrap();
    for uuid in uuids {
        assert_eq!(
            ours_obj[uuid], published[uuid],
            "manifest entry of {uuid} differs from the published one"
        );
        assert_eq!(
            key_order(raw_ours[uuid].get()),
            key_order(raw_published[uuid].get()),
            "key order of {uuid}"
        );
        assert_eq!(
            key_order(&serde_json::to_string(&ours_obj[uuid]["Orgc"]).unwrap()),
            ["name", "uuid"]
        );
    }
}

fn sorted_lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn assert_hashes_match_pymisp(feed_dir: &Path) {
    let ours = sorted_lines(&feed_dir.join("hashes.csv"));
    let reference = sorted_lines(&realdata().join("misp-feed/infoblox-derived/hashes.csv"));
    let ours_set: std::collections::BTreeSet<_> = ours.iter().collect();
    let ref_set: std::collections::BTreeSet<_> = reference.iter().collect();
    assert_eq!(ours_set.len(), ref_set.len(), "distinct hashes.csv lines");
    assert!(
        ours_set == ref_set,
        "hashes.csv differs from PyMISP's as a set"
    );
    // PyMISP keeps duplicates; so do we, so the multisets match too.
    assert_eq!(ours.len(), reference.len(), "hashes.csv line count");
    assert!(
        ours == reference,
        "hashes.csv differs from PyMISP's as a multiset"
    );
}

fn no_leftovers(dir: &Path) {
    for e in fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(
            !name.starts_with(".gapferry"),
            "leftover {name} in the feed directory"
        );
    }
}

#[test]
fn infoblox_events_one_by_one_rebuild_the_published_feed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    let events = infoblox_events();
    for (uuid, bytes) in &events {
        let d = feed.deliver_event(bytes).unwrap();
        assert_eq!(&d.uuid, uuid);
        assert_eq!(d.outcome, EventOutcome::New);
        assert_eq!(
            fs::read(&d.path).unwrap(),
            *bytes,
            "event file kept byte for byte"
        );
    }
    let uuids: Vec<String> = events.iter().map(|(u, _)| u.clone()).collect();
    assert_manifest_matches_published(&dir, &uuids);
    assert_hashes_match_pymisp(&dir);
    no_leftovers(&dir);
}

#[test]
fn infoblox_events_as_a_batch_and_as_a_rest_export() {
    let events = infoblox_events();
    let uuids: Vec<String> = events.iter().map(|(u, _)| u.clone()).collect();

    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("batch");
    let mut feed = MispFeed::new(&dir);
    let results = feed
        .deliver_batch(events.iter().map(|(_, b)| b.as_slice()))
        .unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    assert_manifest_matches_published(&dir, &uuids);
    assert_hashes_match_pymisp(&dir);
    no_leftovers(&dir);

    // One REST-search style export of the 41 events, split on the low side.
    let mut export = b"{\"response\": [".to_vec();
    for (i, (_, b)) in events.iter().enumerate() {
        if i > 0 {
            export.extend_from_slice(b",\n");
        }
        export.extend_from_slice(b);
    }
    export.extend_from_slice(b"]}");
    let docs = split_misp(&export).unwrap();
    assert_eq!(docs.len(), 41);
    for (doc, (uuid, original)) in docs.iter().zip(&events) {
        assert_eq!(&doc.uuid, uuid);
        let a: Value = serde_json::from_slice(&doc.json).unwrap();
        let b: Value = serde_json::from_slice(original).unwrap();
        assert_eq!(a, b, "split document of {uuid} equals the original event");
    }
    let dir = tmp.path().join("rest");
    let mut feed = MispFeed::new(&dir);
    let results = feed.deliver_batch(docs.iter().map(|d| &d.json)).unwrap();
    assert!(results.iter().all(|r| r.is_ok()));
    assert_manifest_matches_published(&dir, &uuids);
    assert_hashes_match_pymisp(&dir);

    // Re-delivering the batch is a no-op.
    let again = feed.deliver_batch(docs.iter().map(|d| &d.json)).unwrap();
    assert!(again
        .iter()
        .all(|r| r.as_ref().unwrap().outcome == EventOutcome::AlreadyCurrent));
    assert_hashes_match_pymisp(&dir);
}

fn small_event(uuid: &str, timestamp: i64, values: &[&str]) -> Vec<u8> {
    let attrs: Vec<Value> = values
        .iter()
        .map(|v| json!({"type": "domain", "category": "Network activity", "value": v}))
        .collect();
    json!({"Event": {
        "uuid": uuid,
        "info": format!("event at {timestamp}"),
        "date": "2024-01-02",
        "timestamp": timestamp.to_string(),
        "analysis": "1",
        "threat_level_id": "3",
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": attrs,
    }})
    .to_string()
    .into_bytes()
}

const U1: &str = "11111111-1111-4111-8111-111111111111";
const U2: &str = "22222222-2222-4222-8222-222222222222";
const U3: &str = "33333333-3333-4333-8333-333333333333";

fn md5_line(v: &str, uuid: &str) -> String {
    use md5::{Digest, Md5};
    let h = Md5::digest(v.as_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("{hex},{uuid}")
}

#[test]
fn newer_wins_older_is_ignored_same_is_a_no_op() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    feed.deliver_event(&small_event(U1, 100, &["old.example"]))
        .unwrap();
    feed.deliver_event(&small_event(U2, 100, &["other.example"]))
        .unwrap();

    let d = feed
        .deliver_event(&small_event(U1, 200, &["new.example", "new2.example"]))
        .unwrap();
    assert_eq!(
        d.outcome,
        EventOutcome::Replaced {
            previous_timestamp: 100
        }
    );
    let m = read_json(&dir.join("manifest.json"));
    assert_eq!(m[U1]["timestamp"], json!(200));
    assert_eq!(m[U1]["info"], json!("event at 200"));
    assert_eq!(m[U1]["analysis"], json!(1));
    assert_eq!(m[U1]["threat_level_id"], json!(3));
    let mut want = vec![
        md5_line("new.example", U1),
        md5_line("new2.example", U1),
        md5_line("other.example", U2),
    ];
    want.sort();
    assert_eq!(sorted_lines(&dir.join("hashes.csv")), want);

    let err = feed
        .deliver_event(&small_event(U1, 150, &["stale.example"]))
        .unwrap_err();
    assert!(
        matches!(
            err,
            MispError::Stale {
                incoming: 150,
                existing: 200,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("older"));
    let on_disk = read_json(&dir.join(format!("{U1}.json")));
    assert_eq!(
        on_disk["Event"]["timestamp"],
        json!("200"),
        "stale copy not written"
    );
    assert_eq!(sorted_lines(&dir.join("hashes.csv")), want);

    let d = feed
        .deliver_event(&small_event(U1, 200, &["new.example", "new2.example"]))
        .unwrap();
    assert_eq!(d.outcome, EventOutcome::AlreadyCurrent);
    no_leftovers(&dir);
}

#[test]
fn deleted_or_emptied_directory_is_recreated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    feed.deliver_event(&small_event(U1, 100, &["a.example"]))
        .unwrap();
    feed.deliver_event(&small_event(U2, 100, &["b.example"]))
        .unwrap();

    // MISP fetched and deleted the whole directory.
    fs::remove_dir_all(&dir).unwrap();
    let d = feed
        .deliver_event(&small_event(U3, 100, &["c.example"]))
        .unwrap();
    assert_eq!(d.outcome, EventOutcome::New);
    let m = read_json(&dir.join("manifest.json"));
    assert_eq!(m.as_object().unwrap().len(), 1);
    assert!(m.get(U3).is_some());
    assert_eq!(
        sorted_lines(&dir.join("hashes.csv")),
        vec![md5_line("c.example", U3)]
    );

    // MISP emptied the directory but kept it.
    for e in fs::read_dir(&dir).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    // An event that was there before counts as new again: nothing to compare with.
    let d = feed
        .deliver_event(&small_event(U1, 50, &["a.example"]))
        .unwrap();
    assert_eq!(d.outcome, EventOutcome::New);
    let m = read_json(&dir.join("manifest.json"));
    assert_eq!(m.as_object().unwrap().keys().collect::<Vec<_>>(), vec![U1]);

    // MISP deleted event files but left manifest.json and hashes.csv behind.
    feed.deliver_event(&small_event(U2, 100, &["b.example"]))
        .unwrap();
    fs::remove_file(dir.join(format!("{U1}.json"))).unwrap();
    feed.deliver_event(&small_event(U3, 100, &["c.example"]))
        .unwrap();
    let m = read_json(&dir.join("manifest.json"));
    let mut keys: Vec<&String> = m.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, vec![U2, U3]);
    let mut want = vec![md5_line("b.example", U2), md5_line("c.example", U3)];
    want.sort();
    assert_eq!(sorted_lines(&dir.join("hashes.csv")), want);
    no_leftovers(&dir);
}

#[test]
fn interrupted_delivery_is_finished_by_the_next_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    feed.deliver_event(&small_event(U1, 100, &["a.example"]))
        .unwrap();

    // A crash after the event file's rename but before manifest.json: the newer file is
    // on disk, the pending marker names it, the manifest still has the old entry.
    fs::write(
        dir.join(format!("{U1}.json")),
        small_event(U1, 300, &["z.example"]),
    )
    .unwrap();
    fs::write(dir.join(".gapferry-pending"), format!("{U1}\n")).unwrap();
    // And an event file nobody indexed (crash before the marker was even useful).
    fs::write(
        dir.join(format!("{U2}.json")),
        small_event(U2, 100, &["b.example"]),
    )
    .unwrap();

    feed.deliver_event(&small_event(U3, 100, &["c.example"]))
        .unwrap();
    let m = read_json(&dir.join("manifest.json"));
    assert_eq!(m[U1]["timestamp"], json!(300));
    assert_eq!(m[U2]["timestamp"], json!(100));
    let mut want = vec![
        md5_line("z.example", U1),
        md5_line("b.example", U2),
        md5_line("c.example", U3),
    ];
    want.sort();
    assert_eq!(sorted_lines(&dir.join("hashes.csv")), want);
    no_leftovers(&dir);

    // hashes.csv deleted on its own: rebuilt from the event files.
    fs::remove_file(dir.join("hashes.csv")).unwrap();
    feed.deliver_event(&small_event(U3, 100, &["c.example"]))
        .unwrap();
    assert_eq!(sorted_lines(&dir.join("hashes.csv")), want);

    // A corrupt manifest.json is rebuilt too.
    fs::write(dir.join("manifest.json"), b"{ not json").unwrap();
    let s = feed.rebuild().unwrap();
    assert_eq!(s.entries, 3);
    assert_eq!(
        read_json(&dir.join("manifest.json"))[U1]["timestamp"],
        json!(300)
    );
}

#[test]
fn malformed_events_are_refused_and_never_written() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    feed.deliver_event(&small_event(U1, 100, &["a.example"]))
        .unwrap();
    let before_manifest = fs::read(dir.join("manifest.json")).unwrap();
    let before_hashes = fs::read(dir.join("hashes.csv")).unwrap();

    let mut no_orgc: Value = serde_json::from_slice(&small_event(U2, 100, &["x"])).unwrap();
    no_orgc["Event"].as_object_mut().unwrap().remove("Orgc");
    let mut bad_level: Value = serde_json::from_slice(&small_event(U2, 100, &["x"])).unwrap();
    bad_level["Event"]["threat_level_id"] = json!("7");
    let mut path_uuid: Value = serde_json::from_slice(&small_event(U2, 100, &["x"])).unwrap();
    path_uuid["Event"]["uuid"] = json!("../../../../tmp/evil");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (no_orgc.to_string().into_bytes(), "Orgc"),
        (bad_level.to_string().into_bytes(), "threat_level_id"),
        (path_uuid.to_string().into_bytes(), "not a UUID"),
        (b"{\"Event\": [1, 2]}".to_vec(), "not a JSON object"),
        (b"\x00\x01binary".to_vec(), "not valid JSON"),
        (
            br#"{"type": "bundle", "id": "bundle--x"}"#.to_vec(),
            "no MISP event",
        ),
    ];
    for (bytes, want) in cases {
        let err = feed.deliver_event(&bytes).unwrap_err();
        assert!(matches!(err, MispError::Event(_)));
        let msg = err.to_string();
        assert!(msg.contains(want), "expected {want:?} in {msg:?}");
    }
    assert!(!dir.join(format!("{U2}.json")).exists());
    assert_eq!(
        fs::read(dir.join("manifest.json")).unwrap(),
        before_manifest
    );
    assert_eq!(fs::read(dir.join("hashes.csv")).unwrap(), before_hashes);
    assert!(!tmp.path().join("tmp/evil.json").exists());
    no_leftovers(&dir);
}

#[test]
fn odd_real_events_match_pymisp() {
    let reference: Value = serde_json::from_str(
        &fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pymisp_reference.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("misp");
    let mut feed = MispFeed::new(&dir);
    let mut delivered = 0;
    let mut refused = 0;
    for (key, want) in reference["events"].as_object().unwrap() {
        let docs: Vec<Vec<u8>> = match key.split_once('#') {
            Some((file, idx)) => {
                let all = split_misp(&fs::read(realdata().join(file)).unwrap()).unwrap();
                vec![all[idx.parse::<usize>().unwrap()].json.clone()]
            }
            None => vec![fs::read(realdata().join(key)).unwrap()],
        };
        let result = feed.deliver_event(&docs[0]);
        if let Some(pymisp_error) = want.get("error") {
            let err = result.expect_err(key);
            assert!(
                matches!(err, MispError::Event(EventError::Malformed { .. })),
                "{key}: {err}"
            );
            eprintln!("{key}: refused ({err}); PyMISP: {pymisp_error}");
            refused += 1;
            continue;
        }
        let d = result.unwrap_or_else(|e| panic!("{key}: {e}"));
        let (uuid, entry) = want["manifest"].as_object().unwrap().iter().next().unwrap();
        assert_eq!(&d.uuid, uuid);
        let ours = read_json(&dir.join("manifest.json"));
        assert_eq!(
            &ours[uuid], entry,
            "{key}: manifest entry differs from PyMISP's"
        );
        let mut our_hashes: Vec<String> = fs::read_to_string(dir.join("hashes.csv"))
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_suffix(&format!(",{uuid}")).map(str::to_string))
            .collect();
        let mut pymisp_hashes: Vec<String> = want["hashes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h.as_str().unwrap().to_string())
            .collect();
        our_hashes.sort();
        pymisp_hashes.sort();
        assert_eq!(
            our_hashes, pymisp_hashes,
            "{key}: hashes differ from PyMISP's"
        );
        // The delivered file is {"Event": {...}} even for a bare event.
        let file = read_json(&d.path);
        assert!(file["Event"].is_object(), "{key}");
        delivered += 1;
    }
    assert_eq!((delivered, refused), (10, 1));

    // The JSON schemas next to the events are not events.
    for schema in ["pymisp-schema.json", "pymisp-schema-lax.json"] {
        let err = feed
            .deliver_event(&fs::read(realdata().join("misp-events").join(schema)).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("no MISP event"), "{schema}: {err}");
    }
}
