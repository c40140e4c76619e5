//! pcapng: two sections of different byte order, each with two interfaces of different
//! link types and timestamp resolutions; enhanced, simple and obsolete packet blocks;
//! unknown blocks skipped; inconsistent blocks reported with their position.

mod common;

use std::time::Duration;

use common::{concat, ethernet_header, read_all, sa, udp_packet, Ng};
use gapferry_pcap::{CaptureError, CaptureFormat, CaptureReader};

fn packet(payload: &[u8]) -> Vec<u8> {
    udp_packet(sa("10.9.8.7:100"), sa("10.9.8.6:200"), payload)
}

fn packet6(payload: &[u8]) -> Vec<u8> {
    udp_packet(sa("[fe80::1]:100"), sa("[fe80::2]:200"), payload)
}

fn two_sections() -> Ng {
    let mut ng = Ng::new();
    ng.section(false)
        .interface(1, 65535, None, None) // Ethernet, microseconds
        .interface(101, 0, Some(9), None) // raw IP, nanoseconds
        .enhanced(
            0,
            1_700_000_000_123_456,
            &concat(&[&ethernet_header(&[], 0x0800), &packet(b"le eth us")]),
        )
        .block(4, &[0, 0, 0, 0]) // name resolution block, empty
        .enhanced(1, 1_700_000_001_987_654_321, &packet6(b"le raw ns"))
        .block(0x0bad_cafe, &[1, 2, 3, 4, 5, 6, 7, 8]);
    let sll2 = {
        let mut h = 0x0800u16.to_be_bytes().to_vec();
        h.extend_from_slice(&[0; 18]);
        h
    };
    ng.section(true)
        .interface(276, 262_144, Some(0x94), Some(1_000_000_000)) // SLL2, 2^-20 s, +1e9 s
        .interface(0, 262_144, Some(3), None) // BSD loopback, milliseconds
        .enhanced(
            1,
            1_700_000_002_250,
            &concat(&[&30u32.to_be_bytes(), &packet6(b"be null ms")]),
        )
        .simple(&concat(&[&sll2, &packet(b"be sll2 simple")]))
        .enhanced(
            0,
            (700_000_000u64 << 20) + (1 << 19),
            &concat(&[&sll2, &packet(b"be sll2 binary")]),
        )
        .obsolete(
            0,
            700_000_003u64 << 20,
            &concat(&[&sll2, &packet(b"be obsolete")]),
        )
        .block(5, &[0; 20]); // interface statistics
    ng
}

#[test]
fn sections_interfaces_and_resolutions() {
    let ng = two_sections();
    let reader = CaptureReader::new(&ng.bytes[..]).unwrap();
    assert_eq!(reader.format(), CaptureFormat::PcapNg);
    let out = read_all(&ng.bytes);
    assert!(out.error.is_none(), "{:?}", out.error);
    let got: Vec<(&[u8], Duration)> = out
        .datagrams
        .iter()
        .map(|d| (&d.payload[..], d.timestamp))
        .collect();
    assert_eq!(
        got,
        vec![
            (&b"le eth us"[..], Duration::new(1_700_000_000, 123_456_000)),
            (b"le raw ns", Duration::new(1_700_000_001, 987_654_321)),
            (b"be null ms", Duration::new(1_700_000_002, 250_000_000)),
            // a simple packet block has no timestamp: it gets the previous packet's
            (b"be sll2 simple", Duration::new(1_700_000_002, 250_000_000)),
            (b"be sll2 binary", Duration::new(1_700_000_000, 500_000_000)),
            (b"be obsolete", Duration::new(1_700_000_003, 0)),
        ]
    );
    assert_eq!(out.datagrams[1].src, sa("[fe80::1]:100"));
    let st = out.stats;
    assert_eq!(
        (
            st.records,
            st.other_blocks,
            st.datagrams,
            st.frames_ignored()
        ),
        (6, 9, 6, 0)
    );
    assert_eq!(st.bytes, ng.bytes.len() as u64);
}

