//! Hand-built frames on every supported link type: VLAN-tagged Ethernet, Linux cooked
//! captures v1 and v2, raw IP, BSD loopback, and IPv6 with extension headers; plus the
//! frames the reader must count and skip.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{concat, ethernet_header, read_all, sa, udp_packet, Classic};
use gapferry_pcap::link_type;

fn v4() -> (SocketAddr, SocketAddr) {
    (sa("203.0.113.5:1111"), sa("203.0.113.9:2222"))
}

fn v6() -> (SocketAddr, SocketAddr) {
    (sa("[2001:db8:1::5]:1111"), sa("[2001:db8:1::9]:2222"))
}

/// Reads a classic capture of `frames` on `link` and returns the (src, dst, payload) seen.
fn decode(link: u32, frames: &[Vec<u8>]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    let mut c = Classic::new(link, false, false);
    for (i, f) in frames.iter().enumerate() {
        c.record(Duration::from_secs(i as u64 + 1), f);
    }
    let out = read_all(&c.bytes);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.stats.frames_ignored(), 0, "{:?}", out.stats);
    assert_eq!(out.stats.bad_udp_checksums, 0);
    out.datagrams
        .into_iter()
        .map(|d| (d.src, d.dst, d.payload))
        .collect()
}

fn expect(addrs: (SocketAddr, SocketAddr), payload: &[u8]) -> (SocketAddr, SocketAddr, Vec<u8>) {
    (addrs.0, addrs.1, payload.to_vec())
}

#[test]
fn ethernet_with_vlan_tags() {
    let p4 = udp_packet(v4().0, v4().1, b"one tag");
    let p6 = udp_packet(v6().0, v6().1, b"two tags");
    let p4b = udp_packet(v4().0, v4().1, b"old qinq");
    let frames = vec![
        concat(&[&ethernet_header(&[], 0x0800), &p4]),
        concat(&[&ethernet_header(&[(0x8100, 5)], 0x0800), &p4]),
        concat(&[&ethernet_header(&[(0x88a8, 10), (0x8100, 20)], 0x86dd), &p6]),
        concat(&[
            &ethernet_header(&[(0x9100, 10), (0x8100, 20)], 0x0800),
            &p4b,
        ]),
    ];
    let got = decode(1, &frames);
    assert_eq!(
        got,
        vec![
            expect(v4(), b"one tag"),
            expect(v4(), b"one tag"),
            expect(v6(), b"two tags"),
            expect(v4(), b"old qinq")
        ]
    );
}

#[test]
fn ethernet_padding_and_fcs_are_ignored() {
    let p = udp_packet(v4().0, v4().1, b"tiny");
    let mut frame = concat(&[&ethernet_header(&[], 0x0800), &p]);
    frame.resize(60, 0);
    frame.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // FCS
    assert_eq!(decode(1, &[frame]), vec![expect(v4(), b"tiny")]);
}

