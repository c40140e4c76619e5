//! What this receiver already delivered, by name and content, rebuilt from the record log
//! at start: an object sent again (a carousel, a repeat, a restarted sender) is ignored
//! without being decoded again, across receiver restarts too.

use crate::records::{RECORDS_FILE, STATE_DIR};
use gapferry_common::{Ledger, ObjectDescriptor, ObjectKind};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

type Key = (String, [u8; 32]);

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
    /// Rebuilds the ledger from `<out>/.gapferry/records.jsonl`.
    pub fn load(out: &Path) -> Self {
        let ledger = DeliveredLedger::default();
        let Ok(text) = std::fs::read_to_string(out.join(STATE_DIR).join(RECORDS_FILE)) else {
            return ledger;
        };
        let mut map = ledger.entries.lock().unwrap_or_else(|p| p.into_inner());
        for line in text.lines() {
            let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if r["outcome"] != "delivered" {
                continue;
            }
            let (Some(name), Some(hash), Some(kind), Some(path)) = (
                r["name"].as_str(),
                r["blake3"].as_str().and_then(parse_hex32),
                r["kind"].as_str(),
                r["path"].as_str(),
            ) else {
                continue;
            };
            if let Ok(kind) = kind.parse::<ObjectKind>() {
                map.insert((name.to_string(), hash), (kind, PathBuf::from(path)));
            }
        }
        drop(map);
        ledger
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
