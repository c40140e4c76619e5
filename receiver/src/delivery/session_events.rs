//! What the assembler reports about sender sessions and objects that never reach
//! staging: heartbeats (the loss rate, the link state `status` reads), refused sessions,
//! failed and lost objects, objects delivered before. Each becomes a log line and, where
//! it concerns an object, a record.

use super::outcomes::described;
use super::{base_name, Delivery};
use crate::records::{Outcome, Record};
use gapferry_common::assembler::Shortfall;
use gapferry_common::control::Heartbeat;
use gapferry_common::name::escape;
use gapferry_common::{ObjectDescriptor, ObjectKind, ObjectRef};

impl Delivery {
    /// A sender session was refused a place in the session table.
    pub(super) fn session_refused(&mut self, session: u64, object: u32, reason: &str) {
        tracing::warn!(
            session = format_args!("{session:016x}"),
            reason,
            "a sender session was refused: its datagrams are dropped until a place \
             frees up; if no other sender is running, someone else is sending to this \
             port (raise [limits] max_sessions only if several senders are legitimate)"
        );
        let mut r = Record::new(Outcome::SessionRefused, session, object);
        r.reason = Some(format!(
            "sender session refused: {reason}; its datagrams are dropped until a place \
             frees up"
        ));
        self.record(r);
    }

    /// Notes a heartbeat's loss rate and saves the link state.
    pub(super) fn heartbeat(
        &mut self,
        session: u64,
        heartbeat: &Heartbeat,
        received: u64,
        loss_rate: Option<f64>,
    ) {
        tracing::debug!(
            session = format_args!("{session:016x}"),
            seq = heartbeat.seq,
            datagrams_sent = heartbeat.datagrams_sent,
            received,
            loss_rate,
            "heartbeat"
        );
        self.metrics.heartbeat(loss_rate, heartbeat.rate_bps);
        if let Some(l) = loss_rate {
            self.loss.insert(session, l);
        }
        let link =
            crate::status::LinkState::from_heartbeat(session, heartbeat, received, loss_rate)
                .with_commits(self.metrics.commits.state());
        if let Err(e) = link.save(&self.state_dir) {
            tracing::warn!("cannot write the link state: {e}");
        }
    }

    /// The assembler gave an object up; the advice depends on where the datagrams went.
    pub(super) fn object_failed(
        &mut self,
        object: ObjectRef,
        descriptor: Option<ObjectDescriptor>,
        reason: String,
        shortfall: Option<Shortfall>,
    ) {
        // The core states facts; the advice depends on where the datagrams went.
        let (cause, reason) = match &shortfall {
            Some(s) => {
                let (cause, message) =
                    crate::cause::explain(&reason, s, self.metrics.queue_drops.of(object));
                (Some(cause), message)
            }
            None => (None, reason),
        };
        let descriptor = match self.staged.remove(&object) {
            Some(staged) => {
                let _ = std::fs::remove_file(&staged.path);
                Some(staged.descriptor)
            }
            None => descriptor,
        };
        self.record_failure_because(object, descriptor.as_ref(), reason, cause);
    }

    /// An object delivered before (same name and content) was sent again.
    pub(super) fn already_delivered(&mut self, object: ObjectRef, descriptor: &ObjectDescriptor) {
        tracing::info!(object = %object, name = %escape(&descriptor.name), "already delivered; ignored");
        let mut r = described(
            Record::new(Outcome::Skipped, object.session, object.object),
            descriptor,
        );
        r.reason =
            Some("already delivered (same name and content); not decoded or written again".into());
        self.record(r);
    }

    /// Objects `object ..= through` were sent but never seen.
    pub(super) fn lost(
        &mut self,
        object: ObjectRef,
        through: u32,
        named: Option<(ObjectKind, String)>,
    ) {
        let name = named.as_ref().map(|(_, n)| escape(n).into_owned());
        let count = u64::from(through - object.object) + 1;
        if count == 1 {
            tracing::warn!(object = %object, name, "object lost: sent but never seen");
        } else {
            tracing::warn!(object = %object, through, count, "objects lost: sent but never seen");
        }
        self.summary.lost += count;
        let mut r = Record::new(Outcome::Lost, object.session, object.object);
        if count > 1 {
            r.objects = Some([object.object, through]);
        }
        let lost_signature = match &named {
            Some((ObjectKind::ImageSignature, name)) => Some(base_name(name).to_string()),
            _ => None,
        };
        let queue_dropped =
            (self.metrics.queue_drops).of_run(object.session, object.object, through);
        (r.cause, r.reason) = crate::cause::lost(queue_dropped).unzip();
        if let Some((kind, name)) = named {
            r.kind = Some(kind);
            r.name = Some(name);
        }
        self.record(r);
        if let Some(sig) = lost_signature {
            self.signature_settled(&sig, Some("lost on the link"));
        }
    }
}
