//! Writer → reader round trips over IPv4 and IPv6, microsecond and nanosecond timestamps,
//! several payload sizes, VLAN tags and files on disk; checksums checked both by the
//! reader and independently with etherparse.

mod common;

use std::time::Duration;

use common::{read_all, read_all_with, sa};
use gapferry_pcap::{
    CaptureFormat, CaptureReader, CaptureWriter, ReaderConfig, TimestampPrecision, VlanTags,
    WriteError, WriterOptions,
};

const SIZES: [usize; 4] = [0, 1, 1400, 8900];

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn write_capture(src: &str, dst: &str, options: WriterOptions, stamps: &[Duration]) -> Vec<u8> {
    let mut w = CaptureWriter::with_options(Vec::new(), sa(src), sa(dst), options).unwrap();
    for (i, (&len, ts)) in SIZES.iter().cycle().zip(stamps).enumerate() {
        w.write_datagram(*ts, &payload(len, i as u8)).unwrap();
    }
    w.into_inner().unwrap()
}

fn round_trip(src: &str, dst: &str, precision: TimestampPrecision) {
    // Microsecond captures keep microseconds; nanosecond ones keep every nanosecond.
    let unit = match precision {
        TimestampPrecision::Microsecond => 1000,
        TimestampPrecision::Nanosecond => 1,
    };
    let stamps: Vec<Duration> = (0..8u64)
        .map(|i| {
            Duration::new(
                1_700_000_000 + i,
                (123_456_789 + i as u32 * 7) / unit * unit,
            )
        })
        .collect();
    let bytes = write_capture(
        src,
        dst,
        WriterOptions {
            precision,
            ..Default::default()
        },
        &stamps,
    );
    let out = read_all(&bytes);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.datagrams.len(), 8);
    for (i, d) in out.datagrams.iter().enumerate() {
        assert_eq!(d.src, sa(src));
        assert_eq!(d.dst, sa(dst));
        assert_eq!(d.timestamp, stamps[i]);
        assert_eq!(d.payload, payload(SIZES[i % 4], i as u8), "datagram {i}");
    }
    let s = out.stats;
    assert_eq!((s.records, s.datagrams, s.frames_ignored()), (8, 8, 0));
    assert_eq!((s.bad_ip_checksums, s.bad_udp_checksums), (0, 0));
    assert_eq!(s.bytes, bytes.len() as u64);
    assert_eq!(s.payload_bytes, 2 * SIZES.iter().sum::<usize>() as u64);
}

#[test]
fn ipv4_microseconds() {
    round_trip(
        "192.0.2.1:40000",
        "198.51.100.7:5000",
        TimestampPrecision::Microsecond,
    );
}

#[test]
fn ipv4_nanoseconds() {
    round_trip(
        "192.0.2.1:40000",
        "198.51.100.7:5000",
        TimestampPrecision::Nanosecond,
    );
}

#[test]
fn ipv6_microseconds() {
    round_trip(
        "[2001:db8::1]:40000",
        "[2001:db8::2]:5000",
        TimestampPrecision::Microsecond,
    );
}

#[test]
fn ipv6_nanoseconds() {
    round_trip(
        "[2001:db8::1]:40000",
        "[2001:db8::2]:5000",
        TimestampPrecision::Nanosecond,
    );
}

#[test]
fn format_is_reported() {
    let bytes = write_capture("10.0.0.1:1", "10.0.0.2:2", WriterOptions::default(), &[]);
    let reader = CaptureReader::new(&bytes[..]).unwrap();
    assert_eq!(
        reader.format(),
        CaptureFormat::Pcap {
            nanosecond: false,
            big_endian: false
        }
    );
    let nano = WriterOptions {
        precision: TimestampPrecision::Nanosecond,
        ..Default::default()
    };
    let bytes = write_capture("10.0.0.1:1", "10.0.0.2:2", nano, &[]);
    let reader = CaptureReader::new(&bytes[..]).unwrap();
    assert_eq!(
        reader.format(),
        CaptureFormat::Pcap {
            nanosecond: true,
            big_endian: false
        }
    );
}

