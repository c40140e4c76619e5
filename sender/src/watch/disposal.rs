//! What becomes of a file once its objects went out, or once it is refused: journalled
//! and moved to the sent directory (or deleted), or moved to `refused/` with a `.reason`
//! file; a failed one stays in the outbox.

use super::journal::{JournalEntry, JournalEvent, Stamp};
use super::{AfterSend, Job, WatchStats, Watcher};
use crate::session::SenderSession;
use std::path::Path;

impl Watcher {
    /// Journals and moves away a file whose objects all went out; leaves a failed one.
    pub(super) fn complete(&mut self, session: &SenderSession, job: Job, stats: &mut WatchStats) {
        self.queued.remove(&job.rel);
        if job.failed {
            for o in &job.objects {
                session.metrics().object(o.kind, "failed");
            }
            stats.files_failed += 1;
            tracing::warn!(file = %job.rel, "not sent in full; it stays in the outbox and is sent again when it changes or at the next start");
            return;
        }
        let still_same = std::fs::metadata(&job.path).is_ok_and(|m| Stamp::of(&m) == job.stamp);
        if !still_same {
            tracing::warn!(file = %job.rel, "changed while it was being sent; it will be sent again");
            return;
        }
        let entry = JournalEntry::new(
            JournalEvent::Sent,
            &job.rel,
            &job.stamp,
            format!("{:016x}", session.id()),
            job.ids.clone(),
        );
        if let Err(e) = self.journal.append(&entry) {
            tracing::error!(
                "cannot write the journal {}: {e}",
                self.journal.path.display()
            );
        }
        tracing::info!(file = %job.rel, objects = ?job.ids, "sent");
        for o in &job.objects {
            session.metrics().object(o.kind, "sent");
        }
        stats.files_sent += 1;
        self.dispose(&job.rel, &job.path, &job.stamp);
    }

    /// Moves a file the high side would refuse to the refused directory with its reason;
    /// false when it cannot be moved (it then stays, looked at again once it changes).
    pub(super) fn refuse(&self, rel: &str, path: &Path, reason: &str) -> bool {
        let dest = self.cfg.refused_dir.join(rel);
        let mut reason_file = dest.clone().into_os_string();
        reason_file.push(".reason");
        let moved = dest
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&reason_file, format!("{reason}\n")))
            .and_then(|()| std::fs::rename(path, &dest));
        match moved {
            Ok(()) => {
                tracing::error!(file = %rel, moved_to = %dest.display(), "refused, not sent: {reason}; fix it and put it back in the outbox");
                true
            }
            Err(e) => {
                tracing::error!(file = %rel, "refused, not sent: {reason}; and it cannot be moved to {}: {e}; fix or remove the file", dest.display());
                false
            }
        }
    }

    /// Moves (or deletes) a file sent in full and journals that; the carousel remembers
    /// where it went.
    pub(super) fn dispose(&mut self, rel: &str, path: &Path, st: &Stamp) {
        let result = match &self.cfg.after_send {
            AfterSend::Delete => std::fs::remove_file(path),
            AfterSend::MoveTo(dir) => {
                let dest = dir.join(rel);
                let moved = dest
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::rename(path, &dest));
                if moved.is_ok() && self.cfg.resend_last > 0 {
                    self.recent.push_back((rel.to_string(), dest));
                    while self.recent.len() > self.cfg.resend_last {
                        self.recent.pop_front();
                    }
                }
                moved
            }
        };
        match result {
            Ok(()) => {
                let e = JournalEntry::bare(JournalEvent::Moved, rel, st);
                if let Err(e) = self.journal.append(&e) {
                    tracing::error!("cannot write the journal: {e}");
                }
                self.journal.sent.remove(rel);
            }
            Err(e) => {
                tracing::error!(file = %rel, "sent, but cannot move or delete it: {e}; fix the permissions (it will not be sent again)");
                self.journal.sent.insert(rel.to_string(), st.clone());
            }
        }
    }
}
