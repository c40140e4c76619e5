//! The token bucket that keeps the sender at its configured rate: the link cannot say slow down.

use std::time::{Duration, Instant};

/// Bytes of IPv4 and UDP headers counted for every datagram against the rate.
pub const PACKET_OVERHEAD: u64 = 28;
/// How far behind schedule the sender may fall before the lost time is forgiven.
const CATCH_UP: Duration = Duration::from_millis(2);

/// Schedules datagrams at a fixed bit rate.
#[derive(Debug)]
pub struct Pacer {
    rate_bps: u64,
    next: Option<Instant>,
}

impl Pacer {
    /// A pacer for `rate_bps` bits per second of IP packets.
    pub fn new(rate_bps: u64) -> Self {
        assert!(rate_bps > 0);
        Pacer {
            rate_bps,
            next: None,
        }
    }

    /// The configured rate.
    pub fn rate_bps(&self) -> u64 {
        self.rate_bps
    }

    /// The time a datagram of `payload` bytes should leave, given the current time `now`.
    ///
    /// Never earlier than the previous one plus its transmission time at the rate; a
    /// sender that fell behind by more than a little is not allowed to burst to catch up.
    pub fn schedule(&mut self, payload: usize, now: Instant) -> Instant {
        let floor = now.checked_sub(CATCH_UP).unwrap_or(now);
        let at = match self.next {
            Some(n) if n > floor => n,
            _ => floor.max(self.next.unwrap_or(now)),
        };
        let bits = (payload as u64 + PACKET_OVERHEAD) * 8;
        let cost = Duration::from_nanos(bits.saturating_mul(1_000_000_000) / self.rate_bps);
        self.next = Some(at + cost);
        at
    }

    /// Holds every later datagram until `at` at the earliest (the object pace's hold): the
    /// schedule moves there and goes on at the rate from it.
    pub fn hold_until(&mut self, at: Instant) {
        self.next = Some(self.next.map_or(at, |n| n.max(at)));
    }

    /// The time a pacer fed only virtual timestamps would be at (for capture files).
    pub fn schedule_virtual(&mut self, payload: usize, start: Instant) -> Instant {
        let at = self.next.unwrap_or(start);
        let bits = (payload as u64 + PACKET_OVERHEAD) * 8;
        self.next = Some(at + Duration::from_nanos(bits * 1_000_000_000 / self.rate_bps));
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spaces_datagrams_at_the_rate() {
        let mut p = Pacer::new(8_000_000); // 1 MB/s
        let t0 = Instant::now();
        let a = p.schedule(972, t0); // 1000 bytes with overhead: 1 ms
        let b = p.schedule(972, t0);
        let c = p.schedule(972, t0);
        assert_eq!(b - a, Duration::from_millis(1));
        assert_eq!(c - b, Duration::from_millis(1));
    }

    #[test]
    fn a_hold_moves_the_schedule_and_the_rate_goes_on_from_it() {
        let mut p = Pacer::new(8_000_000);
        let t0 = Instant::now();
        p.schedule_virtual(972, t0);
        let hold = t0 + Duration::from_millis(50);
        p.hold_until(hold);
        assert_eq!(p.schedule_virtual(972, t0), hold);
        assert_eq!(p.schedule_virtual(972, t0), hold + Duration::from_millis(1));
        // A hold already passed changes nothing.
        p.hold_until(t0);
        assert_eq!(p.schedule_virtual(972, t0), hold + Duration::from_millis(2));
        let mut live = Pacer::new(8_000_000);
        live.hold_until(hold);
        assert_eq!(live.schedule(972, t0), hold);
    }

    #[test]
    fn does_not_burst_after_idling() {
        let mut p = Pacer::new(8_000_000);
        let t0 = Instant::now();
        p.schedule(972, t0);
        let later = t0 + Duration::from_secs(10);
        let a = p.schedule(972, later);
        let b = p.schedule(972, later);
        assert!(a >= later - CATCH_UP);
        assert_eq!(b - a, Duration::from_millis(1));
    }
}
