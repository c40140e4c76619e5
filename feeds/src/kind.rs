//! Low side: what a file is, decided from its content, not only its name, plus splitting
//! a multi-event MISP export into one `{"Event": {...}}` document per event.
//!
//! Rules of [`detect`]:
//! - a directory holding `manifest.json` is a MISP feed directory (its `<uuid>.json` files
//!   are the events, see [`feed_event_files`]); any other directory is refused;
//! - a gzip or xz stream whose tar listing has `metadata.yaml` at the top level is an LXD
//!   unified image; the listing is streamed until `metadata.yaml` shows up or a bound
//!   ([`DetectLimits`]) is hit, and nothing is kept in memory;
//! - JSON is streamed, key by key, until it decides: an object with an `Event` object, a
//!   MISP REST export `{"response": [{"Event": ...}]}`, a list of `{"Event": ...}` or a bare
//!   event (`info`, `uuid` and `Orgc` at the top) is MISP; an object with
//!   `"type": "bundle"` is STIX; values are skipped, not built, so a multi-MB JSON costs
//!   one pass at most and usually a few bytes;
//! - `X.tar.gz.sig` (or `.tar.xz.sig`) next to an existing `X.tar.gz` is that image's
//!   detached signature and travels with it;
//! - anything else is a plain file.

use crate::fsutil::is_uuid;
use crate::misp_event::{locate_events, raw_event_uuid, wrap_event, EventError};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::cell::Cell;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

/// The kinds an object can have; the names match `gapferry_common::ObjectKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Any other file.
    File,
    /// MISP event(s).
    Misp,
    /// A STIX 2.1 bundle.
    Stix,
    /// An LXD unified image tarball.
    Image,
    /// A detached signature of an image.
    ImageSignature,
}

impl Kind {
    /// The lower-case name used on the command line and in records.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Misp => "misp",
            Kind::Stix => "stix",
            Kind::Image => "image",
            Kind::ImageSignature => "image-signature",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which MISP shape a document or directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MispShape {
    /// `{"Event": {...}}`.
    Event,
    /// An event object without the `Event` wrapper.
    BareEvent,
    /// A REST search export `{"response": [{"Event": ...}, ...]}`.
    RestSearch,
    /// A JSON list of `{"Event": ...}`.
    EventList,
    /// A MISP feed directory (`manifest.json` and `<uuid>.json` files).
    FeedDirectory,
}

/// Compression of an image tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`.tar.gz`).
    Gzip,
    /// xz (`.tar.xz`).
    Xz,
}

impl Compression {
    /// The file-name suffix for this compression.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::Gzip => ".tar.gz",
            Compression::Xz => ".tar.xz",
        }
    }

    /// Recognises gzip or xz from the first bytes of a file.
    pub fn sniff(head: &[u8]) -> Option<Compression> {
        if head.starts_with(&[0x1f, 0x8b]) {
            Some(Compression::Gzip)
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Some(Compression::Xz)
        } else {
            None
        }
    }
}

/// What [`detect`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    /// MISP content of the given shape.
    Misp(MispShape),
    /// A STIX bundle.
    Stix,
    /// An LXD unified image tarball, with its detached signature when one lies next to it.
    Image {
        /// gzip or xz.
        compression: Compression,
        /// `X.tar.gz.sig` next to `X.tar.gz`, if present.
        signature: Option<PathBuf>,
    },
    /// The detached signature of the image next to it (send it with that image).
    Signature {
        /// The image it belongs to.
        image: PathBuf,
    },
    /// Anything else.
    File,
}

impl Detected {
    /// The object kind this detection maps to.
    pub fn kind(&self) -> Kind {
        match self {
            Detected::Misp(_) => Kind::Misp,
            Detected::Stix => Kind::Stix,
            Detected::Image { .. } => Kind::Image,
            Detected::Signature { .. } => Kind::ImageSignature,
            Detected::File => Kind::File,
        }
    }
}

