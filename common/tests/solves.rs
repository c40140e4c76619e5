//! Blocks solved elsewhere: the assembler hands out RaptorQ work, takes the outcomes back
//! in any order, ignores stale ones, and gives nothing up while a solve is out.

mod support;

use gapferry_common::emit::DatagramWriter;
use gapferry_common::{Assembler, Event, KeyRing, Limits};
use std::time::Duration;
use support::*;

fn drain(a: &mut Assembler) -> Vec<Event> {
    std::iter::from_fn(|| a.poll_event()).collect()
}

/// A 3-block object with every 20th datagram lost: every block needs a solve.
fn lossy_object(w: &DatagramWriter) -> (SentObject, Vec<Vec<u8>>) {
    let original = noise(3 * 1024 * 64 - 1000, 7);
    let sent = send_object(w, 0, "lossy.bin", &original, 64, 20, 1);
    let kept = sent
        .datagrams
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 20 != 5)
        .map(|(_, d)| d.clone())
        .collect();
    (sent, kept)
}

#[test]
fn solves_out_of_order_complete_the_object_and_stale_outcomes_are_ignored() {
    let w = DatagramWriter::new(0xABCD, None);
    let (sent, kept) = lossy_object(&w);
    let limits = Limits::default();
    let mut a = Assembler::new(limits.clone(), KeyRing::default());
    a.set_solve_elsewhere(true);
    for d in &kept {
        feed(&mut a, &limits, Duration::from_millis(1), d);
    }
    let mut requests: Vec<_> = std::iter::from_fn(|| a.poll_solve()).collect();
    assert_eq!(requests.len(), 3, "one request per block that lost symbols");
    assert!(
        !drain(&mut a)
            .iter()
            .any(|e| matches!(e, Event::BlockDecoded { .. })),
        "nothing decodes before its solve comes back"
    );
    // Time passes far beyond every timeout while the solves are out: nothing is given up.
    a.tick(Duration::from_secs(3600));
    assert!(!drain(&mut a)
        .iter()
        .any(|e| matches!(e, Event::ObjectFailed { .. } | Event::SessionClosed { .. })));

    // A stale outcome (wrong ticket) is ignored; the real ones arrive last block first.
    let r = &requests[0];
    a.solved(r.ticket + 1000, r.object, r.block, Some(vec![0; 10]));
    requests.reverse();
    let mut blocks = Vec::new();
    for r in requests {
        let (ticket, object, block) = (r.ticket, r.object, r.block);
        a.solved(ticket, object, block, r.job.run());
    }
    for e in drain(&mut a) {
        match e {
            Event::BlockDecoded {
                block, plain_len, ..
            } => blocks.push((block, plain_len)),
            Event::ObjectFailed { reason, .. } => panic!("failed: {reason}"),
            _ => {}
        }
    }
    blocks.sort();
    let d = &sent.descriptor;
    let want: Vec<(u32, u32)> = (0..3).map(|b| (b, d.block_plain_len(b) as u32)).collect();
    assert_eq!(blocks, want);
    assert_eq!(
        a.held_bytes(),
        0,
        "everything lent and held is accounted back"
    );
}

#[test]
fn inline_and_elsewhere_solving_decode_the_same_blocks() {
    let w = DatagramWriter::new(0xABCD, None);
    let (_, kept) = lossy_object(&w);
    let limits = Limits::default();
    let mut decoded = Vec::new();
    for elsewhere in [false, true] {
        let mut a = Assembler::new(limits.clone(), KeyRing::default());
        a.set_solve_elsewhere(elsewhere);
        let mut data = Vec::new();
        for d in &kept {
            feed(&mut a, &limits, Duration::from_millis(1), d);
            while let Some(r) = a.poll_solve() {
                let (ticket, object, block) = (r.ticket, r.object, r.block);
                a.solved(ticket, object, block, r.job.run());
            }
            for e in drain(&mut a) {
                if let Event::BlockDecoded {
                    block, data: bytes, ..
                } = e
                {
                    data.push((block, bytes));
                }
            }
        }
        data.sort();
        decoded.push(data);
    }
    assert_eq!(decoded[0].len(), 3);
    assert_eq!(decoded[0], decoded[1]);
}

