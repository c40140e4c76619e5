//! Hostile-input cases of the protocol crate, one by one: forged, replayed, truncated and
//! oversized datagrams, descriptors that lie about sizes, zstd bombs, and the memory a
//! sender can make the assembler hold. Each states what the receiver must do instead of
//! panicking or allocating without bound.

mod support;

use gapferry_common::compress::{self, DecompressError};
use gapferry_common::control::{self, Inventory, ObjectDescriptor, MAX_CONTROL_BODY};
use gapferry_common::emit::{DatagramWriter, OutgoingBlock};
use gapferry_common::fec::BlockDecoder;
use gapferry_common::wire::{self, Codec, DataHeader, Reject};
use gapferry_common::{Assembler, Event, Key, KeyRing, Limits, ObjectKind, ObjectRef};
use std::time::Duration;
use support::*;

const SESSION: u64 = 0xD10D_E000_0000_0001;
const T: Duration = Duration::from_millis(10);

fn events(a: &mut Assembler) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn descriptor(size: u64, block_plain_size: u32) -> ObjectDescriptor {
    ObjectDescriptor {
        kind: ObjectKind::File,
        name: "liar.bin".into(),
        size,
        blake3: [1; 32],
        block_plain_size,
        mtime: 0,
        pass: 1,
        passes: 1,
    }
}

fn descriptor_datagram(w: &DatagramWriter, object: u32, d: &ObjectDescriptor) -> Vec<u8> {
    let mut out = Vec::new();
    w.descriptor(&mut out, object, d).unwrap();
    out
}

/// The failure reason the assembler gives for `d`, checking that it neither panics nor
/// starts or holds the object.
fn failure_reason(limits: Limits, d: &ObjectDescriptor) -> String {
    let w = DatagramWriter::new(SESSION, None);
    let mut a = Assembler::new(limits, KeyRing::default());
    a.handle(T, &descriptor_datagram(&w, 7, d)).unwrap();
    let mut reason = None;
    for e in events(&mut a) {
        match e {
            Event::ObjectFailed {
                object,
                reason: r,
                descriptor,
                ..
            } => {
                assert_eq!(object.object, 7);
                assert_eq!(descriptor.as_ref(), Some(d));
                reason = Some(r);
            }
            Event::ObjectStarted { .. } | Event::BlockDecoded { .. } => {
                panic!("a lying descriptor was accepted: {e:?}")
            }
            _ => {}
        }
    }
    assert_eq!(a.objects_in_flight(), 0);
    assert_eq!(a.held_bytes(), 0);
    // Its data is now redundant, not a new object in flight.
    let mut buf = Vec::new();
    let h = DataHeader {
        session: SESSION,
        object: 7,
        block: 0,
        esi: 0,
        block_len: 64,
        plain_len: 64,
        codec: Codec::None,
    };
    wire::encode_data(&mut buf, &h, &[1; 64], None);
    a.handle(T * 2, &buf).unwrap();
    assert_eq!(a.objects_in_flight(), 0);
    reason.expect("an ObjectFailed event")
}

#[test]
fn descriptors_lying_about_sizes_fail_the_object_with_a_reason() {
    let small = small_limits();
    let r = failure_reason(small.clone(), &descriptor(small.max_object_size + 1, 4096));
    assert!(r.contains("exceeds the receiver's limit"), "{r}");
    let r = failure_reason(small.clone(), &descriptor(u64::MAX, 4096));
    assert!(r.contains("exceeds the receiver's limit"), "{r}");
    let r = failure_reason(small.clone(), &descriptor(1000, u32::MAX));
    assert!(r.contains("block size"), "{r}");
    let r = failure_reason(small.clone(), &descriptor(1000, small.max_block_plain + 1));
    assert!(r.contains("block size"), "{r}");
    let r = failure_reason(small.clone(), &descriptor(1000, 0));
    assert!(r.contains("block size"), "{r}");
    // More than 2^32 blocks: only a receiver allowing huge objects gets this far.
    let huge = Limits {
        max_object_size: u64::MAX,
        ..Limits::default()
    };
    let r = failure_reason(huge.clone(), &descriptor(u64::MAX, 1));
    assert!(r.contains("2^32 blocks"), "{r}");
    let r = failure_reason(huge, &descriptor((u32::MAX as u64 + 1) * 2, 2));
    assert!(r.contains("2^32 blocks"), "{r}");
    let r = failure_reason(Limits::default(), &descriptor(64 << 30, 1));
    assert!(r.contains("2^32 blocks"), "{r}");
}

