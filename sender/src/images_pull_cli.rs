//! The `images-pull` subcommand's options and run (the binary's side of
//! [`gapferry_sender::images_pull`]).

use anyhow::{bail, Context, Result};
use clap::Args;
use gapferry_sender::images_pull::{ImagePuller, PullConfig, Pulled};
use gapferry_sender::progress::Progress;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `gapferry-send images-pull`.
#[derive(Args)]
pub struct ImagesPullArgs {
    /// The watch service's outbox; images land in OUTBOX/images.
    #[arg(long)]
    outbox: PathBuf,
    /// The image server's base URL: the directory holding its latest_<Name> links.
    #[arg(long)]
    base_url: String,
    /// Image names as in the server's latest_<Name> links (MISP, MISP-modules, MySQL, Redis,
    /// Valkey); repeat or separate with commas.
    #[arg(long = "image", required = true, value_delimiter = ',')]
    images: Vec<String>,
    /// OpenPGP public keyring (binary, e.g. `gpg --dearmor` of the publisher's key): an image
    /// is put in the outbox only when its .sig verifies against it.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// PEM file of the CA certificates to trust (instead of the built-in Mozilla roots).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// Seconds allowed to connect and for every read [default: 30].
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    /// Retries after a network error, a timeout or a server error (5xx) [default: 4].
    #[arg(long, default_value_t = 4)]
    retries: u32,
    /// Seconds before the first retry, doubled after each [default: 2].
    #[arg(long, default_value_t = 2.0)]
    backoff: f64,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Pulls every named image; fails when one could not be pulled.
pub fn run(a: ImagesPullArgs) -> Result<()> {
    let mut cfg = PullConfig::new(&a.base_url, a.images, a.outbox.clone());
    cfg.keyring = a.keyring;
    cfg.ca_file = a.ca_file;
    cfg.timeout = Duration::from_secs_f64(a.timeout.max(0.1));
    cfg.retries = a.retries;
    cfg.backoff = Duration::from_secs_f64(a.backoff.max(0.0));
    let puller = ImagePuller::new(cfg).context("images-pull cannot start")?;
    let mut bar: Option<Progress> = None;
    let mut logged_tenth = 0;
    let mut progress = |file: &str, done: u64, total: u64| {
        if done == 0 {
            let p = Progress::new(total, !a.quiet);
            p.set_message(file.to_string());
            bar = Some(p);
            logged_tenth = 0;
            tracing::info!(file, bytes = total, "downloading");
            return;
        }
        if let Some(p) = &bar {
            p.advance(done.saturating_sub(p.position()));
        }
        // Service logs get a line every tenth.
        let tenth = (done * 10).checked_div(total).unwrap_or(10);
        if tenth > logged_tenth && tenth < 10 {
            logged_tenth = tenth;
            tracing::info!(file, done, total, "downloading: {}0%", tenth);
        }
        if done == total {
            if let Some(p) = bar.take() {
                p.finish();
            }
        }
    };
    let results = puller.pull_all(&mut progress);
    let mut failed = 0;
    for (name, r) in results {
        match r {
            Ok(Pulled::Downloaded {
                file,
                bytes,
                signed,
            }) => tracing::info!(image = %name, file, bytes, signed, "pulled into the outbox"),
            Ok(Pulled::UpToDate { file }) => {
                tracing::info!(image = %name, file, "up to date; nothing downloaded")
            }
            Err(e) => {
                failed += 1;
                tracing::error!(image = %name, "not pulled: {e}");
            }
        }
    }
    if failed > 0 {
        bail!("{failed} image(s) not pulled (see the errors above)");
    }
    Ok(())
}
