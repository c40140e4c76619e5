//! Link layers: finds the IP packet inside a captured frame for Ethernet (with 802.1Q and
//! QinQ tags), Linux cooked capture v1 and v2, raw IP, IPv4/IPv6 link types and BSD
//! loopback (NULL and LOOP, either byte order of the address family).

/// LINKTYPE_* values this module understands.
pub mod link_type {
    /// BSD loopback, address family in the capturing host's byte order.
    pub const NULL: u16 = 0;
    /// Ethernet II.
    pub const ETHERNET: u16 = 1;
    /// Raw IP as DLT_RAW is numbered on most systems.
    pub const RAW_DLT12: u16 = 12;
    /// Raw IP as DLT_RAW is numbered on OpenBSD.
    pub const RAW_DLT14: u16 = 14;
    /// Raw IP (the portable LINKTYPE_RAW).
    pub const RAW: u16 = 101;
    /// OpenBSD loopback, address family in network byte order.
    pub const LOOP: u16 = 108;
    /// Linux cooked capture v1 (`tcpdump -i any` before libpcap 1.10).
    pub const LINUX_SLL: u16 = 113;
    /// Raw IPv4.
    pub const IPV4: u16 = 228;
    /// Raw IPv6.
    pub const IPV6: u16 = 229;
    /// Linux cooked capture v2 (`tcpdump -i any` since libpcap 1.10).
    pub const LINUX_SLL2: u16 = 276;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const AF_INET: u32 = 2;
/// AF_INET6 on Linux, NetBSD/OpenBSD, FreeBSD and Darwin.
const AF_INET6: [u32; 4] = [10, 24, 28, 30];

/// What a frame carries at the network layer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Network<'a> {
    /// An IPv4 packet (and possibly link-layer padding after it).
    Ipv4(&'a [u8]),
    /// An IPv6 packet (and possibly link-layer padding after it).
    Ipv6(&'a [u8]),
    /// Something other than IP (ARP, LLC, ...).
    NotIp,
    /// A link type this crate does not decode.
    UnsupportedLink,
    /// A frame too short for its own link-layer header.
    Malformed,
}

/// Finds the network-layer packet in `frame`, captured on a link of type `link_type`.
pub(crate) fn network_layer(link_type: u16, frame: &[u8]) -> Network<'_> {
    use link_type::*;
    match link_type {
        ETHERNET => match frame.get(12..14) {
            Some(t) => ethertype(u16::from_be_bytes([t[0], t[1]]), &frame[14..]),
            None => Network::Malformed,
        },
        LINUX_SLL => match frame.get(14..16) {
            Some(t) => ethertype(u16::from_be_bytes([t[0], t[1]]), &frame[16..]),
            None => Network::Malformed,
        },
        LINUX_SLL2 if frame.len() >= 20 => {
            ethertype(u16::from_be_bytes([frame[0], frame[1]]), &frame[20..])
        }
        RAW | RAW_DLT12 | RAW_DLT14 => by_version(frame),
        IPV4 => Network::Ipv4(frame),
        IPV6 => Network::Ipv6(frame),
        NULL | LOOP => match frame.get(..4) {
            Some(f) => {
                let f = [f[0], f[1], f[2], f[3]];
                address_family(u32::from_le_bytes(f))
                    .or_else(|| address_family(u32::from_be_bytes(f)))
                    .map_or(Network::NotIp, |v6| {
                        if v6 {
                            Network::Ipv6(&frame[4..])
                        } else {
                            Network::Ipv4(&frame[4..])
                        }
                    })
            }
            None => Network::Malformed,
        },
        LINUX_SLL2 => Network::Malformed,
        _ => Network::UnsupportedLink,
    }
}

/// Follows VLAN tags from an EtherType to the IP packet it announces.
fn ethertype(mut kind: u16, mut rest: &[u8]) -> Network<'_> {
    loop {
        match kind {
            ETHERTYPE_IPV4 => return Network::Ipv4(rest),
            ETHERTYPE_IPV6 => return Network::Ipv6(rest),
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => {
                // Tag control information (2 bytes), then the inner EtherType.
                let Some(t) = rest.get(2..4) else {
                    return Network::Malformed;
                };
                kind = u16::from_be_bytes([t[0], t[1]]);
                rest = &rest[4..];
            }
            _ => return Network::NotIp,
        }
    }
}

/// Raw IP: the version nibble says which.
fn by_version(packet: &[u8]) -> Network<'_> {
    match packet.first().map(|b| b >> 4) {
        Some(4) => Network::Ipv4(packet),
        Some(6) => Network::Ipv6(packet),
        Some(_) => Network::NotIp,
        None => Network::Malformed,
    }
}

/// `Some(false)` for AF_INET, `Some(true)` for any AF_INET6, `None` otherwise.
fn address_family(family: u32) -> Option<bool> {
    if family == AF_INET {
        Some(false)
    } else if AF_INET6.contains(&family) {
        Some(true)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethernet_with_two_tags_reaches_ipv6() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x88, 0xa8, 0, 5, 0x81, 0x00, 0, 7, 0x86, 0xdd, 0x60]);
        assert_eq!(
            network_layer(link_type::ETHERNET, &f),
            Network::Ipv6(&[0x60])
        );
    }

    #[test]
    fn truncated_vlan_tag_is_malformed() {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x81, 0x00, 0]);
        assert_eq!(network_layer(link_type::ETHERNET, &f), Network::Malformed);
    }

    #[test]
    fn loopback_family_in_either_byte_order() {
        assert_eq!(
            network_layer(link_type::NULL, &[2, 0, 0, 0, 0x45]),
            Network::Ipv4(&[0x45])
        );
        assert_eq!(
            network_layer(link_type::LOOP, &[0, 0, 0, 30, 0x60]),
            Network::Ipv6(&[0x60])
        );
        assert_eq!(
            network_layer(link_type::NULL, &[0, 0, 0, 7, 0x60]),
            Network::NotIp
        );
    }

    #[test]
    fn other_link_types_are_unsupported() {
        assert_eq!(network_layer(147, &[0x45]), Network::UnsupportedLink);
        assert_eq!(network_layer(link_type::RAW, &[]), Network::Malformed);
    }
}
