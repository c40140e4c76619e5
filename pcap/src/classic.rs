//! Classic libpcap files: the 24-byte file header (either byte order, microsecond or
//! nanosecond magic, and the rare "modified" variant) and the 16-byte record headers.

use std::io::Read;
use std::time::Duration;

use crate::error::CaptureError;
use crate::input::Input;
use crate::records::{CaptureFormat, Endian, Frame, Record, MAX_CAPLEN};

/// Microsecond magic as read little-endian from a little-endian file.
const MAGIC_MICRO: u32 = 0xa1b2_c3d4;
/// Nanosecond magic.
const MAGIC_NANO: u32 = 0xa1b2_3c4d;
/// Kuznetzov's "modified" pcap, with 24-byte record headers.
const MAGIC_MODIFIED: u32 = 0xa1b2_cd34;

/// The state of a classic pcap file being read.
pub(crate) struct ClassicFile {
    endian: Endian,
    nanos: bool,
    record_header_len: usize,
    link_type: u16,
}

impl ClassicFile {
    /// Reads the file header if `magic` is a classic pcap magic; `None` otherwise.
    pub(crate) fn open<R: Read>(
        input: &mut Input<R>,
        magic: [u8; 4],
    ) -> Result<Option<Self>, CaptureError> {
        let le = u32::from_le_bytes(magic);
        let be = u32::from_be_bytes(magic);
        let (big, value) = match (le, be) {
            (MAGIC_MICRO | MAGIC_NANO | MAGIC_MODIFIED, _) => (false, le),
            (_, MAGIC_MICRO | MAGIC_NANO | MAGIC_MODIFIED) => (true, be),
            _ => return Ok(None),
        };
        let mut header = [0u8; 24];
        input.exact(&mut header, "classic pcap file header")?;
        let endian = Endian { big };
        // The link type is the low 16 bits; the upper bits may carry FCS information.
        let link_type = (endian.u32(&header, 20) & 0xffff) as u16;
        Ok(Some(Self {
            endian,
            nanos: value == MAGIC_NANO,
            record_header_len: if value == MAGIC_MODIFIED { 24 } else { 16 },
            link_type,
        }))
    }

    /// The format as reported to users.
    pub(crate) fn format(&self) -> CaptureFormat {
        CaptureFormat::Pcap {
            nanosecond: self.nanos,
            big_endian: self.endian.big,
        }
    }

    /// The next packet record, or `None` at a clean end of file.
    pub(crate) fn next<'b, R: Read>(
        &mut self,
        input: &mut Input<R>,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<Record<'b>>, CaptureError> {
        let mut head = [0u8; 24];
        let head = &mut head[..self.record_header_len];
        if !input.begin_record(head, "record header")? {
            return Ok(None);
        }
        let e = self.endian;
        let secs = e.u32(head, 0);
        let frac = e.u32(head, 4);
        let caplen = e.u32(head, 8) as usize;
        let orig_len = e.u32(head, 12);
        if caplen > MAX_CAPLEN {
            return Err(input.malformed(format!(
                "record claims {caplen} captured bytes, more than the {MAX_CAPLEN} a capture may hold"
            )));
        }
        buf.clear();
        buf.resize(caplen, 0);
        input.exact(buf, "packet data")?;
        let frac = if self.nanos {
            Duration::from_nanos(u64::from(frac))
        } else {
            Duration::from_micros(u64::from(frac))
        };
        Ok(Some(Record::Packet(Frame {
            timestamp: Duration::from_secs(u64::from(secs)) + frac,
            link_type: self.link_type,
            data: buf,
            orig_len,
        })))
    }
}
