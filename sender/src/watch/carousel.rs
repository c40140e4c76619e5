//! The carousel: the last files sent are sent again every `resend_every`, from where they
//! were moved, so a receiver that missed them fills the gap. An unchanged file is not
//! re-read to describe it: its descriptor (size and blake3) is kept, keyed by the file's
//! identity (path, size, mtime, inode), so only the pass itself reads it.

use super::Watcher;
use crate::error::StopOnSink;
use crate::progress::Progress;
use crate::session::SenderSession;
use crate::source::SourceFile;
use crate::transfer::{self, TransferError};
use gapferry_common::ObjectDescriptor;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Instant;

/// What makes a file on disk the same file as before: a change to any part means it is
/// read again.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    size: u64,
    mtime_ns: i128,
    device: u64,
    inode: u64,
}

impl FileIdentity {
    fn of(path: &std::path::Path) -> io::Result<Self> {
        let m = std::fs::metadata(path)?;
        Ok(FileIdentity {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            device: m.dev(),
            inode: m.ino(),
        })
    }
}

/// Descriptors of whole files already read once, by path and name on the high side.
#[derive(Default)]
pub(super) struct DescriptorCache {
    known: HashMap<(PathBuf, String), (FileIdentity, ObjectDescriptor)>,
    /// How many descriptors were computed by reading the file (for tests and logs).
    pub(super) reads: u64,
}

impl DescriptorCache {
    /// The descriptor of `file`, read (on `threads` threads) only when the file is new or
    /// changed. A split MISP event (content in memory) is hashed every time: it costs
    /// nothing to speak of.
    pub(super) fn describe(
        &mut self,
        file: &SourceFile,
        max_symbol: u16,
        threads: usize,
    ) -> Result<ObjectDescriptor, TransferError> {
        if file.bytes.is_some() {
            return transfer::describe_on(file, max_symbol, 1, threads);
        }
        let key = (file.path.clone(), file.name.clone());
        let identity = FileIdentity::of(&file.path).map_err(|error| TransferError::Read {
            path: file.path.clone(),
            error,
        })?;
        if let Some((known, d)) = self.known.get(&key) {
            if *known == identity
                && d.block_plain_size == gapferry_common::layout::block_plain_size(max_symbol)
            {
                return Ok(d.clone());
            }
        }
        let d = transfer::describe_on(file, max_symbol, 1, threads)?;
        self.reads += 1;
        self.known.insert(key, (identity, d.clone()));
        Ok(d)
    }

    /// Forgets every file not in `keep`.
    pub(super) fn retain(&mut self, keep: &[(String, PathBuf)]) {
        self.known
            .retain(|(path, _), _| keep.iter().any(|(_, p)| p == path));
    }
}

impl Watcher {
    /// Whether the carousel is due: on, something to resend, no image in progress.
    pub(super) fn resend_due(&self) -> bool {
        self.cfg.resend_last > 0
            && !self.recent.is_empty()
            && self.active.is_none()
            && self.last_resend.elapsed() >= self.cfg.resend_every
    }

    /// The carousel: sends the last files again from where they were moved.
    pub(super) fn resend(
        &mut self,
        session: &mut SenderSession,
        progress: &Progress,
    ) -> io::Result<()> {
        self.last_resend = Instant::now();
        let recent: Vec<(String, PathBuf)> = self.recent.iter().cloned().collect();
        self.descriptors.retain(&recent);
        tracing::info!(
            files = recent.len(),
            "carousel: sending the last files again"
        );
        for (rel, path) in recent {
            let Ok(objects) = self.plan(&rel, &path) else {
                continue;
            };
            for o in objects {
                if let Err(e) = self.resend_object(session, &o, progress)? {
                    tracing::debug!(file = %rel, "carousel: {e}");
                }
            }
        }
        Ok(())
    }

    /// Sends one object of the carousel in one pass; the outer error stops the session.
    fn resend_object(
        &mut self,
        session: &mut SenderSession,
        o: &SourceFile,
        progress: &Progress,
    ) -> io::Result<Result<(), TransferError>> {
        let id = session.allocate_object();
        let sent = self
            .descriptors
            .describe(o, session.max_symbol(), session.config().threads)
            .and_then(|d| transfer::send_object(session, id, o, &d, progress));
        session.object_done(id);
        sent.stop_on_sink()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_common::ObjectKind;

    fn whole(path: &std::path::Path) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            name: "img.tar.gz".into(),
            size: std::fs::metadata(path).unwrap().len(),
            kind: ObjectKind::File,
            bytes: None,
        }
    }

    #[test]
    fn an_unchanged_file_is_described_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.tar.gz");
        std::fs::write(&p, b"first content").unwrap();
        let mut cache = DescriptorCache::default();
        let a = cache.describe(&whole(&p), 1400, 2).unwrap();
        let b = cache.describe(&whole(&p), 1400, 2).unwrap();
        assert_eq!((a.blake3, cache.reads), (b.blake3, 1));
        // Same size, new content and mtime: read again, new hash.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"other content").unwrap();
        let c = cache.describe(&whole(&p), 1400, 2).unwrap();
        assert_eq!(cache.reads, 2);
        assert_ne!(c.blake3, a.blake3);
        // Replaced by another file (new inode) with the same size and mtime.
        let q = dir.path().join("other");
        std::fs::write(&q, b"third content").unwrap();
        let mtime = std::fs::metadata(&p).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&q)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
        std::fs::rename(&q, &p).unwrap();
        let d = cache.describe(&whole(&p), 1400, 2).unwrap();
        assert_eq!(cache.reads, 3);
        assert_eq!(d.blake3, *blake3::hash(b"third content").as_bytes());
        cache.retain(&[]);
        assert!(cache.known.is_empty());
    }
}
