//! The block writers: threads that write a big object's decoded blocks into its staging
//! file (`pwrite` at the block's offset) and hash them apart (`block_hash::hash_block`),
//! so the disk writer's thread only routes blocks and merges digests. Blocks of one
//! object finish in any order; the merge does not care. The queue of blocks waiting for
//! a thread is bounded (two per thread), so the bytes held here stay a few blocks.

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use gapferry_common::block_hash::{self, BlockDigest, BlockHashError};
use gapferry_common::ObjectRef;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Blocks queued per block-writer thread before the disk writer waits.
const QUEUED_PER_THREAD: usize = 2;
/// Bytes of blocks handed to the block writers and not taken back at most (one block
/// always passes, however large).
pub(crate) const POOL_BYTES: usize = 32 << 20;

/// One decoded block to write and hash.
pub(crate) struct BlockJob {
    /// The object it belongs to.
    pub(crate) object: ObjectRef,
    /// Its index in the object.
    pub(crate) block: u32,
    /// Its offset in the object (and the staging file).
    pub(crate) start: u64,
    /// The object's size, for its place in blake3's tree.
    pub(crate) object_size: u64,
    /// The object's staging file.
    pub(crate) file: Arc<File>,
    /// The block's bytes.
    pub(crate) plain: Vec<u8>,
}

/// Why a block could not be written or hashed.
#[derive(Debug)]
pub(crate) enum BlockFault {
    /// `pwrite` failed (disk full, I/O error).
    Write(io::Error),
    /// The block does not fit the object's blake3 tree.
    Hash(BlockHashError),
}

impl std::fmt::Display for BlockFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlockFault::Write(e) => write!(f, "{e}"),
            BlockFault::Hash(e) => write!(f, "{e}"),
        }
    }
}

/// A block written and hashed, or why not; its buffer comes back for reuse.
pub(crate) struct BlockDone {
    /// The object it belongs to.
    pub(crate) object: ObjectRef,
    /// Its index in the object.
    pub(crate) block: u32,
    /// The digest of its bytes, once they are in the file.
    pub(crate) outcome: Result<BlockDigest, BlockFault>,
    /// The block's buffer.
    pub(crate) plain: Vec<u8>,
}

/// Writes and hashes one block: the digest only once the bytes are in the file.
pub(crate) fn write_and_hash(job: BlockJob) -> BlockDone {
    let outcome = job
        .file
        .write_all_at(&job.plain, job.start)
        .map_err(BlockFault::Write)
        .and_then(|()| {
            block_hash::hash_block(job.object_size, job.start, &job.plain).map_err(BlockFault::Hash)
        });
    BlockDone {
        object: job.object,
        block: job.block,
        outcome,
        plain: job.plain,
    }
}

/// The block-writer threads and the way back from them.
pub(crate) struct BlockPool {
    jobs: Option<Sender<BlockJob>>,
    done: Receiver<BlockDone>,
    threads: Vec<JoinHandle<()>>,
    /// Blocks handed to the threads whose outcome was not taken yet.
    outstanding: usize,
    /// Their bytes.
    bytes: usize,
}

impl BlockPool {
    /// Starts `threads` block writers (at least one).
    pub(crate) fn start(threads: usize) -> io::Result<Self> {
        let threads = threads.max(1);
        let (jobs, jobs_rx) = bounded::<BlockJob>(threads * QUEUED_PER_THREAD);
        let (done_tx, done) = unbounded::<BlockDone>();
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let jobs_rx = jobs_rx.clone();
            let done_tx = done_tx.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("gapferry-block-{i}"))
                    .spawn(move || {
                        // Ends when the pool is dropped and the queue is empty.
                        for job in jobs_rx {
                            if done_tx.send(write_and_hash(job)).is_err() {
                                return;
                            }
                        }
                    })?,
            );
        }
        Ok(BlockPool {
            jobs: Some(jobs),
            done,
            threads: handles,
            outstanding: 0,
            bytes: 0,
        })
    }

    /// Hands `job` to a thread, waiting while the queue is full. A job the threads can
    /// no longer take (they are gone) is done here instead.
    pub(crate) fn submit(&mut self, job: BlockJob) -> Option<BlockDone> {
        let Some(jobs) = &self.jobs else {
            return Some(write_and_hash(job));
        };
        let n = job.plain.len();
        match jobs.send(job) {
            Ok(()) => {
                self.outstanding += 1;
                self.bytes += n;
                None
            }
            Err(crossbeam_channel::SendError(job)) => Some(write_and_hash(job)),
        }
    }

    /// Whether a block of `n` bytes may be handed over now without passing [`POOL_BYTES`].
    pub(crate) fn has_room(&self, n: usize) -> bool {
        self.outstanding == 0 || self.bytes + n <= POOL_BYTES
    }

    /// An outcome if one is ready.
    pub(crate) fn try_done(&mut self) -> Option<BlockDone> {
        let done = self.done.try_recv().ok()?;
        Some(self.taken(done))
    }

    /// The next outcome, waiting for it; `None` when no block is outstanding.
    pub(crate) fn wait_done(&mut self) -> Option<BlockDone> {
        if self.outstanding == 0 {
            return None;
        }
        let done = self.done.recv().ok()?;
        Some(self.taken(done))
    }

    fn taken(&mut self, done: BlockDone) -> BlockDone {
        self.outstanding -= 1;
        self.bytes = self.bytes.saturating_sub(done.plain.len());
        done
    }
}

