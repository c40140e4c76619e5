//! Fuzzes `compress::decompress_block`: arbitrary frames and declared sizes never panic
//! and never produce anything but exactly the declared size (libFuzzer's -malloc_limit_mb
//! catches an allocation sized by the frame's claims). Half the inputs are real zstd
//! frames of fuzz data with a few bytes overwritten, so the decoder gets past the header.
#![no_main]

use gapferry_common::compress;
use gapferry_common::wire::Codec;
use gapferry_fuzz::Reader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let codec = if r.u8() & 1 == 0 {
        Codec::Zstd
    } else {
        Codec::None
    };
    // Declared sizes up to 1 MiB: the assembler bounds them by max_block_plain.
    let plain_len = r.u32() % (1 << 20) + 1;
    let frame = if r.u8() & 1 == 0 {
        r.rest().to_vec()
    } else {
        let edits = r.bytes(6).to_vec();
        let (_, mut frame) = compress::compress_block(r.rest(), 1);
        for e in edits.chunks(3) {
            if let [at, at2, v] = *e {
                if !frame.is_empty() {
                    let i = (at as usize * 256 + at2 as usize) % frame.len();
                    frame[i] = v;
                }
            }
        }
        frame
    };
    let len = frame.len();
    if let Ok(out) = compress::decompress_block(codec, frame, plain_len) {
        assert_eq!(out.len(), plain_len as usize);
        if codec == Codec::None {
            assert_eq!(len, plain_len as usize);
        }
    }
});
