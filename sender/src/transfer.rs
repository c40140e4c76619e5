//! Sending one object: describe it, then stream its blocks window by window through the
//! interleaver, with descriptor copies along the way.
//!
//! [`ObjectTransfer`] sends one window per call, so a scheduler can slip small objects
//! between the windows of a multi-GB image.

use crate::error::StopOnSink;
use crate::prepare::{hash_content, Content, Encoding, Preparer};
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::layout;
use gapferry_common::send::ObjectSchedule;
use std::io;
use std::time::UNIX_EPOCH;

pub use crate::error::TransferError;

/// Reads `file` once to build its descriptor (size and blake3), hashing its blocks on as
/// many threads as [`crate::session::default_threads`]; [`SenderSession::describe`] uses the session's
/// `--threads`.
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
    let size = content.size()?;
    let block_plain_size = layout::block_plain_size(max_symbol);
    let blake3 = hash_content(&content, size, block_plain_size as u64, threads)?;
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
        blake3,
        block_plain_size,
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
        let windows = Preparer::start(file, d, encoding)?;
        let mut schedule = ObjectSchedule::new(id, d.clone())
            .map_err(|e| TransferError::Sink(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        session
            .write_all(&mut schedule)
            .map_err(TransferError::Sink)?;
        Ok(ObjectTransfer {
            file: file.clone(),
            schedule,
            windows,
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
        let Some(prepared) = self.windows.next_window() else {
            return Ok(false);
        };
        let prepared = prepared?;
        self.schedule.add_window(prepared.blocks);
        session
            .write_all(&mut self.schedule)
            .map_err(TransferError::Sink)?;
        progress.advance(prepared.plain_bytes);
        Ok(!self.schedule.blocks_done())
    }

    /// Sends the closing descriptor copies and checks the source did not change.
    pub fn finish(mut self, session: &mut SenderSession) -> Result<(), TransferError> {
        self.schedule.close();
        session
            .write_all(&mut self.schedule)
            .map_err(TransferError::Sink)?;
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

/// Sending whole files through a session; here rather than in [`crate::session`] so that
/// module knows nothing of files.
impl SenderSession {
    /// Reads `file` once to build its descriptor, on the session's `threads`.
    pub fn describe(&self, file: &SourceFile) -> Result<ObjectDescriptor, TransferError> {
        let cfg = self.config();
        describe_on(file, self.max_symbol(), cfg.passes, cfg.threads)
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
                let (id, Some(d)) = &objects[i] else { continue };
                let d = ObjectDescriptor { pass, ..d.clone() };
                if let Err(e) = send_object(self, *id, file, &d, progress).stop_on_sink()? {
                    tracing::error!(file = %file.path.display(), object = id, "{e}");
                    reports[i].error.get_or_insert(e.to_string());
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
        let result =
            describe_on(file, self.max_symbol(), passes, self.config().threads).and_then(|d| {
                for pass in 1..=passes {
                    let d = ObjectDescriptor { pass, ..d.clone() };
                    send_object(self, id, file, &d, progress)?;
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
