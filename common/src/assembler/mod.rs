//! The receive-side state machine: sessions, objects in flight, block decoding, limits,
//! timeouts and loss detection.
//!
//! Feed it datagrams with [`Assembler::handle`] and the passage of time with
//! [`Assembler::tick`]; take what happened with [`Assembler::poll_event`]. It never
//! touches a socket, a file or the clock, so live UDP, pcap replay and tests drive it alike.
//!
//! What the host delivered before is the host's knowledge, not the core's: with
//! [`Assembler::set_announce`] the core asks through an event ([`Event::ObjectAnnounced`])
//! and holds the new object (its blocks wait as if its descriptor had not arrived) until
//! the host answers [`Assembler::skip`] or [`Assembler::proceed`]. The receiver answers
//! while draining the events of each datagram, so nothing else happens in between. The
//! core's messages state facts; the binaries add the advice.

use crate::auth::KeyRing;
use crate::control::{self, Heartbeat, ObjectDescriptor};
use crate::fec::{Added, BlockDecoder, SolveJob};
use crate::name;
use crate::wire::{self, Codec, DataHeader, Datagram, DatagramType, Reject};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

mod api;
mod held;
mod object;
mod parked;
mod resolved;
mod session;
mod solve;

#[cfg(test)]
mod tests;

pub use api::*;
use held::{Charge, Held};
use object::{BlockState, ObjectState};
use parked::Parked;
use resolved::Resolved;
use session::Session;

/// The receive-side protocol state machine.
pub struct Assembler {
    limits: Limits,
    keys: KeyRing,
    sessions: HashMap<u64, Session>,
    /// Sessions closed lately: `None` for good (it ended), or the watermark below which
    /// everything of it was resolved (it went silent or was evicted, and may come back).
    closed: VecDeque<(u64, Option<u32>)>,
    events: VecDeque<Event>,
    held: Held,
    stats: Stats,
    /// Whether new objects are announced and held for the host's answer.
    announce: bool,
    /// Objects announced and not answered yet, with their validated descriptor.
    announced: HashMap<ObjectRef, ObjectDescriptor>,
    parked: HashMap<(String, [u8; 32]), Parked>,
    now: Duration,
    solve_elsewhere: bool,
    solves: VecDeque<SolveRequest>,
    next_ticket: u64,
    /// Sessions refused a place, with the lowest object id heard from each, so that once
    /// admitted their earlier objects are still accounted for.
    refused: HashMap<u64, u32>,
    last_refusal_event: Option<Duration>,
    freshness: Option<crate::freshness::Freshness>,
    last_session: Option<u64>,
    /// The receiver's own drops as of the last authenticated datagram: a new session's
    /// window opens there, as drops before its first datagram may be its own.
    own_drops_heard: OwnDrops,
    /// Decoders hold their solves until a tick (see [`Assembler::set_hold_solves`]).
    hold_solves: bool,
    /// The source of the datagram being handled.
    source: u64,
    /// Blocks whose decoder is ready for a solve, held until the next tick.
    ready: std::collections::BTreeSet<(ObjectRef, u32)>,
    /// Buffers of blocks already delivered, for the next blocks (at most [`SPARE_BLOCKS`]).
    spare: Vec<Vec<u8>>,
}

/// Spare block buffers an assembler keeps at most (see [`Assembler::recycle_block`]):
/// a window's blocks open together while the previous window's are still being written,
/// so two windows' worth; fewer left most blocks to a fresh buffer grown by doubling
/// (perf, receiver alone: 13 % of the receiver's CPU in `realloc` and page faults).
pub const SPARE_BLOCKS: usize = 2 * crate::emit::INTERLEAVE_DEPTH;

/// Bytes of spare block buffers an assembler keeps at most: [`SPARE_BLOCKS`] blocks at MTU
/// 1500 (1.4 MB each), fewer of bigger blocks, so spares never hold more than this.
pub const SPARE_BYTES: usize = 32 << 20;

/// Ids remembered as resolved above a session's contiguous watermark at most.
const MAX_RESOLVED_AHEAD: usize = 65_536;
/// Most lost or failed objects (or runs of lost ids) resolved per session per tick.
const RESOLVE_PER_TICK: u32 = 10_000;
/// How far past the highest object id seen a heartbeat may claim objects exist: a sender
/// whose last objects lost every datagram has them recorded lost, up to this many.
pub const LOST_AHEAD: u32 = 1024;
/// Closed session ids remembered, to ignore their late datagrams.
const CLOSED_MEMORY: usize = 64;
/// Refused session ids remembered.
const REFUSED_MEMORY: usize = 64;

