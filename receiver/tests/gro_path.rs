//! A keyed object sent to a live receiver in GSO writes (read as GRO messages, which
//! leave the socket thread in their receive buffers), reordered, with duplicates and
//! truncated datagrams among them: the object arrives whole, and what was truncated is
//! counted as rejected.

use gapferry_common::emit::DatagramWriter;
use gapferry_common::{layout, send, Key, KeyRing, ObjectDescriptor, ObjectKind};
use gapferry_receiver::pipeline::Listener;
use gapferry_receiver::ReceiverConfig;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Datagrams per GSO write at most: a GRO read of them fills more than half a buffer.
const PER_WRITE: usize = 50;

mod support;
use support::noise;

/// The datagrams as the hostile link delivers them: each run of PER_WRITE reversed
/// every other time, every 7th doubled, every 5th run ending in a truncated copy.
fn hostile(datagrams: &[Vec<u8>]) -> (Vec<Vec<u8>>, usize) {
    let (mut out, mut truncated) = (Vec::new(), 0);
    for (i, run) in datagrams.chunks(PER_WRITE).enumerate() {
        let mut run: Vec<Vec<u8>> = run.to_vec();
        if i % 2 == 1 {
            run.reverse();
        }
        for (j, d) in run.iter().enumerate() {
            out.push(d.clone());
            if j % 7 == 6 {
                out.push(d.clone());
            }
        }
        if i % 5 == 2 {
            let d = &run[0];
            out.push(d[..d.len() - 9].to_vec());
            truncated += 1;
        }
    }
    (out, truncated)
}

/// Sends `datagrams` in GSO writes: runs of equal length (the last of a run may be
/// shorter), PER_WRITE at most.
fn send_gso(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = quinn_udp::UdpSocketState::new((&sock).into()).unwrap();
    let mut i = 0;
    while i < datagrams.len() {
        let stride = datagrams[i].len();
        let mut end = i + 1;
        while end < datagrams.len() && end - i < PER_WRITE && datagrams[end].len() <= stride {
            end += 1;
            if datagrams[end - 1].len() < stride {
                break;
            }
        }
        let contents = datagrams[i..end].concat();
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: &contents,
            segment_size: (end - i > 1).then_some(stride),
            src_ip: None,
        };
        state.try_send((&sock).into(), &t).unwrap();
        // A gentle pace: the socket buffer is not what this test is about.
        std::thread::sleep(Duration::from_micros(300));
        i = end;
    }
}

#[test]
fn a_keyed_object_in_gro_reads_arrives_through_reorder_duplicates_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let key = Key::from_bytes([5; 32]);
    let mut cfg = ReceiverConfig::new(out.clone());
    cfg.keys = KeyRing::new(vec![key.clone()]);
    cfg.limits.grace = Duration::from_millis(500);
    let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
    let to = listener.local_addr().unwrap();
    let shutdown = Arc::new(AtomicBool::new(false));
    let running = std::thread::spawn({
        let flag = shutdown.clone();
        move || listener.run(flag)
    });

    let original = noise(3 * layout::block_plain_size(1024) as usize - 4321, 11);
    let descriptor = ObjectDescriptor {
        kind: ObjectKind::File,
        name: "gro.bin".into(),
        size: original.len() as u64,
        blake3: *blake3::hash(&original).as_bytes(),
        block_plain_size: layout::block_plain_size(1024),
        mtime: 1_700_000_000,
        pass: 1,
        passes: 1,
    };
    let w = DatagramWriter::new(0x6e0, Some(key));
    let level = gapferry_common::compress::DEFAULT_LEVEL;
    let datagrams = send::object_datagrams(&w, 0, &descriptor, &original, 1024, 10, level).unwrap();
    let (wire, truncated) = hostile(&datagrams);
    send_gso(to, &wire);

    let delivered = out.join("files").join("gro.bin");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !delivered.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    shutdown.store(true, Ordering::Relaxed);
    let report = running.join().unwrap().unwrap();
    assert_eq!(
        report.report.summary.delivered, 1,
        "{:#?}",
        report.report.summary
    );
    assert!(
        std::fs::read(&delivered).unwrap() == original,
        "delivered bytes differ"
    );
    assert_eq!(
        report.received,
        wire.len() as u64,
        "every datagram was read"
    );
    assert!(
        report.report.assembler.rejected_total() >= truncated as u64,
        "the {truncated} truncated datagrams were rejected: {:?}",
        report.report.assembler.rejected
    );
}
