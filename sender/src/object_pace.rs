//! The objects-per-second pace (`--max-objects-rate`, `--objects-burst`): a token bucket
//! every object is admitted through before its first datagram, so a sustained stream of
//! small objects never outruns what the receiver commits (the link cannot say slow down).
//! Also the pace's state file (`OUTBOX/.gapferry-send/pace.json`) the outbox service
//! writes about once a second, and the line `gapferry-send status` prints from it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Objects the sender may send back to back before the pace applies, unless told.
///
/// The receiver's disk writer queues 16 384 events (`EVENT_QUEUE`) and 128 MiB of decoded
/// blocks (`EVENT_BYTES`); a small object costs three events (started, its block,
/// finished), so about 5 400 small objects fit while the disk catches up. 4 096 leaves a
/// quarter of that for objects of a few blocks and for what is still queued.
pub const DEFAULT_OBJECTS_BURST: u32 = 4096;

/// File name of the pace's state inside the outbox's journal directory.
pub const PACE_FILE: &str = "pace.json";
/// Least time between two writes of the state file.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// An object held within this long before the state was written counts as "limiting now".
const RECENT: u64 = 10;

/// Admits objects at a steady rate with a burst allowance. Kept as the time the bucket
/// would be full again (the generic cell rate algorithm), so it needs no timer.
#[derive(Debug, Clone)]
pub struct ObjectPace {
    per_second: f64,
    burst: u32,
    interval: Duration,
    /// When the bucket is full again; `None` before the first object.
    full_at: Option<Instant>,
    /// The start given to the last object.
    last_start: Option<Instant>,
    counts: PaceCounts,
}

/// What the pace did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PaceCounts {
    /// Objects admitted.
    pub objects: u64,
    /// Objects that had to wait for a token.
    pub held: u64,
    /// Time the pace added to sending, in all: each hold past the previous object's start.
    pub waited: Duration,
}

impl ObjectPace {
    /// At most `per_second` objects a second on average, `burst` of them back to back.
    pub fn new(per_second: f64, burst: u32) -> Self {
        assert!(per_second > 0.0 && per_second.is_finite() && burst > 0);
        ObjectPace {
            per_second,
            burst,
            interval: Duration::from_secs_f64(1.0 / per_second),
            full_at: None,
            last_start: None,
            counts: PaceCounts::default(),
        }
    }

    /// The configured rate, objects per second.
    pub fn per_second(&self) -> f64 {
        self.per_second
    }

    /// The configured burst, objects.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// What the pace did so far.
    pub fn counts(&self) -> PaceCounts {
        self.counts
    }

    /// Takes one token at `now`: the earliest time the object may start (`now` when a
    /// token was there). Each call is one object, whether or not it then waits.
    pub fn admit(&mut self, now: Instant) -> Instant {
        let full_at = self.full_at.map_or(now, |f| f.max(now));
        let slack = self.interval * (self.burst - 1);
        let at = full_at.checked_sub(slack).map_or(now, |t| t.max(now));
        self.full_at = Some(full_at.max(at) + self.interval);
        self.counts.objects += 1;
        if at > now {
            self.counts.held += 1;
            self.counts.waited += at - self.last_start.map_or(now, |l| l.max(now));
        }
        self.last_start = Some(at);
        at
    }
}

/// The state file as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PaceState {
    /// When it was written, Unix seconds.
    pub written_unix: u64,
    /// `--max-objects-rate`.
    pub max_objects_rate: f64,
    /// `--objects-burst`.
    pub objects_burst: u32,
    /// Objects admitted since the service started.
    pub objects: u64,
    /// Of which held back by the pace.
    pub held: u64,
    /// Seconds they waited, in all.
    pub waited_seconds: f64,
    /// When an object was last held, Unix seconds.
    pub last_held_unix: Option<u64>,
}

