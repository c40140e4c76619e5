//! Committing a batch: `hashes.csv` first (appended to, or rewritten by rename when lines
//! must go), then `manifest.json` by rename, then the pending marker removed. The bytes
//! of `hashes.csv` are the same either way: the kept lines in their order, then the
//! batch's lines by uuid.

use super::index::{FeedIndex, FileStamp, Written};
use super::{io_err, FeedSummary, MispError, HASHES, MANIFEST, PENDING};
use crate::fsutil::{child, ensure_real_dir, hex, sync_dir, write_atomic_with};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;

/// The `hashes.csv` lines of the events in `new_hashes` still in the manifest, by uuid.
fn write_new_lines(
    w: &mut impl Write,
    manifest: &BTreeMap<String, Box<serde_json::value::RawValue>>,
    new_hashes: &BTreeMap<String, Vec<[u8; 16]>>,
) -> io::Result<()> {
    for (uuid, hashes) in new_hashes {
        if manifest.contains_key(uuid) {
            for h in hashes {
                writeln!(w, "{},{uuid}", hex(h))?;
            }
        }
    }
    Ok(())
}

/// The lines of the old `hashes.csv` to keep: those of listed events not rewritten.
fn copy_kept_lines(old: File, w: &mut impl Write, keep: impl Fn(&str) -> bool) -> io::Result<()> {
    for line in BufReader::new(old).split(b'\n') {
        let line = line?;
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let Some((_, uuid)) = text.trim_end_matches('\r').split_once(',') else {
            continue;
        };
        if keep(uuid) {
            w.write_all(&line)?;
            w.write_all(b"\n")?;
        }
    }
    Ok(())
}

impl FeedIndex {
    /// Writes `hashes.csv` then `manifest.json` if anything changed.
    pub(super) fn commit(&mut self, dir: &Path) -> Result<FeedSummary, MispError> {
        let mut summary = FeedSummary {
            entries: self.manifest.len(),
            reindexed: self.reindexed,
            dropped: self.dropped,
            written: false,
        };
        if !self.changed {
            return Ok(summary);
        }
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        // MISP may have deleted files since the batch started.
        let gone = self.drop_deleted(dir)?;
        summary.dropped += gone;
        self.lines_stale |= gone > 0;

        let hashes = self.write_hashes(dir)?;
        let manifest_path = child(dir, MANIFEST);
        write_atomic_with(&manifest_path, &self.publish, |w| {
            serde_json::to_writer(&mut *w, &self.manifest).map_err(io::Error::other)
        })
        .map_err(io_err(&manifest_path))?;
        // Either file gone already (MISP) leaves no stamp: the next batch loads from disk.
        self.written = FileStamp::of(&manifest_path)
            .zip(hashes)
            .map(|(manifest, hashes)| Written { manifest, hashes });
        self.gone_listed.clear();

        let pending_path = child(dir, PENDING);
        self.pending = None;
        match fs::remove_file(&pending_path) {
            Ok(()) => sync_dir(dir).map_err(io_err(dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&pending_path)(e)),
        }
        self.changed = false;
        self.lines_stale = false;
        self.rewrite.clear();
        self.new_hashes.clear();
        summary.entries = self.manifest.len();
        summary.written = true;
        Ok(summary)
    }

    /// Brings `hashes.csv` up to date and returns its stamp: the batch's lines appended
    /// (and fsynced) when the file is the one this index wrote and no line must go,
    /// otherwise the whole file rewritten by rename.
    fn write_hashes(&self, dir: &Path) -> Result<Option<FileStamp>, MispError> {
        let path = child(dir, HASHES);
        let ours = self
            .written
            .is_some_and(|w| FileStamp::of(&path) == Some(w.hashes));
        if ours && !self.lines_stale {
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            let mut w = io::BufWriter::with_capacity(1 << 16, &f);
            write_new_lines(&mut w, &self.manifest, &self.new_hashes)
                .and_then(|()| w.flush())
                .map_err(io_err(&path))?;
            drop(w);
            f.sync_data().map_err(io_err(&path))?;
        } else {
            let old = match fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => Some(File::open(&path).map_err(io_err(&path))?),
                _ => None,
            };
            let (manifest, rewrite) = (&self.manifest, &self.rewrite);
            write_atomic_with(&path, &self.publish, |w| {
                if let Some(old) = old {
                    copy_kept_lines(old, w, |uuid| {
                        manifest.contains_key(uuid) && !rewrite.contains(uuid)
                    })?;
                }
                write_new_lines(w, manifest, &self.new_hashes)
            })
            .map_err(io_err(&path))?;
        }
        Ok(FileStamp::of(&path))
    }
}
