//! The high side's MISP feed directory, the layout MISP's *local feed* reads:
//! `<uuid>.json` (`{"Event": {...}}`), `manifest.json` and `hashes.csv`, equal to what
//! PyMISP's feed generator writes for the same events (see [`crate::misp_event`]).
//!
//! Rules:
//! - group commit: a batch's event files (and their archive copies) are written as staging
//!   files in the directory and stay invisible until the commit, which fsyncs them all,
//!   renames them in and fsyncs the directory once (not once per event); then
//!   `hashes.csv`, then `manifest.json` last by staging file + fsync + rename;
//! - what is already there is merged: a newer `timestamp` replaces an event, the same
//!   timestamp is a no-op, an older one is refused ([`MispError::Stale`]) and not written;
//! - MISP may delete files after a fetch: a missing directory is recreated, manifest
//!   entries and hash lines whose `<uuid>.json` is gone are dropped, and `<uuid>.json`
//!   files that the manifest does not list are indexed again;
//! - crash safety: the uuids of the group are recorded in `.gapferry-pending` (one write,
//!   fdatasync) before their files are renamed in; the next batch re-indexes them from
//!   disk, so a crash between an event file and the manifest never leaves them out of
//!   step; a crash before the renames leaves only `.gapferry-stage-*` files, which MISP
//!   does not read;
//! - one writer per directory at a time (the receiver's delivery thread, or `feed
//!   rebuild|republish` under the feed lock); MISP only reads or deletes;
//! - cost per event that does not grow with the feed: after one full load, the manifest
//!   is kept in memory (`misp_feed/index.rs`) and trusted as long as `manifest.json` and
//!   `hashes.csv` on disk are the very files this feed last wrote (same inode, size and
//!   times) and no `.gapferry-pending` is left; an inotify watch on the directory
//!   (`misp_feed/watch.rs`) tells which `<uuid>.json` files were created or deleted
//!   since, and only those are checked again (without inotify, or when its queue
//!   overflowed, the directory is listed). `hashes.csv` grows by appending the batch's
//!   whole lines in one `write` (fsync before the manifest's rename) unless lines must go
//!   (an event replaced or gone), when it is rewritten by rename as before; either way its
//!   bytes are what a rewrite gives. A reader never sees a line of an event whose file is
//!   not durable; a reader racing the append may see the file end inside the batch's
//!   lines (Linux makes a buffered write visible page by page), so a reader should
//!   ignore a last line without its newline — it is complete when the next read comes.
//!   When a batch only adds uuids, `manifest.json` is spliced from the file on disk: the
//!   runs of entries it already holds are copied by the kernel (`copy_file_range`), only
//!   the new entries are serialised, and the result is byte for byte what a full
//!   serialisation gives (checked against `rebuild()` in the tests); a replaced or
//!   dropped entry takes the full rewrite. Any other writer's change to the manifest or
//!   hash list makes the next batch load the feed from disk again. What still grows with
//!   the feed is the kernel copy of `manifest.json` (one JSON object, replaced by rename);
//! - every file gets the feed's [`Publish`] file mode and group before its rename (MISP
//!   reads the feed as its web server's user), a directory the feed creates its directory
//!   mode;
//! - with an [`Archive`] ([`MispFeed::with_archive`]), every event written is also kept as
//!   `archive/misp/<uuid>.json` (newest version per uuid) so that a consumed feed can be
//!   published again; a failed archive write is logged and does not fail the delivery.

use crate::archive::Archive;
use crate::fsutil::{child, ensure_real_dir, is_uuid, Publish};
use crate::misp_event::{parse_event, EventError};
use index::FeedIndex;
use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

mod commit;
mod index;
#[cfg(test)]
mod tests;
mod watch;

/// Name of the feed's manifest.
pub const MANIFEST: &str = "manifest.json";
/// Name of the feed's quick-lookup hash list.
pub const HASHES: &str = "hashes.csv";
/// Name of the marker listing event uuids whose files were written but not yet indexed.
pub const PENDING: &str = ".gapferry-pending";
/// `hashes.csv` values (16 bytes each) a batch holds before it commits what it has and
/// goes on: memory for hashes stays near 16 MiB plus one event's whatever the batch.
pub const BATCH_HASHES: usize = 1 << 20;

