//! `gapferry-send`: the low-side command line.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gapferry_common::Key;
use gapferry_sender::progress::Progress;
use gapferry_sender::rate::parse_rate;
use gapferry_sender::sink::{DatagramSink, PcapSink, UdpSink};
use gapferry_sender::source::KindMode;
use gapferry_sender::{keygen, source, SenderConfig, SenderSession};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Sends files one way through a data diode as RaptorQ-protected UDP.
#[derive(Parser)]
#[command(name = "gapferry-send", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (e.g. info, debug, gapferry_sender=trace).
    #[arg(long, global = true, default_value = "info", env = "GAPFERRY_LOG")]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Send files or directory trees, then exit.
    ///
    /// Example: gapferry-send file export/ report.json --to 192.0.2.10:7000 --rate 800M
    File(FileArgs),
    /// Write a new random pre-shared key (mode 0600) for --key on both sides.
    ///
    /// Example: gapferry-send keygen /etc/gapferry/link.key
    Keygen {
        /// Where to write the key.
        path: PathBuf,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Args)]
struct FileArgs {
    /// Files or directories to send (a directory's tree is sent with names relative to it).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Receiver (or diode far side) as HOST:PORT.
    #[arg(long)]
    to: String,
    /// Object kind: auto (from content), misp, stix, image or file.
    #[arg(long, default_value = "auto")]
    kind: KindMode,
    /// Local address to send from, as HOST:PORT.
    #[arg(long)]
    bind: Option<SocketAddr>,
    /// Link rate in bits/s of IP packets, with k/M/G suffixes.
    #[arg(long, default_value = "100M", value_parser = parse_rate)]
    rate: u64,
    /// Repair symbols per block in percent of its source symbols (at least 4 per block).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1000))]
    repair: u32,
    /// Path MTU in bytes; every datagram fits an IPv4 or IPv6 packet of this size.
    #[arg(long, default_value_t = 1500)]
    mtu: usize,
    /// Pre-shared key file: every datagram carries a keyed-blake3 tag.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Passes over every object; each further pass sends fresh repair symbols.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=100))]
    passes: u8,
    /// Write the datagrams into this pcap file (Ethernet/IP/UDP frames stamped with the
    /// pacing schedule) instead of sending them; --to and --bind only fill the addresses.
    #[arg(long, value_name = "FILE")]
    pcap_out: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn read_key(path: &PathBuf) -> Result<Key> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read key file {}", path.display()))?;
    Key::parse(&bytes).with_context(|| format!("bad key file {}", path.display()))
}

fn resolve(to: &str) -> Result<SocketAddr> {
    to.to_socket_addrs()
        .with_context(|| format!("--to {to:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--to {to:?} resolves to no address"))
}

/// The source address written into capture frames when --bind is not given.
fn default_source(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 40_000)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 40_000)),
    }
}

fn run_file(a: FileArgs) -> Result<()> {
    let to = resolve(&a.to)?;
    let key = a.key.as_ref().map(read_key).transpose()?;
    let files = source::collect(&a.paths, a.kind)?;
    let cfg = SenderConfig {
        rate_bps: a.rate,
        repair_percent: a.repair,
        mtu: a.mtu,
        key,
        passes: a.passes,
        ..SenderConfig::default()
    };
    let sink: Box<dyn DatagramSink + Send> = match &a.pcap_out {
        Some(path) => {
            let src = a.bind.unwrap_or_else(|| default_source(to));
            Box::new(
                PcapSink::create(path, src, to)
                    .with_context(|| format!("cannot create capture file {}", path.display()))?,
            )
        }
        None => Box::new(
            UdpSink::connect(to, a.bind)
                .with_context(|| format!("cannot open a UDP socket towards {to}"))?,
        ),
    };
    let mut session = SenderSession::new(cfg, sink)?;
    let total: u64 = files.iter().map(|f| f.size).sum::<u64>() * a.passes as u64;
    tracing::info!(
        session = format_args!("{:016x}", session.id()),
        files = files.len(),
        bytes = total,
        %to,
        "sending"
    );
    let progress = Progress::new(total, !a.quiet);
    let reports = session
        .send_files(&files, &progress)
        .context("sending stopped")?;
    session.finish().context("sending stopped")?;
    progress.finish();
    let (datagrams, bytes) = session.counters();
    let failed: Vec<_> = reports.iter().filter(|r| r.error.is_some()).collect();
    tracing::info!(
        datagrams,
        bytes,
        objects = reports.len(),
        failed = failed.len(),
        "done"
    );
    if !failed.is_empty() {
        for r in &failed {
            eprintln!(
                "not sent: {} (object {}): {}",
                r.name,
                r.object,
                r.error.as_ref().expect("failed")
            );
        }
        bail!(
            "{} of {} files could not be sent",
            failed.len(),
            reports.len()
        );
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::File(a) => run_file(a),
        Command::Keygen { path, force } => keygen::write_new_key(&path, force)
            .with_context(|| {
                format!(
                    "cannot write key file {} (use --force to replace it)",
                    path.display()
                )
            })
            .map(|k| eprintln!("wrote key {} (id {})", path.display(), k.id())),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gapferry-send: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
