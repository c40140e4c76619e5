//! Control messages carried in descriptor and heartbeat datagrams, with bounded decoding.

use crate::kind::ObjectKind;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest control body accepted or produced, in bytes.
pub const MAX_CONTROL_BODY: usize = 2048;

/// Everything the receiver needs to know about an object besides its blocks.
///
/// Sent repeatedly through the object so the loss of some copies costs nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectDescriptor {
    /// What the object is; decides where it is delivered.
    pub kind: ObjectKind,
    /// Safe relative name (see [`crate::name::validate`]).
    pub name: String,
    /// Size of the original bytes.
    pub size: u64,
    /// blake3 of the original bytes; [`BLAKE3_LATER`] in the copies a sender writes
    /// before it has read the whole object (see [`ObjectDescriptor::known_blake3`]).
    pub blake3: [u8; 32],
    /// Original bytes per block; every block but the last holds exactly this many.
    pub block_plain_size: u32,
    /// Modification time of the source, seconds since the Unix epoch (0 if unknown).
    pub mtime: i64,
    /// Which transmission pass this copy was sent in (1-based).
    pub pass: u8,
    /// How many passes the sender makes over this object.
    pub passes: u8,
}

/// The `blake3` of a descriptor copy sent before the sender knows the object's hash
/// (wire version 2): a later copy of the same object carries it. No content hashes to it.
pub const BLAKE3_LATER: [u8; 32] = [0; 32];

impl ObjectDescriptor {
    /// The object's blake3, or `None` in a copy sent before the sender knew it.
    pub fn known_blake3(&self) -> Option<[u8; 32]> {
        (self.blake3 != BLAKE3_LATER).then_some(self.blake3)
    }

    /// Number of blocks the object is cut into.
    pub fn block_count(&self) -> u64 {
        if self.block_plain_size == 0 {
            0
        } else {
            self.size.div_ceil(self.block_plain_size as u64)
        }
    }

    /// Original bytes held by block `index`.
    pub fn block_plain_len(&self, index: u32) -> u64 {
        let start = index as u64 * self.block_plain_size as u64;
        (self.size.saturating_sub(start)).min(self.block_plain_size as u64)
    }
}

/// The sender's periodic sign of life, with its counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Heartbeat sequence number within the session.
    pub seq: u64,
    /// Milliseconds since the session started.
    pub uptime_ms: u64,
    /// Datagrams sent so far in the session.
    pub datagrams_sent: u64,
    /// UDP payload bytes sent so far.
    pub bytes_sent: u64,
    /// The next object id the sender will assign: ids below it exist.
    pub next_object: u32,
    /// Every object id below this has had its last pass sent.
    pub done_below: u32,
    /// The configured rate in bits per second.
    pub rate_bps: u64,
    /// Set in the heartbeats sent as the session ends.
    pub ending: bool,
}

/// One object named in an [`Inventory`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// Object id.
    pub object: u32,
    /// Its kind.
    pub kind: ObjectKind,
    /// Its relative name (may be cut short to fit the datagram).
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// The sender's recent objects, sent periodically so the receiver can name what it lost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    /// The most recent objects, oldest first.
    #[serde(deserialize_with = "cautious_vec")]
    pub entries: Vec<InventoryEntry>,
}

/// Deserializes a sequence without trusting its declared length for preallocation: serde's
/// own `Vec` reserves up to 1 MiB from the length field alone, before any element is read.
fn cautious_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    struct Cautious<T>(std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Cautious<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
            while let Some(x) = seq.next_element()? {
                v.push(x);
            }
            Ok(v)
        }
    }
    d.deserialize_seq(Cautious(std::marker::PhantomData))
}

