//! Property tests of the protocol crate's hostile-input surface: the datagram parser, the
//! control-message decoder, the block decoder, bounded decompression, the name rules and
//! the assembler, fed arbitrary and mutated input. None of it may panic, allocate beyond
//! its limits or report an object that a valid descriptor does not account for.
//!
//! `PROPTEST_CASES=N` runs more cases than the defaults below.

mod support;

use gapferry_common::control::{
    self, Inventory, InventoryEntry, ObjectDescriptor, MAX_CONTROL_BODY,
};
use gapferry_common::emit::DatagramWriter;
use gapferry_common::fec::{BlockDecoder, BlockEncoder};
use gapferry_common::wire::{self, Codec, DataHeader, Datagram, DatagramType, Reject};
use gapferry_common::{compress, layout, name};
use gapferry_common::{Assembler, Heartbeat, Key, KeyRing, ObjectKind, ObjectRef};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::path::{Component, Path};
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

fn ring() -> KeyRing {
    KeyRing::new(vec![key()])
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..ProptestConfig::default()
    }
}

/// Bytes that look like a gapferry datagram for some prefix, then arbitrary: they get
/// past the magic and version checks, so the later checks are exercised.
fn datagram_like() -> impl Strategy<Value = Vec<u8>> {
    (
        0u8..5,
        0u8..4,
        prop::collection::vec(any::<u8>(), 0..1600),
        prop::bool::ANY,
    )
        .prop_map(|(t, flags, mut rest, zero_reserved)| {
            let mut v = vec![b'G', b'F', wire::VERSION, t, flags];
            if zero_reserved && rest.len() >= 3 {
                rest[..3].fill(0);
            }
            v.extend(rest);
            v
        })
}

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

// ---------------------------------------------------------------------------------------
// The assembler

const SESSION: u64 = 0x6761_7066_6572_7279;
/// Realistic but small symbols, so that a few hundred kilobytes make two blocks.
const MAX_SYMBOL: u16 = TEST_SYMBOL;

struct Fixture {
    plain: Vec<SentObject>,
    keyed: Vec<SentObject>,
}

/// Objects as the sender sends them: empty, small JSON, several blocks of noise, and
/// two passes of a mixed object; once without and once with a key.
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let objects = |w: &DatagramWriter| {
            let mut mixed = json_like(9000);
            mixed.extend(noise(20_000, 3));
            vec![
                send_object(w, 0, "empty.json", &[], MAX_SYMBOL, 10, 1),
                send_object(w, 1, "misp/event.json", &json_like(3000), MAX_SYMBOL, 10, 1),
                send_object(
                    w,
                    2,
                    "files/blob.bin",
                    &noise(600_000, 7),
                    MAX_SYMBOL,
                    10,
                    1,
                ),
                send_object(w, 3, "stix/bundle.json", &mixed, MAX_SYMBOL, 20, 2),
            ]
        };
        Fixture {
            plain: objects(&DatagramWriter::new(SESSION, None)),
            keyed: objects(&DatagramWriter::new(SESSION, Some(key()))),
        }
    })
}

/// Which header field a mutation changes.
#[derive(Debug, Clone, Copy)]
enum Field {
    BlockLen,
    PlainLen,
    Esi,
    Block,
    Object,
    Codec,
    Session,
}

/// One step of a hostile sequence.
#[derive(Debug, Clone)]
enum Op {
    /// A valid datagram of the object.
    Valid(prop::sample::Index),
    /// Up to this many valid datagrams in a row, as the sender sent them.
    Run(prop::sample::Index, u16),
    /// A valid datagram cut short.
    Truncate(prop::sample::Index, prop::sample::Index),
    /// A valid datagram with one bit flipped.
    FlipBit(prop::sample::Index, prop::sample::Index),
    /// A valid data datagram with one header field changed, re-encoded (and re-tagged:
    /// a buggy or hostile sender holding the key).
    Field(prop::sample::Index, Field, u32),
    /// A valid data datagram whose symbol is cut or extended, re-encoded and re-tagged.
    SymbolLen(prop::sample::Index, u16),
    /// A descriptor that lies, re-encoded and re-tagged.
    LyingDescriptor(u32, u64, u32, String),
    /// A heartbeat: objects below `next` were sent.
    Heartbeat(u32, bool),
    /// An inventory naming objects (names arbitrary).
    Inventory(Vec<(u32, String)>),
    /// Random bytes, or random bytes behind a valid-looking prefix.
    Random(Vec<u8>),
    /// Time passes; the assembler is ticked.
    Wait(u32),
}

