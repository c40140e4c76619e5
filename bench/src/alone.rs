//! The one-sided rows. The sender alone: `gapferry-send` towards a UDP socket that nobody
//! reads, so the row measures what the sender can do on this machine without a receiver
//! sharing its cores; goodput is the file's bytes over the sender's wall time (start to
//! exit). The receiver alone: `gapferry-recv` fed by [`crate::replay`] in a process of
//! its own, which sends datagrams the sender encoded beforehand from memory with UDP GSO.

use crate::procs::{self, Proc};
use crate::records::{log_field, RecordTail};
use crate::replay;
use crate::scenario::{command, wait_for_line, Env, RunResult, Scenario};
use anyhow::Result;
use std::ffi::OsString;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// The pacer's `--rate` of the sender-alone row: far above what two cores reach, so the
/// pacer never waits and the row shows the sender's own ceiling.
pub const SENDER_ALONE_RATE: &str = "40G";

/// Runs the sender of `s` once towards a bound socket that is never read.
pub fn run_sender(env: &mut Env, s: &Scenario, run: usize) -> Result<RunResult> {
    let input = env.payload_path(s.payload)?;
    let key = env.key_args(s)?;
    let tag = format!("{}-{run}", s.name);
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let send_log = logs.join(format!("{tag}-send.log"));
    // Bound, so loopback does not answer with port-unreachable errors; never read, so the
    // kernel drops what does not fit its small default buffer.
    let sink = UdpSocket::bind("127.0.0.1:0")?;
    let to = sink.local_addr()?;

    let mut scmd = command(env, &env.send_bin, &format!("{tag}-send"));
    scmd.arg("file")
        .arg(&input)
        .args(["--to", &to.to_string(), "--rate", &env.rate(s)])
        .args(["--repair", &s.repair.to_string()])
        .args(["--mtu", &s.mtu.to_string()])
        .args(["--passes", &s.passes.to_string()])
        .args(&key);
    if let Some(kind) = s.kind {
        scmd.args(["--kind", kind]);
    }
    scmd.args(&env.sender_args);
    let bytes = s.payload.bytes();
    let t0 = Instant::now();
    let mut sender = Proc::spawn("gapferry-send", scmd, &send_log)?;
    let budget = Duration::from_secs(60 + bytes * s.passes as u64 / 20_000_000);
    let exit = sender.wait(budget)?;
    drop(sink);
    let send_text = std::fs::read_to_string(&send_log).unwrap_or_default();
    let mut reasons = Vec::new();
    if exit.code != 0 {
        eprintln!("  the sender exited with {}:\n{send_text}", exit.code);
        reasons.push(format!("the sender exited with {}", exit.code));
    }
    let sent = exit.code == 0;
    Ok(RunResult {
        objects: s.payload.objects(),
        payload_bytes: bytes,
        delivered: if sent { s.payload.objects() } else { 0 },
        delivered_bytes: if sent { bytes } else { 0 },
        not_delivered: if sent { 0 } else { s.payload.objects() },
        elapsed: exit.at.map(|at| (at - t0).as_secs_f64()),
        sender: exit,
        sent_datagrams: log_field(&send_text, " done", "datagrams"),
        sent_bytes: log_field(&send_text, " done", "bytes"),
        reasons,
        ..RunResult::default()
    })
}

/// The replayer's default pace in the receiver-alone row (`--replay-rate`).
pub const RECEIVER_ALONE_RATE_BPS: u64 = 4_000_000_000;

/// The datagrams `gapferry-send` makes of `s`'s payload, encoded into a capture file
/// (no socket, no pacing), tagged with `key` when given; its path.
fn encode(env: &mut Env, s: &Scenario, tag: &str, key: &[OsString]) -> Result<PathBuf> {
    let input = env.payload_path(s.payload)?;
    let pcap = env.work.join(format!("{tag}.pcap"));
    let log = env.work.join("logs").join(format!("{tag}-encode.log"));
    let mut cmd = std::process::Command::new(&env.send_bin);
    cmd.arg("file")
        .arg(&input)
        .arg("--pcap-out")
        .arg(&pcap)
        .args(["--to", "127.0.0.1:9", "--rate", &env.rate(s)])
        .args(["--repair", &s.repair.to_string()])
        .args(["--mtu", &s.mtu.to_string()])
        .args(["--passes", &s.passes.to_string()])
        .args(["--kind", s.kind.unwrap_or("auto")])
        .args(key);
    let exit = Proc::spawn("gapferry-send", cmd, &log)?.wait(Duration::from_secs(600))?;
    anyhow::ensure!(exit.code == 0, "encoding into {} failed", pcap.display());
    Ok(pcap)
}

