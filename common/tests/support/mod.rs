//! Helpers shared by the common crate's integration tests: an allocator that measures
//! what a call allocates, a sender that produces an object's datagrams exactly as
//! `gapferry-send` does (through `gapferry_common::send`), and a checker of assembler events.
#![allow(dead_code)]

use gapferry_common::compress;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::layout;
use gapferry_common::send;
use gapferry_common::{Assembler, Event, Heartbeat, Key, Limits, ObjectKind, ObjectRef};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Allocation measurement

/// The system allocator, noting per thread the largest single request and the net bytes
/// allocated, so a test can bound what one call allocates.
pub struct Counting;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
    static NET: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

fn note(grow: isize, request: usize) {
    let _ = LARGEST.try_with(|l| l.set(l.get().max(request)));
    let _ = NET.try_with(|n| {
        let now = n.get() + grow;
        n.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize, l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size() as isize, l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        note(-(l.size() as isize), 0);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new as isize - l.size() as isize, new);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the current thread allocated while running `f`.
#[derive(Debug, Clone, Copy)]
pub struct AllocReport {
    /// Largest single allocation request.
    pub largest: usize,
    /// Highest net growth of the heap during the call.
    pub peak: isize,
    /// Net growth of the heap still held after the call.
    pub retained: isize,
}

/// Runs `f`, measuring its allocations on this thread.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, AllocReport) {
    let base = NET.with(Cell::get);
    LARGEST.with(|l| l.set(0));
    PEAK.with(|p| p.set(base));
    let r = f();
    let report = AllocReport {
        largest: LARGEST.with(Cell::get),
        peak: PEAK.with(Cell::get) - base,
        retained: NET.with(Cell::get) - base,
    };
    (r, report)
}

// ---------------------------------------------------------------------------------------
// A sender without I/O

/// Everything one object sends, in the order `gapferry-send` sends it.
pub struct SentObject {
    /// The descriptor (pass 1).
    pub descriptor: ObjectDescriptor,
    /// The original bytes.
    pub original: Vec<u8>,
    /// The object id.
    pub object: u32,
    /// Every datagram: descriptors, interleaved symbols, descriptor copies.
    pub datagrams: Vec<Vec<u8>>,
}

/// The descriptor `gapferry-send` would build for `original`.
pub fn describe(name: &str, original: &[u8], max_symbol: u16, passes: u8) -> ObjectDescriptor {
    ObjectDescriptor {
        kind: ObjectKind::File,
        name: name.into(),
        size: original.len() as u64,
        blake3: *blake3::hash(original).as_bytes(),
        block_plain_size: layout::block_plain_size(max_symbol),
        mtime: 1_700_000_000,
        pass: 1,
        passes,
    }
}

/// Produces the datagrams of every pass of object `object`, mirroring `send_object`.
pub fn send_object(
    w: &DatagramWriter,
    object: u32,
    name: &str,
    original: &[u8],
    max_symbol: u16,
    repair_percent: u32,
    passes: u8,
) -> SentObject {
    let d1 = describe(name, original, max_symbol, passes);
    let datagrams = send::object_datagrams(
        w,
        object,
        &d1,
        original,
        max_symbol,
        repair_percent,
        compress::DEFAULT_LEVEL,
    )
    .expect("small descriptor");
    SentObject {
        descriptor: d1,
        original: original.to_vec(),
        object,
        datagrams,
    }
}

/// A heartbeat datagram saying objects below `next` were all sent.
pub fn heartbeat(w: &DatagramWriter, seq: u64, next: u32, ending: bool) -> Vec<u8> {
    let mut buf = Vec::new();
    w.heartbeat(
        &mut buf,
        &Heartbeat {
            seq,
            uptime_ms: seq * 1000,
            datagrams_sent: seq * 100,
            bytes_sent: seq * 100_000,
            next_object: next,
            done_below: next,
            rate_bps: 1_000_000_000,
            ending,
        },
    );
    buf
}

/// Bytes that compress well, like JSON.
pub fn json_like(len: usize) -> Vec<u8> {
    let unit = br#"{"Event":{"uuid":"5e8f0a3c","info":"phishing campaign","Attribute":[{"type":"ip-dst","value":"198.51.100.7"}]}},"#;
    unit.iter().copied().cycle().take(len).collect()
}

/// Bytes that do not compress.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A fixed test key.
pub fn key() -> Key {
    Key::from_bytes([0x5A; 32])
}

/// Symbols of the test objects: a realistic size (the smallest MTU with a tag gives 472),
/// so the memory charged per symbol is in its real proportion to the payload.
pub const TEST_SYMBOL: u16 = 512;

/// Small limits, so tests reach them, with room for the test objects: blocks of
/// [`TEST_SYMBOL`] x 1024 bytes, every symbol of them held at once with bookkeeping.
pub fn small_limits() -> Limits {
    Limits {
        max_object_size: 4 << 20,
        max_objects_in_flight: 4,
        max_held_bytes: 2 << 20,
        max_block_symbols: 2048,
        max_block_plain: 1 << 20,
        max_sessions: 2,
        grace: Duration::from_secs(2),
        session_timeout: Duration::from_secs(30),
        ..Limits::default()
    }
}

// ---------------------------------------------------------------------------------------
// Checking what the assembler says

/// Checks every event against what the object's accepted descriptor said, and keeps the
/// reassembled objects.
#[derive(Default)]
pub struct Checker {
    /// Accepted descriptors, by object.
    pub started: HashMap<ObjectRef, ObjectDescriptor>,
    /// Decoded and decompressed blocks (None when decompression failed), by object.
    pub blocks: HashMap<ObjectRef, BTreeMap<u32, Option<Vec<u8>>>>,
    /// Objects reported complete, with their reassembled bytes when every block decompressed.
    pub completed: HashMap<ObjectRef, Option<Vec<u8>>>,
    /// Objects reported failed, with the reason.
    pub failed: HashMap<ObjectRef, String>,
    /// Runs of objects reported lost: session, first and last id.
    pub lost: Vec<(u64, u32, u32)>,
    /// Sessions closed.
    pub closed: HashSet<u64>,
}

impl Checker {
    /// Drains and checks every pending event of `a`.
    pub fn drain(&mut self, a: &mut Assembler, limits: &Limits) {
        while let Some(e) = a.poll_event() {
            self.check(e, limits);
        }
    }

    fn resolved(&self, o: &ObjectRef) -> bool {
        self.completed.contains_key(o)
            || self.failed.contains_key(o)
            || self
                .lost
                .iter()
                .any(|&(s, first, last)| s == o.session && (first..=last).contains(&o.object))
    }

    /// Checks one event.
    pub fn check(&mut self, e: Event, limits: &Limits) {
        match e {
            Event::ObjectStarted { object, descriptor } => {
                self.on_started(object, descriptor, limits)
            }
            Event::BlockDecoded {
                object,
                block,
                codec,
                plain_len,
                data,
            } => self.on_block(object, (block, codec, plain_len), data, limits),
            Event::ObjectComplete { object, blake3 } => self.on_complete(object, blake3),
            Event::ObjectFailed { object, reason, .. } => {
                assert!(!self.resolved(&object), "{object} ended twice");
                assert!(!reason.is_empty());
                self.blocks.remove(&object);
                self.failed.insert(object, reason);
            }
            Event::ObjectLost {
                object, through, ..
            } => self.on_lost(object, through),
            Event::SessionClosed { session, reason } => {
                assert!(!reason.is_empty());
                self.closed.insert(session);
            }
            // Session news, and kinds of event added later: nothing to check here.
            _ => {}
        }
    }

    fn on_started(&mut self, object: ObjectRef, descriptor: ObjectDescriptor, limits: &Limits) {
        assert!(!self.resolved(&object), "{object} started after it ended");
        gapferry_common::name::validate(&descriptor.name).expect("accepted name is safe");
        assert!(descriptor.size <= limits.max_object_size);
        assert!(descriptor.block_count() <= u32::MAX as u64);
        if descriptor.size > 0 {
            assert!((1..=limits.max_block_plain).contains(&descriptor.block_plain_size));
        }
        assert!(
            self.started.insert(object, descriptor).is_none(),
            "{object} started twice"
        );
    }

    /// Checks a decoded block: `(index, codec, plain_len)` and its bytes.
    fn on_block(
        &mut self,
        object: ObjectRef,
        (block, codec, plain_len): (u32, gapferry_common::wire::Codec, u32),
        data: Vec<u8>,
        limits: &Limits,
    ) {
        let d = self
            .started
            .get(&object)
            .unwrap_or_else(|| panic!("block of {object} before its descriptor"));
        assert!(!self.resolved(&object), "block of {object} after it ended");
        assert!(
            (block as u64) < d.block_count(),
            "block {block} beyond the object"
        );
        assert_eq!(plain_len as u64, d.block_plain_len(block));
        assert!(plain_len <= limits.max_block_plain);
        assert!(!data.is_empty() && data.len() <= plain_len as usize);
        let plain = compress::decompress_block(codec, data, plain_len).ok();
        if let Some(p) = &plain {
            assert_eq!(p.len(), plain_len as usize);
        }
        let prev = self.blocks.entry(object).or_default().insert(block, plain);
        assert!(prev.is_none(), "block {block} of {object} decoded twice");
    }

    fn on_complete(&mut self, object: ObjectRef, blake3: [u8; 32]) {
        let d = self
            .started
            .get(&object)
            .unwrap_or_else(|| panic!("{object} complete without a descriptor"));
        // A descriptor that carried the blake3 from the start completes with that one.
        assert!(
            d.known_blake3().is_none_or(|k| k == blake3),
            "{object} completes with another blake3 than its descriptor's"
        );
        assert!(!self.resolved(&object), "{object} ended twice");
        let blocks = self.blocks.remove(&object).unwrap_or_default();
        assert_eq!(
            blocks.len() as u64,
            d.block_count(),
            "{object} complete early"
        );
        let bytes: Option<Vec<u8>> = blocks.into_values().try_fold(Vec::new(), |mut acc, b| {
            acc.extend_from_slice(&b?);
            Some(acc)
        });
        if let Some(b) = &bytes {
            assert_eq!(b.len() as u64, d.size);
        }
        self.completed.insert(object, bytes);
    }

    fn on_lost(&mut self, object: ObjectRef, through: u32) {
        assert!(
            through >= object.object,
            "{object}: a run ending before it starts"
        );
        // A run may span billions of ids (a forger's claim): checked as a range.
        let in_run = |o: &ObjectRef| {
            o.session == object.session && (object.object..=through).contains(&o.object)
        };
        assert!(
            !self.completed.keys().any(in_run)
                && !self.failed.keys().any(in_run)
                && !self.lost.iter().any(|&(s, first, last)| {
                    s == object.session && first <= through && object.object <= last
                }),
            "{object}..={through}: a lost run holds an object that ended before"
        );
        assert!(
            !self.started.keys().any(in_run),
            "{object}..={through}: a lost run holds an object that started"
        );
        self.lost.push((object.session, object.object, through));
    }
}

/// The key ring of [`key`].
pub fn ring() -> gapferry_common::KeyRing {
    gapferry_common::KeyRing::new(vec![key()])
}

/// Proptest settings with `cases` cases, or `PROPTEST_CASES` when set.
pub fn config(cases: u32) -> proptest::test_runner::Config {
    proptest::test_runner::Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        ..proptest::test_runner::Config::default()
    }
}

/// Bytes that look like a gapferry datagram for some prefix, then arbitrary: they get
/// past the magic and version checks, so the later checks are exercised.
pub fn datagram_like() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    (
        0u8..5,
        0u8..4,
        prop::collection::vec(any::<u8>(), 0..1600),
        prop::bool::ANY,
    )
        .prop_map(|(t, flags, mut rest, zero_reserved)| {
            let mut v = vec![b'G', b'F', gapferry_common::wire::VERSION, t, flags];
            if zero_reserved && rest.len() >= 3 {
                rest[..3].fill(0);
            }
            v.extend(rest);
            v
        })
}

/// Feeds `bytes` at `now` and checks the bounds afterwards.
pub fn feed(a: &mut Assembler, limits: &Limits, now: Duration, bytes: &[u8]) {
    let _ = a.handle(now, bytes);
    check_bounds(a, limits);
}

/// The assembler's memory and object bounds hold.
pub fn check_bounds(a: &Assembler, limits: &Limits) {
    assert!(
        a.held_bytes() <= limits.max_held_bytes,
        "held {} bytes, limit {}",
        a.held_bytes(),
        limits.max_held_bytes
    );
    assert!(a.objects_in_flight() <= limits.max_objects_in_flight);
}
