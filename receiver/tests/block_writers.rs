//! The block writers (`--threads`): a big object's blocks written and hashed on a pool of
//! threads. Whatever the number of threads and the order blocks arrive in, the object is
//! delivered when its bytes are the descriptor's and refused when one block is corrupted;
//! a write error on a pool thread fails the object with its cause and leaves nothing
//! behind; no record and no delivered file exist before every block is in the file.

use gapferry_common::wire::Codec;
use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_receiver::delivery::Delivery;
use gapferry_receiver::destinations::Destinations;
use gapferry_receiver::metrics::ReceiverMetrics;
use serde_json::Value;
use std::path::Path;

mod support;
use support::noise;

/// Blocks of 16 KiB: whole blake3 chunks, so they are hashed apart.
const BLOCK: u32 = 16 << 10;

fn descriptor(name: &str, original: &[u8]) -> ObjectDescriptor {
    ObjectDescriptor {
        kind: ObjectKind::File,
        name: name.into(),
        size: original.len() as u64,
        blake3: *blake3::hash(original).as_bytes(),
        block_plain_size: BLOCK,
        mtime: 1_700_000_000,
        pass: 1,
        passes: 1,
    }
}

fn block_event(object: ObjectRef, original: &[u8], b: u32, corrupt: bool) -> Event {
    let start = b as usize * BLOCK as usize;
    let end = (start + BLOCK as usize).min(original.len());
    let mut data = original[start..end].to_vec();
    if corrupt {
        let mid = data.len() / 2;
        data[mid] ^= 0x01;
    }
    Event::BlockDecoded {
        object,
        block: b,
        codec: Codec::None,
        plain_len: data.len() as u32,
        data,
    }
}

/// The receiver's records so far.
fn records(out: &Path) -> Vec<Value> {
    std::fs::read_to_string(out.join(".gapferry/records.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn delivery(out: &Path, threads: usize) -> Delivery {
    let mut d = Delivery::open(out, Destinations::under(out), ReceiverMetrics::default()).unwrap();
    d.set_block_threads(threads);
    d
}

/// A shuffled order of `n` blocks (a fixed permutation, different from forward and backward).
fn shuffled(n: u32) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

/// The event saying `object`, whose bytes are `original`, decoded whole with its blake3.
fn completed(object: ObjectRef, original: &[u8]) -> Event {
    Event::ObjectComplete {
        object,
        blake3: *blake3::hash(original).as_bytes(),
    }
}

#[test]
fn blocks_on_a_pool_deliver_in_any_order_with_any_number_of_threads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let original = noise(37 * BLOCK as usize + 1025, 11);
    let n = original.len().div_ceil(BLOCK as usize) as u32;
    let orders = [
        (0..n).collect::<Vec<u32>>(),
        (0..n).rev().collect(),
        shuffled(n),
    ];
    let mut id = 0;
    for threads in [0, 1, 2, 5] {
        for order in &orders {
            id += 1;
            let mut d = delivery(out, threads);
            let object = ObjectRef {
                session: 0xfeed,
                object: id,
            };
            let name = format!("pooled-{id}.bin");
            d.handle(Event::ObjectStarted {
                object,
                descriptor: descriptor(&name, &original),
            });
            for &b in order {
                d.handle(block_event(object, &original, b, false));
            }
            d.handle(completed(object, &original));
            let summary = d.into_summary();
            assert_eq!(
                (summary.delivered, summary.failed),
                (1, 0),
                "{threads} threads, order {order:?}"
            );
            let there = std::fs::read(Destinations::under(out).files.join(&name)).unwrap();
            assert!(there == original, "{threads} threads: bytes differ");
        }
    }
}

#[test]
fn a_corrupted_block_on_a_pool_fails_the_object_and_nothing_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let original = noise(20 * BLOCK as usize + 5, 12);
    let n = original.len().div_ceil(BLOCK as usize) as u32;
    for (i, corrupt) in [0, n / 2, n - 1].into_iter().enumerate() {
        let mut d = delivery(out, 3);
        let object = ObjectRef {
            session: 0xbad,
            object: i as u32,
        };
        d.handle(Event::ObjectStarted {
            object,
            descriptor: descriptor(&format!("corrupt-{i}.bin"), &original),
        });
        for b in shuffled(n) {
            d.handle(block_event(object, &original, b, b == corrupt));
        }
        d.handle(completed(object, &original));
        let summary = d.into_summary();
        assert_eq!(
            (summary.delivered, summary.failed),
            (0, 1),
            "block {corrupt}"
        );
    }
    let files = Destinations::under(out).files;
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0);
    assert_eq!(
        std::fs::read_dir(out.join(".gapferry/staging"))
            .unwrap()
            .count(),
        0
    );
    for r in records(out) {
        assert_eq!(r["outcome"], "failed", "{r}");
        assert!(r["reason"].as_str().unwrap().contains("blake3"), "{r}");
    }
}

