//! pcapng files: sections (each with its own byte order), interface descriptions (each
//! with its own link type, snaplen, `if_tsresol` and `if_tsoffset`) and the packet blocks
//! (enhanced, simple and obsolete); every other block is skipped unread.

use std::io::Read;
use std::time::Duration;

use crate::error::CaptureError;
use crate::input::Input;
use crate::records::{Endian, Frame, Record, MAX_CAPLEN};

/// Section header block type; the same bytes in either byte order.
const SECTION_HEADER: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
const INTERFACE_DESCRIPTION: u32 = 1;
const OBSOLETE_PACKET: u32 = 2;
const SIMPLE_PACKET: u32 = 3;
const ENHANCED_PACKET: u32 = 6;
const BYTE_ORDER_MAGIC: u32 = 0x1a2b_3c4d;
const OPT_END: u16 = 0;
const OPT_IF_TSRESOL: u16 = 9;
const OPT_IF_TSOFFSET: u16 = 14;
/// Most interfaces a section may describe.
const MAX_INTERFACES: usize = 65_536;
/// Largest interface description block body kept in memory.
const MAX_INTERFACE_BLOCK: u64 = 1 << 20;

/// What a section says about one capture interface.
#[derive(Clone, Copy, Debug)]
struct Interface {
    link_type: u16,
    snaplen: u32,
    units_per_second: u64,
    offset_seconds: i64,
}

impl Interface {
    /// Converts a 64-bit timestamp in this interface's units to time since the epoch.
    fn timestamp(&self, high: u32, low: u32) -> Duration {
        let ticks = (u64::from(high) << 32) | u64::from(low);
        let units = self.units_per_second;
        let frac = u128::from(ticks % units);
        let nanos = (frac * 1_000_000_000 / u128::from(units)) as u32;
        let secs = i128::from(ticks / units) + i128::from(self.offset_seconds);
        if secs < 0 {
            return Duration::ZERO;
        }
        Duration::new(u64::try_from(secs).unwrap_or(u64::MAX), nanos)
    }
}

/// Timestamp units per second for an `if_tsresol` value, if it is representable.
fn units_per_second(tsresol: u8) -> Option<u64> {
    if tsresol & 0x80 != 0 {
        let power = tsresol & 0x7f;
        (power <= 63).then(|| 1u64 << power)
    } else {
        (tsresol <= 19).then(|| 10u64.pow(u32::from(tsresol)))
    }
}

/// The state of a pcapng file being read: the current section's byte order and interfaces.
pub(crate) struct NgFile {
    endian: Endian,
    interfaces: Vec<Interface>,
    last_timestamp: Duration,
    in_section: bool,
}

impl NgFile {
    /// Whether the first four bytes of a file are a pcapng section header.
    pub(crate) fn is_magic(magic: [u8; 4]) -> bool {
        magic == SECTION_HEADER
    }

    /// A reader positioned before the first section header.
    pub(crate) fn new() -> Self {
        Self {
            endian: Endian { big: false },
            interfaces: Vec::new(),
            last_timestamp: Duration::ZERO,
            in_section: false,
        }
    }

