//! The feed's index held in memory: the manifest map, the hash lines waiting for the
//! commit, and what is known about the files on disk (their stamps, and a watch on the
//! directory, `watch.rs`). Loading and repairing it from the directory, reconciling it
//! with what MISP deleted, and adding one event live here; the commit (writing
//! `hashes.csv` and `manifest.json`) is in `commit.rs`.

use super::watch::{Changes, DirWatch};
use super::{
    io_err, is_regular_file, list_event_uuids, DeliveredEvent, EventOutcome, MispError, HASHES,
    MANIFEST, PENDING,
};
use crate::archive::{self, Archive};
use crate::fsutil::{child, ensure_real_dir, is_uuid, sync_dir, Publish, StagedFiles};
use crate::misp_event::{parse_event, MispEvent};
use crate::pyformat::py_int_of;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::warn;

/// Identity of a file as `stat` reports it: another file, or the same file changed,
/// gives another stamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of the regular file at `path`, `None` when there is none.
    pub(super) fn of(path: &Path) -> Option<FileStamp> {
        let m = fs::symlink_metadata(path).ok().filter(|m| m.is_file())?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// `manifest.json` and `hashes.csv` as the index last wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Written {
    pub(super) manifest: FileStamp,
    pub(super) hashes: FileStamp,
}

/// The files a batch staged, published together by its commit.
#[derive(Debug, Default)]
pub(super) struct EventGroup {
    pub(super) events: StagedFiles,
    pub(super) archive: StagedFiles,
    /// Archive copies made as hard links of staged event files: the event's index in
    /// `events` and its archive name.
    pub(super) links: Vec<(usize, String)>,
    /// The uuids staged, in the order they go to `.gapferry-pending`.
    pub(super) uuids: BTreeSet<String>,
}

/// The feed's manifest and pending hash lines, kept between batches.
#[derive(Debug, Default)]
pub(super) struct FeedIndex {
    pub(super) publish: Publish,
    pub(super) archive: Option<Archive>,
    /// Whether archive copies are hard links of the event files (same filesystem, and a
    /// feed file mode nobody but the receiver may write through) rather than copies.
    pub(super) link_archive: bool,
    pub(super) manifest: BTreeMap<String, Box<RawValue>>,
    /// Timestamps `manifest.json` on disk lists for events whose file is gone (until the
    /// next commit rewrites it).
    pub(super) gone_listed: HashMap<String, i64>,
    /// Hash values of the events added or re-indexed since the last commit.
    pub(super) new_hashes: BTreeMap<String, Vec<[u8; 16]>>,
    /// Uuids whose lines in `hashes.csv` are replaced by `new_hashes`.
    pub(super) rewrite: HashSet<String>,
    pub(super) changed: bool,
    /// Event files (and archive copies) written since the last commit, not yet visible.
    pub(super) group: EventGroup,
    /// Uuids added to the manifest since the last commit that it did not list.
    pub(super) inserted: BTreeSet<String>,
    /// Whether the manifest changed otherwise than by `inserted` since the last commit
    /// (an entry replaced or dropped): the commit then writes it whole.
    pub(super) manifest_rewrite: bool,
    pub(super) reindexed: usize,
    pub(super) dropped: usize,
    /// Whether `hashes.csv` may hold lines that must go (an event it lists was replaced,
    /// re-indexed or dropped, or the file is not one this index wrote): the commit then
    /// rewrites it instead of appending.
    pub(super) lines_stale: bool,
    /// The files this index last wrote; `None` until its first commit.
    pub(super) written: Option<Written>,
    /// Changes to the directory since the index last looked; `None` without inotify.
    pub(super) watch: Option<DirWatch>,
    /// Event files seen appearing during the last batch and not indexed by it: the next
    /// batch indexes them.
    pub(super) unlisted: BTreeSet<String>,
}

/// The `timestamp` of a manifest entry.
fn entry_timestamp(raw: &RawValue) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct Ts {
        #[serde(default)]
        timestamp: serde_json::Value,
    }
    let ts: Ts = serde_json::from_str(raw.get()).ok()?;
    py_int_of(&ts.timestamp)
}

/// An event's manifest entry as raw JSON.
fn entry_raw(ev: &MispEvent) -> Option<Box<RawValue>> {
    serde_json::value::to_raw_value(&ev.entry).ok()
}

