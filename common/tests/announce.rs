//! The ledger question asked through an event: with announcements on, a new object's
//! descriptor becomes `ObjectAnnounced` and the object waits for the host's answer;
//! `skip` ignores it without decoding anything, `proceed` starts it with whatever
//! arrived in between. The core never looks anything up itself.

mod support;

use gapferry_common::compress::decompress_block;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::wire::Reject;
use gapferry_common::{Assembler, Event, KeyRing, Limits, ObjectRef};
use std::time::Duration;
use support::*;

const SESSION: u64 = 0xA220_0CED_0000_0001;
const OBJECT: ObjectRef = ObjectRef {
    session: SESSION,
    object: 0,
};

fn announcing() -> Assembler {
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    a.set_announce(true);
    a
}

fn events(a: &mut Assembler) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

fn sent() -> SentObject {
    let w = DatagramWriter::new(SESSION, None);
    send_object(
        &w,
        0,
        "dir/once.bin",
        &noise(300_000, 5),
        TEST_SYMBOL,
        20,
        1,
    )
}

#[test]
fn a_skipped_object_is_announced_once_and_never_decoded() {
    let sent = sent();
    let mut a = announcing();
    let t = Duration::from_millis(10);
    a.handle(t, &sent.datagrams[0]).unwrap();
    let first = events(&mut a);
    assert!(
        matches!(&first[..], [Event::SessionStarted { .. }, Event::ObjectAnnounced { object, descriptor }]
            if *object == OBJECT && *descriptor == sent.descriptor),
        "{first:?}"
    );
    a.skip(OBJECT);
    let answered = events(&mut a);
    assert!(
        matches!(&answered[..], [Event::ObjectAlreadyDelivered { object, .. }] if *object == OBJECT),
        "{answered:?}"
    );
    for d in &sent.datagrams[1..] {
        a.handle(t, d).unwrap();
    }
    let after = events(&mut a);
    assert!(
        after.is_empty(),
        "nothing more of a skipped object: {after:?}"
    );
    assert_eq!(a.stats().blocks_decoded, 0);
    assert_eq!(a.objects_in_flight(), 0);
    assert_eq!(a.held_bytes(), 0);
}

#[test]
fn a_proceeded_object_keeps_the_blocks_that_arrived_before_the_answer() {
    let sent = sent();
    let mut a = announcing();
    let t = Duration::from_millis(10);
    // The answer comes late: every datagram but the last is in by then.
    let (last, before) = sent.datagrams.split_last().unwrap();
    for d in before {
        a.handle(t, d).unwrap();
    }
    let early = events(&mut a);
    assert!(
        !early.iter().any(|e| matches!(
            e,
            Event::ObjectStarted { .. } | Event::ObjectComplete { .. }
        )),
        "nothing starts before the answer: {early:?}"
    );
    assert_eq!(
        early
            .iter()
            .filter(|e| matches!(e, Event::ObjectAnnounced { .. }))
            .count(),
        1,
        "descriptor copies do not announce again: {early:?}"
    );
    a.proceed(OBJECT).unwrap();
    a.handle(t, last).unwrap();
    let mut bytes = vec![0u8; sent.original.len()];
    let mut complete = false;
    for e in events(&mut a) {
        match e {
            Event::BlockDecoded {
                block,
                codec,
                plain_len,
                data,
                ..
            } => {
                let plain = decompress_block(codec, data, plain_len).unwrap();
                let at = block as usize * sent.descriptor.block_plain_size as usize;
                bytes[at..at + plain.len()].copy_from_slice(&plain);
            }
            Event::ObjectComplete { object, .. } => complete = object == OBJECT,
            Event::ObjectFailed { reason, .. } => panic!("failed: {reason}"),
            _ => {}
        }
    }
    assert!(complete);
    assert_eq!(bytes, sent.original);
}

#[test]
fn a_forged_copy_is_refused_and_a_closed_session_forgets_its_announcements() {
    let sent = sent();
    let mut a = announcing();
    let t = Duration::from_millis(10);
    a.handle(t, &sent.datagrams[0]).unwrap();
    // Another descriptor for the same object id, different content: refused.
    let w = DatagramWriter::new(SESSION, None);
    let forged = send_object(
        &w,
        0,
        "dir/once.bin",
        &noise(300_000, 6),
        TEST_SYMBOL,
        20,
        1,
    );
    assert!(matches!(
        a.handle(t, &forged.datagrams[0]),
        Err(Reject::Refused(_))
    ));
    a.finish("the test ended");
    let closed = events(&mut a);
    assert!(
        closed
            .iter()
            .any(|e| matches!(e, Event::SessionClosed { .. })),
        "{closed:?}"
    );
    // An answer after the session closed is ignored.
    a.skip(OBJECT);
    a.proceed(OBJECT).unwrap();
    let late = events(&mut a);
    assert!(late.is_empty(), "{late:?}");
    assert_eq!(a.objects_in_flight(), 0);
}
