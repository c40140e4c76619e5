//! The MISP feed's life after delivery, as MISP really uses a local feed with "Remove
//! input after ingestion": MISP reads `manifest.json`, fetches each listed `<uuid>.json`,
//! deletes each event file, then deletes the manifest (`app/Model/Feed.php`).
//!
//! Owns:
//! - the feed lock (`OUT/.gapferry/feed.lock`, an exclusive `flock`) every writer of the
//!   feed holds while it writes: the delivery thread, the [`FeedKeeper`], and the
//!   `gapferry-recv feed rebuild|republish` commands, so they may run while `listen` runs;
//! - the republish rule ([`Tracker`]): MISP deletes only uuids listed in the manifest it
//!   loaded, each once per run, after reading the file (or, for an event whose timestamp
//!   it already has, without reading it). So a version written while `manifest.json` on
//!   disk listed an older version of that uuid, or while an older file was there
//!   (replaced by rename), is *at risk*: MISP may delete it unread. When an at-risk file
//!   vanishes, the archive's copy is published again, and that republished copy is at
//!   risk in turn only if a stale manifest still listed the uuid at an older version. A
//!   version written while neither was the case can only be deleted by a run that loaded
//!   a manifest listing it, i.e. that read it. Republishing a version MISP did read is
//!   harmless: MISP skips an event whose timestamp it already has and deletes the file;
//! - the [`FeedKeeper`], a thread ticking every second: republishes by the rule, rebuilds
//!   a missing `manifest.json` when event files are present, and writes `{}` and an
//!   empty `hashes.csv` when MISP emptied the directory; prunes the archive hourly;
//! - the `feed rebuild` and `feed republish` operations.

use crate::metrics::ReceiverMetrics;
use gapferry_feeds::archive::{self, Archive, ArchiveError};
use gapferry_feeds::misp_event::parse_event;
use gapferry_feeds::{EventOutcome, FeedSummary, MispError, MispFeed, Publish};
use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use thiserror::Error;

/// File name of the feed lock inside the state directory.
pub const FEED_LOCK: &str = "feed.lock";
/// Directory of the archive inside the state directory.
pub const ARCHIVE_DIR: &str = "archive";
/// How often the keeper looks at the feed.
pub const KEEPER_TICK: Duration = Duration::from_secs(1);
/// How often the keeper prunes the archive.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Events republished per feed update (the lock is released in between, so deliveries
/// go on during a long republish).
pub const REPUBLISH_CHUNK: usize = 256;

/// An exclusive lock on the feed, held while writing it; released when dropped.
#[derive(Debug)]
pub struct FeedLock {
    _file: File,
}

