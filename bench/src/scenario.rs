//! The end-to-end scenarios and one run of one of them: data, receiver, optional lossy
//! relay, sender, then the outcome as the receiver's records and the kernel tell it.

use crate::data;
use crate::procs::{self, Exit, Proc};
use crate::records::{log_field, RecordTail};
use crate::relay::{Loss, Relay, RelayReport};
use anyhow::{bail, Result};
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

/// How long a generated payload rests before its first run: past
/// `gapferry_sender::prepare::SETTLE`, so the sender reads it once, as it would a file
/// that waited in an outbox.
const SENDER_SETTLE: Duration = Duration::from_millis(2_500);

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What a scenario sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Payload {
    /// One file of random (incompressible) bytes.
    Random {
        /// Its size.
        bytes: u64,
    },
    /// A directory of MISP-event-like JSON files.
    Json {
        /// How many files.
        count: usize,
        /// Bytes of each.
        size: usize,
    },
}

/// The `rate` of the scenarios that run at the one pair rate (`--pair-rate`).
pub const PAIR_RATE: &str = "pair";
/// The `rate` of a scenario whose each lane runs at half the pair rate (`lanes2`).
pub const HALF_PAIR_RATE: &str = "half-pair";

/// The default `--pair-rate`: what the loopback pair holds on the 2-core VM (bench/README.md).
pub const DEFAULT_PAIR_RATE: &str = "2500M";

/// "4G", "800M", "100k" or plain bits per second.
pub fn parse_bits(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, ' '),
    };
    let scale: u64 = match unit {
        'k' | 'K' => 1_000,
        'M' => 1_000_000,
        'G' => 1_000_000_000,
        ' ' => 1,
        _ => return Err(format!("unknown unit {unit:?}: use k, M or G")),
    };
    let n: f64 = digits.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n.is_nan() || n <= 0.0 || n.is_infinite() {
        return Err(format!("{s:?}: the rate must be above zero"));
    }
    Ok((n * scale as f64) as u64)
}

impl Payload {
    /// Bytes of all files.
    pub fn bytes(&self) -> u64 {
        match *self {
            Payload::Random { bytes } => bytes,
            Payload::Json { count, size } => (count * size) as u64,
        }
    }

    /// Number of objects.
    pub fn objects(&self) -> u64 {
        match *self {
            Payload::Random { .. } => 1,
            Payload::Json { count, .. } => count as u64,
        }
    }

    /// A short description for the table.
    pub fn describe(&self) -> String {
        match *self {
            Payload::Random { bytes } => format!("{} random", human_size(bytes)),
            Payload::Json { count, size } => format!("{count} × {} B JSON", size),
        }
    }
}

/// `bytes` as "1 GiB" / "256 MiB" / "10 KB".
pub fn human_size(bytes: u64) -> String {
    if bytes >= GIB && bytes.is_multiple_of(GIB) {
        format!("{} GiB", bytes / GIB)
    } else if bytes >= MIB && bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{bytes} B")
    }
}

/// The sender's `--rate` in the scenarios with a lossy relay.
pub const LOSSY_RATE: &str = "2G";

/// One end-to-end scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it shows.
    pub about: &'static str,
    /// What is sent.
    pub payload: Payload,
    /// The sender's `--rate`, or [`PAIR_RATE`] for the pair rate (`--pair-rate`).
    pub rate: &'static str,
    /// The sender's `--repair`.
    pub repair: u32,
    /// The sender's `--mtu`.
    pub mtu: u32,
    /// The sender's `--passes`.
    pub passes: u8,
    /// The receiver's `--recv-buffer`, when not its default.
    pub recv_buffer: Option<usize>,
    /// Loss injected by a relay between the two, if any.
    pub loss: Option<Loss>,
    /// The sender's `--kind`, when given (`None`: the sender's default, detection from content).
    pub kind: Option<&'static str>,
    /// No receiver: the sender sends towards a socket nobody reads ([`crate::alone`]).
    pub sender_alone: bool,
    /// No sender: the receiver is fed by a replayer of pre-encoded datagrams ([`crate::alone`]).
    pub receiver_alone: bool,
    /// Lanes: the sender gets one `--to` per lane (each at `rate`), the receiver one `--bind`.
    pub lanes: u16,
    /// `--key` on both sides (and on the replayer's encoding).
    pub keyed: bool,
    /// MISP events already in the receiver's feed before the run ([`crate::feed`]).
    pub feed_events: usize,
    /// Not gapferry: udpcast one way at the pair rate ([`crate::peer`]).
    pub peer: bool,
    /// A receiver-alone sweep: the replayer's pace rises through
    /// [`crate::alone::CEILING_RATES`] until a run does not deliver ([`crate::alone`]).
    pub ceiling: bool,
}

