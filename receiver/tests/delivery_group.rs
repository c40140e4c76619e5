//! Group commit of small files (issue 12), driven through the delivery with the events
//! the assembler hands it: nothing of a group is visible or recorded as delivered before
//! the group commits; a bad object in the group is refused alone; a failure between the
//! fsyncs and the renames fails that object alone and leaves no `delivered` record
//! without its file.

use gapferry_common::wire::Codec;
use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_receiver::delivery::Delivery;
use gapferry_receiver::destinations::Destinations;
use gapferry_receiver::metrics::ReceiverMetrics;
use gapferry_receiver::records::{Outcome, Record};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A delivery under `out` whose groups close only when told (or when full).
fn delivery(out: &Path) -> Delivery {
    let mut d = Delivery::open(out, Destinations::under(out), ReceiverMetrics::default()).unwrap();
    d.set_group_age(Duration::from_secs(3_600));
    d
}

/// Hands `delivery` one complete object of kind `file`; `forged` announces another hash.
fn send_file(delivery: &mut Delivery, object: u32, name: &str, body: &[u8], forged: bool) {
    let mut blake3 = *blake3::hash(body).as_bytes();
    if forged {
        blake3[0] ^= 1;
    }
    let object = ObjectRef { session: 9, object };
    let descriptor = ObjectDescriptor {
        kind: ObjectKind::File,
        name: name.into(),
        size: body.len() as u64,
        blake3,
        block_plain_size: 1 << 16,
        mtime: 1_700_000_000 + i64::from(object.object),
        pass: 1,
        passes: 1,
    };
    delivery.handle(Event::ObjectStarted { object, descriptor });
    delivery.handle(Event::BlockDecoded {
        object,
        block: 0,
        codec: Codec::None,
        plain_len: body.len() as u32,
        data: body.to_vec(),
    });
    delivery.handle(Event::ObjectComplete { object, blake3 });
}

fn records(out: &Path) -> Vec<Record> {
    std::fs::read_to_string(out.join(".gapferry/records.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

fn staging_files(out: &Path) -> usize {
    std::fs::read_dir(out.join(".gapferry/staging"))
        .unwrap()
        .count()
}

#[test]
fn a_group_is_invisible_until_it_commits_and_a_forged_member_is_refused_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    for i in 0..6u32 {
        let body = format!("small object {i}").repeat(50);
        send_file(&mut d, i, &format!("g/{i}.txt"), body.as_bytes(), i == 3);
    }
    let files = out.join("files");
    for i in 0..6 {
        assert!(
            !files.join(format!("g/{i}.txt")).exists(),
            "object {i} visible before its group committed"
        );
    }
    let before = records(out);
    assert_eq!(
        before.len(),
        1,
        "only the forged object's failure: {before:?}"
    );
    assert_eq!(before[0].outcome, Outcome::Failed);
    assert_eq!(before[0].object, 3);
    assert_eq!(
        d.in_progress(),
        5,
        "five verified objects wait for the group"
    );

    // What the delivery thread does when it has nothing queued.
    d.flush();
    for i in [0u32, 1, 2, 4, 5] {
        let body = std::fs::read(files.join(format!("g/{i}.txt"))).unwrap();
        assert_eq!(body, format!("small object {i}").repeat(50).as_bytes());
    }
    assert!(
        !files.join("g/3.txt").exists(),
        "the forged object is never visible"
    );
    let delivered = records(out)
        .iter()
        .filter(|r| r.outcome == Outcome::Delivered)
        .count();
    assert_eq!(delivered, 5);
    assert_records_hold(out);
    assert_eq!(staging_files(out), 0, "no staging file left");
    assert_eq!(d.in_progress(), 0);
}

#[test]
fn a_failure_between_fsync_and_rename_fails_that_object_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    send_file(&mut d, 1, "a.txt", b"first", false);
    send_file(&mut d, 2, "late/b.txt", b"second", false);
    send_file(&mut d, 3, "c.txt", b"third", false);
    // Between the group's preparation and its commit, something takes `late`'s place.
    std::fs::write(out.join("files/late"), b"in the way").unwrap();
    d.flush();
    let outcomes: Vec<(u32, Outcome)> =
        records(out).iter().map(|r| (r.object, r.outcome)).collect();
    assert_eq!(
        outcomes,
        [
            (1, Outcome::Delivered),
            (2, Outcome::Failed),
            (3, Outcome::Delivered)
        ]
    );
    assert_eq!(
        std::fs::read(out.join("files/late")).unwrap(),
        b"in the way"
    );
    assert_records_hold(out);
    assert_eq!(
        staging_files(out),
        0,
        "the failed object's staging file was removed"
    );
}

#[test]
fn the_same_name_twice_closes_the_group_and_the_newer_version_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    send_file(&mut d, 1, "same.txt", b"version one", false);
    send_file(&mut d, 2, "other.txt", b"other", false);
    // The second copy of `same.txt` closes the group holding the first.
    send_file(&mut d, 3, "same.txt", b"version two", false);
    assert_eq!(
        std::fs::read(out.join("files/same.txt")).unwrap(),
        b"version one"
    );
    assert!(out.join("files/other.txt").exists());
    d.flush();
    assert_eq!(
        std::fs::read(out.join("files/same.txt")).unwrap(),
        b"version two"
    );
    let delivered = records(out)
        .iter()
        .filter(|r| r.outcome == Outcome::Delivered)
        .count();
    assert_eq!(delivered, 3);
    // An older copy (object 6, mtime below object 7's) arriving while the newer one
    // still waits in the group is refused, never placed over it.
    send_file(&mut d, 7, "x.txt", b"newer", false);
    send_file(&mut d, 6, "x.txt", b"older", false);
    d.flush();
    assert_eq!(std::fs::read(out.join("files/x.txt")).unwrap(), b"newer");
    let last = records(out).pop().unwrap();
    assert_eq!((last.object, last.outcome), (6, Outcome::Failed));
    assert!(last.reason.unwrap().contains("newer version"));
}

#[test]
fn a_group_closes_by_itself_once_its_oldest_object_waited_long_enough() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path();
    let mut d = delivery(out);
    d.set_group_age(Duration::ZERO);
    // With no wait allowed, the next event closes the group: no flush needed.
    send_file(&mut d, 1, "prompt.txt", b"prompt", false);
    assert_eq!(
        std::fs::read(out.join("files/prompt.txt")).unwrap(),
        b"prompt"
    );
    assert_records_hold(out);
}