impl Drop for BlockPool {
    fn drop(&mut self) {
        // Closing the queue ends the threads once they finish what they hold.
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_common::block_hash::ObjectHasher;

    fn noise(len: usize, seed: u64) -> Vec<u8> {
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

    const OBJECT: ObjectRef = ObjectRef {
        session: 7,
        object: 1,
    };

    /// Jobs for every block of `bytes` cut in `block`-byte blocks, in `order`.
    fn jobs(file: &Arc<File>, bytes: &[u8], block: usize, order: &[usize]) -> Vec<BlockJob> {
        order
            .iter()
            .map(|&b| BlockJob {
                object: OBJECT,
                block: b as u32,
                start: (b * block) as u64,
                object_size: bytes.len() as u64,
                file: file.clone(),
                plain: bytes[b * block..((b + 1) * block).min(bytes.len())].to_vec(),
            })
            .collect()
    }

    fn staging_file(dir: &tempfile::TempDir) -> Arc<File> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("object.part"))
            .unwrap();
        Arc::new(file)
    }

    /// Blocks run through a pool of `threads`, their outcomes merged in the order given.
    fn through_pool(threads: usize, jobs: Vec<BlockJob>) -> Vec<BlockDone> {
        let mut pool = BlockPool::start(threads).unwrap();
        let mut done: Vec<BlockDone> = jobs.into_iter().filter_map(|j| pool.submit(j)).collect();
        while let Some(d) = pool.wait_done() {
            done.push(d);
        }
        done
    }

    #[test]
    fn blocks_finishing_in_any_order_merge_to_the_objects_blake3() {
        let dir = tempfile::tempdir().unwrap();
        let block = 5 * 1024;
        let bytes = noise(9 * block + 333, 1);
        let file = staging_file(&dir);
        let n = bytes.len().div_ceil(block);
        let forward: Vec<usize> = (0..n).collect();
        let done = through_pool(4, jobs(&file, &bytes, block, &forward));
        assert_eq!(done.len(), n);
        // Merged in three orders the pool could have finished them in.
        let mut digests: Vec<(u32, BlockDigest)> = done
            .into_iter()
            .map(|d| (d.block, d.outcome.expect("written and hashed")))
            .collect();
        digests.sort_by_key(|(b, _)| *b);
        let backward: Vec<usize> = (0..n).rev().collect();
        let odd_first: Vec<usize> = (1..n).step_by(2).chain((0..n).step_by(2)).collect();
        for order in [forward, backward, odd_first] {
            let mut merger = ObjectHasher::new(bytes.len() as u64);
            for b in &order {
                merger.add(digests[*b].1.clone()).unwrap();
            }
            assert_eq!(
                merger.finish().unwrap(),
                *blake3::hash(&bytes).as_bytes(),
                "order {order:?}"
            );
        }
        assert_eq!(
            std::fs::read(dir.path().join("object.part")).unwrap(),
            bytes
        );
    }

    #[test]
    fn a_corrupted_block_on_the_pool_changes_the_merged_hash() {
        let dir = tempfile::tempdir().unwrap();
        let block = 4 * 1024;
        let bytes = noise(6 * block + 1, 2);
        let file = staging_file(&dir);
        let n = bytes.len().div_ceil(block);
        let order: Vec<usize> = (0..n).rev().collect();
        let mut jobs = jobs(&file, &bytes, block, &order);
        jobs[2].plain[100] ^= 1;
        let mut merger = ObjectHasher::new(bytes.len() as u64);
        for d in through_pool(3, jobs) {
            merger.add(d.outcome.unwrap()).unwrap();
        }
        assert_ne!(merger.finish().unwrap(), *blake3::hash(&bytes).as_bytes());
    }

    #[test]
    fn a_write_error_on_a_pool_thread_comes_back_with_its_block_and_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("read-only.part");
        std::fs::write(&path, b"").unwrap();
        // Opened for reading only: every pwrite fails (EBADF), as a full disk would.
        let file = Arc::new(File::open(&path).unwrap());
        let bytes = noise(3 * 1024, 3);
        let done = through_pool(2, jobs(&file, &bytes, 1024, &[0, 1, 2]));
        assert_eq!(done.len(), 3);
        for d in done {
            match d.outcome {
                Err(BlockFault::Write(e)) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
                Err(other) => panic!("block {}: not a write error: {other}", d.block),
                Ok(_) => panic!("block {} hashed though it was never written", d.block),
            }
            // The buffer comes back for reuse, whole.
            assert_eq!(d.plain.len(), 1024);
        }
    }

    #[test]
    fn the_pool_holds_a_bounded_number_of_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let file = staging_file(&dir);
        let mut pool = BlockPool::start(1).unwrap();
        let block = POOL_BYTES / 2;
        let bytes = vec![7u8; 3 * block];
        assert!(
            pool.has_room(4 * POOL_BYTES),
            "an idle pool takes any one block"
        );
        let mut jobs = jobs(&file, &bytes, block, &[0, 1, 2]).into_iter();
        for job in jobs.by_ref().take(2) {
            assert!(pool.has_room(block));
            assert!(pool.submit(job).is_none());
        }
        assert!(!pool.has_room(block), "two half-budget blocks fill it");
        let done = pool.wait_done().unwrap();
        assert!(done.outcome.is_ok());
        assert!(pool.has_room(block), "a block taken back makes room");
        assert!(pool.submit(jobs.next().unwrap()).is_none());
        while pool.wait_done().is_some() {}
        assert!(pool.has_room(POOL_BYTES));
    }

    #[test]
    fn a_block_outside_its_object_is_refused_not_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let file = staging_file(&dir);
        let job = BlockJob {
            object: OBJECT,
            block: 3,
            start: 3 * 1024,
            object_size: 2 * 1024,
            file,
            plain: vec![0; 1024],
        };
        let done = through_pool(1, vec![job]);
        assert!(matches!(
            done[0].outcome,
            Err(BlockFault::Hash(BlockHashError::OutOfRange { .. }))
        ));
    }
}
