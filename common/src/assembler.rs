//! The receive-side state machine: sessions, objects in flight, block decoding, limits,
//! timeouts and loss detection.
//!
//! Feed it datagrams with [`Assembler::handle`] and the passage of time with
//! [`Assembler::tick`]; take what happened with [`Assembler::poll_event`]. It never
//! touches a socket, a file or the clock, so live UDP, pcap replay and tests drive it alike.

use crate::auth::KeyRing;
use crate::control::{self, Heartbeat, ObjectDescriptor};
use crate::fec::{Added, BlockDecoder, SolveJob};
use crate::name;
use crate::wire::{self, Codec, DataHeader, Datagram, DatagramType, Reject};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::Duration;

/// One object of one sender session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectRef {
    /// The sender session id.
    pub session: u64,
    /// The object id within the session.
    pub object: u32,
}

impl std::fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}/{}", self.session, self.object)
    }
}

/// What a sender may make the receiver hold, and how long the receiver waits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest object accepted, in bytes.
    pub max_object_size: u64,
    /// Most incomplete objects held at once.
    pub max_objects_in_flight: usize,
    /// Most bytes of symbols and early-decoded blocks held at once.
    pub max_held_bytes: usize,
    /// Most source symbols per block.
    pub max_block_symbols: u32,
    /// Largest block, in original bytes.
    pub max_block_plain: u32,
    /// Most sender sessions tracked at once.
    pub max_sessions: usize,
    /// Longest object name accepted, in bytes (at most 1 024).
    pub max_name_bytes: usize,
    /// Most path components in an object name (at most 32).
    pub max_name_depth: usize,
    /// How long after the sender says it finished an object the receiver still waits for
    /// reordered datagrams before declaring it failed or lost.
    pub grace: Duration,
    /// Silence after which a session is closed and its incomplete objects failed.
    pub session_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_object_size: 64 << 30,
            max_objects_in_flight: 1024,
            max_held_bytes: 512 << 20,
            max_block_symbols: 8192,
            max_block_plain: 64 << 20,
            max_sessions: 8,
            max_name_bytes: name::MAX_NAME_BYTES,
            max_name_depth: name::MAX_NAME_DEPTH,
            grace: Duration::from_secs(2),
            session_timeout: Duration::from_secs(30),
        }
    }
}

/// What the receiver already delivered, consulted when a descriptor arrives so an object
/// delivered before (by an earlier session, a carousel, or before a receiver restart) is
/// ignored without decoding it again.
pub trait Ledger: Send + Sync {
    /// Whether an object with this name and content was delivered and is still in place.
    fn already_delivered(&self, d: &ObjectDescriptor) -> bool;
}

/// Something the delivery side must act on or record.
#[derive(Debug)]
pub enum Event {
    /// A sender session was heard for the first time.
    SessionStarted {
        /// The session id.
        session: u64,
        /// Object ids below this were sent before the receiver heard the session.
        first_object: u32,
    },
    /// A heartbeat arrived.
    Heartbeat {
        /// The session id.
        session: u64,
        /// The sender's counters.
        heartbeat: Heartbeat,
        /// Datagrams of this session the receiver accepted so far.
        received: u64,
        /// Share of the session's datagrams lost on the way since the first heartbeat heard
        /// (None until two heartbeats arrived).
        loss_rate: Option<f64>,
    },
    /// An object's descriptor is known; its blocks follow.
    ObjectStarted {
        /// Which object.
        object: ObjectRef,
        /// Its validated descriptor.
        descriptor: ObjectDescriptor,
    },
    /// One block decoded; `data` is still compressed as `codec` says.
    BlockDecoded {
        /// Which object.
        object: ObjectRef,
        /// Block index.
        block: u32,
        /// Compression of `data`.
        codec: Codec,
        /// Bytes once decompressed.
        plain_len: u32,
        /// The encoded block.
        data: Vec<u8>,
    },
    /// Every block of the object decoded; the delivery verifies and publishes it.
    ObjectComplete {
        /// Which object.
        object: ObjectRef,
    },
    /// The object cannot complete.
    ObjectFailed {
        /// Which object.
        object: ObjectRef,
        /// Its descriptor, when one arrived.
        descriptor: Option<ObjectDescriptor>,
        /// Why, as facts (no advice: the binaries add the advice that fits).
        reason: String,
        /// How short it fell, when it failed for want of blocks rather than being refused.
        shortfall: Option<Shortfall>,
    },
    /// The object was delivered before; its datagrams are ignored.
    ObjectAlreadyDelivered {
        /// Which object.
        object: ObjectRef,
        /// Its descriptor.
        descriptor: ObjectDescriptor,
    },
    /// Nothing of the object (or of the run of objects `object ..= through`) ever
    /// arrived, though the sender sent it.
    ObjectLost {
        /// Which object (the first of the run).
        object: ObjectRef,
        /// The last object id of the run: `object.object` for one object. A run is only
        /// reported for ids no inventory named.
        through: u32,
        /// Its kind and name, when the sender's inventory named it.
        named: Option<(crate::ObjectKind, String)>,
    },
    /// A new sender session was refused a place in the session table (reported once per
    /// session, at most once a second): an operator sees a lockout.
    SessionRefused {
        /// The session id.
        session: u64,
        /// The lowest object id heard from it so far.
        object: u32,
        /// Why.
        reason: &'static str,
    },
    /// A session ended: the sender finished, went silent or was replaced.
    SessionClosed {
        /// The session id.
        session: u64,
        /// Why.
        reason: String,
    },
}

