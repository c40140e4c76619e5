//! The receiver's Prometheus metrics: what the socket, the assembler and the delivery saw.

use crate::records::Outcome;
use gapferry_common::wire::RejectReason;
use gapferry_common::ObjectKind;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Label: why a datagram was rejected.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ReasonLabel {
    /// The reject reason (bad_tag, missing_tag, malformed, ...).
    pub reason: RejectReason,
}

impl EncodeLabelSet for ReasonLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        ("reason", self.reason.as_str()).encode(encoder.encode_label())
    }
}

/// Labels: an object's kind and outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ObjectLabels {
    /// misp, stix, image, image-signature, file, or unknown (`None`).
    pub kind: Option<ObjectKind>,
    /// delivered, failed, lost, hook_failed, pushed, push_failed, ... or republished.
    pub outcome: ObjectEvent,
}

impl EncodeLabelSet for ObjectLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        let kind = self.kind.map_or("unknown", ObjectKind::as_str);
        ("kind", kind).encode(encoder.encode_label())?;
        ("outcome", self.outcome.as_str()).encode(encoder.encode_label())
    }
}

/// What an object count is about: an outcome recorded in the record log, or a MISP
/// event the feed keeper republished.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ObjectEvent {
    /// A record's outcome.
    Recorded(Outcome),
    /// The feed keeper put an event MISP may have deleted unread back into the feed.
    Republished,
}

impl ObjectEvent {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectEvent::Recorded(o) => o.as_str(),
            ObjectEvent::Republished => "republished",
        }
    }
}

/// The result of an image signature check.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum SignatureResult {
    /// It verified against the keyring.
    Good,
    /// It did not verify.
    Bad,
    /// The image came without one.
    Missing,
}

impl SignatureResult {
    /// Its label value.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureResult::Good => "good",
            SignatureResult::Bad => "bad",
            SignatureResult::Missing => "missing",
        }
    }
}

impl std::str::FromStr for SignatureResult {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "good" => Ok(SignatureResult::Good),
            "bad" => Ok(SignatureResult::Bad),
            "missing" => Ok(SignatureResult::Missing),
            other => Err(format!(
                "no signature result {other:?}: good, bad or missing"
            )),
        }
    }
}

impl From<&str> for SignatureResult {
    /// For lookups by label; an unknown label reads as `missing`.
    fn from(s: &str) -> Self {
        s.parse().unwrap_or(SignatureResult::Missing)
    }
}

/// Label: the result of an image signature check.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct ResultLabel {
    /// good, bad or missing.
    pub result: SignatureResult,
}

impl EncodeLabelSet for ResultLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        ("result", self.result.as_str()).encode(encoder.encode_label())
    }
}

/// Every receiver metric; clones share the same values.
#[derive(Clone, Debug, Default)]
pub struct ReceiverMetrics {
    /// Datagrams read from the socket.
    pub datagrams: Counter,
    /// UDP payload bytes read from the socket.
    pub bytes: Counter,
    /// Datagrams dropped because the assembler queue was full.
    pub queue_dropped: Counter,
    /// Datagrams the kernel dropped for the receiver's socket (its receive buffer was full).
    pub socket_dropped: Counter,
    /// Datagrams the receiver itself refused over its memory or object limits.
    pub limit_refused: Counter,
    /// Datagrams rejected, by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Objects by kind and outcome.
    pub objects: Family<ObjectLabels, Counter>,
    /// Image signature checks against `[images] keyring`, by result (good, bad, missing).
    pub image_signatures: Family<ResultLabel, Counter>,
    /// Bytes of objects delivered.
    pub delivered_bytes: Counter,
    /// Blocks decoded.
    pub blocks_decoded: Counter,
    /// Blocks that needed repair symbols.
    pub blocks_repaired: Counter,
    /// Seconds since the last heartbeat (refreshed at scrape time).
    pub heartbeat_age: Gauge<f64, AtomicU64>,
    /// Share of datagrams lost on the way, from heartbeat counters.
    pub loss_ratio: Gauge<f64, AtomicU64>,
    /// The sender's configured rate, from its heartbeat.
    pub sender_rate: Gauge,
    /// Datagrams waiting between the socket thread and the assembler.
    pub queue_depth: Gauge,
    /// Incomplete objects held.
    pub objects_in_flight: Gauge,
    /// Bytes of incomplete blocks held.
    pub held_bytes: Gauge,
    /// Host-wide UDP receive-buffer errors (/proc/net/snmp RcvbufErrors): kernel drops.
    pub kernel_drops: Gauge,
    /// Unix milliseconds of the last heartbeat, 0 before the first.
    pub last_heartbeat_ms: Arc<AtomicU64>,
    /// Seconds since the last authenticated datagram (refreshed at scrape time).
    pub datagram_age: Gauge<f64, AtomicU64>,
    /// Unix milliseconds of the last authenticated datagram, 0 before the first.
    pub last_datagram_ms: Arc<AtomicU64>,
    /// Per-lane counters (label `lane`, the bound address).
    pub lanes: crate::lanes::LaneMetrics,
    /// The queue's drops by object, for the failed and lost objects' cause.
    pub queue_drops: crate::cause::QueueDrops,
    /// Objects delivered by second: the measured commit rate.
    pub commits: crate::commit_rate::CommitRate,
    /// The commit rate, objects per second (refreshed at scrape time).
    pub commit_rate: Gauge<f64, AtomicU64>,
}