/// Why an event was not delivered into the feed.
#[derive(Debug, Error)]
pub enum MispError {
    /// The document is not an acceptable MISP event.
    #[error(transparent)]
    Event(#[from] EventError),
    /// The feed already holds a newer version of this event.
    #[error("MISP event {uuid} (timestamp {incoming}) is older than the copy already in the feed (timestamp {existing}); it was ignored, nothing to do unless the feed's copy is wrong")]
    Stale {
        /// The event uuid.
        uuid: String,
        /// Timestamp of the refused copy.
        incoming: i64,
        /// Timestamp of the copy in the feed.
        existing: i64,
    },
    /// Reading or writing the feed directory failed.
    #[error("MISP feed {}: {source}; check that the directory is writable by the receiver and that the disk has room", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Maps an I/O error on `path` to [`MispError::Io`].
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> MispError + '_ {
    move |source| MispError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What delivering one event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// The feed did not hold this event.
    New,
    /// The feed held an older version, now replaced.
    Replaced {
        /// Timestamp of the replaced version.
        previous_timestamp: i64,
    },
    /// The feed already holds this version (same timestamp); nothing was written.
    AlreadyCurrent,
}

/// One event delivered into the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredEvent {
    /// The event uuid.
    pub uuid: String,
    /// The `<uuid>.json` path.
    pub path: PathBuf,
    /// The event timestamp.
    pub timestamp: i64,
    /// New, replaced or already there.
    pub outcome: EventOutcome,
    /// How many `hashes.csv` lines the event has.
    pub hashes: usize,
    /// Whether `manifest.json` on disk listed this uuid at an older timestamp when the
    /// file was written: MISP may have loaded that manifest, and if it already has that
    /// older version it deletes the file without reading it.
    pub listed: bool,
}

/// What a committed batch left in the feed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedSummary {
    /// Entries in `manifest.json` after the commit.
    pub entries: usize,
    /// Event files found on disk and indexed again (unlisted or interrupted earlier).
    pub reindexed: usize,
    /// Manifest entries dropped because their `<uuid>.json` is gone.
    pub dropped: usize,
    /// Whether `manifest.json` and `hashes.csv` were rewritten.
    pub written: bool,
}

/// A MISP local-feed directory the receiver delivers events into.
#[derive(Debug)]
pub struct MispFeed {
    dir: PathBuf,
    publish: Publish,
    archive: Option<Archive>,
    /// The index as the last committed batch left it, reused while the files on disk are
    /// the ones it wrote.
    index: Option<FeedIndex>,
}

impl Clone for MispFeed {
    /// The same feed; the clone loads its own index on its first batch.
    fn clone(&self) -> Self {
        MispFeed {
            dir: self.dir.clone(),
            publish: self.publish,
            archive: self.archive.clone(),
            index: None,
        }
    }
}

/// What is in the feed directory now, read without parsing any file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedListing {
    /// The uuids of the `<uuid>.json` files present.
    pub events: HashSet<String>,
    /// Size of `manifest.json`, `None` when absent.
    pub manifest_bytes: Option<u64>,
    /// Size of `hashes.csv`, `None` when absent.
    pub hashes_bytes: Option<u64>,
}

