//! The memory bound's bookkeeping: bytes of symbols, early-decoded blocks and parked
//! blocks the assembler holds, per holder and in total, checked against
//! [`Limits::max_held_bytes`](super::Limits::max_held_bytes).
//!
//! Every change to what an object holds is also a change to the assembler's total; the
//! [`Charge`] pair makes the two move together so neither can be forgotten.

/// Bytes held in memory by one holder: an object in flight, a parked object, or the
/// whole assembler.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Held(usize);

impl Held {
    /// A holder of `bytes` bytes.
    pub(super) fn new(bytes: usize) -> Self {
        Held(bytes)
    }

    /// The bytes held.
    pub(super) fn bytes(self) -> usize {
        self.0
    }

    /// Whether `more` bytes fit beside these under `limit`.
    pub(super) fn room_for(self, more: usize, limit: usize) -> bool {
        self.0.saturating_add(more) <= limit
    }

    /// Counts `n` more bytes.
    pub(super) fn add(&mut self, n: usize) {
        self.0 += n;
    }

    /// Counts `n` bytes fewer; releasing more than is held is a bookkeeping bug.
    pub(super) fn release(&mut self, n: usize) {
        debug_assert!(n <= self.0, "released {n} of {} held bytes", self.0);
        self.0 = self.0.saturating_sub(n);
    }

    /// Counts a holding that went from `before` to `after` bytes.
    pub(super) fn resize(&mut self, before: usize, after: usize) {
        self.0 = (self.0 + after).saturating_sub(before);
    }
}

/// One holder's bytes together with the assembler's total, changed as one.
pub(super) struct Charge<'a> {
    /// The assembler's total.
    pub(super) total: &'a mut Held,
    /// The holder's own count.
    pub(super) holder: &'a mut Held,
}

impl Charge<'_> {
    /// The holder takes `n` more bytes.
    pub(super) fn add(self, n: usize) {
        self.total.add(n);
        self.holder.add(n);
    }

    /// The holder gives back `n` bytes.
    pub(super) fn release(self, n: usize) {
        self.total.release(n);
        self.holder.release(n);
    }

    /// One of the holder's buffers went from `before` to `after` bytes (a decoder that
    /// handed its buffer over holds less than before).
    pub(super) fn resize(self, before: usize, after: usize) {
        self.total.resize(before, after);
        self.holder.resize(before, after);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_charge_moves_holder_and_total_together() {
        let (mut total, mut a, mut b) = (Held::default(), Held::default(), Held::default());
        Charge {
            total: &mut total,
            holder: &mut a,
        }
        .add(100);
        Charge {
            total: &mut total,
            holder: &mut b,
        }
        .add(50);
        Charge {
            total: &mut total,
            holder: &mut a,
        }
        .resize(40, 10);
        assert_eq!((total.bytes(), a.bytes(), b.bytes()), (120, 70, 50));
        Charge {
            total: &mut total,
            holder: &mut b,
        }
        .release(50);
        assert_eq!((total.bytes(), b.bytes()), (70, 0));
        assert!(total.room_for(30, 100));
        assert!(!total.room_for(31, 100));
        assert!(!total.room_for(usize::MAX, 100));
    }
}
