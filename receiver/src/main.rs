//! `gapferry-recv`: the high-side command line.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use gapferry_common::KeyRing;
use gapferry_receiver::config::{FileConfig, LimitOptions};
use gapferry_receiver::pipeline::Listener;
use gapferry_receiver::replay::{replay, ReplayOptions, Speed};
use gapferry_receiver::ReceiverConfig;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Freed block buffers are reused in-process rather than handed back to the kernel and
/// faulted in again: on the bulk path that churn cost about a CPU-second per GiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Receives files sent one way through a data diode by gapferry-send.
#[derive(Parser)]
#[command(name = "gapferry-recv", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: gapferry_shell::LogArgs,
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Generate(gapferry_shell::Generate),
    /// Receive and deliver until SIGINT or SIGTERM.
    ///
    /// Example: gapferry-recv listen --bind 0.0.0.0:7000 --out /srv/gapferry
    Listen(ListenArgs),
    /// Deliver what pcap or pcapng captures of a gapferry stream hold, then print a summary.
    ///
    /// Exits non-zero when an object failed or was lost, or a capture is truncated.
    /// Example: tcpdump -i any -w link.pcap udp port 7000; gapferry-recv replay link.pcap --out /srv/gapferry
    Replay(ReplayArgs),
    /// Look after the MISP feed: rebuild its index, or put archived events back.
    ///
    /// Safe while `listen` runs on the same OUT: every writer of the feed holds
    /// OUT/.gapferry/feed.lock while it writes.
    #[command(subcommand)]
    Feed(FeedCommand),
    /// Print the link's state and what was delivered, failed or lost, from the state on disk.
    ///
    /// Example: gapferry-recv status --out /srv/gapferry
    Status {
        /// The receiver's delivery root.
        #[arg(long)]
        out: PathBuf,
        /// How many of the last failed or lost objects to name.
        #[arg(long, default_value_t = 10)]
        last: usize,
    },
}

#[derive(Subcommand)]
enum FeedCommand {
    /// Rewrite manifest.json and hashes.csv from the <uuid>.json files present.
    ///
    /// Example: gapferry-recv feed rebuild --config /etc/gapferry/gapferry-recv.toml
    Rebuild(FeedArgs),
    /// Put archived events back into the feed (all, or those selected), then rebuild
    /// manifest.json and hashes.csv.
    ///
    /// Example: gapferry-recv feed republish --out /srv/gapferry --since 2026-01-31
    Republish {
        #[command(flatten)]
        feed: FeedArgs,
        /// Only events archived (delivered) at or after DATE (YYYY-MM-DD, UTC, or RFC 3339).
        #[arg(long, value_name = "DATE")]
        since: Option<String>,
        /// Only this event uuid; repeatable. Every one must be in the archive.
        #[arg(long = "uuid", value_name = "UUID")]
        uuids: Vec<String>,
    },
}

#[derive(Args)]
struct FeedArgs {
    /// The receiver's configuration file (for `out`, `[dirs] misp`, `[permissions]`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The receiver's delivery root; wins over `out` in --config.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng), replayed in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Delivery root, as for listen.
    #[arg(long)]
    out: PathBuf,
    /// Only datagrams to this UDP port (default: every UDP datagram that parses as gapferry's).
    #[arg(long)]
    port: Option<u16>,
    /// Pre-shared key file; repeat for key rollover.
    #[arg(long)]
    key: Vec<PathBuf>,
    /// max: as fast as possible; realtime: honour the capture's timestamps.
    #[arg(long, value_enum, default_value = "max")]
    speed: Speed,
}

