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

use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::{self, KindMode, SourceFile};
use crate::transfer::{self, ObjectTransfer, TransferError};
use gapferry_common::ObjectKind;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

/// Directory under the outbox holding the service's journal.
pub const JOURNAL_DIR: &str = ".gapferry-send";
/// How often the outbox is scanned.
const SCAN_EVERY: Duration = Duration::from_millis(250);
/// Intel bytes sent between two image windows at most, so the image keeps moving.
const INTEL_BYTES_PER_IMAGE_WINDOW: u64 = 32 << 20;

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
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: u128,
}

fn stamp(meta: &std::fs::Metadata) -> Stamp {
    Stamp {
        size: meta.len(),
        mtime_ns: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct JournalEntry {
    event: String,
    path: String,
    #[serde(flatten)]
    stamp: Stamp,
    #[serde(default)]
    session: String,
    #[serde(default)]
    objects: Vec<u32>,
}

/// The append-only record of files sent in full but perhaps not yet moved away.
struct Journal {
    path: PathBuf,
    sent: HashMap<String, Stamp>,
}

impl Journal {
    fn open(outbox: &Path) -> io::Result<Journal> {
        let dir = outbox.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("journal.jsonl");
        let mut sent = HashMap::new();
        if let Ok(text) = std::fs::read_to_string(&path) {
            for line in text.lines() {
                // A torn last line (killed mid-write) is ignored: that file is re-sent.
                let Ok(e) = serde_json::from_str::<JournalEntry>(line) else {
                    continue;
                };
                match e.event.as_str() {
                    "sent" => {
                        sent.insert(e.path, e.stamp);
                    }
                    _ => {
                        sent.remove(&e.path);
                    }
                }
            }
        }
        // Compact: keep only what is still pending.
        let tmp = dir.join("journal.jsonl.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for (p, s) in &sent {
            let e = JournalEntry {
                event: "sent".into(),
                path: p.clone(),
                stamp: s.clone(),
                session: String::new(),
                objects: vec![],
            };
            writeln!(
                f,
                "{}",
                serde_json::to_string(&e).map_err(io::Error::other)?
            )?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Journal { path, sent })
    }

    fn append(&self, e: &JournalEntry) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(e).map_err(io::Error::other)?)?;
        f.sync_data()
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
    active: Option<(Job, usize, u8, ObjectTransfer)>,
    last_scan: Option<Instant>,
    pending: usize,
    recent: VecDeque<(String, PathBuf)>,
    last_resend: Instant,
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
            pending: 0,
            recent: VecDeque::new(),
            last_resend: Instant::now(),
        })
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
            self.scan_if_due(&mut stats);
            session.metrics().outbox_pending.set(self.pending as i64);
            let mut intel_budget = INTEL_BYTES_PER_IMAGE_WINDOW;
            let mut worked = false;
            while let Some(job) = self.intel.pop_front() {
                let bytes: u64 = job.objects.iter().map(|o| o.size).sum();
                self.send_job(session, job, progress, &mut stats)?;
                worked = true;
                intel_budget = intel_budget.saturating_sub(bytes.max(1));
                if intel_budget == 0 || shutdown.load(Ordering::Relaxed) {
                    break;
                }
                self.scan_if_due(&mut stats);
            }
            if shutdown.load(Ordering::Relaxed) {
                break;
            }
            if self.step_image(session, progress, &mut stats)? {
                worked = true;
            }
            if !worked && self.resend_due() {
                self.resend(session, progress)?;
                worked = true;
            }
            if !worked {
                session.tick()?;
                std::thread::sleep(SCAN_EVERY / 2);
            }
        }
        if let Some((job, _, _, _)) = self.active.take() {
            for id in job.ids {
                session.object_done(id);
            }
            tracing::info!(file = %job.rel, "stopping: the image in progress stays in the outbox and is sent again at the next start");
        }
        Ok(stats)
    }

    fn resend_due(&self) -> bool {
        self.cfg.resend_last > 0
            && !self.recent.is_empty()
            && self.active.is_none()
            && self.last_resend.elapsed() >= self.cfg.resend_every
    }

    /// The carousel: sends the last files again from where they were moved.
    fn resend(&mut self, session: &mut SenderSession, progress: &Progress) -> io::Result<()> {
        self.last_resend = Instant::now();
        let recent: Vec<(String, PathBuf)> = self.recent.iter().cloned().collect();
        tracing::info!(
            files = recent.len(),
            "carousel: sending the last files again"
        );
        for (rel, path) in recent {
            let Ok(objects) = self.plan(&rel, &path) else {
                continue;
            };
            for o in objects {
                match session.send_whole(&o, 1, progress).1 {
                    Err(TransferError::Sink(e)) => return Err(e),
                    Err(e) => tracing::debug!(file = %rel, "carousel: {e}"),
                    Ok(()) => {}
                }
            }
        }
        Ok(())
    }

    fn scan_if_due(&mut self, stats: &mut WatchStats) {
        if self.last_scan.is_some_and(|t| t.elapsed() < SCAN_EVERY) {
            return;
        }
        self.last_scan = Some(Instant::now());
        if let Err(e) = self.scan(stats) {
            tracing::warn!(outbox = %self.cfg.outbox.display(), "cannot scan the outbox: {e}");
        }
    }

    fn scan(&mut self, stats: &mut WatchStats) -> io::Result<()> {
        let outbox = self.cfg.outbox.clone();
        let skip_dir = match &self.cfg.after_send {
            AfterSend::MoveTo(d) => Some(d.clone()),
            AfterSend::Delete => None,
        };
        let refused_dir = self.cfg.refused_dir.clone();
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&outbox)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                !hidden && skip_dir.as_deref() != Some(e.path()) && refused_dir != e.path()
            })
        {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!("outbox: {e}");
                    continue;
                }
            };
            if entry.file_type().is_file() {
                found.push(entry.into_path());
            }
        }
        let now = Instant::now();
        let wall = SystemTime::now();
        let mut present = HashSet::new();
        for path in found {
            let rel = path
                .strip_prefix(&outbox)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            present.insert(rel.clone());
            if self.queued.contains(&rel) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            let st = stamp(&meta);
            if self.journal.sent.get(&rel) == Some(&st) {
                // Sent in full before a restart, not yet moved: move it, do not re-send.
                self.dispose(&rel, &path, &st);
                stats.files_recovered += 1;
                continue;
            }
            let old_enough = meta
                .modified()
                .ok()
                .and_then(|m| wall.duration_since(m).ok())
                .is_some_and(|age| age >= self.cfg.settle);
            let stable = match self.seen.get(&rel) {
                Some((prev, since)) if *prev == st => {
                    old_enough || now.duration_since(*since) >= self.cfg.settle
                }
                _ => {
                    self.seen.insert(rel.clone(), (st.clone(), now));
                    old_enough
                }
            };
            if !stable {
                continue;
            }
            if is_signature_of_present_image(&path) {
                continue; // travels with its image
            }
            self.seen.remove(&rel);
            match self.plan(&rel, &path) {
                Ok(objects) => {
                    let job = Job {
                        rel: rel.clone(),
                        path,
                        stamp: st,
                        objects,
                        ids: vec![],
                        failed: false,
                    };
                    tracing::info!(file = %rel, objects = job.objects.len(), "queued");
                    self.queued.insert(rel);
                    if job.is_image() {
                        self.images.push_back(job);
                    } else {
                        self.intel.push_back(job);
                    }
                }
                Err(e) if e.is_refusal() && self.refuse(&rel, &path, &e.to_string()) => {
                    stats.files_failed += 1;
                }
                Err(e) => {
                    stats.files_failed += 1;
                    tracing::error!(file = %rel, "cannot send: {e}; fix or remove the file");
                    // Looked at again only once it changes.
                    self.seen
                        .insert(rel, (st, now + Duration::from_secs(86_400 * 365)));
                }
            }
        }
        self.seen.retain(|k, _| present.contains(k));
        self.pending = present.len();
        Ok(())
    }

    /// The objects a file becomes, by the kind its sub-directory says.
    fn plan(&self, rel: &str, path: &Path) -> Result<Vec<SourceFile>, source::SourceError> {
        let top = rel.split('/').next().unwrap_or("");
        let inner = rel.split_once('/').map_or(rel, |(_, r)| r).to_string();
        let mode = match top {
            "misp" => KindMode::Force(ObjectKind::Misp),
            "stix" => KindMode::Force(ObjectKind::Stix),
            "files" => KindMode::Force(ObjectKind::File),
            "images" => KindMode::Force(ObjectKind::Image),
            _ => KindMode::Auto,
        };
        let name = if rel.contains('/') && matches!(top, "misp" | "stix" | "files" | "images") {
            inner
        } else {
            rel.to_string()
        };
        source::classify_named_with(path, name, mode, &self.cfg.source)
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
            if let Err(e) = result {
                if let TransferError::Sink(e) = e {
                    return Err(e);
                }
                tracing::error!(file = %job.rel, object = id, "{e}");
                job.failed = true;
            }
        }
        self.complete(session, job, stats);
        Ok(())
    }

    /// Sends one window of the image in progress, starting the next image if none is; true if it sent anything.
    fn step_image(
        &mut self,
        session: &mut SenderSession,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<bool> {
        if self.active.is_none() {
            let Some(mut job) = self.images.pop_front() else {
                return Ok(false);
            };
            // The signature (small) goes first, whole; then the image window by window.
            let image_at = job
                .objects
                .iter()
                .position(|o| o.kind == ObjectKind::Image)
                .expect("an image job");
            let before: Vec<SourceFile> = job.objects[..image_at].to_vec();
            for o in before {
                let (id, r) = session.send_whole(&o, session.config().passes, progress);
                job.ids.push(id);
                match r {
                    Err(TransferError::Sink(e)) => return Err(e),
                    Err(e) => {
                        tracing::error!(file = %job.rel, "{e}");
                        job.failed = true;
                    }
                    Ok(()) => {}
                }
            }
            let id = session.allocate_object();
            job.ids.push(id);
            match self.start_pass(session, &job, image_at, id, 1) {
                Ok(t) => self.active = Some((job, image_at, 1, t)),
                Err(TransferError::Sink(e)) => return Err(e),
                Err(e) => {
                    tracing::error!(file = %job.rel, "{e}");
                    session.object_done(id);
                    job.failed = true;
                    self.complete(session, job, stats);
                }
            }
            return Ok(true);
        }
        let (job, at, pass, mut t) = self.active.take().expect("checked");
        let more = match t.send_window(session, progress) {
            Ok(more) => more,
            Err(TransferError::Sink(e)) => return Err(e),
            Err(e) => {
                tracing::error!(file = %job.rel, "{e}");
                return self
                    .finish_image(session, job, t.id(), true, stats)
                    .map(|()| true);
            }
        };
        if more {
            self.active = Some((job, at, pass, t));
            return Ok(true);
        }
        let id = t.id();
        match t.finish(session) {
            Err(TransferError::Sink(e)) => return Err(e),
            Err(e) => {
                tracing::error!(file = %job.rel, "{e}");
                return self
                    .finish_image(session, job, id, true, stats)
                    .map(|()| true);
            }
            Ok(()) => {}
        }
        if pass < session.config().passes {
            match self.start_pass(session, &job, at, id, pass + 1) {
                Ok(t) => self.active = Some((job, at, pass + 1, t)),
                Err(TransferError::Sink(e)) => return Err(e),
                Err(e) => {
                    tracing::error!(file = %job.rel, "{e}");
                    self.finish_image(session, job, id, true, stats)?;
                }
            }
            return Ok(true);
        }
        self.finish_image(session, job, id, false, stats)
            .map(|()| true)
    }

    fn start_pass(
        &self,
        session: &mut SenderSession,
        job: &Job,
        at: usize,
        id: u32,
        pass: u8,
    ) -> Result<ObjectTransfer, TransferError> {
        let o = &job.objects[at];
        let d = transfer::describe(o, session.max_symbol(), session.config().passes)?;
        let d = gapferry_common::ObjectDescriptor { pass, ..d };
        ObjectTransfer::start(session, id, o, &d)
    }

    fn finish_image(
        &mut self,
        session: &mut SenderSession,
        mut job: Job,
        id: u32,
        failed: bool,
        stats: &mut WatchStats,
    ) -> io::Result<()> {
        session.object_done(id);
        job.failed |= failed;
        self.complete(session, job, stats);
        Ok(())
    }

    /// Journals and moves away a file whose objects all went out; leaves a failed one.
    fn complete(&mut self, session: &SenderSession, job: Job, stats: &mut WatchStats) {
        self.queued.remove(&job.rel);
        if job.failed {
            for o in &job.objects {
                session.metrics().object(o.kind, "failed");
            }
            stats.files_failed += 1;
            tracing::warn!(file = %job.rel, "not sent in full; it stays in the outbox and is sent again when it changes or at the next start");
            return;
        }
        let still_same = std::fs::metadata(&job.path).is_ok_and(|m| stamp(&m) == job.stamp);
        if !still_same {
            tracing::warn!(file = %job.rel, "changed while it was being sent; it will be sent again");
            return;
        }
        let entry = JournalEntry {
            event: "sent".into(),
            path: job.rel.clone(),
            stamp: job.stamp.clone(),
            session: format!("{:016x}", session.id()),
            objects: job.ids.clone(),
        };
        if let Err(e) = self.journal.append(&entry) {
            tracing::error!(
                "cannot write the journal {}: {e}",
                self.journal.path.display()
            );
        }
        tracing::info!(file = %job.rel, objects = ?job.ids, "sent");
        for o in &job.objects {
            session.metrics().object(o.kind, "sent");
        }
        stats.files_sent += 1;
        self.dispose(&job.rel, &job.path, &job.stamp);
    }

    /// Moves a file the high side would refuse to the refused directory with its reason;
    /// false when it cannot be moved (it then stays, looked at again once it changes).
    fn refuse(&self, rel: &str, path: &Path, reason: &str) -> bool {
        let dest = self.cfg.refused_dir.join(rel);
        let mut reason_file = dest.clone().into_os_string();
        reason_file.push(".reason");
        let moved = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&reason_file, format!("{reason}\n")))
            .and_then(|()| std::fs::rename(path, &dest));
        match moved {
            Ok(()) => {
                tracing::error!(file = %rel, moved_to = %dest.display(), "refused, not sent: {reason}; fix it and put it back in the outbox");
                true
            }
            Err(e) => {
                tracing::error!(file = %rel, "refused, not sent: {reason}; and it cannot be moved to {}: {e}; fix or remove the file", dest.display());
                false
            }
        }
    }

    fn dispose(&mut self, rel: &str, path: &Path, st: &Stamp) {
        let result = match &self.cfg.after_send {
            AfterSend::Delete => std::fs::remove_file(path),
            AfterSend::MoveTo(dir) => {
                let dest = dir.join(rel);
                let moved = dest
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(path, &dest));
                if moved.is_ok() && self.cfg.resend_last > 0 {
                    self.recent.push_back((rel.to_string(), dest));
                    while self.recent.len() > self.cfg.resend_last {
                        self.recent.pop_front();
                    }
                }
                moved
            }
        };
        match result {
            Ok(()) => {
                let e = JournalEntry {
                    event: "moved".into(),
                    path: rel.to_string(),
                    stamp: st.clone(),
                    session: String::new(),
                    objects: vec![],
                };
                if let Err(e) = self.journal.append(&e) {
                    tracing::error!("cannot write the journal: {e}");
                }
                self.journal.sent.remove(rel);
            }
            Err(e) => {
                tracing::error!(file = %rel, "sent, but cannot move or delete it: {e}; fix the permissions (it will not be sent again)");
                self.journal.sent.insert(rel.to_string(), st.clone());
            }
        }
    }
}

fn is_signature_of_present_image(path: &Path) -> bool {
    gapferry_feeds::signature_target(path).is_some()
}
