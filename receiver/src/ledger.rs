//! What this receiver already delivered, by name and content, rebuilt from the record log
//! at start: an object sent again (a carousel, a repeat, a restarted sender) is ignored
//! without being decoded again, across receiver restarts too.

use crate::records::{RECORDS_FILE, STATE_DIR};
use gapferry_common::{Ledger, ObjectDescriptor, ObjectKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

type Key = (String, [u8; 32]);

/// The fields of a record line the ledger reads.
#[derive(serde::Deserialize)]
struct DeliveredLine {
    #[serde(default)]
    outcome: String,
    name: Option<String>,
    blake3: Option<String>,
    kind: Option<String>,
    path: Option<PathBuf>,
}

/// Delivered objects by (name, blake3), with where they went.
#[derive(Debug, Default)]
pub struct DeliveredLedger {
    entries: Mutex<HashMap<Key, (ObjectKind, PathBuf)>>,
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
            let Ok(r) = serde_json::from_slice::<DeliveredLine>(line) else {
                return;
            };
            if r.outcome != "delivered" {
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
            if let Ok(kind) = kind.parse::<ObjectKind>() {
                map.insert((name, hash), (kind, path));
            }
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

    /// Notes a delivery.
    pub fn insert(&self, d: &ObjectDescriptor, path: &Path) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.insert((d.name.clone(), d.blake3), (d.kind, path.to_path_buf()));
    }
}

impl Ledger for DeliveredLedger {
    fn already_delivered(&self, d: &ObjectDescriptor) -> bool {
        let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match map.get(&(d.name.clone(), d.blake3)) {
            // MISP deletes fetched event files and STIX bundles are stored once: content
            // delivered before is not wanted again. A plain file or image someone removed is.
            Some((ObjectKind::File | ObjectKind::Image | ObjectKind::ImageSignature, path)) => {
                path.exists()
            }
            Some(_) => true,
            None => false,
        }
    }
}
