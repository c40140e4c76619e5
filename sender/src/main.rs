//! `gapferry-send`: the low-side command line.

mod cli_misp_pull;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use gapferry_common::layout::IpVersion;
use gapferry_sender::config::{FileConfig, OneOrMany};
use gapferry_sender::control::ControlPlane;
use gapferry_sender::progress::Progress;
use gapferry_sender::rate::{parse_objects_burst, parse_objects_rate, parse_rate};
use gapferry_sender::sink::{DatagramSink, PcapSink, UdpSink};
use gapferry_sender::source::KindMode;
use gapferry_sender::watch::{AfterSend, WatchConfig, Watcher};
use gapferry_sender::{keygen, lanes, source, SenderConfig, SenderSession};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod images_pull_cli;

/// Freed block buffers are reused in-process rather than handed back to the kernel and
/// faulted in again: on the bulk path that churn cost about a CPU-second per GiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sends files one way through a data diode as RaptorQ-protected UDP.
#[derive(Parser)]
#[command(name = "gapferry-send", version, about, long_about = None)]
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
    /// Send files or directory trees, then exit.
    ///
    /// Example: gapferry-send file export/ report.json --to 192.0.2.10:7000 --rate 800M
    File(FileArgs),
    /// Run the outbox service: send what lands in OUTBOX/{misp,stix,images,files}, then move it to sent/.
    ///
    /// Example: gapferry-send watch --outbox /srv/gapferry/outbox --to 192.0.2.10:7000 --rate 800M
    Watch(WatchArgs),
    /// Pull the events a MISP marks (tags, organisations) into OUTBOX/misp, from where it stopped last time.
    ///
    /// Example: gapferry-send misp-pull --outbox /srv/gapferry/outbox --url https://misp.example.org --key-file /etc/gapferry/misp.key --tag airgap:export
    MispPull(cli_misp_pull::MispPullArgs),
    /// Mirror the newest images of a MISP-airgap image server into OUTBOX/images.
    ///
    /// Example: gapferry-send images-pull --outbox /srv/gapferry/outbox --base-url https://images.example/ --image MISP,MySQL,Valkey --keyring /etc/gapferry/misp-airgap.gpg
    ImagesPull(images_pull_cli::ImagesPullArgs),
    /// Print what the outbox holds and how the last MISP and image pulls went, from the state on disk.
    ///
    /// Example: gapferry-send status --outbox /srv/gapferry/outbox
    Status {
        /// The outbox (as given to `watch`).
        #[arg(long)]
        outbox: Option<PathBuf>,
        /// Configuration file whose [watch] outbox to read.
        #[arg(long)]
        config: Option<PathBuf>,
    },
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

/// Options shared by `file` and `watch`.
#[derive(Args)]
struct LinkArgs {
    /// Configuration file (TOML); flags given here win over it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Receiver (or diode far side) as HOST:PORT; give it again for more lanes (each
    /// block's symbols are striped across them, control datagrams go on every lane).
    #[arg(long)]
    to: Vec<String>,
    /// Local address to send from, as HOST:PORT; with lanes, none or one per --to.
    #[arg(long)]
    bind: Vec<String>,
    /// Link rate in bits/s of IP packets, with k/M/G suffixes; with lanes, once (every
    /// lane at that rate) or once per --to [default: 100M].
    #[arg(long, value_parser = parse_rate)]
    rate: Vec<u64>,
    /// Most objects a second on average, so a long stream of small objects never outruns
    /// what the receiver commits (each costs it a file and an fsync, whatever --rate
    /// allows): set it below the commit rate `gapferry-recv status` shows [default: off].
    #[arg(long, value_parser = parse_objects_rate, value_name = "N")]
    max_objects_rate: Option<f64>,
    /// Objects sent back to back before --max-objects-rate applies: the receiver's disk
    /// writer queues 16 384 events, three per small object (about 5 400 objects), while
    /// its disk catches up [default: 4096].
    #[arg(long, value_parser = parse_objects_burst, value_name = "N")]
    objects_burst: Option<u32>,
    /// Repair symbols per block in percent of its source symbols, at least 4 per block [default: 10].
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=1000))]
    repair: Option<u32>,
    /// Path MTU in bytes; every datagram fits an IPv4 or IPv6 packet of this size [default: 1500].
    #[arg(long)]
    mtu: Option<usize>,
    /// Pre-shared key file: every datagram carries an AES-256-GCM-SIV tag.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Passes over every object; each further pass sends fresh repair symbols [default: 1].
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=100))]
    passes: Option<u8>,
    /// Threads preparing blocks (read, hash, compress, RaptorQ) [default: available cores].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Write the datagrams into this pcap file (Ethernet/IP/UDP frames stamped with the
    /// pacing schedule) instead of sending them; --to and --bind only fill the addresses.
    #[arg(long, value_name = "FILE")]
    pcap_out: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// No progress bar, and only warnings and errors in the log.
    #[arg(long, short)]
    quiet: bool,
}