impl Assembler {
    /// A new assembler enforcing `limits`, authenticating with `keys` when non-empty.
    pub fn new(limits: Limits, keys: KeyRing) -> Self {
        Assembler {
            limits,
            keys,
            sessions: HashMap::new(),
            closed: VecDeque::new(),
            events: VecDeque::new(),
            held: Held::default(),
            stats: Stats::default(),
            announce: false,
            announced: HashMap::new(),
            parked: HashMap::new(),
            now: Duration::ZERO,
            solve_elsewhere: false,
            solves: VecDeque::new(),
            next_ticket: 0,
            refused: HashMap::new(),
            last_refusal_event: None,
            freshness: None,
            last_session: None,
            own_drops_heard: OwnDrops::default(),
            hold_solves: false,
            ready: Default::default(),
            source: 0,
            spare: Vec::new(),
        }
    }

    /// Takes back the buffer of a block the host is done with ([`Event::BlockDecoded`]'s
    /// `data`), for a later block to fill instead of a fresh allocation. Keeps
    /// [`SPARE_BLOCKS`] and [`SPARE_BYTES`] at most, and none that are empty; the rest is freed.
    pub fn recycle_block(&mut self, buf: Vec<u8>) {
        let kept: usize = self.spare.iter().map(Vec::capacity).sum();
        if buf.capacity() > 0
            && self.spare.len() < SPARE_BLOCKS
            && kept + buf.capacity() <= SPARE_BYTES
        {
            self.spare.push(buf);
        }
    }

    /// Spare block buffers kept (see [`Assembler::recycle_block`]).
    pub fn spare_blocks(&self) -> usize {
        self.spare.len()
    }

    /// With `true`, every new object's validated descriptor is announced
    /// ([`Event::ObjectAnnounced`]) and the object held until the host answers with
    /// [`Assembler::skip`] (delivered before) or [`Assembler::proceed`]: the host's
    /// ledger of deliveries is a question asked through an event, not a callback (the
    /// core does no I/O). Answer before the next datagram or tick: an unanswered object is
    /// treated as one whose descriptor never arrived.
    pub fn set_announce(&mut self, announce: bool) {
        self.announce = announce;
    }

    /// Refuses replayed sessions as `state` says, and keeps it up to date (see
    /// [`crate::freshness`]). Only meaningful with keys: without, anyone can make a new
    /// session id.
    pub fn set_freshness(&mut self, state: crate::freshness::Freshness) {
        self.freshness = Some(state);
    }

    /// The replay-protection state, for the caller to persist when it is dirty.
    pub fn freshness_mut(&mut self) -> Option<&mut crate::freshness::Freshness> {
        self.freshness.as_mut()
    }

    /// Counters so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Bytes of symbols and early blocks currently held.
    pub fn held_bytes(&self) -> usize {
        self.held.bytes()
    }

    /// The session of the last datagram that parsed and authenticated.
    pub fn last_session(&self) -> Option<u64> {
        self.last_session
    }

    /// Counts datagrams the host dropped before they reached the assembler (queue full,
    /// socket buffer overflow), so failures can tell them from losses on the link.
    pub fn note_host_drops(&mut self, queue_full: u64, socket_buffer: u64) {
        self.stats.own_drops.queue_full += queue_full;
        self.stats.own_drops.socket_buffer += socket_buffer;
    }

    /// Incomplete objects currently held, over all sessions.
    pub fn objects_in_flight(&self) -> usize {
        self.sessions.values().map(|s| s.objects.len()).sum()
    }

    /// The next event to act on, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Processes one received UDP payload at time `now`.
    pub fn handle(&mut self, now: Duration, bytes: &[u8]) -> Result<(), Reject> {
        self.handle_from(now, 0, bytes)
    }

    /// Processes one UDP payload received at `now` from `source` (an opaque id of its
    /// sender's address): when the session table is full, a source holding more than its
    /// share of it gives a place up to a session of another source.
    pub fn handle_from(&mut self, now: Duration, source: u64, bytes: &[u8]) -> Result<(), Reject> {
        self.source = source;
        self.now = self.now.max(now);
        self.stats.datagrams += 1;
        let result = wire::parse(bytes, &self.keys).and_then(|d| {
            self.stats.authenticated += 1;
            self.last_session = Some(d.session());
            let handled = self.handle_datagram(now, d);
            self.own_drops_heard = self.stats.own_drops;
            handled
        });
        match result {
            Ok(()) => self.stats.accepted += 1,
            Err(r) => self.count_reject(r),
        }
        result
    }

    /// Counts a refused datagram by its reason, and as the receiver's own drop when a
    /// limit refused it.
    fn count_reject(&mut self, r: Reject) {
        *self.stats.rejected.entry(r.reason()).or_default() += 1;
        match r {
            Reject::Refused(MEMORY_LIMIT) => self.stats.own_drops.memory_limit += 1,
            Reject::Refused(OBJECTS_LIMIT) => self.stats.own_drops.objects_limit += 1,
            _ => {}
        }
    }

