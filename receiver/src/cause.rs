//! Naming why an object fell short: the link lost its datagrams, the receiver dropped them
//! itself (queue, memory or object limit, socket buffer), or its session ended first; and
//! the advice that fits each. The protocol core reports facts; the advice is added here.

use gapferry_common::assembler::{OwnDrops, Shortfall};
use gapferry_common::wire::RejectReason;
use serde::{Deserialize, Serialize};

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
/// and the cause it names.
pub fn explain(facts: &str, shortfall: &Shortfall) -> (Cause, String) {
    let own = &shortfall.own_drops;
    if own.total() > 0 {
        let message = format!(
            "{facts}; the receiver dropped {} datagrams itself while this object was in flight ({}): {}",
            own.total(),
            breakdown(own),
            own_advice(own)
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
    let mut fixes = Vec::new();
    if own.queue_full > 0 {
        fixes.push("give the receiver more cores".to_string());
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
            let (cause, m) = explain("x; 2136 of 2979 blocks decoded", &shortfall(own, finished));
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
        let (cause, m) = explain("f", &shortfall(own, true));
        assert_eq!(cause, Cause::Receiver);
        assert!(
            m.contains("(socket buffer full: 12)") && m.contains("--recv-buffer"),
            "{m}"
        );
        assert!(!m.contains("cores"), "{m}");
    }

    #[test]
    fn without_own_drops_the_link_or_the_session_end_is_named() {
        let (cause, m) = explain("f", &shortfall(OwnDrops::default(), true));
        assert_eq!(cause, Cause::Link);
        assert!(
            m.contains("raise --repair or --passes on the sender"),
            "{m}"
        );
        assert!(!m.contains("--rate"), "{m}");
        let (cause, m) = explain("f", &shortfall(OwnDrops::default(), false));
        assert_eq!(cause, Cause::Interrupted);
        assert!(
            m.contains("send it again") && !m.contains("--repair"),
            "{m}"
        );
    }
}
