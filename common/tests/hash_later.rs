//! Descriptors whose blake3 comes later (wire version 2): a sender that reads an object
//! once sends its first copies with `BLAKE3_LATER` and the hash in its last ones. The
//! assembler starts the object on the first copy, completes it only once a copy carrying
//! the hash arrived, and completes it with that hash; a copy naming another hash once one
//! is known is refused, and a copy without the hash says nothing new.

mod support;

use gapferry_common::control::BLAKE3_LATER;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::wire::{self, Datagram, DatagramType, Reject};
use gapferry_common::{Assembler, Event, KeyRing, Limits, ObjectDescriptor};
use std::time::Duration;
use support::*;

const SESSION: u64 = 0x1A7E_0000_0000_0001;
const T: Duration = Duration::from_millis(10);

fn events(a: &mut Assembler) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

/// An object's data datagrams, and its descriptor copy without and with the hash.
fn object(w: &DatagramWriter) -> (SentObject, Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let sent = send_object(w, 0, "once.bin", &noise(200_000, 9), TEST_SYMBOL, 20, 1);
    let data: Vec<Vec<u8>> = sent
        .datagrams
        .iter()
        .filter(|d| {
            matches!(
                wire::parse(d, &KeyRing::default()),
                Ok(Datagram::Data { .. })
            )
        })
        .cloned()
        .collect();
    let copy = |d: &ObjectDescriptor| {
        let mut out = Vec::new();
        w.descriptor(&mut out, 0, d).unwrap();
        out
    };
    let later = copy(&ObjectDescriptor {
        blake3: BLAKE3_LATER,
        ..sent.descriptor.clone()
    });
    let hashed = copy(&sent.descriptor);
    (sent, data, later, hashed)
}

fn completed_with(events: &[Event]) -> Option<[u8; 32]> {
    events.iter().find_map(|e| match e {
        Event::ObjectComplete { blake3, .. } => Some(*blake3),
        _ => None,
    })
}

#[test]
fn an_object_completes_only_once_a_copy_brought_its_hash_and_with_that_hash() {
    let w = DatagramWriter::new(SESSION, None);
    let (sent, data, later, hashed) = object(&w);
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    a.handle(T, &later).unwrap();
    for d in &data {
        a.handle(T, d).unwrap();
    }
    let before = events(&mut a);
    assert!(before
        .iter()
        .any(|e| matches!(e, Event::ObjectStarted { .. })));
    assert!(before
        .iter()
        .any(|e| matches!(e, Event::BlockDecoded { .. })));
    assert_eq!(completed_with(&before), None, "complete without its hash");
    // Another copy without the hash changes nothing.
    a.handle(T, &later).unwrap();
    assert_eq!(completed_with(&events(&mut a)), None);
    a.handle(T, &hashed).unwrap();
    assert_eq!(
        completed_with(&events(&mut a)),
        sent.descriptor.known_blake3()
    );
}

#[test]
fn the_hash_may_arrive_before_the_last_block_and_a_later_copy_without_it_is_redundant() {
    let w = DatagramWriter::new(SESSION, None);
    let (sent, data, later, hashed) = object(&w);
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    a.handle(T, &later).unwrap();
    let (head, tail) = data.split_at(data.len() / 2);
    for d in head {
        a.handle(T, d).unwrap();
    }
    a.handle(T, &hashed).unwrap();
    a.handle(T, &later).unwrap();
    for d in tail {
        a.handle(T, d).unwrap();
    }
    assert_eq!(
        completed_with(&events(&mut a)),
        sent.descriptor.known_blake3()
    );
}

#[test]
fn once_the_hash_is_known_a_copy_naming_another_is_refused() {
    let w = DatagramWriter::new(SESSION, None);
    let (sent, data, later, hashed) = object(&w);
    let mut forged_d = sent.descriptor.clone();
    forged_d.blake3[0] ^= 1;
    let mut forged = Vec::new();
    w.descriptor(&mut forged, 0, &forged_d).unwrap();
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    a.handle(T, &later).unwrap();
    a.handle(T, &hashed).unwrap();
    assert!(matches!(a.handle(T, &forged), Err(Reject::Refused(_))));
    // Nor can a copy that changes anything else sneak in beside the hash.
    let mut resized = sent.descriptor.clone();
    resized.size += 1;
    let mut other = Vec::new();
    w.descriptor(&mut other, 0, &resized).unwrap();
    assert!(matches!(a.handle(T, &other), Err(Reject::Refused(_))));
    for d in &data {
        a.handle(T, d).unwrap();
    }
    assert_eq!(
        completed_with(&events(&mut a)),
        sent.descriptor.known_blake3()
    );
}

#[test]
fn a_copy_without_the_hash_after_one_with_it_is_redundant_not_a_conflict() {
    let w = DatagramWriter::new(SESSION, None);
    let (sent, data, later, hashed) = object(&w);
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    a.handle(T, &hashed).unwrap();
    a.handle(T, &later).unwrap();
    for d in &data {
        a.handle(T, d).unwrap();
    }
    assert_eq!(
        completed_with(&events(&mut a)),
        sent.descriptor.known_blake3()
    );
    // The datagram layout says the version that allows it.
    assert_eq!(later[2], wire::VERSION);
    assert!(matches!(
        wire::parse(&later, &KeyRing::default()),
        Ok(Datagram::Control {
            kind: DatagramType::Descriptor,
            ..
        })
    ));
}

#[test]
fn padding_copies_carry_the_hash_once_the_objects_copies_do() {
    use gapferry_common::emit::OutgoingBlock;
    use gapferry_common::send::{ObjectSchedule, Session};
    use std::time::Instant;
    let t0 = Instant::now();
    let w = DatagramWriter::new(SESSION, None);
    let mut s = Session::new(w.clone(), 1_000_000_000, t0);
    let body = noise(3_000, 4);
    let d = ObjectDescriptor {
        blake3: BLAKE3_LATER,
        ..describe("once.bin", &body, 1_000, 1)
    };
    let mut out: Vec<Vec<u8>> = Vec::new();
    let pump = |s: &mut Session, sched: &mut ObjectSchedule, out: &mut Vec<Vec<u8>>| {
        while s.write(sched) {
            while let Some(t) = s.poll_transmit(t0) {
                out.push(t.datagram.to_vec());
            }
        }
    };
    let id = s.allocate_object();
    let mut sched = ObjectSchedule::new(id, d.clone()).unwrap();
    pump(&mut s, &mut sched, &mut out);
    sched.set_blake3(*blake3::hash(&body).as_bytes());
    let block = OutgoingBlock::new(
        SESSION,
        id,
        0,
        wire::Codec::None,
        body.len() as u32,
        body.clone(),
        1_000,
        10,
        1,
    );
    sched.add_window([block]);
    sched.close();
    pump(&mut s, &mut sched, &mut out);
    s.object_done(id);
    s.finish();
    while let Some(t) = s.poll_transmit(t0) {
        out.push(t.datagram.to_vec());
    }
    let copies: Vec<bool> = out
        .iter()
        .filter_map(|d| match wire::parse(d, &KeyRing::default()) {
            Ok(Datagram::Control {
                kind: DatagramType::Descriptor,
                body,
                ..
            }) => {
                let d: ObjectDescriptor = gapferry_common::control::decode(body).unwrap();
                Some(d.known_blake3().is_some())
            }
            _ => None,
        })
        .collect();
    // The matrix is padded with copies of its objects: all but the first carry the hash.
    assert!(copies.len() > 8, "{}", copies.len());
    assert_eq!(copies.iter().filter(|c| !**c).count(), 1, "{copies:?}");
}
