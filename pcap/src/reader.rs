//! The capture reader: turns the frames of a pcap or pcapng file into the UDP datagrams
//! they carry, reassembling IP fragments and counting everything it skips.

use std::fs::File;
use std::io::{BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::error::CaptureError;
use crate::ip::{self, FragKey, Ip};
use crate::link::{self, Network};
use crate::reassembly::{Reassembler, ReassemblyLimits};
use crate::records::{CaptureFormat, Frame, Record, Records};
use crate::stats::ReaderStats;

/// A UDP datagram found in a capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapturedDatagram {
    /// Capture time since the Unix epoch (of the last fragment, if it was fragmented).
    pub timestamp: Duration,
    /// Source address and port.
    pub src: SocketAddr,
    /// Destination address and port.
    pub dst: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// How a [`CaptureReader`] treats fragments and checksums.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderConfig {
    /// Bounds on fragment reassembly.
    pub reassembly: ReassemblyLimits,
    /// Skip datagrams with a bad IPv4 header or UDP checksum instead of only counting them.
    /// Off by default: captures taken on a sending host with checksum offload carry
    /// unfinished UDP checksums.
    pub drop_bad_checksums: bool,
}

/// Reads the UDP datagrams of a classic pcap or pcapng capture, in capture order.
///
/// After an error (or the end of the file) it yields nothing more; datagrams still
/// waiting for fragments at that point are counted as abandoned.
pub struct CaptureReader<R> {
    records: Records<R>,
    decoder: Decoder,
    finished: bool,
}

impl CaptureReader<BufReader<File>> {
    /// Opens the capture file at `path` with the default configuration.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, CaptureError> {
        Self::open_with(path, ReaderConfig::default())
    }

    /// Opens the capture file at `path` with `config`.
    pub fn open_with(path: impl AsRef<Path>, config: ReaderConfig) -> Result<Self, CaptureError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| CaptureError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Self::with_config(BufReader::with_capacity(1 << 16, file), config)
    }
}

impl<R: Read> CaptureReader<R> {
    /// Reads a capture from `input` with the default configuration; fails if it is not one.
    pub fn new(input: R) -> Result<Self, CaptureError> {
        Self::with_config(input, ReaderConfig::default())
    }

    /// Reads a capture from `input` with `config`; fails if it is not one.
    pub fn with_config(input: R, config: ReaderConfig) -> Result<Self, CaptureError> {
        Ok(Self {
            records: Records::open(input)?,
            decoder: Decoder::new(config),
            finished: false,
        })
    }

    /// The next UDP datagram, `None` at the end of the capture.
    pub fn next_datagram(&mut self) -> Result<Option<CapturedDatagram>, CaptureError> {
        if self.finished {
            return Ok(None);
        }
        loop {
            let record = match self.records.next() {
                Ok(Some(record)) => record,
                Ok(None) => {
                    self.finish();
                    return Ok(None);
                }
                Err(e) => {
                    self.finish();
                    return Err(e);
                }
            };
            match record {
                Record::Other => self.decoder.stats.other_blocks += 1,
                Record::Oversized => {
                    self.decoder.stats.records += 1;
                    self.decoder.stats.oversized += 1;
                }
                Record::Packet(frame) => {
                    if let Some(datagram) = self.decoder.frame(frame) {
                        return Ok(Some(datagram));
                    }
                }
            }
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> ReaderStats {
        let mut stats = self.decoder.stats;
        let reassembler = &self.decoder.reassembler;
        let counters = reassembler.counters;
        stats.bytes = self.records.offset();
        stats.fragments_duplicate = counters.duplicates;
        stats.fragments_dropped = counters.dropped;
        stats.reassemblies_abandoned = counters.abandoned;
        stats.reassembled = counters.reassembled;
        stats.fragments_pending = reassembler.pending_fragments() as u64;
        stats.fragment_bytes_pending = reassembler.pending_bytes() as u64;
        stats
    }

    /// The container format of the capture.
    pub fn format(&self) -> CaptureFormat {
        self.records.format()
    }

    fn finish(&mut self) {
        self.finished = true;
        self.decoder.reassembler.abandon_all();
    }
}

impl<R: Read> Iterator for CaptureReader<R> {
    type Item = Result<CapturedDatagram, CaptureError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_datagram().transpose()
    }
}

/// Frame-to-datagram decoding, apart from the file so both can be borrowed at once.
struct Decoder {
    config: ReaderConfig,
    reassembler: Reassembler,
    stats: ReaderStats,
}

impl Decoder {
    fn new(config: ReaderConfig) -> Self {
        Self {
            config,
            reassembler: Reassembler::new(config.reassembly),
            stats: ReaderStats::default(),
        }
    }