/// Datagrams the receiver itself did not use, by cause: its own limits, its queue, its
/// socket buffer. None of them were lost on the link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OwnDrops {
    /// Refused by the assembler: its memory limit for incomplete blocks was reached.
    pub memory_limit: u64,
    /// Refused by the assembler: too many objects were in flight.
    pub objects_limit: u64,
    /// Dropped before the assembler because its input queue was full (counted by the host).
    pub queue_full: u64,
    /// Dropped by the kernel because the socket's receive buffer was full (counted by the host).
    pub socket_buffer: u64,
}

impl OwnDrops {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.memory_limit + self.objects_limit + self.queue_full + self.socket_buffer
    }

    /// What was added since `earlier`.
    pub fn since(&self, earlier: &OwnDrops) -> OwnDrops {
        OwnDrops {
            memory_limit: self.memory_limit.saturating_sub(earlier.memory_limit),
            objects_limit: self.objects_limit.saturating_sub(earlier.objects_limit),
            queue_full: self.queue_full.saturating_sub(earlier.queue_full),
            socket_buffer: self.socket_buffer.saturating_sub(earlier.socket_buffer),
        }
    }
}

/// How far an object that ran out of time got: the facts a binary needs to tell the link's
/// loss from the receiver's own drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shortfall {
    /// Blocks decoded.
    pub decoded: u64,
    /// Blocks the object has; `None` when its descriptor never arrived.
    pub blocks: Option<u64>,
    /// Whether the sender had said it finished sending the object (else its session ended
    /// first: the sender restarted or went silent, or the receiver stopped).
    pub sender_finished: bool,
    /// Datagrams the receiver itself dropped or refused while the object was in flight,
    /// counted from when the session's previous object arrived (drops of an object's first
    /// datagrams come before it is known), over all objects: a queue or limit is shared.
    pub own_drops: OwnDrops,
}

/// The refusal when held bytes would pass [`Limits::max_held_bytes`].
const MEMORY_LIMIT: &str = "memory limit for incomplete blocks reached";
/// The refusal when [`Limits::max_objects_in_flight`] objects are held.
const OBJECTS_LIMIT: &str = "too many objects in flight";

/// A block with enough symbols for a RaptorQ solve, handed out by
/// [`Assembler::poll_solve`] when solves run elsewhere; report back with
/// [`Assembler::solved`].
#[derive(Debug)]
pub struct SolveRequest {
    /// Identifies this request in [`Assembler::solved`].
    pub ticket: u64,
    /// Which object.
    pub object: ObjectRef,
    /// Block index.
    pub block: u32,
    /// The work: run it on any thread.
    pub job: SolveJob,
}

/// Counters of what the assembler saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`Assembler::handle`].
    pub datagrams: u64,
    /// Datagrams that passed parsing and were used or harmlessly ignored.
    pub accepted: u64,
    /// Datagrams dropped, by reason label.
    pub rejected: HashMap<&'static str, u64>,
    /// Symbols for blocks or objects already finished.
    pub redundant: u64,
    /// Blocks decoded.
    pub blocks_decoded: u64,
    /// Blocks that needed repair symbols to decode.
    pub blocks_repaired: u64,
    /// Datagrams that parsed and authenticated, whatever became of them next.
    pub authenticated: u64,
    /// Datagrams the receiver itself dropped or refused (see [`Assembler::note_host_drops`]).
    pub own_drops: OwnDrops,
}

impl Stats {
    /// Total datagrams rejected for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }
}

/// Ids of a session's objects that need no more work.
#[derive(Debug, Default)]
struct Resolved {
    below: u32,
    above: BTreeSet<u32>,
}

impl Resolved {
    fn contains(&self, id: u32) -> bool {
        id < self.below || self.above.contains(&id)
    }

    /// Resolves every id from the watermark up to `end` (exclusive) at once.
    fn raise_to(&mut self, end: u32) {
        if end <= self.below {
            return;
        }
        self.below = end;
        self.above = self.above.split_off(&end);
        while self.above.remove(&self.below) {
            self.below += 1;
        }
    }

