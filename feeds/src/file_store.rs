//! The plain-file store: objects of kind `file` under their relative name in the files
//! directory, by rename of a verified staging file, never through a symbolic link planted
//! on the way and never over a newer version of the same name.
//!
//! The staging file is written elsewhere (the receiver's staging directory, same
//! filesystem); this store only chooses the destination and publishes it: the kind's mode
//! and group, fsync, rename, fsync of the directory.

use crate::fsutil::{parent_of, sync_dir};
use crate::Publish;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a plain file was not stored.
#[derive(Debug, Error)]
pub enum FileStoreError {
    /// A symbolic link sits on the way to the destination (it is never followed).
    #[error("refusing to deliver through the symbolic link {0}; remove it")]
    SymbolicLink(PathBuf),
    /// An existing path component that must be a directory is something else.
    #[error("{0} is in the way: it is not a directory")]
    InTheWay(PathBuf),
    /// The destination itself is a directory.
    #[error("{0} is a directory; not replaced")]
    IsADirectory(PathBuf),
    /// The destination holds a version modified later than this one.
    #[error(
        "{path} already holds a newer version (modified {existing}, this one {incoming}); not replaced"
    )]
    Newer {
        /// The destination.
        path: PathBuf,
        /// Modification time (Unix seconds) of the file in place.
        existing: i64,
        /// Modification time (Unix seconds) of the object delivered.
        incoming: i64,
    },
    /// Writing, renaming or syncing failed.
    #[error("cannot publish to {path}: {source}")]
    Io {
        /// The destination.
        path: PathBuf,
        /// What the filesystem said.
        source: io::Error,
    },
}

/// Plain files under one root directory.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    publish: Publish,
}

impl FileStore {
    /// A store delivering under `root` with `publish`'s mode and group.
    pub fn new(root: &Path, publish: Publish) -> Self {
        FileStore {
            root: root.to_path_buf(),
            publish,
        }
    }

    /// `root/name`, refusing any symbolic link planted on the way (never followed) and any
    /// existing path component that is not a directory.
    pub fn destination(&self, name: &str) -> Result<PathBuf, FileStoreError> {
        let mut path = self.root.clone();
        let components: Vec<&str> = name.split('/').collect();
        for (i, c) in components.iter().enumerate() {
            path.push(c);
            let last = i + 1 == components.len();
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(FileStoreError::SymbolicLink(path))
                }
                Ok(m) if !last && !m.is_dir() => return Err(FileStoreError::InTheWay(path)),
                Ok(m) if last && m.is_dir() => return Err(FileStoreError::IsADirectory(path)),
                _ => {}
            }
        }
        Ok(path)
    }

    /// Publishes the verified staging file `staged` (open as `file`) as `name`, with its
    /// modification time set to `mtime` (Unix seconds, 0 for unknown), unless the name
    /// already holds a newer version; returns the delivered path.
    pub fn deliver_file(
        &self,
        file: &File,
        staged: &Path,
        name: &str,
        mtime: i64,
    ) -> Result<PathBuf, FileStoreError> {
        let dest = self.prepare(file, name, mtime)?;
        publish_staged(file, staged, &dest, &self.publish).map_err(|source| {
            FileStoreError::Io {
                path: dest.clone(),
                source,
            }
        })?;
        Ok(dest)
    }

    /// The publish settings of this store.
    pub fn publish(&self) -> &Publish {
        &self.publish
    }

    /// Everything [`FileStore::deliver_file`] does before the fsync and rename: chooses
    /// the destination of `name`, refuses it when it holds a newer version, sets the
    /// staging file's modification time, mode and group. For a group commit
    /// ([`publish_group`]).
    pub fn prepare(&self, file: &File, name: &str, mtime: i64) -> Result<PathBuf, FileStoreError> {
        let dest = self.destination(name)?;
        if let Ok(existing) = std::fs::symlink_metadata(&dest) {
            let newer = existing
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |t| t.as_secs() as i64);
            if mtime < newer {
                return Err(FileStoreError::Newer {
                    path: dest,
                    existing: newer,
                    incoming: mtime,
                });
            }
        }
        if mtime > 0 {
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
            let _ = file.set_modified(t);
        }
        self.publish
            .apply_to_file(file)
            .map_err(|source| FileStoreError::Io {
                path: dest.clone(),
                source,
            })?;
        Ok(dest)
    }
}

/// One verified staging file of a group commit and where it goes.
#[derive(Debug, Clone, Copy)]
pub struct GroupItem<'a> {
    /// The staging file, open.
    pub file: &'a File,
    /// Its path (same filesystem as `dest`).
    pub staged: &'a Path,
    /// Where it is published.
    pub dest: &'a Path,
}

