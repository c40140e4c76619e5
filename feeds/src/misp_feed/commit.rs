//! Committing a batch: the staged event files published as a group, `hashes.csv` (appended
//! to, or rewritten by rename when lines must go), then `manifest.json` by rename (spliced
//! from the old one when the batch only added entries), then the pending marker removed. The bytes
//! of `hashes.csv` are the same either way: the kept lines in their order, then the
//! batch's lines by uuid.

use super::index::{FeedIndex, FileStamp, Written};
use super::{io_err, FeedSummary, MispError, HASHES, MANIFEST, PENDING};
use crate::fsutil::{child, ensure_real_dir, hex, stage_in, sync_dir, write_atomic_with};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
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
        self.publish_group(dir)?;
        // MISP may have deleted files since the batch started.
        let gone = self.drop_deleted(dir)?;
        summary.dropped += gone;
        self.lines_stale |= gone > 0;
        self.manifest_rewrite |= gone > 0;

        let hashes = self.write_hashes(dir)?;
        let manifest_path = child(dir, MANIFEST);
        self.write_manifest(dir, &manifest_path)
            .map_err(io_err(&manifest_path))?;
        // Either file gone already (MISP) leaves no stamp: the next batch loads from disk.
        self.written = FileStamp::of(&manifest_path)
            .zip(hashes)
            .map(|(manifest, hashes)| Written { manifest, hashes });
        self.gone_listed.clear();

        let pending_path = child(dir, PENDING);
        match fs::remove_file(&pending_path) {
            Ok(()) => sync_dir(dir).map_err(io_err(dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&pending_path)(e)),
        }
        self.changed = false;
        self.lines_stale = false;
        self.manifest_rewrite = false;
        self.inserted.clear();
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
            let mut f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // Whole lines, in one write: see the module header for what a reader sees.
            let mut lines = Vec::new();
            write_new_lines(&mut lines, &self.manifest, &self.new_hashes)
                .and_then(|()| f.write_all(&lines))
                .and_then(|()| f.sync_data())
                .map_err(io_err(&path))?;
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

/// Bytes of one manifest entry as `serde_json` writes it (`"key":value`) when its key
/// needs no escaping (a key that does makes the file on disk longer than this says).
fn entry_len(key: &str, raw: &RawValue) -> u64 {
    (key.len() + 3 + raw.get().len()) as u64
}

/// Whether `serde_json` writes `key` as it is (no escaped byte).
fn plain_key(key: &str) -> bool {
    key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Writes `buf` then copies `old[start..end]` (in the kernel) to `out`.
fn copy_run(old: &File, out: &File, buf: &mut Vec<u8>, start: u64, end: u64) -> io::Result<()> {
    let mut out = out;
    out.write_all(buf)?;
    buf.clear();
    let mut old = old;
    old.seek(SeekFrom::Start(start))?;
    let copied = io::copy(&mut old.take(end - start), &mut out)?;
    if copied != end - start {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "manifest.json shrank while being copied",
        ));
    }
    Ok(())
}

impl FeedIndex {
    /// Writes `manifest.json` by rename: spliced from the file on disk when it is the one
    /// this index wrote and the batch only added entries, otherwise serialised whole.
    fn write_manifest(&self, dir: &Path, path: &Path) -> io::Result<()> {
        let ours = self
            .written
            .is_some_and(|w| FileStamp::of(path) == Some(w.manifest));
        if ours && !self.manifest_rewrite {
            let staged = stage_in(dir, &self.publish)?;
            if self.splice_manifest(path, staged.as_file())? {
                staged.as_file().sync_all()?;
                staged.persist(path).map_err(|e| e.error)?;
                return sync_dir(dir);
            }
        }
        write_atomic_with(path, &self.publish, |w| {
            serde_json::to_writer(&mut *w, &self.manifest).map_err(io::Error::other)
        })
    }

    /// Writes to `out` the manifest a full serialisation gives, copying the runs of
    /// entries already in `old` (copy_file_range: the bytes never pass through this
    /// process) and writing only the inserted entries. False, with `out` to be dropped,
    /// when `old` is not laid out as this index expects (then the caller writes it whole).
    fn splice_manifest(&self, old: &Path, out: &File) -> io::Result<bool> {
        let old = File::open(old)?;
        // The old file's size as this index would have written it, before copying a byte:
        // every entry, less the inserted ones (written here, so their keys must be plain).
        let mut expected: u64 = self.manifest.iter().map(|(k, v)| entry_len(k, v) + 1).sum();
        for key in &self.inserted {
            match self.manifest.get(key) {
                Some(raw) if plain_key(key) => expected -= entry_len(key, raw) + 1,
                _ => return Ok(false),
            }
        }
        let kept = self.manifest.len() - self.inserted.len();
        if (if kept == 0 { 2 } else { expected + 1 }) != old.metadata()?.len() {
            return Ok(false);
        }
        let mut buf = b"{".to_vec();
        let (mut next_old, mut run, mut first) = (1u64, None, true);
        // Both in key order: an entry is inserted when it is the next inserted key.
        let mut inserted = self.inserted.iter().peekable();
        for (key, raw) in &self.manifest {
            if inserted.next_if(|k| *k == key).is_none() {
                run.get_or_insert(next_old);
                next_old += entry_len(key, raw) + 1;
                continue;
            }
            if let Some(start) = run.take() {
                if !std::mem::take(&mut first) {
                    buf.push(b',');
                }
                copy_run(&old, out, &mut buf, start, next_old - 1)?;
            }
            if !std::mem::take(&mut first) {
                buf.push(b',');
            }
            buf.extend_from_slice(format!("\"{key}\":").as_bytes());
            buf.extend_from_slice(raw.get().as_bytes());
        }
        if let Some(start) = run.take() {
            if !first {
                buf.push(b',');
            }
            copy_run(&old, out, &mut buf, start, next_old - 1)?;
        }
        buf.push(b'}');
        let mut out = out;
        out.write_all(&buf)?;
        Ok(true)
    }
}
