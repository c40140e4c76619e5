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
) -> (usize, u64, std::collections::HashMap<&'static str, u64>) {
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
