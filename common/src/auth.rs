//! Pre-shared keys and the keyed-blake3 tag that authenticates each datagram.

use thiserror::Error;

/// Bytes of tag appended to an authenticated datagram.
pub const TAG_LEN: usize = 16;
/// Domain separation for tags, so a key used elsewhere cannot produce ours.
const TAG_CONTEXT: &[u8] = b"gapferry datagram tag v1";
/// Domain separation for a key's public id.
const ID_CONTEXT: &[u8] = b"gapferry key id";

/// A 32-byte pre-shared key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    bytes: [u8; 32],
    /// The first byte of the key's public id: carried in every tagged datagram so that a
    /// receiver holding several keys knows which one to try, and names it.
    hint: u8,
}

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
        Key { bytes, hint }
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

    /// Computes the tag of `message`.
    pub fn tag(&self, message: &[u8]) -> [u8; TAG_LEN] {
        let mut hasher = blake3::Hasher::new_keyed(&self.bytes);
        hasher.update(TAG_CONTEXT);
        hasher.update(message);
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(&hasher.finalize().as_bytes()[..TAG_LEN]);
        out
    }

    /// Checks `tag` against `message` in constant time.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        let expected = self.tag(message);
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

    /// Whether `tag` is valid for `message` under any key of the ring.
    pub fn verify(&self, message: &[u8], tag: &[u8]) -> bool {
        self.keys.iter().any(|k| k.verify(message, tag))
    }

    /// Checks `tag` against `message`, trying first the keys whose hint is `hint`.
    pub fn check(&self, hint: u8, message: &[u8], tag: &[u8]) -> Verdict {
        let (named, others): (Vec<&Key>, Vec<&Key>) =
            self.keys.iter().partition(|k| k.hint == hint);
        if named.iter().chain(&others).any(|k| k.verify(message, tag)) {
            Verdict::Valid
        } else if self.retired.iter().any(|k| k.verify(message, tag)) {
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
    fn tags_depend_on_key_and_message() {
        let a = Key::from_bytes([1u8; 32]);
        let b = Key::from_bytes([2u8; 32]);
        let tag = a.tag(b"hello");
        assert!(a.verify(b"hello", &tag));
        assert!(!a.verify(b"hellp", &tag));
        assert!(!b.verify(b"hello", &tag));
        assert!(!a.verify(b"hello", &tag[..8]));
        let ring = KeyRing::new(vec![b.clone(), a.clone()]);
        assert!(ring.verify(b"hello", &tag));
    }
}