#[test]
fn unsafe_names_fail_the_object() {
    for name in [
        "../etc/passwd",
        "/etc/passwd",
        "a/../../b",
        "a\0b",
        "a\\..\\b",
        "",
    ] {
        let d = ObjectDescriptor {
            name: name.into(),
            ..descriptor(10, 4096)
        };
        let r = failure_reason(small_limits(), &d);
        assert!(r.contains("unsafe name"), "{name:?}: {r}");
    }
}

/// A small object's data datagrams and its descriptor, as the sender makes them.
fn small_object(w: &DatagramWriter, object: u32) -> SentObject {
    send_object(w, object, "event.json", &noise(3000, 9), TEST_SYMBOL, 10, 1)
}

#[test]
fn a_descriptor_disagreeing_with_decoded_blocks_fails_the_object() {
    let w = DatagramWriter::new(SESSION, None);
    let sent = small_object(&w, 3);
    let mut a = Assembler::new(small_limits(), KeyRing::default());
    // Data first: the block decodes before any descriptor arrives and is held early.
    for d in sent.datagrams.iter().filter(|d| d[3] == 1) {
        let _ = a.handle(T, d);
    }
    assert!(a.held_bytes() > 0);
    let lie = ObjectDescriptor {
        size: 100,
        block_plain_size: 100,
        ..sent.descriptor.clone()
    };
    a.handle(T, &descriptor_datagram(&w, 3, &lie)).unwrap();
    let failed = events(&mut a).into_iter().any(|e| {
        matches!(e, Event::ObjectFailed { object, ref reason, .. }
            if object.object == 3 && reason.contains("disagrees"))
    });
    assert!(failed);
    assert_eq!(a.held_bytes(), 0);
    assert_eq!(a.objects_in_flight(), 0);
}

#[test]
fn data_disagreeing_with_the_descriptor_or_its_copies_is_refused() {
    let w = DatagramWriter::new(SESSION, None);
    let sent = small_object(&w, 0);
    let mut a = Assembler::new(small_limits(), KeyRing::default());
    a.handle(T, &sent.datagrams[0]).unwrap();
    // A second copy that changes the size.
    let other = ObjectDescriptor {
        size: sent.descriptor.size + 1,
        ..sent.descriptor.clone()
    };
    assert!(matches!(
        a.handle(T, &descriptor_datagram(&w, 0, &other)),
        Err(Reject::Refused(_))
    ));
    // A symbol of a block the descriptor does not have, or with another plain length.
    let mut buf = Vec::new();
    let h = DataHeader {
        session: SESSION,
        object: 0,
        block: 1,
        esi: 0,
        block_len: 3000,
        plain_len: 3000,
        codec: Codec::None,
    };
    wire::encode_data(&mut buf, &h, &[0; 512], None);
    assert!(matches!(a.handle(T, &buf), Err(Reject::Refused(_))));
    let h = DataHeader {
        block: 0,
        block_len: 2000,
        plain_len: 2000,
        ..h
    };
    wire::encode_data(&mut buf, &h, &[0; 512], None);
    assert!(matches!(a.handle(T, &buf), Err(Reject::Refused(_))));
    // The real datagrams still complete it.
    for d in &sent.datagrams {
        let _ = a.handle(T, d);
    }
    assert!(events(&mut a)
        .iter()
        .any(|e| matches!(e, Event::ObjectComplete { .. })));
}

