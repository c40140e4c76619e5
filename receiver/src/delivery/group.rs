//! Group commit of small objects: a verified small plain file is prepared (destination
//! chosen, newer version refused, mode, group and mtime set) and waits, still a staging
//! file nobody can see, until its group closes; then every file of the group is fsynced,
//! all are renamed into place, each destination directory is fsynced once, and only then
//! are their `delivered` records written ([`gapferry_feeds::file_store::publish_group`]).
//! The MISP events waiting for the feed (`misp_batch`) close with the same group, and so
//! do small STIX bundles: checked and written to staging files in the STIX directory as
//! they arrive, then fsynced, renamed under their bundle id and the directory fsynced
//! once ([`gapferry_feeds::StixStore::publish_bundles`]), archived, then recorded.
//!
//! Why: a small object's delivery cost was two fsyncs of its own (file and directory),
//! each an ext4 journal commit; in a group the first fsync commits the journal for every
//! file staged before it and one directory fsync covers every rename into it. A batch of
//! fsyncs rather than one `syncfs`: `syncfs` would also flush every other dirty page on
//! the filesystem (large objects being staged, other programs), a cost no group bounds.
//!
//! A group closes when it holds [`GROUP_OBJECTS`] objects or [`GROUP_BYTES`] bytes, when
//! a file of the same destination arrives, when the delivery thread has nothing queued
//! (`flush`, so a quiet link adds no latency), or once its oldest object waited
//! [`GROUP_AGE`] (checked as events arrive). Objects above [`SMALL_OBJECT`] keep the
//! direct path (their own fsync dwarfs the journal commit).

use super::small::{discard, read_staged};
use super::staging::Staged;
use super::Delivery;
use gapferry_common::{ObjectDescriptor, ObjectRef};
use gapferry_feeds::file_store::{publish_group, GroupItem};
use gapferry_feeds::Staging;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Largest plain file delivered through a group, in bytes.
pub const SMALL_OBJECT: u64 = 1 << 20;
/// Most objects one group holds.
pub const GROUP_OBJECTS: usize = 256;
/// Most bytes of small files one group holds.
pub const GROUP_BYTES: u64 = 64 << 20;
/// Longest an object waits for its group to close while events keep arriving.
pub const GROUP_AGE: Duration = Duration::from_millis(200);

/// A verified small STIX bundle waiting for its group's commit: checked and staged in
/// the STIX directory (or found stored already), with its bytes for the archive.
type PendingBundle = (ObjectRef, ObjectDescriptor, Instant, Staging, Vec<u8>);

/// Verified small files and STIX bundles waiting for their group's commit.
pub(super) struct FileGroup {
    files: Vec<(ObjectRef, Staged, PathBuf)>,
    bundles: Vec<PendingBundle>,
    bytes: u64,
    opened: Option<Instant>,
    /// [`GROUP_AGE`] unless set otherwise.
    age: Duration,
}

impl Default for FileGroup {
    fn default() -> Self {
        FileGroup {
            files: Vec::new(),
            bundles: Vec::new(),
            bytes: 0,
            opened: None,
            age: GROUP_AGE,
        }
    }
}

impl FileGroup {
    /// Objects waiting.
    pub(super) fn len(&self) -> usize {
        self.files.len() + self.bundles.len()
    }

    /// Whether the group is full.
    fn full(&self) -> bool {
        self.len() >= GROUP_OBJECTS || self.bytes >= GROUP_BYTES
    }
}

impl Delivery {
    /// Prepares a verified small file and adds it to the group, closing the group first
    /// when the file goes where one of it goes, and after when the group is full.
    pub(super) fn group_file(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        // A group member of the same name is placed first: the newer-version check below
        // must see it.
        if let Ok(dest) = self.stores.files.destination(&d.name) {
            if self.group.files.iter().any(|(_, _, other)| *other == dest) {
                self.flush();
            }
        }
        let dest = match self.stores.files.prepare(&s.file, &d.name, d.mtime) {
            Ok(dest) => dest,
            Err(e) => {
                let d = s.descriptor.clone();
                self.placed(object, &d, s.started, Err(e.to_string()), &s.path, None);
                return;
            }
        };
        self.group.bytes += d.size;
        self.group.opened.get_or_insert_with(Instant::now);
        self.group.files.push((object, s, dest));
        if self.group.full() {
            self.flush();
        }
    }

