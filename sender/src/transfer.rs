//! Sending one object: describe it, then stream its blocks window by window through the
//! interleaver, with descriptor copies along the way.
//!
//! [`ObjectTransfer`] sends one window per call, so a scheduler can slip small objects
//! between the windows of a multi-GB image.
//!
//! A file is read once per pass: [`outline`] describes it from its metadata, without its
//! blake3, and the pass learns the hash from the blocks it reads (see [`crate::prepare`]).
//! An object of one window is read whole before its first datagram, so every copy of its
//! descriptor carries the hash; a larger one's copies carry it from its second-to-last
//! window on. Later passes and resends carry it from their first copy.

use crate::error::StopOnSink;
use crate::prepare::{hash_content, Content, Encoding, Preparer, Window};
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use gapferry_common::control::{ObjectDescriptor, BLAKE3_LATER};
use gapferry_common::emit::INTERLEAVE_DEPTH;
use gapferry_common::layout;
use gapferry_common::send::ObjectSchedule;
use std::io;
use std::time::UNIX_EPOCH;

pub use crate::error::TransferError;

/// Reads `file` once to build its whole descriptor (size and blake3), hashing its blocks
/// on as many threads as [`crate::session::default_threads`]. Sending does not need it
/// ([`outline`] and the pass learn the hash); for tools and tests that want the hash first.
pub fn describe(
    file: &SourceFile,
    max_symbol: u16,
    passes: u8,
) -> Result<ObjectDescriptor, TransferError> {
    describe_on(file, max_symbol, passes, crate::session::default_threads())
}

/// [`describe`] on `threads` threads: the content is read in blocks, each hashed apart on
/// the thread that read it, and the block hashes merged into the object's blake3.
pub fn describe_on(
    file: &SourceFile,
    max_symbol: u16,
    passes: u8,
    threads: usize,
) -> Result<ObjectDescriptor, TransferError> {
    let content = Content::open(file)?;
    let mut d = outline(file, max_symbol, passes)?;
    d.size = content.size()?;
    d.blake3 = hash_content(&content, d.size, d.block_plain_size as u64, threads)?;
    Ok(d)
}

/// The descriptor of `file` without reading it: its size from its metadata, its blake3
/// left for the pass that reads it to learn ([`BLAKE3_LATER`]).
pub fn outline(
    file: &SourceFile,
    max_symbol: u16,
    passes: u8,
) -> Result<ObjectDescriptor, TransferError> {
    let (size, mtime) = match &file.bytes {
        Some(b) => (b.len(), 0),
        None => {
            let m = std::fs::metadata(&file.path).map_err(|error| TransferError::Read {
                path: file.path.clone(),
                error,
            })?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            (m.len(), mtime)
        }
    };
    Ok(ObjectDescriptor {
        kind: file.kind,
        name: file.name.clone(),
        size,
        blake3: BLAKE3_LATER,
        block_plain_size: layout::block_plain_size(max_symbol),
        mtime,
        pass: 1,
        passes,
    })
}

/// One pass of one object in progress.
pub struct ObjectTransfer {
    file: SourceFile,
    schedule: ObjectSchedule,
    windows: Preparer,
    /// A window read before the first datagram (to learn a small object's hash).
    first: Option<Window>,
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
            threads: session.config().threads,
        };
        let mut windows = Preparer::start(file, d, encoding)?;
        // An object of one window is read whole now, so its first copy carries its hash.
        let first = match windows.blake3() {
            None if d.block_count() <= INTERLEAVE_DEPTH as u64 => {
                windows.next_window().transpose()?
            }
            _ => None,
        };
        let d = ObjectDescriptor {
            blake3: windows.blake3().unwrap_or(BLAKE3_LATER),
            ..d.clone()
        };
        let mut schedule = ObjectSchedule::new(id, d)
            .map_err(|e| TransferError::Sink(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        session
            .write_all(&mut schedule)
            .map_err(TransferError::Sink)?;
        Ok(ObjectTransfer {
            file: file.clone(),
            schedule,
            windows,
            first,
        })
    }

    /// The object id.
    pub fn id(&self) -> u32 {
        self.schedule.object()
    }

    /// The source being sent.
    pub fn file(&self) -> &SourceFile {
        &self.file
    }

    /// Whether every block has been sent.
    pub fn blocks_done(&self) -> bool {
        self.schedule.blocks_done()
    }

    /// Sends the next window of up to [`INTERLEAVE_DEPTH`] blocks; true while more remain.
    ///
    /// [`INTERLEAVE_DEPTH`]: gapferry_common::emit::INTERLEAVE_DEPTH
    pub fn send_window(
        &mut self,
        session: &mut SenderSession,
        progress: &Progress,
    ) -> Result<bool, TransferError> {
        let Some(prepared) = self
            .first
            .take()
            .map(Ok)
            .or_else(|| self.windows.next_window())
        else {
            return Ok(false);
        };
        let prepared = prepared?;
        if let (false, Some(h)) = (self.schedule.blake3_known(), self.windows.blake3()) {
            self.schedule.set_blake3(h);
        }
        self.schedule.add_window(prepared.blocks);
        session
            .write_all(&mut self.schedule)
            .map_err(TransferError::Sink)?;
        progress.advance(prepared.plain_bytes);
        Ok(!self.schedule.blocks_done())
    }

    /// Sends the closing descriptor copies and checks the source did not change; the
    /// object's blake3, for the passes and resends that follow.
    pub fn finish(mut self, session: &mut SenderSession) -> Result<[u8; 32], TransferError> {
        if !self.schedule.blake3_known() {
            match self.windows.blake3() {
                // Every window is out, so the hash is known.
                Some(h) => self.schedule.set_blake3(h),
                // The source changed while it was read: its hash is never sent, so the
                // receiver cannot deliver the mix of two versions it decoded.
                None => {
                    return Err(self.windows.verify().err().unwrap_or_else(|| {
                        TransferError::Sink(io::Error::other("the object's hash is unknown"))
                    }))
                }
            }
        }
        self.schedule.close();
        session
            .write_all(&mut self.schedule)
            .map_err(TransferError::Sink)?;
        self.windows.verify()
    }
}