#[test]
fn oversized_datagrams_and_blocks_are_refused() {
    let mut a = Assembler::new(small_limits(), KeyRing::default());
    let mut big = vec![0u8; wire::MAX_DATAGRAM + 1];
    big[..4].copy_from_slice(&[b'G', b'F', wire::VERSION, 1]);
    assert_eq!(a.handle(T, &big), Err(Reject::TooLong));
    let limits = small_limits();
    let mut buf = Vec::new();
    let over = DataHeader {
        session: SESSION,
        object: 0,
        block: 0,
        esi: 0,
        block_len: limits.max_block_plain + 1,
        plain_len: limits.max_block_plain + 1,
        codec: Codec::None,
    };
    wire::encode_data(&mut buf, &over, &[0; 1408], None);
    assert!(matches!(a.handle(T, &buf), Err(Reject::Refused(_))));
    // Compressed bytes larger than the plain bytes they claim.
    let inverted = DataHeader {
        block_len: 5000,
        plain_len: 4000,
        codec: Codec::Zstd,
        ..over
    };
    wire::encode_data(&mut buf, &inverted, &[0; 1408], None);
    assert!(matches!(a.handle(T, &buf), Err(Reject::Refused(_))));
    // A symbol far larger than its block needs.
    let fat = DataHeader {
        block_len: 100,
        plain_len: 100,
        codec: Codec::None,
        ..over
    };
    wire::encode_data(&mut buf, &fat, &[0; 60_000], None);
    assert!(matches!(a.handle(T, &buf), Err(Reject::Refused(_))));
    assert_eq!(a.held_bytes(), 0);
}

#[test]
fn forged_truncated_and_untagged_datagrams_are_ignored_under_a_key() {
    let real = key();
    let sent = small_object(&DatagramWriter::new(SESSION, Some(real.clone())), 0);
    let forged = small_object(
        &DatagramWriter::new(SESSION, Some(Key::from_bytes([0xEE; 32]))),
        0,
    );
    let untagged = small_object(&DatagramWriter::new(SESSION, None), 0);
    let mut a = Assembler::new(small_limits(), KeyRing::new(vec![real]));
    for d in &forged.datagrams {
        assert_eq!(a.handle(T, d), Err(Reject::BadTag));
    }
    for d in &untagged.datagrams {
        assert_eq!(a.handle(T, d), Err(Reject::MissingTag));
    }
    for d in &sent.datagrams {
        for n in 0..d.len() {
            assert!(
                a.handle(T, &d[..n]).is_err(),
                "a {n}-byte prefix was accepted"
            );
        }
    }
    assert!(events(&mut a).is_empty(), "rejected datagrams made events");
    assert_eq!(a.stats().accepted, 0);
    for d in &sent.datagrams {
        let _ = a.handle(T, d);
    }
    let mut checker = Checker::default();
    let limits = small_limits();
    checker.drain(&mut a, &limits);
    let o = ObjectRef {
        session: SESSION,
        object: 0,
    };
    assert_eq!(checker.completed[&o].as_deref(), Some(&sent.original[..]));
}

#[test]
fn replayed_datagrams_are_ignored() {
    let w = DatagramWriter::new(SESSION, Some(key()));
    let sent = small_object(&w, 0);
    let limits = small_limits();
    let mut a = Assembler::new(limits.clone(), KeyRing::new(vec![key()]));
    let mut checker = Checker::default();
    for round in 0..3 {
        for d in &sent.datagrams {
            a.handle(T, d).unwrap();
        }
        checker.drain(&mut a, &limits);
        assert_eq!(checker.completed.len(), 1, "round {round}");
    }
    assert!(a.stats().redundant > 0);
    // After the session ended and closed, its datagrams open nothing again.
    a.handle(T, &heartbeat(&w, 1, 1, true)).unwrap();
    a.tick(T + limits.grace);
    checker.drain(&mut a, &limits);
    assert!(checker.closed.contains(&SESSION));
    for d in &sent.datagrams {
        a.handle(T * 1000, d).unwrap();
    }
    assert!(events(&mut a).is_empty());
    assert_eq!(a.objects_in_flight(), 0);
}

