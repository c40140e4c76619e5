//! Lanes: the real `gapferry-send` with two `--to`, each through its own userspace relay,
//! into the real `gapferry-recv listen` with two `--bind`. Lane B loses every datagram for
//! a while (at the start of the session, in the middle, at the end, or the whole session):
//! with enough `--repair` every object still arrives blake3-equal, and `gapferry-recv
//! status` shows both lanes with their counts. With too little `--repair` the multi-block
//! file is recorded as not delivered, never delivered corrupt. Forged datagrams on the
//! second lane are refused as on one; a wrong `--rate` count is refused at the command line.
//! In a network namespace of its own (root, `ip`), a lane whose route is unreachable fails
//! every send while the other lane delivers everything.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, free_port, keygen, read_records, spawn_listening, with_outcome, ChildGuard,
};
use gapferry_tests::prereq::require;
use gapferry_tests::realdata::realdata;
use gapferry_tests::relay::{Action, Policy, Relay};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Rate of each lane: slow enough for the relays' one thread, fast enough for a short test.
const LANE_RATE: &str = "100M";
/// Bytes of the multi-block random file.
const BIG: usize = 3_000_000;

/// The objects sent, in order: a real MISP event, a multi-block random file, a small
/// random file last (so a loss at the end hits a whole object).
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let misp =
        realdata().join("misp-events/pymisp-tests/57c4445b-c548-4654-af0b-4be3950d210f.json");
    assert!(misp.is_file(), "real data missing: {}", misp.display());
    let big = dir.join("big.bin");
    random_file(&big, BIG, 12);
    let tail = dir.join("tail.bin");
    random_file(&tail, 5_000, 13);
    vec![misp, big, tail]
}

/// A receiver with two lanes on free loopback ports.
struct TwoLaneReceiver {
    child: ChildGuard,
    out: PathBuf,
    lanes: [std::net::SocketAddr; 2],
}

fn start_receiver(dir: &Path, key: Option<&Path>) -> TwoLaneReceiver {
    let lanes = [0, 1].map(|_| {
        format!("127.0.0.1:{}", free_port(true))
            .parse::<std::net::SocketAddr>()
            .unwrap()
    });
    let out = dir.join("out");
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.arg("listen")
        .args(["--bind", &lanes[0].to_string()])
        .args(["--bind", &lanes[1].to_string()])
        .arg("--out")
        .arg(&out)
        .args(["--session-timeout", "5"]);
    if let Some(k) = key {
        cmd.arg("--key").arg(k);
    }
    let child = spawn_listening(cmd, &dir.join("recv.log"));
    TwoLaneReceiver { child, out, lanes }
}

/// Runs the real sender over lanes `to` with `extra` flags.
fn send(paths: &[PathBuf], to: &[std::net::SocketAddr], extra: &[&str]) -> Output {
    let mut cmd = Command::new(binary("gapferry-send"));
    cmd.arg("file")
        .args(paths)
        .args(["--kind", "file", "--quiet"]);
    for t in to {
        cmd.args(["--to", &t.to_string()]);
    }
    cmd.args(extra).output().expect("gapferry-send runs")
}

