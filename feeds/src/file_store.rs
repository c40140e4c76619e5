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
        publish_staged(file, staged, &dest, &self.publish).map_err(|source| {
            FileStoreError::Io {
                path: dest.clone(),
                source,
            }
        })?;
        Ok(dest)
    }
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
