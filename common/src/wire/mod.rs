//! The datagram layout: encoding and validating parsing of every datagram on the wire.
//!
//! All integers are big-endian. The byte-by-byte layout is in `docs/PROTOCOL.md`.
//! A datagram that fails any check here is a [`Reject`] and never reaches the decoder.

use crate::auth::{Key, KeyRing, TagScheme, Verdict, TAG_LEN};
use thiserror::Error;

/// The two bytes every gapferry datagram starts with.
pub const MAGIC: [u8; 2] = *b"GF";
/// The protocol version this code writes.
pub const VERSION: u8 = 2;
/// The oldest version this code still reads: version 1 is version 2 without descriptor
/// copies whose blake3 comes later ([`crate::control::BLAKE3_LATER`]).
pub const OLDEST_VERSION: u8 = 1;
/// Bytes of the header shared by every datagram type.
pub const COMMON_HEADER_LEN: usize = 20;
/// Bytes of a data datagram's header, before its symbol.
pub const DATA_HEADER_LEN: usize = 40;
/// Bytes before a control datagram's body (common header plus body length).
pub const CONTROL_HEADER_LEN: usize = 22;
/// Largest encoding symbol id RaptorQ allows (24 bits).
pub const MAX_ESI: u32 = (1 << 24) - 1;
/// Largest object id a session assigns. 2^32-1 is reserved, so the first id of a session
/// not yet resolved (a receiver's watermark) always fits in 32 bits, even once every
/// object id is resolved.
pub const MAX_OBJECT_ID: u32 = u32::MAX - 1;
/// Largest UDP payload gapferry ever produces or accepts.
pub const MAX_DATAGRAM: usize = 65_507;

/// Flag bit: a [`TAG_LEN`]-byte tag ends the datagram (keyed blake3 unless
/// [`FLAG_TAG_SIV`] is set too).
pub const FLAG_TAGGED: u8 = 0x01;
/// Flag bit, only beside [`FLAG_TAGGED`]: the tag is AES-256-GCM-SIV ([`TagScheme::AesGcmSiv`]).
pub const FLAG_TAG_SIV: u8 = 0x02;

/// The datagram types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum DatagramType {
    /// One RaptorQ encoding symbol of one block.
    Data = 1,
    /// An object descriptor (bincode body).
    Descriptor = 2,
    /// A heartbeat with the sender's counters (bincode body).
    Heartbeat = 3,
    /// An inventory of the sender's recent objects (bincode body).
    Inventory = 4,
}

/// How a block's bytes were compressed before RaptorQ encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Stored as is.
    None = 0,
    /// One zstd frame.
    Zstd = 1,
}

impl Codec {
    fn from_u8(v: u8) -> Option<Codec> {
        match v {
            0 => Some(Codec::None),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// The fields of a data datagram's header after the common part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataHeader {
    /// Sender session.
    pub session: u64,
    /// Object id within the session.
    pub object: u32,
    /// Block index within the object.
    pub block: u32,
    /// RaptorQ encoding symbol id.
    pub esi: u32,
    /// Bytes of the encoded (possibly compressed) block: RaptorQ's transfer length.
    pub block_len: u32,
    /// Bytes of the block once decompressed.
    pub plain_len: u32,
    /// How the block was compressed.
    pub codec: Codec,
}

/// A datagram that passed every check, borrowing from the received bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datagram<'a> {
    /// One symbol of one block.
    Data {
        /// The header fields.
        header: DataHeader,
        /// The symbol bytes; their length is the block's symbol size.
        symbol: &'a [u8],
    },
    /// A control message: descriptor or heartbeat, body still bincode.
    Control {
        /// Which control message.
        kind: DatagramType,
        /// Sender session.
        session: u64,
        /// Object id (descriptors) or 0.
        object: u32,
        /// The bincode body.
        body: &'a [u8],
    },
}

impl Datagram<'_> {
    /// The session this datagram belongs to.
    pub fn session(&self) -> u64 {
        match self {
            Datagram::Data { header, .. } => header.session,
            Datagram::Control { session, .. } => *session,
        }
    }
}