/// Every scenario, at full size or (`quick`) at sizes that run in seconds.
pub fn all(quick: bool) -> Vec<Scenario> {
    let q = |full: u64, small: u64| if quick { small } else { full };
    let base = Scenario {
        name: "",
        about: "",
        payload: Payload::Random { bytes: 0 },
        rate: PAIR_RATE,
        repair: 10,
        mtu: 1500,
        passes: 1,
        recv_buffer: None,
        loss: None,
        kind: Some("file"),
        sender_alone: false,
        receiver_alone: false,
        lanes: 1,
        keyed: false,
        feed_events: 0,
        peer: false,
        ceiling: false,
    };
    let misp_events = if quick { 1_000 } else { 10_000 };
    let bulk = Scenario {
        name: "bulk",
        about: "one incompressible file, no loss, at the pair rate",
        payload: Payload::Random {
            bytes: q(GIB, 128 * MIB),
        },
        ..base.clone()
    };
    let misp = Scenario {
        name: "misp",
        about: "10 KB JSON objects as MISP events (--kind auto): delivered into the MISP feed",
        payload: Payload::Json {
            count: misp_events,
            size: 10_000,
        },
        kind: None,
        ..base.clone()
    };
    let sender_alone = Scenario {
        name: "sender-alone",
        about: "the sender alone, towards a socket nobody reads, pacer far above the machine",
        payload: bulk.payload,
        rate: crate::alone::SENDER_ALONE_RATE,
        sender_alone: true,
        ..base.clone()
    };
    let receiver_alone = Scenario {
        name: "receiver-alone",
        about: "the receiver alone, fed from memory by a replayer of pre-encoded datagrams (UDP GSO), at --replay-rate",
        payload: bulk.payload,
        receiver_alone: true,
        ..base.clone()
    };
    vec![
        bulk.clone(),
        Scenario {
            name: "bulk-keyed",
            about: "bulk with --key on both sides (AES-256-GCM-SIV tag on every datagram)",
            keyed: true,
            ..bulk.clone()
        },
        sender_alone.clone(),
        Scenario {
            name: "sender-alone-keyed",
            about: "the sender alone with --key",
            keyed: true,
            ..sender_alone
        },
        receiver_alone.clone(),
        Scenario {
            name: "receiver-alone-keyed",
            about: "the receiver alone with --key, fed datagrams encoded with the key",
            keyed: true,
            ..receiver_alone
        },
        Scenario {
            name: "receiver-ceiling",
            about: "the receiver alone at rising replay rates (1G to 10G), 256 MiB each: the highest that delivers",
            payload: Payload::Random {
                bytes: q(256 * MIB, 64 * MIB),
            },
            ceiling: true,
            ..receiver_alone.clone()
        },
        misp.clone(),
        Scenario {
            name: "misp-100k",
            about: "the same MISP events into a feed already holding 100 000 events (10 000 with --quick)",
            feed_events: if quick { 10_000 } else { 100_000 },
            ..misp
        },
        Scenario {
            name: "small",
            about: "many 10 KB MISP-like JSON objects as plain files",
            payload: Payload::Json {
                count: 1000,
                size: 10_000,
            },
            ..base.clone()
        },
        Scenario {
            name: "big",
            about: "one 4 GiB object at the pair rate: peak memory of both sides",
            payload: Payload::Random {
                bytes: q(4 * GIB, GIB),
            },
            ..base.clone()
        },
        Scenario {
            name: "udpcast",
            about: "the Debian peer: udp-sender --async --fec to udp-receiver, one way, at the pair rate",
            peer: true,
            ..bulk.clone()
        },
        Scenario {
            name: "loss2",
            about: "2 % random loss in a relay",
            loss: Some(Loss::Random { p: 0.02, seed: 2 }),
            // Sender, relay and receiver share two cores here: above this the receiver
            // cannot keep up with solving and drops (on a real link it has its own host).
            rate: LOSSY_RATE,
            ..bulk.clone()
        },
        Scenario {
            name: "loss5",
            about: "5 % random loss in a relay",
            loss: Some(Loss::Random { p: 0.05, seed: 5 }),
            // Sender, relay and receiver share two cores here: above this the receiver
            // cannot keep up with solving and drops (on a real link it has its own host).
            rate: LOSSY_RATE,
            ..bulk
        },
        Scenario {
            name: "burst",
            about: "3 000 consecutive datagrams lost; --passes 2 sends fresh repair symbols",
            payload: Payload::Random {
                bytes: q(256 * MIB, 64 * MIB),
            },
            passes: 2,
            loss: Some(Loss::Burst {
                start: 20_000,
                len: 3_000,
            }),
            ..base.clone()
        },
        Scenario {
            name: "lanes2",
            about: "the bulk file over 2 lanes on loopback (2 --to, 2 --bind), each lane at half the pair rate",
            payload: Payload::Random {
                bytes: q(GIB, 128 * MIB),
            },
            rate: HALF_PAIR_RATE,
            lanes: 2,
            ..base.clone()
        },
        Scenario {
            name: "defaultbuf",
            about: "receiver with a kernel-default 212 992-byte socket buffer at 800 Mbit/s",
            payload: Payload::Random {
                bytes: q(256 * MIB, 64 * MIB),
            },
            rate: "800M",
            recv_buffer: Some(212_992),
            ..base
        },
    ]
}

