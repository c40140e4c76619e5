//! Property tests of the protocol crate's hostile-input surface: the datagram parser, the
//! control-message decoder, the block decoder, bounded decompression and the name rules,
//! fed arbitrary and mutated input. None of it may panic or allocate beyond its limits.
//! The assembler's properties are in `assembler_properties.rs`.
//!
//! `PROPTEST_CASES=N` runs more cases than the defaults below.

mod support;

use gapferry_common::control::{self, Inventory, ObjectDescriptor, MAX_CONTROL_BODY};
use gapferry_common::fec::{BlockDecoder, BlockEncoder};
use gapferry_common::wire::{self, Codec, DataHeader, Datagram, DatagramType, Reject};
use gapferry_common::{compress, layout, name};
use gapferry_common::{Heartbeat, Key, KeyRing, ObjectKind};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Component, Path};
use support::*;

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..200),
        prop::collection::vec(any::<u8>(), 0..70_000),
        datagram_like(),
    ]
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![Just(Codec::None), Just(Codec::Zstd)]
}

fn header() -> impl Strategy<Value = DataHeader> {
    (
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        0..=wire::MAX_ESI,
        1..=u32::MAX,
        1..=u32::MAX,
        codec(),
    )
        .prop_map(
            |(session, object, block, esi, block_len, plain_len, codec)| DataHeader {
                session,
                object,
                block,
                esi,
                block_len,
                plain_len: if codec == Codec::None {
                    block_len
                } else {
                    plain_len
                },
                codec,
            },
        )
}

