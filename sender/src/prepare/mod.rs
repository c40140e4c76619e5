//! Turning an object's bytes into windows of blocks ready to send: read, hash, compress
//! and RaptorQ-encode [`INTERLEAVE_DEPTH`] blocks at a time.
//!
//! An object of more than one block is prepared on a pool of worker threads
//! ([`Encoding::threads`], `--threads`): the workers prepare the blocks of the next window
//! while the current one is sent, and the [`Preparer`] hands the blocks out in index
//! order, so the wire order does not depend on which thread finished first. At most two
//! windows exist at once (the one being sent and the one being prepared, about 26 MB at
//! MTU 1500), whatever the number of threads. Each block's bytes are hashed where they are
//! read and the digests merged ([`gapferry_common::block_hash`]) to check, after the last
//! window, that the source still is what its descriptor says.

mod content;
mod hash;
mod pool;

pub use content::Content;
pub use hash::{hash_content, MAX_HASH_THREADS};

use crate::error::TransferError;
use crate::source::SourceFile;
use gapferry_common::block_hash::ObjectHasher;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::{OutgoingBlock, INTERLEAVE_DEPTH};
use pool::{BlockJob, PreparedBlock, Workers};
use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

/// One window of blocks, encoded and ready to interleave.
pub struct Window {
    /// The window's blocks, in order.
    pub blocks: Vec<OutgoingBlock>,
    /// Bytes of the object the window covers.
    pub plain_bytes: u64,
}

/// What a window is encoded with.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// The sender session id.
    pub session: u64,
    /// The object id.
    pub object: u32,
    /// Largest symbol of a block.
    pub max_symbol: u16,
    /// zstd level of block compression.
    pub zstd_level: i32,
    /// Repair symbols as a percentage of source symbols.
    pub repair_percent: u32,
    /// Worker threads preparing the blocks of an object of several blocks.
    pub threads: usize,
}

/// The windows of one object pass, prepared in order.
pub struct Preparer {
    job: Arc<BlockJob>,
    /// `None` for an object of one block, prepared when asked for.
    workers: Option<Workers>,
    blocks: u32,
    /// The first block of the next window.
    next_block: u32,
    /// Blocks asked of the workers so far.
    submitted: u32,
    /// Blocks the workers finished ahead of their turn.
    ready: BTreeMap<u32, PreparedBlock>,
    hash: ObjectHasher,
}

impl Preparer {
    /// Opens `file` and starts preparing the pass `descriptor` describes.
    pub fn start(
        file: &SourceFile,
        descriptor: &ObjectDescriptor,
        encoding: Encoding,
    ) -> Result<Self, TransferError> {
        let job = Arc::new(BlockJob {
            content: Content::open(file)?,
            descriptor: descriptor.clone(),
            encoding,
        });
        let blocks = descriptor.block_count() as u32;
        let workers = if blocks > 1 {
            let threads = encoding.threads.clamp(1, blocks as usize);
            Some(
                Workers::spawn(job.clone(), threads).map_err(|error| TransferError::Read {
                    path: file.path.clone(),
                    error,
                })?,
            )
        } else {
            None
        };
        let mut p = Preparer {
            job,
            workers,
            blocks,
            next_block: 0,
            submitted: 0,
            ready: BTreeMap::new(),
            hash: ObjectHasher::new(descriptor.size),
        };
        p.submit_until(INTERLEAVE_DEPTH as u32);
        Ok(p)
    }

    /// Asks the workers for every block below `end`.
    fn submit_until(&mut self, end: u32) {
        let Some(workers) = &self.workers else { return };
        let end = end.min(self.blocks);
        while self.submitted < end {
            workers.submit(self.submitted);
            self.submitted += 1;
        }
    }

    /// Block `index`, prepared.
    fn take(&mut self, index: u32) -> Result<PreparedBlock, TransferError> {
        let Some(workers) = &self.workers else {
            return self.job.prepare(index);
        };
        loop {
            if let Some(p) = self.ready.remove(&index) {
                return Ok(p);
            }
            match workers.recv() {
                Some((i, Ok(p))) => {
                    self.ready.insert(i, p);
                }
                Some((_, Err(e))) => return Err(e),
                None => return Err(thread_gone()),
            }
        }
    }

    /// The next window, or `None` once every block is out.
    pub fn next_window(&mut self) -> Option<Result<Window, TransferError>> {
        let start = self.next_block;
        if start >= self.blocks {
            return None;
        }
        let end = (start + INTERLEAVE_DEPTH as u32).min(self.blocks);
        // The workers prepare the next window while this one is sent.
        self.submit_until(end + INTERLEAVE_DEPTH as u32);
        let mut window = Window {
            blocks: Vec::with_capacity((end - start) as usize),
            plain_bytes: 0,
        };
        for b in start..end {
            let p = match self.take(b) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            if let Err(e) = self.hash.add(p.digest) {
                return Some(Err(hash::bug(&self.job.content, e)));
            }
            window.plain_bytes += p.plain_len;
            window.blocks.push(p.block);
        }
        self.next_block = end;
        Some(Ok(window))
    }

    /// Blocks asked of the workers and not handed out yet: at most one window beyond the
    /// one just handed out, whatever the number of threads.
    pub fn blocks_ahead(&self) -> u32 {
        self.submitted.saturating_sub(self.next_block)
    }

    /// After the last window: whether the source still matches its descriptor. Blocks
    /// not taken yet are prepared and dropped, for their share of the hash.
    pub fn verify(mut self) -> Result<(), TransferError> {
        while let Some(w) = self.next_window() {
            w?;
        }
        let content = &self.job.content;
        let d = &self.job.descriptor;
        let hash = self.hash.finish().map_err(|e| hash::bug(content, e))?;
        if hash != d.blake3 || content.extends_past(d.size)? {
            return Err(TransferError::Changed(content.path().to_path_buf()));
        }
        Ok(())
    }
}

fn thread_gone() -> TransferError {
    TransferError::Sink(io::Error::other(
        "the thread preparing blocks stopped unexpectedly",
    ))
}

#[cfg(test)]
mod tests;
