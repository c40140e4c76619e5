//! What the receiver's integration tests share: deterministic incompressible bytes.

/// `len` bytes of xorshift noise from `seed`: the same bytes for the same seed, and
/// incompressible, so compression never hides a wrong block.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
