//! Pre-shared keys and the tag that authenticates each datagram: AES-256-GCM-SIV used as a
//! MAC (the current scheme), or keyed blake3 (the first scheme, still verified so captures
//! and senders from before it keep working).
//!
//! The SIV tag is what RFC 8452's AES-256-GCM-SIV gives for an empty plaintext with the
//! datagram as associated data, under a fixed nonce and a key derived from the pre-shared
//! key. Its security does not rest on the nonce being unique: GCM-SIV's tag is
//! POLYVAL (a universal hash) encrypted with AES, a MAC on its own; a repeated nonce only
//! reveals that two messages are equal, and these messages are public anyway. With its
//! subkeys derived once per key (`siv.rs`) it costs a fifth of keyed blake3 on a 1.4 KB
//! datagram where AES and carry-less multiply instructions exist (bench/README.md,
//! "Candidate datagram tags").

use crate::siv::SivTagger;
use thiserror::Error;

/// Bytes of tag appended to an authenticated datagram.
pub const TAG_LEN: usize = 16;
/// Domain separation for keyed-blake3 tags, so a key used elsewhere cannot produce ours.
const TAG_CONTEXT: &[u8] = b"gapferry datagram tag v1";
/// Derives the AES-256-GCM-SIV key from the pre-shared key, apart from every other use.
const SIV_KEY_CONTEXT: &str = "gapferry datagram tag v2 AES-256-GCM-SIV";
/// The fixed GCM-SIV nonce (see the module's notes: the tag does not need a unique one).
const SIV_NONCE: [u8; 12] = [0; 12];

/// How a datagram's tag is computed; the flags of the datagram say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagScheme {
    /// The first 16 bytes of `blake3::keyed_hash(key, "gapferry datagram tag v1" || datagram)`.
    Blake3,
    /// AES-256-GCM-SIV over the datagram as associated data, empty plaintext.
    AesGcmSiv,
}

impl TagScheme {
    /// The scheme senders use.
    pub const CURRENT: TagScheme = TagScheme::AesGcmSiv;
}
/// Domain separation for a key's public id.
const ID_CONTEXT: &[u8] = b"gapferry key id";

/// A 32-byte pre-shared key.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; 32],
    /// The first byte of the key's public id: carried in every tagged datagram so that a
    /// receiver holding several keys knows which one to try, and names it.
    hint: u8,
    /// The AES-256-GCM-SIV tagger under the derived key, its subkeys derived once.
    siv: SivTagger,
}

impl PartialEq for Key {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Key {}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(id {})", self.id())
    }
}

/// Why a key file's content was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    /// The content is neither 32 raw bytes nor 64 hex digits.
    #[error("a key file must hold 64 hex digits (as `gapferry-send keygen` writes) or 32 raw bytes; this one holds {0} bytes")]
    BadLength(usize),
    /// The content has 64 characters that are not all hex digits.
    #[error("the key file holds characters that are not hex digits")]
    BadHex,
}

impl Key {
    /// Wraps 32 raw bytes as a key.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let hint = blake3::keyed_hash(&bytes, ID_CONTEXT).as_bytes()[0];
        let siv_key = blake3::derive_key(SIV_KEY_CONTEXT, &bytes);
        let siv = SivTagger::new(&siv_key, &SIV_NONCE);
        Key { bytes, hint, siv }
    }

    /// Parses a key file's content: 64 hex digits (surrounding whitespace ignored) or 32 raw bytes.
    pub fn parse(content: &[u8]) -> Result<Self, KeyError> {
        let trimmed = trim_ascii(content);
        if trimmed.len() == 64 {
            let mut out = [0u8; 32];
            for (i, pair) in trimmed.chunks(2).enumerate() {
                let hi = hex_value(pair[0]).ok_or(KeyError::BadHex)?;
                let lo = hex_value(pair[1]).ok_or(KeyError::BadHex)?;
                out[i] = hi << 4 | lo;
            }
            return Ok(Key::from_bytes(out));
        }
        if content.len() == 32 {
            let mut out = [0u8; 32];
            out.copy_from_slice(content);
            return Ok(Key::from_bytes(out));
        }
        Err(KeyError::BadLength(content.len()))
    }

    /// The key as 64 lower-case hex digits, the key file format.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A short public identifier of the key, safe to log (not the key itself).
    pub fn id(&self) -> String {
        let h = blake3::keyed_hash(&self.bytes, ID_CONTEXT);
        h.to_hex()[..8].to_string()
    }

    /// The key's hint byte: the first byte of its id (the first two hex digits of
    /// [`Self::id`]), carried in every datagram it tags.
    pub fn hint(&self) -> u8 {
        self.hint
    }

    /// Computes the tag of `message` under `scheme`.
    pub fn tag(&self, scheme: TagScheme, message: &[u8]) -> [u8; TAG_LEN] {
        let mut out = [0u8; TAG_LEN];
        match scheme {
            TagScheme::Blake3 => {
                let mut hasher = blake3::Hasher::new_keyed(&self.bytes);
                hasher.update(TAG_CONTEXT);
                hasher.update(message);
                out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
            }
            TagScheme::AesGcmSiv => out = self.siv.tag(message),
        }
        out
    }

    /// Checks `tag` against `message` under `scheme`, in constant time.
    pub fn verify(&self, scheme: TagScheme, message: &[u8], tag: &[u8]) -> bool {
        let expected = self.tag(scheme, message);
        tag.len() == TAG_LEN
            && expected
                .iter()
                .zip(tag)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |p| p + 1);
    &bytes[start..end]
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The keys a receiver accepts (empty means authentication is off), and those it has
/// retired: a datagram tagged with a retired key is refused as such, so an operator sees
/// which sender still uses it.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<Key>,
    retired: Vec<Key>,
}

