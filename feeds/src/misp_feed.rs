//! The high side's MISP feed directory, the layout MISP's *local feed* reads:
//! `<uuid>.json` (`{"Event": {...}}`), `manifest.json` and `hashes.csv`, equal to what
//! PyMISP's feed generator writes for the same events (see [`crate::misp_event`]).
//!
//! Rules:
//! - an event file is written first (staging file in the directory, fsync, rename), then
//!   `hashes.csv`, then `manifest.json` last, each by staging file + fsync + rename;
//! - what is already there is merged: a newer `timestamp` replaces an event, the same
//!   timestamp is a no-op, an older one is refused ([`MispError::Stale`]) and not written;
//! - MISP may delete files after a fetch: a missing directory is recreated, manifest
//!   entries and hash lines whose `<uuid>.json` is gone are dropped, and `<uuid>.json`
//!   files that the manifest does not list are indexed again;
//! - crash safety: the uuids being written are recorded in `.gapferry-pending` before
//!   their files are renamed in; the next batch re-indexes them from disk, so a crash
//!   between an event file and the manifest never leaves them out of step;
//! - one writer per directory (the receiver's delivery thread); MISP only reads or deletes;
//! - every file gets the feed's [`Publish`] file mode and group before its rename (MISP
//!   reads the feed as its web server's user), a directory the feed creates its directory
//!   mode;
//! - with an [`Archive`] ([`MispFeed::with_archive`]), every event written is also kept as
//!   `archive/misp/<uuid>.json` (newest version per uuid) so that a consumed feed can be
//!   published again; a failed archive write is logged and does not fail the delivery.

use crate::archive::{self, Archive};
use crate::fsutil::{
    child, ensure_real_dir, hex, is_uuid, sync_dir, write_atomic, write_atomic_with, Publish,
};
use crate::misp_event::{parse_event, py_int_of, EventError, MispEvent};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;
use tracing::warn;

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
#[derive(Debug, Clone)]
pub struct MispFeed {
    dir: PathBuf,
    publish: Publish,
    archive: Option<Archive>,
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

    /// Delivers one event and rewrites `manifest.json` and `hashes.csv`.
    pub fn deliver_event(&mut self, json: &[u8]) -> Result<DeliveredEvent, MispError> {
        let mut batch = self.batch()?;
        let result = batch.add(json);
        batch.commit()?;
        result
    }

    /// Delivers several events, then rewrites `manifest.json` and `hashes.csv` once.
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
            if batch.state.held_hashes() > BATCH_HASHES {
                batch.state.commit(&batch.feed.dir)?;
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
        let mut batch = self.batch()?;
        batch.state.changed = true;
        let mut uuids: Vec<String> = list_event_uuids(&dir)?.into_iter().collect();
        uuids.sort();
        for uuid in uuids {
            batch.state.reindex(&dir, &uuid);
        }
        batch.commit()
    }

    /// Starts a batch: loads (and repairs) the feed's current state.
    pub fn batch(&mut self) -> Result<MispBatch<'_>, MispError> {
        ensure_real_dir(&self.dir, &self.publish).map_err(io_err(&self.dir))?;
        let mut state = State::load(&self.dir)?;
        state.publish = self.publish;
        state.archive = self.archive.clone();
        Ok(MispBatch { feed: self, state })
    }
}

/// Several deliveries followed by one manifest/hashes rewrite ([`MispBatch::commit`]).
/// Dropping a batch without committing is safe: the next batch finishes the job.
#[derive(Debug)]
pub struct MispBatch<'a> {
    feed: &'a mut MispFeed,
    state: State,
}

impl MispBatch<'_> {
    /// Validates one event and writes its `<uuid>.json` (manifest and hashes wait for
    /// [`MispBatch::commit`]).
    pub fn add(&mut self, json: &[u8]) -> Result<DeliveredEvent, MispError> {
        let event = parse_event(json)?;
        self.state.add(&self.feed.dir, event)
    }

    /// Writes `hashes.csv` then `manifest.json` (each by rename) if anything changed.
    pub fn commit(mut self) -> Result<FeedSummary, MispError> {
        self.state.commit(&self.feed.dir)
    }
}