/// Bounds on what detection reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectLimits {
    /// Most JSON bytes scanned before giving up (then: `file`).
    pub max_json_scan: u64,
    /// Most tar entries listed looking for `metadata.yaml`.
    pub max_tar_entries: usize,
    /// Most decompressed tar bytes streamed looking for `metadata.yaml`.
    pub max_tar_bytes: u64,
}

impl Default for DetectLimits {
    fn default() -> Self {
        DetectLimits {
            max_json_scan: 256 << 20,
            max_tar_entries: 10_000,
            max_tar_bytes: 512 << 20,
        }
    }
}

/// Why detection could not run.
#[derive(Debug, Error)]
pub enum DetectError {
    /// The path could not be read.
    #[error("cannot read {}: {source}; check that it exists and is readable by the sender", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A directory that is not a MISP feed.
    #[error("{} is a directory without manifest.json, not a MISP feed: send its files one by one", .0.display())]
    NotAFeedDirectory(PathBuf),
}

/// Detects the kind of `path` with the default [`DetectLimits`].
pub fn detect(path: &Path) -> Result<Detected, DetectError> {
    detect_with(path, &DetectLimits::default())
}

/// Detects the kind of `path` within `limits`.
pub fn detect_with(path: &Path, limits: &DetectLimits) -> Result<Detected, DetectError> {
    let io_err = |source| DetectError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::metadata(path).map_err(io_err)?;
    if meta.is_dir() {
        return if fs::metadata(path.join("manifest.json")).is_ok_and(|m| m.is_file()) {
            Ok(Detected::Misp(MispShape::FeedDirectory))
        } else {
            Err(DetectError::NotAFeedDirectory(path.to_path_buf()))
        };
    }
    if let Some(image) = signature_target(path) {
        return Ok(Detected::Signature { image });
    }
    let file = File::open(path).map_err(io_err)?;
    let detected = detect_reader(file, limits).map_err(io_err)?;
    Ok(match detected {
        Detected::Image { compression, .. } => Detected::Image {
            compression,
            signature: image_signature(path),
        },
        other => other,
    })
}

/// Detects the kind of in-memory content (no signature or directory rules).
pub fn detect_bytes(bytes: &[u8]) -> Detected {
    detect_reader(Cursor::new(bytes), &DetectLimits::default()).unwrap_or(Detected::File)
}

fn detect_reader<R: Read>(mut r: R, limits: &DetectLimits) -> io::Result<Detected> {
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let head = &head[..n];
    let rest = Cursor::new(head.to_vec()).chain(r);
    if let Some(compression) = Compression::sniff(head) {
        let reader = BufReader::with_capacity(1 << 16, rest);
        let found = match compression {
            Compression::Gzip => {
                tar_has_metadata(flate2::read::MultiGzDecoder::new(reader), limits)
            }
            Compression::Xz => tar_has_metadata(liblzma::read::XzDecoder::new(reader), limits),
        };
        return Ok(if found {
            Detected::Image {
                compression,
                signature: None,
            }
        } else {
            Detected::File
        });
    }
    let skip = if head.starts_with(b"\xef\xbb\xbf") {
        3
    } else {
        0
    };
    let first = head[skip..].iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'{') | Some(b'[')) {
        return Ok(Detected::File);
    }
    let mut rest = rest;
    io::copy(&mut (&mut rest).take(skip as u64), &mut io::sink())?;
    let reader = BufReader::with_capacity(1 << 16, rest.take(limits.max_json_scan));
    Ok(match json_verdict(reader) {
        Some(Verdict::Event) => Detected::Misp(MispShape::Event),
        Some(Verdict::Bare) => Detected::Misp(MispShape::BareEvent),
        Some(Verdict::Rest) => Detected::Misp(MispShape::RestSearch),
        Some(Verdict::List) => Detected::Misp(MispShape::EventList),
        Some(Verdict::Stix) => Detected::Stix,
        None => Detected::File,
    })
}

/// Most decompressed bytes read looking for an image's `metadata.yaml`, and most entries.
const BUILD_SCAN_BYTES: u64 = 64 << 20;
const BUILD_SCAN_ENTRIES: usize = 64;
/// Largest `metadata.yaml` read.
const METADATA_MAX: u64 = 64 << 10;