    /// Decodes one frame; a datagram if it completes one.
    fn frame(&mut self, frame: Frame<'_>) -> Option<CapturedDatagram> {
        self.stats.records += 1;
        if (frame.data.len() as u64) < u64::from(frame.orig_len) {
            self.stats.snaplen_truncated += 1;
            return None;
        }
        let ts = frame.timestamp;
        match link::network_layer(frame.link_type, frame.data) {
            Network::Ipv4(packet) => {
                let (ip, header_ok) = ip::ipv4(packet);
                if !header_ok {
                    self.stats.bad_ip_checksums += 1;
                }
                self.ip(ts, ip, header_ok)
            }
            Network::Ipv6(packet) => self.ip(ts, ip::ipv6(packet), true),
            Network::NotIp => self.ignore(|s| &mut s.ignored_not_ip),
            Network::UnsupportedLink => self.ignore(|s| &mut s.ignored_link_type),
            Network::Malformed => self.ignore(|s| &mut s.malformed),
        }
    }

    fn ip(&mut self, ts: Duration, ip: Ip<'_>, header_ok: bool) -> Option<CapturedDatagram> {
        match ip {
            Ip::Udp { src, dst, udp } => self.udp(ts, src, dst, udp, header_ok),
            Ip::Fragment(fragment) => {
                self.stats.fragments += 1;
                if !header_ok && self.config.drop_bad_checksums {
                    return self.ignore(|s| &mut s.dropped_bad_checksum);
                }
                let done = self.reassembler.add(ts, fragment)?;
                match done.key {
                    FragKey::V4 { src, dst, .. } => {
                        self.udp(ts, src.into(), dst.into(), &done.data, true)
                    }
                    FragKey::V6 { src, dst, .. } => {
                        match ip::ipv6_payload(src, dst, done.next_header, &done.data, false) {
                            Ip::Udp { src, dst, udp } => self.udp(ts, src, dst, udp, true),
                            Ip::NotUdp => self.ignore(|s| &mut s.ignored_not_udp),
                            Ip::Fragment(_) | Ip::Malformed => self.ignore(|s| &mut s.malformed),
                        }
                    }
                }
            }
            Ip::NotUdp => self.ignore(|s| &mut s.ignored_not_udp),
            Ip::Malformed => self.ignore(|s| &mut s.malformed),
        }
    }

    fn udp(
        &mut self,
        timestamp: Duration,
        src: IpAddr,
        dst: IpAddr,
        bytes: &[u8],
        header_ok: bool,
    ) -> Option<CapturedDatagram> {
        let Some(udp) = ip::udp(src, dst, bytes) else {
            return self.ignore(|s| &mut s.malformed);
        };
        if !udp.checksum_ok {
            self.stats.bad_udp_checksums += 1;
        }
        if self.config.drop_bad_checksums && !(udp.checksum_ok && header_ok) {
            return self.ignore(|s| &mut s.dropped_bad_checksum);
        }
        self.stats.datagrams += 1;
        self.stats.payload_bytes += udp.payload.len() as u64;
        Some(CapturedDatagram {
            timestamp,
            src: udp.src,
            dst: udp.dst,
            payload: udp.payload.to_vec(),
        })
    }

    /// Counts an ignored frame under `counter`.
    fn ignore(
        &mut self,
        counter: impl FnOnce(&mut ReaderStats) -> &mut u64,
    ) -> Option<CapturedDatagram> {
        *counter(&mut self.stats) += 1;
        None
    }
}
