//! Captures cut at every byte offset: every datagram whose record is complete comes out,
//! then an error naming the cut record and where it starts; never a panic. Also hostile
//! length fields that must fail fast instead of allocating what they claim.

mod common;

use std::time::Duration;

use common::{read_all, sa, Classic, Ng};
use gapferry_pcap::{CaptureError, CaptureWriter};

fn frames() -> Vec<Vec<u8>> {
    let mut w = CaptureWriter::new(Vec::new(), sa("10.0.0.1:9"), sa("10.0.0.2:9")).unwrap();
    [0usize, 1, 37, 1400, 3]
        .iter()
        .map(|&n| w.datagram_frame(&vec![n as u8; n]).unwrap())
        .collect()
}

/// Checks the outcome of reading `bytes[..cut]`, where blocks end at `ends` and
/// `packet_blocks[i]` says whether block `i` carries a datagram.
fn check_cut(
    bytes: &[u8],
    cut: usize,
    ends: &[usize],
    first_record_start: usize,
    packet_blocks: &[bool],
) {
    let out = read_all(&bytes[..cut]);
    let complete = ends.iter().filter(|&&e| e <= cut).count();
    let want = packet_blocks[..complete].iter().filter(|&&p| p).count();
    assert_eq!(out.datagrams.len(), want, "cut at {cut}");
    for (i, d) in out.datagrams.iter().enumerate() {
        assert_eq!(d.payload.len(), [0usize, 1, 37, 1400, 3][i], "cut at {cut}");
    }
    let at_boundary = cut == first_record_start || ends.contains(&cut);
    match out.error {
        None => assert!(at_boundary, "cut at {cut} went unnoticed"),
        Some(CaptureError::Truncated {
            record,
            offset,
            end,
            ..
        }) if cut >= first_record_start => {
            assert!(!at_boundary, "cut at {cut} is a clean end");
            let start = if complete == 0 {
                first_record_start
            } else {
                ends[complete - 1]
            };
            assert_eq!(
                (record, offset, end),
                ((complete + 1) as u64, start as u64, cut as u64),
                "cut at {cut}"
            );
            let msg = CaptureError::Truncated {
                record,
                offset,
                end,
                part: "",
            }
            .to_string();
            assert!(
                msg.contains(&format!("record {record}"))
                    && msg.contains(&format!("byte offset {offset}"))
            );
        }
        Some(CaptureError::Truncated { record: 0, .. } | CaptureError::NotACapture { .. }) => {
            assert!(cut < first_record_start.max(8), "cut at {cut}")
        }
        Some(other) => panic!("cut at {cut}: unexpected {other}"),
    }
}

#[test]
fn classic_cut_everywhere() {
    for big in [false, true] {
        let mut c = Classic::new(1, big, false);
        for (i, f) in frames().iter().enumerate() {
            c.record(Duration::from_secs(i as u64), f);
        }
        let packets = vec![true; c.ends.len()];
        for cut in 0..=c.bytes.len() {
            check_cut(&c.bytes, cut, &c.ends, 24, &packets);
        }
    }
}

#[test]
fn pcapng_cut_everywhere() {
    for big in [false, true] {
        let mut ng = Ng::new();
        ng.section(big).interface(1, 0, Some(9), None);
        let mut packets = vec![false, false];
        for (i, f) in frames().iter().enumerate() {
            ng.enhanced(0, i as u64, f);
            packets.push(true);
            if i == 2 {
                ng.block(0x0bad, &[9; 40]);
                packets.push(false);
            }
        }
        for cut in 0..=ng.bytes.len() {
            check_cut(&ng.bytes, cut, &ng.ends, 0, &packets);
        }
    }
}

#[test]
fn hostile_lengths_fail_fast() {
    // A pcapng block claiming 4 GiB, a packet block claiming a 4 GiB packet, an interface
    // block claiming 64 MiB: errors, not allocations.
    let mut ng = Ng::new();
    ng.section(false).interface(101, 0, None, None);
    let base = ng.bytes.clone();
    for tail in [
        vec![0xad, 0x0b, 0, 0, 0xfc, 0xff, 0xff, 0xff, 1, 2, 3],
        [
            &6u32.to_le_bytes()[..],
            &0xffff_fff0u32.to_le_bytes(),
            &[0; 12],
            &0xffff_ff00u32.to_le_bytes(),
            &[0; 8],
        ]
        .concat(),
        [
            &6u32.to_le_bytes()[..],
            &0xffff_fff0u32.to_le_bytes(),
            &[0; 12],
            &200_000u32.to_le_bytes(),
            &[0; 8],
        ]
        .concat(),
        [
            &1u32.to_le_bytes()[..],
            &(64u32 << 20).to_le_bytes(),
            &[0; 8],
        ]
        .concat(),
    ] {
        let out = read_all(&[&base[..], &tail].concat());
        assert!(out.error.is_some());
        assert!(out.datagrams.is_empty());
    }
}
