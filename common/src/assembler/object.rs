//! Objects in flight: descriptors, data symbols into their blocks, decoded blocks,
//! completion and failure.

use super::*;

pub(super) struct BlockState {
    pub(super) decoder: BlockDecoder,
    pub(super) block_len: u32,
    pub(super) plain_len: u32,
    pub(super) codec: Codec,
    pub(super) repair_seen: bool,
    /// The solve request out for this block.
    pub(super) ticket: Option<u64>,
}

impl BlockState {
    /// A new block for the data datagram `h` whose symbols are `symbol_len` bytes, if its
    /// parameters are sane and its decoder fits under `limit` beside `held` bytes; it
    /// takes a recycled buffer from `spare` when one fits.
    fn open(
        h: &DataHeader,
        symbol_len: usize,
        max_symbols: u32,
        hold_solves: bool,
        (held, limit): (Held, usize),
        spare: &mut Vec<Vec<u8>>,
    ) -> Result<Self, Reject> {
        let symbol_size = u16::try_from(symbol_len)
            .map_err(|_| Reject::Refused("block parameters out of range"))?;
        let mut decoder = BlockDecoder::new(h.block_len as usize, symbol_size, max_symbols)
            .map_err(|_| Reject::Refused("block parameters out of range"))?;
        decoder.hold_solves(hold_solves);
        if let Some(buf) = spare.pop() {
            // A buffer that does not fit this block is freed, not kept.
            let _ = decoder.adopt_buffer(buf);
        }
        if !held.room_for(decoder.held_bytes() + decoder.cost_of_symbol(), limit) {
            return Err(Reject::Refused(MEMORY_LIMIT));
        }
        Ok(BlockState {
            decoder,
            block_len: h.block_len,
            plain_len: h.plain_len,
            codec: h.codec,
            repair_seen: false,
            ticket: None,
        })
    }

    /// Checks that the data datagram `h` belongs to this block and that its symbol fits
    /// under `limit` beside `held` bytes.
    fn check_symbol(&self, h: &DataHeader, held: Held, limit: usize) -> Result<(), Reject> {
        if self.block_len != h.block_len || self.plain_len != h.plain_len || self.codec != h.codec {
            return Err(Reject::Refused("symbol disagrees with its block"));
        }
        if !held.room_for(self.decoder.cost_of_symbol(), limit) {
            return Err(Reject::Refused(MEMORY_LIMIT));
        }
        Ok(())
    }
}

pub(super) struct EarlyBlock {
    pub(super) block: u32,
    pub(super) codec: Codec,
    pub(super) plain_len: u32,
    pub(super) data: Vec<u8>,
}

#[derive(Default)]
pub(super) struct ObjectState {
    pub(super) descriptor: Option<ObjectDescriptor>,
    pub(super) blocks: HashMap<u32, BlockState>,
    pub(super) decoded: HashSet<u32>,
    pub(super) early: Vec<EarlyBlock>,
    pub(super) held: Held,
    /// Blocks with a solve request out: the object is not failed while any is.
    pub(super) solving: u32,
    /// The receiver's own drops when the object was admitted.
    pub(super) own_drops_at_start: OwnDrops,
}