    fn handle_datagram(&mut self, now: Duration, d: Datagram<'_>) -> Result<(), Reject> {
        let session_id = d.session();
        let mut resume = None;
        if let Some(i) = self.closed.iter().position(|&(id, _)| id == session_id) {
            match self.closed[i].1 {
                None => {
                    self.stats.redundant += 1;
                    return Ok(());
                }
                // A session closed for silence comes back: it resumes above what it had
                // resolved, so nothing it ended starts again.
                Some(watermark) => resume = Some((i, watermark)),
            }
        }
        let hint = object_hint(&d);
        // Heartbeats are decoded before a session is created for them, so garbage
        // cannot open sessions.
        let heartbeat = decode_heartbeat(&d)?;
        if matches!(
            d,
            Datagram::Control {
                kind: DatagramType::Inventory,
                ..
            }
        ) && !self.sessions.contains_key(&session_id)
        {
            // An inventory alone does not open a session: its ids may predate this receiver.
            return Ok(());
        }
        // An inventory names no first object: it must not move the session's first one.
        let first = hint.or(heartbeat.as_ref().map(|h| h.done_below.min(h.next_object)));
        self.touch_session(now, session_id, first, hint.is_some())?;
        if let Some((i, watermark)) = resume {
            self.closed.remove(i);
            self.sessions
                .get_mut(&session_id)
                .expect("touched")
                .resume_above(watermark);
        }
        if let Some(s) = self.sessions.get_mut(&session_id) {
            s.received += 1;
        }
        match d {
            Datagram::Data { header, symbol } => self.on_data(now, header, symbol),
            Datagram::Control {
                kind: DatagramType::Descriptor,
                object,
                body,
                ..
            } => self.on_descriptor(session_id, object, body),
            Datagram::Control {
                kind: DatagramType::Inventory,
                body,
                ..
            } => self.on_inventory(session_id, body),
            Datagram::Control { .. } => {
                let hb = heartbeat.expect("decoded above");
                self.on_heartbeat(now, session_id, hb);
                Ok(())
            }
        }
    }

    /// Advances time to `now`: fails, loses and closes what waited too long.
    pub fn tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
        self.flush_ready();
        self.expire_parked(now);
        let grace = self.limits.grace;
        let timeout = self.limits.session_timeout;
        let newest_start = self.sessions.values().map(|s| s.started).max();
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            let s = &self.sessions[&id];
            if let Some(f) = self.freshness.as_mut() {
                f.resolved(id, s.resolved.below);
            }
            // Nothing of a session is given up while one of its blocks is being solved.
            if s.objects.values().any(|o| o.solving > 0) {
                continue;
            }
            let silent = now.saturating_sub(s.last_seen);
            if silent >= timeout {
                self.close_session(id, "the sender went silent".into());
                continue;
            }
            // The sender said it is ending and its stream has stopped: whatever did not
            // complete will not, and is named now rather than at the session timeout.
            if s.ending && silent >= grace {
                self.close_session(id, "the sender finished its session".into());
                continue;
            }
            let replaced = newest_start.is_some_and(|t| t > s.started) && silent >= grace;
            if replaced {
                self.close_session(
                    id,
                    "a new sender session replaced it (sender restarted?)".into(),
                );
                continue;
            }
            if now.saturating_sub(s.done_below_since) >= grace {
                let upto = s.done_below;
                self.resolve_below(id, upto, "the sender finished sending it");
                let s = &self.sessions[&id];
                if s.ending && s.objects.is_empty() && s.resolved.below >= s.next_object {
                    self.close_session(id, "the sender finished its session".into());
                }
            }
        }
    }

    /// Closes every session as if it went silent: for the end of a replay or a shutdown.
    pub fn finish(&mut self, reason: &str) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close_session(id, reason.to_string());
        }
        // Nothing can come after a finish: parked blocks would wait for nobody.
        for (_, p) in self.parked.drain() {
            self.held.release(p.held.bytes());
        }
    }
}

/// The object a data or descriptor datagram is about.
fn object_hint(d: &Datagram<'_>) -> Option<u32> {
    match d {
        Datagram::Data { header, .. } => Some(header.object),
        Datagram::Control {
            kind: DatagramType::Descriptor,
            object,
            ..
        } => Some(*object),
        _ => None,
    }
}

/// A heartbeat datagram's body, decoded; `None` for other datagrams.
fn decode_heartbeat(d: &Datagram<'_>) -> Result<Option<Heartbeat>, Reject> {
    match d {
        Datagram::Control {
            kind: DatagramType::Heartbeat,
            body,
            ..
        } => control::decode::<Heartbeat>(body)
            .map(Some)
            .map_err(|_| Reject::Malformed("heartbeat does not decode")),
        _ => Ok(None),
    }
}
