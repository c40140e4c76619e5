//! How an object is cut into blocks and symbols, and how many symbols each pass sends.

use crate::auth::TAG_LEN;
use crate::wire::{DATA_HEADER_LEN, MAX_ESI};
use std::ops::Range;
use thiserror::Error;

/// IPv6 plus UDP header bytes: the payload budget when the destination may be IPv6.
pub const IP_UDP_OVERHEAD: usize = 48;
/// IPv4 (without options) plus UDP header bytes.
pub const IPV4_UDP_OVERHEAD: usize = 28;
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
/// A full block's symbol size is a multiple of this when that costs at most
/// [`WIDE_ALIGN_COST`] bytes: RaptorQ's vector loops take 64 bytes at a time (AVX-512; 32
/// with AVX2) and do what is left of a symbol byte by byte, which cost a keyed sender at
/// 1 392-byte symbols more CPU than its tag (bench/README.md, "Symbol size").
pub const WIDE_ALIGN: usize = 64;
/// Bytes of a symbol given up at most to make it a multiple of [`WIDE_ALIGN`].
pub const WIDE_ALIGN_COST: usize = 32;

/// The IP version of a sender's destinations, which sets the header bytes an MTU holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpVersion {
    /// Every destination is IPv4: 28 bytes of IP and UDP header.
    V4,
    /// Some destination is IPv6 (or it is not known): 48 bytes.
    V6,
}

impl IpVersion {
    /// IP plus UDP header bytes.
    pub fn udp_overhead(self) -> usize {
        match self {
            IpVersion::V4 => IPV4_UDP_OVERHEAD,
            IpVersion::V6 => IP_UDP_OVERHEAD,
        }
    }
}

/// Why a layout parameter was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    /// MTU outside the supported range.
    #[error("MTU {0} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu(usize),
}

/// The symbol size of full blocks for this MTU: the largest that fits a datagram, made a
/// multiple of [`WIDE_ALIGN`] when that gives up at most [`WIDE_ALIGN_COST`] bytes.
pub fn max_symbol_size(mtu: usize, tagged: bool, ip: IpVersion) -> Result<u16, LayoutError> {
    if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
        return Err(LayoutError::Mtu(mtu));
    }
    let tag = if tagged { TAG_LEN } else { 0 };
    let room = (mtu - ip.udp_overhead() - DATA_HEADER_LEN - tag).min(u16::MAX as usize);
    let narrow = room / SYMBOL_ALIGN * SYMBOL_ALIGN;
    let wide = room / WIDE_ALIGN * WIDE_ALIGN;
    Ok(if narrow - wide <= WIDE_ALIGN_COST {
        wide
    } else {
        narrow
    } as u16)
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
    fn symbol_sizes_fit_the_mtu_and_are_wide_multiples_when_that_is_cheap() {
        for ip in [IpVersion::V4, IpVersion::V6] {
            for tagged in [false, true] {
                for mtu in [MIN_MTU, 1280, 1500, 9000, 9001, MAX_MTU] {
                    let t = max_symbol_size(mtu, tagged, ip).unwrap() as usize;
                    let tag = if tagged { TAG_LEN } else { 0 };
                    let room = mtu - ip.udp_overhead() - DATA_HEADER_LEN - tag;
                    assert!(t <= room, "{mtu} {tagged} {ip:?}: {t}");
                    assert!(t.is_multiple_of(SYMBOL_ALIGN));
                    let lost = room.min(u16::MAX as usize) - t;
                    assert!(
                        t.is_multiple_of(WIDE_ALIGN) || lost < SYMBOL_ALIGN,
                        "{mtu} {tagged} {ip:?}: {t}"
                    );
                    assert!(lost < SYMBOL_ALIGN + WIDE_ALIGN_COST);
                }
            }
        }
        // The common cases: every one a multiple of 64 but IPv6 with a key at MTU 1500.
        let t = |mtu, tagged, ip| max_symbol_size(mtu, tagged, ip).unwrap();
        assert_eq!(t(1500, false, IpVersion::V4), 1408);
        assert_eq!(t(1500, true, IpVersion::V4), 1408);
        assert_eq!(t(1500, false, IpVersion::V6), 1408);
        assert_eq!(t(1500, true, IpVersion::V6), 1392);
        assert_eq!(t(9000, true, IpVersion::V4), 8896);
        assert_eq!(t(9000, false, IpVersion::V6), 8896);
        assert_eq!(
            max_symbol_size(100, false, IpVersion::V4),
            Err(LayoutError::Mtu(100))
        );
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
