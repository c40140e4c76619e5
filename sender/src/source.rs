//! Turning command-line paths into the list of files to send, with their safe relative names.

use gapferry_common::name;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// One file to send and the name it will have on the high side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Where to read it.
    pub path: PathBuf,
    /// Its relative name on the high side.
    pub name: String,
    /// Its size when listed.
    pub size: u64,
}

/// Why the list of files could not be built.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A path cannot be read.
    #[error("cannot read {path}: {source}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A path's name cannot be carried (not UTF-8, control characters, too long...).
    #[error("cannot send {path}: its name {name:?} is not a safe relative name ({reason})")]
    BadName {
        /// The path.
        path: PathBuf,
        /// The name derived from it.
        name: String,
        /// Why it was refused.
        reason: name::NameError,
    },
    /// Two paths map to the same name on the high side.
    #[error("two inputs would both arrive as {0:?}; send them separately or rename one")]
    Duplicate(String),
    /// Neither a regular file nor a directory.
    #[error("{0} is neither a regular file nor a directory")]
    NotAFile(PathBuf),
}

fn unreadable(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Unreadable {
        path: path.to_path_buf(),
        source,
    }
}

fn named(path: &Path, name: String, size: u64) -> Result<SourceFile, SourceError> {
    name::validate(&name).map_err(|reason| SourceError::BadName {
        path: path.to_path_buf(),
        name: name.clone(),
        reason,
    })?;
    // Fail now, not half-way through a transfer, on a file we may not open.
    std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    Ok(SourceFile {
        path: path.to_path_buf(),
        name,
        size,
    })
}

/// Lists `paths`: a file is sent under its file name, a directory's tree under names
/// relative to that directory. Symbolic links inside directories are skipped.
pub fn collect(paths: &[PathBuf]) -> Result<Vec<SourceFile>, SourceError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push(named(path, name, meta.len())?);
        } else if meta.is_dir() {
            let mut entries = Vec::new();
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    let p = e.path().unwrap_or(path).to_path_buf();
                    unreadable(&p, e.into())
                })?;
                if entry.file_type().is_symlink() {
                    tracing::warn!(path = %entry.path().display(), "skipping symbolic link");
                    continue;
                }
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry.path().strip_prefix(path).expect("walk stays inside");
                let name = rel
                    .to_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| rel.to_string_lossy().into_owned());
                let size = entry
                    .metadata()
                    .map_err(|e| unreadable(entry.path(), e.into()))?
                    .len();
                entries.push(named(entry.path(), name, size)?);
            }
            out.extend(entries);
        } else {
            return Err(SourceError::NotAFile(path.clone()));
        }
    }
    let mut seen = HashSet::new();
    for f in &out {
        if !seen.insert(f.name.as_str()) {
            return Err(SourceError::Duplicate(f.name.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_trees_get_relative_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("sub/b.bin"), b"bb").unwrap();
        let single = dir.path().join("single.json");
        std::fs::write(&single, b"{}").unwrap();
        let files = collect(&[root.clone(), single.clone()]).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub/b.bin", "single.json"]);
        assert_eq!(files[1].size, 2);
    }

    #[test]
    fn refuses_missing_and_duplicate_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            collect(&[missing]),
            Err(SourceError::Unreadable { .. })
        ));
        let a = dir.path().join("x");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("f"), b"1").unwrap();
        std::fs::write(dir.path().join("f"), b"2").unwrap();
        assert!(matches!(
            collect(&[a, dir.path().join("f")]),
            Err(SourceError::Duplicate(_))
        ));
    }
}