#[test]
fn snaplen_cut_and_oversized_packets_are_skipped() {
    let mut ng = Ng::new();
    let p = packet(b"cut");
    ng.section(false)
        .interface(101, 0, None, None)
        .enhanced_cut(0, 1, &p[..20], p.len() as u32)
        .enhanced(0, 2, &vec![0x45; 300_000])
        .enhanced(0, 3, &packet(b"after"));
    let out = read_all(&ng.bytes);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.datagrams.len(), 1);
    assert_eq!(out.datagrams[0].payload, b"after");
    assert_eq!(
        (
            out.stats.snaplen_truncated,
            out.stats.oversized,
            out.stats.records
        ),
        (1, 1, 3)
    );
}

fn error_of(ng: &Ng) -> CaptureError {
    read_all(&ng.bytes).error.expect("an error")
}

#[test]
fn unknown_interface_is_an_error_with_position() {
    let mut ng = Ng::new();
    ng.section(false)
        .interface(101, 0, None, None)
        .enhanced(0, 1, &packet(b"ok"));
    let offset = ng.bytes.len();
    ng.enhanced(3, 2, &packet(b"nowhere"));
    let out = read_all(&ng.bytes);
    assert_eq!(out.datagrams.len(), 1);
    let err = out.error.unwrap();
    assert!(
        matches!(err, CaptureError::Malformed { record: 4, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("byte offset {offset}")) && msg.contains("interface 3"),
        "{msg}"
    );
}

#[test]
fn interfaces_are_per_section() {
    let mut ng = Ng::new();
    ng.section(false)
        .interface(101, 0, None, None)
        .section(true)
        .enhanced(0, 1, &packet(b"x"));
    assert!(matches!(
        error_of(&ng),
        CaptureError::Malformed { record: 4, .. }
    ));
}

#[test]
fn inconsistent_blocks_are_errors() {
    // trailing length differs from the leading one
    let mut ng = Ng::new();
    ng.section(false).interface(101, 0, None, None);
    let last = ng.bytes.len() - 4;
    ng.bytes[last] ^= 4;
    let msg = error_of(&ng).to_string();
    assert!(
        msg.contains("record 2") && msg.contains("trailing copy"),
        "{msg}"
    );

    // a length that is not a multiple of 4
    let mut ng = Ng::new();
    ng.section(false);
    ng.bytes.extend_from_slice(&[1, 0, 0, 0, 21, 0, 0, 0]);
    assert!(error_of(&ng).to_string().contains("multiple of 4"));

    // an unrepresentable time resolution
    let mut ng = Ng::new();
    ng.section(false).interface(101, 0, Some(20), None);
    assert!(error_of(&ng).to_string().contains("if_tsresol"));

    // pcapng version 2
    let mut ng = Ng::new();
    ng.section(false);
    ng.bytes[12] = 2;
    assert!(error_of(&ng).to_string().contains("version 2"));

    // a packet whose captured length overflows its block
    let mut ng = Ng::new();
    ng.section(false)
        .interface(101, 0, None, None)
        .enhanced(0, 1, &packet(b"x"));
    let at = ng.ends[1] + 20;
    ng.bytes[at..at + 4].copy_from_slice(&1000u32.to_le_bytes());
    assert!(error_of(&ng).to_string().contains("overflows"));

    // a second section header with a broken byte-order magic
    let mut ng = Ng::new();
    ng.section(false).section(false);
    let at = ng.ends[0] + 8;
    ng.bytes[at] = 0;
    assert!(matches!(
        error_of(&ng),
        CaptureError::Malformed { record: 2, .. }
    ));

    // the first one: not a capture at all
    let mut ng = Ng::new();
    ng.section(false);
    ng.bytes[8] = 0;
    assert!(matches!(error_of(&ng), CaptureError::NotACapture { .. }));
}