impl Assembler {
    pub(super) fn on_descriptor(
        &mut self,
        session_id: u64,
        object: u32,
        body: &[u8],
    ) -> Result<(), Reject> {
        let descriptor: ObjectDescriptor =
            control::decode(body).map_err(|_| Reject::Malformed("descriptor does not decode"))?;
        let s = self.sessions.get_mut(&session_id).expect("touched");
        if s.resolved.contains(object) {
            self.stats.redundant += 1;
            return Ok(());
        }
        s.next_object = s.next_object.max(object.saturating_add(1));
        s.seen_next = s.seen_next.max(object.saturating_add(1));
        let oref = ObjectRef {
            session: session_id,
            object,
        };
        let known = s
            .objects
            .get_mut(&object)
            .and_then(|state| state.descriptor.as_mut())
            .or(self.announced.get_mut(&oref));
        if let Some(known) = known {
            let learned = another_copy(known, &descriptor)?;
            if learned {
                self.complete_if_done(oref);
            } else {
                self.stats.redundant += 1;
            }
            return Ok(());
        }
        if let Err(reason) = self.check_descriptor(&descriptor) {
            self.fail(oref, Some(descriptor), reason);
            return Ok(());
        }
        if self.announce {
            // The host answers with `skip` or `proceed`; until then the object's blocks
            // are held as if its descriptor had not arrived.
            self.announced.insert(oref, descriptor.clone());
            self.events.push_back(Event::ObjectAnnounced {
                object: oref,
                descriptor,
            });
            return Ok(());
        }
        self.start_object(oref, descriptor)
    }

    /// The host's answer to [`Event::ObjectAnnounced`]: the object was delivered before;
    /// its datagrams are ignored and [`Event::ObjectAlreadyDelivered`] follows.
    pub fn skip(&mut self, oref: ObjectRef) {
        let Some(descriptor) = self.announced.remove(&oref) else {
            return;
        };
        self.remove_object(oref);
        if let Some(s) = self.sessions.get_mut(&oref.session) {
            s.resolved.insert(oref.object);
        }
        self.events.push_back(Event::ObjectAlreadyDelivered {
            object: oref,
            descriptor,
        });
    }

    /// The host's answer to [`Event::ObjectAnnounced`]: the object is wanted; it starts
    /// ([`Event::ObjectStarted`], then its blocks). When a limit refuses it now, the
    /// descriptor's datagram is counted refused instead of accepted (the answer follows
    /// it), and the next copy of the descriptor announces the object again.
    pub fn proceed(&mut self, oref: ObjectRef) -> Result<(), Reject> {
        let Some(descriptor) = self.announced.remove(&oref) else {
            return Ok(());
        };
        if !self.sessions.contains_key(&oref.session) {
            return Ok(());
        }
        let started = self.start_object(oref, descriptor);
        if let Err(r) = started {
            self.stats.accepted = self.stats.accepted.saturating_sub(1);
            self.count_reject(r);
        }
        started
    }

    /// Admits `oref` (if its data did not already) with its validated `descriptor` and
    /// hands on what was decoded before it.
    fn start_object(
        &mut self,
        oref: ObjectRef,
        descriptor: ObjectDescriptor,
    ) -> Result<(), Reject> {
        let (session_id, object) = (oref.session, oref.object);
        if !self.sessions[&session_id].objects.contains_key(&object) {
            self.admit_object(session_id, object)?;
        }
        let s = self.sessions.get_mut(&session_id).expect("touched");
        let state = s.objects.get_mut(&object).expect("admitted");
        state.descriptor = Some(descriptor.clone());
        let early = std::mem::take(&mut state.early);
        self.adopt_parked(oref, &descriptor);
        self.events.push_back(Event::ObjectStarted {
            object: oref,
            descriptor: descriptor.clone(),
        });
        if self.hand_on_early(oref, &descriptor, early) {
            self.complete_if_done(oref);
        }
        Ok(())
    }

    /// Hands on the blocks of `oref` decoded before its descriptor arrived, now that it has;
    /// false when one disagrees with the descriptor (the object is then failed).
    fn hand_on_early(
        &mut self,
        oref: ObjectRef,
        descriptor: &ObjectDescriptor,
        early: Vec<EarlyBlock>,
    ) -> bool {
        for b in early {
            self.charge(oref).release(b.data.len());
            if b.block as u64 >= descriptor.block_count()
                || b.plain_len as u64 != descriptor.block_plain_len(b.block)
            {
                self.fail(
                    oref,
                    Some(descriptor.clone()),
                    "a block disagrees with the object's descriptor".into(),
                );
                return false;
            }
            self.events.push_back(Event::BlockDecoded {
                object: oref,
                block: b.block,
                codec: b.codec,
                plain_len: b.plain_len,
                data: b.data,
            });
        }
        true
    }