#[derive(Args)]
struct ListenArgs {
    /// Configuration file (TOML); flags given here win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on, as HOST:PORT; give it again for more lanes (one socket and
    /// one thread each, all feeding one assembler).
    #[arg(long)]
    bind: Vec<String>,
    /// Delivery root: OUT/misp, OUT/stix, OUT/images, OUT/files; records in OUT/.gapferry/records.jsonl.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Pre-shared key file; repeat for key rollover. Untagged or wrongly tagged datagrams are dropped.
    #[arg(long)]
    key: Vec<PathBuf>,
    /// A retired key file: its datagrams are refused and counted as `retired_key`, so a
    /// sender still using it shows; repeatable.
    #[arg(long, value_name = "FILE")]
    retired_key: Vec<PathBuf>,
    /// Receive buffer to request, in bytes [default: 67108864].
    #[arg(long)]
    recv_buffer: Option<usize>,
    /// The link's MTU: a datagram whose UDP payload cannot fit it is dropped unread [default: 9000].
    #[arg(long)]
    mtu: Option<usize>,
    /// Seconds of silence after which a sender session is closed and its incomplete objects failed [default: 30].
    #[arg(long)]
    session_timeout: Option<u64>,
    /// Threads writing and hashing big objects' blocks; 0 does it on the disk writer's
    /// thread [default: the cores beyond two, at most 4].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
    /// Image versions kept per image name [default: 3].
    #[arg(long)]
    keep_images: Option<usize>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

fn resolve(s: &str) -> Result<SocketAddr> {
    s.to_socket_addrs()
        .with_context(|| format!("--bind {s:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("--bind {s:?} resolves to no address"))
}

/// `--recv-buffer`, `--mtu` and `--session-timeout`, or their configuration keys.
fn apply_link_options(
    cfg: &mut ReceiverConfig,
    (recv_buffer, mtu, session_timeout): (Option<usize>, Option<usize>, Option<u64>),
    file: &FileConfig,
) -> Result<()> {
    cfg.recv_buffer = recv_buffer.or(file.recv_buffer).unwrap_or(cfg.recv_buffer);
    cfg.mtu = mtu.or(file.mtu).unwrap_or(cfg.mtu);
    let mtus = gapferry_common::layout::MIN_MTU..=gapferry_common::layout::MAX_MTU;
    anyhow::ensure!(
        mtus.contains(&cfg.mtu),
        "--mtu {} is outside {}..={}: give the link's MTU (1500, or 9000 with jumbo frames)",
        cfg.mtu,
        mtus.start(),
        mtus.end()
    );
    let timeout = session_timeout.or(file.session_timeout).unwrap_or(30);
    cfg.limits.session_timeout = Duration::from_secs(timeout.max(1));
    Ok(())
}

/// `[limits]` of the configuration file.
fn apply_limits(cfg: &mut ReceiverConfig, limits: &LimitOptions) {
    if let Some(v) = limits.max_object_size {
        cfg.limits.max_object_size = v;
    }
    if let Some(v) = limits.max_objects_in_flight {
        cfg.limits.max_objects_in_flight = v;
    }
    if let Some(v) = limits.max_held_bytes {
        cfg.limits.max_held_bytes = v;
    }
    if let Some(v) = limits.max_block_plain {
        cfg.limits.max_block_plain = v;
    }
    if let Some(v) = limits.max_name_bytes {
        cfg.limits.max_name_bytes = v;
    }
    if let Some(v) = limits.max_name_depth {
        cfg.limits.max_name_depth = v;
    }
    if let Some(v) = limits.max_sessions {
        cfg.limits.max_sessions = v.max(1);
    }
    if let Some(v) = limits.max_queue_bytes {
        cfg.queue_bytes = v;
    }
    if let Some(v) = limits.max_document {
        cfg.max_document = v;
    }
}

/// Serves the Prometheus metrics and `/healthz` at `addr`.
fn serve_metrics(addr: SocketAddr, cfg: &ReceiverConfig, out: &std::path::Path) -> Result<()> {
    let mut registry = gapferry_metrics::prometheus_client::registry::Registry::default();
    cfg.metrics.register(&mut registry);
    let m = cfg.metrics.clone();
    let (h, health_dir) = (cfg.metrics.clone(), out.to_path_buf());
    gapferry_metrics::serve(
        addr,
        std::sync::Arc::new(registry),
        move || m.refresh(),
        move || gapferry_receiver::metrics::health(&h, &health_dir),
    )
    .with_context(|| format!("cannot serve metrics on {addr}"))?;
    Ok(())
}

/// The log line of a receiver that stopped: outcomes and counters.
fn log_stopped(r: &gapferry_receiver::pipeline::ListenReport) {
    let s = &r.report.summary;
    let rejected = |label: &str| r.report.assembler.rejected.get(label).copied().unwrap_or(0);
    tracing::info!(
        delivered = s.delivered,
        failed = s.failed,
        lost = s.lost,
        datagrams = r.received,
        rejected = r.report.assembler.rejected_total(),
        replayed = rejected("replayed"),
        retired_key = rejected("retired_key"),
        queue_full = r.queue_full,
        own_drops = r.report.assembler.own_drops.total(),
        "stopped"
    );
}

/// Every lane's address (the --bind flags, else `bind` in the configuration file), and
/// all of them comma-separated for messages.
fn lane_binds(flags: &[String], file: &FileConfig) -> Result<(Vec<SocketAddr>, String)> {
    let binds: Vec<SocketAddr> = match (flags, &file.bind) {
        ([], Some(b)) => b
            .split(',')
            .map(|b| resolve(b.trim()))
            .collect::<Result<_>>(),
        ([], None) => anyhow::bail!("--bind is required (or `bind` in --config)"),
        (b, _) => b.iter().map(|b| resolve(b)).collect::<Result<_>>(),
    }?;
    Ok((binds.clone(), comma_list(&binds)))
}

fn comma_list(addrs: &[SocketAddr]) -> String {
    let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
    list.join(",")
}

fn run_listen(a: ListenArgs) -> Result<()> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let (binds, bind) = lane_binds(&a.bind, &file)?;
    let out = a
        .out
        .or(file.out.clone())
        .context("--out is required (or `out` in --config)")?;
    let mut cfg = ReceiverConfig::new(out.clone());
    cfg.destinations = file.destinations(&out)?;
    if let Some(k) = a.keep_images {
        cfg.destinations.keep_images = k.max(1);
    }
    let keys = if a.key.is_empty() {
        file.keys.clone()
    } else {
        a.key.clone()
    };
    let retired = if a.retired_key.is_empty() {
        file.retired_keys.clone()
    } else {
        a.retired_key.clone()
    };
    let retired = gapferry_shell::keys::read_keys(&retired)?;
    let accepted = gapferry_shell::keys::read_keys(&keys)?;
    if let Some(k) = retired.iter().find(|k| accepted.contains(k)) {
        anyhow::bail!(
            "key {} is both accepted (--key) and retired (--retired-key): drop it from one",
            k.id()
        );
    }
    if !retired.is_empty() && accepted.is_empty() {
        anyhow::bail!("--retired-key needs at least one --key: a receiver without keys accepts untagged datagrams");
    }
    for k in &accepted {
        tracing::info!(key = %k.id(), "accepting datagrams tagged with this key");
    }
    for k in &retired {
        tracing::info!(key = %k.id(), "refusing datagrams tagged with this retired key (counted as retired_key)");
    }
    cfg.keys = KeyRing::new(accepted).with_retired(retired);
    apply_link_options(&mut cfg, (a.recv_buffer, a.mtu, a.session_timeout), &file)?;
    cfg.block_threads = a.threads.unwrap_or(cfg.block_threads);
    apply_limits(&mut cfg, &file.limits);
    // Created with the configured directory mode: readers traverse it to the deliveries.
    cfg.destinations
        .permissions
        .default
        .create_dir_all(&out)
        .with_context(|| format!("cannot create --out {}", out.display()))?;
    cfg.destinations
        .check_separate(&out)
        .context("the delivery directories overlap")?;
    if keys.is_empty() {
        tracing::warn!(
            "no key: the receiver accepts datagrams from anyone who can reach {bind}, who can then deliver any file, event or image; \
             make one with `gapferry-send keygen /etc/gapferry/link.key` on the low side, copy it to this side and give it to both with --key (or `keys` in the configuration)"
        );
    }
    if let Some(addr) = a.metrics.or(file.metrics) {
        serve_metrics(addr, &cfg, &out)?;
    }
    let listener =
        Listener::bind_lanes(&binds, cfg).with_context(|| format!("cannot listen on {bind}"))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, shutdown.clone())
            .context("cannot install signal handlers")?;
    }
    tracing::info!(bind = %comma_list(&listener.local_addrs()?), out = %out.display(), authenticated = !keys.is_empty(), "listening");
    let r = listener.run(shutdown).context("receiving stopped")?;
    log_stopped(&r);
    Ok(())
}

