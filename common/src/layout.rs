//! How an object is cut into blocks and symbols, and how many symbols each pass sends.

use crate::auth::TAG_LEN;
use crate::wire::{DATA_HEADER_LEN, MAX_ESI};
use std::ops::Range;
use thiserror::Error;

/// IPv6 plus UDP header bytes: the payload budget is computed for the larger IP header.
pub const IP_UDP_OVERHEAD: usize = 48;
/// Smallest MTU accepted (the IPv4 minimum datagram size).
pub const MIN_MTU: usize = 576;
/// Largest MTU accepted.
pub const MAX_MTU: usize = 65_535;
/// Source symbols per full block: RaptorQ's sweet spot.
pub const BLOCK_SYMBOLS: u32 = 1024;
/// Repair symbols every block gets at least, so small blocks survive loss too.
pub const MIN_REPAIR: u32 = 4;
/// Symbol sizes are multiples of this.
pub const SYMBOL_ALIGN: usize = 8;

/// Why a layout parameter was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// MTU outside the supported range.
    #[error("MTU {0} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu(usize),
}

/// The largest symbol that fits a datagram for this MTU.
pub fn max_symbol_size(mtu: usize, tagged: bool) -> Result<u16, LayoutError> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(LayoutError::Mtu(mtu));
    }
    let room = mtu - IP_UDP_OVERHEAD - DATA_HEADER_LEN - if tagged { TAG_LEN } else { 0 };
    let aligned = room / SYMBOL_ALIGN * SYMBOL_ALIGN;
    Ok(aligned.min(u16::MAX as usize / SYMBOL_ALIGN * SYMBOL_ALIGN) as u16)
}

/// Original bytes per block for a given maximum symbol size.
pub fn block_plain_size(max_symbol: u16) -> u32 {
    max_symbol as u32 * BLOCK_SYMBOLS
}

/// The symbol size for an encoded block of `block_len` bytes: small blocks get small symbols.
pub fn symbol_size(block_len: usize, max_symbol: u16) -> u16 {
    if block_len >= max_symbol as usize {
        max_symbol
    } else {
        (block_len.div_ceil(SYMBOL_ALIGN) * SYMBOL_ALIGN).max(SYMBOL_ALIGN) as u16
    }
}

/// Source symbols of a block: ceil(block_len / symbol_size).
pub fn source_symbols(block_len: usize, symbol_size: u16) -> u32 {
    block_len.div_ceil(symbol_size as usize) as u32
}

/// Repair symbols per pass for a block of `k` source symbols: max(repair %, [`MIN_REPAIR`]).
pub fn repair_symbols(k: u32, repair_percent: u32) -> u32 {
    (k as u64 * repair_percent as u64)
        .div_ceil(100)
        .max(MIN_REPAIR as u64)
        .min(MAX_ESI as u64) as u32
}

/// The encoding symbol ids pass `pass` (1-based) sends for a block.
///
/// Pass 1 sends the `k` source symbols and `r` repair symbols; every later pass sends
/// `k + r` repair symbols no earlier pass sent, so receptions add up across passes.
pub fn pass_symbols(k: u32, r: u32, pass: u32) -> Range<u32> {
    let per_pass = k as u64 + r as u64;
    let start = per_pass * (pass.max(1) as u64 - 1);
    let end = start + per_pass;
    let clamp = |x: u64| x.min(MAX_ESI as u64 + 1) as u32;
    clamp(start)..clamp(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_sizes_fit_the_mtu() {
        let t = max_symbol_size(1500, false).unwrap() as usize;
        assert!(t + DATA_HEADER_LEN + IP_UDP_OVERHEAD <= 1500);
        assert_eq!(t % SYMBOL_ALIGN, 0);
        let tagged = max_symbol_size(1500, true).unwrap() as usize;
        assert!(tagged + DATA_HEADER_LEN + TAG_LEN + IP_UDP_OVERHEAD <= 1500);
        assert!(max_symbol_size(9000, true).unwrap() > 8800);
        assert_eq!(max_symbol_size(100, false), Err(LayoutError::Mtu(100)));
    }

    #[test]
    fn small_blocks_get_small_symbols_and_a_repair_floor() {
        assert_eq!(symbol_size(1, 1408), 8);
        assert_eq!(symbol_size(100, 1408), 104);
        assert_eq!(symbol_size(5000, 1408), 1408);
        assert_eq!(source_symbols(5000, 1408), 4);
        assert_eq!(repair_symbols(1, 10), MIN_REPAIR);
        assert_eq!(repair_symbols(1024, 10), 103);
        assert_eq!(repair_symbols(1000, 0), MIN_REPAIR);
    }

    #[test]
    fn passes_never_repeat_a_symbol() {
        assert_eq!(pass_symbols(10, 4, 1), 0..14);
        assert_eq!(pass_symbols(10, 4, 2), 14..28);
        assert_eq!(pass_symbols(10, 4, 3), 28..42);
    }
}
