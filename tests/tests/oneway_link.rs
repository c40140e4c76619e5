//! A real one-way link: two network namespaces joined by a veth pair, nothing able to flow
//! from the high side back to the low side, the rate capped like a 1 GbE diode, and loss
//! injected with nftables. The receiver runs in the high namespace and the sender in the
//! low one, both as the real binaries.
//!
//! ```text
//!  low ns (sender)                                    high ns (receiver)
//!  gfl<pid>x<n> 10.231.0.1/30  ═══ veth ═══►  gfh<pid>x<n> 10.231.0.2/30
//!   static neighbour for .2 (PERMANENT)        netdev egress: drop every frame (counted)
//!   tbf 1gbit (the diode's line rate)          inet input, data port only, in this order:
//!   netdev ingress: drop every frame             numgen inc mod M < B drop    (bursts of B)
//!                                                numgen random mod 100 < 3 drop (3 % random)
//! ```
//!
//! The test subnet exists only inside the namespaces this test creates (names carry the test
//! process id; a guard deletes them, also on panic, and stale ones of dead test processes are
//! removed at start). Nothing is sent anywhere else.
//!
//! Needs root, `ip`, `tc`, `ss` (iproute2) and `nft` (nftables). When they are missing or
//! namespaces cannot be made, the tests fail under `CI=true` and print `skipping: <reason>`
//! otherwise.
//!
//! Repair: `--repair 25 --passes 2`. 25 % covers what the interleaver spreads: a burst of
//! 300 datagrams over the 8 interleaved blocks of a large object costs each block about 38
//! symbols, 3 % random loss about 38 more, against 256 repair symbols per 1 024-symbol block.
//! A burst cannot be spread over a single-block object (a 1 MiB file is one block of 745
//! symbols, a JSON event a handful of datagrams): 300 lost in a row is 40 % of it, beyond any
//! sensible repair ratio. Time diversity covers that: the second pass sends every object again,
//! with fresh repair symbols, a whole pass later, and the receiver adds both passes up. The
//! burst counter starts at the first datagram, so in the link test the first burst wipes out
//! the first pass of the small files and a third of the 1 MiB one: they must arrive anyway.

use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::harness::{binary, log_number, read_records, strip_ansi, with_outcome};
use gapferry_tests::prereq::{ci, require};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const LOW_ADDR: &str = "10.231.0.1";
const HIGH_ADDR: &str = "10.231.0.2";
const PREFIX: &str = "/30";
/// The data port on the high side; a reverse probe listens on PROBE_PORT on the low side.
const PORT: u16 = 7000;
const PROBE_PORT: u16 = 7001;
const NS_LOW: &str = "gapferry-low-";
const NS_HIGH: &str = "gapferry-high-";
const RATE: &str = "800M";
const REPAIR: &str = "25";
const PASSES: &str = "2";
/// The soak starts at most one sender run (one session) per this interval. The receiver
/// keeps a finished session open for its 2 s grace time and holds at most 8 sessions; a
/// session beyond that is refused datagram by datagram and its objects get no record at
/// all, which this pace stays clear of (that gap in the loss accounting is a receiver bug,
/// not what this soak measures).
const MIN_SESSION_INTERVAL: Duration = Duration::from_millis(500);

/// The two tests of this file each saturate the link; run them one at a time.
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_LINK: AtomicU32 = AtomicU32::new(0);

fn prerequisites() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!(
            "not root (euid {euid}); network namespaces, nftables and tc need root"
        ));
    }
    for (tool, arg, package) in [
        ("ip", "-V", "iproute2"),
        ("tc", "-V", "iproute2"),
        ("ss", "-V", "iproute2"),
        ("nft", "--version", "nftables"),
    ] {
        match Command::new(tool).arg(arg).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("`{tool} {arg}` failed: {}", o.status)),
            Err(e) => return Err(format!("`{tool}` not found ({e}); install {package}")),
        }
    }
    Ok(())
}

/// Runs `cmd`, returning its stdout, or an error naming the command and its stderr.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Result<String, String> {
    run(Command::new("ip").args(args))
}

/// `program args...` inside namespace `ns`.
fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c.env("NO_COLOR", "1");
    c
}

