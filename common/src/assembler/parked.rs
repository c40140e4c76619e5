//! Undecoded blocks kept after their session gave up, for a later session sending the
//! same content to add to.

use super::*;

/// Undecoded blocks of an object its session gave up on, kept so that a later session
/// sending the same content (a restarted sender, a carousel) adds to them.
pub(super) struct Parked {
    pub(super) block_plain_size: u32,
    pub(super) blocks: HashMap<u32, BlockState>,
    pub(super) held: Held,
    pub(super) since: Duration,
}

/// How long parked blocks wait for the same content to come again.
pub(super) const PARK_TIME: Duration = Duration::from_secs(600);
/// Most objects parked at once.
pub(super) const PARK_MAX: usize = 64;

impl Assembler {
    /// Gives a new object the undecoded blocks an earlier session left of the same content.
    pub(super) fn adopt_parked(&mut self, o: ObjectRef, d: &ObjectDescriptor) {
        let key = (d.name.clone(), d.blake3);
        let Some(p) = self.parked.remove(&key) else {
            return;
        };
        self.held.release(p.held.bytes());
        if p.block_plain_size != d.block_plain_size {
            return;
        }
        let state = self.object_mut(o);
        let mut adopted = 0;
        for (index, block) in p.blocks {
            if state.decoded.contains(&index) || state.blocks.contains_key(&index) {
                continue;
            }
            adopted += block.decoder.held_bytes();
            state.blocks.insert(index, block);
        }
        self.charge(o).add(adopted);
    }

    /// Keeps the undecoded blocks of a failing object with a descriptor, within limits.
    pub(super) fn park(&mut self, mut state: ObjectState, now: Duration) {
        // A solve still out for a parked block is forgotten: its outcome will find no
        // object, and the block asks again when a later pass adds symbols.
        for b in state.blocks.values_mut() {
            if b.ticket.take().is_some() {
                b.decoder.cancel_solve();
            }
        }
        // Parked blocks are found again by name and blake3: without the blake3, a later
        // object of the same name could adopt blocks of other content.
        let Some(d) = state.descriptor.filter(|d| d.known_blake3().is_some()) else {
            return;
        };
        if state.blocks.is_empty() {
            return;
        }
        let held = Held::new(state.blocks.values().map(|b| b.decoder.held_bytes()).sum());
        if !self
            .held
            .room_for(held.bytes(), self.limits.max_held_bytes / 2)
        {
            return;
        }
        if self.parked.len() >= PARK_MAX {
            let oldest = self
                .parked
                .iter()
                .min_by_key(|(_, p)| p.since)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                let p = self.parked.remove(&k).expect("present");
                self.held.release(p.held.bytes());
            }
        }
        self.held.add(held.bytes());
        let key = (d.name.clone(), d.blake3);
        if let Some(old) = self.parked.insert(
            key,
            Parked {
                block_plain_size: d.block_plain_size,
                blocks: state.blocks,
                held,
                since: now,
            },
        ) {
            self.held.release(old.held.bytes());
        }
    }

    pub(super) fn expire_parked(&mut self, now: Duration) {
        let expired: Vec<(String, [u8; 32])> = self
            .parked
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.since) >= PARK_TIME)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let p = self.parked.remove(&k).expect("present");
            self.held.release(p.held.bytes());
        }
    }
}
