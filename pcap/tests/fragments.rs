//! IP fragment reassembly through the whole reader: IPv4 and IPv6, in order, reversed,
//! with a duplicate, interleaved with another datagram; incomplete and overlapping sets
//! are counted, not yielded; a flood of fragments stays within the configured bounds.

mod common;

use std::time::Duration;

use common::{read_all, read_all_with, sa};
use gapferry_pcap::{CaptureWriter, ReaderConfig, ReassemblyLimits};

const V4: (&str, &str) = ("192.0.2.10:5555", "192.0.2.20:6666");
const V6: (&str, &str) = ("[2001:db8::10]:5555", "[2001:db8::20]:6666");

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn writer(addrs: (&str, &str)) -> CaptureWriter<Vec<u8>> {
    CaptureWriter::new(Vec::new(), sa(addrs.0), sa(addrs.1)).unwrap()
}

#[test]
fn in_order_fragments_reassemble() {
    for addrs in [V4, V6] {
        let mut w = writer(addrs);
        let n = w
            .write_fragmented(Duration::from_secs(3), &payload(8900), 1480)
            .unwrap();
        assert_eq!(n, 7); // 8908 bytes of UDP in 1480-byte pieces
        w.write_fragmented(Duration::from_secs(4), &payload(100), 1480)
            .unwrap(); // one piece
        let out = read_all(&w.into_inner().unwrap());
        assert!(out.error.is_none());
        assert_eq!(out.datagrams.len(), 2, "{addrs:?}");
        assert_eq!(out.datagrams[0].payload, payload(8900));
        assert_eq!(out.datagrams[0].src, sa(addrs.0));
        assert_eq!(out.datagrams[0].dst, sa(addrs.1));
        assert_eq!(out.datagrams[0].timestamp, Duration::from_secs(3));
        assert_eq!(out.datagrams[1].payload, payload(100));
        assert_eq!(out.stats.bad_udp_checksums, 0);
        assert_eq!(out.stats.reassembled, 1);
        assert_eq!(
            (out.stats.fragments_pending, out.stats.fragments_dropped),
            (0, 0)
        );
    }
}

#[test]
fn out_of_order_and_duplicate_fragments_reassemble() {
    for addrs in [V4, V6] {
        let mut w = writer(addrs);
        let a = w.fragment_frames(&payload(5000), 1024).unwrap();
        let b = w.fragment_frames(&payload(3000), 512).unwrap();
        // a reversed, b interleaved, one fragment of each repeated
        let mut order: Vec<&Vec<u8>> = Vec::new();
        for (i, f) in a.iter().rev().enumerate() {
            order.push(f);
            if let Some(g) = b.get(i) {
                order.push(g);
            }
        }
        order.push(&a[2]);
        order.extend(b.iter().skip(a.len()));
        order.insert(3, &b[1]);
        for (i, f) in order.iter().enumerate() {
            w.write_frame(Duration::from_millis(i as u64), f).unwrap();
        }
        let out = read_all(&w.into_inner().unwrap());
        assert!(out.error.is_none());
        let mut got: Vec<usize> = out.datagrams.iter().map(|d| d.payload.len()).collect();
        got.sort_unstable();
        assert_eq!(got, [3000, 5000], "{addrs:?}");
        for d in &out.datagrams {
            assert_eq!(d.payload, payload(d.payload.len()));
        }
        let st = out.stats;
        assert_eq!(st.fragments, (a.len() + b.len() + 2) as u64);
        assert_eq!(st.fragments_duplicate, 1, "b[1] twice while b is pending");
        assert_eq!((st.reassembled, st.bad_udp_checksums), (2, 0));
        // The copy of a[2] arriving after a is complete looks like a new datagram that never completes.
        assert_eq!((st.fragments_dropped, st.reassemblies_abandoned), (1, 1));
    }
}