impl FeedIndex {
    /// `hashes.csv` values waiting for the commit.
    pub(super) fn held_hashes(&self) -> usize {
        self.new_hashes.values().map(Vec::len).sum()
    }

    /// Loads the index from disk: `manifest.json`, the uuids of an interrupted batch,
    /// and the event files present (a full read of the manifest).
    pub(super) fn load(dir: &Path) -> Result<FeedIndex, MispError> {
        let mut st = FeedIndex {
            lines_stale: true,
            // Watching first: whatever changes after the directory is read is told.
            watch: DirWatch::new(dir),
            ..FeedIndex::default()
        };
        st.read_manifest(dir)?;
        let hashes_present = is_regular_file(&child(dir, HASHES));
        let dirty = st.read_pending(dir)?;
        st.reconcile(dir, dirty, hashes_present)?;
        Ok(st)
    }

    /// Whether the files on disk are still the ones this index wrote, with no
    /// interrupted batch: then [`FeedIndex::refresh`] may stand for [`FeedIndex::load`].
    pub(super) fn unchanged_on_disk(&self, dir: &Path) -> bool {
        let Some(written) = self.written else {
            return false;
        };
        fs::symlink_metadata(child(dir, PENDING)).is_err()
            && FileStamp::of(&child(dir, MANIFEST)) == Some(written.manifest)
            && FileStamp::of(&child(dir, HASHES)) == Some(written.hashes)
    }

    /// The kept index made current for a new batch: the event files the watch saw change
    /// are checked again (without a watch, or when it lost events, the whole directory
    /// is listed and a new watch started).
    pub(super) fn refresh(mut self, dir: &Path) -> Result<FeedIndex, MispError> {
        self.reindexed = 0;
        self.dropped = 0;
        self.lines_stale = false;
        match self.watch.as_mut().map(DirWatch::changes) {
            Some(Changes::Names(mut names)) => {
                names.append(&mut self.unlisted);
                self.recheck(dir, names);
            }
            _ => {
                self.unlisted.clear();
                self.watch = DirWatch::new(dir);
                self.reconcile(dir, Vec::new(), true)?;
            }
        }
        Ok(self)
    }

    /// [`FeedIndex::reconcile`] for the event files `names` only.
    fn recheck(&mut self, dir: &Path, names: BTreeSet<String>) {
        let mut dirty = Vec::new();
        for uuid in names {
            if !is_regular_file(&child(dir, &format!("{uuid}.json"))) {
                self.forget(&uuid);
            } else if !self.manifest.contains_key(&uuid) {
                dirty.push(uuid);
            }
        }
        for uuid in dirty {
            self.reindex(dir, &uuid);
        }
    }

    /// Drops the entry of `uuid`, whose file is gone, remembering the timestamp the
    /// manifest on disk lists.
    fn forget(&mut self, uuid: &str) {
        let Some(raw) = self.manifest.remove(uuid) else {
            return;
        };
        if let Some(ts) = entry_timestamp(&raw) {
            self.gone_listed.insert(uuid.to_string(), ts);
        }
        self.dropped += 1;
        self.changed = true;
        self.lines_stale = true;
        self.manifest_rewrite = true;
    }

    /// Drops, at commit, the entries whose file was deleted since the batch started
    /// (MISP deletes at any time); returns how many.
    pub(super) fn drop_deleted(&mut self, dir: &Path) -> Result<usize, MispError> {
        let before = self.manifest.len();
        match self.watch.as_mut().map(DirWatch::changes) {
            Some(Changes::Names(names)) => {
                for uuid in names {
                    if !is_regular_file(&child(dir, &format!("{uuid}.json"))) {
                        self.manifest.remove(&uuid);
                    } else if !self.manifest.contains_key(&uuid) {
                        self.unlisted.insert(uuid);
                    }
                }
            }
            _ => {
                // The next batch starts a new watch and lists everything.
                self.watch = None;
                let present = list_event_uuids(dir)?;
                self.manifest.retain(|uuid, _| present.contains(uuid));
            }
        }
        Ok(before - self.manifest.len())
    }