#[derive(Debug, Default)]
struct State {
    publish: Publish,
    archive: Option<Archive>,
    manifest: BTreeMap<String, Box<RawValue>>,
    /// Timestamps `manifest.json` on disk lists for events whose file is gone (until the
    /// next commit rewrites it).
    gone_listed: HashMap<String, i64>,
    new_hashes: BTreeMap<String, Vec<[u8; 16]>>,
    rewrite: HashSet<String>,
    changed: bool,
    pending: Option<File>,
    reindexed: usize,
    dropped: usize,
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

fn is_regular_file(path: &Path) -> bool {
    fs::symlink_metadata(path)
        .map(|m| m.is_file())
        .unwrap_or(false)
}

fn entry_timestamp(raw: &RawValue) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        #[serde(default)]
        timestamp: serde_json::Value,
    }
    let ts: Ts = serde_json::from_str(raw.get()).ok()?;
    py_int_of(&ts.timestamp)
}

impl State {
    /// `hashes.csv` values waiting for the commit.
    fn held_hashes(&self) -> usize {
        self.new_hashes.values().map(Vec::len).sum()
    }

    fn load(dir: &Path) -> Result<State, MispError> {
        let mut st = State::default();
        let manifest_path = child(dir, MANIFEST);
        match fs::symlink_metadata(&manifest_path) {
            Ok(m) if m.is_file() => {
                let bytes = fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
                match serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(&bytes) {
                    Ok(m) => st.manifest = m,
                    Err(e) => {
                        warn!(path = %manifest_path.display(), error = %e,
                            "manifest.json is not a JSON object; rebuilding it from the event files");
                        st.changed = true;
                    }
                }
            }
            Ok(_) => {
                warn!(path = %manifest_path.display(), "manifest.json is not a regular file; replacing it");
                st.changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&manifest_path)(e)),
        }
        let hashes_present = is_regular_file(&child(dir, HASHES));