    fn insert(&mut self, id: u32) {
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
    fn advance(&mut self) {
        while self.below < u32::MAX && self.above.remove(&self.below) {
            self.below += 1;
        }
    }
}

struct BlockState {
    decoder: BlockDecoder,
    block_len: u32,
    plain_len: u32,
    codec: Codec,
    repair_seen: bool,
    /// The solve request out for this block.
    ticket: Option<u64>,
}

struct EarlyBlock {
    block: u32,
    codec: Codec,
    plain_len: u32,
    data: Vec<u8>,
}

#[derive(Default)]
struct ObjectState {
    descriptor: Option<ObjectDescriptor>,
    blocks: HashMap<u32, BlockState>,
    decoded: HashSet<u32>,
    early: Vec<EarlyBlock>,
    held: usize,
    /// Blocks with a solve request out: the object is not failed while any is.
    solving: u32,
    /// The receiver's own drops when the object was admitted.
    own_drops_at_start: OwnDrops,
}

struct Session {
    /// The source whose datagram opened it.
    source: u64,
    started: Duration,
    last_seen: Duration,
    objects: HashMap<u32, ObjectState>,
    resolved: Resolved,
    first_object: u32,
    /// Object ids below this exist: seen in datagrams, or claimed by a heartbeat within
    /// [`LOST_AHEAD`] of what was seen.
    next_object: u32,
    /// One past the highest object id seen in a descriptor or data datagram.
    seen_next: u32,
    /// The highest `next_object` a heartbeat claimed, bounded or not.
    claimed_next: u32,
    done_below: u32,
    done_below_since: Duration,
    ending: bool,
    received: u64,
    baseline: Option<(u64, u64)>,
    inventory: std::collections::BTreeMap<u32, (crate::ObjectKind, String)>,
    /// The receiver's own drops when the session's last object was admitted (or, before
    /// that, at the last datagram heard before the session began): the next object's
    /// datagrams were on their way since about then.
    own_drops_mark: OwnDrops,
}

/// Inventory names remembered per session.
const INVENTORY_MEMORY: usize = 4096;

/// The receive-side protocol state machine.
pub struct Assembler {
    limits: Limits,
    keys: KeyRing,
    sessions: HashMap<u64, Session>,
    /// Sessions closed lately: `None` for good (it ended), or the watermark below which
    /// everything of it was resolved (it went silent or was evicted, and may come back).
    closed: VecDeque<(u64, Option<u32>)>,
    events: VecDeque<Event>,
    held: usize,
    stats: Stats,
    ledger: Option<std::sync::Arc<dyn Ledger>>,
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
}

/// Undecoded blocks of an object its session gave up on, kept so that a later session
/// sending the same content (a restarted sender, a carousel) adds to them.
struct Parked {
    block_plain_size: u32,
    blocks: HashMap<u32, BlockState>,
    held: usize,
    since: Duration,
}

/// How long parked blocks wait for the same content to come again.
const PARK_TIME: Duration = Duration::from_secs(600);
/// Most objects parked at once.
const PARK_MAX: usize = 64;

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
            held: 0,
            stats: Stats::default(),
            ledger: None,
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
        }
    }

    /// Consults `ledger` for every new object's descriptor.
    pub fn set_ledger(&mut self, ledger: std::sync::Arc<dyn Ledger>) {
        self.ledger = Some(ledger);
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
        self.held
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
            Err(r) => {
                *self.stats.rejected.entry(r.label()).or_default() += 1;
                match r {
                    Reject::Refused(MEMORY_LIMIT) => self.stats.own_drops.memory_limit += 1,
                    Reject::Refused(OBJECTS_LIMIT) => self.stats.own_drops.objects_limit += 1,
                    _ => {}
                }
            }
        }
        result
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
        let hint = match d {
            Datagram::Data { header, .. } => Some(header.object),
            Datagram::Control {
                kind: DatagramType::Descriptor,
                object,
                ..
            } => Some(object),
            _ => None,
        };
        // Heartbeats are decoded before a session is created for them, so garbage
        // cannot open sessions.
        let heartbeat = match d {
            Datagram::Control {
                kind: DatagramType::Heartbeat,
                body,
                ..
            } => Some(
                control::decode::<Heartbeat>(body)
                    .map_err(|_| Reject::Malformed("heartbeat does not decode"))?,
            ),
            _ => None,
        };
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
        let first = hint
            .or(heartbeat.as_ref().map(|h| h.done_below.min(h.next_object)))
            .unwrap_or(0);
        self.touch_session(now, session_id, first, hint.is_some())?;
        if let Some((i, watermark)) = resume {
            self.closed.remove(i);
            let s = self.sessions.get_mut(&session_id).expect("touched");
            s.resolved.raise_to(watermark);
            s.next_object = s.next_object.max(watermark);
            s.first_object = s.first_object.max(watermark);
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
            } => {
                let inv: crate::control::Inventory = control::decode(body)
                    .map_err(|_| Reject::Malformed("inventory does not decode"))?;
                let s = self.sessions.get_mut(&session_id).expect("touched");
                for e in inv.entries {
                    if !s.resolved.contains(e.object) || s.objects.contains_key(&e.object) {
                        s.inventory.insert(e.object, (e.kind, e.name));
                    }
                }
                while s.inventory.len() > INVENTORY_MEMORY {
                    s.inventory.pop_first();
                }
                Ok(())
            }
            Datagram::Control { .. } => {
                let hb = heartbeat.expect("decoded above");
                self.on_heartbeat(now, session_id, hb);
                Ok(())
            }
        }
    }

    fn touch_session(
        &mut self,
        now: Duration,
        id: u64,
        first_object: u32,
        seen: bool,
    ) -> Result<(), Reject> {
        // An object id in a datagram of the object itself is seen; one derived from a
        // heartbeat's counters is only claimed.
        let hint_seen = if seen {
            first_object.saturating_add(1)
        } else {
            0
        };
        if self.sessions.contains_key(&id) {
            // Known in this run: nothing to check.
        } else if let Some(f) = self.freshness.as_mut() {
            match f.admit(id) {
                Err(crate::freshness::Stale::Closed) => {
                    return Err(Reject::Replayed("the session was closed before"));
                }
                Err(crate::freshness::Stale::BeforeFloor) => {
                    return Err(Reject::Replayed(
                        "the session started before every session remembered",
                    ));
                }
                Ok(_) => {}
            }
        }
        if let Some(s) = self.sessions.get_mut(&id) {
            s.last_seen = now;
            if first_object < s.first_object && !s.resolved.contains(first_object) {
                s.first_object = first_object;
            }
            return Ok(());
        }
        if self.sessions.len() >= self.limits.max_sessions {
            // Make room by closing the session that ended or went quiet longest ago; only
            // when every tracked session is alive is the newcomer refused (and reported).
            let grace = self.limits.grace;
            let evictable = self
                .sessions
                .iter()
                .filter(|(_, s)| s.ending || now.saturating_sub(s.last_seen) >= grace)
                .min_by_key(|(_, s)| (!s.ending, s.last_seen))
                .map(|(&id, _)| id)
                .or_else(|| self.over_share());
            match evictable {
                Some(old) => {
                    self.close_session(old, "a newer sender session needed its place".into())
                }
                None => {
                    let reason = "too many sender sessions";
                    self.note_refused(now, id, first_object, reason);
                    return Err(Reject::Refused(reason));
                }
            }
        }
        let first_object = match self.refused.remove(&id) {
            Some(lowest) => first_object.min(lowest),
            None => first_object,
        };
        // A session known from before a restart resumes where it was resolved.
        let resume = self
            .freshness
            .as_ref()
            .and_then(|f| f.known.get(&id))
            .map_or(0, |k| k.resolved_below);
        self.sessions.insert(
            id,
            Session {
                source: self.source,
                started: now,
                last_seen: now,
                objects: HashMap::new(),
                resolved: Resolved {
                    below: resume,
                    above: BTreeSet::new(),
                },
                first_object,
                next_object: first_object.max(resume),
                seen_next: hint_seen,
                claimed_next: 0,
                done_below: 0,
                done_below_since: now,
                ending: false,
                received: 0,
                baseline: None,
                inventory: Default::default(),
                own_drops_mark: self.own_drops_heard,
            },
        );
        self.events.push_back(Event::SessionStarted {
            session: id,
            first_object,
        });
        Ok(())
    }

    /// With every session alive: while the newcomer's source holds less than its share
    /// (the table divided among the sources holding places and the newcomer's), the least
    /// recently heard session of a source holding more than its share.
    fn over_share(&self) -> Option<u64> {
        let mut per_source: HashMap<u64, usize> = HashMap::new();
        for s in self.sessions.values() {
            *per_source.entry(s.source).or_default() += 1;
        }
        let mine = per_source.get(&self.source).copied().unwrap_or(0);
        let sources = per_source.len() + usize::from(mine == 0);
        let share = (self.limits.max_sessions / sources).max(1);
        if mine >= share {
            return None;
        }
        self.sessions
            .iter()
            .filter(|(_, s)| per_source[&s.source] > share)
            .min_by_key(|(&id, s)| (s.last_seen, id))
            .map(|(&id, _)| id)
    }

    /// Remembers a refused session's lowest object id; the first refusal of a session is an
    /// event, at most one a second.
    fn note_refused(&mut self, now: Duration, id: u64, object: u32, reason: &'static str) {
        if let Some(lowest) = self.refused.get_mut(&id) {
            *lowest = (*lowest).min(object);
            return;
        }
        if self.refused.len() >= REFUSED_MEMORY {
            return;
        }
        self.refused.insert(id, object);
        let quiet = self
            .last_refusal_event
            .is_none_or(|t| now.saturating_sub(t) >= Duration::from_secs(1));
        if quiet {
            self.last_refusal_event = Some(now);
            self.events.push_back(Event::SessionRefused {
                session: id,
                object,
                reason,
            });
        }
    }

    fn on_heartbeat(&mut self, now: Duration, session_id: u64, hb: Heartbeat) {
        let s = self.sessions.get_mut(&session_id).expect("touched");
        // A heartbeat's counters are the sender's word: the ids it claims count only up to
        // a bounded distance past the objects actually seen, so two forged datagrams
        // cannot make the receiver report billions of objects lost.
        s.claimed_next = s.claimed_next.max(hb.next_object);
        let bound = s.seen_next.max(s.first_object).saturating_add(LOST_AHEAD);
        s.next_object = s.next_object.max(hb.next_object.min(bound));
        if hb.done_below > s.done_below {
            s.done_below = hb.done_below.min(s.next_object);
            s.done_below_since = now;
        }
        s.ending |= hb.ending;
        let (sent0, received0) = *s.baseline.get_or_insert((hb.datagrams_sent, s.received));
        let sent = hb.datagrams_sent.saturating_sub(sent0);
        let got = s.received.saturating_sub(received0);
        let loss_rate = (sent > 0).then(|| 1.0 - (got as f64 / sent as f64).min(1.0));
        let received = s.received;
        self.events.push_back(Event::Heartbeat {
            session: session_id,
            heartbeat: hb,
            received,
            loss_rate,
        });
    }

    fn on_descriptor(&mut self, session_id: u64, object: u32, body: &[u8]) -> Result<(), Reject> {
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
        if let Some(state) = s.objects.get(&object) {
            if let Some(known) = &state.descriptor {
                let same = ObjectDescriptor {
                    pass: known.pass,
                    passes: known.passes,
                    ..descriptor.clone()
                };
                return if &same == known {
                    self.stats.redundant += 1;
                    Ok(())
                } else {
                    Err(Reject::Refused("descriptor differs from an earlier copy"))
                };
            }
        }
        if let Err(reason) = self.check_descriptor(&descriptor) {
            self.fail(oref, Some(descriptor), reason);
            return Ok(());
        }
        if self
            .ledger
            .as_ref()
            .is_some_and(|l| l.already_delivered(&descriptor))
        {
            self.remove_object(oref);
            self.sessions
                .get_mut(&session_id)
                .expect("touched")
                .resolved
                .insert(object);
            self.events.push_back(Event::ObjectAlreadyDelivered {
                object: oref,
                descriptor,
            });
            return Ok(());
        }
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
        for b in early {
            self.held -= b.data.len();
            let state = self.object_mut(oref);
            state.held -= b.data.len();
            if b.block as u64 >= descriptor.block_count()
                || b.plain_len as u64 != descriptor.block_plain_len(b.block)
            {
                self.fail(
                    oref,
                    Some(descriptor),
                    "a block disagrees with the object's descriptor".into(),
                );
                return Ok(());
            }
            self.events.push_back(Event::BlockDecoded {
                object: oref,
                block: b.block,
                codec: b.codec,
                plain_len: b.plain_len,
                data: b.data,
            });
        }
        self.complete_if_done(oref);
        Ok(())
    }

    fn check_descriptor(&self, d: &ObjectDescriptor) -> Result<(), String> {
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

    fn admit_object(&mut self, session_id: u64, object: u32) -> Result<(), Reject> {
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

    fn object_mut(&mut self, o: ObjectRef) -> &mut ObjectState {
        self.sessions
            .get_mut(&o.session)
            .and_then(|s| s.objects.get_mut(&o.object))
            .expect("object in flight")
    }

    fn on_data(&mut self, _now: Duration, h: DataHeader, symbol: &[u8]) -> Result<(), Reject> {
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
            // A datagram that would be refused anyway must not take an object slot.
            let cost = u16::try_from(symbol.len())
                .map_err(|_| Reject::Refused("block parameters out of range"))
                .and_then(|t| {
                    BlockDecoder::opening_cost(
                        h.block_len as usize,
                        t,
                        self.limits.max_block_symbols,
                    )
                    .map_err(|_| Reject::Refused("block parameters out of range"))
                })?;
            if self.held + cost > self.limits.max_held_bytes {
                return Err(Reject::Refused(MEMORY_LIMIT));
            }
            self.admit_object(h.session, h.object)?;
        }
        let max_symbols = self.limits.max_block_symbols;
        let limit = self.limits.max_held_bytes;
        let held_now = self.held;
        let hold = self.hold_solves;
        let state = self.object_mut(oref);
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
                if b.block_len != h.block_len || b.plain_len != h.plain_len || b.codec != h.codec {
                    return Err(Reject::Refused("symbol disagrees with its block"));
                }
                if held_now + b.decoder.cost_of_symbol() > limit {
                    return Err(Reject::Refused(MEMORY_LIMIT));
                }
                b
            }
            std::collections::hash_map::Entry::Vacant(_) => {
                if symbol.len() > u16::MAX as usize {
                    return Err(Reject::Refused("block parameters out of range"));
                }
                let mut decoder =
                    BlockDecoder::new(h.block_len as usize, symbol.len() as u16, max_symbols)
                        .map_err(|_| Reject::Refused("block parameters out of range"))?;
                decoder.hold_solves(hold);
                if held_now + decoder.held_bytes() + decoder.cost_of_symbol() > limit {
                    return Err(Reject::Refused(MEMORY_LIMIT));
                }
                let opened = decoder.held_bytes();
                state.held += opened;
                self.held += opened;
                let state = self
                    .sessions
                    .get_mut(&h.session)
                    .and_then(|s| s.objects.get_mut(&h.object))
                    .expect("object in flight");
                state.blocks.entry(h.block).or_insert(BlockState {
                    decoder,
                    block_len: h.block_len,
                    plain_len: h.plain_len,
                    codec: h.codec,
                    repair_seen: false,
                    ticket: None,
                })
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
        match added {
            Added::Pending => {}
            Added::Decoded(data) => self.block_done(oref, h.block, data),
            Added::Solve(job) => self.dispatch(oref, h.block, job),
            Added::Ready => {
                self.ready.insert((oref, h.block));
            }
        }
        Ok(())
    }

    /// Moves the held-bytes accounting of one block of `o` from `before` to `after`.
    fn adjust_held(&mut self, o: ObjectRef, before: usize, after: usize) {
        // A decoder that just handed its buffer over holds less than before.
        let state = self.object_mut(o);
        state.held = (state.held + after).saturating_sub(before);
        self.held = (self.held + after).saturating_sub(before);
    }

    /// Solves a block here, or hands the job out when solves run elsewhere.
    fn dispatch(&mut self, o: ObjectRef, block: u32, job: SolveJob) {
        if self.solve_elsewhere {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            let state = self.object_mut(o);
            state.solving += 1;
            state.blocks.get_mut(&block).expect("present").ticket = Some(ticket);
            self.solves.push_back(SolveRequest {
                ticket,
                object: o,
                block,
                job,
            });
        } else {
            let result = job.run();
            self.settle(o, block, result);
        }
    }

    /// Takes the next block waiting for a solve elsewhere (see [`Self::set_solve_elsewhere`]).
    pub fn poll_solve(&mut self) -> Option<SolveRequest> {
        self.solves.pop_front()
    }

    /// Makes blocks that need RaptorQ come out of [`Self::poll_solve`] instead of being
    /// solved inside [`Self::handle`], so a pool of threads can solve them.
    pub fn set_solve_elsewhere(&mut self, elsewhere: bool) {
        self.solve_elsewhere = elsewhere;
    }

    /// Makes a block with enough symbols but some source symbols missing wait for the
    /// next [`Self::tick`] (or [`Self::flush_ready`]) before it is solved: a sender's
    /// spreading delivers symbols out of order, and most such blocks complete from their
    /// source symbols a moment later, without the cost of a RaptorQ solve.
    pub fn set_hold_solves(&mut self, hold: bool) {
        self.hold_solves = hold;
    }

    /// Solves (or hands out) every block held ready since the last call.
    pub fn flush_ready(&mut self) {
        for (o, block) in std::mem::take(&mut self.ready) {
            let Some(b) = self
                .sessions
                .get_mut(&o.session)
                .and_then(|s| s.objects.get_mut(&o.object))
                .and_then(|state| state.blocks.get_mut(&block))
            else {
                continue;
            };
            let before = b.decoder.held_bytes();
            let job = b.decoder.take_job();
            let after = b.decoder.held_bytes();
            self.adjust_held(o, before, after);
            if let Some(job) = job {
                self.dispatch(o, block, job);
            }
        }
    }

    /// Reports the outcome of a [`SolveRequest`]: the block's bytes, or `None` when its
    /// symbols did not determine it. Outcomes for objects gone since are ignored.
    pub fn solved(&mut self, ticket: u64, object: ObjectRef, block: u32, result: Option<Vec<u8>>) {
        let Some(state) = self
            .sessions
            .get_mut(&object.session)
            .and_then(|s| s.objects.get_mut(&object.object))
        else {
            return;
        };
        let Some(b) = state.blocks.get_mut(&block) else {
            return;
        };
        if b.ticket != Some(ticket) {
            return;
        }
        b.ticket = None;
        state.solving -= 1;
        self.settle(object, block, result);
    }

    /// Completes a block whose solve succeeded, or asks for another solve once more
    /// symbols have arrived.
    fn settle(&mut self, o: ObjectRef, block: u32, result: Option<Vec<u8>>) {
        if let Some(data) = result {
            self.block_done(o, block, data);
            return;
        }
        let b = self.object_mut(o).blocks.get_mut(&block).expect("present");
        let before = b.decoder.held_bytes();
        let again = b.decoder.solve_failed();
        let after = b.decoder.held_bytes();
        self.adjust_held(o, before, after);
        if let Some(job) = again {
            self.dispatch(o, block, job);
        }
    }

    /// Block `block` of `o` decoded into `data`: hand it on (or keep it until the
    /// descriptor arrives) and complete the object if it was the last.
    fn block_done(&mut self, oref: ObjectRef, block: u32, data: Vec<u8>) {
        let state = self.object_mut(oref);
        let b = state.blocks.remove(&block).expect("present");
        if b.ticket.is_some() {
            state.solving -= 1;
        }
        let freed = b.decoder.held_bytes();
        state.held -= freed;
        state.decoded.insert(block);
        self.held -= freed;
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
            state.held += len;
            state.early.push(EarlyBlock {
                block,
                codec: b.codec,
                plain_len: b.plain_len,
                data,
            });
            self.held += len;
        }
    }

    fn complete_if_done(&mut self, o: ObjectRef) {
        let Some(s) = self.sessions.get_mut(&o.session) else {
            return;
        };
        let Some(state) = s.objects.get(&o.object) else {
            return;
        };
        let Some(d) = &state.descriptor else { return };
        if state.decoded.len() as u64 == d.block_count() {
            self.remove_object(o);
            self.events.push_back(Event::ObjectComplete { object: o });
        }
    }

    fn remove_object(&mut self, o: ObjectRef) -> Option<ObjectState> {
        let s = self.sessions.get_mut(&o.session)?;
        s.resolved.insert(o.object);
        let state = s.objects.remove(&o.object)?;
        self.held -= state.held;
        Some(state)
    }

    fn fail(&mut self, o: ObjectRef, descriptor: Option<ObjectDescriptor>, reason: String) {
        let state = self.remove_object(o);
        let descriptor = descriptor.or(state.and_then(|s| s.descriptor));
        self.events.push_back(Event::ObjectFailed {
            object: o,
            descriptor,
            reason,
            shortfall: None,
        });
    }

    /// Gives a new object the undecoded blocks an earlier session left of the same content.
    fn adopt_parked(&mut self, o: ObjectRef, d: &ObjectDescriptor) {
        let key = (d.name.clone(), d.blake3);
        let Some(p) = self.parked.remove(&key) else {
            return;
        };
        self.held -= p.held;
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
        state.held += adopted;
        self.held += adopted;
    }

    /// Keeps the undecoded blocks of a failing object with a descriptor, within limits.
    fn park(&mut self, mut state: ObjectState, now: Duration) {
        // A solve still out for a parked block is forgotten: its outcome will find no
        // object, and the block asks again when a later pass adds symbols.
        for b in state.blocks.values_mut() {
            if b.ticket.take().is_some() {
                b.decoder.cancel_solve();
            }
        }
        let Some(d) = state.descriptor else { return };
        if state.blocks.is_empty() {
            return;
        }
        let held: usize = state.blocks.values().map(|b| b.decoder.held_bytes()).sum();
        if self.held + held > self.limits.max_held_bytes / 2 {
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
                self.held -= p.held;
            }
        }
        self.held += held;
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
            self.held -= old.held;
        }
    }

    fn expire_parked(&mut self, now: Duration) {
        let expired: Vec<(String, [u8; 32])> = self
            .parked
            .iter()
            .filter(|(_, p)| now.saturating_sub(p.since) >= PARK_TIME)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            let p = self.parked.remove(&k).expect("present");
            self.held -= p.held;
        }
    }

    fn fail_incomplete(&mut self, o: ObjectRef, why: &str) {
        let s = &self.sessions[&o.session];
        let state = &s.objects[&o.object];
        let shortfall = Shortfall {
            decoded: state.decoded.len() as u64,
            blocks: state.descriptor.as_ref().map(ObjectDescriptor::block_count),
            sender_finished: o.object < s.done_below,
            own_drops: self.stats.own_drops.since(&state.own_drops_at_start),
        };
        let reason = match shortfall.blocks {
            Some(blocks) => format!("{why}; {} of {blocks} blocks decoded", shortfall.decoded),
            None => format!("{why}; its descriptor never arrived"),
        };
        let now = self.now;
        let state = self.remove_object(o);
        let descriptor = state.as_ref().and_then(|s| s.descriptor.clone());
        if let Some(state) = state {
            self.park(state, now);
        }
        self.events.push_back(Event::ObjectFailed {
            object: o,
            descriptor,
            reason,
            shortfall: Some(shortfall),
        });
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

    /// Fails or loses every unresolved object of `session` below `upto`.
    fn resolve_below(&mut self, session: u64, upto: u32, why: &str) {
        let mut budget = RESOLVE_PER_TICK;
        loop {
            let s = &self.sessions[&session];
            let id = s.resolved.below;
            if id >= upto || budget == 0 {
                break;
            }
            budget -= 1;
            let o = ObjectRef {
                session,
                object: id,
            };
            if s.objects.contains_key(&id) {
                self.fail_incomplete(o, why);
            } else if let Some(named) = s.inventory.get(&id).cloned() {
                let report = id >= s.first_object;
                let s = self.sessions.get_mut(&session).expect("present");
                s.resolved.insert(id);
                if report {
                    self.events.push_back(Event::ObjectLost {
                        object: o,
                        through: id,
                        named: Some(named),
                    });
                }
            } else {
                // A run of ids of which nothing arrived and no inventory named: one event.
                let end = [
                    s.objects.keys().copied().filter(|&k| k >= id).min(),
                    s.inventory.range(id..).next().map(|(&k, _)| k),
                    s.resolved.above.range(id..).next().copied(),
                ]
                .into_iter()
                .flatten()
                .fold(upto, u32::min);
                let first = id.max(s.first_object);
                let s = self.sessions.get_mut(&session).expect("present");
                s.resolved.raise_to(end);
                if first < end {
                    self.events.push_back(Event::ObjectLost {
                        object: ObjectRef {
                            session,
                            object: first,
                        },
                        through: end - 1,
                        named: None,
                    });
                }
            }
        }
        // Objects above the watermark that are in flight but below `upto`.
        let pending: Vec<u32> = self.sessions[&session]
            .objects
            .keys()
            .copied()
            .filter(|&id| id < upto)
            .collect();
        for id in pending {
            self.fail_incomplete(
                ObjectRef {
                    session,
                    object: id,
                },
                why,
            );
        }
    }

    /// Closes a session, failing or losing what it left unresolved. A session that said it
    /// was ending is closed for good (anything more of it is ignored, and with replay
    /// protection refused after a restart too); one closed for silence, eviction or a
    /// shutdown may come back and resume after what it had resolved before.
    fn close_session(&mut self, session: u64, mut reason: String) {
        let s = &self.sessions[&session];
        let for_good = s.ending;
        let resolved_before = s.resolved.below;
        if s.claimed_next > s.next_object {
            reason.push_str(&format!(
                "; its heartbeats claimed {} more object ids, over {LOST_AHEAD} past the last \
                 object seen, not recorded",
                s.claimed_next - s.next_object
            ));
        }
        let end = s
            .next_object
            .max(s.objects.keys().max().map_or(0, |m| m.saturating_add(1)));
        self.resolve_below(session, end, &format!("session closed: {reason}"));
        let leftover: Vec<u32> = self.sessions[&session].objects.keys().copied().collect();
        for id in leftover {
            self.fail_incomplete(
                ObjectRef {
                    session,
                    object: id,
                },
                &reason,
            );
        }
        let watermark = self.sessions[&session].resolved.below;
        self.sessions.remove(&session);
        self.closed
            .push_back((session, (!for_good).then_some(watermark)));
        if self.closed.len() > CLOSED_MEMORY {
            self.closed.pop_front();
        }
        if let Some(f) = self.freshness.as_mut() {
            if for_good {
                f.closed(session);
            } else {
                f.resolved(session, resolved_before);
            }
        }
        self.events
            .push_back(Event::SessionClosed { session, reason });
    }

    /// Closes every session as if it went silent: for the end of a replay or a shutdown.
    pub fn finish(&mut self, reason: &str) {
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.close_session(id, reason.to_string());
        }
        // Nothing can come after a finish: parked blocks would wait for nobody.
        for (_, p) in self.parked.drain() {
            self.held -= p.held;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emit::DatagramWriter;

    fn heartbeat(session: u64, ending: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let hb = Heartbeat {
            seq: 1,
            next_object: 1,
            done_below: 1,
            ending,
            ..Heartbeat::default()
        };
        DatagramWriter::new(session, None).heartbeat(&mut out, &hb);
        out
    }

    #[test]
    fn resolved_ids_ahead_of_the_watermark_are_bounded() {
        let mut r = Resolved::default();
        for id in (1..=3 * MAX_RESOLVED_AHEAD as u32).map(|i| i * 2) {
            r.insert(id);
        }
        assert!(r.above.len() <= MAX_RESOLVED_AHEAD);
        assert!(r.contains(6 * MAX_RESOLVED_AHEAD as u32));
        assert!(!r.contains(6 * MAX_RESOLVED_AHEAD as u32 + 1));
        r.insert(0);
        assert!(r.contains(0));
    }

    #[test]
    fn the_resolved_watermark_does_not_wrap_at_u32_max() {
        let mut r = Resolved {
            below: u32::MAX - 2,
            above: BTreeSet::new(),
        };
        r.insert(u32::MAX);
        r.insert(u32::MAX - 2);
        r.insert(u32::MAX - 1);
        assert_eq!(r.below, u32::MAX);
        for id in [0, 1, u32::MAX - 2, u32::MAX - 1, u32::MAX] {
            assert!(r.contains(id), "{id} resolved");
        }
        r.insert(u32::MAX);
        assert!(r.contains(u32::MAX) && r.contains(7));
        // Given up as a gap right below u32::MAX: still no wrap.
        let mut r = Resolved::default();
        for id in (0..=MAX_RESOLVED_AHEAD as u32).map(|i| u32::MAX - i) {
            r.insert(id);
        }
        assert!(r.above.len() <= MAX_RESOLVED_AHEAD);
        assert!(r.contains(u32::MAX) && r.contains(0) && r.contains(u32::MAX - 1));
    }

    #[test]
    fn refused_data_takes_no_object_slot() {
        let limits = Limits {
            max_objects_in_flight: 2,
            max_block_symbols: 16,
            ..Limits::default()
        };
        let mut a = Assembler::new(limits, KeyRing::default());
        let w = DatagramWriter::new(9, None);
        // Blocks of 1 000 one-byte symbols: above the 16-symbol limit, so refused.
        for object in 0..10u32 {
            let h = crate::wire::DataHeader {
                session: 9,
                object,
                block: 0,
                esi: 0,
                block_len: 1000,
                plain_len: 1000,
                codec: crate::wire::Codec::None,
            };
            let mut out = Vec::new();
            w.data(&mut out, &h, &[1]);
            assert!(a.handle(Duration::ZERO, &out).is_err());
        }
        assert_eq!(a.objects_in_flight(), 0);
    }

    #[test]
    fn one_source_cannot_hold_every_place_while_another_waits() {
        let limits = Limits {
            max_sessions: 4,
            ..Limits::default()
        };
        let mut a = Assembler::new(limits, KeyRing::default());
        let t = Duration::from_secs(1);
        let (flooder, sender) = (7, 9);
        for id in 1..=4u64 {
            a.handle_from(t, flooder, &heartbeat(id, false)).unwrap();
        }
        // Every place alive and held by one source: another source's session gets one.
        a.handle_from(t, sender, &heartbeat(100, false)).unwrap();
        assert!(a.sessions.contains_key(&100));
        assert_eq!(a.sessions.len(), 4);
        // The flooder cannot take it back while it holds its share (4 places, 2 sources).
        assert_eq!(
            a.handle_from(t, flooder, &heartbeat(5, false)),
            Err(Reject::Refused("too many sender sessions"))
        );
        // A second legitimate session still gets a place: the flooder holds 3 > 2.
        a.handle_from(t, sender, &heartbeat(101, false)).unwrap();
        assert!(a.sessions.contains_key(&100) && a.sessions.contains_key(&101));
        // A third source: share 1 each; one of the two sources holding 2 gives a place up.
        a.handle_from(t, 11, &heartbeat(200, false)).unwrap();
        assert_eq!(a.sessions.len(), 4);
        assert!(a.sessions.contains_key(&200));
        // Every source at or below its share once more: a newcomer of a source that holds
        // a place already is refused, and reported.
        // (a second later: refusals are reported at most once a second)
        let later = t + Duration::from_secs(1);
        assert!(a.handle_from(later, 11, &heartbeat(201, false)).is_err());
        assert!(std::iter::from_fn(|| a.poll_event())
            .any(|e| matches!(e, Event::SessionRefused { session: 201, .. })));
    }

    #[test]
    fn ended_sessions_make_room_for_new_ones() {
        let limits = Limits {
            max_sessions: 3,
            ..Limits::default()
        };
        let mut a = Assembler::new(limits, KeyRing::default());
        let t = Duration::from_secs(1);
        for id in 1..=10u64 {
            // Each sender run ends at once, faster than the grace time.
            a.handle(t, &heartbeat(id, true)).unwrap();
        }
        assert!(a.sessions.len() <= 3);
        // Three live sessions fill the table; a fourth is refused rather than evicting them.
        let mut b = Assembler::new(
            Limits {
                max_sessions: 3,
                ..Limits::default()
            },
            KeyRing::default(),
        );
        for id in 1..=3u64 {
            b.handle(t, &heartbeat(id, false)).unwrap();
        }
        assert_eq!(
            b.handle(t, &heartbeat(4, false)),
            Err(Reject::Refused("too many sender sessions"))
        );
        // Once one has been quiet past the grace time, the newcomer takes its place.
        let later = t + Limits::default().grace;
        b.handle(later, &heartbeat(2, false)).unwrap();
        b.handle(later, &heartbeat(3, false)).unwrap();
        b.handle(later, &heartbeat(4, false)).unwrap();
        assert!(b.sessions.contains_key(&4) && !b.sessions.contains_key(&1));
    }
}
