//! Loss, bursts, reordering and duplicates between sender and receiver, through a relay.

use gapferry_common::wire::{self, Datagram};
use gapferry_common::KeyRing;
use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::harness::{assert_same_tree, send, sender_config, with_outcome, TestReceiver};
use gapferry_tests::relay::{burst_loss, random_loss, reorder_and_duplicate, Action, Relay};
use std::time::Duration;

fn mixed_tree(dir: &std::path::Path, big: usize) {
    std::fs::write(dir.join("empty"), b"").unwrap();
    random_file(&dir.join("one-byte"), 1, 1);
    json_file(&dir.join("event.json"), 10_000, 2);
    random_file(&dir.join("sub/medium.bin"), 3 << 20, 3);
    random_file(&dir.join("sub/big.bin"), big, 4);
    for i in 0..20 {
        json_file(
            &dir.join(format!("small/{i}.json")),
            500 + 300 * i,
            10 + i as u64,
        );
    }
}

#[test]
fn five_percent_random_loss_with_ten_percent_repair_delivers_everything() {
    let src = tempfile::tempdir().unwrap();
    mixed_tree(src.path(), 64 << 20);
    let rx = TestReceiver::start(|_| {});
    let relay = Relay::start(rx.addr, random_loss(5.0, 7)).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(300_000_000),
    );
    let records = rx.wait_records(25, Duration::from_secs(120));
    let (seen, dropped) = relay.counts();
    assert!(
        dropped as f64 > seen as f64 * 0.04,
        "the relay must really lose about 5%: {dropped}/{seen}"
    );
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        25,
        "{records:#?}"
    );
    assert_same_tree(src.path(), &rx.files_dir());
}

#[test]
fn a_burst_of_several_hundred_lost_datagrams_is_survived() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 24 << 20, 5);
    let rx = TestReceiver::start(|_| {});
    // 600 consecutive datagrams, in the middle of the object.
    let relay = Relay::start(rx.addr, burst_loss(5_000, 600)).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(300_000_000),
    );
    let records = rx.wait_records(1, Duration::from_secs(60));
    assert_eq!(relay.counts().1, 600);
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    assert_same_tree(src.path(), &rx.files_dir());
}

#[test]
fn reordering_and_duplicates_are_harmless() {
    let src = tempfile::tempdir().unwrap();
    mixed_tree(src.path(), 8 << 20);
    let rx = TestReceiver::start(|_| {});
    let relay = Relay::start(rx.addr, reorder_and_duplicate(3, 5)).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(200_000_000),
    );
    let records = rx.wait_records(25, Duration::from_secs(60));
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        25,
        "{records:#?}"
    );
    assert_same_tree(src.path(), &rx.files_dir());
    let report = rx.stop();
    assert!(
        report.report.assembler.redundant > 0,
        "duplicates were seen and ignored"
    );
    assert_eq!(report.report.summary.delivered, 25);
}

fn outcome_of<'a>(records: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    records
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no record for {name}: {records:#?}"))
}

#[test]
fn loss_beyond_repair_fails_the_object_cleanly_and_the_next_arrives() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a-first.bin"), 2 << 20, 1);
    random_file(&src.path().join("b-doomed.bin"), 4 << 20, 2);
    random_file(&src.path().join("c-after.bin"), 2 << 20, 3);
    let rx = TestReceiver::start(|_| {});
    let keys = KeyRing::default();
    // Lose 40% of the data datagrams of object 1 only: far beyond 10% repair.
    let mut n = 0u64;
    let policy = Box::new(move |_: u64, d: &[u8]| match wire::parse(d, &keys) {
        Ok(Datagram::Data { header, .. }) if header.object == 1 => {
            n += 1;
            if n % 5 < 2 {
                Action::Drop
            } else {
                Action::Forward
            }
        }
        _ => Action::Forward,
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(200_000_000),
    );
    let records = rx.wait_records(3, Duration::from_secs(30));
    assert_eq!(outcome_of(&records, "a-first.bin")["outcome"], "delivered");
    assert_eq!(outcome_of(&records, "c-after.bin")["outcome"], "delivered");
    let doomed = outcome_of(&records, "b-doomed.bin");
    assert_eq!(doomed["outcome"], "failed");
    assert!(
        doomed["reason"]
            .as_str()
            .unwrap()
            .contains("blocks decoded"),
        "{doomed}"
    );
    assert!(!rx.files_dir().join("b-doomed.bin").exists());
    let staging: Vec<_> = std::fs::read_dir(rx.out.join(".gapferry/staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "no partial file is left behind");
}

#[test]
fn an_object_of_which_nothing_arrives_is_recorded_lost_by_name() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a.bin"), 200_000, 1);
    random_file(&src.path().join("b-vanished.bin"), 300_000, 2);
    random_file(&src.path().join("c.bin"), 200_000, 3);
    let rx = TestReceiver::start(|_| {});
    let keys = KeyRing::default();
    // Every datagram of object 1, descriptors included, disappears.
    let policy = Box::new(move |_: u64, d: &[u8]| match wire::parse(d, &keys) {
        Ok(Datagram::Data { header, .. }) if header.object == 1 => Action::Drop,
        Ok(Datagram::Control {
            object: 1,
            kind: wire::DatagramType::Descriptor,
            ..
        }) => Action::Drop,
        _ => Action::Forward,
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(100_000_000),
    );
    let records = rx.wait_records(3, Duration::from_secs(20));
    let lost = with_outcome(&records, "lost");
    assert_eq!(lost.len(), 1, "{records:#?}");
    assert_eq!(lost[0]["object"], 1);
    assert_eq!(
        lost[0]["name"], "b-vanished.bin",
        "named by the sender's inventory"
    );
    assert_eq!(with_outcome(&records, "delivered").len(), 2);
}

#[test]
fn symbols_add_up_across_sender_sessions_of_the_same_content() {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("image.bin"), 3 << 20, 8);
    let rx = TestReceiver::start(|_| {});
    let keys = KeyRing::default();
    let mut sessions: Vec<u64> = Vec::new();
    // Each session loses a quarter of its symbols, a different quarter: neither decodes
    // alone (25 % lost > 10 % repair), together they hold every symbol.
    let policy = Box::new(move |_: u64, d: &[u8]| match wire::parse(d, &keys) {
        Ok(Datagram::Data { header, .. }) => {
            if !sessions.contains(&header.session) {
                sessions.push(header.session);
            }
            let nth = sessions.iter().position(|&s| s == header.session).unwrap() as u32;
            if header.esi % 4 == nth % 4 {
                Action::Drop
            } else {
                Action::Forward
            }
        }
        _ => Action::Forward,
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(200_000_000),
    );
    let first = rx.wait_records(1, Duration::from_secs(20));
    assert_eq!(first[0]["outcome"], "failed", "{first:#?}");
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(200_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(20));
    assert_eq!(
        records[1]["outcome"], "delivered",
        "the second session completed what the first began: {records:#?}"
    );
    assert_same_tree(src.path(), &rx.files_dir());
}