    /// The next block, or `None` at a clean end of file.
    pub(crate) fn next<'b, R: Read>(
        &mut self,
        input: &mut Input<R>,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<Record<'b>>, CaptureError> {
        let mut head = [0u8; 8];
        if !input.begin_record(&mut head, "block header")? {
            return Ok(None);
        }
        if head[..4] == SECTION_HEADER {
            self.section_header(input, &head)?;
            return Ok(Some(Record::Other));
        }
        if !self.in_section {
            return Err(input.malformed("block before the first section header"));
        }
        let e = self.endian;
        let block_type = e.u32(&head, 0);
        let len = e.u32(&head, 4);
        check_len(input, len, 12, "block")?;
        let body = u64::from(len) - 12;
        let record = match block_type {
            INTERFACE_DESCRIPTION => {
                self.interface_description(input, buf, body)?;
                Record::Other
            }
            ENHANCED_PACKET | OBSOLETE_PACKET => {
                if body < 20 {
                    return Err(
                        input.malformed(format!("packet block of {len} bytes is too short"))
                    );
                }
                let mut fixed = [0u8; 20];
                input.exact(&mut fixed, "packet block header")?;
                let interface = if block_type == ENHANCED_PACKET {
                    e.u32(&fixed, 0)
                } else {
                    u32::from(e.u16(&fixed, 0))
                };
                let interface = self.interface(input, interface)?;
                let timestamp = interface.timestamp(e.u32(&fixed, 4), e.u32(&fixed, 8));
                let caplen = e.u32(&fixed, 12);
                let orig_len = e.u32(&fixed, 16);
                if u64::from(caplen) > body - 20 {
                    return Err(input.malformed(format!(
                        "packet data of {caplen} bytes overflows its {len}-byte block"
                    )));
                }
                self.last_timestamp = timestamp;
                let packet = Packet {
                    timestamp,
                    link_type: interface.link_type,
                    caplen,
                    orig_len,
                };
                packet.read(input, buf, body - 20)?
            }
            SIMPLE_PACKET => {
                if body < 4 {
                    return Err(
                        input.malformed(format!("simple packet block of {len} bytes is too short"))
                    );
                }
                let mut fixed = [0u8; 4];
                input.exact(&mut fixed, "simple packet block header")?;
                let interface = self.interface(input, 0)?;
                let orig_len = e.u32(&fixed, 0);
                let room = body - 4;
                let mut caplen = u64::from(orig_len).min(room);
                if interface.snaplen != 0 {
                    caplen = caplen.min(u64::from(interface.snaplen));
                }
                let packet = Packet {
                    timestamp: self.last_timestamp,
                    link_type: interface.link_type,
                    caplen: caplen as u32,
                    orig_len,
                };
                packet.read(input, buf, room)?
            }
            _ => {
                input.skip(body, "block body")?;
                Record::Other
            }
        };
        read_trailer(input, e, len)?;
        Ok(Some(record))
    }

    /// Reads a section header block: sets the byte order and forgets the interfaces.
    fn section_header<R: Read>(
        &mut self,
        input: &mut Input<R>,
        head: &[u8; 8],
    ) -> Result<(), CaptureError> {
        let mut fixed = [0u8; 16];
        input.exact(&mut fixed[..4], "section header")?;
        let le = Endian { big: false };
        let be = Endian { big: true };
        let e = if le.u32(&fixed, 0) == BYTE_ORDER_MAGIC {
            le
        } else if be.u32(&fixed, 0) == BYTE_ORDER_MAGIC {
            be
        } else if !self.in_section {
            return Err(CaptureError::NotACapture {
                reason: "it starts like a pcapng section header but has no byte-order magic".into(),
            });
        } else {
            return Err(input.malformed("section header without a valid byte-order magic"));
        };
        let len = e.u32(head, 4);
        check_len(input, len, 28, "section header")?;
        input.exact(&mut fixed[4..], "section header")?;
        let (major, minor) = (e.u16(&fixed, 4), e.u16(&fixed, 6));
        if major != 1 {
            return Err(input.malformed(format!("unsupported pcapng version {major}.{minor}")));
        }
        input.skip(u64::from(len) - 28, "section header options")?;
        read_trailer(input, e, len)?;
        self.endian = e;
        self.interfaces.clear();
        self.in_section = true;
        Ok(())
    }

    /// Reads an interface description block body of `body` bytes and records the interface.
    fn interface_description<R: Read>(
        &mut self,
        input: &mut Input<R>,
        buf: &mut Vec<u8>,
        body: u64,
    ) -> Result<(), CaptureError> {
        if body < 8 {
            return Err(input.malformed("interface description block is too short"));
        }
        if body > MAX_INTERFACE_BLOCK {
            return Err(input.malformed(format!(
                "interface description block of {body} bytes is larger than {MAX_INTERFACE_BLOCK}"
            )));
        }
        if self.interfaces.len() >= MAX_INTERFACES {
            return Err(input.malformed(format!(
                "more than {MAX_INTERFACES} interfaces in one section"
            )));
        }
        buf.clear();
        buf.resize(body as usize, 0);
        input.exact(buf, "interface description")?;
        let e = self.endian;
        let mut tsresol = 6;
        let mut offset_seconds = 0;
        let mut options = &buf[8..];
        while options.len() >= 4 {
            let code = e.u16(options, 0);
            let len = usize::from(e.u16(options, 2));
            let Some(value) = options.get(4..4 + len) else {
                break;
            };
            match code {
                OPT_END => break,
                OPT_IF_TSRESOL if len >= 1 => tsresol = value[0],
                OPT_IF_TSOFFSET if len >= 8 => offset_seconds = e.i64(value, 0),
                _ => {}
            }
            options = options.get(4 + ((len + 3) & !3)..).unwrap_or(&[]);
        }
        let Some(units_per_second) = units_per_second(tsresol) else {
            return Err(input.malformed(format!("unsupported if_tsresol {tsresol:#04x}")));
        };
        self.interfaces.push(Interface {
            link_type: e.u16(buf, 0),
            snaplen: e.u32(buf, 4),
            units_per_second,
            offset_seconds,
        });
        Ok(())
    }

    /// The interface a packet block refers to.
    fn interface<R: Read>(&self, input: &Input<R>, id: u32) -> Result<Interface, CaptureError> {
        self.interfaces.get(id as usize).copied().ok_or_else(|| {
            input.malformed(format!(
                "packet on interface {id}, but the section describes {} interfaces",
                self.interfaces.len()
            ))
        })
    }
}

