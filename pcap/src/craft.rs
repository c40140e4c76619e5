//! Builds Ethernet frames carrying one UDP datagram, whole or as IP fragments, over IPv4
//! or IPv6, optionally VLAN-tagged, with correct IP header and UDP checksums.

use std::net::SocketAddr;

use etherparse::{IpFragOffset, IpNumber, Ipv4Header, Ipv6FragmentHeader, Ipv6Header, UdpHeader};

use crate::error::WriteError;

const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const TTL: u8 = 64;
/// Largest UDP payload over IPv4 (65535 minus 20 bytes of IP and 8 of UDP header).
pub const MAX_IPV4_PAYLOAD: usize = 65_507;
/// Largest UDP payload over IPv6 without jumbograms (65535 minus 8 bytes of UDP header).
pub const MAX_IPV6_PAYLOAD: usize = 65_527;

/// 802.1Q / 802.1ad tags to put in written Ethernet frames.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VlanTags {
    /// Untagged frames.
    #[default]
    None,
    /// One 802.1Q tag (TPID 0x8100) with this VLAN id.
    Single(u16),
    /// An 802.1ad service tag (TPID 0x88a8) outside an 802.1Q customer tag.
    Double {
        /// Service VLAN id.
        outer: u16,
        /// Customer VLAN id.
        inner: u16,
    },
}

/// Builds frames for datagrams from one fixed source to one fixed destination.
pub(crate) struct FrameBuilder {
    src: SocketAddr,
    dst: SocketAddr,
    vlan: VlanTags,
    next_id: u32,
}

