//! Recycled block buffers: a decoder fills a spare buffer (dirty from its last block)
//! instead of a fresh one, the bytes it decodes are the block's whatever the buffer held,
//! and the assembler keeps a bounded number of spares.

mod support;

use gapferry_common::assembler::{SPARE_BLOCKS, SPARE_BYTES};
use gapferry_common::compress::decompress_block;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::fec::{BlockDecoder, BlockEncoder, SPARE_SLACK};
use gapferry_common::{Assembler, Event, KeyRing, Limits};
use std::time::Duration;
use support::*;

#[test]
fn a_decoder_adopts_only_a_buffer_that_fits_its_block() {
    let block = noise(10_000, 1);
    let enc = BlockEncoder::new(block.clone(), 100);
    let (k, t) = (enc.source_symbols(), enc.symbol_size());
    let whole = k as usize * t as usize;
    let new = || BlockDecoder::new(block.len(), t, 4096).unwrap();
    // Too small, or so big that a small block would hold a big block's memory: refused.
    for cap in [whole - 1, whole + whole / SPARE_SLACK + 1, 0] {
        let back = new().adopt_buffer(Vec::with_capacity(cap)).unwrap_err();
        assert!(back.capacity() >= cap, "the refused buffer comes back");
    }
    let mut dec = new();
    let before = dec.held_bytes();
    dec.adopt_buffer(Vec::with_capacity(whole)).unwrap();
    assert!(
        dec.held_bytes() >= before + whole,
        "the adopted buffer is accounted"
    );
    // A decoder that has a buffer takes no second one.
    assert!(dec.adopt_buffer(Vec::with_capacity(whole)).is_err());
}

#[test]
fn a_dirty_recycled_buffer_decodes_the_block_whatever_the_order() {
    let block = noise(10_000, 2);
    let enc = BlockEncoder::new(block.clone(), 100);
    let (k, t) = (enc.source_symbols(), enc.symbol_size());
    let dirty = vec![0xAA; k as usize * t as usize];
    let ptr = dirty.as_ptr();
    let mut dec = BlockDecoder::new(block.len(), t, 4096).unwrap();
    dec.adopt_buffer(dirty).unwrap();
    // Last symbol first, then the rest backwards, with duplicates.
    let mut out = None;
    for esi in (0..k).rev().flat_map(|e| [e, e]) {
        if let Some(d) = dec.add(esi, enc.source_symbol(esi)).unwrap() {
            out = Some(d);
            break;
        }
    }
    let out = out.expect("every source symbol arrived");
    assert!(out == block, "decoded bytes differ from the block");
    assert_eq!(
        out.as_ptr(),
        ptr,
        "the recycled buffer was filled, not a fresh one"
    );
}

#[test]
fn the_assembler_keeps_a_bounded_number_of_spares() {
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    for _ in 0..3 * SPARE_BLOCKS {
        a.recycle_block(vec![0; 1024]);
    }
    assert_eq!(a.spare_blocks(), SPARE_BLOCKS);
    let mut b = Assembler::new(Limits::default(), KeyRing::default());
    b.recycle_block(Vec::new());
    assert_eq!(b.spare_blocks(), 0, "an empty buffer is not kept");
}

#[test]
fn objects_decoded_into_recycled_buffers_are_the_originals() {
    let w = DatagramWriter::new(0x5A5A, None);
    let block = gapferry_common::layout::block_plain_size(64) as usize;
    let limits = Limits::default();
    let mut a = Assembler::new(limits.clone(), KeyRing::default());
    let mut seen = std::collections::HashSet::new();
    let mut reused = 0;
    // Objects of two full blocks one after the other: the blocks of each object after
    // the first fill the buffers of the object before.
    for object in 0..4u32 {
        let original = noise(2 * block, u64::from(object));
        let sent = send_object(&w, object, "spare.bin", &original, 64, 20, 1);
        reused += deliver(&mut a, &limits, &sent, &mut seen);
    }
    assert!(
        reused >= 4,
        "later objects reused the buffers handed back ({reused})"
    );
    assert_eq!(a.held_bytes(), 0);
}

/// Feeds one object's datagrams, checks its bytes, hands every block's buffer back dirty;
/// returns how many blocks came in a buffer seen before.
fn deliver(
    a: &mut Assembler,
    limits: &Limits,
    sent: &SentObject,
    seen: &mut std::collections::HashSet<usize>,
) -> usize {
    let original = &sent.original;
    let mut bytes = vec![0u8; original.len()];
    let (mut complete, mut reused) = (false, 0);
    for d in &sent.datagrams {
        feed(a, limits, Duration::from_millis(1), d);
        while let Some(e) = a.poll_event() {
            match e {
                Event::BlockDecoded {
                    block,
                    codec,
                    plain_len,
                    data,
                    ..
                } => {
                    reused += usize::from(!seen.insert(data.as_ptr() as usize));
                    let plain = decompress_block(codec, data, plain_len).unwrap();
                    let at = block as usize * sent.descriptor.block_plain_size as usize;
                    bytes[at..at + plain.len()].copy_from_slice(&plain);
                    // Hand the buffer back dirty, as the disk writer does after its pwrite.
                    let mut plain = plain;
                    plain.fill(0xEE);
                    a.recycle_block(plain);
                }
                Event::ObjectComplete { object, .. } => complete = object.object == sent.object,
                Event::ObjectFailed { reason, .. } => panic!("failed: {reason}"),
                _ => {}
            }
        }
    }
    assert!(complete, "object {} completed", sent.object);
    assert!(
        &bytes == original,
        "delivered bytes differ from the original"
    );
    reused
}

#[test]
fn a_block_solved_from_a_dirty_recycled_buffer_is_the_block() {
    let block = noise(20_000, 4);
    let mut enc = BlockEncoder::new(block.clone(), 100);
    let (k, t) = (enc.source_symbols(), enc.symbol_size());
    let mut dec = BlockDecoder::new(block.len(), t, 4096).unwrap();
    dec.adopt_buffer(vec![0x55; k as usize * t as usize])
        .unwrap();
    // Every fifth source symbol lost: its slot keeps the old bytes, and RaptorQ solves
    // from the symbols present and the repair symbols only.
    let repairs = enc.repair_symbols(k, k / 4);
    let sources = (0..k)
        .filter(|e| e % 5 != 2)
        .map(|e| (e, enc.source_symbol(e).to_vec()));
    let symbols = sources.chain((0..).map(|i| k + i).zip(repairs));
    let mut out = None;
    for (esi, s) in symbols {
        if let Some(d) = dec.add(esi, &s).unwrap() {
            out = Some(d);
            break;
        }
    }
    assert!(
        out.expect("solved") == block,
        "solved bytes differ from the block"
    );
}

#[test]
fn the_assembler_keeps_a_bounded_number_of_spare_bytes() {
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    // Big blocks (a sender's large --mtu or block size): the bytes bound them, not the count.
    let big = SPARE_BYTES / 2 + 1;
    for _ in 0..3 {
        a.recycle_block(Vec::with_capacity(big));
    }
    assert_eq!(a.spare_blocks(), 1);
    a.recycle_block(Vec::with_capacity(SPARE_BYTES / 4));
    assert_eq!(a.spare_blocks(), 2, "a smaller one still fits");
}
