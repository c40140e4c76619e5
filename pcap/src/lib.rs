//! Packet captures for gapferry, without libpcap: read the UDP datagrams out of classic
//! pcap and pcapng files, and write UDP datagrams as classic pcap files.
//!
//! [`CaptureReader`] replays a capture as [`CapturedDatagram`]s: it handles both byte
//! orders and both timestamp resolutions of classic pcap, pcapng with several sections
//! and interfaces, Ethernet (with VLAN tags), Linux cooked captures (v1 and v2), raw IP
//! and BSD loopback, IPv4 and IPv6 (with extension headers), and reassembles IP fragments
//! within fixed bounds. Hostile or damaged files produce errors, never panics.
//!
//! [`CaptureWriter`] writes what a sender would put on the wire, for the pcap sink and
//! for tests: Ethernet + IPv4/IPv6 + UDP frames with correct checksums, optionally
//! fragmented or VLAN-tagged.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod classic;
mod craft;
mod error;
mod input;
mod ip;
mod link;
mod pcapng;
mod reader;
mod reassembly;
mod records;
mod stats;
mod writer;

pub use craft::{VlanTags, MAX_IPV4_PAYLOAD, MAX_IPV6_PAYLOAD};
pub use error::{CaptureError, WriteError};
pub use link::link_type;
pub use reader::{CaptureReader, CapturedDatagram, ReaderConfig};
pub use reassembly::ReassemblyLimits;
pub use records::CaptureFormat;
pub use stats::ReaderStats;
pub use writer::{CaptureWriter, TimestampPrecision, WriterOptions};
