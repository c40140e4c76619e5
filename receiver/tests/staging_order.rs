//! The disk writer's blake3 of a staged object, from blocks written in any order: blocks
//! cut on blake3's chunks are hashed apart and merged; others in order, read back from
//! the file. Whatever the order, the object is delivered when its bytes are the
//! descriptor's, and refused, with nothing delivered, when one block was corrupted.

use gapferry_common::wire::Codec;
use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_receiver::delivery::Delivery;
use gapferry_receiver::destinations::Destinations;
use gapferry_receiver::metrics::ReceiverMetrics;

mod support;
use support::noise;

/// Stages `original` as object `id` in blocks of `block` bytes, written in `order`
/// (block `corrupt`, if any, with one byte flipped); returns (delivered, failed) and
/// whether the file is at its destination with the original bytes.
fn stage(
    out: &std::path::Path,
    id: u32,
    original: &[u8],
    block: u32,
    order: &[u32],
    corrupt: Option<u32>,
) -> (u64, u64, bool) {
    let dest = Destinations::under(out);
    let files = dest.files.clone();
    let mut delivery = Delivery::open(out, dest, ReceiverMetrics::default()).unwrap();
    let object = ObjectRef {
        session: 0xb10c,
        object: id,
    };
    let name = format!("object-{id}.bin");
    let descriptor = ObjectDescriptor {
        kind: ObjectKind::File,
        name: name.clone(),
        size: original.len() as u64,
        blake3: *blake3::hash(original).as_bytes(),
        block_plain_size: block,
        mtime: 1_700_000_000,
        pass: 1,
        passes: 1,
    };
    assert_eq!(order.len() as u64, descriptor.block_count());
    delivery.handle(Event::ObjectStarted { object, descriptor });
    for &b in order {
        let start = b as usize * block as usize;
        let end = (start + block as usize).min(original.len());
        let mut data = original[start..end].to_vec();
        if corrupt == Some(b) {
            let mid = data.len() / 2;
            data[mid] ^= 0x40;
        }
        delivery.handle(Event::BlockDecoded {
            object,
            block: b,
            codec: Codec::None,
            plain_len: data.len() as u32,
            data,
        });
    }
    let blake3 = *blake3::hash(original).as_bytes();
    delivery.handle(Event::ObjectComplete { object, blake3 });
    let summary = delivery.into_summary();
    let there = std::fs::read(files.join(&name)).is_ok_and(|b| b == original);
    (summary.delivered, summary.failed, there)
}

/// Orders of `n` blocks: forward, backward, and odd blocks before even ones.
fn orders(n: u32) -> Vec<Vec<u32>> {
    let forward: Vec<u32> = (0..n).collect();
    let backward = forward.iter().rev().copied().collect();
    let odd_first = (1..n).step_by(2).chain((0..n).step_by(2)).collect();
    vec![forward, backward, odd_first]
}

#[test]
fn blocks_on_chunk_bounds_deliver_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let block = 64 << 10;
    // Around block and chunk bounds: one block, one block and a byte, five and a tail.
    for (i, len) in [
        1,
        1024,
        block as usize,
        block as usize + 1,
        5 * block as usize + 777,
    ]
    .into_iter()
    .enumerate()
    {
        let original = noise(len, i as u64);
        let n = len.div_ceil(block as usize) as u32;
        for (j, order) in orders(n).iter().enumerate() {
            let id = (i * 10 + j) as u32;
            let got = stage(dir.path(), id, &original, block, order, None);
            assert_eq!(got, (1, 0, true), "{len} bytes in order {order:?}");
        }
    }
}

#[test]
fn blocks_off_chunk_bounds_deliver_in_any_order() {
    let dir = tempfile::tempdir().unwrap();
    let original = noise(7 * 1000 + 3, 9);
    for (j, order) in orders(8).iter().enumerate() {
        let got = stage(dir.path(), j as u32, &original, 1000, order, None);
        assert_eq!(got, (1, 0, true), "order {order:?}");
    }
}

#[test]
fn a_corrupted_block_is_refused_whatever_the_order() {
    let dir = tempfile::tempdir().unwrap();
    for (block, len) in [(64 << 10, 5 * (64 << 10) + 777), (1000u32, 7003)] {
        let original = noise(len, 3);
        let n = len.div_ceil(block as usize) as u32;
        for (j, order) in orders(n).iter().enumerate() {
            for corrupt in [0, n / 2, n - 1] {
                let id = block + 100 * j as u32 + corrupt;
                let got = stage(dir.path(), id, &original, block, order, Some(corrupt));
                assert_eq!(
                    got,
                    (0, 1, false),
                    "block {corrupt} corrupted, order {order:?}"
                );
            }
        }
    }
    // Nothing of the refused objects is left in the files directory.
    let files = Destinations::under(dir.path()).files;
    let left = std::fs::read_dir(&files).map_or(0, |d| d.count());
    assert_eq!(left, 0, "refused objects left files in {}", files.display());
}