fn sll(protocol: u16) -> Vec<u8> {
    let mut h = vec![0, 4, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
    h.extend_from_slice(&protocol.to_be_bytes());
    h
}

fn sll2(protocol: u16) -> Vec<u8> {
    let mut h = protocol.to_be_bytes().to_vec();
    h.extend_from_slice(&[0, 0, 0, 0, 0, 3, 0, 1, 4, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    h
}

#[test]
fn linux_cooked_v1() {
    let frames = vec![
        concat(&[&sll(0x0800), &udp_packet(v4().0, v4().1, b"sll v4")]),
        concat(&[&sll(0x86dd), &udp_packet(v6().0, v6().1, b"sll v6")]),
        // libpcap re-inserts a VLAN tag after the cooked header
        concat(&[
            &sll(0x8100),
            &[0, 7, 0x08, 0x00],
            &udp_packet(v4().0, v4().1, b"sll vlan"),
        ]),
    ];
    assert_eq!(
        decode(113, &frames),
        vec![
            expect(v4(), b"sll v4"),
            expect(v6(), b"sll v6"),
            expect(v4(), b"sll vlan")
        ]
    );
}

#[test]
fn linux_cooked_v2() {
    let frames = vec![
        concat(&[&sll2(0x0800), &udp_packet(v4().0, v4().1, b"sll2 v4")]),
        concat(&[&sll2(0x86dd), &udp_packet(v6().0, v6().1, b"sll2 v6")]),
    ];
    assert_eq!(
        decode(276, &frames),
        vec![expect(v4(), b"sll2 v4"), expect(v6(), b"sll2 v6")]
    );
}

#[test]
fn raw_ip_link_types() {
    for link in [101, 12, 14] {
        let frames = vec![
            udp_packet(v4().0, v4().1, b"raw4"),
            udp_packet(v6().0, v6().1, b"raw6"),
        ];
        assert_eq!(
            decode(link, &frames),
            vec![expect(v4(), b"raw4"), expect(v6(), b"raw6")],
            "link {link}"
        );
    }
    assert_eq!(
        decode(228, &[udp_packet(v4().0, v4().1, b"ipv4")]),
        vec![expect(v4(), b"ipv4")]
    );
    assert_eq!(
        decode(229, &[udp_packet(v6().0, v6().1, b"ipv6")]),
        vec![expect(v6(), b"ipv6")]
    );
}

#[test]
fn bsd_loopback_either_byte_order() {
    let p4 = udp_packet(v4().0, v4().1, b"lo4");
    let p6 = udp_packet(v6().0, v6().1, b"lo6");
    for link in [u32::from(link_type::NULL), u32::from(link_type::LOOP)] {
        let mut frames = vec![
            concat(&[&2u32.to_le_bytes(), &p4]),
            concat(&[&2u32.to_be_bytes(), &p4]),
        ];
        let mut want = vec![expect(v4(), b"lo4"), expect(v4(), b"lo4")];
        for family in [10u32, 24, 28, 30] {
            frames.push(concat(&[&family.to_le_bytes(), &p6]));
            frames.push(concat(&[&family.to_be_bytes(), &p6]));
            want.push(expect(v6(), b"lo6"));
            want.push(expect(v6(), b"lo6"));
        }
        assert_eq!(decode(link, &frames), want, "link {link}");
    }
}

#[test]
fn ipv6_extension_headers_are_skipped() {
    let mut p = udp_packet(v6().0, v6().1, b"behind options");
    // Hop-by-hop (8 bytes) → routing (type 0 segments left 0, 8 bytes) → destination options (16 bytes) → UDP.
    let hop_by_hop = [43, 0, 1, 4, 0, 0, 0, 0];
    let routing = [60, 0, 0, 0, 0, 0, 0, 0];
    let dest_opts = [17, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let extra = hop_by_hop.len() + routing.len() + dest_opts.len();
    p[6] = 0; // next header: hop-by-hop
    let len = u16::from_be_bytes([p[4], p[5]]) + extra as u16;
    p[4..6].copy_from_slice(&len.to_be_bytes());
    let packet = concat(&[&p[..40], &hop_by_hop, &routing, &dest_opts, &p[40..]]);
    let frame = concat(&[&ethernet_header(&[], 0x86dd), &packet]);
    assert_eq!(decode(1, &[frame]), vec![expect(v6(), b"behind options")]);
}

#[test]
fn skipped_frames_are_counted() {
    let (s, d) = v4();
    let good = concat(&[
        &ethernet_header(&[], 0x0800),
        &udp_packet(s, d, b"the only one"),
    ]);
    let arp = concat(&[&ethernet_header(&[], 0x0806), &[0u8; 28]]);
    let mut tcp = Vec::new();
    etherparse::PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
        .tcp(1, 2, 3, 4)
        .write(&mut tcp, b"tcp")
        .unwrap();
    let tcp = concat(&[&ethernet_header(&[], 0x0800), &tcp]);
    let mut bad_ihl = udp_packet(s, d, b"x");
    bad_ihl[0] = 0x43;
    let bad_ihl = concat(&[&ethernet_header(&[], 0x0800), &bad_ihl]);
    let mut bad_udp_len = udp_packet(s, d, b"x");
    bad_udp_len[24..26].copy_from_slice(&200u16.to_be_bytes());
    let bad_udp_len = concat(&[&ethernet_header(&[], 0x0800), &bad_udp_len]);
    let short = vec![0u8; 10];

    let mut c = Classic::new(1, false, false);
    let ts = Duration::from_secs(1);
    c.record(ts, &arp)
        .record(ts, &tcp)
        .record(ts, &bad_ihl)
        .record(ts, &bad_udp_len)
        .record(ts, &short);
    c.record_cut(ts, &good[..40], good.len() as u32);
    c.record(ts, &good);
    let out = read_all(&c.bytes);
    assert!(out.error.is_none());
    assert_eq!(out.datagrams.len(), 1);
    assert_eq!(out.datagrams[0].payload, b"the only one");
    let st = out.stats;
    assert_eq!(st.records, 7);
    assert_eq!(
        (
            st.ignored_not_ip,
            st.ignored_not_udp,
            st.malformed,
            st.snaplen_truncated
        ),
        (1, 1, 3, 1)
    );
    assert_eq!(st.frames_ignored(), 6);

    // A link type the crate does not decode.
    let mut c = Classic::new(147, false, false);
    c.record(ts, &good);
    let out = read_all(&c.bytes);
    assert_eq!((out.datagrams.len(), out.stats.ignored_link_type), (0, 1));
}