impl FrameBuilder {
    /// A builder for `src` → `dst`; both must be of the same IP version.
    pub(crate) fn new(
        src: SocketAddr,
        dst: SocketAddr,
        vlan: VlanTags,
    ) -> Result<Self, WriteError> {
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(WriteError::MixedAddressFamilies { src, dst });
        }
        Ok(Self {
            src,
            dst,
            vlan,
            next_id: 1,
        })
    }

    /// One frame carrying `payload` as a whole datagram.
    pub(crate) fn datagram(&mut self, payload: &[u8]) -> Result<Vec<u8>, WriteError> {
        self.check_len(payload)?;
        let id = self.take_id();
        let (udp, ip) = self.udp_and_ip(payload, id)?;
        let mut frame = self.ethernet();
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&udp);
        frame.extend_from_slice(payload);
        Ok(frame)
    }

    /// Frames carrying `payload` as IP fragments of at most `size` payload bytes each.
    pub(crate) fn fragments(
        &mut self,
        payload: &[u8],
        size: usize,
    ) -> Result<Vec<Vec<u8>>, WriteError> {
        if size == 0 || !size.is_multiple_of(8) {
            return Err(WriteError::BadFragmentSize(size));
        }
        self.check_len(payload)?;
        let id = self.take_id();
        let (udp, _) = self.udp_and_ip(payload, id)?;
        let mut whole = udp.to_vec();
        whole.extend_from_slice(payload);
        let mut frames = Vec::with_capacity(whole.len().div_ceil(size));
        for (i, chunk) in whole.chunks(size).enumerate() {
            let offset = i * size;
            let more = offset + chunk.len() < whole.len();
            let frag_offset = IpFragOffset::try_new((offset / 8) as u16).map_err(|_| {
                WriteError::PayloadTooLarge {
                    len: payload.len(),
                    max: self.max_payload(),
                }
            })?;
            let mut frame = self.ethernet();
            match (self.src, self.dst) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                    let mut ip =
                        self.ipv4_header(chunk.len(), s.ip().octets(), d.ip().octets(), id)?;
                    ip.more_fragments = more;
                    ip.fragment_offset = frag_offset;
                    ip.header_checksum = ip.calc_header_checksum();
                    frame.extend_from_slice(&ip.to_bytes());
                }
                (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                    let ip = Ipv6Header {
                        payload_length: (Ipv6FragmentHeader::LEN + chunk.len()) as u16,
                        next_header: IpNumber::IPV6_FRAGMENTATION_HEADER,
                        hop_limit: TTL,
                        source: s.ip().octets(),
                        destination: d.ip().octets(),
                        ..Default::default()
                    };
                    frame.extend_from_slice(&ip.to_bytes());
                    let frag = Ipv6FragmentHeader::new(IpNumber::UDP, frag_offset, more, id);
                    frame.extend_from_slice(&frag.to_bytes());
                }
                _ => {
                    return Err(WriteError::MixedAddressFamilies {
                        src: self.src,
                        dst: self.dst,
                    })
                }
            }
            frame.extend_from_slice(chunk);
            frames.push(frame);
        }
        Ok(frames)
    }

    fn max_payload(&self) -> usize {
        if self.src.is_ipv4() {
            MAX_IPV4_PAYLOAD
        } else {
            MAX_IPV6_PAYLOAD
        }
    }

    fn check_len(&self, payload: &[u8]) -> Result<(), WriteError> {
        let max = self.max_payload();
        if payload.len() > max {
            return Err(WriteError::PayloadTooLarge {
                len: payload.len(),
                max,
            });
        }
        Ok(())
    }

    /// The next IP identification (16 bits for IPv4, 32 for IPv6 fragment headers).
    fn take_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        if self.src.is_ipv4() {
            id & 0xffff
        } else {
            id
        }
    }

    /// The UDP header (with checksum) and the IP header of an unfragmented datagram.
    fn udp_and_ip(&self, payload: &[u8], id: u32) -> Result<([u8; 8], Vec<u8>), WriteError> {
        let too_large = || WriteError::PayloadTooLarge {
            len: payload.len(),
            max: self.max_payload(),
        };
        let udp_len = UdpHeader::LEN + payload.len();
        match (self.src, self.dst) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                let mut ip = self.ipv4_header(udp_len, s.ip().octets(), d.ip().octets(), id)?;
                ip.header_checksum = ip.calc_header_checksum();
                let udp = UdpHeader::with_ipv4_checksum(s.port(), d.port(), &ip, payload)
                    .map_err(|_| too_large())?;
                Ok((udp.to_bytes(), ip.to_bytes().to_vec()))
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                let ip = Ipv6Header {
                    payload_length: udp_len as u16,
                    next_header: IpNumber::UDP,
                    hop_limit: TTL,
                    source: s.ip().octets(),
                    destination: d.ip().octets(),
                    ..Default::default()
                };
                let udp = UdpHeader::with_ipv6_checksum(s.port(), d.port(), &ip, payload)
                    .map_err(|_| too_large())?;
                Ok((udp.to_bytes(), ip.to_bytes().to_vec()))
            }
            _ => Err(WriteError::MixedAddressFamilies {
                src: self.src,
                dst: self.dst,
            }),
        }
    }

    fn ipv4_header(
        &self,
        payload_len: usize,
        src: [u8; 4],
        dst: [u8; 4],
        id: u32,
    ) -> Result<Ipv4Header, WriteError> {
        let len = u16::try_from(payload_len).ok();
        let mut ip = len
            .and_then(|len| Ipv4Header::new(len, TTL, IpNumber::UDP, src, dst).ok())
            .ok_or(WriteError::PayloadTooLarge {
                len: payload_len,
                max: MAX_IPV4_PAYLOAD,
            })?;
        ip.identification = id as u16;
        ip.dont_fragment = false;
        Ok(ip)
    }

    /// The Ethernet header (with any VLAN tags) announcing this builder's IP version.
    fn ethernet(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(1600);
        frame.extend_from_slice(&DST_MAC);
        frame.extend_from_slice(&SRC_MAC);
        match self.vlan {
            VlanTags::None => {}
            VlanTags::Single(id) => push_tag(&mut frame, 0x8100, id),
            VlanTags::Double { outer, inner } => {
                push_tag(&mut frame, 0x88a8, outer);
                push_tag(&mut frame, 0x8100, inner);
            }
        }
        let ethertype: u16 = if self.src.is_ipv4() { 0x0800 } else { 0x86dd };
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame
    }
}

fn push_tag(frame: &mut Vec<u8>, tpid: u16, vlan_id: u16) {
    frame.extend_from_slice(&tpid.to_be_bytes());
    frame.extend_from_slice(&(vlan_id & 0x0fff).to_be_bytes());
}
