//! Small MISP events and STIX bundles (issue 12), driven through the delivery with the
//! events the assembler hands it: they are reassembled in memory (no staging file, within
//! a bounded budget); STIX bundles wait for the group commit like small files, invisible
//! and unrecorded until it, a bad bundle refused alone; the archive holds each bundle as
//! a link of the stored file; a crash before the commit leaves nothing visible and no
//! `delivered` record.

use gapferry_common::wire::Codec;
use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_receiver::delivery::Delivery;
use gapferry_receiver::destinations::Destinations;
use gapferry_receiver::metrics::ReceiverMetrics;
use gapferry_receiver::records::{Outcome, Record};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A delivery under `out` whose groups close only when told (or when full).
fn delivery(out: &Path) -> Delivery {
    let mut d = Delivery::open(out, Destinations::under(out), ReceiverMetrics::default()).unwrap();
    d.set_group_age(Duration::from_secs(3_600));
    d
}

fn descriptor(kind: ObjectKind, name: &str, size: u64, blake3: [u8; 32]) -> ObjectDescriptor {
    ObjectDescriptor {
        kind,
        name: name.into(),
        size,
        blake3,
        block_plain_size: 1 << 16,
        mtime: 1_700_000_000,
        pass: 1,
        passes: 1,
    }
}

/// Announces object `object` of `kind` holding `body` (a forged hash when `forged`).
fn start(d: &mut Delivery, object: u32, kind: ObjectKind, body: &[u8], forged: bool) -> ObjectRef {
    let blake3 = announced(body, forged);
    let object = ObjectRef { session: 7, object };
    let descriptor = descriptor(
        kind,
        &format!("doc-{}.json", object.object),
        body.len() as u64,
        blake3,
    );
    d.handle(Event::ObjectStarted { object, descriptor });
    object
}

/// Hands every block of `body` to the delivery (one block per 64 KiB).
fn blocks(d: &mut Delivery, object: ObjectRef, body: &[u8]) {
    for (block, chunk) in body.chunks(1 << 16).enumerate() {
        d.handle(Event::BlockDecoded {
            object,
            block: block as u32,
            codec: Codec::None,
            plain_len: chunk.len() as u32,
            data: chunk.to_vec(),
        });
    }
}

/// The blake3 the sender announces for `body` (another one when `forged`).
fn announced(body: &[u8], forged: bool) -> [u8; 32] {
    let mut blake3 = *blake3::hash(body).as_bytes();
    if forged {
        blake3[0] ^= 1;
    }
    blake3
}

/// The assembler's word that every block of `object` arrived, `blake3` the hash its
/// sender announced: the only place this test builds the event, whose fields follow the
/// wire version.
fn complete(d: &mut Delivery, object: ObjectRef, blake3: [u8; 32]) {
    d.handle(Event::ObjectComplete { object, blake3 });
}

/// Hands `delivery` one complete object.
fn send(d: &mut Delivery, object: u32, kind: ObjectKind, body: &[u8], forged: bool) {
    let o = start(d, object, kind, body, forged);
    blocks(d, o, body);
    complete(d, o, announced(body, forged));
}

fn uuid(n: u32, tail: u32) -> String {
    format!("5a0a9aa9-23a4-4607-b6df-{n:04x}{tail:08x}")
}

fn misp_event(n: u32, attributes: usize) -> Vec<u8> {
    let attrs: Vec<serde_json::Value> = (0..attributes)
        .map(|i| serde_json::json!({"type": "domain", "category": "Network activity", "value": format!("h{i}.example")}))
        .collect();
    serde_json::json!({"Event": {
        "uuid": uuid(n, 0),
        "info": format!("event {n}"),
        "date": "2024-01-02",
        "timestamp": "1700000000",
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": attrs,
    }})
    .to_string()
    .into_bytes()
}

/// A STIX 2.1 bundle of id `bundle--uuid(n)` naming `value` in its indicator.
fn bundle(n: u32, value: &str) -> Vec<u8> {
    serde_json::json!({
        "type": "bundle",
        "id": format!("bundle--{}", uuid(n, 1)),
        "objects": [{
            "type": "indicator", "spec_version": "2.1", "id": format!("indicator--{}", uuid(n, 2)),
            "created": "2024-01-02T00:00:00.000Z", "modified": "2024-01-02T00:00:00.000Z",
            "pattern": format!("[domain-name:value = '{value}']"), "pattern_type": "stix",
            "valid_from": "2024-01-02T00:00:00Z",
        }],
    })
    .to_string()
    .into_bytes()
}