    /// Reads `manifest.json`; one that is not a JSON object or not a regular file is
    /// rebuilt from the event files.
    fn read_manifest(&mut self, dir: &Path) -> Result<(), MispError> {
        let manifest_path = child(dir, MANIFEST);
        match fs::symlink_metadata(&manifest_path) {
            Ok(m) if m.is_file() => {
                let bytes = fs::read(&manifest_path).map_err(io_err(&manifest_path))?;
                match serde_json::from_slice::<BTreeMap<String, Box<RawValue>>>(&bytes) {
                    Ok(m) => self.manifest = m,
                    Err(e) => {
                        warn!(path = %manifest_path.display(), error = %e,
                            "manifest.json is not a JSON object; rebuilding it from the event files");
                        self.changed = true;
                    }
                }
            }
            Ok(_) => {
                warn!(path = %manifest_path.display(), "manifest.json is not a regular file; replacing it");
                self.changed = true;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&manifest_path)(e)),
        }
        Ok(())
    }

    /// The uuids `.gapferry-pending` lists (an interrupted batch wrote their files).
    fn read_pending(&mut self, dir: &Path) -> Result<Vec<String>, MispError> {
        let pending_path = child(dir, PENDING);
        let pending = if is_regular_file(&pending_path) {
            fs::read_to_string(&pending_path)
        } else {
            Err(io::ErrorKind::NotFound.into())
        };
        match pending {
            Ok(text) => {
                self.changed = true;
                Ok(text
                    .lines()
                    .filter(|l| is_uuid(l))
                    .map(str::to_string)
                    .collect())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&pending_path)(e)),
        }
    }

    /// Drops the entries whose `<uuid>.json` is gone and indexes the files the manifest
    /// does not list (all of them when `hashes.csv` is missing), plus `dirty`.
    fn reconcile(
        &mut self,
        dir: &Path,
        mut dirty: Vec<String>,
        hashes_present: bool,
    ) -> Result<(), MispError> {
        let present = list_event_uuids(dir)?;
        for uuid in &present {
            if !self.manifest.contains_key(uuid) || !hashes_present {
                dirty.push(uuid.clone());
            }
        }
        let gone: Vec<String> = self
            .manifest
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for uuid in gone {
            self.forget(&uuid);
        }
        dirty.sort();
        dirty.dedup();
        for uuid in dirty {
            self.reindex(dir, &uuid);
        }
        Ok(())
    }

    /// Re-indexes every uuid of `uuids` from disk, and marks the index changed so that
    /// both files are written.
    pub(super) fn reindex_all(&mut self, dir: &Path, uuids: &[String]) {
        self.changed = true;
        for uuid in uuids {
            self.reindex(dir, uuid);
        }
    }

    /// Notes that `uuid`'s entry is about to change: its lines already in `hashes.csv`
    /// (it was listed at the last commit) must go.
    fn touch(&mut self, uuid: &str) {
        if self.manifest.contains_key(uuid) && !self.rewrite.contains(uuid) {
            self.lines_stale = true;
        }
        if self.manifest.contains_key(uuid) && !self.inserted.contains(uuid) {
            self.manifest_rewrite = true;
        }
        self.rewrite.insert(uuid.to_string());
        self.changed = true;
    }

    /// Rebuilds one uuid's entry and hash lines from its file on disk (or drops it).
    pub(super) fn reindex(&mut self, dir: &Path, uuid: &str) {
        self.touch(uuid);
        self.manifest_rewrite = true;
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

    /// What delivering `ev` does given the feed's copy: new, replaced, already current,
    /// or refused as stale.
    fn outcome(&self, path: &Path, ev: &MispEvent) -> Result<DeliveredEvent, MispError> {
        let existing = if is_regular_file(path) || self.group.uuids.contains(&ev.uuid) {
            self.manifest
                .get(&ev.uuid)
                .and_then(|raw| entry_timestamp(raw))
        } else {
            None
        };
        let outcome = match existing {
            Some(t) if ev.timestamp < t => {
                return Err(MispError::Stale {
                    uuid: ev.uuid.clone(),
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
        Ok(DeliveredEvent {
            uuid: ev.uuid.clone(),
            path: path.to_path_buf(),
            timestamp: ev.timestamp,
            outcome,
            hashes: ev.hashes.len(),
            listed: match existing {
                Some(t) => t < ev.timestamp,
                None => self
                    .gone_listed
                    .get(&ev.uuid)
                    .is_some_and(|&t| t < ev.timestamp),
            },
        })
    }

    /// Stages one event's file (and its archive copy) and indexes it; the commit makes
    /// the group durable and publishes it.
    pub(super) fn add(&mut self, dir: &Path, ev: MispEvent) -> Result<DeliveredEvent, MispError> {
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        let path = child(dir, &format!("{}.json", ev.uuid));
        let delivered = self.outcome(&path, &ev)?;
        if delivered.outcome == EventOutcome::AlreadyCurrent {
            return Ok(delivered);
        }
        let staged = self.group.events.len();
        self.group
            .events
            .stage(&path, &ev.document, &self.publish)
            .map_err(io_err(&path))?;
        // Archived before it is published: whatever version the feed shows, the archive
        // holds it too.
        if let Some(a) = &self.archive {
            let kept = archive::misp_event_name(&ev.uuid).and_then(|name| {
                if self.link_archive {
                    self.group.links.push((staged, name));
                    return Ok(());
                }
                a.stage(archive::MISP, &name, &ev.document, &mut self.group.archive)
                    .map(drop)
            });
            if let Err(e) = kept {
                warn!(uuid = %ev.uuid, error = %e,
                    "event not archived (delivered all the same): it cannot be republished if MISP consumes it");
            }
        }
        let raw = entry_raw(&ev)
            .ok_or_else(|| io_err(&path)(io::Error::other("manifest entry did not serialise")))?;
        self.touch(&ev.uuid);
        if !self.manifest.contains_key(&ev.uuid) {
            self.inserted.insert(ev.uuid.clone());
        }
        self.group.uuids.insert(ev.uuid.clone());
        self.manifest.insert(ev.uuid.clone(), raw);
        self.new_hashes.insert(ev.uuid, ev.hashes);
        Ok(delivered)
    }

    /// Publishes the staged group: the archive copies, then the uuids in
    /// `.gapferry-pending` (one write, fsynced) before the event files are renamed in
    /// (one fsync per file, one of the directory).
    pub(super) fn publish_group(&mut self, dir: &Path) -> Result<(), MispError> {
        let mut group = std::mem::take(&mut self.group);
        if group.uuids.is_empty() {
            return Ok(());
        }
        // Durable before the archive links to them and before any is renamed in.
        group.events.sync().map_err(io_err(dir))?;
        let archived = std::mem::take(&mut group.archive)
            .publish()
            .map_err(|e| e.to_string())
            .and_then(|()| self.link_archived(&group));
        if let Err(e) = archived {
            warn!(error = %e,
                "events not archived (delivered all the same): they cannot be republished if MISP consumes them");
        }
        let path = child(dir, PENDING);
        // Never append through something planted under the marker's name.
        if fs::symlink_metadata(&path).is_ok_and(|m| !m.is_file()) {
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        let created = fs::symlink_metadata(&path).is_err();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        let lines: String = group.uuids.iter().map(|u| format!("{u}\n")).collect();
        f.write_all(lines.as_bytes())
            .and_then(|()| f.sync_data())
            .map_err(io_err(&path))?;
        if created {
            sync_dir(dir).map_err(io_err(dir))?;
        }
        group.events.publish().map_err(io_err(dir))
    }

    /// Archives the group's events whose copy is a hard link of their (durable) staged
    /// file; one that cannot be linked is archived as a copy of its bytes.
    fn link_archived(&self, group: &EventGroup) -> Result<(), String> {
        let Some(a) = self.archive.as_ref().filter(|_| !group.links.is_empty()) else {
            return Ok(());
        };
        let mut failed = 0;
        for (k, name) in &group.links {
            let Some(from) = group.events.staged_path(*k) else {
                continue;
            };
            if let Err(e) = a.link(archive::MISP, name, from) {
                warn!(error = %e, name, "cannot link the archive copy; copying it");
                let copied = fs::read(from)
                    .map_err(|e| e.to_string())
                    .and_then(|b| a.store(archive::MISP, name, &b).map_err(|e| e.to_string()));
                if let Err(e) = copied {
                    warn!(error = %e, name, "event not archived (delivered all the same)");
                    failed += 1;
                }
            }
        }
        a.sync_kind(archive::MISP).map_err(|e| e.to_string())?;
        match failed {
            0 => Ok(()),
            n => Err(format!("{n} of the batch's archive copies failed")),
        }
    }
}