/// The fields of a packet block needed to read its data.
struct Packet {
    timestamp: Duration,
    link_type: u16,
    caplen: u32,
    orig_len: u32,
}

impl Packet {
    /// Reads the packet data from a body area of `room` bytes, skipping padding and options.
    fn read<'b, R: Read>(
        self,
        input: &mut Input<R>,
        buf: &'b mut Vec<u8>,
        room: u64,
    ) -> Result<Record<'b>, CaptureError> {
        let caplen = self.caplen as usize;
        if caplen > MAX_CAPLEN {
            input.skip(room, "oversized packet")?;
            return Ok(Record::Oversized);
        }
        buf.clear();
        buf.resize(caplen, 0);
        input.exact(buf, "packet data")?;
        input.skip(room - caplen as u64, "packet padding and options")?;
        Ok(Record::Packet(Frame {
            timestamp: self.timestamp,
            link_type: self.link_type,
            data: buf,
            orig_len: self.orig_len,
        }))
    }
}

/// Checks a block's total length against the smallest possible and the 4-byte alignment.
fn check_len<R: Read>(
    input: &Input<R>,
    len: u32,
    min: u32,
    what: &str,
) -> Result<(), CaptureError> {
    if len < min {
        return Err(input.malformed(format!("{what} length {len} is shorter than {min} bytes")));
    }
    if !len.is_multiple_of(4) {
        return Err(input.malformed(format!("{what} length {len} is not a multiple of 4")));
    }
    Ok(())
}

/// Reads the trailing copy of the block length and checks it matches the leading one.
fn read_trailer<R: Read>(input: &mut Input<R>, e: Endian, len: u32) -> Result<(), CaptureError> {
    let mut trailer = [0u8; 4];
    input.exact(&mut trailer, "block trailer")?;
    let copy = e.u32(&trailer, 0);
    if copy != len {
        return Err(input.malformed(format!(
            "block length {len} does not match its trailing copy {copy}"
        )));
    }
    Ok(())
}