/// Why a datagram was dropped before reaching the assembler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Reject {
    /// Shorter than its header.
    #[error("datagram too short")]
    TooShort,
    /// Longer than any gapferry datagram.
    #[error("datagram too long")]
    TooLong,
    /// Does not start with the magic bytes: not ours.
    #[error("not a gapferry datagram (bad magic)")]
    BadMagic,
    /// A protocol version this receiver does not speak.
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// An unknown datagram type.
    #[error("unknown datagram type {0}")]
    BadType(u8),
    /// Authentication is on and the datagram carries no tag.
    #[error("datagram carries no authentication tag")]
    MissingTag,
    /// The tag does not verify under any configured key.
    #[error("authentication tag does not verify under any configured key")]
    BadTag,
    /// The tag verifies only under a key the receiver retired.
    #[error("tagged with a retired key")]
    RetiredKey,
    /// A header field is out of range or inconsistent.
    #[error("malformed datagram: {0}")]
    Malformed(&'static str),
    /// A well-formed datagram the assembler refused: over a limit or inconsistent with its block.
    #[error("refused by the assembler: {0}")]
    Refused(&'static str),
    /// A datagram of a sender session the receiver closed before, or older than every
    /// session it remembers: a replay of captured traffic.
    #[error("replayed: {0}")]
    Replayed(&'static str),
}

impl Reject {
    /// Which kind of rejection, without its detail: the key of counters and metrics.
    pub fn reason(&self) -> RejectReason {
        match self {
            Reject::TooShort => RejectReason::TooShort,
            Reject::TooLong => RejectReason::TooLong,
            Reject::BadMagic => RejectReason::BadMagic,
            Reject::BadVersion(_) => RejectReason::BadVersion,
            Reject::BadType(_) => RejectReason::BadType,
            Reject::MissingTag => RejectReason::MissingTag,
            Reject::BadTag => RejectReason::BadTag,
            Reject::RetiredKey => RejectReason::RetiredKey,
            Reject::Replayed(_) => RejectReason::Replayed,
            Reject::Malformed(_) => RejectReason::Malformed,
            Reject::Refused(_) => RejectReason::Refused,
        }
    }

    /// A short stable label for counters and metrics.
    pub fn label(&self) -> &'static str {
        self.reason().as_str()
    }
}

/// The kind of a [`Reject`], without its detail: a counter key that costs no allocation.
/// It hashes and compares as its label, so counters keyed by it can be looked up by label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RejectReason {
    /// See [`Reject::TooShort`].
    TooShort,
    /// See [`Reject::TooLong`].
    TooLong,
    /// See [`Reject::BadMagic`].
    BadMagic,
    /// See [`Reject::BadVersion`].
    BadVersion,
    /// See [`Reject::BadType`].
    BadType,
    /// See [`Reject::MissingTag`].
    MissingTag,
    /// See [`Reject::BadTag`].
    BadTag,
    /// See [`Reject::RetiredKey`].
    RetiredKey,
    /// See [`Reject::Replayed`].
    Replayed,
    /// See [`Reject::Malformed`].
    Malformed,
    /// See [`Reject::Refused`].
    Refused,
}

impl RejectReason {
    /// The stable label of counters and metrics (`bad_tag`, `missing_tag`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::TooShort => "too_short",
            RejectReason::TooLong => "too_long",
            RejectReason::BadMagic => "bad_magic",
            RejectReason::BadVersion => "bad_version",
            RejectReason::BadType => "bad_type",
            RejectReason::MissingTag => "missing_tag",
            RejectReason::BadTag => "bad_tag",
            RejectReason::RetiredKey => "retired_key",
            RejectReason::Replayed => "replayed",
            RejectReason::Malformed => "malformed",
            RejectReason::Refused => "refused",
        }
    }
}