/// Starts the replayer process on `pcap` towards `port`; returns once it is sending.
fn start_replayer(env: &Env, pcap: &Path, port: u16, tag: &str) -> Result<(Proc, PathBuf)> {
    let log = env.work.join("logs").join(format!("{tag}-replay.log"));
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.arg(replay::SUBCOMMAND)
        .arg(pcap)
        .arg(format!("127.0.0.1:{port}"))
        .arg(env.replay_rate_bps.to_string());
    let mut proc = Proc::spawn("replayer", cmd, &log)?;
    wait_for_line(&log, "sending", &mut proc, Duration::from_secs(300))?;
    Ok((proc, log))
}

/// The receiver of one receiver-alone run, from its start to its exit record.
struct ReceiverRun {
    proc: Proc,
    port: u16,
    out: PathBuf,
    log: PathBuf,
    tail: RecordTail,
    drops_before: Option<u64>,
}

impl ReceiverRun {
    /// Starts `gapferry-recv listen` (with `key`) on a free loopback port and waits until it listens.
    fn start(env: &Env, tag: &str, key: &[OsString]) -> Result<Self> {
        let out = env.work.join("out").join(tag);
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out)?;
        let log = env.work.join("logs").join(format!("{tag}-recv.log"));
        let port = UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = command(env, &env.recv_bin, &format!("{tag}-recv"));
        cmd.args(["listen", "--bind", &format!("127.0.0.1:{port}")])
            .arg("--out")
            .arg(&out)
            .args(["--session-timeout", "10"])
            .args(key)
            .args(&env.receiver_args);
        let mut proc = Proc::spawn("gapferry-recv", cmd, &log)?;
        wait_for_line(&log, "listening", &mut proc, Duration::from_secs(20))?;
        Ok(ReceiverRun {
            proc,
            port,
            tail: RecordTail::new(out.join(".gapferry").join("records.jsonl")),
            out,
            log,
            drops_before: procs::udp_rcvbuf_errors(),
        })
    }

    /// Stops the receiver and reads what it did.
    fn stop(mut self, objects: u64, bytes: u64, t0: SystemTime) -> Result<RunResult> {
        // Let the last datagrams in flight land before reading the drop counters.
        std::thread::sleep(Duration::from_millis(200));
        let socket_drops = procs::udp_socket_drops(self.port);
        let drops_after = procs::udp_rcvbuf_errors();
        let hwm = self.proc.vm_hwm();
        self.proc.signal(libc::SIGTERM);
        let mut receiver = self.proc.wait(Duration::from_secs(120))?;
        if let Some(h) = hwm {
            receiver.max_rss = receiver.max_rss.max(h);
        }
        self.tail.poll();
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&self.out);
        Ok(RunResult {
            objects,
            payload_bytes: bytes,
            delivered: self.tail.delivered,
            delivered_bytes: self.tail.delivered_bytes,
            not_delivered: objects.saturating_sub(self.tail.delivered),
            elapsed: self
                .tail
                .last_delivered
                .and_then(|t| t.duration_since(t0).ok())
                .map(|d| d.as_secs_f64()),
            receiver,
            recv_datagrams: log_field(&text, " stopped", "datagrams"),
            queue_full: log_field(&text, " stopped", "queue_full"),
            kernel_drops: self
                .drops_before
                .zip(drops_after)
                .map(|(a, b)| b.saturating_sub(a)),
            socket_drops,
            reasons: self.tail.reasons.clone(),
            ..RunResult::default()
        })
    }
}

/// The replayer's paces of a receiver-ceiling sweep, bits/s, in the order tried.
pub const CEILING_RATES: [u64; 7] = [
    1_000_000_000,
    2_000_000_000,
    3_000_000_000,
    4_000_000_000,
    6_000_000_000,
    8_000_000_000,
    10_000_000_000,
];

/// A pace in bits/s as the bench's options write it (`2500M`, `4G`).
pub fn fmt_bits(bps: u64) -> String {
    if bps.is_multiple_of(1_000_000_000) {
        format!("{}G", bps / 1_000_000_000)
    } else {
        format!("{}M", bps / 1_000_000)
    }
}