    pub(super) fn check_descriptor(&self, d: &ObjectDescriptor) -> Result<(), String> {
        name::validate_within(
            &d.name,
            self.limits.max_name_bytes,
            self.limits.max_name_depth,
        )
        .map_err(|e| format!("unsafe name {:?}: {e}", d.name))?;
        if d.size > self.limits.max_object_size {
            return Err(format!(
                "declared size {} exceeds the receiver's limit of {} bytes",
                d.size, self.limits.max_object_size
            ));
        }
        if d.size > 0
            && (d.block_plain_size == 0 || d.block_plain_size > self.limits.max_block_plain)
        {
            return Err(format!(
                "declared block size {} is outside 1..={}",
                d.block_plain_size, self.limits.max_block_plain
            ));
        }
        if d.block_count() > u32::MAX as u64 {
            return Err("declares more than 2^32 blocks".into());
        }
        Ok(())
    }

    pub(super) fn admit_object(&mut self, session_id: u64, object: u32) -> Result<(), Reject> {
        if self.objects_in_flight() >= self.limits.max_objects_in_flight {
            return Err(Reject::Refused(OBJECTS_LIMIT));
        }
        let s = self.sessions.get_mut(&session_id).expect("touched");
        // Charged from the previous admission on: drops of an object's first datagrams
        // happen before the object is known here.
        let state = ObjectState {
            own_drops_at_start: std::mem::replace(&mut s.own_drops_mark, self.stats.own_drops),
            ..ObjectState::default()
        };
        s.objects.insert(object, state);
        s.next_object = s.next_object.max(object.saturating_add(1));
        s.seen_next = s.seen_next.max(object.saturating_add(1));
        Ok(())
    }

    pub(super) fn object_mut(&mut self, o: ObjectRef) -> &mut ObjectState {
        self.sessions
            .get_mut(&o.session)
            .and_then(|s| s.objects.get_mut(&o.object))
            .expect("object in flight")
    }

    pub(super) fn on_data(
        &mut self,
        _now: Duration,
        h: DataHeader,
        symbol: &[u8],
    ) -> Result<(), Reject> {
        let oref = ObjectRef {
            session: h.session,
            object: h.object,
        };
        let s = self.sessions.get_mut(&h.session).expect("touched");
        if s.resolved.contains(h.object) {
            self.stats.redundant += 1;
            return Ok(());
        }
        if h.plain_len > self.limits.max_block_plain || h.block_len > h.plain_len {
            return Err(Reject::Refused("block larger than the receiver's limit"));
        }
        if !s.objects.contains_key(&h.object) {
            self.admit_for_data(&h, symbol.len())?;
        }
        let (limit, held_now) = (self.limits.max_held_bytes, self.held);
        let (max_symbols, hold) = (self.limits.max_block_symbols, self.hold_solves);
        // Reached through fields, not `object_mut`, so `self.held` and `self.stats` stay
        // usable beside it.
        let state = self
            .sessions
            .get_mut(&h.session)
            .and_then(|s| s.objects.get_mut(&h.object))
            .expect("object in flight");
        if let Some(d) = &state.descriptor {
            if h.block as u64 >= d.block_count() || h.plain_len as u64 != d.block_plain_len(h.block)
            {
                return Err(Reject::Refused(
                    "block disagrees with the object's descriptor",
                ));
            }
        }
        if state.decoded.contains(&h.block) {
            self.stats.redundant += 1;
            return Ok(());
        }
        let block = match state.blocks.entry(h.block) {
            std::collections::hash_map::Entry::Occupied(e) => {
                let b = e.into_mut();
                b.check_symbol(&h, held_now, limit)?;
                b
            }
            std::collections::hash_map::Entry::Vacant(e) => {
                let b = BlockState::open(
                    &h,
                    symbol.len(),
                    max_symbols,
                    hold,
                    (held_now, limit),
                    &mut self.spare,
                )?;
                let holder = &mut state.held;
                Charge {
                    total: &mut self.held,
                    holder,
                }
                .add(b.decoder.held_bytes());
                e.insert(b)
            }
        };
        let k = block.decoder.source_symbols();
        block.repair_seen |= h.esi >= k;
        let before = block.decoder.held_bytes();
        let added = block
            .decoder
            .offer(h.esi, symbol)
            .map_err(|_| Reject::Refused("symbol disagrees with its block"))?;
        let after = block.decoder.held_bytes();
        self.adjust_held(oref, before, after);
        self.symbol_added(oref, h.block, added);
        Ok(())
    }

