//! Property tests: arbitrary bytes, and arbitrary mutations of valid classic and pcapng
//! captures (with VLAN tags, fragments and IPv6), never make the reader panic or loop,
//! and what it yields stays within the bounds a real capture could produce.

mod common;

use std::time::Duration;

use common::{read_all_with, sa, udp_packet, Ng};
use gapferry_pcap::{
    CaptureReader, CaptureWriter, ReaderConfig, ReassemblyLimits, VlanTags, WriterOptions,
};
use proptest::prelude::*;

fn config() -> ReaderConfig {
    let reassembly = ReassemblyLimits {
        max_pending: 8,
        max_bytes: 256 * 1024,
        timeout: Duration::from_secs(5),
    };
    ReaderConfig {
        reassembly,
        drop_bad_checksums: false,
    }
}

fn seeds() -> Vec<Vec<u8>> {
    let mut seeds = Vec::new();
    for (src, dst) in [
        ("10.0.0.1:1", "10.0.0.2:2"),
        ("[2001:db8::1]:1", "[2001:db8::2]:2"),
    ] {
        let options = WriterOptions {
            vlan: VlanTags::Double { outer: 3, inner: 4 },
            ..Default::default()
        };
        let mut w = CaptureWriter::with_options(Vec::new(), sa(src), sa(dst), options).unwrap();
        w.write_datagram(Duration::from_secs(1), b"first").unwrap();
        w.write_fragmented(Duration::from_secs(2), &[5u8; 700], 200)
            .unwrap();
        w.write_datagram(Duration::from_secs(3), &[6u8; 90])
            .unwrap();
        seeds.push(w.into_inner().unwrap());
    }
    let mut ng = Ng::new();
    ng.section(false)
        .interface(101, 0, Some(9), None)
        .enhanced(
            0,
            5,
            &udp_packet(sa("10.1.0.1:1"), sa("10.1.0.2:2"), b"ng one"),
        )
        .section(true)
        .interface(229, 0, Some(0x8a), Some(-3))
        .enhanced(
            0,
            1 << 40,
            &udp_packet(sa("[::1]:1"), sa("[::2]:2"), b"ng two"),
        )
        .simple(&udp_packet(sa("[::1]:1"), sa("[::2]:2"), b"ng three"));
    seeds.push(ng.bytes);
    seeds
}

/// Reads everything and checks the bounds; the reader must end within one call per byte.
fn check(bytes: &[u8]) {
    let Ok(mut reader) = CaptureReader::with_config(bytes, config()) else {
        return;
    };
    let mut yielded = 0u64;
    for _ in 0..bytes.len() + 2 {
        match reader.next_datagram() {
            Ok(Some(d)) => {
                yielded += 1;
                assert!(d.payload.len() <= 65_527);
            }
            Ok(None) | Err(_) => {
                let st = reader.stats();
                assert_eq!(st.datagrams, yielded);
                assert!(st.datagrams <= st.records);
                assert!(st.bytes <= bytes.len() as u64);
                assert_eq!((st.fragments_pending, st.fragment_bytes_pending), (0, 0));
                assert!(reader.next_datagram().unwrap().is_none());
                return;
            }
        }
        assert!(reader.stats().fragment_bytes_pending <= 256 * 1024);
    }
    panic!("reader did not finish");
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set32(usize, u32),
    Cut(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1..=255u8).prop_map(|(i, x)| Mutation::Flip(i, x)),
        2 => (any::<usize>(), prop_oneof![Just(0u32), Just(u32::MAX), Just(0x8000_0000), any::<u32>(), 0..70_000u32])
            .prop_map(|(i, v)| Mutation::Set32(i, v)),
        1 => any::<usize>().prop_map(Mutation::Cut),
        1 => (any::<usize>(), proptest::collection::vec(any::<u8>(), 1..64)).prop_map(|(i, v)| Mutation::Insert(i, v)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        if bytes.is_empty() {
            break;
        }
        let n = bytes.len();
        match m {
            Mutation::Flip(i, x) => bytes[i % n] ^= x,
            Mutation::Set32(i, v) => {
                let at = i % n;
                let end = (at + 4).min(n);
                bytes[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
            }
            Mutation::Cut(i) => bytes.truncate(i % n),
            Mutation::Insert(i, v) => {
                let at = i % n;
                bytes.splice(at..at, v.iter().copied());
            }
        }
    }
    bytes
}

proptest! {
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_a_valid_header(
        ng in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let head = if ng { seeds()[2][..48].to_vec() } else { seeds()[0][..24].to_vec() };
        check(&[&head[..], &body].concat());
    }

    #[test]
    fn mutated_captures(seed in 0..3usize, mutations in proptest::collection::vec(mutation(), 1..8)) {
        let bytes = apply(seeds()[seed].clone(), &mutations);
        check(&bytes);
    }
}

#[test]
fn seeds_are_valid() {
    let want = [3, 3, 3];
    for (seed, n) in seeds().iter().zip(want) {
        let out = read_all_with(seed, config());
        assert!(out.error.is_none(), "{:?}", out.error);
        assert_eq!(out.datagrams.len(), n);
    }
}
