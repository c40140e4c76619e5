//! The peer the Debian archive has: udpcast's `udp-sender --async --fec` towards a
//! `udp-receiver`, one way. Both run in a network namespace the bench creates for the run
//! (its own loopback), where an nftables rule drops every datagram sent to the sender's
//! control port (portbase + 1): the receiver's requests to the sender cannot arrive, as on a
//! diode. udpcast has no unicast destination option for async mode; `--mcast-data-address
//! 127.0.0.1` (and `--mcast-rdv-address 127.0.0.1`) point its data and hellos at the
//! receiver's unicast address instead of a multicast group.

use crate::procs::{Exit, Proc};
use crate::scenario::{Env, RunResult, Scenario};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The udpcast port base in the namespace (data on it, the sender's control port above).
const PORTBASE: u16 = 9000;
/// `--fec`: 8 interleaved stripes of 128 blocks, 13 repair blocks each (10.2 %, as `--repair 10`).
pub const FEC: &str = "8x13/128";

/// Whether `udp-sender`, `udp-receiver`, `ip` and `nft` are on the PATH.
pub fn missing_tools() -> Option<String> {
    let missing: Vec<&str> = ["udp-sender", "udp-receiver", "ip", "nft"]
        .into_iter()
        .filter(|t| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "{} not found: apt-get install udpcast iproute2 nftables",
            missing.join(", ")
        )
    })
}

/// A network namespace with its loopback up and the return path to the sender dropped.
struct OneWayNamespace {
    name: String,
}

