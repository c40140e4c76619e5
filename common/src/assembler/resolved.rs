//! Which object ids of a session need no more work: a watermark and the ids resolved
//! above it, bounded.

use super::*;

/// Ids of a session's objects that need no more work.
#[derive(Debug, Default)]
pub(super) struct Resolved {
    pub(super) below: u32,
    pub(super) above: BTreeSet<u32>,
}

impl Resolved {
    pub(super) fn contains(&self, id: u32) -> bool {
        id < self.below || self.above.contains(&id)
    }

    /// Resolves every id from the watermark up to `end` (exclusive) at once.
    pub(super) fn raise_to(&mut self, end: u32) {
        if end <= self.below {
            return;
        }
        self.below = end;
        self.above = self.above.split_off(&end);
        self.advance();
    }

    pub(super) fn insert(&mut self, id: u32) {
        if id < self.below {
            return;
        }
        self.above.insert(id);
        self.advance();
        // Ids resolved far ahead of the watermark (only a forger scattering object ids
        // makes many) are bounded: the oldest gap is given up as resolved. The smallest of
        // more than one id is below u32::MAX, so `first + 1` cannot wrap.
        while self.above.len() > MAX_RESOLVED_AHEAD {
            let first = self.above.pop_first().expect("non-empty");
            self.below = first + 1;
            self.advance();
        }
    }

    /// Moves the watermark over the ids resolved just above it. It saturates: u32::MAX,
    /// once resolved, stays in `above` rather than wrap the watermark to 0 (which would
    /// make every id, failed ones too, unresolved again).
    pub(super) fn advance(&mut self) {
        while self.below < u32::MAX && self.above.remove(&self.below) {
            self.below += 1;
        }
    }
}