impl Op {
    /// Whether the op can make the assembler accept content a valid sender did not send.
    fn forges(&self, keyed: bool) -> bool {
        match self {
            Op::Valid(_) | Op::Run(..) | Op::Wait(_) | Op::Heartbeat(..) | Op::Inventory(_) => {
                false
            }
            Op::Truncate(..) | Op::FlipBit(..) => !keyed,
            Op::Random(b) => !keyed && b.starts_with(b"GF"),
            Op::Field(..) | Op::SymbolLen(..) | Op::LyingDescriptor(..) => true,
        }
    }
}

fn field() -> impl Strategy<Value = Field> {
    prop_oneof![
        Just(Field::BlockLen),
        Just(Field::PlainLen),
        Just(Field::Esi),
        Just(Field::Block),
        Just(Field::Object),
        Just(Field::Codec),
        Just(Field::Session),
    ]
}

fn two_indices() -> impl Strategy<Value = (prop::sample::Index, prop::sample::Index)> {
    (any::<prop::sample::Index>(), any::<prop::sample::Index>())
}

fn small_or_any() -> impl Strategy<Value = u32> {
    prop_oneof![0u32..8, 0u32..70_000, any::<u32>(), Just(u32::MAX)]
}

fn op() -> impl Strategy<Value = Op> {
    let idx = any::<prop::sample::Index>;
    prop_oneof![
        12 => idx().prop_map(Op::Valid),
        2 => (idx(), 1u16..4000).prop_map(|(a, n)| Op::Run(a, n)),
        1 => two_indices().prop_map(|(a, b)| Op::Truncate(a, b)),
        1 => two_indices().prop_map(|(a, b)| Op::FlipBit(a, b)),
        2 => (idx(), field(), small_or_any()).prop_map(|(a, f, v)| Op::Field(a, f, v)),
        1 => (idx(), any::<u16>()).prop_map(|(a, n)| Op::SymbolLen(a, n % 2000)),
        1 => (0u32..8, any::<u64>(), small_or_any(),
              prop_oneof![Just("x".to_string()), Just("../x".to_string()), "[a-z/]{1,20}"])
            .prop_map(|(o, s, b, n)| Op::LyingDescriptor(o, s, b, n)),
        1 => (0u32..6, any::<bool>()).prop_map(|(n, e)| Op::Heartbeat(n, e)),
        1 => prop::collection::vec((0u32..16, ".{0,40}"), 0..8).prop_map(Op::Inventory),
        1 => prop_oneof![prop::collection::vec(any::<u8>(), 0..100), datagram_like()]
            .prop_map(Op::Random),
        2 => prop_oneof![0u32..50, 0u32..5000, Just(40_000)].prop_map(Op::Wait),
    ]
}

fn re_encode(
    bytes: &[u8],
    keyed: bool,
    edit: impl FnOnce(&mut DataHeader, &mut Vec<u8>),
) -> Option<Vec<u8>> {
    let ring = if keyed { ring() } else { KeyRing::default() };
    let Ok(Datagram::Data { header, symbol }) = wire::parse(bytes, &ring) else {
        return None;
    };
    let (mut h, mut s) = (header, symbol.to_vec());
    edit(&mut h, &mut s);
    let k = key();
    let mut out = Vec::new();
    wire::encode_data(&mut out, &h, &s, keyed.then_some(&k));
    Some(out)
}

/// The datagrams an op sends, given all the objects' datagrams to draw from.
fn materialise(op: &Op, all: &[&Vec<u8>], keyed: bool) -> Vec<Vec<u8>> {
    if let Op::Run(i, n) = op {
        let start = i.index(all.len());
        let end = (start + *n as usize).min(all.len());
        return all[start..end].iter().map(|b| b.to_vec()).collect();
    }
    materialise_one(op, all, keyed).into_iter().collect()
}