fn run_quiet(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {} (needs root)",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl OneWayNamespace {
    fn create(tag: &str) -> Result<Self> {
        let name = format!("gfbench-{}-{tag}", std::process::id());
        run_quiet(
            Command::new("ip").args(["netns", "add", &name]),
            "ip netns add",
        )?;
        let ns = OneWayNamespace { name };
        run_quiet(ns.exec("ip").args(["link", "set", "lo", "up"]), "lo up")?;
        let rules = format!(
            "table inet oneway {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  udp dport {} counter drop\n }}\n}}\n",
            PORTBASE + 1
        );
        let mut nft = ns
            .exec("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running nft")?;
        nft.stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let out = nft.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(ns)
    }

    fn exec(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Datagrams the rule dropped on their way back to the sender.
    fn dropped(&self) -> Option<u64> {
        let out = self.exec("nft").args(["list", "ruleset"]).output().ok()?;
        parse_nft_packets(&String::from_utf8_lossy(&out.stdout))
    }
}

impl Drop for OneWayNamespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The `packets N` of the first nftables counter in `ruleset`.
pub fn parse_nft_packets(ruleset: &str) -> Option<u64> {
    let rest = &ruleset[ruleset.find("counter packets ")? + "counter packets ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

/// udpcast's highest working `--max-bitrate`, in megabits: it keeps the rate in a 32-bit
/// int of bits/s, and at 2200m its sender hung without sending (measured, udpcast 20120424).
pub const MAX_MEGABITS: u64 = 2147;

/// `bits/s` as udpcast's `--max-bitrate` (megabits, e.g. `2000m`), capped at [`MAX_MEGABITS`].
pub fn max_bitrate(bits: u64) -> String {
    format!("{}m", (bits / 1_000_000).clamp(1, MAX_MEGABITS))
}

/// What udp-receiver said about a failed reception: its summary lines, shortened.
pub fn receiver_cause(log: &str) -> String {
    let lines: Vec<String> = log
        .split(['\r', '\n'])
        .map(str::trim)
        .filter(|l| {
            ["Blocks received", "Dropped by server", "locate server"]
                .iter()
                .any(|k| l.starts_with(k) || l.contains(k))
        })
        .map(|l| l.chars().take(80).collect())
        .collect();
    if lines.is_empty() {
        "udp-receiver printed no summary".into()
    } else {
        lines.join(" / ")
    }
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Runs udpcast once on `s`'s payload at the pair rate, one way.
pub fn run(env: &mut Env, s: &Scenario, run: usize) -> Result<RunResult> {
    if let Some(why) = missing_tools() {
        bail!("{why}");
    }
    let input = env.payload_path(s.payload)?;
    let tag = format!("{}-{run}", s.name);
    let logs = env.work.join("logs");
    std::fs::create_dir_all(&logs)?;
    let out = env.work.join("out").join(&tag);
    std::fs::create_dir_all(&out)?;
    let received = out.join("received.bin");
    let ns = OneWayNamespace::create(&run.to_string())?;
    let port = PORTBASE.to_string();
    let mut rcmd = ns.exec("udp-receiver");
    rcmd.args(["--portbase", &port, "--interface", "lo", "--nokbd"])
        .arg("--file")
        .arg(&received)
        .args(["--start-timeout", "30", "--receive-timeout", "10"]);
    let recv_log = logs.join(format!("{tag}-recv.log"));
    let mut receiver = Proc::spawn("udp-receiver", rcmd, &recv_log)?;
    std::thread::sleep(Duration::from_millis(300));
    let mut scmd = ns.exec("udp-sender");
    scmd.args(["--portbase", &port, "--interface", "lo", "--nokbd"])
        .arg("--file")
        .arg(&input)
        .args(["--async", "--fec", FEC, "--autostart", "2"])
        .args(["--max-bitrate", &max_bitrate(env.pair_rate_bps()?)])
        .args(["--mcast-data-address", "127.0.0.1"])
        .args(["--mcast-rdv-address", "127.0.0.1"]);
    let t0 = Instant::now();
    let mut sender = Proc::spawn("udp-sender", scmd, &logs.join(format!("{tag}-send.log")))?;
    let budget = Duration::from_secs(60 + s.payload.bytes() / 20_000_000);
    let sender_exit = sender.wait(budget);
    let receiver_exit = receiver.wait(Duration::from_secs(30));
    let returned = ns.dropped();
    drop(ns);
    let recv_text = std::fs::read_to_string(&recv_log).unwrap_or_default();
    let (sender_exit, receiver_exit): (Exit, Exit) = (
        sender_exit.context("udp-sender")?,
        receiver_exit.context("udp-receiver: no end of reception")?,
    );
    let ok = receiver_exit.code == 0 && same_content(&input, &received).unwrap_or(false);
    let mut reasons = Vec::new();
    if !ok {
        reasons.push(format!(
            "not delivered: udp-receiver exited {}, {}",
            receiver_exit.code,
            receiver_cause(&recv_text)
        ));
    }
    reasons.push(format!(
        "return path dropped {} datagrams",
        returned.map_or("?".into(), |n| n.to_string())
    ));
    let _ = std::fs::remove_dir_all(&out);
    let bytes = s.payload.bytes();
    Ok(RunResult {
        objects: 1,
        payload_bytes: bytes,
        delivered: ok as u64,
        delivered_bytes: if ok { bytes } else { 0 },
        not_delivered: (!ok) as u64,
        elapsed: receiver_exit
            .at
            .filter(|_| ok)
            .map(|at| (at - t0).as_secs_f64()),
        sender: sender_exit,
        receiver: receiver_exit,
        reasons,
        ..RunResult::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_drop_counter_and_the_receivers_summary() {
        let rules = "table inet oneway {\n\tchain out {\n\t\ttype filter hook output priority filter; policy accept;\n\t\tudp dport 9001 counter packets 2 bytes 72 drop\n\t}\n}\n";
        assert_eq!(parse_nft_packets(rules), Some(2));
        assert_eq!(parse_nft_packets("table inet x {}"), None);
        let log = "Udp-receiver 20120424\r\nbytes= 1 490 944  (543 Mbps)\rDropped by server now=2 last=-1\nMissed blocks: 124,125,126\nStripe  0:  49/  8 ***\nBlocks received: 626/686/1024\n";
        let cause = receiver_cause(log);
        assert!(cause.contains("Blocks received: 626/686/1024"), "{cause}");
        assert!(cause.contains("Dropped by server"), "{cause}");
        assert!(
            !cause.contains("Stripe") && !cause.contains("124,125"),
            "{cause}"
        );
        assert_eq!(receiver_cause("nothing"), "udp-receiver printed no summary");
        assert_eq!(max_bitrate(2_000_000_000), "2000m");
        assert_eq!(max_bitrate(2_500_000_000), "2147m");
        assert_eq!(max_bitrate(10), "1m");
    }
}