fn status(out: &Path) -> String {
    let o = Command::new(binary("gapferry-recv"))
        .args(["status", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Waits for `n` records (or 40 s) and returns them.
fn wait_records(out: &Path, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let r = read_records(out);
        if r.len() >= n || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The datagram count of `lane`'s line in a status report, and the line.
fn lane_line(status: &str, lane: std::net::SocketAddr) -> (u64, String) {
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("  lane {lane}:")))
        .unwrap_or_else(|| panic!("no line for lane {lane}:\n{status}"))
        .to_string();
    let count = line
        .rsplit_once(" datagrams,")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no datagram count in {line:?}"));
    (count, line)
}

/// What one two-lane run left behind.
struct Run {
    _dir: tempfile::TempDir,
    sources: Vec<PathBuf>,
    out: PathBuf,
    records: Vec<Value>,
    status: String,
    lanes: [std::net::SocketAddr; 2],
    /// Lane B's relay: datagrams seen and dropped.
    lane_b: (u64, u64),
}

/// Sends the inputs over two lanes, lane B's relay under `lane_b`, with `--repair repair`.
fn two_lane_run(lane_b: Policy, repair: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let sources = inputs(dir.path());
    let mut rx = start_receiver(dir.path(), None);
    let relay_a = Relay::start(rx.lanes[0], Box::new(|_, _| Action::Forward)).unwrap();
    let relay_b = Relay::start(rx.lanes[1], lane_b).unwrap();
    let sent = send(
        &sources,
        &[relay_a.addr(), relay_b.addr()],
        &["--rate", LANE_RATE, "--repair", repair],
    );
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let records = wait_records(&rx.out, sources.len());
    // The lanes' state file is rewritten about once a second.
    std::thread::sleep(Duration::from_millis(1500));
    let status = status(&rx.out);
    rx.child.terminate();
    Run {
        lane_b: relay_b.counts(),
        _dir: dir,
        sources,
        out: rx.out.clone(),
        records,
        status,
        lanes: rx.lanes,
    }
}

/// Lane B loses `len` consecutive datagrams from its `start`-th (`u64::MAX`: to the end).
fn lane_b_dead(start: u64, len: u64) -> Policy {
    Box::new(move |i, _| {
        if i >= start && i - start < len {
            Action::Drop
        } else {
            Action::Forward
        }
    })
}

fn assert_all_delivered_equal(run: &Run) {
    assert_eq!(
        with_outcome(&run.records, "delivered").len(),
        run.sources.len(),
        "{:#?}",
        run.records
    );
    for src in &run.sources {
        let got = run.out.join("files").join(src.file_name().unwrap());
        let got = std::fs::read(&got).unwrap_or_else(|e| panic!("{}: {e}", got.display()));
        assert_eq!(
            blake3::hash(&got),
            blake3::hash(&std::fs::read(src).unwrap()),
            "{} differs",
            src.display()
        );
    }
}

#[test]
fn a_lane_dead_for_a_while_costs_only_what_repair_covers_and_status_shows_both() {
    // Lane B carries about 2 600 datagrams at --repair 150 (half the symbols, every control
    // datagram); the table's windows fall at its start, its middle and to its end.
    let cases: [(&str, u64, u64); 4] = [
        ("start", 0, 600),
        ("middle", 900, 700),
        ("end", 1_800, u64::MAX),
        ("whole session", 0, u64::MAX),
    ];
    for (case, start, len) in cases {
        let run = two_lane_run(lane_b_dead(start, len), "150");
        let (seen, dropped) = run.lane_b;
        assert!(
            dropped >= 500 && seen > 1_800,
            "{case}: lane B saw {seen}, dropped {dropped}: the window missed the session"
        );
        if len == u64::MAX {
            assert_eq!(dropped, seen - start, "{case}: lane B dead to the end");
        }
        assert_all_delivered_equal(&run);
        let s = &run.status;
        assert!(s.contains("lanes: 2\n"), "{case}: {s}");
        let (a, a_line) = lane_line(s, run.lanes[0]);
        let (b, b_line) = lane_line(s, run.lanes[1]);
        assert_eq!(b, seen - dropped, "{case}: {b_line}");
        assert!(
            b < a,
            "{case}: lane B ({b}) should count less than A ({a})\n{s}"
        );
        assert!(a_line.contains(": up"), "{case}: {a_line}");
        if start == 0 && len == u64::MAX {
            assert!(
                b_line.contains("silent (no datagram since the receiver started): 0 datagrams"),
                "{case}: {b_line}"
            );
        }
    }
}

#[test]
fn too_little_repair_for_a_dead_lane_is_recorded_never_delivered_corrupt() {
    let run = two_lane_run(lane_b_dead(0, u64::MAX), "30");
    let big = run.out.join("files").join("big.bin");
    assert!(!big.exists(), "big.bin delivered with half its symbols");
    let records = wait_records(&run.out, run.sources.len());
    let big_record = records
        .iter()
        .find(|r| r["name"] == "big.bin")
        .unwrap_or_else(|| panic!("no record of big.bin: {records:#?}"));
    assert!(
        big_record["outcome"] == "failed" || big_record["outcome"] == "lost",
        "{big_record}"
    );
    // Whatever did arrive is exactly what was sent.
    for src in &run.sources {
        let got = run.out.join("files").join(src.file_name().unwrap());
        if let Ok(bytes) = std::fs::read(&got) {
            assert_eq!(
                blake3::hash(&bytes),
                blake3::hash(&std::fs::read(src).unwrap())
            );
        }
    }
}

#[test]
fn forged_datagrams_on_the_second_lane_are_refused_as_on_one() {
    let dir = tempfile::tempdir().unwrap();
    let (key, forged_key) = (dir.path().join("link.key"), dir.path().join("other.key"));
    keygen(&key);
    keygen(&forged_key);
    let sources = inputs(dir.path());
    let mut rx = start_receiver(dir.path(), Some(&key));
    // Another session, tagged with a key the receiver does not have, on lane B only.
    let forged = send(
        &sources[..1],
        &[rx.lanes[1]],
        &["--rate", LANE_RATE, "--key", forged_key.to_str().unwrap()],
    );
    assert!(forged.status.success());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        read_records(&rx.out).is_empty(),
        "a forged session was recorded"
    );
    let s = status(&rx.out);
    let (_, b_line) = lane_line(&s, rx.lanes[1]);
    let rejected: u64 = b_line
        .rsplit_once(" rejected")
        .and_then(|(h, _)| h.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(rejected > 0, "{b_line}");
    let (a, _) = lane_line(&s, rx.lanes[0]);
    assert_eq!(a, 0, "{s}");
    // The genuine sender over both lanes still delivers.
    let sent = send(
        &sources,
        &rx.lanes,
        &["--rate", LANE_RATE, "--key", key.to_str().unwrap()],
    );
    assert!(sent.status.success());
    let records = wait_records(&rx.out, sources.len());
    rx.child.terminate();
    assert_eq!(with_outcome(&records, "delivered").len(), sources.len());
}

#[test]
fn rate_count_must_match_the_lanes_and_one_lane_is_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("one.bin");
    random_file(&file, 20_000, 5);
    let to: Vec<std::net::SocketAddr> = (0..3)
        .map(|i| format!("127.0.0.1:{}", 9 + i).parse().unwrap())
        .collect();
    let o = send(
        std::slice::from_ref(&file),
        &to,
        &["--rate", "10M", "--rate", "20M"],
    );
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2 --rate for 3 --to: give --rate once"),
        "{err}"
    );
    let o = send(
        std::slice::from_ref(&file),
        &to[..2],
        &["--bind", "127.0.0.1:0"],
    );
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("1 --bind for 2 --to"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // One --to and one --bind: delivered, and status has no lane lines.
    let out = dir.path().join("out");
    let port = free_port(true);
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.args(["listen", "--bind", &format!("127.0.0.1:{port}"), "--out"])
        .arg(&out);
    let mut child = spawn_listening(cmd, &dir.path().join("recv.log"));
    let o = send(
        &[file],
        &[format!("127.0.0.1:{port}").parse().unwrap()],
        &["--rate", "50M"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let records = wait_records(&out, 1);
    std::thread::sleep(Duration::from_millis(1200));
    let s = status(&out);
    child.terminate();
    assert_eq!(with_outcome(&records, "delivered").len(), 1);
    assert!(!s.contains("lanes:") && !s.contains("  lane "), "{s}");
}

#[test]
fn the_outbox_service_over_two_lanes_shows_each_in_both_statuses() {
    let dir = tempfile::tempdir().unwrap();
    let mut rx = start_receiver(dir.path(), None);
    let outbox = dir.path().join("outbox");
    std::fs::create_dir_all(outbox.join("files")).unwrap();
    let mut watch = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args(["watch", "--quiet", "--settle", "0.3", "--outbox"])
            .arg(&outbox)
            .args(["--to", &rx.lanes[0].to_string()])
            .args(["--to", &rx.lanes[1].to_string()])
            .args(["--rate", "60M", "--rate", "20M"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let src = dir.path().join("doc.bin");
    random_file(&src, 400_000, 21);
    std::fs::copy(&src, outbox.join("files/.doc.bin.part")).unwrap();
    std::fs::rename(
        outbox.join("files/.doc.bin.part"),
        outbox.join("files/doc.bin"),
    )
    .unwrap();
    let records = wait_records(&rx.out, 1);
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
    let got = std::fs::read(rx.out.join("files/doc.bin")).unwrap();
    assert_eq!(
        blake3::hash(&got),
        blake3::hash(&std::fs::read(&src).unwrap())
    );
    std::thread::sleep(Duration::from_millis(1500));
    let o = Command::new(binary("gapferry-send"))
        .args(["status", "--outbox"])
        .arg(&outbox)
        .output()
        .unwrap();
    let sender_status = String::from_utf8_lossy(&o.stdout).into_owned();
    let receiver_status = status(&rx.out);
    watch.terminate();
    rx.child.terminate();
    assert!(sender_status.contains("lanes: 2 "), "{sender_status}");
    // Datagrams and bytes of a lane's line ("..: N datagrams, B bytes, ...").
    let numbers = |line: &str| -> (u64, u64) {
        let n = |unit: &str| {
            line.split(", ")
                .flat_map(|part| part.rsplit(": ").next())
                .find_map(|part| part.strip_suffix(unit))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {unit:?} in {line:?}"))
        };
        (n(" datagrams"), n(" bytes"))
    };
    let sent = |lane: std::net::SocketAddr, rate: &str| {
        let prefix = format!("  lane {lane}: sending at {rate} bit/s: ");
        let line = sender_status
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no sending line for {lane}: {sender_status}"));
        numbers(line)
    };
    let (a, b) = (sent(rx.lanes[0], "60000000"), sent(rx.lanes[1], "20000000"));
    // Both lanes carry every control datagram (heartbeats go on while the service idles);
    // the symbols are striped 3:1 by rate: lane A carries about half the file more.
    assert!(
        b.0 > 0 && a.0 > b.0,
        "lane A {a:?}, lane B {b:?}: {sender_status}"
    );
    assert!(
        a.1 - b.1 > 150_000,
        "lane A {a:?}, lane B {b:?}: {sender_status}"
    );
    let received = |lane| numbers(&lane_line(&receiver_status, lane).1);
    let (ra, rb) = (received(rx.lanes[0]), received(rx.lanes[1]));
    assert!(ra.1 - rb.1 > 150_000, "{receiver_status}");
    assert!(rb.0 > 0, "{receiver_status}");
}

/// A network namespace with only loopback up and an `unreachable` route to a test subnet
/// (10.231.9.0/24, which exists nowhere), deleted on drop.
struct UnreachableNs(String);

impl UnreachableNs {
    fn create() -> Result<Self, String> {
        let name = format!("gapferry-lanes-{}", std::process::id());
        let ip = |args: &[&str]| -> Result<(), String> {
            let o = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| format!("`ip` not found ({e}); install iproute2"))?;
            match o.status.success() {
                true => Ok(()),
                false => Err(format!(
                    "ip {}: {} (needs root and network namespaces)",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
            }
        };
        let _ = ip(&["netns", "del", &name]);
        ip(&["netns", "add", &name])?;
        let ns = UnreachableNs(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"])?;
        ip(&["-n", &ns.0, "route", "add", "unreachable", "10.231.9.0/24"])?;
        Ok(ns)
    }

    /// `program` run inside the namespace.
    fn exec(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]).arg(program);
        c.env("NO_COLOR", "1");
        c
    }
}

impl Drop for UnreachableNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn a_lane_whose_sends_fail_does_not_stop_the_other() {
    let Some(ns) = require(UnreachableNs::create()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sources = inputs(dir.path());
    let out = dir.path().join("out");
    let mut listen = ns.exec(binary("gapferry-recv"));
    listen
        .args([
            "listen",
            "--bind",
            "127.0.0.1:7000",
            "--bind",
            "127.0.0.1:7001",
        ])
        .arg("--out")
        .arg(&out);
    let mut rx = spawn_listening(listen, &dir.path().join("recv.log"));
    let sent = ns
        .exec(binary("gapferry-send"))
        .arg("file")
        .args(&sources)
        .args([
            "--kind", "file", "--quiet", "--rate", LANE_RATE, "--repair", "150",
        ])
        .args(["--to", "127.0.0.1:7000", "--to", "10.231.9.1:7001"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&sent.stderr);
    assert!(sent.status.success(), "{stderr}");
    assert!(
        stderr.contains("lane cannot send") && stderr.contains("10.231.9.1:7001"),
        "the failing lane is logged: {stderr}"
    );
    let records = wait_records(&out, sources.len());
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&out);
    rx.terminate();
    assert_eq!(
        with_outcome(&records, "delivered").len(),
        sources.len(),
        "{records:#?}"
    );
    for src in &sources {
        let got = std::fs::read(out.join("files").join(src.file_name().unwrap())).unwrap();
        assert_eq!(
            blake3::hash(&got),
            blake3::hash(&std::fs::read(src).unwrap())
        );
    }
    let lane = |port| lane_line(&s, format!("127.0.0.1:{port}").parse().unwrap());
    assert!(lane(7000).0 > 0, "{s}");
    assert!(
        lane(7001)
            .1
            .contains("silent (no datagram since the receiver started): 0 datagrams"),
        "{s}"
    );
}
