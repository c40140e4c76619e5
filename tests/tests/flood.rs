//! The receiver against a sender that lies in its heartbeats: two forged datagrams (a
//! descriptor of object 0 and a heartbeat claiming `next_object = done_below = u32::MAX`),
//! repeated, must cost a handful of records and log lines, not one per claimed id; a
//! legitimate sender beside it still delivers.

use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::{Heartbeat, ObjectKind};
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, read_records, send, sender_config, with_outcome, ChildGuard,
};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_heartbeat_claiming_every_object_id_costs_a_handful_of_records() {
    let out = tempfile::tempdir().unwrap();
    let log = out.path().join("recv.log");
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let mut rx = ChildGuard(
        Command::new(binary("gapferry-recv"))
            .args(["listen", "--bind", &bind, "--out"])
            .arg(out.path())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(300));

    let w = DatagramWriter::new(0xbad5eed, None);
    let mut descriptor = Vec::new();
    w.descriptor(
        &mut descriptor,
        0,
        &ObjectDescriptor {
            kind: ObjectKind::File,
            name: "bait.bin".into(),
            size: 1,
            blake3: [1; 32],
            block_plain_size: 1024,
            mtime: 0,
            pass: 1,
            passes: 1,
        },
    )
    .unwrap();
    let mut heartbeat = Vec::new();
    let attacker = UdpSocket::bind("127.0.0.1:0").unwrap();
    attacker.send_to(&descriptor, &bind).unwrap();
    // Six seconds of lies, one heartbeat every half second.
    let until = Instant::now() + Duration::from_secs(6);
    let mut seq = 0;
    while Instant::now() < until {
        seq += 1;
        w.heartbeat(
            &mut heartbeat,
            &Heartbeat {
                seq,
                next_object: u32::MAX,
                done_below: u32::MAX,
                ..Heartbeat::default()
            },
        );
        attacker.send_to(&heartbeat, &bind).unwrap();
        if seq == 4 {
            // A legitimate sender in the middle of it.
            let src = tempfile::tempdir().unwrap();
            random_file(&src.path().join("real.bin"), 200_000, 1);
            send(
                &[src.path().to_path_buf()],
                bind.parse().unwrap(),
                sender_config(100_000_000),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    std::thread::sleep(Duration::from_secs(3));
    let records = read_records(out.path());
    rx.terminate();
    let log_bytes = std::fs::metadata(&log).unwrap().len();
    println!(
        "{} records, log {log_bytes} bytes: {records:#?}",
        records.len()
    );
    assert!(
        with_outcome(&records, "delivered")
            .iter()
            .any(|r| r["name"] == "real.bin"),
        "the legitimate file must be delivered: {records:#?}"
    );
    assert!(
        records.len() <= 5,
        "{} records from two forged datagrams",
        records.len()
    );
    assert!(log_bytes < 64 << 10, "the log grew to {log_bytes} bytes");
    // What the forger made the receiver report lost is one run, bounded by the ids seen.
    for r in with_outcome(&records, "lost") {
        if let Some(run) = r["objects"].as_array() {
            let (first, last) = (run[0].as_u64().unwrap(), run[1].as_u64().unwrap());
            assert!(
                last - first < 2048,
                "a lost run of {} ids: {r}",
                last - first + 1
            );
        }
    }
}