/// Writes the state file at most once per [`WRITE_EVERY`].
#[derive(Debug)]
pub struct PaceFile {
    dir: PathBuf,
    written: Option<Instant>,
    last_held_unix: Option<u64>,
    held_seen: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PaceFile {
    /// A writer into `dir` (the outbox's journal directory); removes an earlier run's file.
    pub fn new(dir: PathBuf) -> Self {
        let _ = std::fs::remove_file(dir.join(PACE_FILE));
        PaceFile {
            dir,
            written: None,
            last_held_unix: None,
            held_seen: 0,
        }
    }

    /// Writes `pace`'s counts when the last write is old enough; a failure is logged,
    /// never stops sending.
    pub fn update(&mut self, pace: &ObjectPace) {
        let c = pace.counts();
        if c.held > self.held_seen {
            self.held_seen = c.held;
            self.last_held_unix = Some(unix_now());
        }
        if self.written.is_some_and(|w| w.elapsed() < WRITE_EVERY) {
            return;
        }
        self.written = Some(Instant::now());
        let state = PaceState {
            written_unix: unix_now(),
            max_objects_rate: pace.per_second(),
            objects_burst: pace.burst(),
            objects: c.objects,
            held: c.held,
            waited_seconds: c.waited.as_secs_f64(),
            last_held_unix: self.last_held_unix,
        };
        let tmp = self.dir.join(format!(".{PACE_FILE}.tmp"));
        let result = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(PACE_FILE)));
        if let Err(e) = result {
            tracing::warn!("cannot write the object pace's state for `status`: {e}");
        }
    }
}

/// The pace line of `gapferry-send status` from `journal`'s state file at `now` (Unix
/// seconds); nothing when the service runs without `--max-objects-rate`.
pub fn report(journal: &Path, now: u64) -> String {
    let Some(s) = std::fs::read(journal.join(PACE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<PaceState>(&b).ok())
    else {
        return String::new();
    };
    let limiting = match s.last_held_unix {
        Some(t) if s.written_unix.saturating_sub(t) <= RECENT => {
            "the object pace is what limits sending now"
        }
        Some(t) => &format!("last held {} s before this count", s.written_unix - t),
        None => "it has held nothing back",
    };
    format!(
        "object pace: at most {} objects/s, {} back to back: {} of {} objects held, {:.1} s waited in all ({} s old); {limiting}\n",
        s.max_objects_rate,
        s.objects_burst,
        s.held,
        s.objects,
        s.waited_seconds,
        now.saturating_sub(s.written_unix)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_one_object_per_interval() {
        let mut p = ObjectPace::new(100.0, 3); // one per 10 ms
        let t0 = Instant::now();
        let starts: Vec<Duration> = (0..6).map(|_| p.admit(t0) - t0).collect();
        let ms = Duration::from_millis;
        assert_eq!(starts, [ms(0), ms(0), ms(0), ms(10), ms(20), ms(30)]);
        let c = p.counts();
        assert_eq!((c.objects, c.held, c.waited), (6, 3, ms(30)));
    }

    #[test]
    fn n_objects_take_at_least_n_minus_burst_over_the_rate_on_the_senders_clock() {
        // A fake clock that jumps to each admitted start, as the sending thread does.
        let (rate, burst, n) = (250.0, 16, 5_000u32);
        let mut p = ObjectPace::new(rate, burst);
        let t0 = Instant::now();
        let mut clock = t0;
        for _ in 0..n {
            clock = p.admit(clock);
        }
        let spent = (clock - t0).as_secs_f64();
        let floor = f64::from(n - burst) / rate;
        assert!(
            spent >= floor - 1e-3,
            "{spent} s for {n} objects at {rate}/s"
        );
        // And no slower than the pace: the sender is never held beyond it.
        assert!(spent <= floor + 0.01, "{spent} s");
        assert_eq!(p.counts().held, u64::from(n - burst));
    }

    #[test]
    fn idle_time_refills_the_bucket_up_to_the_burst_only() {
        let mut p = ObjectPace::new(10.0, 2);
        let t0 = Instant::now();
        for _ in 0..5 {
            p.admit(t0);
        }
        let later = t0 + Duration::from_secs(60);
        assert_eq!(p.admit(later), later);
        assert_eq!(p.admit(later), later);
        assert_eq!(p.admit(later), later + Duration::from_millis(100));
    }

    #[test]
    fn the_state_file_says_when_the_pace_limits() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(report(dir.path(), 0), "");
        let mut p = ObjectPace::new(50.0, 1);
        let mut f = PaceFile::new(dir.path().to_path_buf());
        let t0 = Instant::now();
        p.admit(t0);
        p.admit(t0);
        f.update(&p);
        let text = report(dir.path(), unix_now());
        assert!(
            text.starts_with("object pace: at most 50 objects/s, 1 back to back: 1 of 2 objects held, 0.0 s waited"),
            "{text}"
        );
        assert!(
            text.contains("the object pace is what limits sending now"),
            "{text}"
        );
        let mut idle = PaceFile::new(dir.path().to_path_buf());
        let mut q = ObjectPace::new(50.0, 8);
        q.admit(t0);
        idle.update(&q);
        let text = report(dir.path(), unix_now());
        assert!(text.contains("it has held nothing back"), "{text}");
    }
}