impl ReceiverMetrics {
    /// Registers every metric under `gapferry_receiver_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("gapferry_receiver");
        self.register_datagrams(r);
        self.register_objects(r);
        self.register_link(r);
        self.lanes.register(r);
    }

    /// What the socket read, dropped and rejected.
    fn register_datagrams(&self, r: &mut Registry) {
        r.register(
            "datagrams_received",
            "Datagrams read from the socket",
            self.datagrams.clone(),
        );
        r.register_with_unit(
            "received",
            "UDP payload bytes read from the socket",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "datagrams_queue_dropped",
            "Datagrams dropped because the assembler could not keep up",
            self.queue_dropped.clone(),
        );
        r.register(
            "commit_rate_objects_per_second",
            "Objects delivered per second over the last 30 s that delivered any: keep the sender's --max-objects-rate below it",
            self.commit_rate.clone(),
        );
        r.register(
            "datagrams_socket_dropped",
            "Datagrams the kernel dropped for the receiver's socket (receive buffer full)",
            self.socket_dropped.clone(),
        );
        r.register(
            "datagrams_limit_refused",
            "Datagrams the receiver refused over its own memory or object limits",
            self.limit_refused.clone(),
        );
        r.register_with_unit(
            "datagram_age",
            "Time since the last authenticated datagram",
            Unit::Seconds,
            self.datagram_age.clone(),
        );
        r.register(
            "datagrams_rejected",
            "Datagrams rejected before decoding, by reason",
            self.rejected.clone(),
        );
    }

    /// Objects, delivered bytes, blocks and image signature checks.
    fn register_objects(&self, r: &mut Registry) {
        r.register(
            "image_signature_checks",
            "Image signature checks against [images] keyring, by result (good, bad, missing)",
            self.image_signatures.clone(),
        );
        r.register(
            "objects",
            "Objects by kind and outcome",
            self.objects.clone(),
        );
        r.register_with_unit(
            "delivered",
            "Bytes of objects delivered",
            Unit::Bytes,
            self.delivered_bytes.clone(),
        );
        r.register(
            "blocks_decoded",
            "Blocks decoded",
            self.blocks_decoded.clone(),
        );
        r.register(
            "blocks_repaired",
            "Blocks that needed repair symbols",
            self.blocks_repaired.clone(),
        );
    }

    /// The link as heartbeats tell it, and what the receiver holds and queues.
    fn register_link(&self, r: &mut Registry) {
        r.register_with_unit(
            "heartbeat_age",
            "Time since the last sender heartbeat",
            Unit::Seconds,
            self.heartbeat_age.clone(),
        );
        r.register(
            "loss_ratio",
            "Share of datagrams lost on the way (from heartbeat counters)",
            self.loss_ratio.clone(),
        );
        r.register(
            "sender_rate_bits_per_second",
            "The sender's configured rate",
            self.sender_rate.clone(),
        );
        r.register(
            "queue_depth",
            "Datagrams waiting for the assembler",
            self.queue_depth.clone(),
        );
        r.register(
            "objects_in_flight",
            "Incomplete objects held",
            self.objects_in_flight.clone(),
        );
        r.register_with_unit(
            "held",
            "Bytes of incomplete blocks held",
            Unit::Bytes,
            self.held_bytes.clone(),
        );
        r.register(
            "kernel_udp_rcvbuf_errors",
            "Host-wide UDP receive buffer overflows (kernel drops)",
            self.kernel_drops.clone(),
        );
    }

    /// Counts one object outcome (a delivery also counts towards the commit rate).
    pub fn object(&self, kind: Option<ObjectKind>, outcome: Outcome) {
        if outcome == Outcome::Delivered {
            self.commits.note();
        }
        self.objects
            .get_or_create(&ObjectLabels {
                kind,
                outcome: ObjectEvent::Recorded(outcome),
            })
            .inc();
    }

    /// Counts one MISP event the feed keeper republished.
    pub fn republished(&self) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: Some(ObjectKind::Misp),
                outcome: ObjectEvent::Republished,
            })
            .inc();
    }

    /// Counts one image signature check.
    pub fn image_signature(&self, result: SignatureResult) {
        self.image_signatures
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts `n` datagrams rejected for `reason`.
    pub fn rejected(&self, reason: RejectReason, n: u64) {
        self.rejected
            .get_or_create(&ReasonLabel { reason })
            .inc_by(n);
    }

    /// Notes a heartbeat arriving now.
    pub fn heartbeat(&self, loss: Option<f64>, rate_bps: u64) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.last_heartbeat_ms.store(now, Ordering::Relaxed);
        if let Some(l) = loss {
            self.loss_ratio.set(l);
        }
        self.sender_rate.set(rate_bps as i64);
    }

    /// Updates the gauges computed on demand, before a scrape.
    pub fn refresh(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for (last, age) in [
            (&self.last_heartbeat_ms, &self.heartbeat_age),
            (&self.last_datagram_ms, &self.datagram_age),
        ] {
            match last.load(Ordering::Relaxed) {
                0 => age.set(f64::INFINITY),
                last => age.set(now.saturating_sub(last) as f64 / 1000.0),
            };
        }
        if let Some(drops) = udp_rcvbuf_errors() {
            self.kernel_drops.set(drops as i64);
        }
        self.commit_rate
            .set(self.commits.state().map_or(0.0, |c| c.per_second));
    }
}

