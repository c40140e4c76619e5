//! A receiver that starts while a sender's session is under way: it reports lost only
//! what was sent after it started listening, whatever order the session's heartbeats,
//! inventories and objects reach it in.

mod support;

use gapferry_common::control::{Inventory, InventoryEntry};
use gapferry_common::emit::DatagramWriter;
use gapferry_common::{Assembler, KeyRing, ObjectKind};
use std::time::Duration;
use support::*;

const SESSION: u64 = 0x1A7E_5747_0000_0001;

fn inventory(w: &DatagramWriter, ids: std::ops::Range<u32>) -> Vec<u8> {
    let entries = ids
        .map(|object| InventoryEntry {
            object,
            kind: ObjectKind::File,
            name: format!("before-{object}.txt"),
            size: 10,
        })
        .collect();
    let mut out = Vec::new();
    w.inventory(&mut out, &Inventory::fitting(entries));
    out
}

#[test]
fn a_late_receiver_reports_lost_only_what_was_sent_after_it_started() {
    let w = DatagramWriter::new(SESSION, None);
    let limits = small_limits();
    // The sender is at object 5000 when the receiver starts; 5001 is lost on the link.
    let sent: Vec<SentObject> = [5000, 5001, 5002]
        .map(|id| {
            send_object(
                &w,
                id,
                "after.txt",
                &noise(3000, id as u64),
                TEST_SYMBOL,
                10,
                1,
            )
        })
        .into();
    let orders: [&[&str]; 3] = [
        &["heartbeat", "inventory", "objects"],
        &["inventory", "heartbeat", "objects"],
        &["heartbeat", "objects", "inventory"],
    ];
    for order in orders {
        let mut a = Assembler::new(limits.clone(), KeyRing::default());
        let mut checker = Checker::default();
        let t = Duration::from_secs(1);
        for step in order {
            match *step {
                "heartbeat" => a.handle(t, &heartbeat(&w, 40, 5000, false)).unwrap(),
                // The inventory names the sender's recent objects, from before the start.
                "inventory" => a.handle(t, &inventory(&w, 4990..5000)).unwrap(),
                _ => {
                    for o in [&sent[0], &sent[2]] {
                        for d in &o.datagrams {
                            a.handle(t, d).unwrap();
                        }
                    }
                }
            }
        }
        a.handle(t, &heartbeat(&w, 41, 5003, true)).unwrap();
        a.tick(t + limits.grace * 2);
        checker.drain(&mut a, &limits);
        assert_eq!(checker.completed.len(), 2, "{order:?}");
        assert_eq!(
            checker.lost,
            vec![(SESSION, 5001, 5001)],
            "{order:?}: only the object lost after the start"
        );
    }
}
