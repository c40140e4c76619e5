//! `gapferry-bench`: end-to-end throughput, loss and memory scenarios on loopback, driving
//! the real release binaries, with iperf3's raw UDP as the ceiling. Prints one table.

use anyhow::{bail, Context, Result};
use clap::Parser;
use gapferry_bench::iperf::{self, Ceiling};
use gapferry_bench::scenario::{self, parse_bits, Env, RunResult, Scenario};
use gapferry_bench::{procs, table};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs gapferry-send and gapferry-recv as real processes on loopback and prints goodput,
/// CPU, memory, datagram and drop figures as one Markdown table (medians of --runs runs).
#[derive(Parser)]
#[command(name = "gapferry-bench", version)]
struct Cli {
    /// Scenarios to run (see bench/README.md, or an unknown name lists them), or all.
    #[arg(required = true)]
    scenarios: Vec<String>,
    /// Runs per scenario; the table shows medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    /// Smaller payloads (128 MiB bulk, 1 GiB big, 1 000 MISP events, ...) for a run of a few minutes.
    #[arg(long)]
    quick: bool,
    /// Seconds of each iperf3 measurement.
    #[arg(long, default_value_t = 5)]
    iperf_secs: u32,
    /// Socket buffer for both iperf3 ends (`-w`); `default` leaves iperf3's own.
    #[arg(long, default_value = "4M")]
    iperf_window: String,
    /// Skip the iperf3 ceiling.
    #[arg(long)]
    no_iperf: bool,
    /// Directory holding gapferry-send and gapferry-recv (default: the workspace's target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Rebuild the release binaries first even if they exist.
    #[arg(long)]
    rebuild: bool,
    /// Scratch directory for data, outputs and logs (default: a fresh temporary directory).
    #[arg(long)]
    work: Option<PathBuf>,
    /// Keep the scratch directory (logs, data) afterwards.
    #[arg(long)]
    keep: bool,
    /// Run both processes under `perf record -g` and keep the perf.data files in this directory.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Call-graph mode for --perf: fp (frame pointers, perf's -g) or dwarf (Rust frames too, larger files).
    #[arg(long, default_value = "fp", value_parser = ["fp", "dwarf", "lbr"])]
    perf_call_graph: String,
    /// The sender's `--threads` (threads preparing blocks); by default the sender's own default.
    #[arg(long, value_name = "N")]
    sender_threads: Option<u16>,
    /// The sender's `--max-objects-rate` (objects/s) in every row; by default none.
    #[arg(long, value_name = "N")]
    max_objects_rate: Option<f64>,
    /// Events of the misp and misp-100k rows, for a long stream (e.g. 50000)
    /// [default: 10 000, 1 000 with --quick].
    #[arg(long, value_name = "N")]
    misp_events: Option<usize>,
    /// The receiver's `--threads` (block writers); by default the receiver's own default.
    #[arg(long, value_name = "N")]
    receiver_threads: Option<u16>,
    /// The replayer's pace in the receiver-alone row, bits/s of IP packets (k/M/G suffixes).
    #[arg(long, value_name = "BITS/S", default_value = "4G", value_parser = parse_bits)]
    replay_rate: u64,
    /// The sender's `--rate` of the pair rows (bulk, bulk-keyed, big, misp, misp-100k, small)
    /// and udpcast's `--max-bitrate`: one rate, so big and bulk are compared at the same pace.
    #[arg(long, value_name = "RATE", default_value = scenario::DEFAULT_PAIR_RATE, value_parser = pair_rate)]
    pair_rate: String,
    /// Delete each run's outputs right after it, as before (by default outputs of many
    /// files wait for the end of the table: deleting them slows the next runs' inode allocation).
    #[arg(long)]
    delete_each_run: bool,
}

fn pair_rate(s: &str) -> Result<String, String> {
    parse_bits(s).map(|_| s.to_string())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/ lives in the workspace")
        .to_path_buf()
}

fn binaries(cli: &Cli) -> Result<(PathBuf, PathBuf)> {
    let root = workspace_root();
    let dir = match &cli.bin_dir {
        Some(d) => d.clone(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"))
            .join("release"),
    };
    let (send, recv) = (dir.join("gapferry-send"), dir.join("gapferry-recv"));
    if cli.rebuild || !send.exists() || !recv.exists() {
        if cli.bin_dir.is_some() && !cli.rebuild {
            bail!("{} or {} is missing", send.display(), recv.display());
        }
        eprintln!("building the release binaries…");
        let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(&root)
            .args([
                "build",
                "--release",
                "-p",
                "gapferry-sender",
                "-p",
                "gapferry-receiver",
            ])
            .status()
            .context("running cargo build")?;
        if !status.success() {
            bail!("cargo build --release failed");
        }
    }
    Ok((send, recv))
}

fn select(names: &[String], quick: bool) -> Result<Vec<Scenario>> {
    let all = scenario::all(quick);
    if names.iter().any(|n| n == "all") {
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            all.iter().find(|s| s.name == n).cloned().with_context(|| {
                let known: Vec<_> = all.iter().map(|s| s.name).collect();
                format!("unknown scenario {n:?}; known: {} or all", known.join(", "))
            })
        })
        .collect()
}