    /// Checks a verified small STIX bundle and stages it in the STIX directory, where it
    /// waits for the group's commit.
    pub(super) fn group_bundle(&mut self, object: ObjectRef, s: Staged) {
        let bytes = read_staged(&s, self.max_document);
        discard(&s);
        let d = s.descriptor;
        let staged = bytes.and_then(|bytes| match self.stores.stix.stage_bundle(&bytes) {
            Ok(staged) => Ok((staged, bytes)),
            Err(e) => Err(format!("refused by the STIX store: {e}")),
        });
        match staged {
            Ok((staged, bytes)) => {
                self.group.bytes += d.size;
                self.group.opened.get_or_insert_with(Instant::now);
                self.group
                    .bundles
                    .push((object, d, s.started, staged, bytes));
                if self.group.full() {
                    self.flush();
                }
            }
            Err(reason) => self.placed(object, &d, s.started, Err(reason), Path::new(""), None),
        }
    }

    /// Notes that an object (a MISP event) waits for the group to close.
    pub(super) fn note_waiting(&mut self) {
        self.group.opened.get_or_insert_with(Instant::now);
    }

    /// Commits every group waiting (small files, MISP events, STIX bundles); call when
    /// no event is queued.
    pub fn flush(&mut self) {
        let bundles = std::mem::take(&mut self.group.bundles);
        self.commit_files();
        self.commit_misp();
        self.commit_bundles(bundles);
    }

    /// Commits the group's STIX bundles: fsyncs, renames, one directory fsync, the
    /// archive copies, then the records.
    fn commit_bundles(&mut self, bundles: Vec<PendingBundle>) {
        if bundles.is_empty() {
            return;
        }
        let mut staged = Vec::new();
        let mut waiting = Vec::new();
        for (object, d, started, staging, bytes) in bundles {
            let known = match staging {
                Staging::Staged(b) => {
                    staged.push(b);
                    None
                }
                Staging::Stored(stored) => Some(Ok(stored)),
            };
            waiting.push((object, d, started, bytes, known));
        }
        let mut published = self.stores.stix.publish_bundles(staged).into_iter();
        let results: Vec<_> = waiting
            .into_iter()
            .map(|(object, d, started, bytes, known)| {
                let r = known.unwrap_or_else(|| published.next().expect("one result per bundle"));
                let r = r
                    .map(|stored| stored.path)
                    .map_err(|e| format!("refused by the STIX store: {e}"));
                (object, d, started, bytes, r)
            })
            .collect();
        self.archive_bundles(results.iter().filter_map(|(_, _, _, bytes, r)| {
            r.as_ref().ok().map(|p| (p.as_path(), bytes.as_slice()))
        }));
        for (object, d, started, _, r) in results {
            self.placed(object, &d, started, r, Path::new(""), None);
        }
    }

    /// Whether the group's oldest object waited long enough.
    pub(super) fn group_due(&self) -> bool {
        self.group
            .opened
            .is_some_and(|t| t.elapsed() >= self.group.age)
    }

    /// Sets how long an object waits for its group while events keep arriving
    /// (default [`GROUP_AGE`]).
    pub fn set_group_age(&mut self, age: Duration) {
        self.group.age = age;
    }

    /// Commits the group of small files: fsyncs, renames, one fsync per directory, then
    /// the records.
    pub(super) fn commit_files(&mut self) {
        let age = self.group.age;
        let group = std::mem::replace(
            &mut self.group,
            FileGroup {
                age,
                ..FileGroup::default()
            },
        );
        if group.files.is_empty() {
            return;
        }
        let items: Vec<GroupItem> = group
            .files
            .iter()
            .map(|(_, s, dest)| GroupItem {
                file: &s.file,
                staged: &s.path,
                dest,
            })
            .collect();
        let results = publish_group(&items, self.stores.files.publish());
        drop(items);
        for ((object, s, dest), result) in group.files.into_iter().zip(results) {
            let placed = result
                .map(|()| dest.clone())
                .map_err(|e| format!("cannot publish to {}: {e}", dest.display()));
            self.placed(object, &s.descriptor, s.started, placed, &s.path, None);
        }
    }
}