/// How MISP events are prepared (`file` and `watch`).
#[derive(Args)]
struct MispArgs {
    /// Convert MISP events to the feed form PyMISP's to_feed writes (low-side fields
    /// dropped) before hashing; the export on disk is never modified [default: true].
    #[arg(long, value_name = "BOOL")]
    misp_feed_form: Option<bool>,
    /// Distributions exported in feed form, comma-separated; an event outside is not
    /// sent, attributes, objects and reports outside are dropped [default: 0,1,2,3,4,5].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    misp_valid_distributions: Option<Vec<i64>>,
    /// Keep tags marked non-exportable (PyMISP's to_feed drops them).
    #[arg(long)]
    misp_keep_non_exportable_tags: bool,
    /// A misp-objects `objects` directory: the object templates' defaults fill what an
    /// object leaves out, as PyMISP does with its own copy.
    #[arg(long, value_name = "DIR")]
    misp_object_templates: Option<PathBuf>,
}

impl MispArgs {
    fn options(&self, file: &FileConfig) -> Result<source::SourceOptions> {
        let c = &file.misp;
        if !self.misp_feed_form.or(c.feed_form).unwrap_or(true) {
            return Ok(source::SourceOptions {
                misp_feed_form: None,
            });
        }
        let mut form = gapferry_feeds::misp_to_feed::FeedForm::default();
        if let Some(d) = self
            .misp_valid_distributions
            .clone()
            .or(c.valid_distributions.clone())
        {
            form.valid_distributions = d;
        }
        form.keep_non_exportable_tags =
            self.misp_keep_non_exportable_tags || c.keep_non_exportable_tags == Some(true);
        if let Some(dir) = self
            .misp_object_templates
            .clone()
            .or(c.object_templates.clone())
        {
            form.object_templates = gapferry_feeds::misp_to_feed::ObjectTemplates::load(&dir)
                .with_context(|| {
                    format!(
                        "cannot read MISP object templates in {} (a misp-objects `objects` directory)",
                        dir.display()
                    )
                })?;
        }
        Ok(source::SourceOptions {
            misp_feed_form: Some(form),
        })
    }
}

#[derive(Args)]
struct FileArgs {
    /// Files or directories to send (a directory's tree is sent with names relative to it).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Object kind: auto (from content), misp, stix, image or file [default: auto].
    #[arg(long)]
    kind: Option<KindMode>,
    #[command(flatten)]
    misp: MispArgs,
    #[command(flatten)]
    link: LinkArgs,
}

#[derive(Args)]
struct WatchArgs {
    /// The outbox: files dropped in OUTBOX/misp, /stix, /images, /files (or at the top, kind from content).
    #[arg(long)]
    outbox: Option<PathBuf>,
    /// Seconds a file must stay unchanged before it is taken [default: 2].
    #[arg(long)]
    settle: Option<f64>,
    /// Where sent files are moved [default: OUTBOX/sent].
    #[arg(long)]
    sent_dir: Option<PathBuf>,
    /// Delete sent files instead of moving them.
    #[arg(long)]
    delete_sent: bool,
    /// Carousel: send the last N files again every --resend-every seconds (0: off) [default: 0].
    #[arg(long)]
    resend_last: Option<usize>,
    /// Carousel period in seconds [default: 600].
    #[arg(long)]
    resend_every: Option<f64>,
    /// Seconds between two scans of the outbox without an outbox event: a safety net
    /// where inotify works, the only scans where it does not [default: 5].
    #[arg(long)]
    poll_interval: Option<f64>,
    #[command(flatten)]
    misp: MispArgs,
    #[command(flatten)]
    link: LinkArgs,
}