fn records(out: &Path) -> Vec<Record> {
    std::fs::read_to_string(out.join(".gapferry/records.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn outcomes(out: &Path) -> Vec<(u32, Outcome)> {
    records(out).iter().map(|r| (r.object, r.outcome)).collect()
}

/// Every `delivered` record names a file that holds its announced bytes.
fn assert_records_hold(out: &Path) {
    for r in records(out) {
        if r.outcome == Outcome::Delivered {
            let path: PathBuf = r.path.clone().unwrap();
            let bytes = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("delivered record without its file {path:?}: {e}"));
            assert_eq!(blake3::hash(&bytes).to_hex().to_string(), r.blake3.unwrap());
        }
    }
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    n.sort();
    n
}

/// Names in `dir` a reader would take for content (not hidden staging files).
fn visible(dir: &Path) -> Vec<String> {
    names(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

#[test]
fn small_documents_are_reassembled_in_memory_without_a_staging_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    let event = misp_event(1, 3);
    let b = bundle(2, "a.example");
    let e = start(&mut d, 1, ObjectKind::Misp, &event, false);
    let s = start(&mut d, 2, ObjectKind::Stix, &b, false);
    blocks(&mut d, e, &event);
    blocks(&mut d, s, &b);
    assert_eq!(names(&out.join(".gapferry/staging")), Vec::<String>::new());
    assert_eq!(d.in_progress(), 2);
    complete(&mut d, e, announced(&event, false));
    complete(&mut d, s, announced(&b, false));
    d.flush();
    assert_eq!(
        outcomes(out),
        [(1, Outcome::Delivered), (2, Outcome::Delivered)]
    );
    assert_eq!(
        std::fs::read(out.join(format!("misp/{}.json", uuid(1, 0)))).unwrap(),
        event
    );
    assert_records_hold(out);
    assert_eq!(d.in_progress(), 0);
}

#[test]
fn a_large_document_or_one_past_the_memory_budget_takes_a_staging_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let staging = out.join(".gapferry/staging");
    let mut d = delivery(out);
    let mib = 1u64 << 20;
    let announce = |d: &mut Delivery, object: u32, size: u64| {
        let object = ObjectRef { session: 7, object };
        let descriptor = descriptor(ObjectKind::Misp, "e.json", size, [0; 32]);
        d.handle(Event::ObjectStarted { object, descriptor });
    };
    // Above the per-object limit: on disk.
    announce(&mut d, 0, mib + 1);
    assert_eq!(names(&staging).len(), 1);
    // 64 documents of 1 MiB fill the 64 MiB budget in memory; the next goes to disk.
    for object in 1..=64 {
        announce(&mut d, object, mib);
    }
    assert_eq!(
        names(&staging).len(),
        1,
        "the budget holds 64 MiB in memory"
    );
    announce(&mut d, 65, mib);
    assert_eq!(names(&staging).len(), 2, "past the budget: a staging file");
    assert_eq!(d.in_progress(), 66);
    d.abandon_all("test ends");
    assert_eq!(names(&staging), Vec::<String>::new());
    let failed = outcomes(out)
        .iter()
        .filter(|(_, o)| *o == Outcome::Failed)
        .count();
    assert_eq!(failed, 66);
}

#[test]
fn a_large_misp_event_staged_on_disk_is_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    let event = misp_event(3, 20_000);
    assert!(event.len() as u64 > 1 << 20);
    let o = start(&mut d, 1, ObjectKind::Misp, &event, false);
    assert_eq!(names(&out.join(".gapferry/staging")).len(), 1);
    blocks(&mut d, o, &event);
    complete(&mut d, o, announced(&event, false));
    d.flush();
    assert_eq!(outcomes(out), [(1, Outcome::Delivered)]);
    assert_eq!(names(&out.join(".gapferry/staging")), Vec::<String>::new());
    assert_records_hold(out);
}