fn materialise_one(op: &Op, all: &[&Vec<u8>], keyed: bool) -> Option<Vec<u8>> {
    let k = key();
    let w = DatagramWriter::new(SESSION, keyed.then(|| k.clone()));
    let pick = |i: &prop::sample::Index| all[i.index(all.len())];
    match op {
        Op::Valid(i) => Some(pick(i).clone()),
        Op::Truncate(i, n) => {
            let b = pick(i);
            Some(b[..n.index(b.len())].to_vec())
        }
        Op::FlipBit(i, bit) => {
            let mut b = pick(i).clone();
            let bit = bit.index(b.len() * 8);
            b[bit / 8] ^= 1 << (bit % 8);
            Some(b)
        }
        Op::Field(i, f, v) => re_encode(pick(i), keyed, |h, _| match f {
            Field::BlockLen => h.block_len = *v,
            Field::PlainLen => h.plain_len = *v,
            Field::Esi => h.esi = *v,
            Field::Block => h.block = *v,
            Field::Object => h.object = *v % 16,
            Field::Codec => {
                h.codec = if h.codec == Codec::None {
                    Codec::Zstd
                } else {
                    Codec::None
                }
            }
            Field::Session => h.session ^= 1 + (*v as u64 % 4),
        }),
        Op::SymbolLen(i, n) => {
            re_encode(pick(i), keyed, |_, s| s.resize((*n).max(1) as usize, 0xA5))
        }
        Op::LyingDescriptor(o, size, bps, name) => {
            let mut d = fixture().plain[1].descriptor.clone();
            d.size = *size;
            d.block_plain_size = *bps;
            d.name = name.clone();
            let mut out = Vec::new();
            w.descriptor(&mut out, *o, &d).ok()?;
            Some(out)
        }
        Op::Heartbeat(next, ending) => Some(heartbeat(&w, 1, *next, *ending)),
        Op::Inventory(entries) => {
            let entries = entries
                .iter()
                .map(|(object, name)| InventoryEntry {
                    object: *object,
                    kind: ObjectKind::File,
                    name: name.clone(),
                    size: 1,
                })
                .collect();
            let mut out = Vec::new();
            w.inventory(&mut out, &Inventory::fitting(entries));
            Some(out)
        }
        Op::Random(b) => Some(b.clone()),
        Op::Wait(_) | Op::Run(..) => None,
    }
}

/// Runs a sequence of ops against an assembler with small limits, checking bounds and
/// events after every step; returns the checker.
fn run(ops: &[Op], objects: &[usize], keyed: bool) -> Checker {
    let f = fixture();
    let sent = if keyed { &f.keyed } else { &f.plain };
    let all: Vec<&Vec<u8>> = objects.iter().flat_map(|&o| &sent[o].datagrams).collect();
    let limits = small_limits();
    let keys = if keyed { ring() } else { KeyRing::default() };
    let mut a = Assembler::new(limits.clone(), keys);
    let mut checker = Checker::default();
    let mut now = Duration::ZERO;
    for op in ops {
        now += Duration::from_millis(1);
        if let Op::Wait(ms) = op {
            now += Duration::from_millis(*ms as u64);
            a.tick(now);
            check_bounds(&a, &limits);
        } else {
            for bytes in materialise(op, &all, keyed) {
                feed(&mut a, &limits, now, &bytes);
            }
        }
        checker.drain(&mut a, &limits);
    }
    a.finish("test over");
    checker.drain(&mut a, &limits);
    check_bounds(&a, &limits);
    prop_assert_no_leak(&a);
    checker
}

fn prop_assert_no_leak(a: &Assembler) {
    assert_eq!(a.objects_in_flight(), 0, "objects left after finish");
    assert_eq!(a.held_bytes(), 0, "bytes still held after finish");
}

fn check_contents(checker: &Checker, sent: &[SentObject]) {
    for o in sent {
        let r = ObjectRef {
            session: SESSION,
            object: o.object,
        };
        if let Some(done) = checker.completed.get(&r) {
            let bytes = done.as_ref().expect("a valid object's blocks decompress");
            assert!(
                bytes == &o.original,
                "object {} reassembled wrong",
                o.object
            );
        }
    }
}