// ---------------------------------------------------------------------------------------
// The datagram parser

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bytes never panic the parser; under a key they are never accepted.
    #[test]
    fn parse_never_panics(bytes in any_bytes()) {
        let _ = wire::parse(&bytes, &KeyRing::default());
        prop_assert!(wire::parse(&bytes, &ring()).is_err());
    }

    /// What the parser accepts has the lengths and ranges the layout promises.
    #[test]
    fn accepted_datagrams_are_in_range(bytes in datagram_like()) {
        match wire::parse(&bytes, &KeyRing::default()) {
            Ok(Datagram::Data { header, symbol }) => {
                prop_assert_eq!(symbol.len() + wire::DATA_HEADER_LEN, bytes.len()
                    - if bytes[4] & wire::FLAG_TAGGED != 0 { 16 } else { 0 });
                prop_assert!(!symbol.is_empty());
                prop_assert!(header.esi <= wire::MAX_ESI);
                prop_assert!(header.block_len > 0 && header.plain_len > 0);
                if header.codec == Codec::None {
                    prop_assert_eq!(header.block_len, header.plain_len);
                }
            }
            Ok(Datagram::Control { body, .. }) => prop_assert!(body.len() <= u16::MAX as usize),
            Err(_) => {}
        }
    }

    /// Encoding any valid header and symbol, tagged or not, parses back to the same.
    #[test]
    fn data_round_trip(h in header(), symbol in prop::collection::vec(any::<u8>(), 1..1500),
                       tagged in any::<bool>(), rollover in any::<bool>()) {
        let k = key();
        let mut buf = Vec::new();
        wire::encode_data(&mut buf, &h, &symbol, tagged.then_some(&k));
        // Key rollover: the ring may hold an older key first.
        let ring = match (tagged, rollover) {
            (false, _) => KeyRing::default(),
            (true, false) => ring(),
            (true, true) => KeyRing::new(vec![Key::from_bytes([1; 32]), k.clone()]),
        };
        let want = Datagram::Data { header: h, symbol: &symbol };
        prop_assert_eq!(wire::parse(&buf, &ring), Ok(want));
    }

    /// Any field combination parses iff it is valid, and then to itself.
    #[test]
    fn data_fields_parse_iff_valid(session in any::<u64>(), object in any::<u32>(),
                                   block in any::<u32>(), esi in any::<u32>(),
                                   block_len in any::<u32>(), plain_len in any::<u32>(),
                                   codec in codec(), len in 1usize..64) {
        let h = DataHeader { session, object, block, esi, block_len, plain_len, codec };
        let symbol = vec![7u8; len];
        let mut buf = Vec::new();
        wire::encode_data(&mut buf, &h, &symbol, None);
        let valid = esi <= wire::MAX_ESI && block_len > 0 && plain_len > 0
            && (codec == Codec::Zstd || block_len == plain_len);
        match wire::parse(&buf, &KeyRing::default()) {
            Ok(d) => {
                prop_assert!(valid);
                prop_assert_eq!(d, Datagram::Data { header: h, symbol: &symbol });
            }
            Err(r) => {
                prop_assert!(!valid);
                prop_assert!(matches!(r, Reject::Malformed(_)), "{:?}", r);
            }
        }
    }

    /// Control datagrams round trip with and without a key.
    #[test]
    fn control_round_trip(heartbeat in any::<bool>(), session in any::<u64>(),
                          object in any::<u32>(),
                          body in prop::collection::vec(any::<u8>(), 0..MAX_CONTROL_BODY),
                          tagged in any::<bool>()) {
        let kind = if heartbeat { DatagramType::Heartbeat } else { DatagramType::Descriptor };
        let k = key();
        let mut buf = Vec::new();
        wire::encode_control(&mut buf, kind, session, object, &body, tagged.then_some(&k));
        let ring = if tagged { ring() } else { KeyRing::default() };
        prop_assert_eq!(
            wire::parse(&buf, &ring),
            Ok(Datagram::Control { kind, session, object, body: &body })
        );
    }

    /// Flipping any single bit of a tagged datagram makes it rejected.
    #[test]
    fn any_bit_flip_of_a_tagged_datagram_is_rejected(
        h in header(), symbol in prop::collection::vec(any::<u8>(), 1..600),
        control in any::<bool>(), bit in any::<prop::sample::Index>()) {
        let k = key();
        let mut buf = Vec::new();
        if control {
            let kind = DatagramType::Descriptor;
            wire::encode_control(&mut buf, kind, h.session, h.object, &symbol, Some(&k));
        } else {
            wire::encode_data(&mut buf, &h, &symbol, Some(&k));
        }
        prop_assert!(wire::parse(&buf, &ring()).is_ok());
        let bit = bit.index(buf.len() * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        let r = wire::parse(&buf, &ring());
        prop_assert!(r.is_err(), "bit {} flipped and accepted: {:?}", bit, r);
    }

    /// Truncating or extending a tagged datagram makes it rejected.
    #[test]
    fn resized_tagged_datagrams_are_rejected(
        h in header(), symbol in prop::collection::vec(any::<u8>(), 1..600),
        cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 1..20)) {
        let k = key();
        let mut buf = Vec::new();
        wire::encode_data(&mut buf, &h, &symbol, Some(&k));
        let n = cut.index(buf.len());
        prop_assert!(wire::parse(&buf[..n], &ring()).is_err());
        buf.extend(extra);
        prop_assert!(wire::parse(&buf, &ring()).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// Control messages

fn descriptor() -> impl Strategy<Value = ObjectDescriptor> {
    (
        prop_oneof![
            Just(ObjectKind::File),
            Just(ObjectKind::Misp),
            Just(ObjectKind::Stix),
            Just(ObjectKind::Image),
            Just(ObjectKind::ImageSignature),
        ],
        ".{0,300}",
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u32>(),
        any::<i64>(),
        any::<u8>(),
        any::<u8>(),
    )
        .prop_map(
            |(kind, name, size, blake3, block_plain_size, mtime, pass, passes)| ObjectDescriptor {
                kind,
                name,
                size,
                blake3,
                block_plain_size,
                mtime,
                pass,
                passes,
            },
        )
}

fn heartbeat_msg() -> impl Strategy<Value = Heartbeat> {
    (any::<[u64; 5]>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
        |(n, next_object, done_below, ending)| Heartbeat {
            seq: n[0],
            uptime_ms: n[1],
            datagrams_sent: n[2],
            bytes_sent: n[3],
            next_object,
            done_below,
            rate_bps: n[4],
            ending,
        },
    )
}

/// Largest single allocation a control decode may make: what the body's bytes can really
/// hold (a 24-byte inventory entry is 40 bytes in memory, and a `Vec` grows by doubling),
/// never what its length fields claim.
const CONTROL_ALLOC_BOUND: usize = 4 * MAX_CONTROL_BODY;

/// Decodes `body` as every control message; the largest single allocation and peak heap.
fn decode_all(body: &[u8]) -> (usize, isize) {
    let (_, a) = measure(|| control::decode::<ObjectDescriptor>(body).is_ok());
    let (_, b) = measure(|| control::decode::<Heartbeat>(body).is_ok());
    let (_, c) = measure(|| control::decode::<Inventory>(body).is_ok());
    (
        a.largest.max(b.largest).max(c.largest),
        a.peak.max(b.peak).max(c.peak),
    )
}

proptest! {
    #![proptest_config(config(512))]

    /// Arbitrary bodies never panic any control decoder and never make it allocate much.
    #[test]
    fn control_decode_is_bounded(body in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..3000),
    ]) {
        let (largest, peak) = decode_all(&body);
        prop_assert!(largest <= CONTROL_ALLOC_BOUND, "allocated {} bytes at once", largest);
        prop_assert!(peak <= 2 * CONTROL_ALLOC_BOUND as isize, "peak {}", peak);
    }

    /// Corrupting a valid descriptor (lengths included) never panics or allocates much.
    #[test]
    fn corrupted_descriptors_are_bounded(d in descriptor(),
                                         edits in prop::collection::vec(
                                             (any::<prop::sample::Index>(), any::<u8>()), 1..6),
                                         cut in any::<prop::sample::Index>()) {
        let Ok(mut body) = control::encode(&d) else { return Ok(()) };
        for (at, v) in edits {
            let i = at.index(body.len());
            body[i] = v;
        }
        // The name's length field (right after the 4-byte kind) set to something huge.
        if body.len() > 12 && cut.index(4) == 0 {
            body[4..12].copy_from_slice(&u64::MAX.to_be_bytes());
        }
        let n = cut.index(body.len() + 1);
        let (largest, _) = decode_all(&body[..n]);
        prop_assert!(largest <= CONTROL_ALLOC_BOUND, "allocated {} bytes at once", largest);
    }

    /// Descriptors and heartbeats round trip; a descriptor too large to encode is refused.
    #[test]
    fn control_messages_round_trip(d in descriptor(), hb in heartbeat_msg()) {
        match control::encode(&d) {
            Ok(body) => {
                prop_assert!(body.len() <= MAX_CONTROL_BODY);
                prop_assert_eq!(control::decode::<ObjectDescriptor>(&body).unwrap(), d);
            }
            Err(_) => prop_assert!(d.name.len() > MAX_CONTROL_BODY - 64),
        }
        let body = control::encode(&hb).unwrap();
        prop_assert_eq!(control::decode::<Heartbeat>(&body).unwrap(), hb);
    }
}