#[test]
fn no_record_and_no_file_before_every_block_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let files = Destinations::under(out).files;
    let original = noise(64 * BLOCK as usize + 300, 13);
    let n = original.len().div_ceil(BLOCK as usize) as u32;
    let mut d = delivery(out, 4);
    let object = ObjectRef {
        session: 0xd0e,
        object: 1,
    };
    d.handle(Event::ObjectStarted {
        object,
        descriptor: descriptor("late.bin", &original),
    });
    for b in shuffled(n) {
        d.handle(block_event(object, &original, b, false));
        // Whatever the pool has finished, nothing is visible or recorded yet.
        assert!(
            records(out).is_empty(),
            "a record before block {b} was handed over"
        );
        assert_eq!(std::fs::read_dir(&files).unwrap().count(), 0);
    }
    d.handle(completed(object, &original));
    // The record is there once the object is complete, and its file holds every byte.
    let recs = records(out);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["outcome"], "delivered");
    assert!(std::fs::read(files.join("late.bin")).unwrap() == original);
    drop(d);
}

/// Mounts a tmpfs of `mb` MiB on `dir`; false (with a printed reason) off CI when it cannot.
fn mount_tmpfs(dir: &Path, mb: u32) -> bool {
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
        .arg(dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "mounting a tmpfs failed; CI runs as root and must be able to"
        );
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
    }
    ok
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_disk_filling_up_under_the_pool_fails_the_object_with_its_cause() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut d = delivery(out, 3);
    // The staging directory on a disk of its own, which fills up; records stay writable.
    let staging = out.join(".gapferry/staging");
    if !mount_tmpfs(&staging, 16) {
        return;
    }
    let _unmount = Unmount(staging.clone());
    let original = noise(4 << 20, 14);
    let n = original.len().div_ceil(BLOCK as usize) as u32;
    let object = ObjectRef {
        session: 0xf111,
        object: 1,
    };
    d.handle(Event::ObjectStarted {
        object,
        descriptor: descriptor("fills.bin", &original),
    });
    // The object fitted when it started; then something else fills the disk.
    let filler = staging.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; 1 << 20];
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    for b in shuffled(n) {
        d.handle(block_event(object, &original, b, false));
    }
    d.handle(completed(object, &original));
    let summary = d.into_summary();
    assert_eq!((summary.delivered, summary.failed), (0, 1));
    let recs = records(out);
    assert_eq!(recs.len(), 1, "{recs:?}");
    let failed = &recs[0];
    assert_eq!(
        (&failed["name"], &failed["outcome"]),
        (&"fills.bin".into(), &"failed".into())
    );
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.contains("cannot write block") && reason.contains("No space left"),
        "{reason}"
    );
    assert_eq!(failed["cause"], "receiver", "{failed}");
    assert!(!Destinations::under(out).files.join("fills.bin").exists());
    // Only the filler is left in the staging directory: the object's file is gone.
    std::fs::remove_file(&filler).unwrap();
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 0);
}
