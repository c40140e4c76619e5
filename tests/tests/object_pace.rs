//! The sender's objects-per-second pace (`--max-objects-rate`, `--objects-burst`): a stream
//! of small objects takes at least N/cap of the sender's own clock (read from the
//! schedule a `--pcap-out` capture is stamped with, never from the wall clock); a
//! receiver too slow for a long stream loses objects without the cap, naming its own
//! queue as the cause, and delivers them all with it; bad values on the command line or
//! in the configuration file are refused with a message that says what to write.

use gapferry_common::wire::{self, Datagram};
use gapferry_common::KeyRing;
use gapferry_pcap::CaptureReader;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, free_port, read_records, send_with_binary, spawn_listening, with_outcome, ChildGuard,
    TestReceiver,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

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
    // (Half the floor, not less: uncapped, the span is the sender's own reading and
    // encoding time, which a loaded machine stretches.)
    let free = first_datagram_times(&src, &dir.path().join("free.pcap"), &[]);
    assert_eq!(free.len() as u64, n);
    assert!(span(&free) < floor / 2, "{:?}", span(&free));
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

/// Starts the real receiver with a disk writer queue of `event_queue` events and
/// `queue_bytes` of datagrams between its socket and its assembler: a receiver that
/// absorbs a few hundred small objects, not a long stream.
fn slow_receiver(dir: &Path, port: u16, event_queue: usize, queue_bytes: usize) -> ChildGuard {
    let config = dir.join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nout = \"{}\"\nsession_timeout = 10\n[limits]\nmax_queue_bytes = {queue_bytes}\n",
            dir.join("out").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.env("GAPFERRY_TEST_EVENT_QUEUE", event_queue.to_string())
        .args(["--log-format", "json", "listen", "--config"])
        .arg(&config);
    spawn_listening(cmd, &dir.join("recv.log"))
}

/// Sends `src` (its files as `--kind file`) to the receiver at `port` with `extra` flags
/// and waits until a record names every object; returns the records.
fn stream(src: &Path, out: &Path, port: u16, n: usize, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["--rate", "1G", "--kind", "file"];
    args.extend_from_slice(extra);
    send_with_binary(&[src], format!("127.0.0.1:{port}"), &args);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let records = read_records(out);
        let named: u64 = records
            .iter()
            .map(|r| match r["objects"].as_array() {
                Some(run) => run[1].as_u64().unwrap() - run[0].as_u64().unwrap() + 1,
                None => 1,
            })
            .sum();
        if named >= n as u64 {
            return records;
        }
        assert!(
            Instant::now() < deadline,
            "{named} of {n} objects recorded: {records:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_slow_receiver_loses_a_long_stream_naming_its_queue_and_takes_it_all_when_capped() {
    let n = 1500;
    let src = tempfile::tempdir().unwrap();
    small_files(src.path(), n as u64);
    let (event_queue, queue_bytes) = (1536, 1 << 20);

    // Uncapped: the stream outruns what the receiver commits; the objects lost or
    // failed say the receiver's queue dropped their datagrams, not the link.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(true);
    let mut rx = slow_receiver(dir.path(), port, event_queue, queue_bytes);
    let out = dir.path().join("out");
    let records = stream(src.path(), &out, port, n, &[]);
    assert!(rx.terminate().success());
    let short: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] == "lost" || r["outcome"] == "failed")
        .collect();
    assert!(!short.is_empty(), "nothing lost without a cap: {records:?}");
    for r in &short {
        assert_eq!(r["cause"], "receiver", "{r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.contains("queue") && reason.contains("--max-objects-rate"),
            "{reason}"
        );
        assert!(!reason.contains("the link lost"), "{reason}");
    }

    // Capped well below its commit rate: every object delivered.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port(true);
    let mut rx = slow_receiver(dir.path(), port, event_queue, queue_bytes);
    let out = dir.path().join("out");
    let records = stream(
        src.path(),
        &out,
        port,
        n,
        &["--max-objects-rate", "300", "--objects-burst", "64"],
    );
    assert!(rx.terminate().success());
    assert_eq!(with_outcome(&records, "delivered").len(), n, "{records:?}");
}

#[test]
fn the_outbox_service_paces_objects_from_its_config_and_status_says_the_pace_limits() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(outbox.join("files")).unwrap();
    let n = 40;
    small_files(&outbox.join("files"), n);
    let rx = TestReceiver::start(|_| {});
    let config = dir.path().join("send.toml");
    std::fs::write(
        &config,
        format!(
            "to = \"{}\"\nrate = \"200M\"\nmax_objects_rate = 20\nobjects_burst = 2\n[watch]\noutbox = \"{}\"\nsettle = 0.2\n",
            rx.addr,
            outbox.display()
        ),
    )
    .unwrap();
    let mut w = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args(["watch", "--config", config.to_str().unwrap()])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let status = || {
        let out = Command::new(binary("gapferry-send"))
            .args(["status", "--config", config.to_str().unwrap()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let text = loop {
        let text = status();
        if text.contains("the object pace is what limits sending now") {
            break text;
        }
        assert!(Instant::now() < deadline, "{text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("object pace: at most 20 objects/s, 2 back to back: "),
        "{text}"
    );
    let records = rx.wait_records(n as usize, Duration::from_secs(60));
    assert!(w.terminate().success());
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        n as usize,
        "{records:?}"
    );
}
