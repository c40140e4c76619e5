//! Reading the pre-shared key files given with `--key` (and `--retired-key`).

use gapferry_common::{Key, KeyRing};
use std::path::{Path, PathBuf};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file cannot be read.
    #[error("cannot read key file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file holds no key in the format `gapferry-send keygen` writes.
    #[error("bad key file {path}: {error} (make one with `gapferry-send keygen FILE`)")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: gapferry_common::auth::KeyError,
    },
}

/// Reads the key in `path`.
pub fn read_key(path: &Path) -> Result<Key, KeyFileError> {
    let bytes = std::fs::read(path).map_err(|error| KeyFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    Key::parse(&bytes).map_err(|error| KeyFileError::Parse {
        path: path.to_path_buf(),
        error,
    })
}

/// Reads every key in `paths`, in order; the first unusable file stops it.
pub fn read_keys(paths: &[PathBuf]) -> Result<Vec<Key>, KeyFileError> {
    paths.iter().map(|p| read_key(p)).collect()
}

/// The ring of keys a receiver accepts, read from `paths`.
pub fn read_key_ring(paths: &[PathBuf]) -> Result<KeyRing, KeyFileError> {
    Ok(KeyRing::new(read_keys(paths)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_read_and_a_bad_or_missing_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("link.key");
        std::fs::write(&good, format!("{}\n", "ab".repeat(32))).unwrap();
        let bad = dir.path().join("bad.key");
        std::fs::write(&bad, "not a key").unwrap();
        let missing = dir.path().join("missing.key");
        assert_eq!(read_keys(&[good.clone(), good.clone()]).unwrap().len(), 2);
        let e = read_keys(&[good.clone(), bad.clone()]).unwrap_err();
        assert!(matches!(e, KeyFileError::Parse { .. }), "{e}");
        assert!(e.to_string().contains("bad.key"), "{e}");
        let e = read_key(&missing).unwrap_err();
        assert!(matches!(e, KeyFileError::Read { .. }) && e.to_string().contains("missing.key"));
    }
}
