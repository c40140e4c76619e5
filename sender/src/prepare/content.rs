//! An object's bytes read at any offset, so several threads can read its blocks at once:
//! a file through `pread`, or the bytes a split MISP event holds in memory.

use crate::error::TransferError;
use crate::source::SourceFile;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an object's bytes are read from.
enum Origin {
    File(std::fs::File),
    Bytes(Arc<Vec<u8>>),
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
            Some(b) => Origin::Bytes(b.clone()),
            None => Origin::File(
                std::fs::File::open(&file.path).map_err(|e| read_error(&file.path, e))?,
            ),
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
            Origin::File(f) => f
                .metadata()
                .map(|m| m.len())
                .map_err(|e| read_error(&self.path, e)),
            Origin::Bytes(b) => Ok(b.len() as u64),
        }
    }

    /// Fills `buf` with the bytes at `offset`; a source that ended early has changed.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<(), TransferError> {
        let read = match &self.origin {
            Origin::File(f) => f.read_exact_at(buf, offset),
            Origin::Bytes(b) => {
                let at = usize::try_from(offset).unwrap_or(usize::MAX);
                match b.get(at..).and_then(|rest| rest.get(..buf.len())) {
                    Some(src) => {
                        buf.copy_from_slice(src);
                        Ok(())
                    }
                    None => Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
        };
        read.map_err(|e| read_error(&self.path, e))
    }

    /// Whether the content holds a byte at `size`: it grew since it was described.
    pub fn extends_past(&self, size: u64) -> Result<bool, TransferError> {
        match &self.origin {
            Origin::File(f) => {
                let mut byte = [0u8; 1];
                loop {
                    match f.read_at(&mut byte, size) {
                        Ok(n) => return Ok(n > 0),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(read_error(&self.path, e)),
                    }
                }
            }
            Origin::Bytes(b) => Ok(b.len() as u64 > size),
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
