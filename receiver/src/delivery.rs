//! Turning assembler events into files: staging, in-order hashing, verification, fsync,
//! atomic rename into `<out>/files/`, and a record of every outcome.
//!
//! Nothing reaches a delivery directory before its blake3 matches the descriptor.

use crate::records::{Outcome, Record, RecordLog, STATE_DIR};
use gapferry_common::compress::decompress_block;
use gapferry_common::{Event, ObjectDescriptor, ObjectRef};
use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Directory under `--out` receiving objects of kind `file`.
pub const FILES_DIR: &str = "files";
/// Directory under the state directory holding incomplete objects.
pub const STAGING_DIR: &str = "staging";

/// Counts of outcomes, and the records of this run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects verified and published.
    pub delivered: u64,
    /// Objects seen but not delivered.
    pub failed: u64,
    /// Objects sent but never seen.
    pub lost: u64,
    /// Every record written in this run, in order.
    pub records: Vec<Record>,
}

struct Staged {
    descriptor: ObjectDescriptor,
    file: File,
    path: PathBuf,
    hasher: blake3::Hasher,
    next_hash_block: u32,
    written_ahead: BTreeSet<u32>,
    started: Instant,
}

/// Writes verified objects under `--out` and records every outcome.
pub struct Delivery {
    files_dir: PathBuf,
    staging_dir: PathBuf,
    records: RecordLog,
    staged: HashMap<ObjectRef, Staged>,
    summary: Summary,
}

