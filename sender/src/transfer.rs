//! Sending one object: describe it, then stream its blocks window by window through the
//! interleaver, with descriptor copies along the way.
//!
//! [`ObjectTransfer`] sends one window per call, so a scheduler can slip small objects
//! between the windows of a multi-GB image.

use crate::prepare::{Encoding, Preparer};
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::{Interleaver, DESCRIPTOR_EVERY};
use gapferry_common::layout;
use std::io;
use std::path::PathBuf;
use std::time::UNIX_EPOCH;
use thiserror::Error;

/// Descriptor copies every object gets at least: without one the object is lost, so a
/// small object (a few datagrams) must not depend on one or two copies surviving.
const MIN_DESCRIPTORS: u32 = 4;

/// Why an object could not be sent.
#[derive(Debug, Error)]
pub enum TransferError {
    /// The source could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: io::Error,
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
        error: source,
    }
}

/// Reads `file` once to build its descriptor (size and blake3).
pub fn describe(
    file: &SourceFile,
    max_symbol: u16,
    passes: u8,
) -> Result<ObjectDescriptor, TransferError> {
    let reader = file.open().map_err(read_err(file))?;
    let mut hasher = blake3::Hasher::new();
    let size = io::copy(
        &mut io::BufReader::with_capacity(1 << 20, reader),
        &mut hasher,
    )
    .map_err(read_err(file))?;
    let mtime = match &file.bytes {
        Some(_) => 0,
        None => std::fs::metadata(&file.path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64),
    };
    Ok(ObjectDescriptor {
        kind: file.kind,
        name: file.name.clone(),
        size,
        blake3: *hasher.finalize().as_bytes(),
        block_plain_size: layout::block_plain_size(max_symbol),
        mtime,
        pass: 1,
        passes,
    })
}

/// One pass of one object in progress.
pub struct ObjectTransfer {
    id: u32,
    file: SourceFile,
    descriptor: ObjectDescriptor,
    windows: Preparer,
    next_block: u32,
    sent_since_descriptor: u64,
    copies: u32,
}

impl ObjectTransfer {
    /// Opens `file` and sends the first descriptor copy of object `id` (pass `d.pass`).
    pub fn start(
        session: &mut SenderSession,
        id: u32,
        file: &SourceFile,
        d: &ObjectDescriptor,
    ) -> Result<Self, TransferError> {
        let encoding = Encoding {
            session: session.id(),
            object: id,
            max_symbol: session.max_symbol(),
            zstd_level: session.config().zstd_level,
            repair_percent: session.config().repair_percent,
        };
        let windows = Preparer::start(file, d, encoding)?;
        session
            .emit_descriptor(id, d)
            .map_err(TransferError::Sink)?;
        Ok(ObjectTransfer {
            id,
            file: file.clone(),
            descriptor: d.clone(),
            windows,
            next_block: 0,
            sent_since_descriptor: 0,
            copies: 1,
        })
    }

    /// The object id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The source being sent.
    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// Whether every block has been sent.
    pub fn blocks_done(&self) -> bool {
        self.next_block as u64 >= self.descriptor.block_count()
    }

    /// Sends the next window of up to [`INTERLEAVE_DEPTH`] blocks; true while more remain.
    pub fn send_window(
        &mut self,
        session: &mut SenderSession,
        progress: &Progress,
    ) -> Result<bool, TransferError> {
        let d = &self.descriptor;
        let blocks = d.block_count() as u32;
        let Some(prepared) = self.windows.next_window() else {
            return Ok(false);
        };
        let prepared = prepared?;
        let (start, count) = (self.next_block, prepared.blocks.len() as u32);
        let end = start + count;
        let mut window = Interleaver::new();
        for block in prepared.blocks {
            window.push(block);
        }
        // A small object gets a copy half-way through too, so copies are spread out.
        let halfway = (start == 0 && end == blocks)
            .then(|| window.remaining() as u64 / 2)
            .filter(|&h| h > 0 && h < DESCRIPTOR_EVERY);
        while session
            .emit_with(|w, out| window.next_datagram(w, out))
            .map_err(TransferError::Sink)?
        {
            self.sent_since_descriptor += 1;
            if self.sent_since_descriptor.is_multiple_of(DESCRIPTOR_EVERY)
                || Some(self.sent_since_descriptor) == halfway
            {
                session
                    .emit_descriptor(self.id, d)
                    .map_err(TransferError::Sink)?;
                self.copies += 1;
            }
        }
        progress.advance(prepared.plain_bytes);
        self.next_block = end;
        Ok(end < blocks)
    }

    /// Sends the closing descriptor copies and checks the source did not change.
    pub fn finish(self, session: &mut SenderSession) -> Result<(), TransferError> {
        for _ in 0..MIN_DESCRIPTORS.saturating_sub(self.copies).max(1) {
            session
                .emit_descriptor(self.id, &self.descriptor)
                .map_err(TransferError::Sink)?;
        }
        self.windows.verify()
    }
}

/// Sends one pass of object `id` (described by `d`) from `file`, start to end.
pub fn send_object(
    session: &mut SenderSession,
    id: u32,
    file: &SourceFile,
    d: &ObjectDescriptor,
    progress: &Progress,
) -> Result<(), TransferError> {
    let mut t = ObjectTransfer::start(session, id, file, d)?;
    while t.send_window(session, progress)? {}
    t.finish(session)
}