/// The `creation_date` (Unix seconds) an LXD image's `metadata.yaml` declares: when the
/// image was built. `None` when the tarball holds none near its start (bounded read).
pub fn image_creation_date(path: &Path) -> Option<i64> {
    let mut f = fs::File::open(path).ok()?;
    let mut head = [0u8; 6];
    let n = f.read(&mut head).ok()?;
    let compression = Compression::sniff(&head[..n])?;
    let reader = io::Cursor::new(head[..n].to_vec()).chain(f);
    match compression {
        Compression::Gzip => creation_date(flate2::read::MultiGzDecoder::new(reader)),
        Compression::Xz => creation_date(liblzma::read::XzDecoder::new(reader)),
    }
}

fn creation_date<R: Read>(r: R) -> Option<i64> {
    let mut archive = tar::Archive::new(r.take(BUILD_SCAN_BYTES));
    for entry in archive.entries().ok()?.take(BUILD_SCAN_ENTRIES) {
        let entry = entry.ok()?;
        let top_metadata = entry.path().ok().is_some_and(|p| {
            let mut parts = p.components().filter(|c| !matches!(c, Component::CurDir));
            matches!(
                (parts.next(), parts.next()),
                (Some(Component::Normal(name)), None) if name == "metadata.yaml"
            )
        });
        if !top_metadata || !entry.header().entry_type().is_file() {
            continue;
        }
        let mut text = String::new();
        entry.take(METADATA_MAX).read_to_string(&mut text).ok()?;
        return text.lines().find_map(|l| {
            l.strip_prefix("creation_date:")
                .and_then(|v| v.trim().trim_matches(['"', '\'']).parse().ok())
        });
    }
    None
}

/// Streams a tar listing and reports whether `metadata.yaml` is a top-level file.
pub(crate) fn tar_has_metadata<R: Read>(r: R, limits: &DetectLimits) -> bool {
    let mut archive = tar::Archive::new(r.take(limits.max_tar_bytes));
    let Ok(entries) = archive.entries() else {
        return false;
    };
    for (i, entry) in entries.enumerate() {
        if i >= limits.max_tar_entries {
            return false;
        }
        let Ok(entry) = entry else { return false };
        let Ok(path) = entry.path() else { continue };
        let mut parts = path
            .components()
            .filter(|c| !matches!(c, Component::CurDir));
        let is_top_metadata = matches!(
            (parts.next(), parts.next()),
            (Some(Component::Normal(name)), None) if name == "metadata.yaml"
        );
        if is_top_metadata && entry.header().entry_type().is_file() {
            return true;
        }
    }
    false
}

/// `X.tar.gz.sig` next to the image `X.tar.gz`, when it is a regular file.
pub fn image_signature(image: &Path) -> Option<PathBuf> {
    let mut name = image.file_name()?.to_os_string();
    name.push(".sig");
    let sig = image.with_file_name(name);
    fs::symlink_metadata(&sig)
        .is_ok_and(|m| m.is_file())
        .then_some(sig)
}

/// For `X.tar.gz.sig` (or `.tar.xz.sig`, `.tgz.sig`, `.txz.sig`), the image `X.tar.gz`
/// next to it, when that exists.
pub fn signature_target(sig: &Path) -> Option<PathBuf> {
    let name = sig.file_name()?.to_str()?;
    let image_name = name.strip_suffix(".sig")?;
    if ![".tar.gz", ".tar.xz", ".tgz", ".txz"]
        .iter()
        .any(|s| image_name.ends_with(s) && image_name.len() > s.len())
    {
        return None;
    }
    let image = sig.with_file_name(image_name);
    fs::metadata(&image)
        .is_ok_and(|m| m.is_file())
        .then_some(image)
}

/// One MISP event cut out of a larger document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MispEventDoc {
    /// The event uuid.
    pub uuid: String,
    /// `{"Event": {...}}`, the event's own bytes kept as they were.
    pub json: Vec<u8>,
}

