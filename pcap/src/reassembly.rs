//! Bounded IP fragment reassembly: a capped number of datagrams in progress, a capped
//! number of bytes held, expiry by capture time, and no datagram larger than 64 KiB.
//! Exact duplicates are ignored; any other overlap discards the whole datagram (RFC 5722).

use std::collections::HashMap;
use std::time::Duration;

use crate::ip::{FragKey, Fragment};

/// Largest reassembled payload (the 16-bit IP length field's limit).
const MAX_DATAGRAM: usize = 65_535;
/// Bytes charged per held fragment on top of its data, for bookkeeping.
const PIECE_OVERHEAD: usize = 64;

/// Limits on fragment reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReassemblyLimits {
    /// Most datagrams being reassembled at once; the oldest is dropped to make room.
    pub max_pending: usize,
    /// Most bytes held in pending fragments (plus 64 bytes of bookkeeping per fragment).
    pub max_bytes: usize,
    /// A datagram still incomplete this long (in capture time) after its first fragment is dropped.
    pub timeout: Duration,
}

impl Default for ReassemblyLimits {
    fn default() -> Self {
        Self {
            max_pending: 256,
            max_bytes: 4 << 20,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Fragment counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct FragmentCounters {
    pub(crate) duplicates: u64,
    pub(crate) dropped: u64,
    pub(crate) reassembled: u64,
    pub(crate) abandoned: u64,
}

/// A datagram whose fragments are all present.
#[derive(Debug)]
pub(crate) struct Reassembled {
    /// Which datagram it is.
    pub(crate) key: FragKey,
    /// Protocol of `data` (IPv6: possibly an extension header before UDP).
    pub(crate) next_header: u8,
    /// The reassembled payload.
    pub(crate) data: Vec<u8>,
}

struct Piece {
    offset: usize,
    data: Vec<u8>,
}

struct Pending {
    started: Duration,
    sequence: u64,
    next_header: u8,
    total: Option<usize>,
    received: usize,
    charged: usize,
    pieces: Vec<Piece>,
}

/// Datagrams being reassembled.
pub(crate) struct Reassembler {
    limits: ReassemblyLimits,
    pending: HashMap<FragKey, Pending>,
    charged: usize,
    now: Duration,
    sequence: u64,
    pub(crate) counters: FragmentCounters,
}

impl Reassembler {
    /// An empty reassembler with the given limits.
    pub(crate) fn new(limits: ReassemblyLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            charged: 0,
            now: Duration::ZERO,
            sequence: 0,
            counters: FragmentCounters::default(),
        }
    }

    /// Fragments held, waiting for the rest of their datagram.
    pub(crate) fn pending_fragments(&self) -> usize {
        self.pending.values().map(|p| p.pieces.len()).sum()
    }

    /// Bytes charged for held fragments.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.charged
    }

    /// Adds a fragment captured at `now`; returns the datagram if it is now complete.
    pub(crate) fn add(&mut self, now: Duration, fragment: Fragment<'_>) -> Option<Reassembled> {
        self.now = self.now.max(now);
        self.expire();
        let Fragment {
            key,
            offset,
            more,
            next_header,
            data,
        } = fragment;
        let end = offset + data.len();
        let cost = data.len() + PIECE_OVERHEAD;
        // Every fragment but the last carries a multiple of 8 bytes; none reaches past 64 KiB.
        if data.is_empty()
            || (more && data.len() % 8 != 0)
            || end > MAX_DATAGRAM
            || cost > self.limits.max_bytes
        {
            self.counters.dropped += 1;
            return None;
        }
        if !self.pending.contains_key(&key) {
            while self.pending.len() >= self.limits.max_pending.max(1) {
                self.evict_oldest(None);
            }
            self.sequence += 1;
            let entry = Pending {
                started: self.now,
                sequence: self.sequence,
                next_header,
                total: None,
                received: 0,
                charged: 0,
                pieces: Vec::new(),
            };
            self.pending.insert(key, entry);
        }
        while self.charged + cost > self.limits.max_bytes {
            if !self.evict_oldest(Some(key)) {
                self.discard(key);
                self.counters.dropped += 1;
                return None;
            }
        }
        let entry = self.pending.get_mut(&key)?;
        if !more {
            if entry.total.is_some_and(|t| t != end)
                || entry.pieces.iter().any(|p| p.offset + p.data.len() > end)
            {
                self.discard(key);
                self.counters.dropped += 1;
                return None;
            }
            entry.total = Some(end);
        } else if entry.total.is_some_and(|t| end > t) {
            self.discard(key);
            self.counters.dropped += 1;
            return None;
        }
        for piece in &entry.pieces {
            let piece_end = piece.offset + piece.data.len();
            if piece.offset == offset && piece_end == end {
                self.counters.duplicates += 1;
                return None;
            }
            if piece.offset < end && offset < piece_end {
                self.discard(key);
                self.counters.dropped += 1;
                return None;
            }
        }
        if offset == 0 {
            entry.next_header = next_header;
        }
        entry.pieces.push(Piece {
            offset,
            data: data.to_vec(),
        });
        entry.received += data.len();
        entry.charged += cost;
        self.charged += cost;
        // Pieces are disjoint and lie inside the total, so equal sizes mean full coverage.
        if entry.total != Some(entry.received) {
            return None;
        }
        let mut done = self.pending.remove(&key)?;
        self.charged -= done.charged;
        done.pieces.sort_unstable_by_key(|p| p.offset);
        let mut data = Vec::with_capacity(done.received);
        for piece in done.pieces {
            data.extend_from_slice(&piece.data);
        }
        self.counters.reassembled += 1;
        Some(Reassembled {
            key,
            next_header: done.next_header,
            data,
        })
    }

    /// Drops every datagram still incomplete (at the end of the capture).
    pub(crate) fn abandon_all(&mut self) {
        let keys: Vec<FragKey> = self.pending.keys().copied().collect();
        for key in keys {
            self.discard(key);
        }
    }

    /// Drops datagrams whose first fragment is older than the timeout.
    fn expire(&mut self) {
        let (now, timeout) = (self.now, self.limits.timeout);
        let stale: Vec<FragKey> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.started) > timeout)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.discard(key);
        }
    }

    /// Drops the oldest datagram other than `keep`; `false` if there is none.
    fn evict_oldest(&mut self, keep: Option<FragKey>) -> bool {
        let oldest = self
            .pending
            .iter()
            .filter(|(k, _)| Some(**k) != keep)
            .min_by_key(|(_, p)| p.sequence)
            .map(|(k, _)| *k);
        match oldest {
            Some(key) => {
                self.discard(key);
                true
            }
            None => false,
        }
    }

    /// Drops one incomplete datagram, counting its fragments as dropped.
    fn discard(&mut self, key: FragKey) {
        if let Some(p) = self.pending.remove(&key) {
            self.charged -= p.charged;
            self.counters.dropped += p.pieces.len() as u64;
            self.counters.abandoned += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(id: u16) -> FragKey {
        FragKey::V4 {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::LOCALHOST,
            id,
            protocol: 17,
        }
    }

    fn frag(id: u16, offset: usize, more: bool, data: &[u8]) -> Fragment<'_> {
        Fragment {
            key: key(id),
            offset,
            more,
            next_header: 17,
            data,
        }
    }

    #[test]
    fn out_of_order_with_duplicate() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let t = Duration::ZERO;
        assert!(r.add(t, frag(1, 8, true, &[2; 8])).is_none());
        assert!(r.add(t, frag(1, 16, false, &[3; 3])).is_none());
        assert!(r.add(t, frag(1, 8, true, &[2; 8])).is_none());
        let done = r.add(t, frag(1, 0, true, &[1; 8])).unwrap();
        assert_eq!(done.data, [[1; 8].as_slice(), &[2; 8], &[3; 3]].concat());
        assert_eq!(r.counters.duplicates, 1);
        assert_eq!((r.pending_fragments(), r.pending_bytes()), (0, 0));
    }

    #[test]
    fn overlap_discards_the_datagram() {
        let mut r = Reassembler::new(ReassemblyLimits::default());
        let t = Duration::ZERO;
        assert!(r.add(t, frag(1, 0, true, &[1; 16])).is_none());
        assert!(r.add(t, frag(1, 8, false, &[2; 16])).is_none());
        assert_eq!(r.pending_fragments(), 0);
        assert_eq!(r.counters.dropped, 2);
    }

    #[test]
    fn limits_hold() {
        let limits = ReassemblyLimits {
            max_pending: 4,
            max_bytes: 10_000,
            timeout: Duration::from_secs(1),
        };
        let mut r = Reassembler::new(limits);
        for id in 0..100u16 {
            r.add(Duration::ZERO, frag(id, 0, true, &[0; 1000]));
            assert!(r.pending.len() <= 4);
            assert!(r.pending_bytes() <= 10_000);
        }
        r.add(Duration::from_secs(5), frag(500, 0, true, &[0; 8]));
        assert_eq!(r.pending.len(), 1, "the old ones expired");
        assert!(r
            .add(Duration::from_secs(5), frag(501, 65_528, true, &[0; 16]))
            .is_none());
        assert_eq!(r.pending.len(), 1, "a fragment past 64 KiB is refused");
    }
}