/// Sends one pass of object `id` (described by `d`) from `file`, start to end; the
/// object's blake3.
pub fn send_object(
    session: &mut SenderSession,
    id: u32,
    file: &SourceFile,
    d: &ObjectDescriptor,
    progress: &Progress,
) -> Result<[u8; 32], TransferError> {
    let mut t = ObjectTransfer::start(session, id, file, d)?;
    while t.send_window(session, progress)? {}
    t.finish(session)
}

/// Sending whole files through a session; here rather than in [`crate::session`] so that
/// module knows nothing of files.
impl SenderSession {
    /// The descriptor of `file` for this session, its blake3 left to the first pass
    /// ([`outline`]).
    pub fn describe(&self, file: &SourceFile) -> Result<ObjectDescriptor, TransferError> {
        outline(file, self.max_symbol(), self.config().passes)
    }

    /// Sends `files`, each as one object, in every pass (pass 1 of all, then pass 2...).
    ///
    /// A file that fails (vanished, unreadable, changed) is reported and the others go on.
    pub fn send_files(
        &mut self,
        files: &[SourceFile],
        progress: &Progress,
    ) -> io::Result<Vec<SendReport>> {
        let passes = self.config().passes;
        let mut objects: Vec<(u32, Option<ObjectDescriptor>)> = Vec::with_capacity(files.len());
        let mut reports: Vec<SendReport> = Vec::with_capacity(files.len());
        for pass in 1..=passes {
            for (i, file) in files.iter().enumerate() {
                progress.set_message(file.name.clone());
                if pass == 1 {
                    let id = self.allocate_object();
                    let d = self.describe(file);
                    let error = d.as_ref().err().map(|e| e.to_string());
                    if let Some(e) = &error {
                        tracing::error!(file = %file.path.display(), "{e}");
                        self.object_done(id);
                    }
                    reports.push(SendReport {
                        name: file.name.clone(),
                        object: id,
                        error,
                    });
                    objects.push((id, d.ok()));
                }
                let (id, Some(d)) = &mut objects[i] else {
                    continue;
                };
                let pass_d = ObjectDescriptor { pass, ..d.clone() };
                match send_object(self, *id, file, &pass_d, progress).stop_on_sink()? {
                    // Later passes carry the hash this one learned from their first copy.
                    Ok(h) => d.blake3 = h,
                    Err(e) => {
                        tracing::error!(file = %file.path.display(), object = *id, "{e}");
                        reports[i].error.get_or_insert(e.to_string());
                    }
                }
                if pass == passes {
                    self.object_done(*id);
                    let outcome = if reports[i].error.is_some() {
                        "failed"
                    } else {
                        "sent"
                    };
                    self.metrics().object(file.kind, outcome);
                }
            }
        }
        Ok(reports)
    }

    /// Sends `file` whole under a new object id, its `passes` passes back to back.
    pub fn send_whole(
        &mut self,
        file: &SourceFile,
        passes: u8,
        progress: &Progress,
    ) -> (u32, Result<(), TransferError>) {
        let id = self.allocate_object();
        let result = outline(file, self.max_symbol(), passes).and_then(|mut d| {
            for pass in 1..=passes {
                let pass_d = ObjectDescriptor { pass, ..d.clone() };
                d.blake3 = send_object(self, id, file, &pass_d, progress)?;
            }
            Ok(())
        });
        self.object_done(id);
        (id, result)
    }
}

/// The outcome of sending one file.
#[derive(Debug)]
pub struct SendReport {
    /// The file.
    pub name: String,
    /// The object id it was sent as.
    pub object: u32,
    /// What went wrong, if anything.
    pub error: Option<String>,
}