impl std::hash::Hash for RejectReason {
    // As its label, so that `Borrow<str>` holds its contract.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl std::borrow::Borrow<str> for RejectReason {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

/// Validates `buf` (one UDP payload) and borrows its fields.
///
/// With an enabled key ring, the tag is checked before any other field is trusted.
pub fn parse<'a>(buf: &'a [u8], keys: &KeyRing) -> Result<Datagram<'a>, Reject> {
    if buf.len() > MAX_DATAGRAM {
        return Err(Reject::TooLong);
    }
    if buf.len() < COMMON_HEADER_LEN {
        return Err(Reject::TooShort);
    }
    if buf[0..2] != MAGIC {
        return Err(Reject::BadMagic);
    }
    if !(OLDEST_VERSION..=VERSION).contains(&buf[2]) {
        return Err(Reject::BadVersion(buf[2]));
    }
    let flags = buf[4];
    let tagged = flags & FLAG_TAGGED != 0;
    let body_end = if tagged {
        if buf.len() < COMMON_HEADER_LEN + TAG_LEN {
            return Err(Reject::TooShort);
        }
        buf.len() - TAG_LEN
    } else {
        buf.len()
    };
    if keys.is_enabled() {
        if !tagged {
            return Err(Reject::MissingTag);
        }
        let scheme = if flags & FLAG_TAG_SIV != 0 {
            TagScheme::AesGcmSiv
        } else {
            TagScheme::Blake3
        };
        match keys.check(buf[5], scheme, &buf[..body_end], &buf[body_end..]) {
            Verdict::Valid => {}
            Verdict::Retired => return Err(Reject::RetiredKey),
            Verdict::Invalid => return Err(Reject::BadTag),
        }
    }
    // Byte 5 is the key hint of a tagged datagram, zero otherwise.
    let known = if tagged {
        FLAG_TAGGED | FLAG_TAG_SIV
    } else {
        0
    };
    if flags & !known != 0 || buf[6..8] != [0, 0] || (!tagged && buf[5] != 0) {
        return Err(Reject::Malformed("reserved bits set"));
    }
    let msg = &buf[..body_end];
    let session = be_u64(msg, 8);
    let object = be_u32(msg, 16);
    if object > MAX_OBJECT_ID
        && (buf[3] == DatagramType::Data as u8 || buf[3] == DatagramType::Descriptor as u8)
    {
        return Err(Reject::Malformed("object id 2^32-1 is reserved"));
    }
    match buf[3] {
        t if t == DatagramType::Data as u8 => parse_data(msg, session, object),
        t if (DatagramType::Descriptor as u8..=DatagramType::Inventory as u8).contains(&t) => {
            parse_control(msg, t, session, object)
        }
        other => Err(Reject::BadType(other)),
    }
}

/// The data datagram in `msg` (authenticated, tag cut off), after its common header.
fn parse_data(msg: &[u8], session: u64, object: u32) -> Result<Datagram<'_>, Reject> {
    if msg.len() <= DATA_HEADER_LEN {
        return Err(Reject::TooShort);
    }
    let block = be_u32(msg, 20);
    let esi = be_u32(msg, 24);
    let block_len = be_u32(msg, 28);
    let plain_len = be_u32(msg, 32);
    let codec = Codec::from_u8(msg[36]).ok_or(Reject::Malformed("unknown codec"))?;
    if msg[37..40] != [0, 0, 0] {
        return Err(Reject::Malformed("reserved bytes set"));
    }
    if esi > MAX_ESI {
        return Err(Reject::Malformed("symbol id above 2^24"));
    }
    if block_len == 0 || plain_len == 0 {
        return Err(Reject::Malformed("empty block"));
    }
    if codec == Codec::None && block_len != plain_len {
        return Err(Reject::Malformed("uncompressed block with two lengths"));
    }
    Ok(Datagram::Data {
        header: DataHeader {
            session,
            object,
            block,
            esi,
            block_len,
            plain_len,
            codec,
        },
        symbol: &msg[DATA_HEADER_LEN..],
    })
}

/// The control datagram of type byte `t` in `msg` (authenticated, tag cut off).
fn parse_control(msg: &[u8], t: u8, session: u64, object: u32) -> Result<Datagram<'_>, Reject> {
    if msg.len() < CONTROL_HEADER_LEN {
        return Err(Reject::TooShort);
    }
    let len = u16::from_be_bytes([msg[20], msg[21]]) as usize;
    if msg.len() != CONTROL_HEADER_LEN + len {
        return Err(Reject::Malformed("control body length mismatch"));
    }
    let kind = match t {
        2 => DatagramType::Descriptor,
        3 => DatagramType::Heartbeat,
        _ => DatagramType::Inventory,
    };
    Ok(Datagram::Control {
        kind,
        session,
        object,
        body: &msg[CONTROL_HEADER_LEN..],
    })
}