/// Feeds `rules` to `nft -f -` inside `ns`.
fn nft_load(ns: &str, rules: &str) -> Result<(), String> {
    use std::io::Write;
    let mut child = in_ns(ns, "nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .map_err(|e| format!("nft stdin: {e}"))?;
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nft in {ns} refused the ruleset ({}): {}\n{rules}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Deletes namespaces of this test left behind by test processes that no longer exist.
fn remove_stale_namespaces() {
    let Ok(list) = ip(&["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name
            .strip_prefix(NS_LOW)
            .or_else(|| name.strip_prefix(NS_HIGH))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// Injected loss on the high side's input: bursts of `burst` datagrams every `every`
/// arrivals, then `random_pct` % of the rest at random.
#[derive(Clone, Copy, Debug)]
struct Loss {
    every: u64,
    burst: u64,
    random_pct: u64,
    /// Instead of periodic bursts, one burst over these data datagrams (numbered from the
    /// first that arrives, inclusive).
    burst_range: Option<(u64, u64)>,
}

/// What the nftables and tc counters say about one run.
#[derive(Debug, Default, Clone, Copy)]
struct Counters {
    /// Data datagrams dropped by the burst rule.
    burst: u64,
    /// Data datagrams dropped by the random rule.
    random: u64,
    /// Data datagrams let through to the receiver.
    passed: u64,
    /// Frames the high side tried to put on the veth (all dropped).
    high_egress_dropped: u64,
    /// Frames that reached the low side's veth (all dropped; must stay 0).
    low_ingress_dropped: u64,
    /// Packets tbf sent and dropped on the low veth.
    tbf_sent: u64,
    tbf_dropped: u64,
    /// UDP receive-buffer overflows in the high namespace.
    rcvbuf_errors: u64,
}

impl Counters {
    fn arrived(&self) -> u64 {
        self.burst + self.random + self.passed
    }

    fn dropped(&self) -> u64 {
        self.burst + self.random
    }
}

/// The two namespaces and the veth pair between them; deleted on drop.
struct Link {
    low: String,
    high: String,
    low_dev: String,
    high_dev: String,
    loss: Loss,
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        let _ = ip(&["netns", "del", &self.low]);
        let _ = ip(&["netns", "del", &self.high]);
    }
}

fn mac_of(ns: &str, dev: &str) -> Result<String, String> {
    let json = ip(&["-n", ns, "-j", "link", "show", "dev", dev])?;
    let v: Value = serde_json::from_str(&json).map_err(|e| format!("ip -j link: {e}"))?;
    v[0]["address"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("no MAC address for {dev} in {json}"))
}

impl Link {
    fn create(loss: Loss) -> Result<Link, String> {
        prerequisites()?;
        remove_stale_namespaces();
        let (pid, n) = (
            std::process::id(),
            NEXT_LINK.fetch_add(1, Ordering::Relaxed),
        );
        let link = Link {
            low: format!("{NS_LOW}{pid}-{n}"),
            high: format!("{NS_HIGH}{pid}-{n}"),
            low_dev: format!("gfl{pid}x{n}"),
            high_dev: format!("gfh{pid}x{n}"),
            loss,
        };
        link.set_up()
            .map_err(|e| format!("setting up the namespaces failed: {e}"))?;
        Ok(link)
    }

    fn set_up(&self) -> Result<(), String> {
        let (low, high) = (self.low.as_str(), self.high.as_str());
        let (ldev, hdev) = (self.low_dev.as_str(), self.high_dev.as_str());
        ip(&["netns", "add", low])?;
        ip(&["netns", "add", high])?;
        for ns in [low, high] {
            // No IPv6 chatter (router solicitations, MLD) on the link; best effort.
            let _ = run(in_ns(ns, "sh").args([
                "-c",
                "echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; \
                 echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
            ]));
        }
        // Both ends are born inside their namespaces: nothing appears in the host's.
        ip(&[
            "link", "add", ldev, "netns", low, "type", "veth", "peer", "name", hdev, "netns", high,
        ])?;
        // A real NIC puts every datagram on the fibre as its own frame; a veth would carry
        // the sender's UDP GSO batches whole. One segment per packet makes the kernel
        // segment before the veth, so loss and rate apply per datagram, as on a diode.
        for (ns, dev) in [(low, ldev), (high, hdev)] {
            ip(&["-n", ns, "link", "set", "dev", dev, "gso_max_segs", "1"])?;
        }
        ip(&[
            "-n",
            low,
            "addr",
            "add",
            &format!("{LOW_ADDR}{PREFIX}"),
            "dev",
            ldev,
        ])?;
        ip(&[
            "-n",
            high,
            "addr",
            "add",
            &format!("{HIGH_ADDR}{PREFIX}"),
            "dev",
            hdev,
        ])?;
        for (ns, dev) in [(low, ldev), (high, hdev), (low, "lo"), (high, "lo")] {
            ip(&["-n", ns, "link", "set", "dev", dev, "up"])?;
        }
        let (lmac, hmac) = (mac_of(low, ldev)?, mac_of(high, hdev)?);
        // The sender never needs an ARP reply: the receiver's MAC is configured.
        ip(&[
            "-n",
            low,
            "neigh",
            "replace",
            HIGH_ADDR,
            "lladdr",
            &hmac,
            "dev",
            ldev,
            "nud",
            "permanent",
        ])?;
        // The high side knows the low side's MAC too, only so that the reverse probe really
        // puts IP frames on the wire (instead of stalling on ARP) and the filter must stop them.
        ip(&[
            "-n",
            high,
            "neigh",
            "replace",
            LOW_ADDR,
            "lladdr",
            &lmac,
            "dev",
            hdev,
            "nud",
            "permanent",
        ])?;
        // A 1 GbE diode: the line rate caps what the sender's veth can carry.
        run(Command::new("tc").args([
            "-n", low, "qdisc", "add", "dev", ldev, "root", "tbf", "rate", "1gbit", "burst",
            "256kb", "latency", "20ms",
        ]))?;
        // The cut return fibre, at both ends, below IP (ARP included).
        nft_load(
            high,
            &format!(
                "table netdev gapferry_diode {{\n\
                 \tchain egress {{\n\
                 \t\ttype filter hook egress device \"{hdev}\" priority 0; policy accept;\n\
                 \t\tcounter drop comment \"high-egress\"\n\
                 \t}}\n\
                 }}\n"
            ),
        )?;
        nft_load(
            low,
            &format!(
                "table netdev gapferry_diode {{\n\
                 \tchain ingress {{\n\
                 \t\ttype filter hook ingress device \"{ldev}\" priority 0; policy accept;\n\
                 \t\tcounter drop comment \"low-ingress\"\n\
                 \t}}\n\
                 }}\n"
            ),
        )?;
        // Loss on the data port, bursts first so their counter sees every arrival.
        let Loss {
            every,
            burst,
            random_pct,
            burst_range,
        } = self.loss;
        let data = format!("ip saddr {LOW_ADDR} ip daddr {HIGH_ADDR} udp dport {PORT}");
        let burst = match burst_range {
            Some((first, last)) => format!("numgen inc mod 1000000000 {first}-{last}"),
            None => format!("numgen inc mod {every} < {burst}"),
        };
        nft_load(
            high,
            &format!(
                "table inet gapferry_loss {{\n\
                 \tchain input {{\n\
                 \t\ttype filter hook input priority 0; policy accept;\n\
                 \t\t{data} {burst} counter drop comment \"burst\"\n\
                 \t\t{data} numgen random mod 100 < {random_pct} counter drop comment \"random\"\n\
                 \t\t{data} counter accept comment \"passed\"\n\
                 \t}}\n\
                 }}\n"
            ),
        )?;
        let neigh = ip(&["-n", low, "neigh", "show", HIGH_ADDR, "dev", ldev])?;
        if !neigh.contains("PERMANENT") {
            return Err(format!("static neighbour entry missing: {neigh:?}"));
        }
        Ok(())
    }

    fn nft_counters(&self, ns: &str) -> HashMap<String, u64> {
        let json = run(in_ns(ns, "nft").args(["-j", "list", "ruleset"])).expect("nft list");
        let v: Value = serde_json::from_str(&json).expect("nft -j output is JSON");
        let mut out = HashMap::new();
        for item in v["nftables"].as_array().into_iter().flatten() {
            let rule = &item["rule"];
            let Some(comment) = rule["comment"].as_str() else {
                continue;
            };
            let packets = rule["expr"]
                .as_array()
                .into_iter()
                .flatten()
                .find_map(|e| e["counter"]["packets"].as_u64())
                .unwrap_or(0);
            out.insert(comment.to_owned(), packets);
        }
        out
    }

    fn counters(&self) -> Counters {
        let high = self.nft_counters(&self.high);
        let low = self.nft_counters(&self.low);
        let tbf = run(Command::new("tc").args([
            "-n",
            &self.low,
            "-s",
            "-j",
            "qdisc",
            "show",
            "dev",
            &self.low_dev,
        ]))
        .expect("tc -s qdisc");
        let tbf: Value = serde_json::from_str(&tbf).expect("tc -j output is JSON");
        let tbf = tbf
            .as_array()
            .and_then(|a| a.iter().find(|q| q["kind"] == "tbf"))
            .cloned()
            .unwrap_or_default();
        let snmp = run(in_ns(&self.high, "cat").arg("/proc/net/snmp")).expect("snmp");
        let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
        let rcvbuf_errors = (udp.len() == 2)
            .then(|| {
                let names = udp[0].split_whitespace();
                let values = udp[1].split_whitespace();
                names
                    .zip(values)
                    .find(|(n, _)| *n == "RcvbufErrors")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .flatten()
            .unwrap_or(0);
        let get = |m: &HashMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        Counters {
            burst: get(&high, "burst"),
            random: get(&high, "random"),
            passed: get(&high, "passed"),
            high_egress_dropped: get(&high, "high-egress"),
            low_ingress_dropped: get(&low, "low-ingress"),
            tbf_sent: tbf["packets"].as_u64().unwrap_or(0),
            tbf_dropped: tbf["drops"].as_u64().unwrap_or(0),
            rcvbuf_errors,
        }
    }

    /// How many of `arrivals` data datagrams the burst rule drops. The kernel's `numgen inc`
    /// counter yields 1 for the first packet (some versions 0); both give this within 1.
    fn expected_burst(&self, arrivals: u64) -> u64 {
        let Loss { every, burst, .. } = self.loss;
        (arrivals / every) * burst + (arrivals % every).min(burst)
    }
}

/// A `gapferry-recv listen` running inside a namespace; killed on drop.
struct Receiver {
    child: Option<Child>,
    out: PathBuf,
    log: PathBuf,
}

impl Receiver {
    fn start(ns: &str, addr: &str, port: u16, out: &Path) -> Receiver {
        let log = out.with_extension("log");
        let child = in_ns(ns, binary("gapferry-recv"))
            .args([
                "listen",
                "--bind",
                &format!("{addr}:{port}"),
                "--out",
                out.to_str().unwrap(),
                "--session-timeout",
                "10",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start gapferry-recv");
        let mut rx = Receiver {
            child: Some(child),
            out: out.to_path_buf(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = rx.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("gapferry-recv exited early ({status}):\n{}", rx.log_text());
            }
            let bound = run(in_ns(ns, "ss").args(["-Huan", &format!("sport = :{port}")]))
                .unwrap_or_default();
            if bound.contains(&format!(":{port}")) {
                return rx;
            }
            assert!(
                Instant::now() < deadline,
                "gapferry-recv never bound {addr}:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn records(&self) -> Vec<Value> {
        read_records(&self.out)
    }

    /// Waits until at least `n` records exist or `timeout` passes.
    fn wait_records(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let r = self.records();
            if r.len() >= n || Instant::now() > deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGTERM, then waits for a clean exit; returns the receiver's last log line.
    fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "gapferry-recv did not stop on SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log_text();
        assert!(status.success(), "gapferry-recv exited {status}:\n{log}");
        log.lines()
            .rev()
            .find(|l| l.contains("stopped"))
            .unwrap_or("")
            .trim()
            .to_owned()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `gapferry-send file <files> --to <to>` inside `ns`; returns the datagrams it sent.
fn send_from(ns: &str, files: &[PathBuf], to: &str, extra: &[&str]) -> u64 {
    let out = in_ns(ns, binary("gapferry-send"))
        .arg("file")
        .args(files)
        .args(["--to", to])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run gapferry-send");
    let log = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "gapferry-send exited {}:\n{log}",
        out.status
    );
    log_number(&log, "datagrams").unwrap_or(0)
}

fn send_data(link: &Link, files: &[PathBuf]) -> u64 {
    send_from(
        &link.low,
        files,
        &format!("{HIGH_ADDR}:{PORT}"),
        &["--rate", RATE, "--repair", REPAIR, "--passes", PASSES],
    )
}

/// Proves nothing flows from the high side to the low side: a receiver listens on the low
/// side and a sender on the high side sends to it (its MAC known, so frames really leave).
fn assert_one_way(link: &Link, scratch: &Path) {
    let before = link.counters();
    let out = scratch.join("reverse-probe");
    let rx = Receiver::start(&link.low, LOW_ADDR, PROBE_PORT, &out);
    let file = scratch.join("probe.bin");
    random_file(&file, 100_000, 99);
    let sent = send_from(
        &link.high,
        std::slice::from_ref(&file),
        &format!("{LOW_ADDR}:{PROBE_PORT}"),
        &["--rate", "100M"],
    );
    std::thread::sleep(Duration::from_millis(1500));
    let stopped = rx.stop();
    let after = link.counters();
    let records = read_records(&out);
    assert!(
        records.is_empty(),
        "the low side received from the high side: {records:#?}"
    );
    assert!(
        std::fs::read_dir(out.join("files")).map_or(true, |mut d| d.next().is_none()),
        "a file crossed from high to low"
    );
    assert_eq!(
        log_number(&stopped, "datagrams"),
        Some(0),
        "the low-side receiver saw datagrams: {stopped}"
    );
    let egress = after.high_egress_dropped - before.high_egress_dropped;
    assert!(sent > 0, "the reverse probe sent nothing");
    // The sender hands runs of datagrams to the kernel as one GSO packet, which the
    // egress filter sees (and drops) as one frame: at least one frame per 64 datagrams.
    assert!(
        egress > 0 && egress >= sent.div_ceil(64),
        "the high side's egress filter dropped {egress} frames of the probe's {sent} datagrams"
    );
    assert_eq!(
        after.low_ingress_dropped, 0,
        "frames from the high side reached the low side's veth"
    );
    println!(
        "one-way: the high side sent {sent} probe datagrams to the low side, {egress} frames \
         dropped at its egress, 0 reached the low side"
    );
}

fn report_loss(what: &str, link: &Link, c: &Counters, sent: u64) {
    let arrived = c.arrived();
    println!(
        "{what}: sender datagrams {sent}, tbf sent {} dropped {}, arrived {arrived}, \
         burst-dropped {} ({:.2} %), random-dropped {} ({:.2} % of the rest), total loss {:.2} %, \
         passed {}, receiver socket overflows {}",
        c.tbf_sent,
        c.tbf_dropped,
        c.burst,
        100.0 * c.burst as f64 / arrived.max(1) as f64,
        c.random,
        100.0 * c.random as f64 / (arrived - c.burst).max(1) as f64,
        100.0 * (sent.saturating_sub(c.passed)) as f64 / sent.max(1) as f64,
        c.passed,
        c.rcvbuf_errors,
    );
    assert!(c.dropped() > 0, "{what}: nftables dropped nothing");
    let expected = link.expected_burst(arrived);
    assert!(
        c.burst.abs_diff(expected) <= 1,
        "{what}: the burst rule dropped {} of {arrived}, expected {expected}",
        c.burst
    );
    let share = c.random as f64 / (arrived - c.burst).max(1) as f64;
    let p = link.loss.random_pct as f64 / 100.0;
    assert!(
        (p * 0.6..=p * 1.5).contains(&share),
        "{what}: random loss {:.2} % is far from {} %",
        share * 100.0,
        link.loss.random_pct
    );
    assert!(
        arrived + c.tbf_dropped <= sent,
        "{what}: more datagrams arrived than were sent"
    );
}

/// Only our sender talks to the data port: the receiver must refuse none of its datagrams
/// (when its summary line says how many it refused).
fn assert_no_rejections(what: &str, stopped: &str) {
    if let Some(n) = log_number(stopped, "rejected") {
        assert_eq!(n, 0, "{what}: the receiver refused datagrams: {stopped}");
    }
}

#[test]
fn files_cross_a_real_one_way_link_byte_identical_under_bursty_loss() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(link) = require(Link::create(Loss {
        every: 10_000,
        burst: 300,
        random_pct: 3,
        burst_range: None,
    })) else {
        return;
    };
    let scratch = tempfile::tempdir().unwrap();
    assert_one_way(&link, scratch.path());

    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let files = [
        ("empty", 0),
        ("one-byte", 1),
        ("event.json", 10_000),
        ("medium.bin", 1 << 20),
        ("big.bin", 32 << 20),
    ];
    let mut paths = Vec::new();
    for (i, (name, size)) in files.iter().enumerate() {
        let p = src.join(name);
        if name.ends_with(".json") {
            json_file(&p, *size, i as u64);
        } else {
            random_file(&p, *size, 100 + i as u64);
        }
        paths.push(p);
    }
    let out = scratch.path().join("high");
    let rx = Receiver::start(&link.high, HIGH_ADDR, PORT, &out);
    let before = link.counters();
    let t = Instant::now();
    let sent = send_data(&link, &paths);
    let send_time = t.elapsed();
    let records = rx.wait_records(files.len(), Duration::from_secs(60));
    let delivery_time = t.elapsed();
    // A moment for anything that should not be there (a duplicate, a late failure).
    std::thread::sleep(Duration::from_secs(3));
    let stopped = rx.stop();
    let records_after = read_records(&out);
    let after = link.counters();
    let c = Counters {
        burst: after.burst - before.burst,
        random: after.random - before.random,
        passed: after.passed - before.passed,
        ..after
    };
    println!(
        "link: sent {sent} datagrams in {send_time:.2?}, all records after {delivery_time:.2?}; \
         receiver: {stopped}"
    );
    report_loss("link", &link, &c, sent);
    assert_no_rejections("link", &stopped);
    assert_eq!(records.len(), records_after.len(), "{records_after:#?}");
    let delivered = with_outcome(&records_after, "delivered");
    assert_eq!(
        delivered.len(),
        files.len(),
        "every file must be delivered: {records_after:#?}"
    );
    let names: HashSet<&str> = delivered
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    for (name, size) in files {
        assert!(
            names.contains(name),
            "{name} not delivered: {records_after:#?}"
        );
        let got = std::fs::read(out.join("files").join(name)).unwrap();
        let want = std::fs::read(src.join(name)).unwrap();
        assert_eq!(got.len(), size, "{name}: size");
        assert!(
            got == want,
            "{name}: delivered bytes differ from the source"
        );
    }
    assert!(
        c.burst >= 300,
        "the first burst must have hit the first pass of the small files"
    );
    println!("link test took {:.1?}", started.elapsed());
}

/// The issue's set of objects in one `gapferry-send file` command: 0 B, 1 B, 700 KB,
/// 96 MiB, 200 objects of 1-20 KB, a real MISP event and a real STIX bundle.
fn edge_inputs(src: &Path) -> Vec<PathBuf> {
    let realdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata");
    let mut paths = Vec::new();
    for (name, size) in [
        ("empty.bin", 0),
        ("one.bin", 1),
        ("mid.bin", 700_000),
        ("big.bin", 96 << 20),
    ] {
        let p = src.join(name);
        random_file(&p, size, size as u64);
        paths.push(p);
    }
    let small = src.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..200u64 {
        let p = small.join(format!("s{i:03}.json"));
        json_file(&p, rng.random_range(1_000..=20_000), i);
    }
    paths.push(small);
    for real in [
        "misp-events/pymisp-tests/57c4445b-c548-4654-af0b-4be3950d210f.json",
        "stix21/oasis-examples/indicator-for-c2-ip-address.json",
    ] {
        let p = realdata.join(real);
        assert!(p.is_file(), "real data missing: {}", p.display());
        paths.push(p);
    }
    paths
}

const EDGE_ARGS: [&str; 4] = ["--rate", "900M", "--repair", "15"];

#[test]
fn a_burst_of_64_at_the_first_middle_or_last_datagrams_costs_no_object() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = prerequisites() {
        require::<()>(Err(e));
        return;
    }
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let paths = edge_inputs(&src);
    // How many datagrams the session has: the same command into a capture (its pacing
    // clock is virtual, so only the count of heartbeats may differ by one or two).
    let pcap = scratch.path().join("count.pcap");
    let out = Command::new(binary("gapferry-send"))
        .arg("file")
        .args(&paths)
        .args(["--to", &format!("{HIGH_ADDR}:{PORT}")])
        .args(EDGE_ARGS)
        .arg("--pcap-out")
        .arg(&pcap)
        .output()
        .unwrap();
    let log = strip_ansi(&String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{log}");
    let n = log_number(&log, "datagrams").expect("the sender names its datagram count");
    for (what, first) in [("first", 0), ("middle", n / 2), ("last", n - 64)] {
        let range = (first, first + 63 + 4 * u64::from(what == "last"));
        let Some(link) = require(Link::create(Loss {
            every: 0,
            burst: 0,
            random_pct: 2,
            burst_range: Some(range),
        })) else {
            return;
        };
        let out = scratch.path().join(format!("high-{what}"));
        let rx = Receiver::start(&link.high, HIGH_ADDR, PORT, &out);
        let sent = send_from(
            &link.low,
            &paths,
            &format!("{HIGH_ADDR}:{PORT}"),
            &EDGE_ARGS,
        );
        let records = rx.wait_records(206, Duration::from_secs(60));
        std::thread::sleep(Duration::from_secs(3));
        let stopped = rx.stop();
        let records_after = read_records(&out);
        let c = link.counters();
        println!(
            "burst at the {what} datagrams ({range:?}): sent {sent} (capture: {n}), arrived {}, \
             burst-dropped {}, random-dropped {}; receiver: {stopped}",
            c.arrived(),
            c.burst,
            c.random
        );
        assert!(
            (60..=68).contains(&c.burst),
            "{what}: the burst rule dropped {}",
            c.burst
        );
        if what == "last" {
            assert!(
                c.arrived() <= range.0 + 64 + 4,
                "{what}: the burst did not reach the last datagrams ({} arrived)",
                c.arrived()
            );
        }
        assert_eq!(records.len(), records_after.len(), "{records_after:#?}");
        let delivered = with_outcome(&records_after, "delivered");
        assert_eq!(
            delivered.len(),
            206,
            "burst at the {what} datagrams: {:#?}",
            records_after
                .iter()
                .filter(|r| r["outcome"] != "delivered")
                .collect::<Vec<_>>()
        );
        for r in &delivered {
            let path = Path::new(r["path"].as_str().expect("a delivered record has a path"));
            let bytes = std::fs::read(path).unwrap();
            assert_eq!(
                blake3::hash(&bytes).to_hex().as_str(),
                r["blake3"].as_str().unwrap(),
                "{what}: {} differs from what was sent",
                path.display()
            );
        }
        for name in [
            "empty.bin",
            "one.bin",
            "mid.bin",
            "big.bin",
            "s000.json",
            "s199.json",
        ] {
            let got = out.join("files").join(name);
            let want = if name.starts_with('s') {
                src.join("small").join(name)
            } else {
                src.join(name)
            };
            assert!(
                std::fs::read(&got).ok() == std::fs::read(&want).ok(),
                "{what}: {name} not delivered byte-identical"
            );
        }
    }
}

fn soak_duration() -> Duration {
    let secs = std::env::var("GAPFERRY_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(if ci() { 120 } else { 20 });
    Duration::from_secs(secs)
}

/// Compares newly delivered files with their sources and deletes both, so a long soak does
/// not fill the disk; sources of failed or lost objects are dropped too.
fn check_new_records(
    records: &[Value],
    seen: &mut usize,
    pending: &mut HashMap<String, PathBuf>,
    files_dir: &Path,
    verified: &mut usize,
) {
    for r in &records[*seen..] {
        let name = r["name"].as_str().map(str::to_owned);
        if r["outcome"] == "delivered" {
            let name = name.expect("a delivered record names its object");
            let src = pending
                .remove(&name)
                .unwrap_or_else(|| panic!("{name} delivered but never sent, or twice: {r}"));
            let dst = files_dir.join(&name);
            let got = std::fs::read(&dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
            let want = std::fs::read(&src).unwrap();
            assert!(
                got == want,
                "{name}: delivered {} bytes differ from the {}-byte source",
                got.len(),
                want.len()
            );
            *verified += 1;
            let _ = std::fs::remove_file(&dst);
            let _ = std::fs::remove_file(&src);
        } else if let Some(src) = name.and_then(|n| pending.remove(&n)) {
            let _ = std::fs::remove_file(src);
        }
    }
    *seen = records.len();
}

#[test]
fn soak_mixed_objects_through_a_lossy_one_way_link_are_all_accounted_for() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    let Some(link) = require(Link::create(Loss {
        every: 20_000,
        burst: 300,
        random_pct: 3,
        burst_range: None,
    })) else {
        return;
    };
    let duration = soak_duration();
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("high");
    let files_dir = out.join("files");
    let rx = Receiver::start(&link.high, HIGH_ADDR, PORT, &out);
    let before = link.counters();

    let mut sent_objects = 0usize;
    let mut sent_datagrams = 0u64;
    let mut sent_bytes = 0u64;
    let mut names = HashSet::new();
    let mut pending: HashMap<String, PathBuf> = HashMap::new();
    let (mut seen, mut verified) = (0usize, 0usize);
    let deadline = Instant::now() + duration;
    let mut batch = 0u64;
    let mut last_start: Option<Instant> = None;
    while Instant::now() < deadline {
        let mut rng = StdRng::seed_from_u64(0x50a4_0000 + batch);
        let dir = scratch.path().join("src").join(format!("b{batch:05}"));
        let mut paths = Vec::new();
        let smalls = rng.random_range(2..=5);
        let bigs = rng.random_range(1..=2);
        for j in 0..smalls + bigs {
            let (name, size) = if j < smalls {
                (
                    format!("b{batch:05}-{j}.json"),
                    rng.random_range(300..=20_000),
                )
            } else {
                (
                    format!("b{batch:05}-{j}.bin"),
                    rng.random_range(1 << 20..=8 << 20),
                )
            };
            let p = dir.join(&name);
            if j < smalls {
                json_file(&p, size, batch * 16 + j);
            } else {
                random_file(&p, size, batch * 16 + j);
            }
            sent_bytes += size as u64;
            assert!(names.insert(name.clone()));
            pending.insert(name, p.clone());
            paths.push(p);
        }
        if let Some(wait) = last_start.and_then(|t| MIN_SESSION_INTERVAL.checked_sub(t.elapsed())) {
            std::thread::sleep(wait);
        }
        last_start = Some(Instant::now());
        sent_datagrams += send_data(&link, &paths);
        sent_objects += paths.len();
        batch += 1;
        check_new_records(
            &rx.records(),
            &mut seen,
            &mut pending,
            &files_dir,
            &mut verified,
        );
    }
    let send_phase = started.elapsed();
    let records = rx.wait_records(sent_objects, Duration::from_secs(30));
    // Long enough for the receiver's grace time: a late or duplicate record would show.
    std::thread::sleep(Duration::from_secs(3));
    let stopped = rx.stop();
    let records = {
        let after = read_records(&out);
        assert!(after.len() >= records.len());
        after
    };
    check_new_records(&records, &mut seen, &mut pending, &files_dir, &mut verified);

    let after = link.counters();
    let c = Counters {
        burst: after.burst - before.burst,
        random: after.random - before.random,
        passed: after.passed - before.passed,
        ..after
    };
    let delivered = with_outcome(&records, "delivered").len();
    let failed = with_outcome(&records, "failed");
    let lost = with_outcome(&records, "lost");
    println!(
        "soak: {batch} sender runs, {sent_objects} objects, {:.1} MiB, {sent_datagrams} \
         datagrams in {send_phase:.1?}; delivered {delivered}, failed {}, lost {}; \
         receiver: {stopped}",
        sent_bytes as f64 / (1 << 20) as f64,
        failed.len(),
        lost.len()
    );
    for r in failed.iter().chain(&lost) {
        println!("  not delivered: {r}");
    }
    report_loss("soak", &link, &c, sent_datagrams);
    assert_no_rejections("soak", &stopped);

    let ids: HashSet<(String, u64)> = records
        .iter()
        .map(|r| {
            (
                r["session"].as_str().unwrap_or("").to_owned(),
                r["object"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    assert_eq!(ids.len(), records.len(), "an object has two records");
    assert_eq!(
        delivered + failed.len() + lost.len(),
        sent_objects,
        "delivered + failed + lost must equal the objects sent; records: {}, \
         without a record: {:?}",
        records.len(),
        pending.keys().collect::<Vec<_>>()
    );
    assert_eq!(records.len(), sent_objects, "records of other outcomes");
    assert_eq!(verified, delivered);
    for r in &records {
        if let Some(name) = r["name"].as_str() {
            assert!(
                names.contains(name),
                "a record for an object never sent: {r}"
            );
        }
    }
    // Failures are counted, not hidden; but a link this lossy with this much repair and two
    // passes should deliver nearly everything.
    assert!(
        delivered * 100 >= sent_objects * 98,
        "only {delivered} of {sent_objects} delivered"
    );
    println!("soak test took {:.1?}", started.elapsed());
}