    /// Acts on what one more symbol did to block `block` of `oref`.
    fn symbol_added(&mut self, oref: ObjectRef, block: u32, added: Added) {
        match added {
            Added::Pending => {}
            Added::Decoded(data) => self.block_done(oref, block, data),
            Added::Solve(job) => self.dispatch(oref, block, job),
            Added::Ready => {
                self.ready.insert((oref, block));
            }
        }
    }

    /// Admits the object a first data datagram names, unless that datagram would be
    /// refused anyway: then it must not take an object slot.
    fn admit_for_data(&mut self, h: &DataHeader, symbol_len: usize) -> Result<(), Reject> {
        let cost = u16::try_from(symbol_len)
            .map_err(|_| Reject::Refused("block parameters out of range"))
            .and_then(|t| {
                BlockDecoder::opening_cost(h.block_len as usize, t, self.limits.max_block_symbols)
                    .map_err(|_| Reject::Refused("block parameters out of range"))
            })?;
        if !self.held.room_for(cost, self.limits.max_held_bytes) {
            return Err(Reject::Refused(MEMORY_LIMIT));
        }
        self.admit_object(h.session, h.object)
    }

    /// Moves the held-bytes accounting of one block of `o` from `before` to `after`.
    pub(super) fn adjust_held(&mut self, o: ObjectRef, before: usize, after: usize) {
        self.charge(o).resize(before, after);
    }

