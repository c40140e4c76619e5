//! Unit tests of the assembler's internals.

use super::*;
use crate::emit::DatagramWriter;

fn heartbeat(session: u64, ending: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let hb = Heartbeat {
        seq: 1,
        next_object: 1,
        done_below: 1,
        ending,
        ..Heartbeat::default()
    };
    DatagramWriter::new(session, None).heartbeat(&mut out, &hb);
    out
}

#[test]
fn resolved_ids_ahead_of_the_watermark_are_bounded() {
    let mut r = Resolved::default();
    for id in (1..=3 * MAX_RESOLVED_AHEAD as u32).map(|i| i * 2) {
        r.insert(id);
    }
    assert!(r.above.len() <= MAX_RESOLVED_AHEAD);
    assert!(r.contains(6 * MAX_RESOLVED_AHEAD as u32));
    assert!(!r.contains(6 * MAX_RESOLVED_AHEAD as u32 + 1));
    r.insert(0);
    assert!(r.contains(0));
}

#[test]
fn the_resolved_watermark_does_not_wrap_at_u32_max() {
    let mut r = Resolved {
        below: u32::MAX - 2,
        above: BTreeSet::new(),
    };
    r.insert(u32::MAX);
    r.insert(u32::MAX - 2);
    r.insert(u32::MAX - 1);
    assert_eq!(r.below, u32::MAX);
    for id in [0, 1, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
        assert!(r.contains(id), "{id} resolved");
    }
    r.insert(u32::MAX);
    assert!(r.contains(u32::MAX) && r.contains(7));
    // Given up as a gap right below u32::MAX: still no wrap.
    let mut r = Resolved::default();
    for id in (0..=MAX_RESOLVED_AHEAD as u32).map(|i| u32::MAX - i) {
        r.insert(id);
    }
    assert!(r.above.len() <= MAX_RESOLVED_AHEAD);
    assert!(r.contains(u32::MAX) && r.contains(0) && r.contains(u32::MAX - 1));
}

#[test]
fn refused_data_takes_no_object_slot() {
    let limits = Limits {
        max_objects_in_flight: 2,
        max_block_symbols: 16,
        ..Limits::default()
    };
    let mut a = Assembler::new(limits, KeyRing::default());
    let w = DatagramWriter::new(9, None);
    // Blocks of 1 000 one-byte symbols: above the 16-symbol limit, so refused.
    for object in 0..10u32 {
        let h = crate::wire::DataHeader {
            session: 9,
            object,
            block: 0,
            esi: 0,
            block_len: 1000,
            plain_len: 1000,
            codec: crate::wire::Codec::None,
        };
        let mut out = Vec::new();
        w.data(&mut out, &h, &[1]);
        assert!(a.handle(Duration::ZERO, &out).is_err());
    }
    assert_eq!(a.objects_in_flight(), 0);
}

#[test]
fn one_source_cannot_hold_every_place_while_another_waits() {
    let limits = Limits {
        max_sessions: 4,
        ..Limits::default()
    };
    let mut a = Assembler::new(limits, KeyRing::default());
    let t = Duration::from_secs(1);
    let (flooder, sender) = (7, 9);
    for id in 1..=4u64 {
        a.handle_from(t, flooder, &heartbeat(id, false)).unwrap();
    }
    // Every place alive and held by one source: another source's session gets one.
    a.handle_from(t, sender, &heartbeat(100, false)).unwrap();
    assert!(a.sessions.contains_key(&100));
    assert_eq!(a.sessions.len(), 4);
    // The flooder cannot take it back while it holds its share (4 places, 2 sources).
    assert_eq!(
        a.handle_from(t, flooder, &heartbeat(5, false)),
        Err(Reject::Refused("too many sender sessions"))
    );
    // A second legitimate session still gets a place: the flooder holds 3 > 2.
    a.handle_from(t, sender, &heartbeat(101, false)).unwrap();
    assert!(a.sessions.contains_key(&100) && a.sessions.contains_key(&101));
    // A third source: share 1 each; one of the two sources holding 2 gives a place up.
    a.handle_from(t, 11, &heartbeat(200, false)).unwrap();
    assert_eq!(a.sessions.len(), 4);
    assert!(a.sessions.contains_key(&200));
    // Every source at or below its share once more: a newcomer of a source that holds
    // a place already is refused, and reported.
    // (a second later: refusals are reported at most once a second)
    let later = t + Duration::from_secs(1);
    assert!(a.handle_from(later, 11, &heartbeat(201, false)).is_err());
    assert!(std::iter::from_fn(|| a.poll_event())
        .any(|e| matches!(e, Event::SessionRefused { session: 201, .. })));
}

#[test]
fn ended_sessions_make_room_for_new_ones() {
    let limits = Limits {
        max_sessions: 3,
        ..Limits::default()
    };
    let mut a = Assembler::new(limits, KeyRing::default());
    let t = Duration::from_secs(1);
    for id in 1..=10u64 {
        // Each sender run ends at once, faster than the grace time.
        a.handle(t, &heartbeat(id, true)).unwrap();
    }
    assert!(a.sessions.len() <= 3);
    // Three live sessions fill the table; a fourth is refused rather than evicting them.
    let mut b = Assembler::new(
        Limits {
            max_sessions: 3,
            ..Limits::default()
        },
        KeyRing::default(),
    );
    for id in 1..=3u64 {
        b.handle(t, &heartbeat(id, false)).unwrap();
    }
    assert_eq!(
        b.handle(t, &heartbeat(4, false)),
        Err(Reject::Refused("too many sender sessions"))
    );
    // Once one has been quiet past the grace time, the newcomer takes its place.
    let later = t + Limits::default().grace;
    b.handle(later, &heartbeat(2, false)).unwrap();
    b.handle(later, &heartbeat(3, false)).unwrap();
    b.handle(later, &heartbeat(4, false)).unwrap();
    assert!(b.sessions.contains_key(&4) && !b.sessions.contains_key(&1));
}