proptest! {
    #![proptest_config(config(96))]

    /// A hostile mix of valid, mutated and random datagrams with time passing: no panic,
    /// the limits hold after every step, every event agrees with an accepted descriptor,
    /// and nothing stays held once the assembler finishes. When nothing in the mix could
    /// forge content, whatever completes is byte-identical to what was sent.
    #[test]
    fn assembler_survives_hostile_sequences(
        ops in prop::collection::vec(op(), 1..400),
        objects in prop::sample::subsequence(vec![0usize, 1, 2, 3], 1..=4),
        keyed in any::<bool>(),
    ) {
        let checker = run(&ops, &objects, keyed);
        if !ops.iter().any(|o| o.forges(keyed)) {
            let f = fixture();
            check_contents(&checker, if keyed { &f.keyed } else { &f.plain });
        }
    }

    /// Every datagram of the objects, reordered, with some dropped within what repair
    /// covers and interleaved with garbage (rejected, under a key): every object completes
    /// byte-identical, the session closes cleanly, and nothing is failed or lost.
    #[test]
    fn assembler_reassembles_valid_objects(
        seed in any::<u64>(),
        drop_per_mille in 0u32..80,
        noise_ops in prop::collection::vec(prop_oneof![
            two_indices().prop_map(|(a, b)| Op::FlipBit(a, b)),
            two_indices().prop_map(|(a, b)| Op::Truncate(a, b)),
            prop::collection::vec(any::<u8>(), 0..200).prop_map(Op::Random),
        ], 0..40),
        keyed in any::<bool>(),
    ) {
        let f = fixture();
        let sent = if keyed { &f.keyed } else { &f.plain };
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let all: Vec<&Vec<u8>> = sent.iter().flat_map(|o| &o.datagrams).collect();
        let mut order: Vec<&Vec<u8>> = all.clone();
        order.shuffle(&mut rng);
        // Drop data datagrams while each block keeps k + 2 symbols (decoding then fails
        // with a probability RaptorQ puts around one in a million).
        let ring = if keyed { ring() } else { KeyRing::default() };
        let mut avail: HashMap<(u32, u32), (u32, u32)> = HashMap::new();
        for b in &all {
            if let Ok(Datagram::Data { header: h, symbol }) = wire::parse(b, &ring) {
                let k = layout::source_symbols(h.block_len as usize, symbol.len() as u16);
                avail.entry((h.object, h.block)).or_insert((0, k)).0 += 1;
            }
        }
        let mut kept = Vec::new();
        for b in order {
            if let Ok(Datagram::Data { header: h, .. }) = wire::parse(b, &ring) {
                let e = avail.get_mut(&(h.object, h.block)).unwrap();
                if rand::Rng::random_range(&mut rng, 0..1000) < drop_per_mille && e.0 > e.1 + 2 {
                    e.0 -= 1;
                    continue;
                }
            }
            kept.push(b.clone());
        }
        // Garbage only when it cannot be accepted (under a key) or is plain random bytes.
        let w = DatagramWriter::new(SESSION, keyed.then(key));
        let mut stream: Vec<Vec<u8>> = kept;
        for (i, op) in noise_ops.iter().enumerate() {
            if !op.forges(keyed) {
                for b in materialise(op, &all, keyed) {
                    let at = (i * 7919) % (stream.len() + 1);
                    stream.insert(at, b);
                }
            }
        }
        stream.push(heartbeat(&w, 9, sent.len() as u32, true));

        let limits = small_limits();
        let mut a = Assembler::new(limits.clone(), ring.clone());
        let mut checker = Checker::default();
        let mut now = Duration::ZERO;
        for b in &stream {
            now += Duration::from_micros(100);
            feed(&mut a, &limits, now, b);
            checker.drain(&mut a, &limits);
        }
        a.tick(now + Duration::from_secs(3));
        checker.drain(&mut a, &limits);
        prop_assert!(checker.failed.is_empty(), "failed: {:?}", checker.failed);
        prop_assert!(checker.lost.is_empty());
        prop_assert_eq!(checker.completed.len(), sent.len());
        check_contents(&checker, sent);
        prop_assert!(checker.closed.contains(&SESSION), "the session did not close after its end");
        prop_assert_eq!(a.objects_in_flight(), 0);
        prop_assert_eq!(a.held_bytes(), 0);
    }
}
