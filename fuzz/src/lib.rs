//! Helpers for the gapferry fuzz targets: a byte reader for fuzz input, a heap counter,
//! objects sent exactly as `gapferry-send` sends them, and a checker of assembler events.

use gapferry_common::compress;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::send;
use gapferry_common::{layout, Event, Key, Limits, ObjectKind, ObjectRef};
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

// ---------------------------------------------------------------------------------------
// Reading fuzz input

/// Takes fields off the front of the fuzz input; runs out gracefully (zeros).
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    /// One byte (0 when empty).
    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    /// A big-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_be_bytes([self.u8(), self.u8()])
    }

    /// A big-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_be_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// A big-endian u64.
    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) << 32 | self.u32() as u64
    }
}

// ---------------------------------------------------------------------------------------
// Counting the heap

/// The system allocator, counting live heap bytes and the largest request process-wide
/// (fuzzing is single-threaded).
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    LIVE.fetch_add(size as isize, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are atomics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        grew(l.size());
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

/// Live heap bytes allocated through [`Counting`] (when it is the global allocator).
pub fn live_heap() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The largest single allocation request since the last call (through [`Counting`]).
pub fn take_largest_allocation() -> usize {
    LARGEST.swap(0, Ordering::Relaxed)
}

// ---------------------------------------------------------------------------------------
// A sender without I/O

/// The session id of the built-in objects.
pub const SESSION: u64 = 0x6761_7066_6572_7279;

/// The key of keyed runs.
pub fn key() -> Key {
    Key::from_bytes([0x5A; 32])
}

/// One object as sent: its descriptor, original bytes and every datagram.
pub struct SentObject {
    /// The object id.
    pub object: u32,
    /// The original bytes.
    pub original: Vec<u8>,
    /// Descriptor, interleaved symbols and descriptor copies, in sending order.
    pub datagrams: Vec<Vec<u8>>,
}

/// The datagrams of every pass of an object, as `gapferry-send` produces them (through
/// `gapferry_common::send`).
pub fn send_object(
    w: &DatagramWriter,
    object: u32,
    name: &str,
    original: &[u8],
    max_symbol: u16,
    repair_percent: u32,
    passes: u8,
) -> SentObject {
    let d1 = ObjectDescriptor {
        kind: ObjectKind::File,
        name: name.into(),
        size: original.len() as u64,
        blake3: *blake3::hash(original).as_bytes(),
        block_plain_size: layout::block_plain_size(max_symbol),
        mtime: 1_700_000_000,
        pass: 1,
        passes,
    };
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
        object,
        original: original.to_vec(),
        datagrams,
    }
}

/// Bytes that compress well.
pub fn json_like(len: usize) -> Vec<u8> {
    let unit = br#"{"Event":{"uuid":"5e8f0a3c","info":"phishing","Attribute":[{"type":"ip-dst","value":"198.51.100.7"}]}},"#;
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

/// Symbols of the built-in objects: a realistic size (the smallest MTU with a tag gives
/// 472), so the memory charged per symbol is in its real proportion to the payload.
pub const TEST_SYMBOL: u16 = 512;

/// Small limits, so fuzzing reaches them, with room for the built-in objects (blocks of
/// [`TEST_SYMBOL`] x 1024 bytes).
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
// Checking events

/// Checks every event against the accepted descriptors and keeps completed objects.
#[derive(Default)]
pub struct Checker {
    started: HashMap<ObjectRef, ObjectDescriptor>,
    blocks: HashMap<ObjectRef, BTreeMap<u32, Option<Vec<u8>>>>,
    ended: HashMap<ObjectRef, &'static str>,
    /// Completed objects, with their bytes when every block decompressed.
    pub completed: HashMap<ObjectRef, Option<Vec<u8>>>,
}

impl Checker {
    /// A generous estimate of the heap the checker itself holds, so a heap bound on the
    /// assembler can leave it out.
    pub fn footprint(&self) -> usize {
        let entries = self.started.len() + self.ended.len() + self.completed.len();
        let blocks: usize = self
            .blocks
            .values()
            .flat_map(|m| m.values())
            .map(|b| b.as_ref().map_or(0, Vec::len) + 64)
            .sum();
        let completed: usize = self
            .completed
            .values()
            .map(|b| b.as_ref().map_or(0, Vec::len))
            .sum();
        entries * 512 + blocks + completed
    }

    /// Checks one event; panics (a fuzz crash) on any inconsistency.
    pub fn check(&mut self, e: Event, limits: &Limits) {
        match e {
            Event::ObjectStarted { object, descriptor } => {
                assert!(!self.ended.contains_key(&object), "{object} restarted");
                assert!(self.started.insert(object, descriptor.clone()).is_none());
                gapferry_common::name::validate(&descriptor.name).expect("safe name");
                assert!(descriptor.size <= limits.max_object_size);
                if descriptor.size > 0 {
                    assert!((1..=limits.max_block_plain).contains(&descriptor.block_plain_size));
                }
            }
            Event::BlockDecoded {
                object,
                block,
                codec,
                plain_len,
                data,
            } => {
                let d = &self.started[&object];
                assert!(!self.ended.contains_key(&object));
                assert!((block as u64) < d.block_count());
                assert_eq!(plain_len as u64, d.block_plain_len(block));
                assert!(!data.is_empty() && data.len() <= plain_len as usize);
                let plain = compress::decompress_block(codec, data, plain_len).ok();
                let prev = self.blocks.entry(object).or_default().insert(block, plain);
                assert!(prev.is_none(), "block decoded twice");
            }
            Event::ObjectComplete { object, blake3 } => {
                let d = &self.started[&object];
                assert!(d.known_blake3().is_none_or(|k| k == blake3));
                assert!(self.ended.insert(object, "complete").is_none());
                let blocks = self.blocks.remove(&object).unwrap_or_default();
                assert_eq!(blocks.len() as u64, d.block_count());
                let bytes = blocks.into_values().try_fold(Vec::new(), |mut acc, b| {
                    acc.extend_from_slice(&b?);
                    Some(acc)
                });
                self.completed.insert(object, bytes);
            }
            Event::ObjectFailed { object, reason, .. } => {
                assert!(!reason.is_empty());
                assert!(self.ended.insert(object, "failed").is_none());
                self.blocks.remove(&object);
            }
            Event::ObjectLost {
                object, through, ..
            } => {
                assert!(through >= object.object);
                // A run's ids, each ended once (a forged heartbeat's run is bounded).
                for id in (object.object..=through).take(1 << 20) {
                    let object = ObjectRef { object: id, ..object };
                    assert!(!self.started.contains_key(&object));
                    assert!(self.ended.insert(object, "lost").is_none());
                }
            }
            Event::SessionClosed { reason, .. } => assert!(!reason.is_empty()),
            // Session news, and kinds of event added later: nothing to check here.
            _ => {}
        }
    }
}