/// The iperf3 runs that worked, and why the others did not.
fn ceiling(cli: &Cli) -> (Vec<Ceiling>, Vec<String>) {
    if !iperf::available() {
        return (
            Vec::new(),
            vec!["iperf3 not found: apt-get install iperf3".into()],
        );
    }
    let (mut out, mut failed) = (Vec::new(), Vec::new());
    for i in 1..=cli.runs {
        let port = match std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .map(|a| a.port())
        {
            Ok(p) => p,
            Err(e) => {
                failed.push(format!("no free port: {e}"));
                break;
            }
        };
        match iperf::measure(port, cli.iperf_secs, iperf_window(cli)) {
            Ok(c) => {
                eprintln!(
                    "iperf3 run {i}/{}: {:.0} MB/s received ({:.0} MB/s sent, {:.1} % lost)",
                    cli.runs,
                    c.received_bps / 1e6,
                    c.sent_bps / 1e6,
                    c.lost_percent
                );
                out.push(c);
            }
            Err(e) => {
                eprintln!("iperf3 run {i} failed: {e:#}");
                failed.push(format!("{e:#}"));
            }
        }
    }
    (out, failed)
}

fn iperf_window(cli: &Cli) -> Option<&str> {
    Some(cli.iperf_window.as_str()).filter(|w| *w != "default")
}

fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The workspace's commit, with "+ local changes" when the tree differs from it.
fn git_state() -> Option<String> {
    let root = workspace_root();
    let git = |args: &[&str]| {
        Command::new("git")
            .current_dir(&root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(format!(
        "commit {head}{}",
        if dirty { " + local changes" } else { "" }
    ))
}

fn describe_run(r: &RunResult) -> String {
    format!(
        "{}/{} delivered, {} MB/s, send {:.2} CPU-s, recv {:.2} CPU-s, sent {} recv {} datagrams, kernel drops {}{}",
        r.delivered,
        r.objects,
        r.goodput_mbs().map_or("–".into(), |g| format!("{g:.0}")),
        r.sender.cpu_seconds,
        r.receiver.cpu_seconds,
        r.sent_datagrams.map_or("?".into(), |x| x.to_string()),
        r.recv_datagrams.map_or("?".into(), |x| x.to_string()),
        r.kernel_drops.map_or("?".into(), |x| x.to_string()),
        if r.reasons.is_empty() {
            String::new()
        } else {
            format!(" ({})", r.reasons.join("; "))
        }
    )
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(gapferry_bench::replay::SUBCOMMAND) {
        return gapferry_bench::replay::run_subcommand(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(gapferry_bench::feed::SUBCOMMAND) {
        return gapferry_bench::feed::run_subcommand(&args[2..]);
    }
    let cli = Cli::parse();
    let mut scenarios = select(&cli.scenarios, cli.quick)?;
    for s in scenarios.iter_mut().filter(|s| s.name.starts_with("misp")) {
        if let (Some(n), scenario::Payload::Json { count, .. }) = (cli.misp_events, &mut s.payload)
        {
            *count = n;
        }
    }
    let (send, recv) = binaries(&cli)?;
    let load_start = procs::load_average();
    if let Some(load) = load_start.filter(|&l| l > 0.5) {
        eprintln!(
            "warning: load average {load:.2}: other work on this machine will skew the figures"
        );
    }
    let temp;
    let work = match &cli.work {
        Some(w) => {
            std::fs::create_dir_all(w)?;
            w.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("gapferry-bench-")
                .tempdir()
                .context("creating a scratch directory")?;
            if cli.keep {
                temp.keep()
            } else {
                temp.path().to_path_buf()
            }
        }
    };
    eprintln!("scratch directory: {}", work.display());
    let mut env = Env::new(send, recv, work.clone());
    env.replay_rate_bps = cli.replay_rate;
    if let Some(t) = cli.sender_threads {
        env.sender_args = vec!["--threads".into(), t.to_string()];
    }
    if let Some(r) = cli.max_objects_rate {
        env.sender_args
            .extend(["--max-objects-rate".into(), r.to_string()]);
    }
    if let Some(t) = cli.receiver_threads {
        env.receiver_args = vec!["--threads".into(), t.to_string()];
    }
    if let Some(p) = &cli.perf {
        std::fs::create_dir_all(p)?;
        env.perf_dir = Some(std::fs::canonicalize(p)?);
        env.perf_call_graph = cli.perf_call_graph.clone();
    }

    env.pair_rate = cli.pair_rate.clone();
    env.delete_each_run = cli.delete_each_run;
    let started = std::time::Instant::now();
    let machine = format!(
        "Machine: {}, {} cores, Linux {}; load average {} at start; {}.",
        cpu_model().unwrap_or_else(|| "unknown CPU".into()),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel().unwrap_or_else(|| "?".into()),
        load_start.map_or("?".into(), |l| format!("{l:.2}")),
        match &cli.bin_dir {
            Some(d) => format!("binaries from {}", d.display()),
            None => git_state().unwrap_or_else(|| "unknown commit".into()),
        }
    );

    let (ceilings, iperf_failures) = if cli.no_iperf {
        (Vec::new(), Vec::new())
    } else {
        ceiling(&cli)
    };
    let ceiling_mbs = table::median(ceilings.iter().map(|c| c.received_bps / 1e6).collect());
    let rows = run_rows(&mut env, &scenarios, &cli, ceiling_mbs);
    let finished = started.elapsed();
    env.empty_trash();

    println!();
    println!("{machine}");
    println!();
    println!("{}", table::header());
    if !cli.no_iperf {
        println!(
            "{}",
            table::iperf_row(
                &ceilings,
                &iperf_failures,
                cli.iperf_secs,
                iperf_window(&cli)
            )
        );
    }
    for r in rows {
        println!("{r}");
    }
    println!();
    println!(
        "Medians of {} runs per scenario (each column on its own). MB = 10^6 bytes of file content delivered and blake3-verified, \
         from the sender's start to the receiver's last `delivered` record. CPU = user + system of the whole process (wait4). \
         Wire bytes = UDP payload + 28 B IPv4/UDP header per datagram. Kernel drops = /proc/net/snmp Udp RcvbufErrors delta. \
         × iperf3 = goodput / the MB/s iperf3's server received. Pair rows at --rate {} (--pair-rate). \
         Outputs of many files {}.",
        cli.runs,
        cli.pair_rate,
        if cli.delete_each_run {
            "deleted after each run"
        } else {
            "deleted after the whole table"
        }
    );
    println!();
    println!(
        "Load average {} at end; the table took {:.1} min.",
        procs::load_average().map_or("?".into(), |l| format!("{l:.2}")),
        finished.as_secs_f64() / 60.0
    );
    if cli.keep || cli.work.is_some() {
        eprintln!("logs kept in {}", work.join("logs").display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(())
}

/// Every scenario's row, in order; a scenario whose every run failed prints the cause.
fn run_rows(env: &mut Env, scenarios: &[Scenario], cli: &Cli, ceiling: Option<f64>) -> Vec<String> {
    let mut rows = Vec::new();
    for (i, s) in scenarios.iter().enumerate() {
        eprintln!("{}: {} ({})", s.name, s.about, s.payload.describe());
        let mut runs = Vec::new();
        let mut errors = Vec::new();
        for run in 1..=cli.runs as usize {
            match scenario::run_once(env, s, run) {
                Ok(r) => {
                    eprintln!("  run {run}/{}: {}", cli.runs, describe_run(&r));
                    runs.push(r);
                }
                Err(e) => {
                    eprintln!("  run {run}/{} failed: {e:#}", cli.runs);
                    errors.push(format!("{e:#}"));
                }
            }
        }
        if !scenarios[i + 1..].iter().any(|t| t.payload == s.payload) {
            env.drop_payload(s.payload);
        }
        rows.push(if runs.is_empty() {
            table::failed_row(s, &errors)
        } else {
            let rate = if s.receiver_alone {
                gapferry_bench::alone::fmt_bits(env.replay_rate_bps)
            } else {
                env.rate(s)
            };
            table::row(s, &runs, ceiling, &rate, errors.len())
        });
    }
    rows
}

fn kernel() -> Option<String> {
    Some(
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()?
            .trim()
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::parse_bits;

    #[test]
    fn replay_rates_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_bits("4G"), Ok(4_000_000_000));
        assert_eq!(parse_bits("2.5G"), Ok(2_500_000_000));
        assert_eq!(parse_bits("800M"), Ok(800_000_000));
        assert_eq!(parse_bits("100k"), Ok(100_000));
        assert_eq!(parse_bits("12345"), Ok(12_345));
        for bad in ["", "G", "4X", "-1G", "0", "NaNG", "infM"] {
            assert!(parse_bits(bad).is_err(), "{bad:?}");
        }
    }
}
