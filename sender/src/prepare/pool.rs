//! The threads that prepare an object's blocks: each takes a block index, reads that
//! block, hashes it into a [`BlockDigest`], compresses it and RaptorQ-encodes it. Results
//! come back tagged with their index in whatever order the threads finish; the
//! [`Preparer`](super::Preparer) puts them back in order and decides how far ahead the
//! threads may run, which bounds the memory they hold.

use super::content::Content;
use super::hash::bug;
use super::Encoding;
use crate::error::TransferError;
use crossbeam_channel::{unbounded, Receiver, Sender};
use gapferry_common::block_hash::{self, BlockDigest};
use gapferry_common::compress;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::OutgoingBlock;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

thread_local! {
    /// The block being read on this thread (one block's size at most).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// What every block of one object pass is prepared from.
pub struct BlockJob {
    /// The object's content.
    pub content: Content,
    /// The pass being prepared.
    pub descriptor: ObjectDescriptor,
    /// How its blocks are encoded.
    pub encoding: Encoding,
}

/// One block read, hashed and encoded.
pub struct PreparedBlock {
    /// The block, ready to interleave.
    pub block: OutgoingBlock,
    /// Its bytes' share of the object's blake3.
    pub digest: BlockDigest,
    /// Bytes of the object it covers.
    pub plain_len: u64,
}

impl BlockJob {
    /// Reads, hashes, compresses and encodes block `index`.
    pub fn prepare(&self, index: u32) -> Result<PreparedBlock, TransferError> {
        let d = &self.descriptor;
        let e = self.encoding;
        let start = index as u64 * d.block_plain_size as u64;
        let plain_len = d.block_plain_len(index);
        let (digest, (codec, data)) = READ_BUFFER.with_borrow_mut(|plain| {
            // Each thread reads its blocks into one buffer, filled whole by every read:
            // no fresh zeroed pages per block.
            plain.resize(plain_len as usize, 0);
            self.content.read_at(start, plain)?;
            let digest =
                block_hash::hash_block(d.size, start, plain).map_err(|e| bug(&self.content, e))?;
            Ok::<_, TransferError>((digest, compress::compress_block(plain, e.zstd_level)))
        })?;
        let block = OutgoingBlock::new(
            e.session,
            e.object,
            index,
            codec,
            plain_len as u32,
            data,
            e.max_symbol,
            e.repair_percent,
            d.pass as u32,
        );
        Ok(PreparedBlock {
            block,
            digest,
            plain_len,
        })
    }
}

type Outcome = (u32, Result<PreparedBlock, TransferError>);

/// Worker threads preparing the blocks of one object pass.
pub struct Workers {
    jobs: Option<Sender<u32>>,
    /// Set when the preparer lets go: blocks still queued are not prepared.
    stop: Arc<AtomicBool>,
    results: Receiver<Outcome>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts `threads` workers on `job`.
    pub fn spawn(job: Arc<BlockJob>, threads: usize) -> io::Result<Self> {
        let (jobs, todo) = unbounded::<u32>();
        let (done, results) = unbounded::<Outcome>();
        let mut workers = Workers {
            jobs: Some(jobs),
            stop: Arc::new(AtomicBool::new(false)),
            results,
            threads: Vec::with_capacity(threads),
        };
        for n in 0..threads.max(1) {
            let (job, todo, done) = (job.clone(), todo.clone(), done.clone());
            let stop = workers.stop.clone();
            let handle = std::thread::Builder::new()
                .name(format!("gapferry-prepare-{n}"))
                .spawn(move || {
                    // Ends when the preparer drops its side: the object is done or abandoned.
                    for index in todo {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        // A panic becomes this block's error, so nobody waits for it.
                        let prepared = catch_unwind(AssertUnwindSafe(|| job.prepare(index)))
                            .unwrap_or_else(|_| Err(super::thread_gone()));
                        if done.send((index, prepared)).is_err() {
                            return;
                        }
                    }
                })?;
            workers.threads.push(handle);
        }
        Ok(workers)
    }

    /// Asks for block `index`.
    pub fn submit(&self, index: u32) {
        if let Some(jobs) = &self.jobs {
            // The workers only stop once `jobs` is dropped, so this cannot fail.
            let _ = jobs.send(index);
        }
    }

    /// The next block any worker finished, or `None` if every worker is gone.
    pub fn recv(&self) -> Option<Outcome> {
        self.results.recv().ok()
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
