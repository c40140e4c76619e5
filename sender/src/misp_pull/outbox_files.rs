//! The files a puller touches besides the events: its API key file (checked for being
//! private), the outbox's pull lock, and atomic writes into the outbox.

use super::PullError;
use std::io::Write;
use std::path::Path;

/// Reads the API key: only the key (surrounding white space ignored), in a file others
/// cannot read.
pub(super) fn read_key(path: &Path) -> Result<String, PullError> {
    let bad = |reason: String| PullError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(bad(format!(
                "it is readable by every user (mode {mode:03o}); run chmod o-rwx on it (0600 or 0640)"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(bad("it is empty; put the MISP API key in it".into()));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "it holds more than one word or non-ASCII characters; put only the API key in it"
                .into(),
        ));
    }
    Ok(key.to_string())
}

/// Takes the outbox's pull lock, so two pullers never write one position file.
pub(super) fn lock_outbox(path: &Path) -> Result<std::fs::File, PullError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|error| PullError::Write {
            path: path.to_path_buf(),
            error,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed. The lock goes
    // with the descriptor (closed with the puller, or by the kernel when the process ends).
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(if error.kind() == std::io::ErrorKind::WouldBlock {
            PullError::Busy {
                path: path.to_path_buf(),
            }
        } else {
            PullError::Write {
                path: path.to_path_buf(),
                error,
            }
        });
    }
    Ok(f)
}

/// Writes `bytes` under a hidden name next to `path`, syncs, and renames it into place.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let err = |error| PullError::Write {
        path: path.to_path_buf(),
        error,
    };
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.part"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
