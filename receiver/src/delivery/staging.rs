//! Staging: an object's bytes land in `<state>/staging/<session>-<object>.part` as its
//! blocks decode, in any order, and are hashed with blake3 as they are written: each
//! block apart, merged into the object's blake3 by `block_hash` whatever the order, when
//! blocks are cut on blake3's 1 024-byte chunks (as every sender cuts them); otherwise in
//! block order, blocks that decoded early read back from the file when their turn comes.
//! Blocks of an object of several blocks cut on chunks are written and hashed on the
//! block writers ([`pool`], `--threads`); the object is complete once every block's
//! outcome is back, which its last block waits for, so nothing is verified, and nothing
//! recorded, before every byte is in the file.
//! Before the first byte, the object must fit the disk (with [`DISK_RESERVE`] left) and,
//! for a document read into memory, the document limit.

use super::{Delivery, DISK_RESERVE};
use crate::cause::Cause;
use gapferry_common::block_hash::{self, ObjectHasher};
use gapferry_common::{ObjectDescriptor, ObjectKind, ObjectRef};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub(crate) mod pool;
use pool::{BlockDone, BlockJob, BlockPool};

/// The block writers of a [`Delivery`], started with its first block to hand them.
pub(super) struct BlockWriters {
    /// Threads to start; 0 writes and hashes every block on the disk writer's thread.
    threads: usize,
    pool: Option<BlockPool>,
}

impl Default for BlockWriters {
    fn default() -> Self {
        BlockWriters {
            threads: default_block_threads(),
            pool: None,
        }
    }
}

/// Block writers for this machine: none on two cores or fewer, else one per core beyond
/// the two that the socket and assembler threads keep busy, at most four (blake3 and
/// `pwrite` on four threads outrun a 10 GbE link). Measured on a 2-core VM (receiver
/// alone at 2 Gbit/s, alternated): 2.05-2.33 CPU-s per GiB with two block writers
/// against 1.88-1.91 without, for the same goodput: the hand-over costs more than it
/// saves when no core is idle.
pub fn default_block_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_sub(2).min(4)
}

/// Largest written block's buffer handed back to the assembler: bigger ones are freed,
/// so the buffers on their way back stay a few blocks of at most this.
const SPARE_MAX: usize = 16 << 20;

/// An object being written to its staging file.
pub(super) struct Staged {
    pub(super) descriptor: ObjectDescriptor,
    pub(super) file: File,
    pub(super) path: PathBuf,
    hash: ObjectHash,
    /// The staging file as the block writers share it, for an object they write.
    shared: Option<Arc<File>>,
    /// Blocks handed to the block writers whose outcome is not back yet.
    in_pool: u64,
    /// Blocks hashed so far.
    hashed: u64,
    written: u64,
    writeback: crate::writeback::Writeback,
    pub(super) started: Instant,
}

/// How a staged object's blake3 is computed.
enum ObjectHash {
    /// Blocks cut on chunk bounds: each hashed apart as it is written, in any order.
    Blocks(ObjectHasher),
    /// Blocks in order; those written early are read back from the file in their turn.
    InOrder {
        hasher: Box<blake3::Hasher>,
        next: u32,
        ahead: BTreeSet<u32>,
    },
}

impl ObjectHash {
    fn for_object(d: &ObjectDescriptor) -> Self {
        if u64::from(d.block_plain_size).is_multiple_of(block_hash::CHUNK_LEN) {
            ObjectHash::Blocks(ObjectHasher::new(d.size))
        } else {
            ObjectHash::InOrder {
                hasher: Box::default(),
                next: 0,
                ahead: BTreeSet::new(),
            }
        }
    }
}

