//! Naming why an object fell short: the link lost its datagrams, the receiver dropped them
//! itself (queue, memory or object limit, socket buffer), or its session ended first; and
//! the advice that fits each. The protocol core reports facts; the advice is added here.
//! Also the tally of the receiver's queue drops by the object they belonged to.

use gapferry_common::assembler::{OwnDrops, Shortfall};
use gapferry_common::wire::{self, Datagram, DatagramType, RejectReason};
use gapferry_common::{KeyRing, ObjectRef};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Objects whose queue drops are remembered, the oldest forgotten first.
const TRACKED_OBJECTS: usize = 1 << 16;

/// Datagrams the receiver's own queue dropped, by the object they belonged to, read from
/// the dropped datagrams themselves (they passed the gate, tag included, before the
/// queue refused them). The assembler learns of queue drops only after the datagrams
/// queued before them, often while other objects are being assembled: this tally lets
/// a failed or lost object name the queue anyway. Clones share the tally.
#[derive(Clone, Debug, Default)]
pub struct QueueDrops(Arc<Mutex<DropTally>>);

#[derive(Debug, Default)]
struct DropTally {
    by_object: HashMap<ObjectRef, u64>,
    order: VecDeque<ObjectRef>,
}

impl QueueDrops {
    /// Counts `datagrams` (UDP payloads that passed the gate) as dropped by the queue.
    pub fn note<'a>(&self, datagrams: impl IntoIterator<Item = &'a [u8]>) {
        let keys = KeyRing::new(Vec::new());
        let mut t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for object in datagrams.into_iter().filter_map(|d| object_of(d, &keys)) {
            let n = t.by_object.entry(object).or_insert(0);
            *n += 1;
            if *n == 1 {
                t.order.push_back(object);
                if t.order.len() > TRACKED_OBJECTS {
                    let old = t.order.pop_front().expect("not empty");
                    t.by_object.remove(&old);
                }
            }
        }
    }

    /// Datagrams of `object` the queue dropped.
    pub fn of(&self, object: ObjectRef) -> u64 {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        t.by_object.get(&object).copied().unwrap_or(0)
    }

    /// Datagrams of objects `first ..= through` of `session` the queue dropped.
    pub fn of_run(&self, session: u64, first: u32, through: u32) -> u64 {
        let t = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if u64::from(through - first) < t.by_object.len() as u64 {
            return (first..=through)
                .filter_map(|object| t.by_object.get(&ObjectRef { session, object }))
                .sum();
        }
        t.by_object
            .iter()
            .filter(|(o, _)| o.session == session && (first..=through).contains(&o.object))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The object a gate-checked datagram belongs to; none for heartbeats and inventories.
fn object_of(datagram: &[u8], keys: &KeyRing) -> Option<ObjectRef> {
    match wire::parse(datagram, keys).ok()? {
        Datagram::Data { header, .. } => Some(ObjectRef {
            session: header.session,
            object: header.object,
        }),
        Datagram::Control {
            kind: DatagramType::Descriptor,
            session,
            object,
            ..
        } => Some(ObjectRef { session, object }),
        Datagram::Control { .. } => None,
    }
}

/// The cause and message of objects sent but never seen, when the receiver's queue
/// dropped `queue_dropped` of their datagrams; `None` when it dropped none of them.
pub fn lost(queue_dropped: u64) -> Option<(Cause, String)> {
    (queue_dropped > 0).then(|| {
        (
            Cause::Receiver,
            format!(
                "sent but never seen: the receiver's own queue was full and dropped {queue_dropped} of its datagrams: {}",
                QUEUE_ADVICE
            ),
        )
    })
}

/// What to do when the receiver's queue fills: it commits fewer objects a second than
/// the sender sends.
const QUEUE_ADVICE: &str = "lower --rate or --max-objects-rate on the sender (below the commit rate `gapferry-recv status` shows), or give the receiver more cores or a faster disk";

/// Where the datagrams an object needed went, as recorded in the record log's `cause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    /// Lost on the way: the receiver dropped nothing itself while the object was in flight.
    Link,
    /// The receiver dropped or refused datagrams itself (queue full, a limit, socket
    /// buffer), or could not write the object.
    Receiver,
    /// The session ended before the sender said it finished sending the object, or the
    /// receiver stopped first.
    Interrupted,
    /// An image's OpenPGP signature did not verify against `[images] keyring`, or it had
    /// none.
    Signature,
}

