//! Staging: an object's bytes land in `<state>/staging/<session>-<object>.part` as its
//! blocks decode, in any order, and are hashed with blake3 as they are written: each
//! block apart, merged into the object's blake3 by `block_hash` whatever the order, when
//! blocks are cut on blake3's 1 024-byte chunks (as every sender cuts them); otherwise in
//! block order, blocks that decoded early read back from the file when their turn comes.
//! Before the first byte, the object must fit the disk (with [`DISK_RESERVE`] left) and,
//! for a document read into memory, the document limit.

use super::{Delivery, DISK_RESERVE};
use gapferry_common::block_hash::{self, ObjectHasher};
use gapferry_common::{ObjectDescriptor, ObjectKind, ObjectRef};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

/// An object being written to its staging file.
pub(super) struct Staged {
    pub(super) descriptor: ObjectDescriptor,
    pub(super) file: File,
    pub(super) path: PathBuf,
    hash: ObjectHash,
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
        self.staged.insert(
            object,
            Staged {
                hash: ObjectHash::for_object(&descriptor),
                descriptor,
                file,
                path,
                hashed: 0,
                written: 0,
                writeback: Default::default(),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    /// Writes one decoded block at its offset and hashes it (or, hashing in order,
    /// every block whose turn has come).
    pub(super) fn write_block(
        &mut self,
        object: ObjectRef,
        block: u32,
        plain: &[u8],
    ) -> io::Result<()> {
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
    /// Sends the buffers of written blocks back through `spare` (to the assembler, which
    /// fills the next blocks in them rather than in fresh memory).
    pub fn set_spare_blocks(&mut self, spare: crossbeam_channel::Sender<Vec<u8>>) {
        self.spare_blocks = Some(spare);
    }

    /// Hands a written block's buffer back, or frees it when nobody takes it now.
    pub(super) fn recycle(&self, buf: Vec<u8>) {
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