        let mut dirty: Vec<String> = Vec::new();
        let pending_path = child(dir, PENDING);
        let pending = if is_regular_file(&pending_path) {
            fs::read_to_string(&pending_path)
        } else {
            Err(io::ErrorKind::NotFound.into())
        };
        match pending {
            Ok(text) => {
                dirty.extend(text.lines().filter(|l| is_uuid(l)).map(str::to_string));
                st.changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&pending_path)(e)),
        }

        let present = list_event_uuids(dir)?;
        for uuid in &present {
            if !st.manifest.contains_key(uuid) || !hashes_present {
                dirty.push(uuid.clone());
            }
        }
        let gone: Vec<String> = st
            .manifest
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for uuid in gone {
            if let Some(ts) = st
                .manifest
                .remove(&uuid)
                .and_then(|raw| entry_timestamp(&raw))
            {
                st.gone_listed.insert(uuid.clone(), ts);
            }
            st.dropped += 1;
            st.changed = true;
        }
        dirty.sort();
        dirty.dedup();
        for uuid in dirty {
            st.reindex(dir, &uuid);
        }
        Ok(st)
    }

    /// Rebuilds one uuid's entry and hash lines from its file on disk (or drops it).
    fn reindex(&mut self, dir: &Path, uuid: &str) {
        self.changed = true;
        self.rewrite.insert(uuid.to_string());
        self.new_hashes.remove(uuid);
        let had = self.manifest.remove(uuid).is_some();
        let path = child(dir, &format!("{uuid}.json"));
        if !is_regular_file(&path) {
            if had {
                self.dropped += 1;
            }
            return;
        }
        let parsed = fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|bytes| parse_event(&bytes).map_err(|e| e.to_string()));
        match parsed {
            // A file named in upper case (by an older receiver) stays indexed under its name.
            Ok(ev) if ev.uuid.eq_ignore_ascii_case(uuid) => {
                if let Some(raw) = entry_raw(&ev) {
                    self.manifest.insert(uuid.to_string(), raw);
                    self.new_hashes.insert(uuid.to_string(), ev.hashes);
                    self.reindexed += 1;
                }
            }
            Ok(ev) => warn!(path = %path.display(), inner = %ev.uuid,
                "event file holds another uuid than its name; left out of the manifest"),
            Err(e) => warn!(path = %path.display(), error = %e,
                "event file in the feed is not a valid MISP event; left out of the manifest"),
        }
    }

    fn add(&mut self, dir: &Path, ev: MispEvent) -> Result<DeliveredEvent, MispError> {
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        let path = child(dir, &format!("{}.json", ev.uuid));
        let existing = if is_regular_file(&path) {
            self.manifest
                .get(&ev.uuid)
                .and_then(|raw| entry_timestamp(raw))
        } else {
            None
        };
        let outcome = match existing {
            Some(t) if ev.timestamp < t => {
                return Err(MispError::Stale {
                    uuid: ev.uuid,
                    incoming: ev.timestamp,
                    existing: t,
                })
            }
            Some(t) if ev.timestamp == t => EventOutcome::AlreadyCurrent,
            Some(t) => EventOutcome::Replaced {
                previous_timestamp: t,
            },
            None => EventOutcome::New,
        };
        let delivered = DeliveredEvent {
            uuid: ev.uuid.clone(),
            path: path.clone(),
            timestamp: ev.timestamp,
            outcome: outcome.clone(),
            hashes: ev.hashes.len(),
            listed: match existing {
                Some(t) => t < ev.timestamp,
                None => self
                    .gone_listed
                    .get(&ev.uuid)
                    .is_some_and(|&t| t < ev.timestamp),
            },
        };
        if outcome == EventOutcome::AlreadyCurrent {
            return Ok(delivered);
        }
        self.mark_pending(dir, &ev.uuid)?;
        // Archived first: whatever version the feed shows, the archive holds it too.
        if let Some(a) = &self.archive {
            let kept = archive::misp_event_name(&ev.uuid)
                .and_then(|name| a.store(archive::MISP, &name, &ev.document));
            if let Err(e) = kept {
                warn!(uuid = %ev.uuid, error = %e,
                    "event not archived (delivered all the same): it cannot be republished if MISP consumes it");
            }
        }
        write_atomic(&path, &ev.document, &self.publish).map_err(io_err(&path))?;
        let raw = entry_raw(&ev)
            .ok_or_else(|| io_err(&path)(io::Error::other("manifest entry did not serialise")))?;
        self.manifest.insert(ev.uuid.clone(), raw);
        self.rewrite.insert(ev.uuid.clone());
        self.new_hashes.insert(ev.uuid, ev.hashes);
        self.changed = true;
        Ok(delivered)
    }

    fn mark_pending(&mut self, dir: &Path, uuid: &str) -> Result<(), MispError> {
        let path = child(dir, PENDING);
        if self.pending.is_none() {
            // Never append through something planted under the marker's name.
            if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
                fs::remove_file(&path).map_err(io_err(&path))?;
            }
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            self.pending = Some(f);
            sync_dir(dir).map_err(io_err(dir))?;
        }
        let f = self.pending.as_mut().expect("opened above");
        f.write_all(format!("{uuid}\n").as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io_err(&path))
    }

    fn commit(&mut self, dir: &Path) -> Result<FeedSummary, MispError> {
        let mut summary = FeedSummary {
            entries: self.manifest.len(),
            reindexed: self.reindexed,
            dropped: self.dropped,
            written: false,
        };
        if !self.changed {
            return Ok(summary);
        }
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        // MISP may have deleted files since the batch started.
        let before = self.manifest.len();
        self.manifest
            .retain(|uuid, _| is_regular_file(&child(dir, &format!("{uuid}.json"))));
        summary.dropped += before - self.manifest.len();

        let hashes_path = child(dir, HASHES);
        let old = match fs::symlink_metadata(&hashes_path) {
            Ok(m) if m.is_file() => Some(File::open(&hashes_path).map_err(io_err(&hashes_path))?),
            _ => None,
        };
        let manifest = &self.manifest;
        let rewrite = &self.rewrite;
        let new_hashes = &self.new_hashes;
        write_atomic_with(&hashes_path, &self.publish, |w| {
            if let Some(old) = old {
                for line in BufReader::new(old).split(b'\n') {
                    let line = line?;
                    let Ok(text) = std::str::from_utf8(&line) else {
                        continue;
                    };
                    let Some((_, uuid)) = text.trim_end_matches('\r').split_once(',') else {
                        continue;
                    };
                    if manifest.contains_key(uuid) && !rewrite.contains(uuid) {
                        w.write_all(&line)?;
                        w.write_all(b"\n")?;
                    }
                }
            }
            for (uuid, hashes) in new_hashes {
                if manifest.contains_key(uuid) {
                    for h in hashes {
                        writeln!(w, "{},{uuid}", hex(h))?;
                    }
                }
            }
            Ok(())
        })
        .map_err(io_err(&hashes_path))?;

        let manifest_path = child(dir, MANIFEST);
        write_atomic_with(&manifest_path, &self.publish, |w| {
            serde_json::to_writer(&mut *w, manifest).map_err(io::Error::other)
        })
        .map_err(io_err(&manifest_path))?;
        self.gone_listed.clear();

        let pending_path = child(dir, PENDING);
        self.pending = None;
        match fs::remove_file(&pending_path) {
            Ok(()) => sync_dir(dir).map_err(io_err(dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&pending_path)(e)),
        }
        self.changed = false;
        self.rewrite.clear();
        self.new_hashes.clear();
        summary.entries = self.manifest.len();
        summary.written = true;
        Ok(summary)
    }
}

