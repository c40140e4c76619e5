//! MISP events are delivered in batches: the feed's `manifest.json` and `hashes.csv` are
//! rewritten once per batch, not once per event. A batch holds at most [`MISP_BATCH`]
//! events and `max_document` bytes of them (one event always fits), and is committed with
//! the group of small files (`group`: when full, when the disk writer is idle, or when the
//! group is due), under the feed lock. The feed makes the batch's event files durable
//! together (one directory fsync) before any `delivered` record is written.

use super::small::{discard, read_staged};
use super::staging::Staged;
use super::Delivery;
use gapferry_common::ObjectRef;
use std::path::Path;

/// Most MISP events delivered in one batch (one manifest and hashes rewrite).
const MISP_BATCH: usize = 256;

impl Delivery {
    /// Reads a verified MISP event into the pending batch, flushing first when it would
    /// not fit and after when the batch is full.
    pub(super) fn batch_misp(&mut self, object: ObjectRef, s: Staged) {
        let d = &s.descriptor;
        if self.pending_misp_bytes + d.size > self.max_document {
            self.flush();
        }
        let doc = read_staged(&s, self.max_document);
        discard(&s);
        match doc {
            Ok(bytes) => {
                self.pending_misp_bytes += bytes.len() as u64;
                self.note_waiting();
                self.pending_misp
                    .push((object, s.descriptor.clone(), s.started, bytes))
            }
            Err(reason) => self.record_failure(object, Some(d), reason),
        }
        if self.pending_misp.len() >= MISP_BATCH {
            self.flush();
        }
    }

    /// Delivers the MISP events waiting for a batch (part of the group commit).
    pub(super) fn commit_misp(&mut self) {
        if self.pending_misp.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_misp);
        self.pending_misp_bytes = 0;
        // Held while writing: `feed rebuild|republish` and the keeper may write too.
        let lock = crate::feedcare::FeedLock::acquire(&self.state_dir).inspect_err(|e| {
            tracing::warn!("cannot take the feed lock: {e}; delivering without it")
        });
        let results = self
            .stores
            .feed
            .deliver_batch(pending.iter().map(|(_, _, _, b)| b.as_slice()));
        drop(lock);
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                for (object, d, _, _) in &pending {
                    self.record_failure(
                        *object,
                        Some(d),
                        format!("the MISP feed could not be updated: {e}"),
                    );
                }
                return;
            }
        };
        let mut tracker = self.feed_tracker.lock().unwrap_or_else(|p| p.into_inner());
        for r in results.iter().flatten() {
            tracker.delivered(&r.uuid, r.timestamp, &r.outcome, r.listed);
        }
        drop(tracker);
        for ((object, d, started, body), r) in pending.into_iter().zip(results) {
            let (placed, push) = match r {
                Ok(e) => {
                    let push = crate::misp_push::PushItem::Event {
                        uuid: e.uuid,
                        timestamp: e.timestamp,
                        body,
                    };
                    (Ok(e.path), Some(push))
                }
                Err(e) => (Err(format!("refused by the MISP feed: {e}")), None),
            };
            self.placed(object, &d, started, placed, Path::new(""), push);
        }
    }
}
