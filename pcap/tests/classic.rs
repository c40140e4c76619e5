//! Classic pcap specifics: big-endian files, microsecond and nanosecond magics, the
//! "modified" variant, and what happens with garbage, empty or absurd input.

mod common;

use std::time::Duration;

use common::{concat, ethernet_header, read_all, sa, udp_packet, Classic};
use gapferry_pcap::{CaptureError, CaptureFormat, CaptureReader};

fn frame(payload: &[u8]) -> Vec<u8> {
    concat(&[
        &ethernet_header(&[], 0x0800),
        &udp_packet(sa("10.0.0.1:53"), sa("10.0.0.2:5353"), payload),
    ])
}

#[test]
fn big_endian_micro_and_nano() {
    for nanos in [false, true] {
        let mut c = Classic::new(1, true, nanos);
        c.record(Duration::new(1_600_000_000, 999_999_000), &frame(b"big"));
        c.record(Duration::new(1_600_000_001, 1_000), &frame(b"endian"));
        let reader = CaptureReader::new(&c.bytes[..]).unwrap();
        assert_eq!(
            reader.format(),
            CaptureFormat::Pcap {
                nanosecond: nanos,
                big_endian: true
            }
        );
        let out = read_all(&c.bytes);
        assert!(out.error.is_none());
        let got: Vec<_> = out
            .datagrams
            .iter()
            .map(|d| (d.payload.clone(), d.timestamp))
            .collect();
        assert_eq!(
            got,
            vec![
                (b"big".to_vec(), Duration::new(1_600_000_000, 999_999_000)),
                (b"endian".to_vec(), Duration::new(1_600_000_001, 1_000)),
            ]
        );
        assert_eq!(out.datagrams[0].src, sa("10.0.0.1:53"));
    }
}

#[test]
fn modified_pcap_records() {
    // Kuznetzov's format: the same file header with magic a1b2cd34, 24-byte record headers.
    let f = frame(b"modified");
    let mut bytes = Classic::new(1, false, false).bytes;
    bytes[..4].copy_from_slice(&0xa1b2_cd34u32.to_le_bytes());
    for v in [7u32, 500, f.len() as u32, f.len() as u32, 2, 0] {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes.extend_from_slice(&f);
    let out = read_all(&bytes);
    assert!(out.error.is_none(), "{:?}", out.error);
    assert_eq!(out.datagrams[0].payload, b"modified");
    assert_eq!(out.datagrams[0].timestamp, Duration::new(7, 500_000));
}

fn not_a_capture(bytes: &[u8]) -> String {
    match CaptureReader::new(bytes) {
        Err(e @ CaptureError::NotACapture { .. }) => e.to_string(),
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("accepted {bytes:02x?}"),
    }
}

#[test]
fn garbage_is_not_a_capture() {
    assert!(not_a_capture(b"").contains("empty"));
    assert!(not_a_capture(b"abc").contains("3 bytes"));
    let msg = not_a_capture(b"GET / HTTP/1.1\r\n");
    assert!(
        msg.starts_with("not a pcap or pcapng file") && msg.contains("47 45 54 20"),
        "{msg}"
    );
    assert!(not_a_capture(&[0x1f, 0x8b, 8, 0, 0, 0]).contains("gzip"));
}

#[test]
fn absurd_record_length_is_an_error() {
    let mut c = Classic::new(1, false, false);
    c.record(Duration::ZERO, &frame(b"fine"));
    let at = c.bytes.len();
    c.bytes
        .extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    let out = read_all(&c.bytes);
    assert_eq!(out.datagrams.len(), 1);
    let msg = out.error.unwrap().to_string();
    assert!(
        msg.contains("record 2") && msg.contains(&format!("byte offset {at}")),
        "{msg}"
    );
}
