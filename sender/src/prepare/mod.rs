//! Turning an object's bytes into windows of blocks ready to send: read, hash, compress
//! and RaptorQ-encode [`INTERLEAVE_DEPTH`] blocks at a time.
//!
//! An object of more than one block is prepared on a pool of worker threads
//! ([`Encoding::threads`], `--threads`): the workers prepare the blocks of the next window
//! while the current one is sent, and the [`Preparer`] hands the blocks out in index
//! order, so the wire order does not depend on which thread finished first. At most two
//! windows exist at once (the one being sent and the one being prepared, about 26 MB at
//! MTU 1500), whatever the number of threads. Each block's bytes are hashed where they are
//! read and the digests merged ([`gapferry_common::block_hash`]).
//!
//! One read, one hash: for a pass whose descriptor does not carry the blake3 yet
//! ([`gapferry_common::control::BLAKE3_LATER`]), the merged digests *are* the object's
//! blake3 ([`Preparer::blake3`]). It is known once every block is read: the last window is
//! prepared before the one before it is handed out, so the sender can give the hash to the
//! descriptor copies of the last two windows, and the content is checked unchanged since
//! it was opened ([`Content::unchanged`]) before the hash is trusted. A source that could
//! change unseen ([`Content::is_settled`] false) is hashed before its first datagram, as a
//! pass whose descriptor carries the hash is checked against it after its last window.

mod content;
mod hash;
mod pool;

pub use content::{Content, SETTLE};
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
    /// Blocks below this have their digest merged into `hash`.
    merged_below: u32,
    /// The blake3 the content must have: the descriptor's, or hashed before the first
    /// window (a source that was not settled).
    expected: Option<[u8; 32]>,
    /// The blake3 learned from the blocks themselves, once all are read.
    learned: Option<[u8; 32]>,
    /// The source changed while it was read once: no hash is learned, the remaining
    /// windows still go out (so the receiver decodes every block and can tell the hash is
    /// what is missing), and [`Preparer::verify`] refuses the pass.
    changed: bool,
}

impl Preparer {
    /// Opens `file` and starts preparing the pass `descriptor` describes.
    pub fn start(
        file: &SourceFile,
        descriptor: &ObjectDescriptor,
        encoding: Encoding,
    ) -> Result<Self, TransferError> {
        let content = Content::open(file)?;
        let expected = match descriptor.known_blake3() {
            Some(h) => Some(h),
            None if content.is_settled() => None,
            None => Some(hash_content(
                &content,
                descriptor.size,
                descriptor.block_plain_size as u64,
                encoding.threads,
            )?),
        };
        let job = Arc::new(BlockJob {
            content,
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
            merged_below: 0,
            expected,
            learned: None,
            changed: false,
        };
        p.submit_until(INTERLEAVE_DEPTH as u32);
        // An empty object is read as soon as it is opened.
        p.learn_if_read()?;
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
            let p = match self.take_merged(b) {
                Ok(p) => p,
                Err(e) => return Some(Err(e)),
            };
            window.plain_bytes += p.plain_len;
            window.blocks.push(p.block);
        }
        self.next_block = end;
        // With the hash to learn, the last window is read before the one before it goes
        // out, so the descriptor copies of both can carry the hash.
        if self.expected.is_none()
            && end < self.blocks
            && end + INTERLEAVE_DEPTH as u32 >= self.blocks
        {
            for b in end..self.blocks {
                match self.take_merged(b) {
                    Ok(p) => {
                        self.ready.insert(b, p);
                    }
                    Err(e) => return Some(Err(e)),
                }
            }
        }
        match self.learn_if_read() {
            Err(TransferError::Changed(_)) => self.changed = true,
            Err(e) => return Some(Err(e)),
            Ok(()) => {}
        }
        Some(Ok(window))
    }

    /// Block `index`, prepared, its digest merged into the object's hash (once).
    fn take_merged(&mut self, index: u32) -> Result<PreparedBlock, TransferError> {
        let mut p = self.take(index)?;
        if index >= self.merged_below {
            self.hash
                .add(std::mem::take(&mut p.digest))
                .map_err(|e| hash::bug(&self.job.content, e))?;
            self.merged_below = index + 1;
        }
        Ok(p)
    }

    /// Once every block is read and nothing was expected: the merged hash, trusted only if
    /// the content did not change while it was read.
    fn learn_if_read(&mut self) -> Result<(), TransferError> {
        if self.expected.is_some()
            || self.learned.is_some()
            || self.changed
            || self.merged_below < self.blocks
        {
            return Ok(());
        }
        let content = &self.job.content;
        let hash = self.hash.finish().map_err(|e| hash::bug(content, e))?;
        if !content.unchanged(self.job.descriptor.size)? {
            return Err(TransferError::Changed(content.path().to_path_buf()));
        }
        self.learned = Some(hash);
        Ok(())
    }

    /// The object's blake3 when known: the descriptor's, the one hashed before the first
    /// window, or (read once) the one learned once every block was read.
    pub fn blake3(&self) -> Option<[u8; 32]> {
        self.expected.or(self.learned)
    }

    /// Blocks asked of the workers and not handed out yet: at most one window beyond the
    /// one just handed out, whatever the number of threads.
    pub fn blocks_ahead(&self) -> u32 {
        self.submitted.saturating_sub(self.next_block)
    }

    /// After the last window: the object's blake3, once the source is checked to still be
    /// what was sent (the expected hash, or unchanged since opened when the hash was
    /// learned). Blocks not taken yet are prepared and dropped, for their share of the hash.
    pub fn verify(mut self) -> Result<[u8; 32], TransferError> {
        while let Some(w) = self.next_window() {
            w?;
        }
        // An empty object has no window to learn its hash in.
        self.learn_if_read()?;
        let content = &self.job.content;
        if self.changed {
            return Err(TransferError::Changed(content.path().to_path_buf()));
        }
        // Learned: the content was checked unchanged when the hash was finished.
        if let Some(h) = self.learned {
            return Ok(h);
        }
        let d = &self.job.descriptor;
        let hash = self.hash.finish().map_err(|e| hash::bug(content, e))?;
        if Some(hash) != self.expected || content.extends_past(d.size)? {
            return Err(TransferError::Changed(content.path().to_path_buf()));
        }
        Ok(hash)
    }
}

fn thread_gone() -> TransferError {
    TransferError::Sink(io::Error::other(
        "the thread preparing blocks stopped unexpectedly",
    ))
}

#[cfg(test)]
mod tests;
