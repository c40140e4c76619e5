//! Why one object could not be sent: shared by preparing blocks and streaming them.

use std::io;
use std::path::PathBuf;
use thiserror::Error;

/// Why an object could not be sent.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The source could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
    },
    /// The file changed while it was being sent; the high side will refuse it.
    #[error("{0} changed while it was being sent; send it again once it is complete")]
    Changed(PathBuf),
    /// The datagram sink failed: the whole session stops.
    #[error("cannot send datagrams: {0}")]
    Sink(io::Error),
}
