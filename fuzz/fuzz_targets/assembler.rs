//! Fuzzes the receive-side `Assembler` with small limits. The input is a program: its
//! first byte picks keyed or open mode, then each op is one of: a valid datagram of a
//! built-in object (sent as `gapferry-send` sends it), a run of them, a length-prefixed
//! raw datagram, a valid datagram with a bit flipped or a header field changed
//! (re-tagged, as a hostile key holder would), a heartbeat, an inventory, or a time
//! step with `tick`.
//!
//! After every step: `held_bytes()` and `objects_in_flight()` within the limits, the live
//! heap within a bound derived from `max_held_bytes` (plus the event queue's capacity
//! and the checker's own records), every event consistent with an
//! accepted descriptor; when no op could forge content, completed objects equal what was
//! sent; after `finish`, nothing is held.
#![no_main]

use gapferry_common::control::{Inventory, InventoryEntry};
use gapferry_common::emit::DatagramWriter;
use gapferry_common::wire::{self, Codec, Datagram};
use gapferry_common::{Assembler, Event, Heartbeat, KeyRing, ObjectKind, ObjectRef};
use gapferry_fuzz::*;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use std::time::Duration;

#[global_allocator]
static ALLOC: Counting = Counting;

struct Objects {
    open: Vec<SentObject>,
    keyed: Vec<SentObject>,
}

fn objects() -> &'static Objects {
    static O: OnceLock<Objects> = OnceLock::new();
    O.get_or_init(|| {
        let make = |w: &DatagramWriter| {
            let mut mixed = json_like(3000);
            mixed.extend(noise(3000, 5));
            vec![
                send_object(w, 0, "empty", &[], TEST_SYMBOL, 10, 1),
                send_object(
                    w,
                    1,
                    "misp/event.json",
                    &json_like(1500),
                    TEST_SYMBOL,
                    10,
                    1,
                ),
                send_object(w, 2, "stix/b.json", &mixed, TEST_SYMBOL, 20, 2),
                // Two blocks: 1024 symbols and a short one.
                send_object(
                    w,
                    3,
                    "files/blob.bin",
                    &noise(530_000, 7),
                    TEST_SYMBOL,
                    5,
                    1,
                ),
            ]
        };
        Objects {
            open: make(&DatagramWriter::new(SESSION, None)),
            keyed: make(&DatagramWriter::new(SESSION, Some(key()))),
        }
    })
}

/// Heap the assembler may hold beyond `max_held_bytes` for its own tables.
const SLACK: isize = 512 << 10;