impl FeedLock {
    /// Waits for and takes the feed lock of the state directory `state_dir`.
    pub fn acquire(state_dir: &Path) -> io::Result<FeedLock> {
        std::fs::create_dir_all(state_dir)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(state_dir.join(FEED_LOCK))?;
        loop {
            // SAFETY: flock on a descriptor this function owns; no memory is shared.
            let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if r == 0 {
                return Ok(FeedLock { _file: file });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// The version of one event the receiver wrote last, and whether MISP may delete it
/// unread (only those are tracked).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tracked {
    timestamp: i64,
}

/// The republish rule's memory: per event uuid, the version this receiver wrote last.
#[derive(Debug, Default)]
pub struct Tracker {
    versions: HashMap<String, Tracked>,
}

impl Tracker {
    /// Notes that the feed now holds `uuid` at `timestamp`, written as `outcome` says,
    /// while `manifest.json` on disk did (`listed`) or did not list that uuid.
    pub fn delivered(&mut self, uuid: &str, timestamp: i64, outcome: &EventOutcome, listed: bool) {
        let at_risk = match outcome {
            EventOutcome::New => listed,
            EventOutcome::Replaced { .. } => true,
            EventOutcome::AlreadyCurrent => return,
        };
        if at_risk {
            self.versions
                .insert(uuid.to_string(), Tracked { timestamp });
        } else {
            self.versions.remove(uuid);
        }
    }

    /// The events whose file vanished and must be published again (uuid, timestamp);
    /// vanished events that need not be are forgotten.
    pub fn vanished(&mut self, present: &HashSet<String>) -> Vec<(String, i64)> {
        let mut again = Vec::new();
        self.versions.retain(|uuid, t| {
            if !present.contains(uuid) {
                again.push((uuid.clone(), t.timestamp));
                return false;
            }
            true
        });
        again.sort();
        again
    }

    /// Tracks `uuid` at `timestamp` as at risk again (a republish that must be retried).
    pub fn retry(&mut self, uuid: &str, timestamp: i64) {
        self.versions
            .insert(uuid.to_string(), Tracked { timestamp });
    }

    /// Stops tracking `uuid` (it cannot or need not be republished).
    pub fn forget(&mut self, uuid: &str) {
        self.versions.remove(uuid);
    }

    /// Events tracked.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    /// Whether no event is tracked.
    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}

/// The tracker shared by the delivery thread (which notes deliveries) and the keeper.
pub type SharedTracker = Arc<Mutex<Tracker>>;

/// Why a feed operation failed.
#[derive(Debug, Error)]
pub enum FeedCareError {
    /// The feed could not be read or written.
    #[error(transparent)]
    Feed(#[from] MispError),
    /// The archive could not be read.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The feed lock could not be taken.
    #[error("cannot take the feed lock {}: {source}; check that the state directory is writable", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A `--uuid` that the archive does not hold.
    #[error("event {0} is not in the archive ({1}); nothing was republished: check the uuid, or whether the archive's retention has pruned it")]
    NotArchived(String, PathBuf),
}

fn lock(state_dir: &Path) -> Result<FeedLock, FeedCareError> {
    FeedLock::acquire(state_dir).map_err(|source| FeedCareError::Lock {
        path: state_dir.join(FEED_LOCK),
        source,
    })
}

/// Rewrites `manifest.json` and `hashes.csv` from the event files present, under the lock.
pub fn rebuild(state_dir: &Path, feed: &mut MispFeed) -> Result<FeedSummary, FeedCareError> {
    let _lock = lock(state_dir)?;
    Ok(feed.rebuild()?)
}

/// Which archived events `feed republish` puts back.
#[derive(Debug, Clone, Default)]
pub struct RepublishFilter {
    /// Only events archived (delivered) at or after this time.
    pub since: Option<SystemTime>,
    /// Only these event uuids (every one must be archived).
    pub uuids: Vec<String>,
}

/// What `feed republish` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RepublishSummary {
    /// Archived events selected.
    pub selected: usize,
    /// Events written back into the feed.
    pub republished: usize,
    /// Events the feed already held in the same version.
    pub already_there: usize,
    /// Events the feed holds in a newer version (left alone).
    pub newer_in_feed: usize,
    /// Archived files that are not valid events (named in the log).
    pub invalid: usize,
    /// Entries in `manifest.json` afterwards.
    pub entries: usize,
}

/// Puts archived events back into the feed and rebuilds its manifest and hashes;
/// `progress(done, total)` is called after each chunk.
pub fn republish(
    state_dir: &Path,
    feed: &mut MispFeed,
    archive: &Archive,
    filter: &RepublishFilter,
    mut progress: impl FnMut(usize, usize),
) -> Result<RepublishSummary, FeedCareError> {
    let mut selected: Vec<PathBuf> = Vec::new();
    if filter.uuids.is_empty() {
        for e in archive.entries(archive::MISP)? {
            if e.name.ends_with(".json") && filter.since.is_none_or(|s| e.archived >= s) {
                selected.push(e.path);
            }
        }
    } else {
        let mut names = Vec::new();
        for u in &filter.uuids {
            names.push(archive::misp_event_name(u)?);
        }
        names.sort();
        names.dedup();
        for name in names {
            if !archive.contains(archive::MISP, &name) {
                return Err(FeedCareError::NotArchived(
                    name.trim_end_matches(".json").to_string(),
                    archive.kind_dir(archive::MISP)?,
                ));
            }
            let path = archive.path_of(archive::MISP, &name)?;
            let archived = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            if filter.since.is_none_or(|s| archived >= s) {
                selected.push(path);
            }
        }
    }
    let mut summary = RepublishSummary {
        selected: selected.len(),
        ..Default::default()
    };
    let total = selected.len();
    let mut done = 0;
    for chunk in selected.chunks(REPUBLISH_CHUNK) {
        let mut docs = Vec::with_capacity(chunk.len());
        for path in chunk {
            match std::fs::read(path) {
                Ok(bytes) => docs.push((path, bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // pruned meanwhile
                Err(e) => {
                    return Err(ArchiveError::Io {
                        path: path.clone(),
                        source: e,
                    }
                    .into())
                }
            }
        }
        let _lock = lock(state_dir)?;
        let results = feed.deliver_batch(docs.iter().map(|(_, b)| b.as_slice()))?;
        drop(_lock);
        for ((path, _), r) in docs.iter().zip(results) {
            match r {
                Ok(d) if d.outcome == EventOutcome::AlreadyCurrent => summary.already_there += 1,
                Ok(_) => summary.republished += 1,
                Err(MispError::Stale { .. }) => summary.newer_in_feed += 1,
                Err(e) => {
                    summary.invalid += 1;
                    tracing::warn!(path = %path.display(), error = %e, "archived file is not a deliverable MISP event; skipped");
                }
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    summary.entries = rebuild(state_dir, feed)?.entries;
    Ok(summary)
}

/// What one keeper tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Events published again by the rule.
    pub republished: usize,
    /// `manifest.json` was missing with events present and was rebuilt.
    pub manifest_rebuilt: bool,
    /// The directory had no event left: `{}` and an empty `hashes.csv` were written.
    pub emptied: bool,
    /// Archive files pruned.
    pub pruned: usize,
}

/// Looks after the feed between deliveries (see the module documentation).
pub struct FeedKeeper {
    state_dir: PathBuf,
    feed: MispFeed,
    archive: Option<Archive>,
    keep: Duration,
    tracker: SharedTracker,
    metrics: ReceiverMetrics,
    last_prune: Option<Instant>,
}

impl FeedKeeper {
    /// A keeper of the feed in `feed_dir` (published with `publish`), taking the lock in
    /// `state_dir`, republishing from `archive` (pruned to `keep`) what `tracker` says.
    pub fn new(
        state_dir: &Path,
        feed_dir: &Path,
        publish: Publish,
        archive: Option<(Archive, Duration)>,
        tracker: SharedTracker,
        metrics: ReceiverMetrics,
    ) -> Self {
        let (archive, keep) = match archive {
            Some((a, k)) => (Some(a), k),
            None => (None, Duration::ZERO),
        };
        FeedKeeper {
            state_dir: state_dir.to_path_buf(),
            feed: MispFeed::new(feed_dir).with_publish(publish),
            archive,
            keep,
            tracker,
            metrics,
            last_prune: None,
        }
    }

    /// Looks at the feed once and repairs what needs it.
    pub fn tick(&mut self) -> TickReport {
        let mut report = TickReport::default();
        if let Some(a) = &self.archive {
            if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.last_prune = Some(Instant::now());
                match a.prune(self.keep, SystemTime::now()) {
                    Ok(s) => {
                        report.pruned = s.removed;
                        if s.removed > 0 {
                            tracing::info!(
                                removed = s.removed,
                                kept = s.kept,
                                "archive pruned to its retention"
                            );
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot prune the archive"),
                }
            }
        }
        let listing = match self.feed.listing() {
            Ok(l) => l,
            Err(e) => {
                tracing::debug!(error = %e, "cannot list the MISP feed");
                return report;
            }
        };
        let again = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .vanished(&listing.events);
        if !again.is_empty() {
            report.republished = self.republish_vanished(again);
            if report.republished > 0 {
                return report;
            }
        }
        let missing_manifest = listing.manifest_bytes.is_none() && !listing.events.is_empty();
        // Only a feed that held events before (a fresh directory is left alone).
        let stale_empty = listing.events.is_empty()
            && (listing.manifest_bytes.is_some() || listing.hashes_bytes.is_some())
            && (listing.manifest_bytes != Some(2) || listing.hashes_bytes != Some(0));
        if missing_manifest || stale_empty {
            match rebuild(&self.state_dir, &mut self.feed) {
                Ok(s) => {
                    if missing_manifest {
                        report.manifest_rebuilt = true;
                        tracing::info!(
                            entries = s.entries,
                            "manifest.json was gone with event files present (MISP deletes it after a fetch); rebuilt"
                        );
                    } else {
                        report.emptied = true;
                        tracing::info!("the MISP feed holds no event (consumed): manifest.json is {{}} and hashes.csv empty");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot repair the MISP feed's manifest"),
            }
        }
        report
    }

    /// Publishes `again` (no longer tracked: [`Tracker::vanished`] dropped them) from the
    /// archive; returns how many files were written.
    fn republish_vanished(&mut self, again: Vec<(String, i64)>) -> usize {
        let Some(a) = &self.archive else {
            for (uuid, timestamp) in again {
                tracing::warn!(%uuid, timestamp, "an event file that may not have been read by MISP was deleted, and the archive is disabled: it cannot be republished; resend it");
            }
            return 0;
        };
        // Under the lock: no delivery of a newer version can slip in between.
        let _lock = match lock(&self.state_dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot republish: the feed lock is not available; retrying next second");
                let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
                for (uuid, ts) in &again {
                    t.retry(uuid, *ts);
                }
                return 0;
            }
        };
        let mut docs = Vec::new();
        for (uuid, timestamp) in again {
            let bytes = archive::misp_event_name(&uuid)
                .and_then(|n| a.load(archive::MISP, &n))
                .ok()
                .flatten();
            let archived = bytes
                .as_deref()
                .and_then(|b| parse_event(b).ok())
                .map(|e| e.timestamp);
            match (bytes, archived) {
                (Some(b), Some(ts)) if ts >= timestamp => docs.push((uuid, b)),
                _ => {
                    tracing::warn!(%uuid, timestamp, "an event file MISP may not have read was deleted, and the archive lacks that version (pruned?); resend it");
                }
            }
        }
        if docs.is_empty() {
            return 0;
        }
        let results = self
            .feed
            .deliver_batch(docs.iter().map(|(_, b)| b.as_slice()));
        drop(_lock);
        let results = match results {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot republish into the MISP feed; retrying next second");
                let mut t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
                for (uuid, b) in &docs {
                    if let Ok(ev) = parse_event(b) {
                        t.retry(uuid, ev.timestamp);
                    }
                }
                return 0;
            }
        };
        let mut n = 0;
        let mut tracker = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
        for ((uuid, _), r) in docs.iter().zip(results) {
            match r {
                Ok(d) => {
                    tracker.delivered(uuid, d.timestamp, &d.outcome, d.listed);
                    if d.outcome != EventOutcome::AlreadyCurrent {
                        n += 1;
                        self.metrics.republished();
                        tracing::info!(%uuid, timestamp = d.timestamp, "republished an event MISP may have deleted unread (written while an older version was listed or present)");
                    }
                }
                Err(e) => tracing::info!(%uuid, reason = %e, "not republished"),
            }
        }
        n
    }

    /// Runs the keeper on its own thread until the handle is dropped.
    pub fn spawn(mut self) -> io::Result<KeeperHandle> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("feed-keeper".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    self.tick();
                    let until = Instant::now() + KEEPER_TICK;
                    while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            })?;
        Ok(KeeperHandle {
            stop,
            thread: Some(thread),
        })
    }
}

/// A running keeper; dropping it stops the thread and waits for it.
pub struct KeeperHandle {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for KeeperHandle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests;
