//! IPv4, IPv6 and UDP: walks the IP headers (IPv6 hop-by-hop, routing, destination options
//! and authentication headers are skipped), recognises fragments, and validates UDP headers
//! and checksums.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::checksum::Sum16BitWords;
use etherparse::{
    IpAuthHeaderSlice, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice, UdpHeaderSlice,
};

const HOP_BY_HOP: u8 = 0;
const UDP: u8 = 17;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const AUTHENTICATION: u8 = 51;
const DESTINATION_OPTIONS: u8 = 60;
/// Most IPv6 extension headers followed before giving up on a packet.
const MAX_EXTENSION_HEADERS: usize = 16;

/// Identifies the datagram a fragment belongs to (RFC 791 and RFC 8200 keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum FragKey {
    /// IPv4: source, destination, identification and protocol.
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        protocol: u8,
    },
    /// IPv6: source, destination and identification.
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        id: u32,
    },
}

/// One fragment of an IP datagram.
#[derive(Debug)]
pub(crate) struct Fragment<'a> {
    /// Which datagram it belongs to.
    pub(crate) key: FragKey,
    /// Byte offset of `data` in the reassembled payload.
    pub(crate) offset: usize,
    /// More fragments follow this one.
    pub(crate) more: bool,
    /// Protocol of the reassembled payload (IPv6: the header after the fragment header).
    pub(crate) next_header: u8,
    /// The fragment's share of the payload.
    pub(crate) data: &'a [u8],
}

/// What an IP packet carries.
#[derive(Debug)]
pub(crate) enum Ip<'a> {
    /// A whole UDP datagram (header and data).
    Udp {
        src: IpAddr,
        dst: IpAddr,
        udp: &'a [u8],
    },
    /// A fragment to reassemble.
    Fragment(Fragment<'a>),
    /// Another protocol.
    NotUdp,
    /// Inconsistent headers or lengths.
    Malformed,
}

/// Parses an IPv4 packet; the flag says whether its header checksum is right.
pub(crate) fn ipv4(packet: &[u8]) -> (Ip<'_>, bool) {
    let Ok(header) = Ipv4HeaderSlice::from_slice(packet) else {
        return (Ip::Malformed, true);
    };
    let header_len = header.slice().len();
    let total = usize::from(header.total_len());
    let checksum_ok = Sum16BitWords::new()
        .add_slice(header.slice())
        .ones_complement()
        == 0;
    let Some(payload) = packet.get(header_len..total) else {
        return (Ip::Malformed, checksum_ok);
    };
    let protocol = header.protocol().0;
    if protocol != UDP {
        return (Ip::NotUdp, checksum_ok);
    }
    let (src, dst) = (header.source_addr(), header.destination_addr());
    let offset = usize::from(header.fragments_offset().byte_offset());
    let ip = if offset != 0 || header.more_fragments() {
        Ip::Fragment(Fragment {
            key: FragKey::V4 {
                src,
                dst,
                id: header.identification(),
                protocol,
            },
            offset,
            more: header.more_fragments(),
            next_header: protocol,
            data: payload,
        })
    } else {
        Ip::Udp {
            src: src.into(),
            dst: dst.into(),
            udp: payload,
        }
    };
    (ip, checksum_ok)
}

/// Parses an IPv6 packet, skipping extension headers.
pub(crate) fn ipv6(packet: &[u8]) -> Ip<'_> {
    let Ok(header) = Ipv6HeaderSlice::from_slice(packet) else {
        return Ip::Malformed;
    };
    let len = usize::from(header.payload_length());
    // A zero payload length announces a jumbogram, which no UDP sender here produces.
    let Some(payload) = packet.get(40..40 + len).filter(|_| len != 0) else {
        return Ip::Malformed;
    };
    let (src, dst) = (header.source_addr(), header.destination_addr());
    ipv6_payload(src, dst, header.next_header().0, payload, true)
}

