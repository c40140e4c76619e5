//! The low-side service: ships whatever lands in an outbox, then moves it to `sent/`.
//!
//! Kind by sub-directory (`misp/`, `stix/`, `images/`, `files/`; from content at the top
//! level). Only complete files are taken: those unchanged for a settle time (a writer that
//! renames into place is taken at once when the file's mtime is already old enough). Hidden
//! files (`.name`) are ignored, so writers can prepare files under a dot-name.
//!
//! A file the high side would refuse for its kind (a STIX file that is not a bundle, MISP
//! JSON without acceptable events, an image without `metadata.yaml`) is never sent: it is
//! moved to `<outbox>/refused/` (same relative path) with a `<name>.reason` file beside
//! it, and logged; it is not looked at again until someone puts it back.
//!
//! Threat intel has priority: every pending MISP, STIX or plain file goes out between two
//! windows (about 11 MB) of an image, so a 10 KB event never waits behind a 3 GB image,
//! and the image still progresses. A journal in `<outbox>/.gapferry-send/` records each
//! file sent in full, so a restart neither loses nor blindly re-sends anything.
//!
//! This module owns the configuration and the scheduling loop (intel between image
//! windows, the carousel when idle); its rooms: `journal`, `scan` (which files are
//! complete, what they become), `image_pass` (images window by window), `carousel`, and
//! `disposal` (sent, refused, failed). The loop runs on the data plane's thread; outbox
//! events, the polling timer and signals come from the control plane ([`crate::control`])
//! as wake-ups on a bounded channel.

use crate::error::StopOnSink;
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::{self, SourceFile};
use crossbeam_channel::Receiver;
use gapferry_common::ObjectKind;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

mod carousel;
mod disposal;
mod image_pass;
mod journal;
mod scan;

pub use journal::JOURNAL_DIR;
use journal::{Journal, Stamp};

/// Object ids left below which the service ends its session and starts a fresh one, with
/// no object in progress: far more than one step of the loop assigns, so the id space
/// (2^32 - 1 ids, which a sustained stream of small objects uses up in weeks) never wraps.
const RENEW_BELOW: u64 = 1 << 24;

/// Whether `session`'s object ids ran low: the loop assigns no more and renews it.
fn ids_run_low(session: &SenderSession) -> bool {
    session.ids_left() < RENEW_BELOW
}

/// How long the loop waits when idle before it sends a heartbeat and looks again.
const IDLE_TICK: Duration = Duration::from_millis(125);
/// Intel bytes sent between two image windows at most, so the image keeps moving.
const INTEL_BYTES_PER_IMAGE_WINDOW: u64 = 32 << 20;
/// Default of [`WatchConfig::poll_interval`].
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// What to do with a file once it was sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterSend {
    /// Move it under this directory, keeping its path relative to the outbox.
    MoveTo(PathBuf),
    /// Delete it.
    Delete,
}

/// How the watch service runs.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The outbox directory.
    pub outbox: PathBuf,
    /// How long a file must stay unchanged before it is taken.
    pub settle: Duration,
    /// What happens to sent files.
    pub after_send: AfterSend,
    /// Carousel: the last this many files sent are sent again every `resend_every`
    /// (0: off). The receiver skips what it already has, so this only fills gaps.
    pub resend_last: usize,
    /// Carousel period.
    pub resend_every: Duration,
    /// Where files the high side would refuse are moved, with a `.reason` file each.
    pub refused_dir: PathBuf,
    /// How files become objects (MISP feed form).
    pub source: source::SourceOptions,
    /// How often the outbox is scanned without an outbox event: the only scans where
    /// events are unavailable, a safety net where they are.
    pub poll_interval: Duration,
}

/// Directory under the outbox holding refused files.
pub const REFUSED_DIR: &str = "refused";

impl WatchConfig {
    /// Defaults for `outbox`: 2 s settle time, sent files moved to `<outbox>/sent`.
    pub fn new(outbox: PathBuf) -> Self {
        WatchConfig {
            after_send: AfterSend::MoveTo(outbox.join("sent")),
            refused_dir: outbox.join(REFUSED_DIR),
            source: source::SourceOptions::default(),
            outbox,
            settle: Duration::from_secs(2),
            resend_last: 0,
            resend_every: Duration::from_secs(600),
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }
}

/// A file of the outbox on its way: its objects and how many are still to send.
struct Job {
    rel: String,
    path: PathBuf,
    stamp: Stamp,
    objects: Vec<SourceFile>,
    ids: Vec<u32>,
    failed: bool,
}

impl Job {
    fn new(rel: String, path: PathBuf, stamp: Stamp, objects: Vec<SourceFile>) -> Self {
        Job {
            rel,
            path,
            stamp,
            objects,
            ids: vec![],
            failed: false,
        }
    }

