//! An object's bytes read at any offset, so several threads can read its blocks at once:
//! a file through `pread`, or the bytes a split MISP event holds in memory.
//!
//! A file read once (its blake3 learned from the blocks as they are read) must not change
//! while it is read, or the hash would vouch for a mix of two versions. So the file's
//! identity (device, inode, size, mtime, ctime) is noted when it is opened and compared
//! once the last block is read. That comparison can miss a change only when the change
//! gets the same timestamps as the one before it, within one tick of the kernel's clock:
//! a file last changed less than [`SETTLE`] before it was opened is hashed before it is
//! sent instead ([`Content::is_settled`]).

use crate::error::TransferError;
use crate::source::{HeldBytes, SourceFile};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long before it is opened a file must have last changed for a change during the
/// read to show in its metadata (timestamp ticks, and some room for a file server's clock).
pub const SETTLE: Duration = Duration::from_secs(2);

/// What makes an open file the same file with the same bytes: a write changes mtime and
/// ctime, a replacement the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    device: u64,
    inode: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    fn of(m: &std::fs::Metadata) -> Self {
        Identity {
            device: m.dev(),
            inode: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Where an object's bytes are read from.
enum Origin {
    /// A file, and its identity when opened.
    File(std::fs::File, Identity),
    /// Content that is not a whole file (a split MISP event).
    Held(HeldBytes),
}

/// An object's content, opened once and read by offset from any thread.
pub struct Content {
    origin: Origin,
    path: PathBuf,
}

impl Content {
    /// Opens `file`'s content.
    pub fn open(file: &SourceFile) -> Result<Self, TransferError> {
        let origin = match &file.bytes {
            Some(b) => Origin::Held(b.clone()),
            None => {
                let f = std::fs::File::open(&file.path).map_err(|e| read_error(&file.path, e))?;
                let m = f.metadata().map_err(|e| read_error(&file.path, e))?;
                Origin::File(f, Identity::of(&m))
            }
        };
        Ok(Content {
            origin,
            path: file.path.clone(),
        })
    }

    /// The source's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The content's size now, in bytes.
    pub fn size(&self) -> Result<u64, TransferError> {
        match &self.origin {
            Origin::File(f, _) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|e| read_error(&self.path, e)),
            Origin::Held(b) => Ok(b.len()),
        }
    }

    /// Fills `buf` with the bytes at `offset`; a source that ended early has changed.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), TransferError> {
        let read = match &self.origin {
            Origin::File(f, _) => f.read_exact_at(buf, offset),
            Origin::Held(b) => b.read_at(offset, buf),
        };
        read.map_err(|e| read_error(&self.path, e))
    }

    /// Whether a change while the content is read would show in [`Self::unchanged`]: bytes
    /// in memory, or a file whose last change (ctime) was over [`SETTLE`] before it was
    /// opened, so any later write gets other timestamps.
    pub fn is_settled(&self) -> bool {
        match &self.origin {
            Origin::Held(_) => true,
            Origin::File(_, id) => {
                let changed = UNIX_EPOCH
                    + Duration::new(
                        id.ctime.0.max(0) as u64,
                        id.ctime.1.clamp(0, 999_999_999) as u32,
                    );
                changed + SETTLE < SystemTime::now()
            }
        }
    }

    /// Whether the content is still what was opened, `size` bytes long: same file, same
    /// timestamps, nothing past `size`.
    pub fn unchanged(&self, size: u64) -> Result<bool, TransferError> {
        if let Origin::File(f, opened) = &self.origin {
            let now = f.metadata().map_err(|e| read_error(&self.path, e))?;
            if Identity::of(&now) != *opened || opened.size != size {
                return Ok(false);
            }
        }
        Ok(!self.extends_past(size)?)
    }

    /// Whether the content holds a byte at `size`: it grew since it was described.
    pub fn extends_past(&self, size: u64) -> Result<bool, TransferError> {
        match &self.origin {
            Origin::File(f, _) => {
                let mut byte = [0u8; 1];
                loop {
                    match f.read_at(&mut byte, size) {
                        Ok(n) => return Ok(n > 0),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(read_error(&self.path, e)),
                    }
                }
            }
            Origin::Held(b) => Ok(b.len() > size),
        }
    }
}

/// A read failure of `path`: a source that ended early changed under the sender.
pub fn read_error(path: &Path, error: io::Error) -> TransferError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        TransferError::Changed(path.to_path_buf())
    } else {
        TransferError::Read {
            path: path.to_path_buf(),
            error,
        }
    }
}