/// Paths and options shared by every run.
pub struct Env {
    /// `gapferry-send`.
    pub send_bin: PathBuf,
    /// `gapferry-recv`.
    pub recv_bin: PathBuf,
    /// Scratch directory: data, outputs, logs.
    pub work: PathBuf,
    /// When set, both processes run under `perf record -g`, data files written here.
    pub perf_dir: Option<PathBuf>,
    /// `perf record --call-graph` mode when profiling.
    pub perf_call_graph: String,
    /// Extra arguments for every `gapferry-send file` (e.g. `--threads 1`).
    pub sender_args: Vec<String>,
    /// Extra arguments for every `gapferry-recv listen` (e.g. `--threads 0`).
    pub receiver_args: Vec<String>,
    /// The replayer's pace in the receiver-alone row, bits per second of IP packets.
    pub replay_rate_bps: u64,
    /// The sender's `--rate` of every scenario at [`PAIR_RATE`] (bulk, keyed, big, misp, small, udpcast).
    pub pair_rate: String,
    /// Delete each run's outputs right after it (otherwise runs with many files keep
    /// theirs until the table is done, so deleting them cannot slow later runs).
    pub delete_each_run: bool,
    cache: HashMap<Payload, PathBuf>,
    key: Option<PathBuf>,
    seed_feed: Option<crate::feed::SeedFeedChild>,
    trash: Vec<PathBuf>,
}

impl Env {
    /// An environment using the two binaries and scratch directory `work`.
    pub fn new(send_bin: PathBuf, recv_bin: PathBuf, work: PathBuf) -> Self {
        Env {
            send_bin,
            recv_bin,
            work,
            perf_dir: None,
            perf_call_graph: "fp".into(),
            sender_args: Vec::new(),
            receiver_args: Vec::new(),
            replay_rate_bps: crate::alone::RECEIVER_ALONE_RATE_BPS,
            pair_rate: DEFAULT_PAIR_RATE.into(),
            delete_each_run: false,
            cache: HashMap::new(),
            key: None,
            seed_feed: None,
            trash: Vec::new(),
        }
    }

    /// The sender's `--rate` for `s`.
    pub fn rate(&self, s: &Scenario) -> String {
        match s.rate {
            PAIR_RATE => self.pair_rate.clone(),
            // Each lane at half the pair rate: the lanes together carry the pair rate.
            HALF_PAIR_RATE => match parse_bits(&self.pair_rate) {
                Ok(bps) if (bps / 2).is_multiple_of(1_000_000) => {
                    format!("{}M", bps / 2 / 1_000_000)
                }
                Ok(bps) => (bps / 2).to_string(),
                Err(_) => self.pair_rate.clone(),
            },
            other => other.into(),
        }
    }

    /// The pair rate in bits per second.
    pub fn pair_rate_bps(&self) -> Result<u64> {
        parse_bits(&self.pair_rate).map_err(|e| anyhow::anyhow!("--pair-rate: {e}"))
    }