/// The state directory, feed and archive a `feed` command works on.
fn open_feed(
    a: &FeedArgs,
) -> Result<(
    PathBuf,
    gapferry_feeds::MispFeed,
    gapferry_feeds::Archive,
    bool,
)> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let out = a
        .out
        .clone()
        .or(file.out.clone())
        .context("--out is required (or `out` in --config)")?;
    let state = out.join(gapferry_receiver::records::STATE_DIR);
    anyhow::ensure!(
        state.is_dir(),
        "{} holds no receiver state (is it the receiver's --out?)",
        out.display()
    );
    let dest = file.destinations(&out)?;
    let feed = gapferry_feeds::MispFeed::new(&dest.misp).with_publish(dest.permissions.misp);
    let archive =
        gapferry_feeds::Archive::new(state.join(gapferry_receiver::feedcare::ARCHIVE_DIR));
    Ok((state, feed, archive, dest.archive.enabled))
}

/// `DATE` as a time: `YYYY-MM-DD` (midnight UTC) or RFC 3339.
fn parse_since(text: &str) -> Result<std::time::SystemTime> {
    let full = if text.len() == 10 {
        format!("{text}T00:00:00Z")
    } else {
        text.to_string()
    };
    humantime::parse_rfc3339_weak(&full)
        .with_context(|| format!("--since {text:?} is not a date: give YYYY-MM-DD (UTC) or an RFC 3339 time such as 2026-01-31T12:00:00Z"))
}