// ---------------------------------------------------------------------------------------
// Names, block decoding and decompression

proptest! {
    #![proptest_config(config(512))]

    /// A name that validates cannot leave the directory it is joined under.
    #[test]
    fn valid_names_stay_inside(n in prop_oneof![
        ".{0,80}",
        "[a-z./\\\\]{0,40}",
        prop::collection::vec(
            prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("/")], 0..8)
            .prop_map(|v| v.join("/")),
    ]) {
        if name::validate(&n).is_ok() {
            let p = Path::new(&n);
            prop_assert!(p.is_relative());
            prop_assert!(p.components().all(|c| matches!(c, Component::Normal(_))), "{:?}", n);
            prop_assert!(!n.chars().any(|c| c.is_control() || c == '\\'));
            prop_assert!(n.len() <= name::MAX_NAME_BYTES);
        }
    }

    /// Any block parameters the wire can carry and any symbols never panic the block
    /// decoder (the `raptorq` crate behind it panics on inconsistent input).
    #[test]
    fn block_decoder_never_panics(block_len in prop_oneof![1u32..5000, any::<u32>()],
                                  symbol_size in prop_oneof![1u16..200, any::<u16>()],
                                  max_symbols in prop_oneof![Just(64u32), any::<u32>()],
                                  symbols in prop::collection::vec(
                                      (prop_oneof![0u32..100, any::<u32>()],
                                       prop::collection::vec(any::<u8>(), 0..300)), 0..80)) {
        let max_symbols = max_symbols.min(4096);
        let Ok(mut dec) = BlockDecoder::new(block_len as usize, symbol_size, max_symbols) else {
            return Ok(());
        };
        prop_assert!(dec.source_symbols() <= 4096);
        let t = symbol_size as usize;
        for (esi, mut s) in symbols {
            // Most symbols get the right size so decoding is attempted.
            if !s.is_empty() && s[0] % 4 != 0 {
                s.resize(t, s[0]);
            }
            match dec.add(esi, &s) {
                Ok(Some(data)) => {
                    prop_assert_eq!(data.len(), block_len as usize);
                    break;
                }
                Ok(None) => {}
                Err(_) => prop_assert!(s.len() != t || esi > wire::MAX_ESI),
            }
        }
    }

    /// A block decodes from any k+2 of its symbols (source and repair, in any order).
    #[test]
    fn block_decodes_from_any_symbols(data in prop::collection::vec(any::<u8>(), 1..40_000),
                                      max_symbol in prop_oneof![Just(472u16), Just(512), Just(1408)],
                                      seed in any::<u64>()) {
        let mut enc = BlockEncoder::new(data.clone(), max_symbol);
        let k = enc.source_symbols();
        let r = layout::repair_symbols(k, 50) + 2;
        let mut symbols: Vec<(u32, Vec<u8>)> =
            (0..k).map(|e| (e, enc.source_symbol(e).to_vec())).collect();
        let repair = enc.repair_symbols(k, r);
        symbols.extend(repair.into_iter().enumerate().map(|(i, s)| (k + i as u32, s)));
        symbols.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        let mut dec = BlockDecoder::new(data.len(), enc.symbol_size(), 4096).unwrap();
        let mut out = None;
        for (esi, s) in symbols.into_iter().take(k as usize + 2) {
            if let Some(d) = dec.add(esi, &s).unwrap() {
                out = Some(d);
                break;
            }
        }
        prop_assert_eq!(out, Some(data));
    }

    /// Arbitrary zstd input never produces more than the declared size.
    #[test]
    fn decompress_is_bounded(data in prop_oneof![
        prop::collection::vec(any::<u8>(), 0..2000),
        // A valid frame with some bytes changed.
        (prop::collection::vec(any::<u8>(), 0..4000), any::<prop::sample::Index>(), any::<u8>())
            .prop_map(|(p, at, v)| {
                let mut f = zstd::bulk::compress(&p, 3).unwrap();
                let i = at.index(f.len());
                f[i] = v;
                f
            }),
    ], plain_len in prop_oneof![1u32..5000, Just(1 << 20)]) {
        let (r, a) = measure(|| compress::decompress_block(Codec::Zstd, data.clone(), plain_len));
        if let Ok(out) = r {
            prop_assert_eq!(out.len(), plain_len as usize);
        }
        // The output buffer plus the decoder context: nothing sized by the input's claims.
        prop_assert!(a.largest <= plain_len as usize + (1 << 20), "allocated {}", a.largest);
    }

    /// Compression round trips and stays within one block of the original.
    #[test]
    fn compress_round_trips(plain in prop_oneof![
        prop::collection::vec(any::<u8>(), 1..3000),
        (1usize..200_000).prop_map(json_like),
    ]) {
        let (codec, data) = compress::compress_block(&plain, compress::DEFAULT_LEVEL);
        prop_assert!(data.len() <= plain.len());
        let back = compress::decompress_block(codec, data, plain.len() as u32).unwrap();
        prop_assert_eq!(back, plain);
    }
}