    fn is_image(&self) -> bool {
        self.objects.iter().any(|o| o.kind == ObjectKind::Image)
    }
}

/// The watch service.
pub struct Watcher {
    cfg: WatchConfig,
    journal: Journal,
    seen: HashMap<String, (Stamp, Instant)>,
    queued: HashSet<String>,
    intel: VecDeque<Job>,
    images: VecDeque<Job>,
    active: Option<image_pass::ActiveImage>,
    last_scan: Option<Instant>,
    /// An outbox event or the polling timer asked for a scan.
    rescan: bool,
    /// When the earliest file still settling will be complete.
    settling_until: Option<Instant>,
    wakeups: Option<Receiver<()>>,
    pending: usize,
    recent: VecDeque<(String, PathBuf)>,
    last_resend: Instant,
    descriptors: carousel::DescriptorCache,
}

/// Counters of what the service did, for logs and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WatchStats {
    /// Files sent in full and moved or deleted.
    pub files_sent: u64,
    /// Files taken from the journal without re-sending (sent before a restart).
    pub files_recovered: u64,
    /// Files that could not be sent (left in the outbox).
    pub files_failed: u64,
}

impl Watcher {
    /// Opens the outbox and its journal.
    pub fn new(cfg: WatchConfig) -> io::Result<Self> {
        std::fs::create_dir_all(&cfg.outbox)?;
        for sub in ["misp", "stix", "images", "files"] {
            std::fs::create_dir_all(cfg.outbox.join(sub))?;
        }
        if let AfterSend::MoveTo(d) = &cfg.after_send {
            std::fs::create_dir_all(d)?;
        }
        Ok(Watcher {
            journal: Journal::open(&cfg.outbox)?,
            cfg,
            seen: HashMap::new(),
            queued: HashSet::new(),
            intel: VecDeque::new(),
            images: VecDeque::new(),
            active: None,
            last_scan: None,
            rescan: false,
            settling_until: None,
            wakeups: None,
            pending: 0,
            recent: VecDeque::new(),
            last_resend: Instant::now(),
            descriptors: carousel::DescriptorCache::default(),
        })
    }

    /// Scans when something arrives on `wakeups` (outbox events, the polling timer)
    /// instead of on its own polling timer.
    pub fn wake_on(&mut self, wakeups: Receiver<()>) {
        self.wakeups = Some(wakeups);
    }

    /// Runs until `shutdown` is set; the object in progress then stays in the outbox.
    pub fn run(
        &mut self,
        session: &mut SenderSession,
        shutdown: &AtomicBool,
        progress: &Progress,
    ) -> io::Result<WatchStats> {
        let mut stats = WatchStats::default();
        while !shutdown.load(Ordering::Relaxed) {
            if self.active.is_none() && ids_run_low(session) {
                session.renew()?;
            }
            self.scan_when_due(&mut stats);
            session.metrics().outbox_pending.set(self.pending as i64);
            let mut worked = self.send_intel(session, shutdown, progress, &mut stats)?;
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
            worked |= self.step_image(session, progress, &mut stats)?;
            if !worked && self.resend_due() {
                self.resend(session, progress)?;
                worked = true;
            }
            if !worked {
                session.tick()?;
                self.idle();
            }
        }
        if let Some(active) = self.active.take() {
            for id in active.job.ids {
                session.object_done(id);
            }
            tracing::info!(file = %active.job.rel, "stopping: the image in progress stays in the outbox and is sent again at the next start");
        }
        Ok(stats)
    }

    /// Sends pending intel files, up to one window's worth of bytes; true if it sent any.
    fn send_intel(
        &mut self,
        session: &mut SenderSession,
        shutdown: &AtomicBool,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<bool> {
        let mut budget = INTEL_BYTES_PER_IMAGE_WINDOW;
        let mut worked = false;
        while let Some(job) = self.intel.pop_front() {
            let bytes: u64 = job.objects.iter().map(|o| o.size).sum();
            self.send_job(session, job, progress, stats)?;
            worked = true;
            budget = budget.saturating_sub(bytes.max(1));
            if budget == 0 || shutdown.load(Ordering::Relaxed) || ids_run_low(session) {
                break;
            }
            self.scan_when_due(stats);
        }
        Ok(worked)
    }

    /// Scans when woken, when a settling file is due, or (without wake-ups) when the
    /// polling interval passed.
    fn scan_when_due(&mut self, stats: &mut WatchStats) {
        if let Some(w) = &self.wakeups {
            self.rescan |= w.try_iter().count() > 0;
        }
        let settled = self.settling_until.is_some_and(|t| Instant::now() >= t);
        let polled = self.wakeups.is_none()
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() >= self.cfg.poll_interval);
        if self.last_scan.is_none() || self.rescan || settled || polled {
            self.rescan = false;
            self.last_scan = Some(Instant::now());
            self.scan(stats);
        }
    }

    /// Waits for a wake-up or the idle tick, whichever comes first.
    fn idle(&mut self) {
        match &self.wakeups {
            Some(w) => self.rescan |= w.recv_timeout(IDLE_TICK).is_ok(),
            None => std::thread::sleep(IDLE_TICK),
        }
    }

    fn send_job(
        &mut self,
        session: &mut SenderSession,
        mut job: Job,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<()> {
        let passes = session.config().passes;
        for o in job.objects.clone() {
            let (id, result) = session.send_whole(&o, passes, progress);
            job.ids.push(id);
            if let Err(e) = result.stop_on_sink()? {
                tracing::error!(file = %job.rel, object = id, "{e}");
                job.failed = true;
            }
        }
        self.complete(session, job, stats);
        Ok(())
    }
}
