//! The carousel: the last files sent are sent again every `resend_every`, from where they
//! were moved, so a receiver that missed them fills the gap. A file's first send learns its
//! blake3 as it reads it; the descriptor (size and blake3) is then kept, keyed by the
//! file's identity (path, size, mtime, inode), so a resend of an unchanged file carries the
//! hash from its first copy (a receiver that has it skips it at once) and only the pass
//! itself reads it.

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
    /// Files outlined for a send that will learn their hash, as they were then.
    outlined: HashMap<(PathBuf, String), FileIdentity>,
    /// How many descriptors were learned by reading the file (for tests and logs).
    pub(super) reads: u64,
}

impl DescriptorCache {
    /// The descriptor of `file`: the one kept from an earlier send of the unchanged file,
    /// else its outline, whose blake3 the send learns ([`Self::learned`]).
    pub(super) fn describe(
        &mut self,
        file: &SourceFile,
        max_symbol: u16,
    ) -> Result<ObjectDescriptor, TransferError> {
        if file.bytes.is_none() {
            let identity = FileIdentity::of(&file.path).map_err(|error| TransferError::Read {
                path: file.path.clone(),
                error,
            })?;
            if let Some((known, d)) = self.known.get(&(file.path.clone(), file.name.clone())) {
                if *known == identity
                    && d.block_plain_size == gapferry_common::layout::block_plain_size(max_symbol)
                {
                    return Ok(d.clone());
                }
            }
            self.outlined
                .insert((file.path.clone(), file.name.clone()), identity);
        }
        transfer::outline(file, max_symbol, 1)
    }

    /// Keeps `d` with the `blake3` its send of `file` learned, if the file is still the
    /// one `d` describes (a split MISP event, in memory, is not kept: it costs nothing to
    /// hash again).
    pub(super) fn learned(&mut self, file: &SourceFile, d: &ObjectDescriptor, blake3: [u8; 32]) {
        let key = (file.path.clone(), file.name.clone());
        let Some(outlined) = self.outlined.remove(&key) else {
            return;
        };
        // Changed since it was outlined: what the send read may be another version.
        let Ok(identity) = FileIdentity::of(&file.path) else {
            return;
        };
        if identity != outlined || identity.size != d.size || d.known_blake3().is_some() {
            return;
        }
        self.reads += 1;
        let d = ObjectDescriptor {
            blake3,
            ..d.clone()
        };
        self.known.insert(key, (identity, d));
    }

    /// Forgets every file not in `keep`.
    pub(super) fn retain(&mut self, keep: &[(String, PathBuf)]) {
        self.known
            .retain(|(path, _), _| keep.iter().any(|(_, p)| p == path));
        self.outlined.clear();
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
            // The rest waits for the next round, after the session is renewed.
            if super::ids_run_low(session) {
                break;
            }
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
            .describe(o, session.max_symbol())
            .and_then(|d| {
                let h = transfer::send_object(session, id, o, &d, progress)?;
                self.descriptors.learned(o, &d, h);
                Ok(())
            });
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

    /// Describes `p` as a resend does, and (when it was only outlined) learns its hash as
    /// the send would: the descriptor the send went out with, hash filled in.
    fn send(cache: &mut DescriptorCache, p: &std::path::Path) -> ObjectDescriptor {
        let d = cache.describe(&whole(p), 1400).unwrap();
        if d.known_blake3().is_some() {
            return d;
        }
        let h = *blake3::hash(&std::fs::read(p).unwrap()).as_bytes();
        cache.learned(&whole(p), &d, h);
        ObjectDescriptor { blake3: h, ..d }
    }

    #[test]
    fn a_file_changed_between_outline_and_the_end_of_its_send_is_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.tar.gz");
        std::fs::write(&p, b"first content").unwrap();
        let mut cache = DescriptorCache::default();
        let d = cache.describe(&whole(&p), 1400).unwrap();
        assert!(d.known_blake3().is_none(), "a new file is outlined");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"later content").unwrap();
        cache.learned(&whole(&p), &d, *blake3::hash(b"first content").as_bytes());
        assert_eq!(cache.reads, 0);
        let again = cache.describe(&whole(&p), 1400).unwrap();
        assert!(again.known_blake3().is_none(), "nothing kept for it");
    }

    #[test]
    fn an_unchanged_file_is_described_once_and_a_changed_one_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img.tar.gz");
        std::fs::write(&p, b"first content").unwrap();
        let mut cache = DescriptorCache::default();
        let a = send(&mut cache, &p);
        let b = send(&mut cache, &p);
        assert_eq!((a.blake3, cache.reads), (b.blake3, 1));
        assert_eq!(a.blake3, *blake3::hash(b"first content").as_bytes());
        // Same size, new content and mtime: read again, new hash.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&p, b"other content").unwrap();
        let c = send(&mut cache, &p);
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
        let d = send(&mut cache, &p);
        assert_eq!(cache.reads, 3);
        assert_eq!(d.blake3, *blake3::hash(b"third content").as_bytes());
        cache.retain(&[]);
        assert!(cache.known.is_empty());
    }
}