fn entry_raw(ev: &MispEvent) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&ev.entry).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(uuid: &str, timestamp: i64) -> Vec<u8> {
        serde_json::json!({"Event": {
            "uuid": uuid,
            "info": format!("event at {timestamp}"),
            "date": "2024-01-02",
            "timestamp": timestamp.to_string(),
            "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
            "Attribute": [{"type": "domain", "category": "Network activity", "value": "a.example"}],
        }})
        .to_string()
        .into_bytes()
    }

    #[test]
    fn an_upper_case_uuid_is_the_same_event() {
        let dir = tempfile::tempdir().unwrap();
        let mut feed = MispFeed::new(dir.path());
        let lower = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";
        let upper = lower.to_ascii_uppercase();
        let d = feed.deliver_event(&event(lower, 200)).unwrap();
        assert_eq!(d.uuid, lower);
        // An older copy in upper case meets the staleness check of the same event.
        let err = feed.deliver_event(&event(&upper, 100)).unwrap_err();
        assert!(
            matches!(
                err,
                MispError::Stale {
                    incoming: 100,
                    existing: 200,
                    ..
                }
            ),
            "{err}"
        );
        // A newer one replaces it, under the same lower-case name: one event in the feed.
        let d = feed.deliver_event(&event(&upper, 300)).unwrap();
        assert_eq!(d.uuid, lower);
        assert_eq!(d.path, dir.path().join(format!("{lower}.json")));
        let manifest: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.path().join(MANIFEST)).unwrap()).unwrap();
        let keys: Vec<&String> = manifest.as_object().unwrap().keys().collect();
        assert_eq!(keys, [lower]);
        assert_eq!(manifest[lower]["timestamp"], 300);
        assert!(!dir.path().join(format!("{upper}.json")).exists());
    }

    #[test]
    fn a_version_written_while_a_stale_manifest_lists_an_older_one_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let mut feed = MispFeed::new(dir.path());
        let u = "5a0a9aa9-23a4-4607-b6df-41a9950d210f";
        let file = dir.path().join(format!("{u}.json"));
        assert!(!feed.deliver_event(&event(u, 100)).unwrap().listed);
        let d = feed.deliver_event(&event(u, 200)).unwrap();
        assert!(d.listed, "replaced while listed at 100");
        // MISP deleted the file but not (yet) the manifest, which lists 200.
        fs::remove_file(&file).unwrap();
        let d = feed.deliver_event(&event(u, 300)).unwrap();
        assert_eq!(d.outcome, EventOutcome::New);
        assert!(d.listed, "the manifest on disk listed 200");
        fs::remove_file(&file).unwrap();
        // The same version again while listed at it: MISP has it, no risk.
        let d = feed.deliver_event(&event(u, 300)).unwrap();
        assert!(!d.listed);
        // MISP deleted file and manifest: nothing lists the uuid.
        fs::remove_file(&file).unwrap();
        fs::remove_file(dir.path().join(MANIFEST)).unwrap();
        assert!(!feed.deliver_event(&event(u, 400)).unwrap().listed);
    }
}