    /// The held-bytes accounting of `o`, tied to the assembler's total.
    pub(super) fn charge(&mut self, o: ObjectRef) -> Charge<'_> {
        let state = self
            .sessions
            .get_mut(&o.session)
            .and_then(|s| s.objects.get_mut(&o.object))
            .expect("object in flight");
        Charge {
            total: &mut self.held,
            holder: &mut state.held,
        }
    }

    /// Block `block` of `o` decoded into `data`: hand it on (or keep it until the
    /// descriptor arrives) and complete the object if it was the last.
    pub(super) fn block_done(&mut self, oref: ObjectRef, block: u32, data: Vec<u8>) {
        let state = self.object_mut(oref);
        let mut b = state.blocks.remove(&block).expect("present");
        if b.ticket.is_some() {
            state.solving -= 1;
        }
        state.decoded.insert(block);
        self.charge(oref).release(b.decoder.held_bytes());
        // A solved block leaves its source symbols' buffer behind: keep it for the next.
        self.recycle_block(b.decoder.take_buffer());
        self.stats.blocks_decoded += 1;
        if b.repair_seen {
            self.stats.blocks_repaired += 1;
        }
        let state = self.object_mut(oref);
        if state.descriptor.is_some() {
            self.events.push_back(Event::BlockDecoded {
                object: oref,
                block,
                codec: b.codec,
                plain_len: b.plain_len,
                data,
            });
            self.complete_if_done(oref);
        } else {
            let len = data.len();
            state.early.push(EarlyBlock {
                block,
                codec: b.codec,
                plain_len: b.plain_len,
                data,
            });
            self.charge(oref).add(len);
        }
    }

    pub(super) fn complete_if_done(&mut self, o: ObjectRef) {
        let Some(s) = self.sessions.get_mut(&o.session) else {
            return;
        };
        let Some(state) = s.objects.get(&o.object) else {
            return;
        };
        let Some(d) = &state.descriptor else { return };
        // An object read once by its sender is verified against the blake3 its last
        // descriptor copies carry: complete only once one of them arrived.
        let Some(blake3) = d.known_blake3() else {
            return;
        };
        if state.decoded.len() as u64 == d.block_count() {
            self.remove_object(o);
            self.events
                .push_back(Event::ObjectComplete { object: o, blake3 });
        }
    }

    pub(super) fn remove_object(&mut self, o: ObjectRef) -> Option<ObjectState> {
        let s = self.sessions.get_mut(&o.session)?;
        s.resolved.insert(o.object);
        let state = s.objects.remove(&o.object)?;
        self.held.release(state.held.bytes());
        Some(state)
    }

    pub(super) fn fail(
        &mut self,
        o: ObjectRef,
        descriptor: Option<ObjectDescriptor>,
        reason: String,
    ) {
        let state = self.remove_object(o);
        let descriptor = descriptor.or(state.and_then(|s| s.descriptor));
        self.events.push_back(Event::ObjectFailed {
            object: o,
            descriptor,
            reason,
            shortfall: None,
        });
    }

    pub(super) fn fail_incomplete(&mut self, o: ObjectRef, why: &str) {
        let s = &self.sessions[&o.session];
        let state = &s.objects[&o.object];
        let shortfall = Shortfall {
            decoded: state.decoded.len() as u64,
            blocks: state.descriptor.as_ref().map(ObjectDescriptor::block_count),
            sender_finished: o.object < s.done_below,
            own_drops: self.stats.own_drops.since(&state.own_drops_at_start),
        };
        let hash_missing = state
            .descriptor
            .as_ref()
            .is_some_and(|d| d.known_blake3().is_none());
        let reason = match shortfall.blocks {
            Some(blocks) if hash_missing && shortfall.decoded == blocks => format!(
                "{why}; all {blocks} blocks decoded, but no descriptor copy carrying its blake3 \
                 arrived (lost at the object's end, or the sender stopped the object because \
                 its source changed while read)"
            ),
            Some(blocks) => format!("{why}; {} of {blocks} blocks decoded", shortfall.decoded),
            None => format!("{why}; its descriptor never arrived"),
        };
        let now = self.now;
        let state = self.remove_object(o);
        let descriptor = state.as_ref().and_then(|s| s.descriptor.clone());
        if let Some(state) = state {
            self.park(state, now);
        }
        // Every block in and only the hash missing: no shortfall of datagrams to explain.
        let only_hash = hash_missing && Some(shortfall.decoded) == shortfall.blocks;
        self.events.push_back(Event::ObjectFailed {
            object: o,
            descriptor,
            reason,
            shortfall: (!only_hash).then_some(shortfall),
        });
    }
}

/// Checks a further copy of a known object's descriptor against `known`: Ok(true) when it
/// brought the blake3 `known` was waiting for (now set in `known`), Ok(false) when it says
/// nothing new, refused when it differs in anything else or names another blake3.
fn another_copy(known: &mut ObjectDescriptor, copy: &ObjectDescriptor) -> Result<bool, Reject> {
    let same = ObjectDescriptor {
        pass: known.pass,
        passes: known.passes,
        blake3: known.blake3,
        ..copy.clone()
    };
    if &same != known {
        return Err(Reject::Refused("descriptor differs from an earlier copy"));
    }
    match (known.known_blake3(), copy.known_blake3()) {
        (_, None) => Ok(false),
        (Some(k), Some(c)) if k == c => Ok(false),
        (Some(_), Some(_)) => Err(Reject::Refused(
            "descriptor's blake3 differs from an earlier copy",
        )),
        (None, Some(c)) => {
            known.blake3 = c;
            Ok(true)
        }
    }
}