fn resolve(flag: &str, to: &str) -> Result<SocketAddr> {
    to.to_socket_addrs()
        .with_context(|| format!("{flag} {to:?} is not HOST:PORT"))?
        .next()
        .with_context(|| format!("{flag} {to:?} resolves to no address"))
}

/// The source address written into capture frames when --bind is not given.
fn default_source(to: SocketAddr) -> SocketAddr {
    match to {
        SocketAddr::V4(_) => SocketAddr::from(([127, 0, 0, 1], 40_000)),
        SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 40_000)),
    }
}

/// Each lane's destination, bind address and rate, from flags and the configuration file.
fn lanes_of(
    link: &LinkArgs,
    file: &FileConfig,
) -> Result<Vec<(SocketAddr, Option<SocketAddr>, u64)>> {
    let listed = |flag: &Vec<String>, key: &Option<OneOrMany>| match flag.is_empty() {
        true => key.clone().map(OneOrMany::into_vec).unwrap_or_default(),
        false => flag.clone(),
    };
    let rates = match (&link.rate[..], &file.rate) {
        ([], Some(r)) => r
            .split(',')
            .map(|r| parse_rate(r.trim()))
            .collect::<Result<Vec<_>, _>>()
            .context("`rate` in --config")?,
        (r, _) => r.to_vec(),
    };
    let to = listed(&link.to, &file.to);
    let binds = listed(&link.bind, &file.bind);
    lanes::plan(to, binds, &rates, SenderConfig::default().rate_bps)?
        .into_iter()
        .map(|(to, bind, rate)| {
            let bind = bind.map(|b| resolve("--bind", &b)).transpose()?;
            Ok((resolve("--to", &to)?, bind, rate))
        })
        .collect()
}

/// The sink: a capture file, one socket, or one socket per lane (with their metrics).
fn open_sink(
    link: &LinkArgs,
    plan: &[(SocketAddr, Option<SocketAddr>, u64)],
    lanes_state: Option<PathBuf>,
) -> Result<(Box<dyn DatagramSink + Send>, Option<lanes::LaneMetrics>)> {
    if let Some(dir) = &lanes_state {
        // Lanes of an earlier run would read as this one's in `status`.
        let _ = std::fs::remove_file(dir.join(lanes::state::LANES_FILE));
    }
    let connect = |to: SocketAddr, bind| {
        UdpSink::connect(to, bind).with_context(|| format!("cannot open a UDP socket towards {to}"))
    };
    match (&link.pcap_out, plan) {
        (Some(path), [(to, bind, _)]) => Ok((
            Box::new(
                PcapSink::create(path, bind.unwrap_or_else(|| default_source(*to)), *to)
                    .with_context(|| format!("cannot create capture file {}", path.display()))?,
            ),
            None,
        )),
        (Some(_), _) => bail!("--pcap-out captures one lane: give a single --to"),
        (None, [(to, bind, _)]) => Ok((Box::new(connect(*to, *bind)?), None)),
        (None, plan) => {
            let lanes = plan
                .iter()
                .map(|&(to, bind, rate)| {
                    Ok(lanes::Lane::new(
                        to.to_string(),
                        rate,
                        Box::new(connect(to, bind)?),
                    ))
                })
                .collect::<Result<Vec<_>>>()?;
            let mut lanes = lanes::Lanes::new(lanes);
            if let Some(dir) = lanes_state {
                lanes = lanes.with_state_file(dir);
            }
            let metrics = lanes.metrics();
            Ok((Box::new(lanes), Some(metrics)))
        }
    }
}