#[test]
fn incomplete_set_is_counted_not_yielded() {
    for addrs in [V4, V6] {
        let mut w = writer(addrs);
        let frames = w.fragment_frames(&payload(4000), 1000).unwrap();
        for f in frames.iter().filter(|_| true).skip(1) {
            w.write_frame(Duration::from_secs(1), f).unwrap();
        }
        w.write_datagram(Duration::from_secs(2), b"whole").unwrap();
        let bytes = w.into_inner().unwrap();

        let mut reader = gapferry_pcap::CaptureReader::new(&bytes[..]).unwrap();
        let d = reader.next_datagram().unwrap().unwrap();
        assert_eq!(d.payload, b"whole");
        let st = reader.stats();
        assert_eq!((st.fragments, st.fragments_pending), (4, 4));
        assert!(st.fragment_bytes_pending >= 3000);
        assert!(reader.next_datagram().unwrap().is_none());
        let st = reader.stats();
        assert_eq!((st.fragments_pending, st.fragment_bytes_pending), (0, 0));
        assert_eq!(
            (
                st.fragments_dropped,
                st.reassemblies_abandoned,
                st.reassembled
            ),
            (4, 1, 0)
        );
    }
}

#[test]
fn overlapping_fragments_discard_the_datagram() {
    let mut w = writer(V4);
    let frames = w.fragment_frames(&payload(2000), 800).unwrap();
    // Rewrite the last fragment's offset (in 8-byte units) to overlap the second one.
    let mut last = frames[2].clone();
    let ip = 14;
    let field = u16::from_be_bytes([last[ip + 6], last[ip + 7]]);
    last[ip + 6..ip + 8].copy_from_slice(&((field & 0xe000) | 150).to_be_bytes());
    last[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let sum = etherparse::checksum::Sum16BitWords::new()
        .add_slice(&last[ip..ip + 20])
        .ones_complement();
    // etherparse sums native-endian words, so its result is in native byte order.
    last[ip + 10..ip + 12].copy_from_slice(&sum.to_ne_bytes());
    for f in [&frames[0], &frames[1], &last] {
        w.write_frame(Duration::ZERO, f).unwrap();
    }
    let out = read_all(&w.into_inner().unwrap());
    assert!(out.datagrams.is_empty());
    assert_eq!(out.stats.bad_ip_checksums, 0);
    assert_eq!(out.stats.fragments_dropped, 3);
}

#[test]
fn expired_fragments_are_dropped() {
    let mut w = writer(V6);
    let frames = w.fragment_frames(&payload(3000), 1000).unwrap();
    w.write_frame(Duration::from_secs(10), &frames[0]).unwrap();
    w.write_frame(Duration::from_secs(11), &frames[1]).unwrap();
    w.write_frame(Duration::from_secs(100), &frames[2]).unwrap(); // long after the 30 s timeout
    w.write_frame(Duration::from_secs(100), &frames[3]).unwrap();
    let out = read_all(&w.into_inner().unwrap());
    assert!(out.datagrams.is_empty());
    assert_eq!(out.stats.fragments_dropped, 4);
    assert_eq!(out.stats.reassemblies_abandoned, 2);
}

#[test]
fn fragment_flood_stays_bounded() {
    let limits = ReassemblyLimits {
        max_pending: 16,
        max_bytes: 64 * 1024,
        timeout: Duration::from_secs(30),
    };
    let config = ReaderConfig {
        reassembly: limits,
        ..Default::default()
    };
    let mut w = writer(V4);
    for _ in 0..500 {
        let frames = w.fragment_frames(&payload(9000), 1480).unwrap();
        for f in &frames[..frames.len() - 1] {
            w.write_frame(Duration::ZERO, f).unwrap();
        }
    }
    w.write_fragmented(Duration::ZERO, &payload(9000), 1480)
        .unwrap();
    let bytes = w.into_inner().unwrap();
    let mut reader = gapferry_pcap::CaptureReader::with_config(&bytes[..], config).unwrap();
    let mut got = Vec::new();
    loop {
        let st = reader.stats();
        assert!(st.fragment_bytes_pending <= 64 * 1024, "{st:?}");
        match reader.next_datagram().unwrap() {
            Some(d) => got.push(d),
            None => break,
        }
    }
    assert_eq!(got.len(), 1, "the one complete datagram still gets through");
    assert_eq!(got[0].payload, payload(9000));
    let st = reader.stats();
    assert_eq!(st.fragments_dropped, 500 * 6);
    let out = read_all_with(&bytes, config);
    assert_eq!(out.datagrams.len(), 1);
}
