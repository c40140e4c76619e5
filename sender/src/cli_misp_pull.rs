//! The binary's side of `misp-pull`: its flags, merged over `[misp_pull]` of the
//! configuration file, the one-shot run, and the watch service's periodic pull.

use anyhow::{Context, Result};
use clap::Args;
use gapferry_sender::config::FileConfig;
use gapferry_sender::misp_pull::{
    self, MispPullConfig, MispPullMetrics, MispPullSection, MispPuller, Published,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Flags of `misp-pull`; each wins over its key under `[misp_pull]`.
#[derive(Args)]
pub struct MispPullArgs {
    /// Configuration file (TOML): `[misp_pull]`, and the outbox from `[watch]`.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The outbox: events are written into OUTBOX/misp/<uuid>.json.
    #[arg(long)]
    outbox: Option<PathBuf>,
    /// MISP's base URL, e.g. https://misp.example.org.
    #[arg(long)]
    url: Option<String>,
    /// File holding the API key (only the key; not readable by others).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// Pull events carrying this tag (repeat: any of them), e.g. tlp:clear or airgap:export.
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Pull events created by this organisation (name or id; repeat: any of them).
    #[arg(long = "org", value_name = "ORG")]
    orgs: Vec<String>,
    /// Which events by their published flag: yes, no or any [default: yes].
    #[arg(long)]
    published: Option<Published>,
    /// Events per restSearch page [default: 100].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    limit: Option<u32>,
    /// PEM file of the CA(s) to trust instead of the built-in roots (TLS is always verified).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Timeout of one request in seconds [default: 60].
    #[arg(long)]
    timeout: Option<f64>,
    /// Further attempts after a timeout, a connection error or a 5xx, with backoff [default: 3].
    #[arg(long)]
    retries: Option<u32>,
}

fn merged(a: &MispPullArgs, file: Option<&MispPullSection>) -> MispPullSection {
    let f = file.cloned().unwrap_or_default();
    MispPullSection {
        url: a.url.clone().or(f.url),
        key_file: a.key_file.clone().or(f.key_file),
        tags: if a.tags.is_empty() {
            f.tags
        } else {
            a.tags.clone()
        },
        orgs: if a.orgs.is_empty() {
            f.orgs
        } else {
            a.orgs.clone()
        },
        published: a.published.or(f.published),
        limit: a.limit.or(f.limit),
        ca_file: a.ca_file.clone().or(f.ca_file),
        timeout: a.timeout.or(f.timeout),
        retries: a.retries.or(f.retries),
        interval: f.interval,
    }
}

/// `gapferry-send misp-pull`: one pull, then exit (non-zero when it failed).
pub fn run(a: MispPullArgs) -> Result<()> {
    let file = match &a.config {
        Some(p) => FileConfig::load(p)?,
        None => FileConfig::default(),
    };
    let outbox = a
        .outbox
        .clone()
        .or(file.watch.outbox.clone())
        .context("--outbox is required (or `outbox` under [watch] in --config)")?;
    let cfg = MispPullConfig::from_section(&merged(&a, file.misp_pull.as_ref()))?;
    let mut puller = MispPuller::new(cfg, &outbox, MispPullMetrics::default())?;
    let state = puller.state_path().to_path_buf();
    let summary = puller
        .pull()
        .with_context(|| format!("misp-pull failed (recorded in {})", state.display()))?;
    eprintln!(
        "misp-pull: {} events written into {}, {} already there, {} requests; position in {}",
        summary.written,
        outbox.join("misp").display(),
        summary.already_had,
        summary.pages,
        state.display()
    );
    Ok(())
}

/// The watch service's `[misp_pull]`: a thread pulling every `interval` into `outbox`.
pub fn start_service(
    file: &FileConfig,
    outbox: &Path,
    metrics: MispPullMetrics,
    shutdown: Arc<AtomicBool>,
) -> Result<()> {
    let Some(section) = &file.misp_pull else {
        return Ok(());
    };
    let cfg = MispPullConfig::from_section(section).context("[misp_pull] in --config")?;
    let interval = cfg.interval;
    let puller = MispPuller::new(cfg, outbox, metrics).context("[misp_pull] in --config")?;
    tracing::info!(
        url = %puller.config().url,
        interval_s = interval.as_secs_f64(),
        "misp-pull: pulling into the outbox periodically"
    );
    misp_pull::spawn_service(puller, shutdown).context("cannot start the misp-pull thread")?;
    Ok(())
}