/// The top of the 32-bit id range: 2^32-1 is reserved (a watermark past every id must
/// fit in 32 bits, or it wraps to 0 and every object ends again), and the ids just below
/// it end once, even when their session goes silent, closes, comes back and repeats them.
#[test]
fn the_last_object_ids_end_once_and_the_reserved_one_is_refused() {
    let w = DatagramWriter::new(SESSION, None);
    for d in &small_object(&w, u32::MAX).datagrams {
        assert!(matches!(
            wire::parse(d, &KeyRing::default()),
            Err(Reject::Malformed(_))
        ));
    }
    let last = small_object(&w, wire::MAX_OBJECT_ID);
    let unsafe_name = ObjectDescriptor {
        name: "../x".into(),
        ..descriptor(10, 4096)
    };
    let failing = descriptor_datagram(&w, wire::MAX_OBJECT_ID - 1, &unsafe_name);
    let limits = small_limits();
    let mut a = Assembler::new(limits.clone(), KeyRing::default());
    let mut checker = Checker::default();
    let mut now = T;
    for round in 0..3 {
        a.handle(now, &failing).unwrap();
        for d in &last.datagrams {
            a.handle(now, d).unwrap();
        }
        // The checker panics on an object that ends twice.
        checker.drain(&mut a, &limits);
        now += limits.session_timeout * 2;
        a.tick(now);
        checker.drain(&mut a, &limits);
        assert!(checker.closed.contains(&SESSION), "round {round}");
    }
    assert_eq!(checker.completed.len(), 1);
    assert_eq!(checker.failed.len(), 1);
}

/// A zstd frame of `len` zero bytes, with or without its size in the frame header.
fn bomb(len: usize, declare_size: bool) -> Vec<u8> {
    if declare_size {
        return zstd::bulk::compress(&vec![0u8; len], 19).unwrap();
    }
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 19).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..len / chunk.len() {
        std::io::Write::write_all(&mut enc, &chunk).unwrap();
    }
    enc.finish().unwrap()
}

#[test]
fn a_zstd_bomb_block_decodes_but_does_not_decompress() {
    const PLAIN: u32 = 4096;
    for declare_size in [true, false] {
        let frame = bomb(64 << 20, declare_size);
        assert!(
            frame.len() < PLAIN as usize,
            "bomb of {} bytes",
            frame.len()
        );
        // A valid RaptorQ block carrying the bomb, and an honest-looking descriptor.
        let w = DatagramWriter::new(SESSION, None);
        let d = ObjectDescriptor {
            size: PLAIN as u64,
            block_plain_size: PLAIN,
            ..descriptor(0, 0)
        };
        let t = TEST_SYMBOL;
        let mut block = OutgoingBlock::new(SESSION, 0, 0, Codec::Zstd, PLAIN, frame, t, 10, 1);
        let mut a = Assembler::new(small_limits(), KeyRing::default());
        a.handle(T, &descriptor_datagram(&w, 0, &d)).unwrap();
        let mut out = Vec::new();
        while block.next_datagram(&w, &mut out) {
            a.handle(T, &out).unwrap();
        }
        let mut decoded = None;
        let mut complete = false;
        for e in events(&mut a) {
            match e {
                Event::BlockDecoded {
                    codec,
                    plain_len,
                    data,
                    ..
                } => decoded = Some((codec, plain_len, data)),
                Event::ObjectComplete { .. } => complete = true,
                _ => {}
            }
        }
        assert!(complete);
        let (codec, plain_len, data) = decoded.expect("the bomb's block decodes");
        assert_eq!((codec, plain_len), (Codec::Zstd, PLAIN));
        let (r, alloc) = measure(|| compress::decompress_block(codec, data, plain_len));
        assert_eq!(r, Err(DecompressError::Zstd(PLAIN)));
        assert!(
            alloc.largest < 2 << 20,
            "decompressing a bomb allocated {} bytes at once",
            alloc.largest
        );
    }
}

// ---------------------------------------------------------------------------------------
// Regressions: bugs these tests found in common/src (fixed in ea2f692).

