//! The sender alone: `gapferry-send` towards a UDP socket that nobody reads, so the row
//! measures what the sender can do on this machine without a receiver sharing its cores.
//! Goodput is the file's bytes over the sender's wall time (start to exit).

use crate::procs::Proc;
use crate::records::log_field;
use crate::scenario::{command, Env, RunResult, Scenario};
use anyhow::Result;
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// The pacer's `--rate` of the sender-alone row: far above what two cores reach, so the
/// pacer never waits and the row shows the sender's own ceiling.
pub const SENDER_ALONE_RATE: &str = "40G";

/// Runs the sender of `s` once towards a bound socket that is never read.
pub fn run_sender(env: &mut Env, s: &Scenario, run: usize) -> Result<RunResult> {
    let input = env.payload_path(s.payload)?;
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
        .args(["--to", &to.to_string(), "--rate", s.rate])
        .args(["--repair", &s.repair.to_string()])
        .args(["--mtu", &s.mtu.to_string()])
        .args(["--passes", &s.passes.to_string()]);
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
