//! The receiver's memory against a patient attacker, measured on the real binary: its
//! peak resident set (`VmHWM`) stays under a stated bound while it is flooded with junk
//! or handed a MISP event that inflates a thousandfold, and it keeps delivering.

use gapferry_common::wire::{self, MAX_DATAGRAM};
use gapferry_common::KeyRing;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, metric_value, read_records, scrape_metrics, with_outcome, ChildGuard, TestReceiver,
};
use gapferry_tests::harness::{free_port, peak_rss};

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the receiver's peak resident set may reach in these tests. Its limits allow far
/// more in principle (the assembler's held bytes alone default to 512 MiB); these attacks
/// must not come near: before the byte-bounded queue and the streaming MISP parser they
/// drove the receiver to 677 MB and 445 MB.
const PEAK_RSS_BOUND: u64 = 150 << 20;

/// A `gapferry-recv listen` on loopback with its metrics endpoint.
struct Receiver {
    child: ChildGuard,
    udp: SocketAddr,
    metrics: SocketAddr,
}

impl Receiver {
    fn start(out: &Path, extra: &[&str]) -> Receiver {
        let udp: SocketAddr = format!("127.0.0.1:{}", free_port(true)).parse().unwrap();
        let metrics: SocketAddr = format!("127.0.0.1:{}", free_port(false)).parse().unwrap();
        let child = ChildGuard(
            Command::new(binary("gapferry-recv"))
                .args(["listen", "--bind", &udp.to_string(), "--out"])
                .arg(out)
                .args(["--metrics", &metrics.to_string()])
                .args(extra)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while scrape_metrics(metrics).is_none() {
            assert!(Instant::now() < deadline, "the receiver never came up");
            std::thread::sleep(Duration::from_millis(50));
        }
        Receiver {
            child,
            udp,
            metrics,
        }
    }

    fn peak_rss(&self) -> u64 {
        peak_rss(self.child.0.id()).expect("the receiver is running, with a VmHWM")
    }
}

/// Waits up to `timeout` for `n` records under `out`.
fn wait_records(out: &Path, n: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = read_records(out);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn send(paths: &[&Path], to: SocketAddr, extra: &[&str]) {
    let status = Command::new(binary("gapferry-send"))
        .arg("file")
        .args(paths)
        .args(["--to", &to.to_string(), "--rate", "200M", "--quiet"])
        .args(extra)
        .status()
        .unwrap();
    assert!(status.success(), "gapferry-send failed: {status:?}");
}

#[test]
fn a_flood_of_64k_datagrams_with_bad_tags_stays_bounded_and_a_keyed_send_still_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let key = dir.path().join("link.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    // An MTU that lets 64 KB datagrams through to the tag check, the costlier path.
    let rx = Receiver::start(&out, &["--key", key.to_str().unwrap(), "--mtu", "65535"]);

    // Tagged data datagrams of the largest UDP size, with tags no key made.
    let mut junk = vec![0x5au8; MAX_DATAGRAM];
    junk[..8].copy_from_slice(&[b'G', b'F', wire::VERSION, 1, wire::FLAG_TAGGED, 0, 0, 0]);
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let mut sent = 0u64;
    while sent < 200_000 && started.elapsed() < Duration::from_secs(4) {
        junk[8..16].copy_from_slice(&sent.to_be_bytes());
        if sock.send_to(&junk, rx.udp).is_ok() {
            sent += 1;
        }
    }
    // Let the receiver drain what the kernel still holds: until its count stops moving.
    let counts = |rx: &Receiver| {
        let body = scrape_metrics(rx.metrics).expect("receiver metrics");
        let get = |name: &str| metric_value(&body, name).unwrap_or(0.0);
        (
            get("gapferry_receiver_datagrams_received_total"),
            get("gapferry_receiver_datagrams_rejected_total{reason=\"bad_tag\"}"),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = counts(&rx);
    let (received, bad_tag) = loop {
        std::thread::sleep(Duration::from_millis(500));
        let now = counts(&rx);
        if now == last || Instant::now() > deadline {
            break now;
        }
        last = now;
    };
    assert!(
        received > 1000.0 && bad_tag == received,
        "every one of the {received} datagrams read (of {sent} sent) is dropped as bad_tag: {bad_tag}"
    );
    let peak = rx.peak_rss();
    println!("{sent} junk datagrams sent, {received} read; receiver peak RSS {peak} bytes");
    assert!(
        peak < PEAK_RSS_BOUND,
        "{sent} junk datagrams of {MAX_DATAGRAM} bytes drove the receiver's peak RSS to {peak} bytes (bound {PEAK_RSS_BOUND})"
    );

    // A legitimate keyed send right after is delivered.
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("after.bin");
    random_file(&file, 300_000, 7);
    send(&[&file], rx.udp, &["--key", key.to_str().unwrap()]);
    let records = wait_records(&out, 1, Duration::from_secs(20));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    assert_eq!(
        std::fs::read(out.join("files/after.bin")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    let peak = rx.peak_rss();
    assert!(
        peak < PEAK_RSS_BOUND,
        "peak RSS {peak} bytes after the send"
    );
}

#[test]
fn datagrams_longer_than_the_mtu_are_dropped_and_counted() {
    let rx = TestReceiver::start(|c| {
        c.mtu = 1500;
        c.keys = KeyRing::default();
    });
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    // Well-formed heads on 1 473-byte payloads: one byte more than IPv4 at MTU 1500 carries.
    let mut long = vec![0u8; 1500 - 28 + 1];
    long[..8].copy_from_slice(&[b'G', b'F', wire::VERSION, 1, 0, 0, 0, 0]);
    for _ in 0..200 {
        sock.send_to(&long, rx.addr).unwrap();
    }
    // And the sender's datagrams at MTU 1500 still pass.
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("fits.bin"), 100_000, 3);
    gapferry_tests::harness::send(
        &[src.path().to_path_buf()],
        rx.addr,
        gapferry_tests::harness::sender_config(200_000_000),
    );
    let records = rx.wait_records(1, Duration::from_secs(20));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    let report = rx.stop();
    assert_eq!(
        report.report.assembler.rejected.get("too_long").copied(),
        Some(200),
        "{:?}",
        report.report.assembler
    );
}

/// `{"Event":{...,"Attribute":[item,item,...]}}` of `n` items, written to `path`.
fn misp_event_file(path: &Path, uuid: &str, item: &str, n: usize) {
    let mut doc = String::with_capacity((item.len() + 1) * n + 300);
    doc.push_str(&format!(
        r#"{{"Event":{{"uuid":"{uuid}","info":"inflated","Orgc":{{"name":"CIRCL","uuid":"55f6ea5e-2c60-40e5-964f-47a8950d210f"}},"timestamp":"1700000000","date":"2023-11-14","Attribute":["#
    ));
    for i in 0..n {
        if i > 0 {
            doc.push(',');
        }
        doc.push_str(item);
    }
    doc.push_str("]}}");
    std::fs::write(path, doc).unwrap();
}

/// Sends `event`'s bytes as they are as one object of kind misp to a fresh receiver
/// binary; returns the records about it a second after the first, and the receiver's
/// peak RSS. The object is built by hand: `gapferry-send` would refuse a malformed event
/// (and convert a valid one to its feed form) before sending, and the receiver must
/// stand on its own.
fn send_event(
    event: &Path,
) -> (
    Vec<serde_json::Value>,
    u64,
    std::path::PathBuf,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let rx = Receiver::start(&out, &[]);
    let object = gapferry_sender::source::SourceFile {
        path: event.to_path_buf(),
        name: event.file_name().unwrap().to_string_lossy().into_owned(),
        size: std::fs::metadata(event).unwrap().len(),
        kind: gapferry_common::ObjectKind::Misp,
        bytes: None,
    };
    let sink = gapferry_sender::sink::UdpSink::connect(rx.udp, None).unwrap();
    let mut session = gapferry_sender::SenderSession::new(
        gapferry_tests::harness::sender_config(200_000_000),
        Box::new(sink),
    )
    .unwrap();
    session
        .send_files(&[object], &gapferry_sender::progress::Progress::hidden())
        .unwrap();
    session.finish().unwrap();
    let first = wait_records(&out, 1, Duration::from_secs(60));
    assert!(!first.is_empty(), "no outcome recorded for the event");
    // Anything more about the same event would come right after.
    std::thread::sleep(Duration::from_secs(1));
    let records = read_records(&out);
    (records, rx.peak_rss(), out, dir)
}

#[test]
fn a_misp_event_inflating_to_16_mb_is_failed_once_and_memory_stays_bounded() {
    let src = tempfile::tempdir().unwrap();
    let event = src.path().join("zeros.json");
    // 16 MiB of `0,`: a few KB once compressed, 8 Mi elements of a JSON tree.
    misp_event_file(&event, "5a0a9aa9-23a4-4607-b6df-41a9950d2100", "0", 8 << 20);
    let (records, peak, out, _dir) = send_event(&event);
    assert_eq!(
        records.len(),
        1,
        "failed or delivered, never both: {records:#?}"
    );
    assert_eq!(records[0]["outcome"], "failed", "{records:#?}");
    let reason = records[0]["reason"].as_str().unwrap();
    assert!(reason.contains("attribute 0 is not an object"), "{reason}");
    assert!(
        !out.join("misp/5a0a9aa9-23a4-4607-b6df-41a9950d2100.json")
            .exists(),
        "nothing delivered"
    );
    println!("receiver peak RSS {peak} bytes");
    assert!(
        peak < PEAK_RSS_BOUND,
        "a 16 MiB event of zeros drove the receiver's peak RSS to {peak} bytes (bound {PEAK_RSS_BOUND})"
    );
}

#[test]
fn a_valid_misp_event_of_half_a_million_attributes_is_delivered_in_bounded_memory() {
    let src = tempfile::tempdir().unwrap();
    let event = src.path().join("many.json");
    let uuid = "5a0a9aa9-23a4-4607-b6df-41a9950d2101";
    let n = 500_000;
    misp_event_file(&event, uuid, r#"{"type":"comment","value":"0"}"#, n);
    let (records, peak, out, _dir) = send_event(&event);
    assert_eq!(
        records.len(),
        1,
        "failed or delivered, never both: {records:#?}"
    );
    assert_eq!(records[0]["outcome"], "delivered", "{records:#?}");
    assert_eq!(
        std::fs::read(out.join(format!("misp/{uuid}.json"))).unwrap(),
        std::fs::read(&event).unwrap()
    );
    let csv = std::fs::read_to_string(out.join("misp/hashes.csv")).unwrap();
    assert_eq!(csv.lines().count(), n);
    println!("receiver peak RSS {peak} bytes");
    assert!(
        peak < PEAK_RSS_BOUND,
        "a {n}-attribute event drove the receiver's peak RSS to {peak} bytes (bound {PEAK_RSS_BOUND})"
    );
}
