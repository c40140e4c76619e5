//! What this receiver already delivered, by name and content, rebuilt from the record log
//! at start: an object sent again (a carousel, a repeat, a restarted sender) is ignored
//! without being decoded again, across receiver restarts too.
//!
//! A MISP event is "delivered" only while it can still reach MISP without a resend: its
//! `<uuid>.json` is in the feed, or the archive holds it (the feed keeper republishes
//! from there what MISP may have deleted unread). Once MISP consumed it and the archive
//! no longer holds it (disabled, or pruned), a resend delivers it again.
//!
//! The assembler does not consult it itself (the core does no I/O, and the answer looks at
//! the filesystem): it announces each new object, and the pipeline answers from here.

use crate::records::{Outcome, Record, RECORDS_FILE, STATE_DIR};
use gapferry_common::{ObjectDescriptor, ObjectKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

type Key = (String, [u8; 32]);

/// Delivered objects by (name, blake3), with where they went.
#[derive(Debug, Default)]
pub struct DeliveredLedger {
    entries: Mutex<HashMap<Key, (ObjectKind, PathBuf)>>,
    archive: Mutex<Option<gapferry_feeds::Archive>>,
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl DeliveredLedger {
    /// Rebuilds the ledger from `<out>/.gapferry/records.jsonl`, read line by line.
    pub fn load(out: &Path) -> Self {
        match std::fs::File::open(out.join(STATE_DIR).join(RECORDS_FILE)) {
            Ok(file) => Self::from_records(file),
            Err(_) => DeliveredLedger::default(),
        }
    }

    /// Rebuilds the ledger from a record log's content, streamed: only the deliveries
    /// are kept, one line is held at a time.
    pub fn from_records(records: impl std::io::Read) -> Self {
        let ledger = DeliveredLedger::default();
        let mut map = ledger.entries.lock().unwrap_or_else(|p| p.into_inner());
        let scanned = crate::record_lines::for_each_line(records, |line| {
            let Ok(r) = serde_json::from_slice::<Record>(line) else {
                return;
            };
            if r.outcome != Outcome::Delivered {
                return;
            }
            let (Some(name), Some(hash), Some(kind), Some(path)) = (
                r.name,
                r.blake3.as_deref().and_then(parse_hex32),
                r.kind,
                r.path,
            ) else {
                return;
            };
            map.insert((name, hash), (kind, path));
        });
        if let Err(e) = scanned {
            tracing::warn!("the record log could not be read to the end: {e}; objects delivered before may be decoded again");
        }
        drop(map);
        ledger
    }

    /// How many distinct deliveries the ledger holds.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether the ledger holds no delivery.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Counts MISP events held in `archive` as delivered even after MISP consumed them.
    pub fn set_archive(&self, archive: Option<gapferry_feeds::Archive>) {
        *self.archive.lock().unwrap_or_else(|p| p.into_inner()) = archive;
    }

    /// Notes a delivery.
    pub fn insert(&self, d: &ObjectDescriptor, path: &Path) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((d.name.clone(), d.blake3), (d.kind, path.to_path_buf()));
    }
}

impl DeliveredLedger {
    /// Whether an object with this name and content was delivered and is still in place:
    /// the receiver's answer to the assembler's [`gapferry_common::Event::ObjectAnnounced`].
    pub fn already_delivered(&self, d: &ObjectDescriptor) -> bool {
        // Sent before its sender knew its hash: nothing to compare yet.
        if d.known_blake3().is_none() {
            return false;
        }
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(d.name.clone(), d.blake3)) {
            // A plain file or image someone removed is wanted again.
            Some((ObjectKind::File | ObjectKind::Image | ObjectKind::ImageSignature, path)) => {
                path.exists()
            }
            // MISP deletes what it fetched: still delivered while the feed or the archive
            // (whose keeper republishes what MISP may have missed) holds it.
            Some((ObjectKind::Misp, path)) => {
                path.exists() || {
                    let archive = self.archive.lock().unwrap_or_else(|p| p.into_inner());
                    let name = path.file_name().and_then(|n| n.to_str());
                    match (archive.as_ref(), name) {
                        (Some(a), Some(n)) => a.contains(gapferry_feeds::archive::MISP, n),
                        _ => false,
                    }
                }
            }
            // STIX bundles are stored once: content delivered before is not wanted again.
            Some((ObjectKind::Stix, _)) => true,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_feeds::archive::{Archive, MISP};

    fn descriptor(kind: ObjectKind) -> ObjectDescriptor {
        ObjectDescriptor {
            kind,
            name: "event.json".into(),
            size: 10,
            blake3: [7; 32],
            block_plain_size: 1024,
            mtime: 0,
            pass: 1,
            passes: 1,
        }
    }

    #[test]
    fn a_consumed_misp_event_is_delivered_only_while_the_archive_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let feed_file = dir.path().join("5a0a9aa9-23a4-4607-b6df-41a9950d210f.json");
        let archive = Archive::new(dir.path().join("archive"));
        let ledger = DeliveredLedger::default();
        let d = descriptor(ObjectKind::Misp);
        std::fs::write(&feed_file, b"{}").unwrap();
        ledger.insert(&d, &feed_file);
        assert!(ledger.already_delivered(&d), "in the feed");
        // MISP consumed it; no archive: a resend must be able to deliver it again.
        std::fs::remove_file(&feed_file).unwrap();
        assert!(!ledger.already_delivered(&d));
        // With the archive holding it, the keeper is in charge: not delivered again.
        ledger.set_archive(Some(archive.clone()));
        assert!(!ledger.already_delivered(&d), "archive enabled but empty");
        archive
            .store(MISP, "5a0a9aa9-23a4-4607-b6df-41a9950d210f.json", b"{}")
            .unwrap();
        assert!(ledger.already_delivered(&d));
        // STIX bundles stay delivered once stored, wherever they are.
        let s = descriptor(ObjectKind::Stix);
        ledger.insert(&s, &dir.path().join("gone.json"));
        assert!(ledger.already_delivered(&s));
    }
}
