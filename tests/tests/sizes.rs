//! Objects of every boundary size, a 100 MiB file and 1 000 small files cross loopback intact.

use gapferry_common::layout;
use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::harness::{assert_same_tree, send, sender_config, with_outcome, TestReceiver};
use std::time::Duration;

#[test]
fn boundary_sizes_arrive_byte_identical() {
    let t = layout::max_symbol_size(1500, false, layout::IpVersion::V4).unwrap() as usize;
    let block = layout::block_plain_size(t as u16) as usize;
    let sizes = [
        0,
        1,
        t - 1,
        t,
        t + 1,
        block - 1,
        block,
        block + 1,
        3 * block + 17,
    ];
    let src = tempfile::tempdir().unwrap();
    for (i, &size) in sizes.iter().enumerate() {
        random_file(&src.path().join(format!("random-{size}")), size, i as u64);
        json_file(
            &src.path().join(format!("json-{size}.json")),
            size,
            i as u64,
        );
    }
    let rx = TestReceiver::start(|_| {});
    let reports = send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(400_000_000),
    );
    assert!(reports.iter().all(|r| r.error.is_none()));
    let records = rx.wait_records(2 * sizes.len(), Duration::from_secs(60));
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        2 * sizes.len(),
        "{records:#?}"
    );
    assert_same_tree(src.path(), &rx.files_dir());
    let report = rx.stop();
    assert_eq!(report.report.assembler.rejected_total(), 0);
}

#[test]
fn a_100_mib_random_file_arrives_byte_identical() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 100 << 20, 42);
    let rx = TestReceiver::start(|_| {});
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(400_000_000),
    );
    let records = rx.wait_records(1, Duration::from_secs(120));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    assert_same_tree(src.path(), &rx.files_dir());
}

#[test]
fn a_thousand_small_files_arrive() {
    let src = tempfile::tempdir().unwrap();
    for i in 0..1000 {
        let dir = src.path().join(format!("d{}", i % 10));
        if i % 2 == 0 {
            json_file(&dir.join(format!("e{i}.json")), 200 + i * 10, i as u64);
        } else {
            random_file(&dir.join(format!("r{i}.bin")), i, i as u64);
        }
    }
    let rx = TestReceiver::start(|_| {});
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(200_000_000),
    );
    let records = rx.wait_records(1000, Duration::from_secs(120));
    assert_eq!(with_outcome(&records, "delivered").len(), 1000);
    assert_same_tree(src.path(), &rx.files_dir());
}

#[test]
fn a_settled_file_read_once_arrives_with_the_hash_its_last_copies_brought() {
    // Old enough to be read once: its first descriptor copies go out without the hash.
    let src = tempfile::tempdir().unwrap();
    let path = src.path().join("once.bin");
    random_file(&path, 30 << 20, 43);
    std::thread::sleep(gapferry_sender::prepare::SETTLE + Duration::from_millis(300));
    let rx = TestReceiver::start(|_| {});
    let reports = send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(400_000_000),
    );
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    let records = rx.wait_records(1, Duration::from_secs(120));
    let delivered = with_outcome(&records, "delivered");
    assert_eq!(delivered.len(), 1, "{records:#?}");
    let want = blake3::hash(&std::fs::read(&path).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(delivered[0]["blake3"], want.as_str());
    assert_same_tree(src.path(), &rx.files_dir());
}