/// Runs the receiver of `s` once, fed by the [`crate::replay`] process from memory; a
/// ceiling scenario sweeps the replayer's pace instead.
pub fn run_receiver(env: &mut Env, s: &Scenario, run: usize) -> Result<RunResult> {
    let tag = format!("{}-{run}", s.name);
    std::fs::create_dir_all(env.work.join("logs"))?;
    let key = env.key_args(s)?;
    let pcap = encode(env, s, &tag, &key)?;
    let result = if s.ceiling {
        sweep(env, s, &tag, &pcap, &key)
    } else {
        replay_once(env, s, &tag, &pcap, &key)
    };
    let _ = std::fs::remove_file(&pcap);
    result
}

/// Replays `pcap` at each of [`CEILING_RATES`] until a run does not deliver; the result
/// of the fastest run that delivered (or of the first run, if none did), its notes
/// naming every pace tried.
fn sweep(
    env: &mut Env,
    s: &Scenario,
    tag: &str,
    pcap: &Path,
    key: &[OsString],
) -> Result<RunResult> {
    let pace = env.replay_rate_bps;
    let mut best: Option<RunResult> = None;
    let mut tried = Vec::new();
    let mut stop = None;
    for bps in CEILING_RATES {
        env.replay_rate_bps = bps;
        let step = replay_once(env, s, &format!("{tag}-{}", fmt_bits(bps)), pcap, key);
        let step = match step {
            Ok(r) => r,
            Err(e) => {
                env.replay_rate_bps = pace;
                return Err(e);
            }
        };
        let goodput = step
            .goodput_mbs()
            .map_or("-".into(), |g| format!("{g:.0} MB/s"));
        tried.push(format!(
            "{} {}",
            fmt_bits(bps),
            if step.complete() {
                goodput
            } else {
                "failed".into()
            }
        ));
        if !step.complete() {
            stop = step.reasons.first().cloned();
            best.get_or_insert(step);
            break;
        }
        best = Some(step);
    }
    env.replay_rate_bps = pace;
    let mut result = best.expect("at least one pace is tried");
    let highest = tried.iter().rev().find(|t| !t.ends_with("failed"));
    result.ceiling = Some(format!(
        "highest replay rate delivered: {}; paces tried: {}{}",
        highest.map_or("none", |h| h.split(' ').next().unwrap_or("none")),
        tried.join(", "),
        stop.map_or(String::new(), |r| format!("; stopped by: {r}"))
    ));
    Ok(result)
}

/// Replays `pcap` once at the environment's pace towards a fresh receiver.
fn replay_once(
    env: &mut Env,
    s: &Scenario,
    tag: &str,
    pcap: &Path,
    key: &[OsString],
) -> Result<RunResult> {
    let mut rx = ReceiverRun::start(env, tag, key)?;
    let (mut feeder, feeder_log) = start_replayer(env, pcap, rx.port, tag)?;
    let t0 = SystemTime::now();
    let objects = s.payload.objects();
    let grace = Duration::from_secs(15 + s.payload.bytes() / 200_000_000);
    let mut progress = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        rx.tail.poll();
        if rx.tail.resolved() != progress.0 {
            progress = (rx.tail.resolved(), Instant::now());
        }
        let Some(fed) = feeder.try_exit()? else {
            continue;
        };
        if rx.tail.resolved() >= objects {
            break;
        }
        let fed_at = fed.at.unwrap_or_else(Instant::now);
        if fed_at.max(progress.1).elapsed() > grace {
            eprintln!(
                "  timeout: {} of {objects} objects resolved",
                rx.tail.resolved()
            );
            break;
        }
    }
    let fed = feeder.wait(Duration::from_secs(5))?;
    let text = std::fs::read_to_string(&feeder_log).unwrap_or_default();
    anyhow::ensure!(fed.code == 0, "the replayer failed:\n{text}");
    let mut result = rx.stop(objects, s.payload.bytes(), t0)?;
    result.sent_datagrams = log_field(&text, "replayed", "datagrams");
    result.sent_bytes = log_field(&text, "replayed", "bytes");
    result.feeder_cpu_seconds = log_field(&text, "replayed", "cpu_us").map(|us| us as f64 / 1e6);
    Ok(result)
}