impl Delivery {
    /// Prepares delivery under `out`, creating its directories and clearing stale staging files.
    pub fn open(out: &Path) -> io::Result<Self> {
        let state = out.join(STATE_DIR);
        let staging_dir = state.join(STAGING_DIR);
        let files_dir = out.join(FILES_DIR);
        std::fs::create_dir_all(&staging_dir)?;
        std::fs::create_dir_all(&files_dir)?;
        // Staging files of a previous run can never complete: their state is gone.
        for entry in std::fs::read_dir(&staging_dir)? {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
            }
        }
        Ok(Delivery {
            files_dir,
            staging_dir,
            records: RecordLog::open(&state)?,
            staged: HashMap::new(),
            summary: Summary::default(),
        })
    }

    /// What happened so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Consumes the delivery, returning its summary.
    pub fn into_summary(self) -> Summary {
        self.summary
    }

    /// Objects being written now.
    pub fn in_progress(&self) -> usize {
        self.staged.len()
    }

    /// Acts on one assembler event.
    pub fn handle(&mut self, event: Event) {
        match event {
            Event::SessionStarted {
                session,
                first_object,
            } => tracing::info!(
                session = format_args!("{session:016x}"),
                first_object,
                "sender session heard"
            ),
            Event::SessionClosed { session, reason } => {
                tracing::info!(session = format_args!("{session:016x}"), %reason, "sender session closed")
            }
            Event::Heartbeat { session, heartbeat } => tracing::debug!(
                session = format_args!("{session:016x}"),
                seq = heartbeat.seq,
                datagrams_sent = heartbeat.datagrams_sent,
                "heartbeat"
            ),
            Event::ObjectStarted { object, descriptor } => {
                if let Err(e) = self.start(object, descriptor.clone()) {
                    self.record_failure(
                        object,
                        Some(&descriptor),
                        format!("cannot stage the object: {e}"),
                    );
                }
            }
            Event::BlockDecoded {
                object,
                block,
                codec,
                plain_len,
                data,
            } => {
                if !self.staged.contains_key(&object) {
                    return; // already failed
                }
                let result = decompress_block(codec, data, plain_len)
                    .map_err(|e| format!("block {block}: {e}"))
                    .and_then(|plain| {
                        self.write_block(object, block, &plain)
                            .map_err(|e| format!("cannot write block {block}: {e}"))
                    });
                if let Err(reason) = result {
                    self.abort(object, reason);
                }
            }
            Event::ObjectComplete { object } => {
                if let Some(staged) = self.staged.remove(&object) {
                    self.finish(object, staged);
                }
            }
            Event::ObjectFailed {
                object,
                descriptor,
                reason,
            } => {
                if let Some(staged) = self.staged.remove(&object) {
                    let _ = std::fs::remove_file(&staged.path);
                    self.record_failure(object, Some(&staged.descriptor), reason);
                } else {
                    self.record_failure(object, descriptor.as_ref(), reason);
                }
            }
            Event::ObjectLost { object } => {
                tracing::warn!(object = %object, "object lost: sent but never seen");
                self.summary.lost += 1;
                self.record(Record::new(Outcome::Lost, object.session, object.object));
            }
        }
    }

    fn start(&mut self, object: ObjectRef, descriptor: ObjectDescriptor) -> io::Result<()> {
        let path = self
            .staging_dir
            .join(format!("{:016x}-{}.part", object.session, object.object));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        self.staged.insert(
            object,
            Staged {
                descriptor,
                file,
                path,
                hasher: blake3::Hasher::new(),
                next_hash_block: 0,
                written_ahead: BTreeSet::new(),
                started: Instant::now(),
            },
        );
        Ok(())
    }

    fn write_block(&mut self, object: ObjectRef, block: u32, plain: &[u8]) -> io::Result<()> {
        let s = self.staged.get_mut(&object).expect("checked");
        let offset = block as u64 * s.descriptor.block_plain_size as u64;
        s.file.write_all_at(plain, offset)?;
        if block != s.next_hash_block {
            s.written_ahead.insert(block);
            return Ok(());
        }
        s.hasher.update(plain);
        s.next_hash_block += 1;
        // Blocks that decoded early are hashed from the file, in order, once their turn comes.
        let mut buf = Vec::new();
        while s.written_ahead.remove(&s.next_hash_block) {
            let b = s.next_hash_block;
            buf.resize(s.descriptor.block_plain_len(b) as usize, 0);
            s.file
                .read_exact_at(&mut buf, b as u64 * s.descriptor.block_plain_size as u64)?;
            s.hasher.update(&buf);
            s.next_hash_block += 1;
        }
        Ok(())
    }

    fn finish(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if s.next_hash_block as u64 != d.block_count() {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure(
                object,
                Some(d),
                "internal: not every block was written".into(),
            );
            return;
        }
        if s.hasher.finalize().as_bytes() != &d.blake3 {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure(
                object,
                Some(d),
                "blake3 of the reassembled bytes differs from the descriptor's (corrupted or forged data; use --key)".into(),
            );
            return;
        }
        let dest = self.files_dir.join(&d.name);
        match publish(&s.file, &s.path, &dest) {
            Ok(()) => {
                let elapsed = s.started.elapsed();
                tracing::info!(
                    object = %object,
                    name = %d.name,
                    kind = %d.kind,
                    size = d.size,
                    blake3 = %blake3::Hash::from(d.blake3).to_hex(),
                    ms = elapsed.as_millis() as u64,
                    "delivered"
                );
                self.summary.delivered += 1;
                let mut r = described(
                    Record::new(Outcome::Delivered, object.session, object.object),
                    d,
                );
                r.path = Some(dest);
                r.elapsed_ms = Some(elapsed.as_millis() as u64);
                self.record(r);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&s.path);
                self.record_failure(
                    object,
                    Some(d),
                    format!("cannot publish to {}: {e}", dest.display()),
                );
            }
        }
    }

    fn abort(&mut self, object: ObjectRef, reason: String) {
        if let Some(s) = self.staged.remove(&object) {
            let _ = std::fs::remove_file(&s.path);
            self.record_failure(object, Some(&s.descriptor), reason);
        }
    }

    fn record_failure(&mut self, object: ObjectRef, d: Option<&ObjectDescriptor>, reason: String) {
        tracing::warn!(object = %object, name = d.map(|d| d.name.as_str()), %reason, "object failed");
        self.summary.failed += 1;
        let mut r = Record::new(Outcome::Failed, object.session, object.object);
        if let Some(d) = d {
            r = described(r, d);
        }
        r.reason = Some(reason);
        self.record(r);
    }

    fn record(&mut self, r: Record) {
        if let Err(e) = self.records.append(&r) {
            tracing::error!(path = %self.records.path().display(), "cannot append to the record log: {e}");
        }
        self.summary.records.push(r);
    }

    /// Drops every incomplete object's staging file (at shutdown).
    pub fn abandon_all(&mut self, reason: &str) {
        let objects: Vec<ObjectRef> = self.staged.keys().copied().collect();
        for o in objects {
            self.abort(o, reason.to_string());
        }
    }
}

fn described(mut r: Record, d: &ObjectDescriptor) -> Record {
    r.kind = Some(d.kind.to_string());
    r.name = Some(d.name.clone());
    r.size = Some(d.size);
    r.blake3 = Some(blake3::Hash::from(d.blake3).to_hex().to_string());
    r
}

/// fsyncs `staged`, renames it to `dest` (creating parents) and fsyncs the directory.
fn publish(file: &File, staged: &Path, dest: &Path) -> io::Result<()> {
    file.sync_all()?;
    let parent = dest.parent().expect("dest is under the files directory");
    std::fs::create_dir_all(parent)?;
    std::fs::rename(staged, dest)?;
    File::open(parent)?.sync_all()
}