/// Splits a single event, a REST search export or a list of events into one
/// `{"Event": {...}}` document per event. Each event's bytes are kept as written; an event
/// without a canonical uuid fails the whole split with its position.
pub fn split_misp(bytes: &[u8]) -> Result<Vec<MispEventDoc>, EventError> {
    let (events, verbatim) = locate_events(bytes)?;
    let single = events.len() == 1;
    events
        .into_iter()
        .enumerate()
        .map(|(i, ev)| {
            let uuid = raw_event_uuid(ev).map_err(|reason| EventError::Malformed {
                uuid: "(no uuid)".into(),
                reason: format!("event {i} of the document: {reason}"),
            })?;
            let json = if single && verbatim {
                bytes.to_vec()
            } else {
                wrap_event(ev)
            };
            Ok(MispEventDoc { uuid, json })
        })
        .collect()
}

/// The `<uuid>.json` event files of a MISP feed directory, sorted; `manifest.json`,
/// `hashes.csv` and anything else are left out (the high side rebuilds them).
pub fn feed_event_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        if is_uuid(stem) && entry.file_type()?.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

// ---- streaming JSON probe -------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Event,
    Bare,
    Rest,
    List,
    Stix,
}

type Decided = Cell<Option<Verdict>>;

fn decide<E: de::Error>(cell: &Decided, v: Verdict) -> E {
    cell.set(Some(v));
    E::custom("decided")
}

fn json_verdict<R: Read>(reader: R) -> Option<Verdict> {
    let cell = Decided::new(None);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let result = Top { d: &cell }.deserialize(&mut de);
    if let Some(v) = cell.get() {
        return Some(v);
    }
    let _ = result;
    None
}

/// Drains whatever value comes and reports nothing.
fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

macro_rules! ignore_scalars {
    ($value:ty, $default:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok($default)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$value, E> {
            Ok($default)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$value, E> {
            Ok($default)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$value, E> {
            Ok($default)
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok($default)
        }
    };
}

/// The top-level value.
struct Top<'a> {
    d: &'a Decided,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!((), ());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut info, mut orgc, mut uuid) = (false, false, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Event" => map.next_value_seed(DecideIfObject {
                    d: self.d,
                    verdict: Verdict::Event,
                })?,
                "response" => map.next_value_seed(FirstElement {
                    d: self.d,
                    verdict: Verdict::Rest,
                })?,
                "type" => {
                    if map.next_value_seed(IsBundle)? {
                        return Err(decide(self.d, Verdict::Stix));
                    }
                }
                other => {
                    match other {
                        "info" => info = true,
                        "Orgc" => orgc = true,
                        "uuid" => uuid = true,
                        _ => {}
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if info && orgc && uuid {
            return Err(decide(self.d, Verdict::Bare));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(()) = seq.next_element_seed(ElementHasEvent {
            d: self.d,
            verdict: Verdict::List,
        })? {
            drain_seq(seq)?;
        }
        Ok(())
    }
}

/// Decides `verdict` when the value is an object.
struct DecideIfObject<'a> {
    d: &'a Decided,
    verdict: Verdict,
}

impl<'de> DeserializeSeed<'de> for DecideIfObject<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DecideIfObject<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!((), ());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(decide(self.d, self.verdict))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)
    }
}

/// Looks at the first element of a list for an event.
struct FirstElement<'a> {
    d: &'a Decided,
    verdict: Verdict,
}

impl<'de> DeserializeSeed<'de> for FirstElement<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FirstElement<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!((), ());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        drain_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(()) = seq.next_element_seed(ElementHasEvent {
            d: self.d,
            verdict: self.verdict,
        })? {
            drain_seq(seq)?;
        }
        Ok(())
    }
}

/// Decides `verdict` when the value is an object with an `Event` object (or a bare event).
struct ElementHasEvent<'a> {
    d: &'a Decided,
    verdict: Verdict,
}

impl<'de> DeserializeSeed<'de> for ElementHasEvent<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ElementHasEvent<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!((), ());
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let (mut info, mut orgc, mut uuid) = (false, false, false);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "Event" => map.next_value_seed(DecideIfObject {
                    d: self.d,
                    verdict: self.verdict,
                })?,
                other => {
                    match other {
                        "info" => info = true,
                        "Orgc" => orgc = true,
                        "uuid" => uuid = true,
                        _ => {}
                    }
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if info && orgc && uuid {
            return Err(decide(self.d, self.verdict));
        }
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        drain_seq(seq)
    }
}