impl Cause {
    /// Its name in the record log.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Link => "link",
            Cause::Receiver => "receiver",
            Cause::Interrupted => "interrupted",
            Cause::Signature => "signature",
        }
    }
}

/// The operator's message for an object that fell short, `facts` being the core's reason,
/// `queue_dropped` the datagrams of this very object the receiver's queue dropped
/// ([`QueueDrops::of`]), and the cause it names.
pub fn explain(facts: &str, shortfall: &Shortfall, queue_dropped: u64) -> (Cause, String) {
    let mut own = shortfall.own_drops;
    own.queue_full = own.queue_full.max(queue_dropped);
    if own.total() > 0 {
        let mine = match queue_dropped {
            0 => String::new(),
            n => format!(", {n} of this object's own"),
        };
        let message = format!(
            "{facts}; the receiver dropped {} datagrams itself while this object was in flight ({}{mine}): {}",
            own.total(),
            breakdown(&own),
            own_advice(&own)
        );
        return (Cause::Receiver, message);
    }
    if !shortfall.sender_finished {
        let message = format!(
            "{facts}; the session ended before the sender said it finished sending the object (sender restarted or stopped, link down, or receiver stopped): send it again"
        );
        return (Cause::Interrupted, message);
    }
    let message = format!(
        "{facts}; the link lost more than the repair covers (the receiver dropped nothing itself): raise --repair or --passes on the sender"
    );
    (Cause::Link, message)
}

/// "queue full: 3, memory limit: 7", naming only what happened.
pub fn breakdown(own: &OwnDrops) -> String {
    [
        ("queue full", own.queue_full),
        ("memory limit", own.memory_limit),
        ("object limit", own.objects_limit),
        ("socket buffer full", own.socket_buffer),
    ]
    .iter()
    .filter(|(_, n)| *n > 0)
    .map(|(what, n)| format!("{what}: {n}"))
    .collect::<Vec<_>>()
    .join(", ")
}

/// What the operator can do about the receiver's own drops.
pub fn own_advice(own: &OwnDrops) -> String {
    let mut fixes: Vec<String> = Vec::new();
    if own.queue_full > 0 {
        return format!("{QUEUE_ADVICE}{}", other_advice(own));
    }
    if own.memory_limit > 0 {
        fixes.push("raise max_held_bytes under [limits] in the receiver's configuration".into());
    }
    if own.objects_limit > 0 {
        fixes.push(
            "raise max_objects_in_flight under [limits] in the receiver's configuration".into(),
        );
    }
    if own.socket_buffer > 0 {
        fixes.push("raise --recv-buffer (and net.core.rmem_max)".into());
    }
    format!("lower --rate on the sender, or {}", fixes.join(", or "))
}

/// The advice for drops other than the queue's, after the queue's own.
fn other_advice(own: &OwnDrops) -> String {
    let rest = OwnDrops {
        queue_full: 0,
        ..*own
    };
    match rest.total() {
        0 => String::new(),
        _ => format!("; and {}", own_advice(&rest)),
    }
}

