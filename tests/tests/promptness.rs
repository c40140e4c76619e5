//! Failures named at once: a one-shot sender through a link that loses 60 % of its
//! datagrams; every object it sent must have its outcome in `records.jsonl` within 5 s of
//! the sender's exit, long before the session timeout (30 s).

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{binary, TestReceiver};
use gapferry_tests::relay::{random_loss, Relay};
use std::collections::BTreeSet;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn at_60_percent_loss_every_object_is_named_within_5_s_of_the_sender_exit() {
    let src = tempfile::tempdir().unwrap();
    let files = 10;
    for i in 0..files {
        random_file(
            &src.path().join(format!("f{i:02}.bin")),
            50_000 * (i + 1),
            i as u64,
        );
    }
    let rx = TestReceiver::start(|_| {});
    let relay = Relay::start(rx.addr, random_loss(60.0, 60)).unwrap();
    let out = Command::new(binary("gapferry-send"))
        .arg("file")
        .arg(src.path())
        .args([
            "--to",
            &relay.addr().to_string(),
            "--rate",
            "200M",
            "--quiet",
        ])
        .output()
        .unwrap();
    let exited = Instant::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut named = BTreeSet::new();
    while exited.elapsed() < Duration::from_secs(15) {
        named = rx
            .records()
            .iter()
            .filter_map(|r| r["object"].as_u64())
            .collect();
        if named.len() >= files {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = exited.elapsed();
    let (seen, dropped) = relay.counts();
    println!("relay: {seen} datagrams in, {dropped} dropped; all named after {took:?}");
    assert_eq!(
        named.len(),
        files,
        "objects with a record 15 s after the sender's exit: {named:?}"
    );
    assert!(
        took <= Duration::from_secs(5),
        "the last object was named {took:?} after the sender's exit"
    );
    let records = rx.records();
    assert!(
        records.iter().any(|r| r["outcome"] != "delivered"),
        "60 % loss must fail something: {records:#?}"
    );
}
