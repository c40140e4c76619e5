//! The sender's objects-per-second pace (`--max-objects-rate`, `--objects-burst`): a stream
//! of small objects takes at least N/cap of the sender's own clock (read from the
//! schedule a `--pcap-out` capture is stamped with, never from the wall clock), and bad
//! values on the command line or in the configuration file are refused with a message
//! that says what to write.

use gapferry_common::wire::{self, Datagram};
use gapferry_common::KeyRing;
use gapferry_pcap::CaptureReader;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::binary;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Small files of 1 KB each under `dir`.
fn small_files(dir: &Path, n: u64) {
    for i in 0..n {
        random_file(&dir.join(format!("f{i:04}.bin")), 1000, i);
    }
}

/// Captures `src` sent at 1 Gbit/s with `extra` flags; returns each object's first
/// datagram time on the sender's schedule, from the capture's first datagram (the
/// session's first heartbeat, before any object).
fn first_datagram_times(src: &Path, pcap: &Path, extra: &[&str]) -> BTreeMap<u32, Duration> {
    let out = Command::new(binary("gapferry-send"))
        .arg("file")
        .arg(src)
        .args([
            "--to",
            "127.0.0.1:9",
            "--rate",
            "1G",
            "--kind",
            "file",
            "--quiet",
        ])
        .arg("--pcap-out")
        .arg(pcap)
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = CaptureReader::open(pcap).unwrap();
    let keys = KeyRing::new(Vec::new());
    let mut first = BTreeMap::new();
    let mut start = None;
    while let Some(d) = reader.next_datagram().unwrap() {
        let start = *start.get_or_insert(d.timestamp);
        let object = match wire::parse(&d.payload, &keys).unwrap() {
            Datagram::Data { header, .. } => header.object,
            Datagram::Control {
                kind: wire::DatagramType::Descriptor,
                object,
                ..
            } => object,
            Datagram::Control { .. } => continue,
        };
        first.entry(object).or_insert(d.timestamp - start);
    }
    first
}

/// The sender-clock time from the session's start to the last object's first datagram.
///
/// Object `k` starts no earlier than its token, `(k - burst) / cap` after the first; the
/// burst spreader may hold earlier objects' datagrams until then too, so only the last
/// object's start is bound, not each gap.
fn span(first: &BTreeMap<u32, Duration>) -> Duration {
    *first.values().max().expect("objects in the capture")
}

#[test]
fn a_capped_stream_of_small_objects_takes_at_least_n_over_the_cap_of_sender_time() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let (n, cap, burst) = (60u64, 50.0, 4u64);
    small_files(&src, n);

    let capped = first_datagram_times(
        &src,
        &dir.path().join("capped.pcap"),
        &["--max-objects-rate", "50", "--objects-burst", "4"],
    );
    assert_eq!(capped.len() as u64, n, "every object was sent");
    let floor = Duration::from_secs_f64((n - burst) as f64 / cap);
    let spent = span(&capped);
    assert!(
        spent + Duration::from_millis(1) >= floor,
        "{n} objects at {cap}/s took {spent:?} of sender time, less than {floor:?}"
    );

    // Without the cap the same objects go at the datagram rate: it is the cap that paced.
    let free = first_datagram_times(&src, &dir.path().join("free.pcap"), &[]);
    assert_eq!(free.len() as u64, n);
    assert!(span(&free) < floor / 4, "{:?}", span(&free));
}

/// Runs `gapferry-send file` with `args` towards a port nobody reads; returns its stderr.
fn refused(src: &Path, args: &[&str]) -> String {
    let out = Command::new(binary("gapferry-send"))
        .arg("file")
        .arg(src)
        .args(["--to", "127.0.0.1:9", "--quiet"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} was accepted");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn zero_negative_and_garbage_object_rates_are_refused_with_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    small_files(&src, 1);
    for bad in ["0", "-5", "fast", "1e12"] {
        let e = refused(&src, &[&format!("--max-objects-rate={bad}")]);
        assert!(
            e.contains("objects per second as a number above zero"),
            "{bad}: {e}"
        );
    }
    for bad in ["0", "-1", "2.5", "lots"] {
        let e = refused(&src, &[&format!("--objects-burst={bad}")]);
        assert!(
            e.contains("whole number of objects of at least 1"),
            "{bad}: {e}"
        );
    }
    let config = dir.path().join("send.toml");
    for (line, key, says) in [
        ("max_objects_rate = 0", "max_objects_rate", "above zero"),
        ("max_objects_rate = -3.5", "max_objects_rate", "above zero"),
        ("objects_burst = -2", "objects_burst", "at least 1"),
        ("max_objects_rate = \"fast\"", "max_objects_rate", ""),
    ] {
        std::fs::write(&config, format!("{line}\n")).unwrap();
        let e = refused(&src, &["--config", config.to_str().unwrap()]);
        assert!(e.contains(key) && e.contains(says), "{line}: {e}");
    }
}
