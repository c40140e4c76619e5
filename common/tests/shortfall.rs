//! What the assembler says about an object that fell short: facts only (blocks decoded of
//! how many, whether the sender had finished it, what the receiver dropped itself while
//! it was in flight), never advice; the binaries add the advice that fits.

mod support;

use gapferry_common::assembler::{OwnDrops, Shortfall};
use gapferry_common::emit::DatagramWriter;
use gapferry_common::{Assembler, Event, KeyRing, Limits};
use std::time::Duration;
use support::*;

const SESSION: u64 = 0x5407_7FA1_0000_0001;

/// Feeds `datagrams` (those `keep` keeps) at 10 ms, then heartbeats saying object 0 was
/// finished (unless `finished` is false), and time; returns the shortfall and reason of
/// object 0's failure.
fn failure(
    limits: Limits,
    keep: impl Fn(usize) -> bool,
    finished: bool,
    between: impl Fn(&mut Assembler, usize),
) -> (Shortfall, String) {
    let w = DatagramWriter::new(SESSION, None);
    let sent = send_object(&w, 0, "doomed.bin", &noise(1 << 20, 3), TEST_SYMBOL, 10, 1);
    let mut a = Assembler::new(limits.clone(), KeyRing::default());
    let t = Duration::from_millis(10);
    for (i, d) in sent.datagrams.iter().enumerate() {
        between(&mut a, i);
        if keep(i) {
            let _ = a.handle(t, d);
        }
    }
    let mut now = t;
    if finished {
        a.handle(now, &heartbeat(&w, 1, 1, true)).unwrap();
    }
    let mut found = None;
    while now < limits.session_timeout * 2 && found.is_none() {
        now += Duration::from_millis(100);
        a.tick(now);
        while let Some(e) = a.poll_event() {
            if let Event::ObjectFailed {
                object,
                reason,
                shortfall,
                ..
            } = e
            {
                assert_eq!(object.object, 0);
                found = Some((shortfall.expect("a failure for want of blocks"), reason));
            }
        }
    }
    found.expect("object 0 failed")
}

fn assert_facts_only(reason: &str) {
    for advice in ["--repair", "--passes", "--rate", "raise", "lower"] {
        assert!(!reason.contains(advice), "advice in the core: {reason}");
    }
}

#[test]
fn the_memory_limit_refusals_while_in_flight_are_charged_to_the_object() {
    let limits = Limits {
        max_held_bytes: 64 << 10,
        ..small_limits()
    };
    let (s, reason) = failure(
        limits,
        |_| true,
        true,
        |a, i| {
            if i == 50 {
                a.note_host_drops(0, 3);
            }
        },
    );
    assert!(s.sender_finished);
    assert!(s.decoded < s.blocks.unwrap(), "{s:?}");
    assert!(s.own_drops.memory_limit > 100, "{s:?}");
    assert_eq!(s.own_drops.socket_buffer, 3);
    assert_eq!(s.own_drops.queue_full, 0);
    assert!(reason.contains("blocks decoded"), "{reason}");
    assert_facts_only(&reason);
}

#[test]
fn link_loss_alone_charges_no_own_drops_and_earlier_drops_are_not_charged() {
    let (s, reason) = failure(
        small_limits(),
        // 40 % of everything lost, descriptors included, the first datagram kept.
        |i| i == 0 || i % 5 >= 2,
        true,
        |a, i| {
            if i == 0 {
                // Before another session was heard, so before this one began: not its
                // business.
                a.note_host_drops(7, 2);
                let other = DatagramWriter::new(SESSION + 1, None);
                a.handle(Duration::from_millis(1), &heartbeat(&other, 1, 0, false))
                    .unwrap();
            }
        },
    );
    assert_eq!(s.own_drops, OwnDrops::default(), "{s:?}");
    assert!(s.sender_finished);
    assert!(s.decoded < s.blocks.unwrap_or(u64::MAX), "{s:?}");
    assert_facts_only(&reason);
}

#[test]
fn a_session_that_goes_silent_before_the_sender_finished_says_so() {
    let (s, reason) = failure(small_limits(), |i| i < 200, false, |_, _| {});
    assert!(!s.sender_finished, "{s:?}");
    assert!(reason.contains("went silent"), "{reason}");
    assert_eq!(s.own_drops.total(), 0);
    assert_facts_only(&reason);
}

#[test]
fn drops_of_an_objects_first_datagrams_are_charged_to_it() {
    // The session is known (a heartbeat), then the host drops the first 600 datagrams of
    // object 0 (descriptor included) before the assembler knows of the object: they
    // still count against it.
    let (s, _) = failure(
        small_limits(),
        |i| i >= 600,
        true,
        |a, i| {
            if i == 0 {
                let w = DatagramWriter::new(SESSION, None);
                a.handle(Duration::from_millis(1), &heartbeat(&w, 1, 0, false))
                    .unwrap();
            }
            if i < 600 {
                a.note_host_drops(1, 0);
            }
        },
    );
    assert_eq!(s.own_drops.queue_full, 600, "{s:?}");
    assert!(s.decoded < s.blocks.unwrap_or(u64::MAX), "{s:?}");
}

#[test]
fn drops_before_a_new_session_was_heard_count_against_its_first_object() {
    // Nothing else was heard: the host's drops before the session's first datagram are
    // the session's own (its first datagrams, descriptor and all, overran the receiver).
    let (s, _) = failure(
        small_limits(),
        |i| i >= 600,
        true,
        |a, i| {
            if i < 600 {
                a.note_host_drops(0, 1);
            }
        },
    );
    assert_eq!(s.own_drops.socket_buffer, 600, "{s:?}");
}