/// The receiver's health for `GET /healthz`: the link carries authenticated datagrams
/// (one within [`crate::status::LINK_DOWN_AFTER`]), and the delivery filesystem under `out`
/// has more than [`crate::delivery::DISK_RESERVE`] free.
pub fn health(metrics: &ReceiverMetrics, out: &std::path::Path) -> Result<(), String> {
    let mut problems = Vec::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let down_after = crate::status::LINK_DOWN_AFTER.as_millis() as u64;
    match metrics.last_datagram_ms.load(Ordering::Relaxed) {
        0 => problems.push("link down: no authenticated datagram yet".to_string()),
        last if now.saturating_sub(last) > down_after => problems.push(format!(
            "link down: no authenticated datagram for {} s",
            now.saturating_sub(last) / 1000
        )),
        _ => {}
    }
    match crate::disk::available_bytes(out) {
        Ok(free) if free <= crate::delivery::DISK_RESERVE => problems.push(format!(
            "disk full: {free} bytes free under {}",
            out.display()
        )),
        Ok(_) => {}
        Err(e) => problems.push(format!("cannot read free space of {}: {e}", out.display())),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// RcvbufErrors from the Udp line of /proc/self/net/snmp (the same as /proc/net/snmp, and
/// still readable under the unit's ProcSubset=pid).
pub fn udp_rcvbuf_errors() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/net/snmp").ok()?;
    let mut lines = text.lines().filter(|l| l.starts_with("Udp:"));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let i = names.iter().position(|n| *n == "RcvbufErrors")?;
    values.get(i)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn labels_are_written_with_their_stable_names() {
        let m = ReceiverMetrics::default();
        let mut registry = Registry::default();
        m.register(&mut registry);
        m.object(Some(ObjectKind::ImageSignature), Outcome::HookFailed);
        m.object(None, Outcome::Lost);
        m.republished();
        m.image_signature(SignatureResult::Bad);
        m.rejected(RejectReason::BadTag, 3);
        let mut text = String::new();
        encode(&mut text, &registry).unwrap();
        for expected in [
            r#"objects_total{kind="image-signature",outcome="hook_failed"} 1"#,
            r#"objects_total{kind="unknown",outcome="lost"} 1"#,
            r#"objects_total{kind="misp",outcome="republished"} 1"#,
            r#"image_signature_checks_total{result="bad"} 1"#,
            r#"datagrams_rejected_total{reason="bad_tag"} 3"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from:\n{text}");
        }
    }
}