/// What a ring says of a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Valid under an accepted key.
    Valid,
    /// Valid under a retired key only.
    Retired,
    /// Valid under no key the ring holds.
    Invalid,
}

impl KeyRing {
    /// A ring holding `keys`; any of them makes a tag valid (for key rollover).
    pub fn new(keys: Vec<Key>) -> Self {
        KeyRing {
            keys,
            retired: Vec::new(),
        }
    }

    /// The ring with `retired` keys whose tags are refused as retired.
    pub fn with_retired(mut self, retired: Vec<Key>) -> Self {
        self.retired = retired;
        self
    }

    /// Whether datagrams must carry a valid tag.
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }

    /// The accepted keys.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Whether `tag` is valid for `message` under `scheme` and any key of the ring.
    pub fn verify(&self, scheme: TagScheme, message: &[u8], tag: &[u8]) -> bool {
        self.keys.iter().any(|k| k.verify(scheme, message, tag))
    }

    /// Checks `tag` against `message` under `scheme`, trying first the keys whose hint is
    /// `hint`.
    pub fn check(&self, hint: u8, scheme: TagScheme, message: &[u8], tag: &[u8]) -> Verdict {
        let (named, others): (Vec<&Key>, Vec<&Key>) =
            self.keys.iter().partition(|k| k.hint == hint);
        let valid = |k: &&Key| k.verify(scheme, message, tag);
        if named.iter().chain(&others).any(valid) {
            Verdict::Valid
        } else if self.retired.iter().any(|k| valid(&k)) {
            Verdict::Retired
        } else {
            Verdict::Invalid
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_raw_bytes() {
        let key = Key::from_bytes([7u8; 32]);
        let parsed = Key::parse(format!("{}\n", key.to_hex()).as_bytes()).unwrap();
        assert_eq!(parsed, key);
        assert_eq!(Key::parse(&[7u8; 32]).unwrap(), key);
        assert_eq!(Key::parse(b"abc"), Err(KeyError::BadLength(3)));
        assert_eq!(Key::parse(&[b'z'; 64]), Err(KeyError::BadHex));
    }

    #[test]
    fn tags_depend_on_key_message_and_scheme() {
        let a = Key::from_bytes([1u8; 32]);
        let b = Key::from_bytes([2u8; 32]);
        for (scheme, other) in [
            (TagScheme::Blake3, TagScheme::AesGcmSiv),
            (TagScheme::AesGcmSiv, TagScheme::Blake3),
        ] {
            let tag = a.tag(scheme, b"hello");
            assert!(a.verify(scheme, b"hello", &tag));
            assert!(!a.verify(scheme, b"hellp", &tag));
            assert!(!a.verify(scheme, b"hello\0", &tag));
            assert!(!b.verify(scheme, b"hello", &tag));
            assert!(!a.verify(scheme, b"hello", &tag[..8]));
            assert!(
                !a.verify(other, b"hello", &tag),
                "{scheme:?} tag taken as {other:?}"
            );
            let ring = KeyRing::new(vec![b.clone(), a.clone()]);
            assert!(ring.verify(scheme, b"hello", &tag));
        }
        assert_ne!(
            a.tag(TagScheme::AesGcmSiv, b""),
            b.tag(TagScheme::AesGcmSiv, b"")
        );
    }
}
