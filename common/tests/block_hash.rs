//! Block hashes merged into an object's blake3 (`gapferry_common::block_hash`): equal to
//! `blake3::hash` of the whole object around chunk and block boundaries, in any order of
//! blocks, and refusing digests that do not cover the object exactly once.

use gapferry_common::block_hash::{
    hash_block, merge_blocks, BlockHashError, ObjectHasher, CHUNK_LEN,
};
use gapferry_common::layout;
use proptest::prelude::*;

/// The block of MTU 1500 (1 408 KiB: 1 408 chunks, not a power of two).
fn mtu1500_block() -> u64 {
    layout::block_plain_size(layout::max_symbol_size(1500, false, layout::IpVersion::V6).unwrap())
        as u64
}

fn content(n: u64) -> Vec<u8> {
    (0..n).map(|i| (i * 31 + i / 977) as u8).collect()
}

/// The object's hash from its blocks hashed apart, blocks given in reverse order.
fn merged_reversed(data: &[u8], block: u64) -> Result<[u8; 32], BlockHashError> {
    let size = data.len() as u64;
    let mut hasher = ObjectHasher::new(size);
    let starts: Vec<u64> = (0..size.div_ceil(block).max(1))
        .map(|b| b * block)
        .collect();
    for &start in starts.iter().rev() {
        let end = (start + block).min(size);
        hasher.add(hash_block(
            size,
            start,
            &data[start as usize..end as usize],
        )?)?;
    }
    hasher.finish()
}

fn check(size: u64, block: u64) {
    let data = content(size);
    let want = *blake3::hash(&data).as_bytes();
    let in_order = merge_blocks(size, block, data.chunks(block as usize)).unwrap();
    assert_eq!(in_order, want, "size {size}, block {block}, in order");
    let reversed = merged_reversed(&data, block).unwrap();
    assert_eq!(reversed, want, "size {size}, block {block}, reversed");
}

#[test]
fn merged_block_hashes_equal_blake3_around_chunk_and_block_bounds() {
    let block = mtu1500_block();
    assert!(!(block / CHUNK_LEN).is_power_of_two(), "not a power of two");
    let sizes = [
        0,
        1,
        1023,
        1024,
        1025,
        block - 1,
        block,
        block + 1,
        3 * block,
        3 * block - 1,
        3 * block + 1,
    ];
    for size in sizes {
        check(size, block);
    }
}

#[test]
fn power_of_two_and_single_chunk_blocks_merge_too() {
    for block in [CHUNK_LEN, 2 * CHUNK_LEN, 64 * CHUNK_LEN, 3 * CHUNK_LEN] {
        for size in [1, CHUNK_LEN, 5 * CHUNK_LEN + 7, 17 * block + 300] {
            check(size, block);
        }
    }
}

#[test]
fn a_missing_block_is_reported_not_guessed() {
    let block = 8 * CHUNK_LEN;
    let data = content(3 * block);
    let size = data.len() as u64;
    let mut hasher = ObjectHasher::new(size);
    for b in [0, 2] {
        let at = (b * block) as usize;
        let digest = hash_block(size, b * block, &data[at..at + block as usize]).unwrap();
        hasher.add(digest).unwrap();
    }
    assert!(matches!(hasher.finish(), Err(BlockHashError::Missing(_))));
}

#[test]
fn a_block_given_twice_or_for_another_object_is_refused() {
    let block = 8 * CHUNK_LEN;
    let data = content(2 * block);
    let size = data.len() as u64;
    let first = hash_block(size, 0, &data[..block as usize]).unwrap();
    let mut hasher = ObjectHasher::new(size);
    hasher.add(first.clone()).unwrap();
    assert_eq!(hasher.add(first), Err(BlockHashError::Duplicate(0)));

    let other = hash_block(size + 1, 0, &data[..block as usize]).unwrap();
    let mut hasher = ObjectHasher::new(size);
    assert!(matches!(
        hasher.add(other),
        Err(BlockHashError::SizeMismatch { .. })
    ));
}

#[test]
fn blocks_cut_off_chunk_bounds_or_past_the_end_are_refused() {
    let data = content(10 * CHUNK_LEN);
    let size = data.len() as u64;
    let unaligned = hash_block(size, 100, &data[100..2048]);
    assert!(matches!(unaligned, Err(BlockHashError::Unaligned { .. })));
    let short_end = hash_block(size, 0, &data[..1500]);
    assert!(matches!(short_end, Err(BlockHashError::Unaligned { .. })));
    let past = hash_block(size, 9 * CHUNK_LEN, &[0u8; 2048]);
    assert!(matches!(past, Err(BlockHashError::OutOfRange { .. })));
    let overflow = hash_block(size, u64::MAX - 10, &[0u8; 20]);
    assert!(matches!(overflow, Err(BlockHashError::OutOfRange { .. })));
}

#[test]
fn a_changed_byte_changes_the_merged_hash() {
    let block = 4 * CHUNK_LEN;
    let mut data = content(5 * block + 33);
    let before = merge_blocks(data.len() as u64, block, data.chunks(block as usize)).unwrap();
    let last = data.len() - 1;
    data[last] ^= 1;
    let after = merge_blocks(data.len() as u64, block, data.chunks(block as usize)).unwrap();
    assert_ne!(before, after);
    assert_eq!(after, *blake3::hash(&data).as_bytes());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn merged_equals_blake3_for_any_size_and_block(size in 0u64..300_000, chunks in 1u64..40) {
        let block = chunks * CHUNK_LEN;
        let data = content(size);
        let want = *blake3::hash(&data).as_bytes();
        prop_assert_eq!(merge_blocks(size, block, data.chunks(block as usize)).unwrap(), want);
        prop_assert_eq!(merged_reversed(&data, block).unwrap(), want);
    }
}
