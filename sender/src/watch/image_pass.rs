//! Images, window by window: the image in progress is sent one window (about 11 MB) per
//! call, so the scheduler can send pending intel between two windows; each pass after the
//! first starts the image again with fresh repair symbols.

use super::{Job, WatchStats, Watcher};
use crate::error::StopOnSink;
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use crate::transfer::{self, ObjectTransfer, TransferError};
use gapferry_common::{ObjectDescriptor, ObjectKind};
use std::io;

/// The image being sent: its job, the image object's index in it, its descriptor (read
/// once for every pass), the pass, the transfer.
pub(super) struct ActiveImage {
    pub(super) job: Job,
    at: usize,
    descriptor: ObjectDescriptor,
    pass: u8,
    transfer: ObjectTransfer,
}

impl Watcher {
    /// Sends one window of the image in progress, starting the next image if none is;
    /// true if it sent anything.
    pub(super) fn step_image(
        &mut self,
        session: &mut SenderSession,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<bool> {
        match self.active.take() {
            Some(active) => self.continue_image(session, active, progress, stats)?,
            None => {
                let Some(job) = self.images.pop_front() else {
                    return Ok(false);
                };
                self.start_image(session, job, progress, stats)?;
            }
        }
        Ok(true)
    }

    /// Sends the image's signature (small) whole, then opens the image's first pass.
    fn start_image(
        &mut self,
        session: &mut SenderSession,
        mut job: Job,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<()> {
        let at = job
            .objects
            .iter()
            .position(|o| o.kind == ObjectKind::Image)
            .expect("an image job");
        let before: Vec<SourceFile> = job.objects[..at].to_vec();
        for o in before {
            let (id, r) = session.send_whole(&o, session.config().passes, progress);
            job.ids.push(id);
            if let Err(e) = r.stop_on_sink()? {
                tracing::error!(file = %job.rel, "{e}");
                job.failed = true;
            }
        }
        let id = session.allocate_object();
        job.ids.push(id);
        let passes = session.config().passes;
        let max_symbol = session.max_symbol();
        let opened = transfer::outline(&job.objects[at], max_symbol, passes)
            .and_then(|d| Ok((start_pass(session, &job.objects[at], id, &d, 1)?, d)));
        match opened.stop_on_sink()? {
            Ok((transfer, descriptor)) => {
                self.active = Some(ActiveImage {
                    job,
                    at,
                    descriptor,
                    pass: 1,
                    transfer,
                })
            }
            Err(e) => {
                tracing::error!(file = %job.rel, "{e}");
                self.finish_image(session, job, id, true, stats);
            }
        }
        Ok(())
    }

    /// Sends the next window; at the end of a pass, closes it and opens the next pass or
    /// completes the job.
    fn continue_image(
        &mut self,
        session: &mut SenderSession,
        mut a: ActiveImage,
        progress: &Progress,
        stats: &mut WatchStats,
    ) -> io::Result<()> {
        let id = a.transfer.id();
        let more = match a.transfer.send_window(session, progress).stop_on_sink()? {
            Ok(more) => more,
            Err(e) => {
                self.image_failed(session, a.job, id, &e, stats);
                return Ok(());
            }
        };
        if more {
            self.active = Some(a);
            return Ok(());
        }
        match a.transfer.finish(session).stop_on_sink()? {
            // The next passes carry the hash this one learned from their first copy.
            Ok(h) => a.descriptor.blake3 = h,
            Err(e) => {
                self.image_failed(session, a.job, id, &e, stats);
                return Ok(());
            }
        }
        if a.pass >= session.config().passes {
            self.finish_image(session, a.job, id, false, stats);
            return Ok(());
        }
        let pass = a.pass + 1;
        match start_pass(session, &a.job.objects[a.at], id, &a.descriptor, pass).stop_on_sink()? {
            Ok(transfer) => {
                self.active = Some(ActiveImage {
                    transfer,
                    pass,
                    ..a
                })
            }
            Err(e) => self.image_failed(session, a.job, id, &e, stats),
        }
        Ok(())
    }

    fn image_failed(
        &mut self,
        session: &mut SenderSession,
        job: Job,
        id: u32,
        e: &TransferError,
        stats: &mut WatchStats,
    ) {
        tracing::error!(file = %job.rel, "{e}");
        self.finish_image(session, job, id, true, stats);
    }

    fn finish_image(
        &mut self,
        session: &mut SenderSession,
        mut job: Job,
        id: u32,
        failed: bool,
        stats: &mut WatchStats,
    ) {
        session.object_done(id);
        job.failed |= failed;
        self.complete(session, job, stats);
    }
}

/// Opens pass `pass` of the image `o` (described by `d`) as object `id`.
fn start_pass(
    session: &mut SenderSession,
    o: &SourceFile,
    id: u32,
    d: &ObjectDescriptor,
    pass: u8,
) -> Result<ObjectTransfer, TransferError> {
    let d = ObjectDescriptor { pass, ..d.clone() };
    ObjectTransfer::start(session, id, o, &d)
}
