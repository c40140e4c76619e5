//! Tests of the pipeline's pieces: the byte budget, the own-drops warning.

use super::assembler_loop::OwnDropsWarning;
use super::handover::CloseOnDrop;
use super::*;
use gapferry_common::assembler::OwnDrops;

#[test]
fn own_drops_warn_at_once_then_at_most_every_five_seconds_with_the_counts_since() {
    let mut w = OwnDropsWarning::default();
    let at = Duration::from_secs;
    let drops = |queue_full, memory_limit| OwnDrops {
        queue_full,
        memory_limit,
        ..OwnDrops::default()
    };
    assert_eq!(w.check(at(1), OwnDrops::default()), None, "nothing dropped");
    assert_eq!(w.check(at(2), drops(3, 0)), Some(drops(3, 0)), "at once");
    assert_eq!(w.check(at(3), drops(10, 4)), None, "too soon");
    assert_eq!(w.check(at(6), drops(12, 4)), None, "still too soon");
    assert_eq!(
        w.check(at(7), drops(12, 4)),
        Some(drops(9, 4)),
        "everything since the last warning"
    );
    assert_eq!(w.check(at(20), drops(12, 4)), None, "the drops stopped");
    assert_eq!(w.check(at(21), drops(13, 4)), Some(drops(1, 0)));
}

/// Joins `t`, failing the test if it has not ended within five seconds.
fn join_soon<T>(t: std::thread::JoinHandle<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.is_finished() {
        assert!(Instant::now() < deadline, "the producer is still waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.join().unwrap()
}

#[test]
fn a_byte_budget_holds_the_producer_until_bytes_are_consumed() {
    let budget = Arc::new(ByteBudget::new(100));
    // One hand-over always passes, however large.
    budget.acquire(250);
    let waiting = std::thread::spawn({
        let budget = budget.clone();
        move || {
            budget.acquire(10);
            Instant::now()
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !waiting.is_finished(),
        "250 + 10 bytes exceed the 100-byte budget"
    );
    let freed_at = Instant::now();
    budget.release(250);
    assert!(join_soon(waiting) >= freed_at);
    assert_eq!(budget.lock().0, 10);
    // A consumer that is gone never leaves the producer waiting.
    budget.acquire(85);
    let waiting = std::thread::spawn({
        let budget = budget.clone();
        move || budget.acquire(50)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished());
    drop(CloseOnDrop(budget.clone()));
    join_soon(waiting);
}
