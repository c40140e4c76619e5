//! Group commit of small objects (issue 12) through the real binaries: a small file is
//! delivered while the sender is still sending a long tail after it (its group closes
//! when the receiver's delivery thread has nothing queued, or after 200 ms), never held
//! back until the transfer ends; no wall-clock bound is asserted, only the order.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{binary, with_outcome, TestReceiver};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn a_small_file_is_delivered_before_the_sender_finishes_the_long_tail_after_it() {
    let src = tempfile::tempdir().unwrap();
    let small = src.path().join("a-small.json");
    std::fs::write(&small, br#"{"note":"small"}"#.repeat(600)).unwrap();
    // 2 MB at 4 Mbit/s: seconds of sending after the small file.
    let tail = src.path().join("b-tail.bin");
    random_file(&tail, 2_000_000, 7);
    let rx = TestReceiver::start(|_| {});
    let mut sender = Command::new(binary("gapferry-send"))
        .arg("file")
        .arg(&small)
        .arg(&tail)
        .args(["--kind", "file", "--to", &rx.addr.to_string()])
        .args(["--rate", "4M", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut delivered_while_sending = None;
    for _ in 0..1_200 {
        let records = rx.records();
        let small_done = with_outcome(&records, "delivered")
            .iter()
            .any(|r| r["name"] == "a-small.json");
        let running = sender.try_wait().unwrap().is_none();
        if small_done {
            delivered_while_sending = Some(running);
            break;
        }
        if !running {
            delivered_while_sending = Some(false);
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let out = sender.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        delivered_while_sending,
        Some(true),
        "the small file was not delivered while the tail was still being sent"
    );
    let records = rx.wait_records(2, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 2, "{records:#?}");
    assert_eq!(
        std::fs::read(rx.files_dir().join("a-small.json")).unwrap(),
        std::fs::read(&small).unwrap()
    );
}
