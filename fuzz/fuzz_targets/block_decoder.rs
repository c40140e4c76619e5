//! Fuzzes the RaptorQ block decoder wrapper, which must never let the `raptorq` crate
//! panic. Mode 0: arbitrary block parameters and symbols. Mode 1: a real block encoded
//! from fuzz data, a fuzz-chosen subset of its symbols (some corrupted or resized):
//! when nothing was corrupted, whatever decodes equals the block.
#![no_main]

use gapferry_common::fec::{BlockDecoder, BlockEncoder};
use gapferry_fuzz::Reader;
use libfuzzer_sys::fuzz_target;

fn raw(r: &mut Reader<'_>) {
    let mode = r.u8();
    // Small lengths, or lengths beyond 32 bits that are small modulo 2^32.
    let block_len = if mode & 1 == 0 {
        r.u16() as usize
    } else {
        ((r.u8() as u64) << 32 | r.u16() as u64) as usize
    };
    let symbol_size = r.u16();
    let max_symbols = r.u16() as u32;
    let Ok(mut dec) = BlockDecoder::new(block_len, symbol_size, max_symbols) else {
        return;
    };
    assert!(dec.source_symbols() <= max_symbols);
    while !r.is_empty() {
        let esi = r.u32() >> 7; // mostly within 2^24, sometimes not
        let len = if r.u8() & 1 == 0 {
            symbol_size as usize
        } else {
            r.u16() as usize % 4096
        };
        let symbol = r.bytes(len);
        if let Ok(Some(out)) = dec.add(esi, symbol) {
            assert_eq!(out.len(), block_len);
            return;
        }
    }
}

fn encoded(r: &mut Reader<'_>) {
    // Realistic symbol sizes (472 bytes, the smallest MTU's, and up).
    let max_symbol = 472 + (r.u8() as u16 % 128) * 8;
    let len = r.u16() as usize + 1;
    let picks = r.u16() as usize % 2048;
    let choices = r.bytes(picks);
    let mut data = r.rest().to_vec();
    data.resize(len, 0x5A);
    let mut enc = BlockEncoder::new(data.clone(), max_symbol);
    let k = enc.source_symbols();
    let repair = enc.repair_symbols(k, 64);
    let mut dec = BlockDecoder::new(len, enc.symbol_size(), 4096).expect("valid block");
    let mut corrupted = false;
    for c in choices.chunks(2) {
        let esi = c[0] as u32 % (k + 64);
        let mut symbol = if esi < k {
            enc.source_symbol(esi).to_vec()
        } else {
            repair[(esi - k) as usize].clone()
        };
        match c.get(1).copied().unwrap_or(0) {
            0 => {
                symbol[0] ^= 1;
                corrupted = true;
            }
            1 => symbol.truncate(symbol.len() - 1),
            2 => symbol.push(0),
            _ => {}
        }
        match dec.add(esi, &symbol) {
            Ok(Some(out)) => {
                assert_eq!(out.len(), len);
                if !corrupted {
                    assert!(out == data, "decoded block differs from the encoded one");
                }
                return;
            }
            Ok(None) => {}
            Err(_) => assert_ne!(symbol.len(), enc.symbol_size() as usize),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    if r.u8() & 1 == 0 {
        raw(&mut r)
    } else {
        encoded(&mut r)
    }
});