impl Delivery {
    /// Refuses what cannot fit or be checked, then opens the object's staging file.
    pub(super) fn start(
        &mut self,
        object: ObjectRef,
        descriptor: ObjectDescriptor,
    ) -> io::Result<()> {
        // Refuse up front what cannot fit, rather than fill the disk and fail half-way.
        let free = crate::disk::available_bytes(&self.staging_dir)?;
        if descriptor.size.saturating_add(DISK_RESERVE) > free {
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "not enough disk space: {} bytes needed plus a {} MiB reserve, {} available under {}; free space and the next pass or send will deliver it",
                    descriptor.size,
                    DISK_RESERVE >> 20,
                    free,
                    self.staging_dir.display()
                ),
            ));
        }
        // MISP events and STIX bundles are read into memory to be checked: refuse before
        // decoding what could never be.
        if matches!(descriptor.kind, ObjectKind::Misp | ObjectKind::Stix)
            && descriptor.size > self.max_document
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "a {}-byte {} document is above the {}-byte limit; raise [limits] max_document in the receiver's configuration, or send it as kind `file`",
                    descriptor.size, descriptor.kind, self.max_document
                ),
            ));
        }
        let path = self
            .staging_dir
            .join(format!("{:016x}-{}.part", object.session, object.object));
        // Small documents are reassembled in memory (see `small`): no path.
        let (file, path) = match self.in_memory_file(&descriptor) {
            Some(file) => (file?, PathBuf::new()),
            None => (
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&path)?,
                path,
            ),
        };
        let hash = ObjectHash::for_object(&descriptor);
        // Several blocks hashed apart: worth the block writers (one block is not).
        let pooled = matches!(hash, ObjectHash::Blocks(_))
            && descriptor.block_count() > 1
            && self.block_writers.threads > 0;
        let shared = if pooled {
            Some(Arc::new(file.try_clone()?))
        } else {
            None
        };
        self.staged.insert(
            object,
            Staged {
                hash,
                descriptor,
                file,
                path,
                shared,
                in_pool: 0,
                hashed: 0,
                written: 0,
                writeback: Default::default(),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    /// Writes one decoded block at its offset and hashes it, on the block writers when
    /// the object has them (an error there fails the object when its outcome is back),
    /// then hands the buffer back.
    pub(super) fn write_block(
        &mut self,
        object: ObjectRef,
        block: u32,
        plain: Vec<u8>,
    ) -> io::Result<()> {
        let s = self.staged.get_mut(&object).expect("checked");
        let Some(file) = s.shared.clone() else {
            let written = self.write_block_here(object, block, &plain);
            self.recycle(plain);
            return written;
        };
        s.in_pool += 1;
        let last = s.hashed + s.in_pool == s.descriptor.block_count();
        let job = BlockJob {
            object,
            block,
            start: block as u64 * s.descriptor.block_plain_size as u64,
            object_size: s.descriptor.size,
            file,
            plain,
        };
        let threads = self.block_writers.threads;
        if self.block_writers.pool.is_none() {
            self.block_writers.pool = Some(BlockPool::start(threads)?);
        }
        // The pool's bytes stay bounded: take outcomes back until this block fits.
        while let Some(pool) = self.block_writers.pool.as_mut() {
            if pool.has_room(job.plain.len()) {
                break;
            }
            match pool.wait_done() {
                Some(done) => self.block_done(done),
                None => break,
            }
        }
        let pool = self.block_writers.pool.as_mut().expect("started above");
        if let Some(done) = pool.submit(job) {
            self.block_done(done);
        }
        self.take_done_blocks(last.then_some(object));
        Ok(())
    }

    /// Applies the block writers' outcomes that are back; with `settle`, waits until
    /// that object has none outstanding (its last block was handed over).
    fn take_done_blocks(&mut self, settle: Option<ObjectRef>) {
        loop {
            let Some(pool) = self.block_writers.pool.as_mut() else {
                return;
            };
            let waiting = settle
                .and_then(|o| self.staged.get(&o))
                .is_some_and(|s| s.in_pool > 0);
            let done = if waiting {
                pool.wait_done()
            } else {
                pool.try_done()
            };
            match done {
                Some(done) => self.block_done(done),
                None => return,
            }
        }
    }

    /// Merges a block's digest into its object's hash, or fails the object with the
    /// block writer's error.
    fn block_done(&mut self, done: BlockDone) {
        let BlockDone {
            object,
            block,
            outcome,
            plain,
        } = done;
        let len = plain.len() as u64;
        self.recycle(plain);
        // An object failed already: its other blocks' outcomes have nothing to go to.
        let Some(s) = self.staged.get_mut(&object) else {
            return;
        };
        s.in_pool -= 1;
        let merged = match (outcome, &mut s.hash) {
            (Ok(digest), ObjectHash::Blocks(merger)) => merger
                .add(digest)
                .map_err(|e| format!("cannot hash block {block}: {e}")),
            (Ok(_), ObjectHash::InOrder { .. }) => {
                Err(format!("internal: block {block} hashed apart"))
            }
            (Err(fault @ pool::BlockFault::Hash(_)), _) => {
                Err(format!("cannot hash block {block}: {fault}"))
            }
            (Err(fault), _) => Err(format!("cannot write block {block}: {fault}")),
        };
        if let Err(reason) = merged {
            self.abort(object, reason, Some(Cause::Receiver));
            return;
        }
        s.hashed += 1;
        s.written += len;
        // No byte is read back: every page written may leave the cache.
        s.writeback.wrote(&s.file, s.written, s.descriptor.size);
    }

    /// Writes one block at its offset and hashes it on this thread (or, hashing in
    /// order, every block whose turn has come).
    fn write_block_here(&mut self, object: ObjectRef, block: u32, plain: &[u8]) -> io::Result<()> {
        let s = self.staged.get_mut(&object).expect("checked");
        let start = block as u64 * s.descriptor.block_plain_size as u64;
        s.file.write_all_at(plain, start)?;
        s.written += plain.len() as u64;
        let size = s.descriptor.size;
        let settled = match &mut s.hash {
            ObjectHash::Blocks(merger) => {
                let digest = block_hash::hash_block(size, start, plain);
                digest
                    .and_then(|d| merger.add(d))
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                s.hashed += 1;
                // No byte is read back: every page written may leave the cache.
                size
            }
            ObjectHash::InOrder {
                hasher,
                next,
                ahead,
            } => {
                if block != *next {
                    ahead.insert(block);
                    return Ok(());
                }
                hasher.update(plain);
                *next += 1;
                // Blocks that decoded early are hashed from the file, in order, now.
                let mut buf = Vec::new();
                while ahead.remove(next) {
                    buf.resize(s.descriptor.block_plain_len(*next) as usize, 0);
                    let at = *next as u64 * s.descriptor.block_plain_size as u64;
                    s.file.read_exact_at(&mut buf, at)?;
                    hasher.update(&buf);
                    *next += 1;
                }
                s.hashed = u64::from(*next);
                // Bytes below the hashed blocks are never read again.
                s.hashed * s.descriptor.block_plain_size as u64
            }
        };
        s.writeback.wrote(&s.file, s.written, settled);
        Ok(())
    }
}

impl Delivery {
    /// Sets how many block writers write and hash big objects' blocks (0: the disk
    /// writer's thread does); takes effect when they start, with the first such block.
    pub fn set_block_threads(&mut self, threads: usize) {
        self.block_writers.threads = threads;
    }

    /// Sends the buffers of written blocks back through `spare` (to the assembler, which
    /// fills the next blocks in them rather than in fresh memory).
    pub fn set_spare_blocks(&mut self, spare: crossbeam_channel::Sender<Vec<u8>>) {
        self.spare_blocks = Some(spare);
    }

    /// Hands a written block's buffer back, or frees it when nobody takes it now.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
        if buf.capacity() > SPARE_MAX {
            return;
        }
        if let Some(spare) = &self.spare_blocks {
            let _ = spare.try_send(buf);
        }
    }
}

impl Staged {
    /// Why the staged bytes are not the object the descriptor announced, if they are not.
    pub(super) fn verify(&self) -> Result<(), String> {
        let d = &self.descriptor;
        if self.hashed != d.block_count() {
            return Err("internal: not every block was written".into());
        }
        let hash = match &self.hash {
            ObjectHash::Blocks(merger) => merger
                .finish()
                .map_err(|e| format!("internal: the block hashes do not cover the object: {e}"))?,
            ObjectHash::InOrder { hasher, .. } => *hasher.finalize().as_bytes(),
        };
        if hash != d.blake3 {
            return Err("blake3 of the reassembled bytes differs from the descriptor's (corrupted or forged data; use --key)".into());
        }
        Ok(())
    }
}
