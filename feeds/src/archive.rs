//! The receiver's archive of what it delivered: `OUT/.gapferry/archive/<kind>/<name>`, the
//! newest version of each MISP event (`misp/<uuid>.json`) and STIX bundle
//! (`stix/<file name in the store>`), so that a feed MISP consumed (and deleted) can be
//! published again. One file per event uuid or bundle: a newer version replaces the older
//! one, so the archive holds at most as many files as distinct events and bundles seen in
//! the retention window. Files older than the retention are pruned by
//! [`Archive::prune`]. Every write is a staging file + fsync + rename.
//!
//! Names are checked before any path is built: a kind or name with `/`, `..`, a leading
//! dot (staging files, hidden files) or a NUL is refused ([`ArchiveError::BadName`]).

use crate::fsutil::{child, ensure_real_dir, is_uuid, write_atomic, Publish};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use thiserror::Error;

/// Kind directory of archived MISP events.
pub const MISP: &str = "misp";
/// Kind directory of archived STIX bundles.
pub const STIX: &str = "stix";
/// Longest archived file name, in bytes (a common filesystem limit).
const MAX_NAME: usize = 255;

/// Permissions of the archive: the receiver's own state, not published to readers.
const ARCHIVE_PUBLISH: Publish = Publish {
    file_mode: 0o640,
    dir_mode: 0o750,
    gid: None,
};

/// Why the archive refused or failed an operation.
#[derive(Debug, Error)]
pub enum ArchiveError {
    /// A kind or file name that could escape its directory or hide a file.
    #[error("{what} {name:?} is not a plain file name (no '/', '..', leading '.', NUL; at most 255 bytes); it was not used as an archive path")]
    BadName {
        /// `kind` or `name`.
        what: &'static str,
        /// The refused text.
        name: String,
    },
    /// A MISP event name that is not a uuid.
    #[error("{0:?} is not an event uuid (8-4-4-4-12 hex digits)")]
    NotUuid(String),
    /// Reading or writing the archive failed.
    #[error("archive {}: {source}; check that the receiver's state directory is writable and the disk has room", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One archived file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEntry {
    /// Its file name (`<uuid>.json` for MISP).
    pub name: String,
    /// Its path.
    pub path: PathBuf,
    /// When it was archived (its modification time).
    pub archived: SystemTime,
}

/// What a prune did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// Files removed because they were older than the retention.
    pub removed: usize,
    /// Files kept.
    pub kept: usize,
}

/// The archive rooted at a directory (normally `OUT/.gapferry/archive`).
#[derive(Debug, Clone)]
pub struct Archive {
    root: PathBuf,
}

/// Whether `s` can be used as one path component of the archive.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_NAME
        && !s.starts_with('.')
        && !s.contains('/')
        && !s.contains('\0')
}

/// The archive file name of MISP event `uuid` (lower case), or why it is refused.
pub fn misp_event_name(uuid: &str) -> Result<String, ArchiveError> {
    if !is_uuid(uuid) {
        return Err(ArchiveError::NotUuid(uuid.to_string()));
    }
    Ok(format!("{}.json", uuid.to_ascii_lowercase()))
}

