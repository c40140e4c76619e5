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

/// Splits a transfer's outcome for a caller that goes on with the next object: a sink
/// failure stops the whole session (the outer `Err`), any other error concerns this object
/// only (the inner `Err`), so `match r.stop_on_sink()? { ... }` replaces repeating
/// `Err(TransferError::Sink(e)) => return Err(e)`.
pub trait StopOnSink<T> {
    /// `Err(io)` for a sink failure, `Ok(result)` otherwise.
    fn stop_on_sink(self) -> io::Result<Result<T, TransferError>>;
}

impl<T> StopOnSink<T> for Result<T, TransferError> {
    fn stop_on_sink(self) -> io::Result<Result<T, TransferError>> {
        match self {
            Err(TransferError::Sink(e)) => Err(e),
            other => Ok(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_sink_failure_stops_the_session() {
        let sink: Result<(), _> = Err(TransferError::Sink(io::Error::other("gone")));
        assert_eq!(sink.stop_on_sink().unwrap_err().to_string(), "gone");
        let changed: Result<(), _> = Err(TransferError::Changed("a".into()));
        assert!(matches!(
            changed.stop_on_sink(),
            Ok(Err(TransferError::Changed(_)))
        ));
        assert_eq!(
            Ok::<u8, TransferError>(3).stop_on_sink().unwrap().unwrap(),
            3
        );
    }
}