#[test]
fn stix_bundles_wait_for_the_group_and_a_bad_bundle_is_refused_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let stix = out.join("stix");
    let mut d = delivery(out);
    let bundles: Vec<Vec<u8>> = (0..5)
        .map(|n| bundle(n, &format!("b{n}.example")))
        .collect();
    for (n, b) in bundles.iter().enumerate() {
        match n {
            1 => send(&mut d, n as u32, ObjectKind::Stix, b, true),
            3 => send(
                &mut d,
                n as u32,
                ObjectKind::Stix,
                b"{\"type\": \"report\"}",
                false,
            ),
            _ => send(&mut d, n as u32, ObjectKind::Stix, b, false),
        }
    }
    assert_eq!(
        visible(&stix),
        Vec::<String>::new(),
        "visible before the commit"
    );
    assert_eq!(outcomes(out), [(1, Outcome::Failed), (3, Outcome::Failed)]);
    assert_eq!(d.in_progress(), 3);
    d.flush();
    let delivered: Vec<u32> = records(out)
        .iter()
        .filter(|r| r.outcome == Outcome::Delivered)
        .map(|r| r.object)
        .collect();
    assert_eq!(delivered, [0, 2, 4]);
    assert_eq!(names(&stix), visible(&stix), "no staging file left behind");
    assert_eq!(visible(&stix).len(), 3);
    for n in [0usize, 2, 4] {
        let name = format!("bundle--{}.json", uuid(n as u32, 1));
        let stored = stix.join(&name);
        assert_eq!(std::fs::read(&stored).unwrap(), bundles[n]);
        let archived = out.join(".gapferry/archive/stix").join(&name);
        assert_eq!(std::fs::read(&archived).unwrap(), bundles[n]);
        assert_eq!(
            std::fs::metadata(&stored).unwrap().ino(),
            std::fs::metadata(&archived).unwrap().ino(),
            "the archive copy is a link of the stored bundle"
        );
    }
    assert_records_hold(out);
    // A consumer deleting the bundle leaves the archived bytes.
    let name = format!("bundle--{}.json", uuid(0, 1));
    std::fs::remove_file(stix.join(&name)).unwrap();
    assert_eq!(
        std::fs::read(out.join(".gapferry/archive/stix").join(&name)).unwrap(),
        bundles[0]
    );
}

#[test]
fn two_bundles_of_one_id_in_a_group_are_both_kept_and_the_same_bytes_once() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let stix = out.join("stix");
    let mut d = delivery(out);
    let first = bundle(9, "first.example");
    let second = bundle(9, "second.example");
    send(&mut d, 1, ObjectKind::Stix, &first, false);
    send(&mut d, 2, ObjectKind::Stix, &second, false);
    send(&mut d, 3, ObjectKind::Stix, &first, false);
    d.flush();
    assert_eq!(
        outcomes(out),
        [
            (1, Outcome::Delivered),
            (2, Outcome::Delivered),
            (3, Outcome::Delivered)
        ]
    );
    let plain = stix.join(format!("bundle--{}.json", uuid(9, 1)));
    assert_eq!(std::fs::read(&plain).unwrap(), first);
    assert_eq!(names(&stix).len(), 2, "{:?}", names(&stix));
    let paths: Vec<PathBuf> = records(out).into_iter().map(|r| r.path.unwrap()).collect();
    assert_eq!(paths[0], plain);
    assert_eq!(paths[2], plain, "the same bytes are stored once");
    assert_ne!(paths[1], plain);
    assert_eq!(std::fs::read(&paths[1]).unwrap(), second);
    assert_records_hold(out);
}

#[test]
fn a_crash_before_the_group_commit_leaves_nothing_visible_and_nothing_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    send(&mut d, 1, ObjectKind::Stix, &bundle(1, "x.example"), false);
    send(&mut d, 2, ObjectKind::Misp, &misp_event(2, 2), false);
    // The process dies: no destructor, no flush.
    std::mem::forget(d);
    assert_eq!(visible(&out.join("stix")), Vec::<String>::new());
    assert_eq!(visible(&out.join("misp")), Vec::<String>::new());
    assert_eq!(records(out).len(), 0);
    assert_eq!(
        names(&out.join("stix")).len(),
        1,
        "the staged bundle, hidden"
    );
    // The next run starts clean and delivers what the sender sends again.
    let mut d = delivery(out);
    assert_eq!(
        names(&out.join("stix")),
        Vec::<String>::new(),
        "stale staging left"
    );
    send(&mut d, 1, ObjectKind::Stix, &bundle(1, "x.example"), false);
    d.flush();
    assert_eq!(outcomes(out), [(1, Outcome::Delivered)]);
    assert_eq!(names(&out.join("stix")).len(), 1);
    assert_records_hold(out);
}

#[test]
fn a_forged_misp_event_reassembled_in_memory_is_refused_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    let events: Vec<Vec<u8>> = (1..=3).map(|n| misp_event(n, 2)).collect();
    for (n, e) in events.iter().enumerate() {
        send(&mut d, n as u32 + 1, ObjectKind::Misp, e, n == 1);
    }
    assert_eq!(outcomes(out), [(2, Outcome::Failed)]);
    assert_eq!(visible(&out.join("misp")), Vec::<String>::new());
    d.flush();
    assert_eq!(
        outcomes(out),
        [
            (2, Outcome::Failed),
            (1, Outcome::Delivered),
            (3, Outcome::Delivered)
        ]
    );
    assert!(!out.join(format!("misp/{}.json", uuid(2, 0))).exists());
    assert_eq!(names(&out.join(".gapferry/staging")), Vec::<String>::new());
    assert_records_hold(out);
}
