//! A patient attacker with a capture of keyed traffic, against the real receiver binary:
//! traffic captured before is refused after a receiver restart too (the image store does
//! not roll back), and replayed sessions cannot take the session table from a legitimate
//! sender.
//!
//! The "wire" is a UDP socket on loopback: each capture is made by the real sender with
//! `--pcap-out` and its datagrams are injected as they are, tags included.

use gapferry_pcap::CaptureReader;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::keygen;
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::{
    binary, log_number, read_records, strip_ansi, with_outcome, ChildGuard,
};
use gapferry_tests::lxd::lxd_image;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Setup {
    dir: tempfile::TempDir,
    key: PathBuf,
    addr: String,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("link.key");
        keygen(&key);
        let port = UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Setup {
            dir,
            key,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("high")
    }

    /// Starts the keyed receiver (keeping one image version); waits until it listens.
    fn receiver(&self, log: &str) -> ChildGuard {
        let child = Command::new(binary("gapferry-recv"))
            .args([
                "listen",
                "--bind",
                &self.addr,
                "--keep-images",
                "1",
                "--key",
            ])
            .arg(&self.key)
            .arg("--out")
            .arg(self.out())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join(log)).unwrap())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        ChildGuard(child)
    }

    /// The receiver's log, without terminal colour codes.
    fn log(&self, log: &str) -> String {
        strip_ansi(&std::fs::read_to_string(self.dir.path().join(log)).unwrap())
    }

    /// What a keyed sender puts on the wire for `file`, captured.
    fn capture(&self, file: &Path, name: &str) -> Vec<Vec<u8>> {
        let pcap = self.dir.path().join(format!("{name}.pcap"));
        let (key, pcap_out) = (self.key.to_str().unwrap(), pcap.to_str().unwrap());
        send_with_binary(&[file], &self.addr, &["--key", key, "--pcap-out", pcap_out]);
        let mut reader = CaptureReader::open(&pcap).unwrap();
        let mut datagrams = Vec::new();
        while let Some(d) = reader.next_datagram().unwrap() {
            datagrams.push(d.payload);
        }
        assert!(!datagrams.is_empty());
        datagrams
    }

    /// Puts datagrams on the "wire", a little paced.
    fn inject(&self, datagrams: &[Vec<u8>]) {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        for (i, d) in datagrams.iter().enumerate() {
            s.send_to(d, &self.addr).unwrap();
            if i % 32 == 31 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
    }

    fn wait_delivered(&self, name: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let records = read_records(&self.out());
            if with_outcome(&records, "delivered")
                .iter()
                .any(|r| r["name"] == name)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

/// The count after `key=` in the receiver's last log line (its stop line).
fn count(log: &str, key: &str) -> u64 {
    log_number(log, key).expect("the receiver's summary line")
}

/// The datagrams the receiver refused, by its stop line.
fn rejected(log: &str) -> u64 {
    count(log, "rejected")
}

#[test]
fn a_captured_image_replayed_after_a_restart_is_refused_and_latest_does_not_roll_back() {
    let s = Setup::new();
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let (aaa, bbb) = (src.join("Redis_aaa.tar.gz"), src.join("Redis_bbb.tar.gz"));
    lxd_image(&aaa, 100_000, 1);
    lxd_image(&bbb, 100_000, 2);
    let first = s.capture(&aaa, "aaa");
    let second = s.capture(&bbb, "bbb");

    let mut rx = s.receiver("first.log");
    s.inject(&first);
    assert!(s.wait_delivered("Redis_aaa.tar.gz", Duration::from_secs(10)));
    s.inject(&second);
    assert!(s.wait_delivered("Redis_bbb.tar.gz", Duration::from_secs(10)));
    // The sessions end; the receiver names them closed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(rx.terminate().success());

    let images = s.out().join("images");
    let latest = images.join("latest_Redis");
    assert_eq!(std::fs::read_link(&latest).unwrap(), Path::new("Redis_bbb"));
    let delivered_before = with_outcome(&read_records(&s.out()), "delivered").len();

    let mut rx = s.receiver("second.log");
    s.inject(&first);
    std::thread::sleep(Duration::from_secs(4));
    assert!(rx.terminate().success());
    let log = s.log("second.log");
    let records = read_records(&s.out());
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        delivered_before,
        "the replay delivered something: {records:#?}"
    );
    assert_eq!(
        std::fs::read_link(&latest).unwrap(),
        Path::new("Redis_bbb"),
        "latest_Redis rolled back"
    );
    assert!(images.join("Redis_bbb/Redis_bbb.tar.gz").is_file());
    // Every replayed datagram that arrived is refused, but inventories: those never open
    // a session and are ignored as they are.
    let heard = count(&log, "datagrams");
    let inventories = first.iter().filter(|d| d[3] == 4).count() as u64;
    let missed = first.len() as u64 - heard;
    assert!(
        heard > 0 && rejected(&log) + inventories + missed >= first.len() as u64,
        "every replayed datagram heard must be refused ({} of {heard}; {} injected, \
         {inventories} inventories): {log}",
        rejected(&log),
        first.len()
    );
    assert_eq!(
        count(&log, "replayed"),
        rejected(&log),
        "the refusals must be counted as replayed: {log}"
    );
}

#[test]
fn replayed_sessions_cannot_lock_a_legitimate_sender_out() {
    let s = Setup::new();
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    // Eight captured sends (more than the table's eight places with the legitimate one).
    let mut captures = Vec::new();
    for i in 0..8u64 {
        let f = src.join(format!("old{i}.bin"));
        random_file(&f, 5_000, i);
        captures.push(s.capture(&f, &format!("old{i}")));
    }
    let mut rx = s.receiver("first.log");
    for c in &captures {
        s.inject(c);
    }
    assert!(s.wait_delivered("old7.bin", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(3));
    assert!(rx.terminate().success());

    // After a restart, the attacker keeps the eight sessions "alive" with their first
    // descriptor every half second, while a legitimate sender sends a new file.
    let mut rx = s.receiver("second.log");
    let firsts: Vec<Vec<u8>> = captures
        .iter()
        .map(|c| c.iter().find(|d| d[3] == 2).expect("a descriptor").clone())
        .collect();
    let fresh = src.join("fresh.bin");
    random_file(&fresh, 300_000, 99);
    let key = s.key.clone();
    let addr = s.addr.clone();
    let attack_until = Instant::now() + Duration::from_secs(5);
    let mut legit = None;
    while Instant::now() < attack_until {
        s.inject(&firsts);
        if legit.is_none()
            && attack_until.saturating_duration_since(Instant::now()) < Duration::from_secs(4)
        {
            legit = Some(
                Command::new(binary("gapferry-send"))
                    .arg("file")
                    .arg(&fresh)
                    .args(["--to", &addr, "--quiet", "--rate", "50M", "--key"])
                    .arg(&key)
                    .status()
                    .unwrap(),
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(legit.unwrap().success());
    let delivered = s.wait_delivered("fresh.bin", Duration::from_secs(10));
    assert!(rx.terminate().success());
    let log = s.log("second.log");
    assert!(delivered, "the legitimate file was not delivered: {log}");
    assert!(
        rejected(&log) >= 8,
        "the replayed descriptors must be refused: {log}"
    );
    let records = read_records(&s.out());
    assert!(
        with_outcome(&records, "session_refused").is_empty(),
        "a session was refused a place: {records:#?}"
    );
}