/// Publishes prepared staging files as one group: every file fsynced first (none is
/// renamed before all are durable, so no visible file lacks its bytes after a crash),
/// then each renamed to its destination (parents created with `publish`'s directory
/// mode), then each destination directory fsynced once. One result per item, in order:
/// an item whose fsync or rename failed stays a staging file (the caller removes it);
/// a failed directory fsync fails every item of that directory.
pub fn publish_group(items: &[GroupItem<'_>], publish: &Publish) -> Vec<io::Result<()>> {
    let mut results: Vec<io::Result<()>> = items.iter().map(|i| i.file.sync_all()).collect();
    let mut dirs: Vec<(&Path, Vec<usize>)> = Vec::new();
    for (k, item) in items.iter().enumerate() {
        if results[k].is_err() {
            continue;
        }
        let parent = parent_of(item.dest);
        let renamed = publish
            .create_dir_all(parent)
            .and_then(|()| std::fs::rename(item.staged, item.dest));
        match renamed {
            Err(e) => results[k] = Err(e),
            Ok(()) => match dirs.iter_mut().find(|(d, _)| *d == parent) {
                Some((_, members)) => members.push(k),
                None => dirs.push((parent, vec![k])),
            },
        }
    }
    for (dir, members) in dirs {
        if let Err(e) = sync_dir(dir) {
            for k in members {
                results[k] = Err(io::Error::new(
                    e.kind(),
                    format!("fsync of {}: {e}", dir.display()),
                ));
            }
        }
    }
    results
}

/// Gives `staged` (open as `file`) the mode and group of `publish`, fsyncs it, renames it
/// to `dest` (creating parents with `publish`'s directory mode) and fsyncs the directory.
pub fn publish_staged(
    file: &File,
    staged: &Path,
    dest: &Path,
    publish: &Publish,
) -> io::Result<()> {
    publish.apply_to_file(file)?;
    file.sync_all()?;
    let parent = parent_of(dest);
    publish.create_dir_all(parent)?;
    std::fs::rename(staged, dest)?;
    sync_dir(parent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dir: &Path, body: &[u8]) -> (File, PathBuf) {
        let path = dir.join("staged.part");
        std::fs::write(&path, body).unwrap();
        (
            File::options().read(true).write(true).open(&path).unwrap(),
            path,
        )
    }

    #[test]
    fn a_file_lands_under_its_name_and_a_newer_one_in_place_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("files"), Publish::default());
        let (file, path) = staged(dir.path(), b"v2");
        let dest = store.deliver_file(&file, &path, "a/b.txt", 2_000).unwrap();
        assert_eq!(dest, dir.path().join("files/a/b.txt"));
        assert_eq!(std::fs::read(&dest).unwrap(), b"v2");
        assert!(!path.exists(), "the staging file was renamed");
        let (file, path) = staged(dir.path(), b"v1");
        let err = store
            .deliver_file(&file, &path, "a/b.txt", 1_000)
            .unwrap_err();
        assert!(
            matches!(
                err,
                FileStoreError::Newer {
                    existing: 2_000,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"v2", "not replaced");
    }

    #[test]
    fn a_group_publishes_every_item_but_the_one_that_cannot_be_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("plain"), b"x").unwrap();
        let store = FileStore::new(&root, Publish::default());
        let staged: Vec<(File, PathBuf)> = (0..4)
            .map(|i| {
                let path = dir.path().join(format!("{i}.part"));
                std::fs::write(&path, format!("body {i}")).unwrap();
                (
                    File::options().read(true).write(true).open(&path).unwrap(),
                    path,
                )
            })
            .collect();
        // Item 2's parent is a regular file: its rename fails (a failure mid-group).
        let dests = [
            root.join("a/0"),
            root.join("1"),
            root.join("plain/2"),
            root.join("a/3"),
        ];
        let items: Vec<GroupItem> = staged
            .iter()
            .zip(&dests)
            .map(|((file, path), dest)| GroupItem {
                file,
                staged: path,
                dest,
            })
            .collect();
        let results = publish_group(&items, store.publish());
        let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
        assert_eq!(ok, [true, true, false, true]);
        for i in [0, 1, 3] {
            assert_eq!(
                std::fs::read(&dests[i]).unwrap(),
                format!("body {i}").as_bytes()
            );
            assert!(!staged[i].1.exists(), "renamed, not copied");
        }
        assert!(staged[2].1.exists(), "the failed item stays a staging file");
        assert!(!root.join("plain").is_dir());
    }

    #[test]
    fn hostile_names_never_pass_a_symlink_or_replace_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("files");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("plain"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let store = FileStore::new(&root, Publish::default());
        assert!(matches!(
            store.destination("link/passwd"),
            Err(FileStoreError::SymbolicLink(_))
        ));
        assert!(matches!(
            store.destination("plain/x"),
            Err(FileStoreError::InTheWay(_))
        ));
        assert!(matches!(
            store.destination("d"),
            Err(FileStoreError::IsADirectory(_))
        ));
        assert_eq!(store.destination("d/new").unwrap(), root.join("d/new"));
    }
}
