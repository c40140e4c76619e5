//! The assembler's vocabulary: object ids, limits, the events it reports (the question
//! whether an object was delivered before among them), solve requests and statistics.

use super::*;

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
    /// Every block of the object decoded and its blake3 known; the delivery verifies and
    /// publishes it.
    ObjectComplete {
        /// Which object.
        object: ObjectRef,
        /// The blake3 the object's bytes must have: the descriptor's, or (when the sender
        /// read the object once) the one its last descriptor copies brought.
        blake3: [u8; 32],
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
    /// A new object's descriptor arrived and validated (only with
    /// [`Assembler::set_announce`]): the host answers [`Assembler::skip`] when it delivered
    /// this name and content before, else [`Assembler::proceed`].
    ObjectAnnounced {
        /// Which object.
        object: ObjectRef,
        /// Its validated descriptor.
        descriptor: ObjectDescriptor,
    },
    /// The object was delivered before (the host answered [`Assembler::skip`]); its
    /// datagrams are ignored.
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
pub(super) const MEMORY_LIMIT: &str = "memory limit for incomplete blocks reached";
/// The refusal when [`Limits::max_objects_in_flight`] objects are held.
pub(super) const OBJECTS_LIMIT: &str = "too many objects in flight";

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
    /// Datagrams dropped, by reason (looked up by its label too: `rejected.get("bad_tag")`).
    pub rejected: HashMap<crate::wire::RejectReason, u64>,
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
