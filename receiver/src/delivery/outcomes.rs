//! Outcomes: every object's outcome becomes a [`Record`] in `records.jsonl`, counted in
//! the metrics and the run's [`Summary`]; a delivery is also noted in the ledger, handed
//! to its post-delivery hook and queued for the push into the high-side MISP.

use super::{base_name, Delivery};
use crate::cause::Cause;
use crate::hooks::HookJob;
use crate::records::{Outcome, Record, RecordLog};
use gapferry_common::name::escape;
use gapferry_common::{ObjectDescriptor, ObjectKind, ObjectRef};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Records of objects not delivered (or delivered without a name) a [`Summary`] keeps.
pub const SUMMARY_NOTABLE: usize = 100;

/// Counts of outcomes, and the last few records worth naming: its size does not grow
/// with the run's length (every record is in `records.jsonl`).
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Objects verified and published.
    pub delivered: u64,
    /// Objects seen but not delivered.
    pub failed: u64,
    /// Objects sent but never seen.
    pub lost: u64,
    /// The last [`SUMMARY_NOTABLE`] records with a reason or without a name, in order.
    pub notable: VecDeque<Record>,
    /// Notable records left out of `notable` because newer ones took their place.
    pub notable_dropped: u64,
}

impl Summary {
    /// Keeps `r` if it has a reason or no name, forgetting the oldest beyond the bound.
    pub fn note(&mut self, r: &Record) {
        if r.reason.is_none() && r.name.is_some() {
            return;
        }
        if self.notable.len() == SUMMARY_NOTABLE {
            self.notable.pop_front();
            self.notable_dropped += 1;
        }
        self.notable.push_back(r.clone());
    }
}

impl Delivery {
    /// Records where a verified object went (or why it could not go there), runs its hook
    /// and queues its push into the high-side MISP (a MISP event's is `push`).
    pub(super) fn placed(
        &mut self,
        object: ObjectRef,
        d: &ObjectDescriptor,
        started: Instant,
        placed: Result<PathBuf, String>,
        staged: &Path,
        push: Option<crate::misp_push::PushItem>,
    ) {
        match placed {
            Ok(dest) => self.delivered(object, d, started, dest, push),
            Err(reason) => {
                if !staged.as_os_str().is_empty() {
                    let _ = std::fs::remove_file(staged);
                }
                self.record_failure(object, Some(d), reason);
            }
        }
    }

    /// Records a delivery to `dest` and hands it to its hook and the push.
    fn delivered(
        &mut self,
        object: ObjectRef,
        d: &ObjectDescriptor,
        started: Instant,
        dest: PathBuf,
        push: Option<crate::misp_push::PushItem>,
    ) {
        let elapsed = started.elapsed();
        tracing::info!(
            object = %object,
            name = %escape(&d.name),
            kind = %d.kind,
            size = d.size,
            blake3 = %blake3::Hash::from(d.blake3).to_hex(),
            path = %escape(&dest.to_string_lossy()),
            ms = elapsed.as_millis() as u64,
            loss_rate = self.loss.get(&object.session).copied(),
            "delivered"
        );
        self.summary.delivered += 1;
        if let Some(l) = &self.ledger {
            l.insert(d, &dest);
        }
        let mut r = described(
            Record::new(Outcome::Delivered, object.session, object.object),
            d,
        );
        r.path = Some(dest.clone());
        r.elapsed_ms = Some(elapsed.as_millis() as u64);
        let push = match (&self.push, push) {
            (Some(p), _) if !p.pushes(d.kind) => None,
            (Some(_), Some(item)) => Some(item),
            (Some(_), None) if d.kind == ObjectKind::Stix => {
                Some(crate::misp_push::PushItem::Stix { path: dest.clone() })
            }
            _ => None,
        };
        let job = self.dest.hooks.for_kind(d.kind).map(|hook| HookJob {
            command: hook.clone(),
            path: dest,
            kind: d.kind,
            blake3: r.blake3.clone().unwrap_or_default(),
            record: r.clone(),
        });
        let push = push.map(|item| (item, r.clone()));
        self.record(r);
        if let (Some(pusher), Some((item, r))) = (&self.push, push) {
            pusher.submit(item, r);
        }
        if let (Some(pool), Some(job)) = (&self.hooks, job) {
            pool.submit(job);
        }
        if d.kind == ObjectKind::ImageSignature {
            self.signature_settled(base_name(&d.name), None);
        }
    }

    pub(super) fn record_failure(
        &mut self,
        object: ObjectRef,
        d: Option<&ObjectDescriptor>,
        reason: String,
    ) {
        self.record_failure_because(object, d, reason, None);
    }

    /// Records a failure whose `cause` is known.
    pub(super) fn record_failure_because(
        &mut self,
        object: ObjectRef,
        d: Option<&ObjectDescriptor>,
        reason: String,
        cause: Option<Cause>,
    ) {
        tracing::warn!(
            object = %object,
            name = d.map(|d| escape(&d.name).into_owned()),
            kind = d.map(|d| d.kind.as_str()),
            size = d.map(|d| d.size),
            blake3 = d.and_then(known_blake3_hex),
            loss_rate = self.loss.get(&object.session).copied(),
            cause = cause.map(Cause::as_str),
            %reason,
            "object failed"
        );
        self.summary.failed += 1;
        let mut r = Record::new(Outcome::Failed, object.session, object.object);
        if let Some(d) = d {
            r = described(r, d);
        }
        r.reason = Some(reason.clone());
        r.cause = cause;
        self.record(r);
        if let Some(d) = d.filter(|d| d.kind == ObjectKind::ImageSignature) {
            self.signature_settled(base_name(&d.name), Some(&reason));
        }
    }

    /// Appends `r` to the record log, counting it in the metrics and the summary.
    pub(super) fn record(&mut self, r: Record) {
        self.metrics.object(r.kind, r.outcome);
        if r.outcome == Outcome::Delivered {
            self.metrics.delivered_bytes.inc_by(r.size.unwrap_or(0));
        }
        append_record(&self.records, &r);
        self.summary.note(&r);
    }
}

fn append_record(log: &Mutex<RecordLog>, r: &Record) {
    let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = log.append(r) {
        tracing::error!(path = %log.path().display(), "cannot append to the record log: {e}");
    }
}

/// `r` with the descriptor's kind, name, size and blake3.
pub(super) fn described(mut r: Record, d: &ObjectDescriptor) -> Record {
    r.kind = Some(d.kind);
    r.name = Some(d.name.clone());
    r.size = Some(d.size);
    r.blake3 = known_blake3_hex(d);
    r
}

/// The descriptor's blake3 in hex, `None` in a copy sent before the sender knew it (it
/// says nothing of the content).
fn known_blake3_hex(d: &ObjectDescriptor) -> Option<String> {
    d.known_blake3()
        .map(|h| blake3::Hash::from(h).to_hex().to_string())
}