/// `BlockDecoder::new` truncated `ceil(block_len / symbol_size)` to u32, so a block
/// length above 2^32 passed the symbol-count check and reached `raptorq`, which asserts
/// `transfer_length <= 942574504275` (a panic), or decoded a different, tiny block.
/// The wire carries 32-bit lengths, so the assembler could not reach it; the wrapper's
/// contract ("never lets raptorq panic") is what broke. Fixed by refusing such lengths.
#[test]
fn block_decoder_refuses_lengths_beyond_32_bits() {
    assert!(BlockDecoder::new((1 << 32) + 5, 1, 4096).is_err());
    assert!(BlockDecoder::new(1 << 40, 1, 4096).is_err());
}

/// Datagrams of `symbol_len`-byte symbols for blocks of `block_len` bytes: `per_block`
/// distinct symbols for each of `blocks` blocks of object 0.
fn tiny_symbols(block_len: u32, blocks: u32, per_block: u32) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for block in 0..blocks {
        for esi in 0..per_block {
            let h = DataHeader {
                session: SESSION,
                object: 0,
                block,
                esi,
                block_len,
                plain_len: block_len,
                codec: Codec::None,
            };
            let mut buf = Vec::new();
            wire::encode_data(&mut buf, &h, &[0xA5], None);
            all.push(buf);
        }
    }
    all
}

/// The heap a sender can make the assembler hold must stay near `max_held_bytes`.
///
/// It did not: `held_bytes` counted only symbol bytes (`received * symbol_size`), but a
/// block decoder also holds one 24-byte slot per source symbol from its first datagram
/// (`raptorq`'s `vec![None; k]`), and each stored symbol costs its own allocation plus
/// hash-set and packet bookkeeping. With 1-byte symbols for blocks of k = 8192, each
/// 41-byte datagram opened a new block and allocated ~196 KiB while 1 byte was counted.
/// Fixed by charging the decoder's slots and per-symbol bookkeeping.
#[test]
fn decoder_memory_is_charged_to_the_held_limit() {
    let limits = Limits {
        max_held_bytes: 256 << 10,
        max_block_symbols: 8192,
        max_block_plain: 64 << 10,
        ..small_limits()
    };
    let bound = 2 * limits.max_held_bytes as isize + (256 << 10);
    // (a) Many blocks of k = 8192 one-byte symbols, one symbol each.
    // (b) Blocks of k = 1024, each given 1023 one-byte symbols (never enough to decode).
    for (what, datagrams) in [
        ("one symbol per wide block", tiny_symbols(8192, 200, 1)),
        ("many tiny symbols", tiny_symbols(1024, 40, 1023)),
    ] {
        let mut a = Assembler::new(limits.clone(), KeyRing::default());
        let (_, alloc) = measure(|| {
            for (i, d) in datagrams.iter().enumerate() {
                let _ = a.handle(T, d);
                check_bounds(&a, &limits);
                if i % 64 == 0 {
                    while a.poll_event().is_some() {}
                }
            }
            while a.poll_event().is_some() {}
        });
        assert!(
            alloc.retained <= bound,
            "{what}: the assembler holds {} heap bytes for {} counted (limit {})",
            alloc.retained,
            a.held_bytes(),
            limits.max_held_bytes
        );
    }
}

/// An inventory body whose entry count lies must not make the decoder allocate for it.
///
/// It did: serde's `Vec` preallocates `min(declared length, 1 MiB / entry size)` before
/// reading any entry, and bincode's byte limit does not cover that: an 8-byte body
/// claiming 2^40 entries cost a 1 MiB allocation. Fixed by a cautious visitor.
#[test]
fn inventory_decode_does_not_trust_the_declared_length() {
    for claimed in [40u64, 1 << 20, 1 << 40, u64::MAX] {
        let mut body = claimed.to_be_bytes().to_vec();
        body.resize(64, 0);
        let (r, alloc) = measure(|| control::decode::<Inventory>(&body).is_ok());
        assert!(!r);
        assert!(
            alloc.largest <= 4 * MAX_CONTROL_BODY,
            "claiming {claimed} entries allocated {} bytes at once",
            alloc.largest
        );
    }
}
