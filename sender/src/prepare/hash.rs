//! The object's hash pass before its first datagram, on several threads: the content is
//! read in blocks, each hashed apart on whichever thread read it, and the digests merged
//! into the object's blake3 ([`gapferry_common::block_hash`]), so the pass takes about
//! 1/N of the time one thread needs.

use super::content::Content;
use crate::error::TransferError;
use gapferry_common::block_hash::{self, BlockDigest, ObjectHasher};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Most threads the pass uses: each holds one block's buffer.
pub const MAX_HASH_THREADS: usize = 16;

/// The blake3 of the first `size` bytes of `content`, read in units of `unit` bytes (a
/// multiple of 1 024) on up to `threads` threads.
pub fn hash_content(
    content: &Content,
    size: u64,
    unit: u64,
    threads: usize,
) -> Result<[u8; 32], TransferError> {
    let units = size.div_ceil(unit);
    let threads = threads
        .clamp(1, MAX_HASH_THREADS)
        .min(units.max(1) as usize);
    let next = AtomicU64::new(0);
    let merged = Mutex::new(ObjectHasher::new(size));
    let worker = || -> Result<(), TransferError> {
        let mut buf = Vec::new();
        loop {
            let u = next.fetch_add(1, Ordering::Relaxed);
            if u >= units {
                return Ok(());
            }
            let start = u * unit;
            buf.resize((unit.min(size - start)) as usize, 0);
            content.read_at(start, &mut buf)?;
            let digest = block_hash::hash_block(size, start, &buf).map_err(|e| bug(content, e))?;
            add(&merged, digest).map_err(|e| bug(content, e))?;
        }
    };
    if threads == 1 {
        worker()?;
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(thread_panicked(content))))
                .collect::<Result<Vec<()>, _>>()
        })?;
    }
    let merged = merged.into_inner().unwrap_or_else(|p| p.into_inner());
    merged.finish().map_err(|e| bug(content, e))
}

fn add(
    merged: &Mutex<ObjectHasher>,
    digest: BlockDigest,
) -> Result<(), block_hash::BlockHashError> {
    merged.lock().unwrap_or_else(|p| p.into_inner()).add(digest)
}

/// Block digests that do not merge: a fault in the sender, reported as a read failure.
pub fn bug(content: &Content, e: block_hash::BlockHashError) -> TransferError {
    TransferError::Read {
        path: content.path().to_path_buf(),
        error: io::Error::other(format!("internal error merging block hashes: {e}")),
    }
}

fn thread_panicked(content: &Content) -> TransferError {
    TransferError::Read {
        path: content.path().to_path_buf(),
        error: io::Error::other("a thread hashing the file stopped unexpectedly"),
    }
}