impl MispFeed {
    /// A feed in `dir`; the directory is created on first delivery.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MispFeed {
            dir: dir.into(),
            publish: Publish::default(),
            archive: None,
            index: None,
        }
    }

    /// The same feed, keeping a copy of every event it writes in `archive`.
    pub fn with_archive(mut self, archive: Archive) -> Self {
        self.archive = Some(archive);
        self
    }

    /// The event files, manifest and hash list present now (a directory listing and two
    /// `stat`s: cheap enough to run every second).
    pub fn listing(&self) -> Result<FeedListing, MispError> {
        let size = |name: &str| {
            fs::symlink_metadata(child(&self.dir, name))
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len())
        };
        Ok(FeedListing {
            events: list_event_uuids(&self.dir)?,
            manifest_bytes: size(MANIFEST),
            hashes_bytes: size(HASHES),
        })
    }

    /// The same feed, publishing files with `publish`'s modes and group.
    pub fn with_publish(mut self, publish: Publish) -> Self {
        self.publish = publish;
        self
    }

    /// The feed directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Delivers one event and updates `manifest.json` and `hashes.csv`.
    pub fn deliver_event(&mut self, json: &[u8]) -> Result<DeliveredEvent, MispError> {
        let mut batch = self.batch()?;
        let result = batch.add(json);
        batch.commit()?;
        result
    }

    /// Delivers several events, then updates `manifest.json` and `hashes.csv` once.
    /// The outer error is a failure of the feed itself; the inner ones are per event.
    pub fn deliver_batch<I, B>(
        &mut self,
        events: I,
    ) -> Result<Vec<Result<DeliveredEvent, MispError>>, MispError>
    where
        I: IntoIterator<Item = B>,
        B: AsRef<[u8]>,
    {
        let mut batch = self.batch()?;
        let mut results = Vec::new();
        for json in events {
            results.push(batch.add(json.as_ref()));
            if batch.index.held_hashes() > BATCH_HASHES {
                batch.index.commit(&batch.feed.dir)?;
            }
        }
        batch.commit()?;
        Ok(results)
    }

    /// Re-indexes every `<uuid>.json` on disk and rewrites `manifest.json` and
    /// `hashes.csv` from them (repair after manual edits, or after MISP deleted files).
    /// Both are always written: a feed without events gets `{}` and an empty `hashes.csv`.
    pub fn rebuild(&mut self) -> Result<FeedSummary, MispError> {
        let dir = self.dir.clone();
        // Everything is read again from disk, whatever the kept index says.
        self.index = None;
        let mut batch = self.batch()?;
        let mut uuids: Vec<String> = list_event_uuids(&dir)?.into_iter().collect();
        uuids.sort();
        batch.index.reindex_all(&dir, &uuids);
        batch.commit()
    }

    /// Starts a batch: takes the kept index when the files on disk are still the ones it
    /// wrote (only the directory is listed again), otherwise loads and repairs the feed's
    /// state from disk.
    pub fn batch(&mut self) -> Result<MispBatch<'_>, MispError> {
        ensure_real_dir(&self.dir, &self.publish).map_err(io_err(&self.dir))?;
        let mut index = match self.index.take() {
            Some(kept) if kept.unchanged_on_disk(&self.dir) => kept.refresh(&self.dir)?,
            _ => FeedIndex::load(&self.dir)?,
        };
        index.publish = self.publish;
        index.archive = self.archive.clone();
        // A hard link shares the inode: only when nobody but the receiver can write it.
        index.link_archive = self.publish.file_mode & 0o022 == 0
            && self
                .archive
                .as_ref()
                .is_some_and(|a| a.links_from(crate::archive::MISP, &self.dir));
        Ok(MispBatch { feed: self, index })
    }
}

/// Several deliveries followed by one manifest/hashes update ([`MispBatch::commit`]).
/// Dropping a batch without committing is safe: the next batch finishes the job.
#[derive(Debug)]
pub struct MispBatch<'a> {
    feed: &'a mut MispFeed,
    index: FeedIndex,
}

impl MispBatch<'_> {
    /// Validates one event and writes its `<uuid>.json` (manifest and hashes wait for
    /// [`MispBatch::commit`]).
    pub fn add(&mut self, json: &[u8]) -> Result<DeliveredEvent, MispError> {
        let event = parse_event(json)?;
        self.index.add(&self.feed.dir, event)
    }

    /// Updates `hashes.csv` then `manifest.json` (the manifest by rename) if anything
    /// changed; the feed keeps the index for its next batch.
    pub fn commit(self) -> Result<FeedSummary, MispError> {
        let MispBatch { feed, mut index } = self;
        let summary = index.commit(&feed.dir)?;
        feed.index = Some(index);
        Ok(summary)
    }
}

/// The `<uuid>.json` files in `dir` (regular files only), as uuids.
fn list_event_uuids(dir: &Path) -> Result<HashSet<String>, MispError> {
    let mut out = HashSet::new();
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for entry in rd {
        let entry = entry.map_err(io_err(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if !is_uuid(stem) {
            continue;
        }
        if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
            out.insert(stem.to_string());
        }
    }
    Ok(out)
}

/// Whether `path` is a regular file (not following a symlink).
fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
}
