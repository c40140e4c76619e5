//! Test helpers: hand-built classic pcap and pcapng files, IP/UDP packets built with
//! etherparse (an encoder independent of the crate's writer), and a read-everything helper.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use gapferry_pcap::{CaptureError, CaptureReader, CapturedDatagram, ReaderConfig, ReaderStats};

/// Everything a reader yields from `bytes`: datagrams, final stats, the error if any.
pub struct ReadOutcome {
    pub datagrams: Vec<CapturedDatagram>,
    pub stats: ReaderStats,
    pub error: Option<CaptureError>,
}

pub fn read_all(bytes: &[u8]) -> ReadOutcome {
    read_all_with(bytes, ReaderConfig::default())
}

pub fn read_all_with(bytes: &[u8], config: ReaderConfig) -> ReadOutcome {
    let mut reader = match CaptureReader::with_config(bytes, config) {
        Ok(r) => r,
        Err(e) => {
            return ReadOutcome {
                datagrams: vec![],
                stats: ReaderStats::default(),
                error: Some(e),
            }
        }
    };
    let mut datagrams = Vec::new();
    let error = loop {
        match reader.next_datagram() {
            Ok(Some(d)) => datagrams.push(d),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    assert!(
        matches!(reader.next_datagram(), Ok(None)),
        "a finished reader stays finished"
    );
    ReadOutcome {
        datagrams,
        stats: reader.stats(),
        error,
    }
}

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// An IP packet (no link layer) carrying one UDP datagram, built by etherparse.
pub fn udp_packet(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let builder = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            etherparse::PacketBuilder::ipv4(s.octets(), d.octets(), 64)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            etherparse::PacketBuilder::ipv6(s.octets(), d.octets(), 64)
        }
        _ => panic!("mixed families"),
    };
    builder
        .udp(src.port(), dst.port())
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An Ethernet header for `ethertype` after the given VLAN tags (TPID, VLAN id).
pub fn ethernet_header(tags: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    for &(tpid, vid) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

pub fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Builds a classic pcap file by hand.
pub struct Classic {
    pub bytes: Vec<u8>,
    big: bool,
    nanos: bool,
    /// Byte offset where each record ends.
    pub ends: Vec<usize>,
}

impl Classic {
    pub fn new(link_type: u32, big: bool, nanos: bool) -> Self {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut c = Self {
            bytes: Vec::new(),
            big,
            nanos,
            ends: Vec::new(),
        };
        c.u32(magic);
        c.u16(2);
        c.u16(4);
        c.u32(0);
        c.u32(0);
        c.u32(262_144);
        c.u32(link_type);
        c
    }

    fn u16(&mut self, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    fn u32(&mut self, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.bytes.extend_from_slice(&b);
    }

    pub fn record(&mut self, ts: Duration, data: &[u8]) -> &mut Self {
        self.record_cut(ts, data, data.len() as u32)
    }

    pub fn record_cut(&mut self, ts: Duration, data: &[u8], orig_len: u32) -> &mut Self {
        self.u32(ts.as_secs() as u32);
        self.u32(if self.nanos {
            ts.subsec_nanos()
        } else {
            ts.subsec_micros()
        });
        self.u32(data.len() as u32);
        self.u32(orig_len);
        self.bytes.extend_from_slice(data);
        self.ends.push(self.bytes.len());
        self
    }
}

/// Builds pcapng blocks by hand, in either byte order.
pub struct Ng {
    pub bytes: Vec<u8>,
    big: bool,
    /// Byte offset where each block ends.
    pub ends: Vec<usize>,
}

impl Ng {
    pub fn new() -> Self {
        Self {
            bytes: Vec::new(),
            big: false,
            ends: Vec::new(),
        }
    }

    fn u16b(&self, v: u16) -> [u8; 2] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    fn u32b(&self, v: u32) -> [u8; 4] {
        if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        }
    }

    /// A whole block: type, length, body (padded to 4), length.
    pub fn block(&mut self, block_type: u32, body: &[u8]) -> &mut Self {
        let mut body = body.to_vec();
        while !body.len().is_multiple_of(4) {
            body.push(0);
        }
        let len = (body.len() + 12) as u32;
        let (t, l) = (self.u32b(block_type), self.u32b(len));
        self.bytes.extend_from_slice(&t);
        self.bytes.extend_from_slice(&l);
        self.bytes.extend_from_slice(&body);
        self.bytes.extend_from_slice(&l);
        self.ends.push(self.bytes.len());
        self
    }

    /// Starts a new section in the given byte order.
    pub fn section(&mut self, big: bool) -> &mut Self {
        self.big = big;
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(0x1a2b_3c4d));
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&(-1i64).to_le_bytes());
        // shb_userappl option, then end of options
        body.extend_from_slice(&self.u16b(4));
        body.extend_from_slice(&self.u16b(5));
        body.extend_from_slice(b"tests\0\0\0");
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(0x0a0d_0d0a, &body)
    }

    /// An interface description with optional if_tsresol and if_tsoffset.
    pub fn interface(
        &mut self,
        link_type: u16,
        snaplen: u32,
        tsresol: Option<u8>,
        tsoffset: Option<i64>,
    ) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(link_type));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&self.u32b(snaplen));
        // an if_name option first, to exercise option skipping
        body.extend_from_slice(&self.u16b(2));
        body.extend_from_slice(&self.u16b(3));
        body.extend_from_slice(b"eth\0");
        if let Some(r) = tsresol {
            body.extend_from_slice(&self.u16b(9));
            body.extend_from_slice(&self.u16b(1));
            body.extend_from_slice(&[r, 0, 0, 0]);
        }
        if let Some(o) = tsoffset {
            body.extend_from_slice(&self.u16b(14));
            body.extend_from_slice(&self.u16b(8));
            let o = if self.big {
                o.to_be_bytes()
            } else {
                o.to_le_bytes()
            };
            body.extend_from_slice(&o);
        }
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(1, &body)
    }

    /// An enhanced packet block; `ticks` in the interface's units.
    pub fn enhanced(&mut self, interface: u32, ticks: u64, data: &[u8]) -> &mut Self {
        self.enhanced_cut(interface, ticks, data, data.len() as u32)
    }

    pub fn enhanced_cut(
        &mut self,
        interface: u32,
        ticks: u64,
        data: &[u8],
        orig_len: u32,
    ) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u32b(interface));
        body.extend_from_slice(&self.u32b((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32b(ticks as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(orig_len));
        body.extend_from_slice(data);
        while body.len() % 4 != 0 {
            body.push(0);
        }
        // an opt_comment option, then end of options
        body.extend_from_slice(&self.u16b(1));
        body.extend_from_slice(&self.u16b(2));
        body.extend_from_slice(b"hi\0\0");
        body.extend_from_slice(&[0, 0, 0, 0]);
        self.block(6, &body)
    }

    /// A simple packet block (interface 0, no timestamp).
    pub fn simple(&mut self, data: &[u8]) -> &mut Self {
        let mut body = self.u32b(data.len() as u32).to_vec();
        body.extend_from_slice(data);
        self.block(3, &body)
    }

    /// An obsolete packet block.
    pub fn obsolete(&mut self, interface: u16, ticks: u64, data: &[u8]) -> &mut Self {
        let mut body = Vec::new();
        body.extend_from_slice(&self.u16b(interface));
        body.extend_from_slice(&self.u16b(0));
        body.extend_from_slice(&self.u32b((ticks >> 32) as u32));
        body.extend_from_slice(&self.u32b(ticks as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(&self.u32b(data.len() as u32));
        body.extend_from_slice(data);
        self.block(2, &body)
    }
}
