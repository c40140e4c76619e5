//! The receiver's memory against a patient attacker, measured on the real binary: its
//! peak resident set (`VmHWM`) stays under a stated bound while it is flooded with junk
//! or handed a MISP event that inflates a thousandfold, and it keeps delivering.

use gapferry_common::wire::{self, MAX_DATAGRAM};
use gapferry_common::KeyRing;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{binary, read_records, with_outcome, ChildGuard, TestReceiver};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What the receiver's peak resident set may reach in these tests. Its limits allow far
/// more in principle (the assembler's held bytes alone default to 512 MiB); these attacks
/// must not come near: before the byte-bounded queue and the streaming MISP parser they
/// drove the receiver to 677 MB and 445 MB.
const PEAK_RSS_BOUND: u64 = 150 << 20;

fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

/// Peak resident set of process `pid`, bytes (`VmHWM` of /proc/<pid>/status).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the receiver is still running");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        << 10
}

fn scrape(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the sample line starting with `name` (labels included), if present.
fn value(body: &str, name: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

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
        while scrape(metrics).is_none() {
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
        peak_rss(self.child.0.id())
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
        let body = scrape(rx.metrics).expect("receiver metrics");
        let get = |name: &str| value(&body, name).unwrap_or(0.0);
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
