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
//!   one pass at most and usually a few bytes (the probe is `kind/probe.rs`);
//! - `X.tar.gz.sig` (or `.tar.xz.sig`) next to an existing `X.tar.gz` is that image's
//!   detached signature and travels with it;
//! - anything else is a plain file.

use crate::fsutil::is_uuid;
use crate::misp_event::{locate_events, raw_event_uuid, wrap_event, EventError};
use gapferry_common::ObjectKind;
use probe::{json_verdict, Verdict};
use std::fs::{self, File};
use std::io::{self, BufReader, Cursor, Read};
use std::path::{Component, Path, PathBuf};
use thiserror::Error;

mod probe;

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
    pub fn kind(&self) -> ObjectKind {
        match self {
            Detected::Misp(_) => ObjectKind::Misp,
            Detected::Stix => ObjectKind::Stix,
            Detected::Image { .. } => ObjectKind::Image,
            Detected::Signature { .. } => ObjectKind::ImageSignature,
            Detected::File => ObjectKind::File,
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

#[cfg(test)]
mod tests;