fuzz_target!(|data: &[u8]| {
    let objs = objects();
    let mut r = Reader::new(data);
    let keyed = r.u8() & 1 == 1;
    let sent = if keyed { &objs.keyed } else { &objs.open };
    let all: Vec<&Vec<u8>> = sent.iter().flat_map(|o| &o.datagrams).collect();
    let k = key();
    let w = DatagramWriter::new(SESSION, keyed.then(|| k.clone()));
    let ring = if keyed {
        KeyRing::new(vec![k.clone()])
    } else {
        KeyRing::default()
    };
    let limits = small_limits();
    let heap_bound = 2 * limits.max_held_bytes as isize + SLACK;

    let base = live_heap();
    let mut a = Assembler::new(limits.clone(), ring.clone());
    let mut checker = Checker::default();
    let mut now = Duration::from_secs(1);
    let mut forged = false;
    let mut steps = 0;
    let mut max_events = 0usize;
    while !r.is_empty() && steps < 8_000 {
        now += Duration::from_millis(1);
        let op = r.u8();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        match op % 8 {
            0 | 1 => batch.push(all[r.u16() as usize % all.len()].clone()),
            2 => {
                let start = r.u16() as usize % all.len();
                let n = r.u8() as usize * 8;
                batch.extend(
                    all[start..(start + n).min(all.len())]
                        .iter()
                        .map(|d| d.to_vec()),
                );
            }
            3 => {
                let len = r.u16() as usize % 2048;
                let raw = r.bytes(len).to_vec();
                forged |= !keyed && raw.starts_with(b"GF");
                batch.push(raw);
            }
            4 => {
                let mut d = all[r.u16() as usize % all.len()].clone();
                let bit = r.u16() as usize % (d.len() * 8);
                d[bit / 8] ^= 1 << (bit % 8);
                forged |= !keyed;
                batch.push(d);
            }
            5 => {
                let d = all[r.u16() as usize % all.len()];
                let field = r.u8();
                let v = r.u32();
                if let Ok(Datagram::Data { header, symbol }) = wire::parse(d, &ring) {
                    let mut h = header;
                    let mut s = symbol.to_vec();
                    match field % 8 {
                        0 => h.block_len = v,
                        1 => h.plain_len = v,
                        2 => h.esi = v,
                        3 => h.block = v,
                        4 => h.object = v % 16,
                        5 => h.codec = if v & 1 == 0 { Codec::None } else { Codec::Zstd },
                        6 => s.resize(v as usize % 2048 + 1, v as u8),
                        _ => h.session ^= 1 + v as u64 % 3,
                    }
                    let mut out = Vec::new();
                    wire::encode_data(&mut out, &h, &s, keyed.then_some(&k));
                    forged = true;
                    batch.push(out);
                }
            }
            6 if r.u8() & 1 == 0 => {
                let n = r.u8() % 8;
                let entries = (0..n)
                    .map(|_| {
                        let object = r.u8() as u32 % 16;
                        let len = r.u8() as usize % 64;
                        let name = String::from_utf8_lossy(r.bytes(len)).into_owned();
                        InventoryEntry {
                            object,
                            kind: ObjectKind::File,
                            name,
                            size: r.u32() as u64,
                        }
                    })
                    .collect();
                let mut out = Vec::new();
                w.inventory(&mut out, &Inventory::fitting(entries));
                batch.push(out);
            }
            6 => {
                let next = r.u8() as u32 % 8;
                let mut out = Vec::new();
                w.heartbeat(
                    &mut out,
                    &Heartbeat {
                        seq: steps as u64,
                        next_object: next,
                        done_below: next,
                        ending: r.u8() & 1 == 1,
                        ..Heartbeat::default()
                    },
                );
                batch.push(out);
            }
            _ => {
                let ms = match r.u8() % 4 {
                    0 => r.u8() as u64,
                    1 => r.u16() as u64,
                    2 => 2_500,
                    _ => 31_000,
                };
                now += Duration::from_millis(ms);
                a.tick(now);
            }
        }
        for d in &batch {
            let _ = a.handle(now, d);
            steps += 1;
            assert!(a.held_bytes() <= limits.max_held_bytes);
            assert!(a.objects_in_flight() <= limits.max_objects_in_flight);
        }
        let mut events = 0;
        while let Some(e) = a.poll_event() {
            checker.check(e, &limits);
            events += 1;
        }
        // The event queue keeps its capacity (a lying heartbeat may resolve thousands of
        // ids in one tick); the checker's own records are not the assembler's.
        max_events = max_events.max(events);
        let allowance = (2 * max_events * size_of::<Event>() + checker.footprint()) as isize;
        let held = live_heap() - base;
        assert!(
            held <= heap_bound + allowance,
            "assembler holds {held} heap bytes, {} counted (limit {})",
            a.held_bytes(),
            limits.max_held_bytes
        );
    }
    a.finish("fuzz input over");
    while let Some(e) = a.poll_event() {
        checker.check(e, &limits);
    }
    assert_eq!(a.objects_in_flight(), 0);
    assert_eq!(a.held_bytes(), 0);
    if !forged {
        for o in sent {
            let id = ObjectRef {
                session: SESSION,
                object: o.object,
            };
            if let Some(bytes) = checker.completed.get(&id) {
                let bytes = bytes.as_ref().expect("valid blocks decompress");
                assert!(
                    bytes == &o.original,
                    "object {} reassembled wrong",
                    o.object
                );
            }
        }
    }
});