/// A session built from flags and the configuration file.
/// The metrics endpoint runs on `runtime` when the daemon has one (`watch`), lanes keep
/// their state for `status` in `lanes_state` when given (`watch`).
fn open_session(
    link: &LinkArgs,
    file: &FileConfig,
    runtime: Option<&tokio::runtime::Handle>,
    lanes_state: Option<PathBuf>,
) -> Result<SenderSession> {
    let plan = lanes_of(link, file)?;
    let rate: u64 = plan.iter().map(|l| l.2).sum();
    let key = link
        .key
        .clone()
        .or(file.key.clone())
        .as_ref()
        .map(|p| gapferry_shell::keys::read_key(p))
        .transpose()?;
    let defaults = SenderConfig::default();
    let cfg = SenderConfig {
        rate_bps: rate,
        repair_percent: link
            .repair
            .or(file.repair)
            .unwrap_or(defaults.repair_percent),
        mtu: link.mtu.or(file.mtu).unwrap_or(defaults.mtu),
        // IPv4 headers leave 20 more bytes of the MTU to the symbol.
        ip: if plan.iter().all(|(to, _, _)| to.is_ipv4()) {
            IpVersion::V4
        } else {
            IpVersion::V6
        },
        key,
        passes: link.passes.or(file.passes).unwrap_or(defaults.passes),
        threads: link
            .threads
            .or(file.threads)
            .map_or(defaults.threads, usize::from),
        max_objects_rate: match (link.max_objects_rate, file.max_objects_rate) {
            (Some(r), _) => Some(r),
            (None, Some(r)) => {
                Some(parse_objects_rate(&r.to_string()).context("`max_objects_rate` in --config")?)
            }
            (None, None) => None,
        },
        objects_burst: match (link.objects_burst, file.objects_burst) {
            (Some(b), _) => b,
            (None, Some(b)) => {
                parse_objects_burst(&b.to_string()).context("`objects_burst` in --config")?
            }
            (None, None) => defaults.objects_burst,
        },
        ..defaults
    };
    let (sink, lane_metrics) = open_sink(link, &plan, lanes_state)?;
    let mut session = SenderSession::new(cfg, sink)?;
    // Hidden: tests of the end of the object id space start the session's ids there.
    if let Some(first) = std::env::var("GAPFERRY_TEST_FIRST_OBJECT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        session.skip_ids_to(first);
    }
    if let Some(addr) = link.metrics.or(file.metrics) {
        let mut registry = gapferry_metrics::prometheus_client::registry::Registry::default();
        session.metrics().register(&mut registry);
        if let Some(m) = &lane_metrics {
            m.register(&mut registry);
        }
        let registry = std::sync::Arc::new(registry);
        match runtime {
            Some(rt) => gapferry_metrics::serve_on(rt, addr, registry, || {}, || Ok(())),
            None => gapferry_metrics::serve(addr, registry, || {}, || Ok(())),
        }
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    }
    let to: Vec<String> = plan.iter().map(|l| l.0.to_string()).collect();
    tracing::info!(session = format_args!("{:016x}", session.id()), to = %to.join(","), rate_bps = rate, max_objects_rate = session.config().max_objects_rate, "session started");
    Ok(session)
}

fn run_status(outbox: Option<PathBuf>, config: Option<PathBuf>) -> Result<()> {
    let file = match &config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let outbox = outbox
        .or(file.watch.outbox)
        .context("give --outbox DIR (or --config FILE with `outbox` under [watch])")?;
    print!("{}", gapferry_sender::status::report(&outbox)?);
    Ok(())
}

fn load_config(link: &LinkArgs) -> Result<FileConfig> {
    Ok(match &link.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    })
}