/// Whether the value is the string `bundle`.
struct IsBundle;

impl<'de> DeserializeSeed<'de> for IsBundle {
    type Value = bool;
    fn deserialize<D: de::Deserializer<'de>>(self, de: D) -> Result<bool, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for IsBundle {
    type Value = bool;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    ignore_scalars!(bool, false);
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == "bundle")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<bool, A::Error> {
        drain_map(map).map(|()| false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<bool, A::Error> {
        drain_seq(seq).map(|()| false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Detected {
        detect_bytes(s.as_bytes())
    }

    #[test]
    fn json_shapes() {
        assert_eq!(
            d(r#"{"Event": {"uuid": "x"}}"#),
            Detected::Misp(MispShape::Event)
        );
        assert_eq!(
            d(r#" {"a": [1, {"b": 2}], "Event": {}}"#),
            Detected::Misp(MispShape::Event)
        );
        assert_eq!(d(r#"{"Event": "not an object"}"#), Detected::File);
        assert_eq!(
            d(r#"{"response": [{"Event": {"info": "x"}}]}"#),
            Detected::Misp(MispShape::RestSearch)
        );
        assert_eq!(d(r#"{"response": []}"#), Detected::File);
        assert_eq!(
            d(r#"[{"Event": {}}]"#),
            Detected::Misp(MispShape::EventList)
        );
        assert_eq!(d(r#"[1, 2]"#), Detected::File);
        assert_eq!(
            d(r#"{"info": "x", "uuid": "u", "Orgc": {}}"#),
            Detected::Misp(MispShape::BareEvent)
        );
        assert_eq!(d(r#"{"info": "x", "date": "2020-01-01"}"#), Detected::File);
        assert_eq!(
            d(r#"{"id": "bundle--1", "objects": [], "type": "bundle"}"#),
            Detected::Stix
        );
        assert_eq!(d(r#"{"type": "campaign"}"#), Detected::File);
        assert_eq!(d(r#"{"type": {"nested": "bundle"}}"#), Detected::File);
        assert_eq!(d("\u{feff}{\"type\": \"bundle\"}"), Detected::Stix);
        assert_eq!(d("not json"), Detected::File);
        assert_eq!(d("{\"Event\": {"), Detected::Misp(MispShape::Event));
        assert_eq!(d(""), Detected::File);
    }

    #[test]
    fn json_scan_limit() {
        let mut big = String::from("{\"pad\": \"");
        big.push_str(&"x".repeat(10_000));
        big.push_str("\", \"type\": \"bundle\"}");
        let small = DetectLimits {
            max_json_scan: 1000,
            ..DetectLimits::default()
        };
        assert_eq!(
            detect_reader(Cursor::new(big.as_bytes()), &small).unwrap(),
            Detected::File
        );
        assert_eq!(detect_bytes(big.as_bytes()), Detected::Stix);
    }

    #[test]
    fn split_shapes() {
        let one = br#"{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f", "info": "x"}}"#;
        let docs = split_misp(one).unwrap();
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0].json, one.to_vec());
        let list = br#"[{"Event": {"uuid": "5a0a9aa9-23a4-4607-b6df-41a9950d210f"}}, {"Event": {"uuid": "5a0ac036-6fbc-4855-83af-422b950d210f"}}]"#;
        let docs = split_misp(list).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[1].json,
            br#"{"Event":{"uuid": "5a0ac036-6fbc-4855-83af-422b950d210f"}}"#.to_vec()
        );
        let bad = br#"{"response": [{"Event": {"info": "no uuid"}}]}"#;
        assert!(split_misp(bad).unwrap_err().to_string().contains("event 0"));
        assert!(split_misp(br#"{"type": "bundle"}"#).is_err());
        assert!(split_misp(br#"{"response": []}"#).unwrap().is_empty());
    }
}