/// Follows IPv6 extension headers starting at `next` in `rest` to UDP or a fragment.
pub(crate) fn ipv6_payload(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    mut next: u8,
    mut rest: &[u8],
    fragments_allowed: bool,
) -> Ip<'_> {
    for _ in 0..MAX_EXTENSION_HEADERS {
        match next {
            UDP => {
                return Ip::Udp {
                    src: src.into(),
                    dst: dst.into(),
                    udp: rest,
                }
            }
            HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS => {
                let Ok(ext) = Ipv6RawExtHeaderSlice::from_slice(rest) else {
                    return Ip::Malformed;
                };
                next = ext.next_header().0;
                rest = &rest[ext.slice().len()..];
            }
            AUTHENTICATION => {
                let Ok(ext) = IpAuthHeaderSlice::from_slice(rest) else {
                    return Ip::Malformed;
                };
                next = ext.next_header().0;
                rest = &rest[ext.slice().len()..];
            }
            FRAGMENT => {
                let Ok(frag) = Ipv6FragmentHeaderSlice::from_slice(rest) else {
                    return Ip::Malformed;
                };
                rest = &rest[frag.slice().len()..];
                next = frag.next_header().0;
                if !frag.is_fragmenting_payload() {
                    continue; // an atomic fragment: the payload is whole
                }
                if !fragments_allowed {
                    return Ip::Malformed;
                }
                if !matches!(
                    next,
                    UDP | HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS | AUTHENTICATION
                ) {
                    return Ip::NotUdp;
                }
                return Ip::Fragment(Fragment {
                    key: FragKey::V6 {
                        src,
                        dst,
                        id: frag.identification(),
                    },
                    offset: usize::from(frag.fragment_offset().byte_offset()),
                    more: frag.more_fragments(),
                    next_header: next,
                    data: rest,
                });
            }
            _ => return Ip::NotUdp,
        }
    }
    Ip::Malformed
}

/// A validated UDP datagram.
#[derive(Debug)]
pub(crate) struct Udp<'a> {
    /// Source address and port.
    pub(crate) src: SocketAddr,
    /// Destination address and port.
    pub(crate) dst: SocketAddr,
    /// The UDP payload.
    pub(crate) payload: &'a [u8],
    /// The UDP checksum is right (or absent, which IPv4 allows).
    pub(crate) checksum_ok: bool,
}

/// Validates a UDP header and its length, and checks the checksum; `None` if malformed.
pub(crate) fn udp(src: IpAddr, dst: IpAddr, bytes: &[u8]) -> Option<Udp<'_>> {
    let header = UdpHeaderSlice::from_slice(bytes).ok()?;
    let len = usize::from(header.length());
    if len < 8 {
        return None;
    }
    let payload = bytes.get(8..len)?;
    let stored = header.checksum();
    let owned = header.to_header();
    let checksum_ok = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            stored == 0
                || owned.calc_checksum_ipv4_raw(s.octets(), d.octets(), payload) == Ok(stored)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            stored != 0
                && owned.calc_checksum_ipv6_raw(s.octets(), d.octets(), payload) == Ok(stored)
        }
        _ => false,
    };
    Some(Udp {
        src: SocketAddr::new(src, header.source_port()),
        dst: SocketAddr::new(dst, header.destination_port()),
        payload,
        checksum_ok,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_is_checked() {
        let mut packet = Vec::new();
        etherparse::PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, 2)
            .write(&mut packet, b"abc")
            .unwrap();
        assert!(ipv4(&packet).1);
        packet[8] ^= 1; // TTL
        let (ip, ok) = ipv4(&packet);
        assert!(!ok);
        let Ip::Udp {
            src,
            dst,
            udp: bytes,
        } = ip
        else {
            panic!("not udp: {ip:?}")
        };
        let d = udp(src, dst, bytes).unwrap();
        assert_eq!(d.payload, b"abc");
        assert!(d.checksum_ok, "the UDP pseudo-header has no TTL");
    }

    #[test]
    fn udp_length_beyond_packet_is_malformed() {
        let bytes = [0, 1, 0, 2, 0, 20, 0, 0, 1, 2];
        assert!(udp([1, 1, 1, 1].into(), [2, 2, 2, 2].into(), &bytes).is_none());
    }

    #[test]
    fn ipv6_extension_chain_is_bounded() {
        // Twenty destination-options headers, each pointing at another.
        let mut rest = Vec::new();
        for _ in 0..20 {
            rest.extend_from_slice(&[DESTINATION_OPTIONS, 0, 1, 4, 0, 0, 0, 0]);
        }
        let ip = ipv6_payload(
            Ipv6Addr::LOCALHOST,
            Ipv6Addr::LOCALHOST,
            DESTINATION_OPTIONS,
            &rest,
            true,
        );
        assert!(matches!(ip, Ip::Malformed));
    }
}
