//! Scanning the outbox: which files are there, which are complete (the settle rule), and
//! what objects each becomes (kind by sub-directory). Complete files are queued as jobs,
//! intel and images apart; files the high side would refuse go to `refused/`.
//!
//! The settle rule: a file is complete once its size and mtime stayed the same for
//! `settle`, or at once when its mtime is already older than `settle` (a writer that
//! renames into place). Outbox events only make a scan happen sooner; they never bypass
//! this rule.

use super::journal::Stamp;
use super::{AfterSend, Job, WatchStats, Watcher};
use crate::source::{self, KindMode, SourceFile};
use gapferry_common::ObjectKind;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// How long a file that cannot be sent is left alone unless it changes.
const UNTIL_IT_CHANGES: Duration = Duration::from_secs(86_400 * 365);

impl Watcher {
    /// Looks at every file of the outbox once; queues those complete.
    pub(super) fn scan(&mut self, stats: &mut WatchStats) {
        let now = Instant::now();
        let mut present = HashSet::new();
        self.settling_until = None;
        for path in self.list_outbox() {
            let rel = path
                .strip_prefix(&self.cfg.outbox)
                .expect("inside")
                .to_string_lossy()
                .into_owned();
            present.insert(rel.clone());
            if !self.queued.contains(&rel) {
                self.consider(rel, path, now, stats);
            }
        }
        self.seen.retain(|k, _| present.contains(k));
        self.pending = present.len();
    }

    /// The outbox's files, without hidden ones and the sent and refused directories.
    fn list_outbox(&self) -> Vec<PathBuf> {
        let skip_dir = match &self.cfg.after_send {
            AfterSend::MoveTo(d) => Some(d.as_path()),
            AfterSend::Delete => None,
        };
        let refused_dir = self.cfg.refused_dir.as_path();
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(&self.cfg.outbox)
            .min_depth(1)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                let hidden = e.file_name().to_string_lossy().starts_with('.');
                !hidden && skip_dir != Some(e.path()) && refused_dir != e.path()
            })
        {
            match entry {
                Ok(e) if e.file_type().is_file() => found.push(e.into_path()),
                Ok(_) => {}
                Err(e) => tracing::warn!("outbox: {e}"),
            }
        }
        found
    }

    /// One file not yet queued: recovered from the journal, still settling, queued,
    /// refused, or left alone until it changes.
    fn consider(&mut self, rel: String, path: PathBuf, now: Instant, stats: &mut WatchStats) {
        let Ok(meta) = std::fs::metadata(&path) else {
            return;
        };
        let st = Stamp::of(&meta);
        if self.journal.sent.get(&rel) == Some(&st) {
            // Sent in full before a restart, not yet moved: move it, do not re-send.
            self.dispose(&rel, &path, &st);
            stats.files_recovered += 1;
            return;
        }
        if !self.settled(&rel, &meta, &st, now) || is_signature_of_present_image(&path) {
            return; // a signature travels with its image
        }
        self.seen.remove(&rel);
        match self.plan(&rel, &path) {
            Ok(objects) => self.queue(Job::new(rel, path, st, objects)),
            Err(e) if e.is_refusal() && self.refuse(&rel, &path, &e.to_string()) => {
                stats.files_failed += 1;
            }
            Err(e) => {
                stats.files_failed += 1;
                tracing::error!(file = %rel, "cannot send: {e}; fix or remove the file");
                // Looked at again only once it changes.
                self.seen.insert(rel, (st, now + UNTIL_IT_CHANGES));
            }
        }
    }

    /// The settle rule; a file still settling sets when the next scan is due.
    fn settled(&mut self, rel: &str, meta: &std::fs::Metadata, st: &Stamp, now: Instant) -> bool {
        let age = meta
            .modified()
            .ok()
            .and_then(|m| SystemTime::now().duration_since(m).ok());
        if age.is_some_and(|age| age >= self.cfg.settle) {
            return true;
        }
        let since = match self.seen.get(rel) {
            Some((prev, since)) if prev == st => *since,
            _ => {
                self.seen.insert(rel.to_string(), (st.clone(), now));
                now
            }
        };
        if now.saturating_duration_since(since) >= self.cfg.settle {
            return true;
        }
        // Due when either clock says settled: the mtime's age or the time seen unchanged.
        let by_seen = since + self.cfg.settle;
        let by_age = age.map(|a| now + (self.cfg.settle - a));
        let due = by_age.map_or(by_seen, |t| t.min(by_seen));
        self.settling_until = Some(self.settling_until.map_or(due, |t| t.min(due)));
        false
    }

    /// Puts a complete file's job in its queue: intel first, images window by window.
    fn queue(&mut self, job: Job) {
        tracing::info!(file = %job.rel, objects = job.objects.len(), "queued");
        self.queued.insert(job.rel.clone());
        if job.is_image() {
            self.images.push_back(job);
        } else {
            self.intel.push_back(job);
        }
    }

    /// The objects a file becomes, by the kind its sub-directory says.
    pub(super) fn plan(
        &self,
        rel: &str,
        path: &Path,
    ) -> Result<Vec<SourceFile>, source::SourceError> {
        let top = rel.split('/').next().unwrap_or("");
        let inner = rel.split_once('/').map_or(rel, |(_, r)| r).to_string();
        let mode = match top {
            "misp" => KindMode::Force(ObjectKind::Misp),
            "stix" => KindMode::Force(ObjectKind::Stix),
            "files" => KindMode::Force(ObjectKind::File),
            "images" => KindMode::Force(ObjectKind::Image),
            _ => KindMode::Auto,
        };
        let name = if rel.contains('/') && matches!(top, "misp" | "stix" | "files" | "images") {
            inner
        } else {
            rel.to_string()
        };
        source::classify_named_with(path, name, mode, &self.cfg.source)
    }
}

fn is_signature_of_present_image(path: &Path) -> bool {
    gapferry_feeds::signature_target(path).is_some()
}
