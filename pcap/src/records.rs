//! Capture files as a sequence of records: detects classic pcap or pcapng from the first
//! bytes and hands out link-layer frames with their timestamp and link type.

use std::io::{self, Read};
use std::time::Duration;

use crate::classic::ClassicFile;
use crate::error::CaptureError;
use crate::input::Input;
use crate::pcapng::NgFile;

/// Largest frame kept from a capture (libpcap's maximum snapshot length).
pub(crate) const MAX_CAPLEN: usize = 262_144;

/// The input with the four magic bytes that were read for format detection put back.
pub(crate) type Replayed<R> = io::Chain<io::Cursor<[u8; 4]>, R>;

/// The container format of a capture file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaptureFormat {
    /// Classic libpcap format.
    Pcap {
        /// Timestamps have nanosecond (not microsecond) resolution.
        nanosecond: bool,
        /// Header fields are big-endian.
        big_endian: bool,
    },
    /// pcapng (sections, interfaces and blocks).
    PcapNg,
}

/// One captured link-layer frame.
pub(crate) struct Frame<'a> {
    /// Capture time since the Unix epoch.
    pub(crate) timestamp: Duration,
    /// LINKTYPE_* value of the interface the frame was captured on.
    pub(crate) link_type: u16,
    /// The captured bytes.
    pub(crate) data: &'a [u8],
    /// Length of the frame on the wire (more than `data.len()` if cut by the snaplen).
    pub(crate) orig_len: u32,
}

/// What one record of the file turned out to be.
pub(crate) enum Record<'a> {
    /// A packet.
    Packet(Frame<'a>),
    /// A packet larger than [`MAX_CAPLEN`], skipped unread.
    Oversized,
    /// A block carrying no packet (section header, interface description, statistics...).
    Other,
}

enum Format {
    Classic(ClassicFile),
    Ng(NgFile),
}

/// Reads records from a classic pcap or pcapng file.
pub(crate) struct Records<R> {
    input: Input<Replayed<R>>,
    buf: Vec<u8>,
    format: Format,
}

impl<R: Read> Records<R> {
    /// Detects the format from the first bytes and reads the file header.
    pub(crate) fn open(mut inner: R) -> Result<Self, CaptureError> {
        let mut magic = [0u8; 4];
        let n = Input::new(&mut inner)
            .fill(&mut magic)
            .map_err(|source| CaptureError::Io {
                record: 0,
                offset: 0,
                source,
            })?;
        if n < magic.len() {
            let reason = if n == 0 {
                "the input is empty".to_string()
            } else {
                format!("the input is only {n} bytes long")
            };
            return Err(CaptureError::NotACapture { reason });
        }
        let mut input = Input::new(io::Cursor::new(magic).chain(inner));
        let format = if let Some(file) = ClassicFile::open(&mut input, magic)? {
            Format::Classic(file)
        } else if NgFile::is_magic(magic) {
            Format::Ng(NgFile::new())
        } else {
            return Err(CaptureError::NotACapture {
                reason: describe_magic(magic),
            });
        };
        Ok(Self {
            input,
            buf: Vec::new(),
            format,
        })
    }

    /// The next record, or `None` at a clean end of the file.
    pub(crate) fn next(&mut self) -> Result<Option<Record<'_>>, CaptureError> {
        match &mut self.format {
            Format::Classic(file) => file.next(&mut self.input, &mut self.buf),
            Format::Ng(file) => file.next(&mut self.input, &mut self.buf),
        }
    }

    /// Bytes of the file consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// The container format.
    pub(crate) fn format(&self) -> CaptureFormat {
        match &self.format {
            Format::Classic(file) => file.format(),
            Format::Ng(_) => CaptureFormat::PcapNg,
        }
    }
}

fn describe_magic(magic: [u8; 4]) -> String {
    let hex = format!(
        "{:02x} {:02x} {:02x} {:02x}",
        magic[0], magic[1], magic[2], magic[3]
    );
    if magic[..2] == [0x1f, 0x8b] {
        format!("it starts with {hex}, a gzip header: decompress it first")
    } else {
        format!("it starts with {hex}, which is neither a pcap magic number nor a pcapng section header")
    }
}

/// Byte-order aware field access for headers read into a buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endian {
    /// Fields are big-endian.
    pub(crate) big: bool,
}

impl Endian {
    /// The `u16` at `at`.
    pub(crate) fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.big {
            u16::from_be_bytes(v)
        } else {
            u16::from_le_bytes(v)
        }
    }

    /// The `u32` at `at`.
    pub(crate) fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = [b[at], b[at + 1], b[at + 2], b[at + 3]];
        if self.big {
            u32::from_be_bytes(v)
        } else {
            u32::from_le_bytes(v)
        }
    }

    /// The `i64` at `at`.
    pub(crate) fn i64(self, b: &[u8], at: usize) -> i64 {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        if self.big {
            i64::from_be_bytes(v)
        } else {
            i64::from_le_bytes(v)
        }
    }
}
