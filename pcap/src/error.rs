//! Errors of the capture reader and writer: what went wrong, and where in the file.

use std::io;
use std::path::PathBuf;

use thiserror::Error;

/// Why a capture could not be read; positions are byte offsets from the start of the file.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The capture file could not be opened.
    #[error("cannot open capture {}: {source}", path.display())]
    Open {
        /// The path given to [`crate::CaptureReader::open`].
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// The input does not start like a pcap or pcapng file.
    #[error("not a pcap or pcapng file: {reason}")]
    NotACapture {
        /// What was found instead.
        reason: String,
    },
    /// The file ends in the middle of a record.
    #[error(
        "capture truncated: record {record} ({part}) starts at byte offset {offset} \
         but the file ends at byte offset {end}"
    )]
    Truncated {
        /// 1-based number of the record that is cut (pcapng: every block counts; 0: file header).
        record: u64,
        /// Byte offset where that record starts.
        offset: u64,
        /// Byte offset where the input ended.
        end: u64,
        /// Which part of the record was being read.
        part: &'static str,
    },
    /// A record is inconsistent (bad lengths, unknown interface, ...).
    #[error("malformed capture: record {record} at byte offset {offset}: {reason}")]
    Malformed {
        /// 1-based number of the bad record (pcapng: every block counts).
        record: u64,
        /// Byte offset where that record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the input failed.
    #[error("read error in record {record} at byte offset {offset}: {source}")]
    Io {
        /// 1-based number of the record being read.
        record: u64,
        /// Byte offset where the failed read started.
        offset: u64,
        /// The error from the reader.
        #[source]
        source: io::Error,
    },
}

/// Why a capture could not be written.
#[derive(Debug, Error)]
pub enum WriteError {
    /// Writing to the output failed.
    #[error("cannot write capture: {0}")]
    Io(#[from] io::Error),
    /// The capture file could not be created.
    #[error("cannot create capture {}: {source}", path.display())]
    Create {
        /// The path given to [`crate::CaptureWriter::create`].
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },
    /// Source and destination are not both IPv4 or both IPv6.
    #[error("source {src} and destination {dst} are not of the same IP version")]
    MixedAddressFamilies {
        /// The source address.
        src: std::net::SocketAddr,
        /// The destination address.
        dst: std::net::SocketAddr,
    },
    /// The payload does not fit in one UDP datagram over this IP version.
    #[error("payload of {len} bytes exceeds the UDP maximum of {max} bytes")]
    PayloadTooLarge {
        /// Payload length asked for.
        len: usize,
        /// Largest payload possible.
        max: usize,
    },
    /// The fragment size is zero or not a multiple of 8.
    #[error("fragment payload size {0} must be a non-zero multiple of 8")]
    BadFragmentSize(usize),
    /// The timestamp does not fit the 32-bit seconds of classic pcap.
    #[error("timestamp {0:?} does not fit a classic pcap record (32-bit seconds)")]
    TimestampOutOfRange(std::time::Duration),
}
