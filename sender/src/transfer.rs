//! Sending one file as one object: describe it, then stream its blocks through the
//! interleaver, with descriptor copies along the way.

use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use gapferry_common::compress;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::{Interleaver, OutgoingBlock, DESCRIPTOR_EVERY, INTERLEAVE_DEPTH};
use gapferry_common::layout;
use gapferry_common::ObjectKind;
use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::UNIX_EPOCH;
use thiserror::Error;

/// Descriptor copies every object gets at least: without one the object is lost, so a
/// small object (a few datagrams) must not depend on one or two copies surviving.
const MIN_DESCRIPTORS: u32 = 4;

/// Why a file could not be sent.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file changed while it was being sent; the high side will refuse it.
    #[error("{0} changed while it was being sent; send it again once it is complete")]
    Changed(PathBuf),
    /// The datagram sink failed: the whole session stops.
    #[error("cannot send datagrams: {0}")]
    Sink(io::Error),
}

fn read_err(file: &SourceFile) -> impl Fn(io::Error) -> TransferError + '_ {
    move |source| TransferError::Read {
        path: file.path.clone(),
        source,
    }
}

/// Reads `file` once to build its descriptor (size and blake3).
pub fn describe(
    file: &SourceFile,
    kind: ObjectKind,
    max_symbol: u16,
    passes: u8,
) -> Result<ObjectDescriptor, TransferError> {
    let f = File::open(&file.path).map_err(read_err(file))?;
    let meta = f.metadata().map_err(read_err(file))?;
    let mut hasher = blake3::Hasher::new();
    let size = io::copy(&mut io::BufReader::with_capacity(1 << 20, f), &mut hasher)
        .map_err(read_err(file))?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs() as i64);
    Ok(ObjectDescriptor {
        kind,
        name: file.name.clone(),
        size,
        blake3: *hasher.finalize().as_bytes(),
        block_plain_size: layout::block_plain_size(max_symbol),
        mtime,
        pass: 1,
        passes,
    })
}

/// Sends one pass of object `id` (described by `d`) from `file`.
pub fn send_object(
    session: &mut SenderSession,
    id: u32,
    file: &SourceFile,
    d: &ObjectDescriptor,
    progress: &Progress,
) -> Result<(), TransferError> {
    let mut f = File::open(&file.path).map_err(read_err(file))?;
    let cfg = session.config().clone();
    let max_symbol = session.max_symbol();
    let sid = session.id();
    session
        .emit_descriptor(id, d)
        .map_err(TransferError::Sink)?;
    let mut copies = 1u32;
    let blocks = d.block_count() as u32;
    let mut hasher = blake3::Hasher::new();
    let mut sent_since_descriptor = 0u64;
    let mut start = 0u32;
    while start < blocks {
        let end = (start + INTERLEAVE_DEPTH as u32).min(blocks);
        let mut window = Interleaver::new();
        let mut window_bytes = 0u64;
        for b in start..end {
            let plain_len = d.block_plain_len(b) as usize;
            let mut plain = vec![0u8; plain_len];
            f.read_exact(&mut plain).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    TransferError::Changed(file.path.clone())
                } else {
                    read_err(file)(e)
                }
            })?;
            hasher.update(&plain);
            let (codec, data) = compress::compress_block(&plain, cfg.zstd_level);
            window_bytes += plain_len as u64;
            window.push(OutgoingBlock::new(
                sid,
                id,
                b,
                codec,
                plain_len as u32,
                data,
                max_symbol,
                cfg.repair_percent,
                d.pass as u32,
            ));
        }
        // A small object gets a copy half-way through too, so copies are spread out.
        let halfway = (start == 0 && end == blocks)
            .then(|| window.remaining() as u64 / 2)
            .filter(|&h| h > 0 && h < DESCRIPTOR_EVERY);
        while session
            .emit_with(|w, out| window.next_datagram(w, out))
            .map_err(TransferError::Sink)?
        {
            sent_since_descriptor += 1;
            if sent_since_descriptor % DESCRIPTOR_EVERY == 0
                || Some(sent_since_descriptor) == halfway
            {
                session
                    .emit_descriptor(id, d)
                    .map_err(TransferError::Sink)?;
                copies += 1;
            }
        }
        progress.advance(window_bytes);
        start = end;
    }
    for _ in 0..MIN_DESCRIPTORS.saturating_sub(copies).max(1) {
        session
            .emit_descriptor(id, d)
            .map_err(TransferError::Sink)?;
    }
    let mut extra = [0u8; 1];
    let grew = f.read(&mut extra).map_err(read_err(file))? > 0;
    if grew || *hasher.finalize().as_bytes() != d.blake3 {
        return Err(TransferError::Changed(file.path.clone()));
    }
    Ok(())
}
