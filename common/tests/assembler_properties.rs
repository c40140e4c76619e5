//! Property tests of the assembler, fed hostile sequences of valid, mutated and random
//! datagrams: it may not panic, pass its limits, report an object that a valid descriptor
//! does not account for, or keep anything once it finishes; valid objects reassemble
//! byte-identical.
//!
//! `PROPTEST_CASES=N` runs more cases than the defaults below.

mod support;

use gapferry_common::control::{Inventory, InventoryEntry};
use gapferry_common::emit::DatagramWriter;
use gapferry_common::wire::{self, Codec, DataHeader, Datagram};
use gapferry_common::{layout, Assembler, KeyRing, ObjectKind, ObjectRef};
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;
use support::*;

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