#[test]
fn held_bytes_return_to_zero_over_many_blocks_whichever_way_they_are_solved() {
    let w = DatagramWriter::new(0xABCD, None);
    let original = noise(40 * 1024 * 1408 + 77, 3);
    let sent = send_object(&w, 0, "big.bin", &original, 1408, 10, 1);
    for (elsewhere, lossy) in [(false, false), (true, false), (true, true)] {
        let limits = Limits::default();
        let mut a = Assembler::new(limits.clone(), KeyRing::default());
        a.set_solve_elsewhere(elsewhere);
        let mut max_held = 0;
        let mut decoded = 0;
        let mut pending = Vec::new();
        for (i, d) in sent.datagrams.iter().enumerate() {
            if lossy && i % 37 == 3 {
                continue;
            }
            let _ = a.handle(Duration::from_millis(1), d);
            while let Some(r) = a.poll_solve() {
                pending.push(r);
            }
            if pending.len() > 3 {
                let r = pending.remove(0);
                let (t, o, b) = (r.ticket, r.object, r.block);
                a.solved(t, o, b, r.job.run());
            }
            max_held = max_held.max(a.held_bytes());
            for e in std::iter::from_fn(|| a.poll_event()) {
                if matches!(e, Event::BlockDecoded { .. }) {
                    decoded += 1;
                }
            }
        }
        for r in pending.drain(..) {
            let (t, o, b) = (r.ticket, r.object, r.block);
            a.solved(t, o, b, r.job.run());
        }
        for e in std::iter::from_fn(|| a.poll_event()) {
            if matches!(e, Event::BlockDecoded { .. }) {
                decoded += 1;
            }
        }
        // Eight interleaved blocks in flight at most, each about 1.5 MB with its job.
        assert!(max_held < 32 << 20, "{elsewhere} {lossy}: held {max_held}");
        assert_eq!(decoded, 41);
        assert_eq!(a.held_bytes(), 0);
    }
}

#[test]
fn held_solves_wait_for_a_tick_and_late_sources_need_none() {
    let w = DatagramWriter::new(0xABCE, None);
    let (sent, kept) = lossy_object(&w);
    let limits = Limits::default();

    // Loss: the blocks are ready only at the next tick, and then solve.
    let mut a = Assembler::new(limits.clone(), KeyRing::default());
    a.set_solve_elsewhere(true);
    a.set_hold_solves(true);
    for d in &kept {
        feed(&mut a, &limits, Duration::from_millis(1), d);
    }
    assert!(a.poll_solve().is_none(), "held until the next tick");
    a.tick(Duration::from_millis(100));
    let requests: Vec<_> = std::iter::from_fn(|| a.poll_solve()).collect();
    assert_eq!(requests.len(), 3, "one solve per block once the tick came");
    for r in requests {
        a.solved(r.ticket, r.object, r.block, r.job.run());
    }
    assert!(drain(&mut a)
        .iter()
        .any(|e| matches!(e, Event::ObjectComplete { .. })));

    // No loss, every datagram reversed (repairs first): no solve at all.
    let mut b = Assembler::new(limits.clone(), KeyRing::default());
    b.set_solve_elsewhere(true);
    b.set_hold_solves(true);
    for d in sent.datagrams.iter().rev() {
        feed(&mut b, &limits, Duration::from_millis(1), d);
    }
    b.tick(Duration::from_millis(100));
    assert!(
        b.poll_solve().is_none(),
        "every source arrived: nothing to solve"
    );
    assert!(drain(&mut b)
        .iter()
        .any(|e| matches!(e, Event::ObjectComplete { .. })));
}
