//! The receiver's measured commit rate: objects delivered per second over the last
//! [`WINDOW_SECS`] seconds that delivered anything. A sender whose `--max-objects-rate`
//! stays below it never fills the receiver's queues however long its stream of small
//! objects; `status` and the metrics show it so an operator can size that cap.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Seconds of deliveries the rate is measured over.
pub const WINDOW_SECS: u64 = 30;

/// Deliveries counted by second; clones share the count.
#[derive(Clone, Debug, Default)]
pub struct CommitRate(Arc<Mutex<Window>>);

#[derive(Debug, Default)]
struct Window {
    origin: Option<Instant>,
    /// (second since `origin`, objects delivered in it), oldest first.
    seconds: VecDeque<(u64, u64)>,
    total: u64,
}

/// The rate as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CommitState {
    /// Objects delivered per second, over the seconds that delivered any.
    pub per_second: f64,
    /// How many such seconds the rate covers (at most [`WINDOW_SECS`]).
    pub seconds: u64,
    /// Objects delivered since the receiver started.
    pub delivered: u64,
}

impl CommitRate {
    /// Counts one object delivered now.
    pub fn note(&self) {
        self.note_at(Instant::now());
    }

    /// Counts one object delivered at `now`.
    pub fn note_at(&self, now: Instant) {
        let mut w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let origin = *w.origin.get_or_insert(now);
        let second = now.saturating_duration_since(origin).as_secs();
        w.total += 1;
        match w.seconds.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => w.seconds.push_back((second, 1)),
        }
        while w
            .seconds
            .front()
            .is_some_and(|(s, _)| s + WINDOW_SECS <= second)
        {
            w.seconds.pop_front();
        }
    }

    /// The rate at `now`: the current second counts only once it is over (a part second
    /// would read low), unless it is all there is.
    pub fn state_at(&self, now: Instant) -> Option<CommitState> {
        let w = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let origin = w.origin?;
        let current = now.saturating_duration_since(origin).as_secs();
        let recent = |&&(s, _): &&(u64, u64)| s + WINDOW_SECS > current;
        let whole: Vec<&(u64, u64)> = w
            .seconds
            .iter()
            .filter(recent)
            .filter(|(s, _)| *s < current)
            .collect();
        let counted: Vec<&(u64, u64)> = match whole.is_empty() {
            true => w.seconds.iter().filter(recent).collect(),
            false => whole,
        };
        let seconds = counted.len() as u64;
        let objects: u64 = counted.iter().map(|(_, n)| n).sum();
        (seconds > 0).then(|| CommitState {
            per_second: objects as f64 / seconds as f64,
            seconds,
            delivered: w.total,
        })
    }

    /// The rate now.
    pub fn state(&self) -> Option<CommitState> {
        self.state_at(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_rate_counts_whole_seconds_that_delivered_and_forgets_old_ones() {
        let c = CommitRate::default();
        let t0 = Instant::now();
        assert_eq!(c.state_at(t0), None);
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // 300 objects in second 0, 500 in second 1, an idle second, 100 in second 3.
        (0..300).for_each(|i| c.note_at(at(i)));
        (0..500).for_each(|i| c.note_at(at(1000 + i)));
        (0..100).for_each(|i| c.note_at(at(3000 + i)));
        let s = c.state_at(at(3500)).unwrap();
        // Second 3 is not over: seconds 0 and 1 count, the idle one does not.
        assert_eq!((s.per_second, s.seconds, s.delivered), (400.0, 2, 900));
        let s = c.state_at(at(4000)).unwrap();
        assert_eq!((s.per_second, s.seconds), (300.0, 3));
        // Long after, nothing recent: no rate, the total stays.
        assert_eq!(c.state_at(at(60_000)), None);
        c.note_at(at(60_000));
        let s = c.state_at(at(60_500)).unwrap();
        assert_eq!((s.per_second, s.seconds, s.delivered), (1.0, 1, 901));
    }
}
