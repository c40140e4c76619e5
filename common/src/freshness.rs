//! Replay protection for keyed links: which sender sessions a receiver has known, kept
//! across restarts, so that traffic captured before is refused after a restart too.
//!
//! A session id carries the second its session started (its upper 40 bits; the lower 24
//! are random), inside the tagged header, so a replayer holding no key cannot change it.
//! A receiver with keys remembers the sessions it heard (up to [`MAX_KNOWN`]), whether each
//! was closed, and how far each was resolved; it refuses as **replayed**:
//! - a session it closed before (a capture of a finished send played again);
//! - a session that started before its *floor*: the start of the oldest session it forgot
//!   to make room (captures older than everything it remembers).
//!
//! A session it heard but did not close (a long-running outbox service while the receiver
//! restarted) continues, with everything resolved before the restart counted as done.
//! The caller persists the state ([`Freshness`] is `serde`) whenever [`Freshness::dirty`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Sessions remembered at most; the oldest is forgotten first and raises the floor.
pub const MAX_KNOWN: usize = 4096;

/// A session id for a session started at `unix_secs`, with 24 random bits.
pub fn session_id(unix_secs: u64, random: u32) -> u64 {
    ((unix_secs & 0xFF_FFFF_FFFF) << 24) | u64::from(random & 0xFF_FFFF)
}

/// The second (Unix time) a session with this id says it started.
pub fn session_started(id: u64) -> u64 {
    id >> 24
}

/// What is remembered of one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The session was closed: anything more of it is a replay.
    pub closed: bool,
    /// Every object id below this was resolved (delivered, failed or lost).
    pub resolved_below: u32,
}

/// Why a session is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The session was closed before.
    Closed,
    /// The session started before the oldest one remembered.
    BeforeFloor,
}

/// The sessions a keyed receiver has known, and the floor below which it knows none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Sessions that started before this second (Unix time) are refused.
    pub floor: u64,
    /// Sessions heard, by id.
    pub known: BTreeMap<u64, Known>,
    /// Changed since [`Freshness::saved`].
    #[serde(skip)]
    dirty: bool,
}

impl Freshness {
    /// Whether a session heard for the first time since this state was loaded may go on;
    /// `Ok(resolved_below)` for one it knows is still open, `Ok(0)` for a new one.
    pub fn admit(&mut self, id: u64) -> Result<u32, Stale> {
        if let Some(k) = self.known.get(&id) {
            return if k.closed {
                Err(Stale::Closed)
            } else {
                Ok(k.resolved_below)
            };
        }
        if session_started(id) < self.floor {
            return Err(Stale::BeforeFloor);
        }
        self.known.insert(
            id,
            Known {
                closed: false,
                resolved_below: 0,
            },
        );
        while self.known.len() > MAX_KNOWN {
            let oldest = self
                .known
                .keys()
                .copied()
                .min_by_key(|&k| (session_started(k), k))
                .expect("non-empty");
            self.known.remove(&oldest);
            self.floor = self.floor.max(session_started(oldest) + 1);
        }
        self.dirty = true;
        Ok(0)
    }

    /// Notes how far session `id` was resolved.
    pub fn resolved(&mut self, id: u64, below: u32) {
        if let Some(k) = self.known.get_mut(&id) {
            if below > k.resolved_below {
                k.resolved_below = below;
                self.dirty = true;
            }
        }
    }

    /// Notes that session `id` was closed.
    pub fn closed(&mut self, id: u64) {
        if let Some(k) = self.known.get_mut(&id) {
            if !k.closed {
                k.closed = true;
                self.dirty = true;
            }
        }
    }

    /// Whether anything changed since the last [`Self::saved`].
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Marks the state as persisted.
    pub fn saved(&mut self) {
        self.dirty = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_start() {
        let id = session_id(1_764_000_000, 0xABCDEF);
        assert_eq!(session_started(id), 1_764_000_000);
        assert_ne!(session_id(1_764_000_000, 1), session_id(1_764_000_000, 2));
    }

    #[test]
    fn closed_sessions_are_refused_and_open_ones_resume() {
        let mut f = Freshness::default();
        let (a, b) = (session_id(100, 1), session_id(200, 2));
        assert_eq!(f.admit(a), Ok(0));
        assert_eq!(f.admit(b), Ok(0));
        f.resolved(b, 7);
        f.closed(a);
        let mut restarted: Freshness =
            serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
        assert_eq!(restarted.admit(a), Err(Stale::Closed));
        assert_eq!(restarted.admit(b), Ok(7));
    }

    #[test]
    fn forgetting_the_oldest_raises_the_floor() {
        let mut f = Freshness::default();
        for i in 0..MAX_KNOWN as u64 + 10 {
            f.admit(session_id(1000 + i, 0)).unwrap();
        }
        assert_eq!(f.known.len(), MAX_KNOWN);
        assert_eq!(f.floor, 1010);
        assert_eq!(f.admit(session_id(1005, 9)), Err(Stale::BeforeFloor));
        assert_eq!(f.admit(session_id(5000, 9)), Ok(0));
    }
}