/// Checks the written frames with etherparse alone: IP header checksum, UDP checksum,
/// lengths, and IPv4 identification incrementing.
#[test]
fn frames_verify_independently() {
    for (src, dst) in [
        ("192.0.2.1:40000", "198.51.100.7:5000"),
        ("[2001:db8::1]:1", "[2001:db8::2]:2"),
    ] {
        let mut w = CaptureWriter::new(Vec::new(), sa(src), sa(dst)).unwrap();
        let mut ids = Vec::new();
        for len in SIZES {
            let data = payload(len, 9);
            let frame = w.datagram_frame(&data).unwrap();
            let p = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
                panic!("no udp")
            };
            assert_eq!(udp.payload(), &data[..]);
            let header = udp.to_header();
            match p.net.unwrap() {
                etherparse::NetSlice::Ipv4(ip) => {
                    let h = ip.header().to_header();
                    assert_eq!(h.header_checksum, h.calc_header_checksum());
                    assert_eq!(
                        header.checksum,
                        header.calc_checksum_ipv4(&h, &data).unwrap()
                    );
                    ids.push(h.identification);
                }
                etherparse::NetSlice::Ipv6(ip) => {
                    let h = ip.header().to_header();
                    assert_eq!(
                        header.checksum,
                        header.calc_checksum_ipv6(&h, &data).unwrap()
                    );
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if sa(src).is_ipv4() {
            assert_eq!(ids, [1, 2, 3, 4]);
        }
    }
}

#[test]
fn corrupted_payload_fails_the_checksum() {
    let mut w = CaptureWriter::new(Vec::new(), sa("10.0.0.1:1000"), sa("10.0.0.2:2000")).unwrap();
    w.write_datagram(Duration::from_secs(1), b"hello diode")
        .unwrap();
    w.write_datagram(Duration::from_secs(2), b"second").unwrap();
    let mut bytes = w.into_inner().unwrap();
    // The last byte of the first frame's payload: header 24, record header 16, frame 14+20+8+11.
    bytes[24 + 16 + 14 + 20 + 8 + 10] ^= 0x55;
    let out = read_all(&bytes);
    assert_eq!(out.datagrams.len(), 2, "counted, still yielded by default");
    assert_eq!(out.stats.bad_udp_checksums, 1);
    let strict = ReaderConfig {
        drop_bad_checksums: true,
        ..Default::default()
    };
    let out = read_all_with(&bytes, strict);
    assert_eq!(out.datagrams.len(), 1);
    assert_eq!(out.datagrams[0].payload, b"second");
    assert_eq!(out.stats.dropped_bad_checksum, 1);
    // And a broken IPv4 header checksum (the TTL byte of the second frame).
    let second = 24 + 16 + 14 + 20 + 8 + 11 + 16;
    bytes[second + 14 + 8] ^= 1;
    let out = read_all_with(&bytes, strict);
    assert_eq!(out.datagrams.len(), 0);
    assert_eq!(out.stats.bad_ip_checksums, 1);
}

#[test]
fn vlan_tagged_frames_round_trip() {
    for vlan in [
        VlanTags::Single(42),
        VlanTags::Double {
            outer: 100,
            inner: 200,
        },
    ] {
        for (src, dst) in [("10.1.1.1:7", "10.1.1.2:8"), ("[fd00::1]:7", "[fd00::2]:8")] {
            let options = WriterOptions {
                vlan,
                ..Default::default()
            };
            let mut w = CaptureWriter::with_options(Vec::new(), sa(src), sa(dst), options).unwrap();
            let frame = w.datagram_frame(b"x").unwrap();
            let tag_bytes = match vlan {
                VlanTags::Single(_) => vec![0x81, 0x00, 0, 42],
                _ => vec![0x88, 0xa8, 0, 100, 0x81, 0x00, 0, 200],
            };
            assert_eq!(frame[12..12 + tag_bytes.len()], tag_bytes[..]);
            w.write_datagram(Duration::from_secs(5), b"tagged").unwrap();
            w.write_fragmented(Duration::from_secs(6), &[7u8; 3000], 1232)
                .unwrap();
            let out = read_all(&w.into_inner().unwrap());
            assert!(out.error.is_none());
            let payloads: Vec<_> = out.datagrams.iter().map(|d| d.payload.clone()).collect();
            assert_eq!(payloads, vec![b"tagged".to_vec(), vec![7u8; 3000]]);
        }
    }
}

#[test]
fn files_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.pcap");
    let mut w = CaptureWriter::create(&path, sa("10.0.0.1:1"), sa("10.0.0.2:2")).unwrap();
    w.write_datagram(Duration::from_millis(1500), b"on disk")
        .unwrap();
    drop(w.into_inner().unwrap());
    let mut r = CaptureReader::open(&path).unwrap();
    let d = r.next_datagram().unwrap().unwrap();
    assert_eq!(
        (d.payload.as_slice(), d.timestamp),
        (&b"on disk"[..], Duration::from_millis(1500))
    );
    assert!(r.next_datagram().unwrap().is_none());
    let err = CaptureReader::open(dir.path().join("missing.pcap"))
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing.pcap"), "{err}");
}

#[test]
fn writer_rejects_bad_input() {
    let v4 = sa("10.0.0.1:1");
    let v6 = sa("[::1]:1");
    assert!(matches!(
        CaptureWriter::new(Vec::new(), v4, v6).err(),
        Some(WriteError::MixedAddressFamilies { .. })
    ));
    let mut w = CaptureWriter::new(Vec::new(), v4, v4).unwrap();
    assert!(matches!(
        w.write_datagram(Duration::ZERO, &vec![0; 65_508]),
        Err(WriteError::PayloadTooLarge { .. })
    ));
    w.write_datagram(Duration::ZERO, &vec![0; 65_507]).unwrap();
    assert!(matches!(
        w.write_fragmented(Duration::ZERO, b"x", 100),
        Err(WriteError::BadFragmentSize(100))
    ));
    assert!(matches!(
        w.write_datagram(Duration::from_secs(1 << 33), b"x"),
        Err(WriteError::TimestampOutOfRange(_))
    ));
    let mut w6 = CaptureWriter::new(Vec::new(), v6, v6).unwrap();
    w6.write_datagram(Duration::ZERO, &vec![0; 65_527]).unwrap();
    assert!(w6.write_datagram(Duration::ZERO, &vec![0; 65_528]).is_err());
    let out = read_all(&w6.into_inner().unwrap());
    assert_eq!(out.datagrams[0].payload.len(), 65_527);
}