/// What the operator can do about datagrams rejected for `reason`, when it is theirs to fix
/// (the wire checks state facts only).
pub fn reject_advice(reason: RejectReason) -> Option<&'static str> {
    match reason {
        RejectReason::MissingTag => Some("is the sender's --key set?"),
        RejectReason::BadTag => Some("check that both sides use the same key"),
        RejectReason::RetiredKey => {
            Some("the sender still uses a retired key: give it the new key")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shortfall(own_drops: OwnDrops, sender_finished: bool) -> Shortfall {
        Shortfall {
            decoded: 39,
            blocks: Some(47),
            sender_finished,
            own_drops,
        }
    }

    #[test]
    fn drops_of_its_own_make_the_receiver_the_cause_whatever_the_sender_did() {
        let own = OwnDrops {
            queue_full: 181_645,
            memory_limit: 520_810,
            ..OwnDrops::default()
        };
        for finished in [true, false] {
            let (cause, m) = explain(
                "x; 2136 of 2979 blocks decoded",
                &shortfall(own, finished),
                0,
            );
            assert_eq!(cause, Cause::Receiver);
            assert!(
                m.starts_with(
                    "x; 2136 of 2979 blocks decoded; the receiver dropped 702455 datagrams itself"
                ),
                "{m}"
            );
            assert!(
                m.contains("(queue full: 181645, memory limit: 520810)"),
                "{m}"
            );
            assert!(m.contains("lower --rate on the sender"), "{m}");
            assert!(
                m.contains("more cores") && m.contains("max_held_bytes"),
                "{m}"
            );
            assert!(
                !m.contains("--repair") && !m.contains("socket buffer"),
                "{m}"
            );
        }
    }

    #[test]
    fn a_full_socket_buffer_asks_for_a_larger_one() {
        let own = OwnDrops {
            socket_buffer: 12,
            ..OwnDrops::default()
        };
        let (cause, m) = explain("f", &shortfall(own, true), 0);
        assert_eq!(cause, Cause::Receiver);
        assert!(
            m.contains("(socket buffer full: 12)") && m.contains("--recv-buffer"),
            "{m}"
        );
        assert!(!m.contains("cores"), "{m}");
    }

    #[test]
    fn without_own_drops_the_link_or_the_session_end_is_named() {
        let (cause, m) = explain("f", &shortfall(OwnDrops::default(), true), 0);
        assert_eq!(cause, Cause::Link);
        assert!(
            m.contains("raise --repair or --passes on the sender"),
            "{m}"
        );
        assert!(!m.contains("--rate"), "{m}");
        let (cause, m) = explain("f", &shortfall(OwnDrops::default(), false), 0);
        assert_eq!(cause, Cause::Interrupted);
        assert!(
            m.contains("send it again") && !m.contains("--repair"),
            "{m}"
        );
    }

    /// A datagram of `object` as the sender writes it.
    fn datagram_of(session: u64, object: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let header = wire::DataHeader {
            session,
            object,
            block: 0,
            esi: 0,
            block_len: 4,
            plain_len: 4,
            codec: wire::Codec::None,
        };
        wire::encode_data(&mut out, &header, b"abcd", None);
        out
    }

    #[test]
    fn queue_drops_of_the_object_itself_name_the_queue_even_when_none_were_charged_to_it() {
        let drops = QueueDrops::default();
        let (mine, other) = (datagram_of(7, 3), datagram_of(7, 4));
        drops.note([&mine[..], &mine[..], &other[..], b"garbage".as_slice()]);
        let o = |object| ObjectRef { session: 7, object };
        assert_eq!((drops.of(o(3)), drops.of(o(4)), drops.of(o(5))), (2, 1, 0));
        assert_eq!(drops.of_run(7, 0, 10), 3);
        assert_eq!(drops.of_run(8, 0, 10), 0);
        // The core charged nothing to the object (the drops were noted while another
        // object was being assembled): its own tally names the queue all the same.
        let (cause, m) = explain(
            "f; 0 of 1 blocks decoded",
            &shortfall(OwnDrops::default(), true),
            drops.of(o(3)),
        );
        assert_eq!(cause, Cause::Receiver);
        assert!(m.contains("the receiver dropped 2 datagrams itself while this object was in flight (queue full: 2, 2 of this object's own)"), "{m}");
        assert!(
            m.contains("lower --rate or --max-objects-rate on the sender"),
            "{m}"
        );
        assert!(
            !m.contains("the link lost") && !m.contains("--repair"),
            "{m}"
        );
        let (cause, m) = lost(drops.of_run(7, 4, 4)).unwrap();
        assert_eq!(cause, Cause::Receiver);
        assert!(
            m.contains("queue was full and dropped 1 of its datagrams")
                && m.contains("--max-objects-rate"),
            "{m}"
        );
        assert_eq!(lost(drops.of_run(7, 5, 9)), None);
    }

    #[test]
    fn the_tally_forgets_the_oldest_objects_beyond_its_bound() {
        let drops = QueueDrops::default();
        let first = datagram_of(1, 0);
        drops.note([&first[..]]);
        for i in 1..=TRACKED_OBJECTS as u32 {
            let d = datagram_of(1, i);
            drops.note([&d[..]]);
        }
        assert_eq!(
            drops.of(ObjectRef {
                session: 1,
                object: 0
            }),
            0
        );
        assert_eq!(
            drops.of(ObjectRef {
                session: 1,
                object: 1
            }),
            1
        );
        assert_eq!(drops.of_run(1, 0, u32::MAX), TRACKED_OBJECTS as u64);
    }
}