impl Archive {
    /// The archive in `root` (created on first store).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Archive { root: root.into() }
    }

    /// The archive's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of `kind`, after checking the name.
    pub fn kind_dir(&self, kind: &str) -> Result<PathBuf, ArchiveError> {
        if !plain_name(kind) {
            return Err(ArchiveError::BadName {
                what: "kind",
                name: kind.to_string(),
            });
        }
        Ok(child(&self.root, kind))
    }

    /// The path of `name` under `kind`, after checking both names.
    pub fn path_of(&self, kind: &str, name: &str) -> Result<PathBuf, ArchiveError> {
        let dir = self.kind_dir(kind)?;
        if !plain_name(name) {
            return Err(ArchiveError::BadName {
                what: "name",
                name: name.to_string(),
            });
        }
        Ok(child(&dir, name))
    }

    /// Stores `bytes` as `kind/name`, replacing what was there (atomically).
    pub fn store(&self, kind: &str, name: &str, bytes: &[u8]) -> Result<PathBuf, ArchiveError> {
        let path = self.path_of(kind, name)?;
        let dir = self.kind_dir(kind)?;
        ensure_real_dir(&dir, &ARCHIVE_PUBLISH).map_err(io_err(&dir))?;
        write_atomic(&path, bytes, &ARCHIVE_PUBLISH).map_err(io_err(&path))?;
        Ok(path)
    }

    /// Stages `bytes` as `kind/name` in `group`: visible (replacing what was there) once
    /// the group is published.
    pub(crate) fn stage(
        &self,
        kind: &str,
        name: &str,
        bytes: &[u8],
        group: &mut crate::fsutil::StagedFiles,
    ) -> Result<PathBuf, ArchiveError> {
        let path = self.path_of(kind, name)?;
        let dir = self.kind_dir(kind)?;
        ensure_real_dir(&dir, &ARCHIVE_PUBLISH).map_err(io_err(&dir))?;
        group
            .stage(&path, bytes, &ARCHIVE_PUBLISH)
            .map_err(io_err(&path))?;
        Ok(path)
    }

    /// Whether files in `dir` can be archived under `kind` as hard links: same filesystem
    /// (the kind's directory is created if missing). Any failure answers no (a copy then).
    pub fn links_from(&self, kind: &str, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(kind_dir) = self.kind_dir(kind) else {
            return false;
        };
        if ensure_real_dir(&kind_dir, &ARCHIVE_PUBLISH).is_err() {
            return false;
        }
        match (fs::metadata(&kind_dir), fs::metadata(dir)) {
            (Ok(a), Ok(b)) => a.dev() == b.dev(),
            _ => false,
        }
    }

    /// Archives the durable file `from` as `kind/name` by a hard link (to a hidden name,
    /// then renamed over `kind/name`): the archive and the delivered file share their
    /// bytes, and a deletion or a replacement by rename of either leaves the other intact.
    /// The caller fsyncs the kind's directory ([`Archive::sync_kind`]).
    pub fn link(&self, kind: &str, name: &str, from: &Path) -> Result<PathBuf, ArchiveError> {
        let path = self.path_of(kind, name)?;
        let dir = self.kind_dir(kind)?;
        ensure_real_dir(&dir, &ARCHIVE_PUBLISH).map_err(io_err(&dir))?;
        let hidden = child(&dir, &format!(".gapferry-link-{name}"));
        let linked = match fs::hard_link(from, &hidden) {
            // Left by a crash between the link and the rename.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&hidden);
                fs::hard_link(from, &hidden)
            }
            linked => linked,
        };
        linked
            .and_then(|()| fs::rename(&hidden, &path))
            .map_err(io_err(&path))?;
        Ok(path)
    }

    /// fsyncs the directory of `kind`, making links and renames into it durable.
    pub fn sync_kind(&self, kind: &str) -> Result<(), ArchiveError> {
        let dir = self.kind_dir(kind)?;
        crate::fsutil::sync_dir(&dir).map_err(io_err(&dir))
    }

    /// The content of `kind/name`, or `None` when it is not archived.
    pub fn load(&self, kind: &str, name: &str) -> Result<Option<Vec<u8>>, ArchiveError> {
        let path = self.path_of(kind, name)?;
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => fs::read(&path).map(Some).map_err(io_err(&path)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Whether `kind/name` is archived (a regular file).
    pub fn contains(&self, kind: &str, name: &str) -> bool {
        self.path_of(kind, name)
            .ok()
            .and_then(|p| fs::symlink_metadata(p).ok())
            .is_some_and(|m| m.is_file())
    }

    /// Every archived file of `kind` (regular files with plain names), sorted by name.
    pub fn entries(&self, kind: &str) -> Result<Vec<ArchivedEntry>, ArchiveError> {
        let dir = self.kind_dir(kind)?;
        let rd = match fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(io_err(&dir))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if !plain_name(&name) {
                continue;
            }
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue; // pruned or replaced meanwhile
            };
            if !meta.is_file() {
                continue;
            }
            let archived = meta.modified().map_err(io_err(&path))?;
            out.push(ArchivedEntry {
                name,
                path,
                archived,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the files of every kind archived before `now - keep`; a file that vanishes
    /// meanwhile is not an error.
    pub fn prune(&self, keep: Duration, now: SystemTime) -> Result<PruneSummary, ArchiveError> {
        let cutoff = now.checked_sub(keep).unwrap_or(SystemTime::UNIX_EPOCH);
        let mut summary = PruneSummary::default();
        for kind in [MISP, STIX] {
            for e in self.entries(kind)? {
                if e.archived < cutoff {
                    match fs::remove_file(&e.path) {
                        Ok(()) => summary.removed += 1,
                        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                        Err(err) => return Err(io_err(&e.path)(err)),
                    }
                } else {
                    summary.kept += 1;
                }
            }
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn age(path: &Path, secs_ago: u64) {
        let t = SystemTime::now() - Duration::from_secs(secs_ago);
        fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    #[test]
    fn hostile_names_are_refused_before_any_path_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().join("archive"));
        for name in [
            "..",
            ".",
            "../escape.json",
            "a/b.json",
            "",
            ".gapferry-stage-x.tmp",
            "nul\0.json",
        ] {
            assert!(
                matches!(a.store(MISP, name, b"x"), Err(ArchiveError::BadName { .. })),
                "{name:?}"
            );
            assert!(a.load(MISP, name).is_err(), "{name:?}");
            assert!(!a.contains(MISP, name), "{name:?}");
        }
        let long = "a".repeat(256);
        assert!(a.store(MISP, &long, b"x").is_err());
        for kind in ["..", "../x", "", ".hidden"] {
            assert!(a.store(kind, "ok.json", b"x").is_err(), "{kind:?}");
        }
        assert!(matches!(
            misp_event_name("../../etc/passwd"),
            Err(ArchiveError::NotUuid(_))
        ));
        // Nothing was written anywhere, inside or outside the archive.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_store_replaces_the_older_version_and_lists_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path());
        let name = misp_event_name("5A0A9AA9-23A4-4607-B6DF-41A9950D210F").unwrap();
        assert_eq!(name, "5a0a9aa9-23a4-4607-b6df-41a9950d210f.json");
        a.store(MISP, &name, b"v1").unwrap();
        a.store(MISP, &name, b"v2").unwrap();
        assert_eq!(a.load(MISP, &name).unwrap().as_deref(), Some(&b"v2"[..]));
        let e = a.entries(MISP).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].name, name);
        assert_eq!(a.load(STIX, &name).unwrap(), None);
    }

    #[test]
    fn pruning_removes_only_files_older_than_the_retention() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path());
        let old = a.store(MISP, "old.json", b"o").unwrap();
        let fresh = a.store(MISP, "fresh.json", b"f").unwrap();
        let old_bundle = a.store(STIX, "bundle--old.json", b"b").unwrap();
        let day = 86_400;
        age(&old, 10 * day);
        age(&fresh, 2 * day);
        age(&old_bundle, 8 * day);
        let s = a
            .prune(Duration::from_secs(7 * day), SystemTime::now())
            .unwrap();
        assert_eq!(
            s,
            PruneSummary {
                removed: 2,
                kept: 1
            }
        );
        assert!(!old.exists() && !old_bundle.exists());
        assert!(fresh.exists());
        // A longer retention keeps the rest; pruning an absent archive is fine.
        let s = a
            .prune(Duration::from_secs(30 * day), SystemTime::now())
            .unwrap();
        assert_eq!(
            s,
            PruneSummary {
                removed: 0,
                kept: 1
            }
        );
        let empty = Archive::new(dir.path().join("none"));
        assert_eq!(
            empty.prune(Duration::ZERO, SystemTime::now()).unwrap(),
            PruneSummary::default()
        );
    }

    #[test]
    fn a_symlink_planted_in_the_archive_is_not_listed_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let a = Archive::new(dir.path().join("archive"));
        a.store(MISP, "real.json", b"r").unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, b"s").unwrap();
        std::os::unix::fs::symlink(&secret, a.path_of(MISP, "link.json").unwrap()).unwrap();
        let names: Vec<String> = a
            .entries(MISP)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, ["real.json"]);
        assert_eq!(a.load(MISP, "link.json").unwrap(), None);
    }
}