fn run_file(a: FileArgs) -> Result<()> {
    let file = load_config(&a.link)?;
    let kind = match (a.kind, &file.kind) {
        (Some(k), _) => k,
        (None, Some(k)) => k
            .parse()
            .map_err(anyhow::Error::msg)
            .context("`kind` in --config")?,
        (None, None) => KindMode::Auto,
    };
    let files = source::collect_with(&a.paths, kind, &a.misp.options(&file)?)?;
    let mut session = open_session(&a.link, &file, None, None)?;
    let passes = session.config().passes as u64;
    let total: u64 = files.iter().map(|f| f.size).sum::<u64>() * passes;
    tracing::info!(objects = files.len(), bytes = total, "sending");
    let progress = Progress::new(total, !a.link.quiet);
    session.show_pace_on(&progress);
    let reports = session
        .send_files(&files, &progress)
        .context("sending stopped")?;
    session.finish().context("sending stopped")?;
    progress.finish();
    if let Some(c) = session.pace_counts().filter(|c| c.held > 0) {
        tracing::info!(
            held = c.held,
            objects = c.objects,
            waited_s = c.waited.as_secs_f64(),
            "the object pace (--max-objects-rate) held objects back: it, not --rate, set the speed"
        );
    }
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
                r.error.as_deref().unwrap_or("")
            );
        }
        bail!(
            "{} of {} objects could not be sent",
            failed.len(),
            reports.len()
        );
    }
    Ok(())
}

fn run_watch(a: WatchArgs) -> Result<()> {
    let file = load_config(&a.link)?;
    let outbox = a
        .outbox
        .or(file.watch.outbox.clone())
        .context("--outbox is required (or `outbox` under [watch] in --config)")?;
    let mut cfg = WatchConfig::new(outbox.clone());
    if let Some(s) = a.settle.or(file.watch.settle) {
        cfg.settle = Duration::from_secs_f64(s.max(0.0));
    }
    if a.delete_sent || file.watch.delete_sent == Some(true) {
        cfg.after_send = AfterSend::Delete;
    } else if let Some(d) = a.sent_dir.or(file.watch.sent_dir.clone()) {
        cfg.after_send = AfterSend::MoveTo(d);
    }
    cfg.source = a.misp.options(&file)?;
    cfg.resend_last = a.resend_last.or(file.watch.resend_last).unwrap_or(0);
    if let Some(s) = a.resend_every.or(file.watch.resend_every) {
        cfg.resend_every = Duration::from_secs_f64(s.max(0.1));
    }
    if let Some(s) = a.poll_interval.or(file.watch.poll_interval) {
        cfg.poll_interval = Duration::from_secs_f64(s.max(0.1));
    }
    let poll_interval = cfg.poll_interval;
    let mut watcher =
        Watcher::new(cfg).with_context(|| format!("cannot use the outbox {}", outbox.display()))?;
    let shutdown = Arc::new(AtomicBool::new(false));
    let (control, wakeups) = ControlPlane::start(&outbox, poll_interval, shutdown.clone())
        .context("cannot start the control plane (signals, outbox events)")?;
    watcher.wake_on(wakeups);
    let journal = outbox.join(gapferry_sender::watch::JOURNAL_DIR);
    let mut session = open_session(
        &a.link,
        &file,
        Some(control.runtime()),
        Some(journal.clone()),
    )?;
    session.report_pace_to(journal);
    let pull_metrics = session.metrics().misp_pull.clone();
    cli_misp_pull::start_service(&file, &outbox, pull_metrics, shutdown.clone())?;
    tracing::info!(outbox = %outbox.display(), "watching");
    let stats = watcher
        .run(&mut session, &shutdown, &Progress::hidden())
        .context("sending stopped")?;
    drop(control);
    session.finish().context("sending stopped")?;
    tracing::info!(
        sent = stats.files_sent,
        recovered = stats.files_recovered,
        failed = stats.files_failed,
        "stopped"
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let quiet = match &cli.command {
        Command::File(a) => a.link.quiet,
        Command::Watch(a) => a.link.quiet,
        _ => false,
    };
    cli.log.init(quiet);
    let result = match cli.command {
        Command::Generate(g) => g
            .write::<Cli>(env!("CARGO_BIN_NAME"), &mut std::io::stdout())
            .context("cannot write to standard output"),
        Command::File(a) => run_file(a),
        Command::Watch(a) => run_watch(a),
        Command::MispPull(a) => cli_misp_pull::run(a),
        Command::ImagesPull(a) => images_pull_cli::run(a),
        Command::Status { outbox, config } => run_status(outbox, config),
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
