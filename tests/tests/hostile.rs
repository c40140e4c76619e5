//! Garbage and forged datagrams at the receiver: dropped, counted, and harmless.

use gapferry_common::Key;
use gapferry_common::KeyRing;
use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::harness::{assert_same_tree, send, sender_config, with_outcome, TestReceiver};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn garbage_datagrams_are_counted_and_later_objects_arrive() {
    let rx = TestReceiver::start(|_| {});
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut rng = StdRng::seed_from_u64(99);
    let mut sent = 0;
    for i in 0..5_000 {
        let len = rng.random_range(0..2000);
        let mut buf = vec![0u8; len];
        rng.fill_bytes(&mut buf);
        // Half of them look like ours at first glance, to reach deeper checks.
        if i % 2 == 0 && len >= 40 {
            buf[0] = b'G';
            buf[1] = b'F';
            buf[2] = 1;
            buf[3] = rng.random_range(1..4);
            buf[4] = 0;
            buf[5..8].fill(0);
        }
        sock.send_to(&buf, rx.addr).unwrap();
        sent += 1;
    }
    let src = tempfile::tempdir().unwrap();
    json_file(&src.path().join("after.json"), 50_000, 1);
    random_file(&src.path().join("after.bin"), 2 << 20, 2);
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(200_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 2, "{records:#?}");
    assert_same_tree(src.path(), &rx.files_dir());
    let report = rx.stop();
    let stats = &report.report.assembler;
    assert!(
        stats.rejected_total() > (sent / 2) as u64,
        "garbage counted: {stats:?}"
    );
}

fn keyed_transfer(
    sender_key: Option<Key>,
    receiver_key: Key,
) -> (
    usize,
    u64,
    std::collections::HashMap<gapferry_common::wire::RejectReason, u64>,
) {
    let src = tempfile::tempdir().unwrap();
    json_file(&src.path().join("x.json"), 30_000, 3);
    random_file(&src.path().join("y.bin"), 500_000, 4);
    let rx = TestReceiver::start(|c| c.keys = KeyRing::new(vec![receiver_key]));
    let mut cfg = sender_config(200_000_000);
    cfg.key = sender_key;
    send(&[src.path().to_path_buf()], rx.addr, cfg);
    let records = rx.wait_records(2, Duration::from_secs(3));
    let delivered = with_outcome(&records, "delivered").len();
    if delivered == 2 {
        assert_same_tree(src.path(), &rx.files_dir());
    }
    let report = rx.stop();
    let stats = report.report.assembler;
    (delivered, stats.rejected_total(), stats.rejected)
}

#[test]
fn with_a_key_only_tagged_datagrams_are_accepted() {
    let good = Key::from_bytes([1; 32]);
    let (delivered, rejected, _) = keyed_transfer(Some(good.clone()), good.clone());
    assert_eq!(delivered, 2);
    assert_eq!(rejected, 0);

    let (delivered, rejected, why) = keyed_transfer(Some(Key::from_bytes([2; 32])), good.clone());
    assert_eq!(delivered, 0);
    assert!(
        rejected > 0 && why.get("bad_tag").copied().unwrap_or(0) == rejected,
        "{why:?}"
    );

    let (delivered, rejected, why) = keyed_transfer(None, good);
    assert_eq!(delivered, 0);
    assert!(
        rejected > 0 && why.get("missing_tag").copied().unwrap_or(0) == rejected,
        "{why:?}"
    );
}

#[test]
fn symlinks_planted_in_the_output_tree_are_never_followed() {
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("victim.txt");
    std::fs::write(&victim, b"precious").unwrap();
    let rx = TestReceiver::start(|_| {});
    std::fs::create_dir_all(rx.files_dir()).unwrap();
    std::os::unix::fs::symlink(outside.path(), rx.files_dir().join("evil")).unwrap();
    std::os::unix::fs::symlink(&victim, rx.files_dir().join("victim.txt")).unwrap();
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("evil")).unwrap();
    std::fs::write(src.path().join("evil/x.txt"), b"attack").unwrap();
    std::fs::write(src.path().join("victim.txt"), b"overwrite").unwrap();
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(100_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(20));
    let failed = with_outcome(&records, "failed");
    assert_eq!(failed.len(), 2, "{records:#?}");
    assert!(
        failed
            .iter()
            .all(|r| r["reason"].as_str().unwrap().contains("symbolic link")),
        "{records:#?}"
    );
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    assert!(!outside.path().join("x.txt").exists());
}

#[test]
fn an_older_version_does_not_replace_a_newer_file() {
    let rx = TestReceiver::start(|_| {});
    let src = tempfile::tempdir().unwrap();
    let f = src.path().join("report.txt");
    std::fs::write(&f, b"new").unwrap();
    send(
        std::slice::from_ref(&f),
        rx.addr,
        sender_config(100_000_000),
    );
    rx.wait_records(1, Duration::from_secs(10));
    std::fs::write(&f, b"old").unwrap();
    let old = std::time::SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&f)
        .unwrap()
        .set_modified(old)
        .unwrap();
    send(
        std::slice::from_ref(&f),
        rx.addr,
        sender_config(100_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(10));
    assert_eq!(records[1]["outcome"], "failed", "{records:#?}");
    assert!(records[1]["reason"]
        .as_str()
        .unwrap()
        .contains("newer version"));
    assert_eq!(
        std::fs::read(rx.files_dir().join("report.txt")).unwrap(),
        b"new"
    );
}

/// A small tmpfs the receiver delivers into; None (with a printed reason) off CI when not root.
fn small_tmpfs(mb: u32) -> Option<(tempfile::TempDir, Unmount)> {
    let dir = tempfile::tempdir().unwrap();
    let ok = std::process::Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={mb}m"),
            "tmpfs",
            dir.path().to_str().unwrap(),
        ])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "mounting a tmpfs failed; CI runs as root and must be able to"
        );
        eprintln!("skipping: cannot mount a tmpfs (needs root)");
        return None;
    }
    let m = Unmount(dir.path().to_path_buf());
    Some((dir, m))
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_object_cleanly_and_delivery_goes_on() {
    let Some((disk, _unmount)) = small_tmpfs(24) else {
        return;
    };
    let out = disk.path().join("out");
    let rx = TestReceiver::start_in(&out, |_| {});
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a-too-big.bin"), 40 << 20, 1);
    random_file(&src.path().join("b-fits.bin"), 1 << 20, 2);
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(400_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(30));
    let big = records
        .iter()
        .find(|r| r["name"] == "a-too-big.bin")
        .expect("a record for the big file");
    assert_eq!(big["outcome"], "failed");
    assert!(
        big["reason"].as_str().unwrap().contains("disk space"),
        "{big}"
    );
    let fits = records
        .iter()
        .find(|r| r["name"] == "b-fits.bin")
        .expect("a record for the small file");
    assert_eq!(fits["outcome"], "delivered");
    assert!(!rx.files_dir().join("a-too-big.bin").exists());
    assert_eq!(
        std::fs::read_dir(out.join(".gapferry/staging"))
            .unwrap()
            .count(),
        0
    );
    drop(rx);
}
