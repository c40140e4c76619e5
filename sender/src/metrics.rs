//! The sender's Prometheus metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

/// Labels: an object's kind and what became of it on this side.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    /// misp, stix, image, image-signature or file.
    pub kind: String,
    /// sent (every pass out) or failed (unreadable, changed while sent).
    pub outcome: String,
}

/// Every sender metric; clones share the same values.
#[derive(Clone, Debug, Default)]
pub struct SenderMetrics {
    /// Datagrams sent.
    pub datagrams: Counter,
    /// UDP payload bytes sent.
    pub bytes: Counter,
    /// Objects by kind and outcome.
    pub objects: Family<ObjectLabels, Counter>,
    /// The configured rate.
    pub rate: Gauge,
    /// Files waiting in the outbox (watch).
    pub outbox_pending: Gauge,
    /// Objects the object pace (`--max-objects-rate`) held back.
    pub objects_paced: Counter,
    /// `misp-pull` / `[misp_pull]`.
    pub misp_pull: crate::misp_pull::MispPullMetrics,
}

impl SenderMetrics {
    /// Registers every metric under `gapferry_sender_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("gapferry_sender");
        r.register("datagrams_sent", "Datagrams sent", self.datagrams.clone());
        r.register_with_unit(
            "sent",
            "UDP payload bytes sent",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "objects",
            "Objects by kind and outcome",
            self.objects.clone(),
        );
        r.register(
            "rate_bits_per_second",
            "Configured link rate",
            self.rate.clone(),
        );
        r.register(
            "outbox_pending",
            "Files waiting in the outbox",
            self.outbox_pending.clone(),
        );
        r.register(
            "objects_paced",
            "Objects held back by --max-objects-rate (it is what limits when this grows)",
            self.objects_paced.clone(),
        );
        self.misp_pull.register(r);
    }

    /// Counts one object outcome.
    pub fn object(&self, kind: gapferry_common::ObjectKind, outcome: &str) {
        self.objects
            .get_or_create(&ObjectLabels {
                kind: kind.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }
}