fn run_feed(cmd: FeedCommand) -> Result<()> {
    use gapferry_receiver::feedcare;
    match cmd {
        FeedCommand::Rebuild(a) => {
            let (state, mut feed, _, _) = open_feed(&a)?;
            let s = feedcare::rebuild(&state, &mut feed).context("feed rebuild failed")?;
            println!(
                "feed rebuilt: {} events in {}/manifest.json ({} entries dropped whose file is gone)",
                s.entries,
                feed.dir().display(),
                s.dropped
            );
        }
        FeedCommand::Republish { feed, since, uuids } => {
            let filter = feedcare::RepublishFilter {
                since: since.as_deref().map(parse_since).transpose()?,
                uuids,
            };
            let (state, mut misp, archive, enabled) = open_feed(&feed)?;
            if !enabled {
                tracing::warn!(
                    "[archive] enabled = false: only what was archived before is republished"
                );
            }
            let s = feedcare::republish(&state, &mut misp, &archive, &filter, |done, total| {
                if total > feedcare::REPUBLISH_CHUNK {
                    eprintln!("republish: {done}/{total} archived events");
                }
            })
            .context("feed republish failed")?;
            println!(
                "republished {} of {} archived events ({} already in the feed, {} newer in the feed, {} invalid); manifest.json lists {} events",
                s.republished, s.selected, s.already_there, s.newer_in_feed, s.invalid, s.entries
            );
            anyhow::ensure!(
                s.invalid == 0,
                "{} archived files are not valid MISP events (named in the log above)",
                s.invalid
            );
        }
    }
    Ok(())
}

fn run_replay(a: ReplayArgs) -> Result<()> {
    let mut cfg = ReceiverConfig::new(a.out.clone());
    cfg.keys = gapferry_shell::keys::read_key_ring(&a.key)?;
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create --out {}", a.out.display()))?;
    let opts = ReplayOptions {
        port: a.port,
        speed: a.speed,
    };
    let r = replay(&a.files, &cfg, &opts).context("replay stopped")?;
    let s = &r.report.summary;
    let stats = &r.report.assembler;
    println!(
        "datagrams: {} read, {} ignored (other port or not gapferry), {} rejected; frames without UDP: {}",
        r.datagrams,
        r.ignored,
        stats.rejected_total(),
        r.frames_ignored
    );
    println!(
        "objects: {} delivered, {} failed, {} lost",
        s.delivered, s.failed, s.lost
    );
    if s.notable_dropped > 0 {
        println!(
            "  ({} earlier ones are in {}/{}/{})",
            s.notable_dropped,
            a.out.display(),
            gapferry_receiver::records::STATE_DIR,
            gapferry_receiver::records::RECORDS_FILE
        );
    }
    for rec in &s.notable {
        println!(
            "  {:?} {} {}",
            rec.outcome,
            rec.name.as_deref().unwrap_or("(name unknown)"),
            rec.reason.as_deref().unwrap_or("")
        );
    }
    if let Some(e) = r.error {
        anyhow::bail!("{e} (objects complete before that point were delivered)");
    }
    if s.failed + s.lost > 0 {
        anyhow::bail!("{} objects failed and {} were lost", s.failed, s.lost);
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli.log.init(false);
    let result = match cli.command {
        Command::Generate(g) => g
            .write::<Cli>(env!("CARGO_BIN_NAME"), &mut std::io::stdout())
            .context("cannot write to standard output"),
        Command::Listen(a) => run_listen(a),
        Command::Replay(a) => run_replay(a),
        Command::Feed(c) => run_feed(c),
        Command::Status { out, last } => {
            if !out.join(gapferry_receiver::records::STATE_DIR).is_dir() {
                Err(anyhow::anyhow!(
                    "{} holds no receiver state (is it the receiver's --out?)",
                    out.display()
                ))
            } else {
                gapferry_receiver::status::report(&out, last)
                    .map(|t| print!("{t}"))
                    .context("cannot read the receiver's state")
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gapferry-recv: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
