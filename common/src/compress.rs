//! Per-block compression: zstd when it pays, stored otherwise, and bounded decompression.

use crate::wire::Codec;
use thiserror::Error;

/// zstd level used by the sender: fast, and most of the gain on JSON.
pub const DEFAULT_LEVEL: i32 = 3;
/// Bytes sampled to decide whether a large block is worth compressing.
const SAMPLE: usize = 64 * 1024;

/// Why a block could not be decompressed.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecompressError {
    /// The zstd frame is corrupt or would exceed the declared size (a bomb).
    #[error("zstd block does not decompress within its declared {0} bytes")]
    Zstd(u32),
    /// The block decompressed to a size other than the declared one.
    #[error("block decompressed to {got} bytes, {want} declared")]
    WrongSize {
        /// Bytes produced.
        got: usize,
        /// Bytes declared.
        want: u32,
    },
}

/// Compresses `plain` unless that does not make it smaller; returns the codec used and the bytes to send.
pub fn compress_block(plain: &[u8], level: i32) -> (Codec, Vec<u8>) {
    if plain.len() > 2 * SAMPLE {
        // Skip the whole block cheaply when a sample does not compress (media, archives).
        match zstd::bulk::compress(&plain[..SAMPLE], level) {
            Ok(c) if c.len() < SAMPLE - SAMPLE / 32 => {}
            _ => return (Codec::None, plain.to_vec()),
        }
    }
    match zstd::bulk::compress(plain, level) {
        Ok(c) if c.len() < plain.len() => (Codec::Zstd, c),
        _ => (Codec::None, plain.to_vec()),
    }
}

/// Restores a block's original bytes, never producing more than `plain_len` bytes.
pub fn decompress_block(
    codec: Codec,
    data: Vec<u8>,
    plain_len: u32,
) -> Result<Vec<u8>, DecompressError> {
    let out = match codec {
        Codec::None => data,
        Codec::Zstd => zstd::bulk::decompress(&data, plain_len as usize)
            .map_err(|_| DecompressError::Zstd(plain_len))?,
    };
    if out.len() != plain_len as usize {
        return Err(DecompressError::WrongSize {
            got: out.len(),
            want: plain_len,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_compresses_and_round_trips() {
        let plain = br#"{"Event":{"info":"x","Attribute":[]}}"#.repeat(200);
        let (codec, data) = compress_block(&plain, DEFAULT_LEVEL);
        assert_eq!(codec, Codec::Zstd);
        assert!(data.len() < plain.len() / 4);
        assert_eq!(
            decompress_block(codec, data, plain.len() as u32).unwrap(),
            plain
        );
    }

    #[test]
    fn random_bytes_are_stored() {
        let plain: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (codec, data) = compress_block(&plain, DEFAULT_LEVEL);
        if codec == Codec::None {
            assert_eq!(data, plain);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_declared_size() {
        let huge = vec![0u8; 10 << 20];
        let bomb = zstd::bulk::compress(&huge, 3).unwrap();
        assert!(bomb.len() < 4096);
        assert_eq!(
            decompress_block(Codec::Zstd, bomb, 1 << 20),
            Err(DecompressError::Zstd(1 << 20))
        );
        let small = zstd::bulk::compress(b"abc", 3).unwrap();
        assert!(matches!(
            decompress_block(Codec::Zstd, small, 10),
            Err(DecompressError::WrongSize { got: 3, want: 10 })
        ));
        assert!(decompress_block(Codec::Zstd, vec![1, 2, 3, 4], 10).is_err());
    }
}