/// Splits a buffer that holds several data datagrams back to back, as a UDP GSO batch
/// does before segmentation (what a capture taken on the sending host shows), into its
/// datagrams; anything else comes back whole.
///
/// Every datagram of a batch but the last has the same size `S`, and each starts with
/// the same 16 bytes (magic, version, type, flags, session): the smallest `S` at which
/// all of them line up is the segment size.
pub fn split_coalesced(buf: &[u8]) -> Vec<&[u8]> {
    const PREFIX: usize = 16;
    let whole = vec![buf];
    if buf.len() < 2 * CONTROL_HEADER_LEN || buf[0..2] != MAGIC {
        return whole;
    }
    if buf[3] != DatagramType::Data as u8 {
        // Control datagrams state their length: a batch of copies splits exactly.
        let tag = if buf[4] & FLAG_TAGGED != 0 {
            TAG_LEN
        } else {
            0
        };
        let size = CONTROL_HEADER_LEN + u16::from_be_bytes([buf[20], buf[21]]) as usize + tag;
        let prefix = &buf[..PREFIX];
        let aligned = (0..buf.len())
            .step_by(size)
            .all(|at| buf[at..].starts_with(prefix));
        return if size < buf.len() && aligned {
            buf.chunks(size).collect()
        } else {
            whole
        };
    }
    if buf.len() < 2 * (DATA_HEADER_LEN + 1) {
        return whole;
    }
    let prefix = &buf[..PREFIX];
    let aligned = |s: usize| {
        (s..buf.len())
            .step_by(s)
            .all(|at| buf.len() - at > DATA_HEADER_LEN && buf[at..].starts_with(prefix))
    };
    let Some(segment) =
        (DATA_HEADER_LEN + 1..=buf.len() / 2).find(|&s| buf[s..].starts_with(prefix) && aligned(s))
    else {
        return whole;
    };
    buf.chunks(segment).collect()
}

/// Writes the common header into `out` (which it clears first).
fn put_common(out: &mut Vec<u8>, kind: DatagramType, key: Option<&Key>, session: u64, object: u32) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.push(kind as u8);
    out.push(if key.is_some() {
        tag_flags(TagScheme::CURRENT)
    } else {
        0
    });
    out.extend_from_slice(&[key.map_or(0, Key::hint), 0, 0]);
    out.extend_from_slice(&session.to_be_bytes());
    out.extend_from_slice(&object.to_be_bytes());
}

/// The flag bits of a datagram tagged under `scheme`.
pub fn tag_flags(scheme: TagScheme) -> u8 {
    match scheme {
        TagScheme::Blake3 => FLAG_TAGGED,
        TagScheme::AesGcmSiv => FLAG_TAGGED | FLAG_TAG_SIV,
    }
}

fn finish(out: &mut Vec<u8>, key: Option<&Key>) {
    if let Some(key) = key {
        let tag = key.tag(TagScheme::CURRENT, out);
        out.extend_from_slice(&tag);
    }
}

/// Encodes a data datagram into `out`, reusing its allocation.
pub fn encode_data(out: &mut Vec<u8>, header: &DataHeader, symbol: &[u8], key: Option<&Key>) {
    put_common(out, DatagramType::Data, key, header.session, header.object);
    out.extend_from_slice(&header.block.to_be_bytes());
    out.extend_from_slice(&header.esi.to_be_bytes());
    out.extend_from_slice(&header.block_len.to_be_bytes());
    out.extend_from_slice(&header.plain_len.to_be_bytes());
    out.push(header.codec as u8);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(symbol);
    finish(out, key);
}

/// Encodes a control datagram carrying `body` into `out`.
///
/// Panics if `body` exceeds 65 535 bytes; callers bound their bodies far below.
pub fn encode_control(
    out: &mut Vec<u8>,
    kind: DatagramType,
    session: u64,
    object: u32,
    body: &[u8],
    key: Option<&Key>,
) {
    assert!(kind != DatagramType::Data);
    let len = u16::try_from(body.len()).expect("control body above 64 KiB");
    put_common(out, kind, key, session, object);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(body);
    finish(out, key);
}

#[cfg(test)]
mod tests;