    /// `--key FILE` for both sides when `s` is keyed (the key made once by `gapferry-send keygen`).
    pub fn key_args(&mut self, s: &Scenario) -> Result<Vec<std::ffi::OsString>> {
        if !s.keyed {
            return Ok(Vec::new());
        }
        if self.key.is_none() {
            let path = self.work.join("link.key");
            let _ = std::fs::remove_file(&path);
            let out = Command::new(&self.send_bin)
                .arg("keygen")
                .arg(&path)
                .output()?;
            if !out.status.success() {
                bail!(
                    "gapferry-send keygen failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            self.key = Some(path);
        }
        let key = self.key.as_ref().expect("made above");
        Ok(vec!["--key".into(), key.into()])
    }

    /// Gives `out` the feed of `s.feed_events` events already there (built once, then cloned).
    fn preload_feed(&mut self, s: &Scenario, out: &Path) -> Result<()> {
        if s.feed_events == 0 {
            return Ok(());
        }
        if self.seed_feed.as_ref().map(|f| f.events()) != Some(s.feed_events) {
            let dir = self
                .work
                .join("data")
                .join(format!("feed-{}", s.feed_events));
            let size = match s.payload {
                Payload::Json { size, .. } => size,
                Payload::Random { .. } => 10_000,
            };
            self.seed_feed = Some(crate::feed::SeedFeedChild::build(
                &dir,
                s.feed_events,
                size,
            )?);
        }
        let seed = self.seed_feed.as_ref().expect("built above");
        seed.clone_into(&out.join("misp"))
    }

    /// After a run of `s` writing into `out`: proves the seed feed untouched, then deletes
    /// `out` now (one big file: no churn) or at [`Env::empty_trash`] (many files).
    fn dispose(&mut self, s: &Scenario, out: PathBuf) -> Result<()> {
        let checked = match (&self.seed_feed, s.feed_events) {
            (Some(seed), n) if n > 0 => seed.check_untouched(),
            _ => Ok(()),
        };
        if s.payload.objects() > 1 && !self.delete_each_run {
            self.trash.push(out);
        } else {
            let _ = std::fs::remove_dir_all(&out);
        }
        checked
    }

    /// Deletes what runs left for the end of the table: outputs and data of many files.
    pub fn empty_trash(&mut self) {
        for p in self.trash.drain(..) {
            let _ = std::fs::remove_dir_all(&p);
        }
    }

    /// The file or directory holding `payload`, generated on first use.
    pub fn payload_path(&mut self, payload: Payload) -> Result<PathBuf> {
        if let Some(p) = self.cache.get(&payload) {
            return Ok(p.clone());
        }
        let dir = self.work.join("data");
        std::fs::create_dir_all(&dir)?;
        let t = Instant::now();
        let path = match payload {
            Payload::Random { bytes } => {
                let p = dir.join(format!("random-{bytes}.bin"));
                data::write_random_file(&p, bytes, bytes)?;
                p
            }
            Payload::Json { count, size } => {
                let p = dir.join(format!("json-{count}x{size}"));
                std::fs::create_dir_all(&p)?;
                for i in 0..count {
                    let doc = data::json_object(size, i as u64);
                    std::fs::write(p.join(format!("event-{i:05}.json")), doc)?;
                }
                p
            }
        };
        eprintln!(
            "  generated {} in {:.1} s",
            payload.describe(),
            t.elapsed().as_secs_f64()
        );
        // A file changed within the sender's SETTLE (2 s) of being opened is hashed in a
        // pass of its own before it is sent; files in an outbox are older than that.
        std::thread::sleep(SENDER_SETTLE);
        self.cache.insert(payload, path.clone());
        Ok(path)
    }

    /// Deletes generated data no remaining scenario needs: a file now, a directory of
    /// many files at [`Env::empty_trash`] (unless `delete_each_run`).
    pub fn drop_payload(&mut self, payload: Payload) {
        if let Some(p) = self.cache.remove(&payload) {
            if p.is_dir() && !self.delete_each_run {
                self.trash.push(p);
            } else {
                let _ = std::fs::remove_dir_all(&p).or_else(|_| std::fs::remove_file(&p));
            }
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunResult {
    /// Objects the scenario sends.
    pub objects: u64,
    /// File bytes the scenario sends.
    pub payload_bytes: u64,
    /// Objects delivered and verified.
    pub delivered: u64,
    /// Their bytes.
    pub delivered_bytes: u64,
    /// Objects failed or lost.
    pub not_delivered: u64,
    /// Seconds from the sender's start to the last delivery.
    pub elapsed: Option<f64>,
    /// The sender's exit record.
    pub sender: Exit,
    /// The receiver's exit record.
    pub receiver: Exit,
    /// Datagrams the sender says it sent.
    pub sent_datagrams: Option<u64>,
    /// UDP payload bytes the sender says it sent.
    pub sent_bytes: Option<u64>,
    /// Datagrams the receiver says it read from its socket.
    pub recv_datagrams: Option<u64>,
    /// Datagrams the receiver dropped because its assembler queue was full.
    pub queue_full: Option<u64>,
    /// System-wide UDP RcvbufErrors during the run.
    pub kernel_drops: Option<u64>,
    /// The receiver socket's own drop counter.
    pub socket_drops: Option<u64>,
    /// What the relay did, when there was one.
    pub relay: Option<RelayReport>,
    /// The first failure reasons.
    pub reasons: Vec<String>,
    /// CPU seconds of the replayer feeding the receiver-alone row.
    pub feeder_cpu_seconds: Option<f64>,
    /// What a receiver-ceiling sweep found: the rates it delivered at and where it stopped.
    pub ceiling: Option<String>,
}

impl RunResult {
    /// Delivered file bytes per second, in MB/s (10^6).
    pub fn goodput_mbs(&self) -> Option<f64> {
        self.elapsed
            .filter(|&e| e > 0.0)
            .map(|e| self.delivered_bytes as f64 / e / 1e6)
    }

    /// Whether every object was delivered.
    pub fn complete(&self) -> bool {
        self.delivered == self.objects
    }
}

fn free_port() -> Result<u16> {
    Ok(UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `bin` as a child, under `perf record` when profiling, logging at info level.
pub(crate) fn command(env: &Env, bin: &Path, perf_name: &str) -> Command {
    let mut cmd = match &env.perf_dir {
        Some(dir) => {
            let mut c = Command::new("perf");
            c.args(["record", "--call-graph", &env.perf_call_graph])
                .args(["-F", "999", "-q", "-o"])
                .arg(dir.join(format!("{perf_name}.perf.data")))
                .arg("--")
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.env("GAPFERRY_LOG", "info").env("NO_COLOR", "1");
    cmd
}

/// Waits until `log` holds `marker`, failing if `proc` exits or `timeout` passes.
pub(crate) fn wait_for_line(
    log: &Path,
    marker: &str,
    proc: &mut Proc,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(marker) {
            return Ok(());
        }
        if proc.try_exit()?.is_some() {
            bail!("the receiver exited before listening:\n{text}");
        }
        if Instant::now() > deadline {
            bail!("the receiver did not log {marker:?} within {timeout:?}:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How long a run may take before it is stopped: generous, since 20 MB/s or 50 objects/s
/// would be a disaster worth seeing rather than a hang (10 000 MISP events: 200 s more).
pub fn run_budget(bytes: u64, objects: u64) -> Duration {
    Duration::from_secs(60 + bytes / 20_000_000 + objects / 50)
}

/// Runs `s` once (run number `run`, for file names).
pub fn run_once(env: &mut Env, s: &Scenario, run: usize) -> Result<RunResult> {
    if s.sender_alone {
        return crate::alone::run_sender(env, s, run);
    }
    if s.receiver_alone {
        return crate::alone::run_receiver(env, s, run);
    }
    if s.peer {
        return crate::peer::run(env, s, run);
    }
    let input = env.payload_path(s.payload)?;
    let key = env.key_args(s)?;
    let tag = format!("{}-{run}", s.name);
    let out = env.work.join("out").join(&tag);
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    env.preload_feed(s, &out)?;
    let (send_log, recv_log) = (
        logs.join(format!("{tag}-send.log")),
        logs.join(format!("{tag}-recv.log")),
    );

    // Further lanes' ports are held while the first is chosen, so no two are the same.
    let held = (1..s.lanes.max(1))
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()?;
    let port = free_port()?;
    let mut ports = vec![port];
    for h in held {
        ports.push(h.local_addr()?.port());
    }
    let mut rcmd = command(env, &env.recv_bin, &format!("{tag}-recv"));
    rcmd.arg("listen");
    for p in &ports {
        rcmd.args(["--bind", &format!("127.0.0.1:{p}")]);
    }
    rcmd.arg("--out")
        .arg(&out)
        .args(["--session-timeout", "10"])
        .args(&key)
        .args(&env.receiver_args);
    if let Some(b) = s.recv_buffer {
        rcmd.args(["--recv-buffer", &b.to_string()]);
    }
    let mut receiver = Proc::spawn("gapferry-recv", rcmd, &recv_log)?;
    wait_for_line(
        &recv_log,
        "listening",
        &mut receiver,
        Duration::from_secs(20),
    )?;

    let recv_addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let relay = s.loss.map(|l| Relay::start(recv_addr, l)).transpose()?;
    let to = relay.as_ref().map_or(recv_addr, Relay::addr);

    let bytes = s.payload.bytes();
    let objects = s.payload.objects();
    let mut tail = RecordTail::new(out.join(".gapferry").join("records.jsonl"));
    let drops_before = procs::udp_rcvbuf_errors();

    let mut scmd = command(env, &env.send_bin, &format!("{tag}-send"));
    scmd.arg("file")
        .arg(&input)
        .args(["--to", &to.to_string(), "--rate", &env.rate(s)])
        .args(
            ports[1..]
                .iter()
                .flat_map(|p| ["--to".into(), format!("127.0.0.1:{p}")]),
        )
        .args(["--repair", &s.repair.to_string()])
        .args(["--mtu", &s.mtu.to_string()])
        .args(&key)
        // Not --quiet: the sender's closing summary (datagrams, bytes) is an info line.
        .args(["--passes", &s.passes.to_string()]);
    if let Some(kind) = s.kind {
        scmd.args(["--kind", kind]);
    }
    scmd.args(&env.sender_args);
    let t0_wall = SystemTime::now();
    let t0 = Instant::now();
    let mut sender = Proc::spawn("gapferry-send", scmd, &send_log)?;

    let budget = run_budget(bytes * s.passes as u64, objects);
    // Once the sender is done, wait while records keep coming; give up after `grace` without one.
    let grace = Duration::from_secs(15 + bytes / 200_000_000);
    let mut progress = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        tail.poll();
        if tail.resolved() != progress.0 {
            progress = (tail.resolved(), Instant::now());
        }
        let sent = sender.try_exit()?;
        if tail.resolved() >= objects && sent.is_some() {
            break;
        }
        if let Some(at) = sent.and_then(|e| e.at) {
            if at.max(progress.1).elapsed() > grace {
                eprintln!(
                    "  timeout: {} of {objects} objects resolved, none for {grace:?} after the sender exited",
                    tail.resolved()
                );
                break;
            }
        }
        if t0.elapsed() > budget {
            eprintln!("  timeout: the run exceeded {budget:?}");
            sender.signal(libc::SIGTERM);
            break;
        }
    }
    let sender_exit = sender.wait(Duration::from_secs(30))?;
    // Let the last datagrams in flight land before reading the drop counters.
    std::thread::sleep(Duration::from_millis(200));
    let socket_drops = ports
        .iter()
        .map(|&p| procs::udp_socket_drops(p))
        .sum::<Option<u64>>();
    let drops_after = procs::udp_rcvbuf_errors();
    let hwm = receiver.vm_hwm();
    receiver.signal(libc::SIGTERM);
    let mut receiver_exit = receiver.wait(Duration::from_secs(120))?;
    if let Some(h) = hwm {
        receiver_exit.max_rss = receiver_exit.max_rss.max(h);
    }
    let relay = relay.map(Relay::stop).transpose()?;
    tail.poll();

    let send_text = std::fs::read_to_string(&send_log).unwrap_or_default();
    let recv_text = std::fs::read_to_string(&recv_log).unwrap_or_default();
    if sender_exit.code != 0 {
        eprintln!(
            "  the sender exited with {}:\n{send_text}",
            sender_exit.code
        );
    }
    let result = RunResult {
        objects,
        payload_bytes: bytes,
        delivered: tail.delivered,
        delivered_bytes: tail.delivered_bytes,
        not_delivered: objects.saturating_sub(tail.delivered),
        elapsed: tail
            .last_delivered
            .and_then(|t| t.duration_since(t0_wall).ok())
            .map(|d| d.as_secs_f64()),
        sender: sender_exit,
        receiver: receiver_exit,
        sent_datagrams: log_field(&send_text, " done", "datagrams"),
        sent_bytes: log_field(&send_text, " done", "bytes"),
        recv_datagrams: log_field(&recv_text, " stopped", "datagrams"),
        queue_full: log_field(&recv_text, " stopped", "queue_full"),
        kernel_drops: drops_before
            .zip(drops_after)
            .map(|(a, b)| b.saturating_sub(a)),
        socket_drops,
        relay,
        reasons: tail.reasons.clone(),
        feeder_cpu_seconds: None,
        ceiling: None,
    };
    env.dispose(s, out)?;
    Ok(result)
}

#[cfg(test)]
mod settle_tests {
    #[test]
    fn payloads_rest_past_the_senders_settle_time() {
        assert!(super::SENDER_SETTLE > gapferry_sender::prepare::SETTLE);
    }
}