impl Inventory {
    /// Keeps the newest `entries` whose encoding fits a control body, cutting long names.
    pub fn fitting(mut entries: Vec<InventoryEntry>) -> Inventory {
        for e in &mut entries {
            if e.name.len() > 120 {
                let mut cut = 120;
                while !e.name.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.name.truncate(cut);
            }
        }
        let mut inv = Inventory { entries };
        while !inv.entries.is_empty() && encode(&inv).is_err() {
            inv.entries.remove(0);
        }
        inv
    }
}

/// Why a control body could not be decoded.
#[derive(Debug, Error)]
pub enum ControlError {
    /// The body exceeds [`MAX_CONTROL_BODY`].
    #[error("control body of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The body does not decode as the expected message.
    #[error("control body does not decode: {0}")]
    Decode(String),
    /// The body decodes but leaves trailing bytes.
    #[error("control body has trailing bytes")]
    Trailing,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_big_endian()
        .with_fixed_int_encoding()
        .with_limit::<MAX_CONTROL_BODY>()
}

/// Encodes a control message body.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, ControlError> {
    let body = bincode::serde::encode_to_vec(msg, config())
        .map_err(|e| ControlError::Decode(e.to_string()))?;
    if body.len() > MAX_CONTROL_BODY {
        return Err(ControlError::TooLarge(body.len()));
    }
    Ok(body)
}

/// Decodes a control message body, refusing oversized or trailing input.
pub fn decode<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ControlError> {
    if body.len() > MAX_CONTROL_BODY {
        return Err(ControlError::TooLarge(body.len()));
    }
    let (msg, used) = bincode::serde::decode_from_slice(body, config())
        .map_err(|e| ControlError::Decode(e.to_string()))?;
    if used != body.len() {
        return Err(ControlError::Trailing);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn descriptor() -> ObjectDescriptor {
        ObjectDescriptor {
            kind: ObjectKind::File,
            name: "dir/a.bin".into(),
            size: 2_500_001,
            blake3: [3; 32],
            block_plain_size: 1_000_000,
            mtime: 1_700_000_000,
            pass: 1,
            passes: 2,
        }
    }

    #[test]
    fn round_trip_and_block_arithmetic() {
        let d = descriptor();
        let body = encode(&d).unwrap();
        assert_eq!(decode::<ObjectDescriptor>(&body).unwrap(), d);
        assert_eq!(d.block_count(), 3);
        assert_eq!(d.block_plain_len(0), 1_000_000);
        assert_eq!(d.block_plain_len(2), 500_001);
        assert_eq!(d.block_plain_len(3), 0);
        let empty = ObjectDescriptor { size: 0, ..d };
        assert_eq!(empty.block_count(), 0);
    }

    #[test]
    fn inventories_fit_a_control_body() {
        let entries: Vec<InventoryEntry> = (0..100)
            .map(|i| InventoryEntry {
                object: i,
                kind: ObjectKind::File,
                name: "n".repeat(300),
                size: 1,
            })
            .collect();
        let inv = Inventory::fitting(entries);
        assert!(!inv.entries.is_empty() && inv.entries.len() < 100);
        assert_eq!(
            inv.entries.last().unwrap().object,
            99,
            "the newest are kept"
        );
        let body = encode(&inv).unwrap();
        assert!(body.len() <= MAX_CONTROL_BODY);
        assert_eq!(decode::<Inventory>(&body).unwrap(), inv);
    }

    #[test]
    fn refuses_garbage_trailing_and_huge_lengths() {
        let mut body = encode(&descriptor()).unwrap();
        body.push(0);
        assert!(matches!(
            decode::<ObjectDescriptor>(&body),
            Err(ControlError::Trailing)
        ));
        // A string length claiming 4 GiB must not allocate it.
        let mut lie = vec![0u8; 4];
        lie.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode::<ObjectDescriptor>(&lie).is_err());
        assert!(decode::<Heartbeat>(&[1, 2, 3]).is_err());
        assert!(matches!(
            decode::<Heartbeat>(&vec![0; MAX_CONTROL_BODY + 1]),
            Err(ControlError::TooLarge(_))
        ));
    }
}
