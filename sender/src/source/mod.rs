//! Turning command-line paths into the objects to send: their content, their safe
//! relative names on the high side, and their kind (from content, or forced).
//!
//! Whatever the high side would refuse for its kind (a STIX file that is not a bundle, MISP
//! JSON without acceptable events, an image without `metadata.yaml`) is refused here,
//! before anything is sent, with the file and the reason, by the same checks the
//! receiver runs ([`gapferry_feeds::precheck`]), whether the kind was detected or forced.
//!
//! A multi-event MISP export or a MISP feed directory becomes one object per event; an
//! image's detached signature travels just before its image. A file reached twice (named
//! twice, a signature named beside its image, a file inside a named directory) is one
//! object, sent once; only two different files arriving under one name are refused.
//!
//! This module owns the objects' types and classifying one file; `collect` owns listing
//! paths and de-duplicating what they reach.

use gapferry_common::{name, ObjectKind};
use gapferry_feeds::{Detected, MispShape};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use thiserror::Error;

mod collect;
mod held;

pub use collect::{collect, collect_with};
pub use held::{HeldBytes, Spill};

/// How kinds are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KindMode {
    /// From content: MISP, STIX, LXD image, or plain file.
    Auto,
    /// Every input is sent as this kind (the receiver still checks it).
    Force(ObjectKind),
}

impl std::str::FromStr for KindMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(KindMode::Auto),
            other => other.parse().map(KindMode::Force),
        }
    }
}

/// How inputs become objects, beyond their kind.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// MISP events are converted to the feed form PyMISP's `to_feed` writes (`None`:
    /// sent as exported).
    pub misp_feed_form: Option<gapferry_feeds::misp_to_feed::FeedForm>,
}

impl Default for SourceOptions {
    /// Feed form on, with PyMISP's defaults.
    fn default() -> Self {
        SourceOptions {
            misp_feed_form: Some(gapferry_feeds::misp_to_feed::FeedForm::default()),
        }
    }
}

/// One object to send and the name it will have on the high side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Where it comes from (for a split MISP event: the export holding it).
    pub path: PathBuf,
    /// Its relative name on the high side.
    pub name: String,
    /// Its size when listed.
    pub size: u64,
    /// What it is.
    pub kind: ObjectKind,
    /// The content, when it is not the whole file at `path` (a split MISP event).
    pub bytes: Option<HeldBytes>,
}

impl SourceFile {
    /// Opens the object's content for reading.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.bytes {
            Some(b) => Ok(Box::new(b.reader())),
            None => Ok(Box::new(std::fs::File::open(&self.path)?)),
        }
    }
}

/// Why the list of objects could not be built.
#[derive(Debug, Error)]
pub enum SourceError {
    /// A path cannot be read.
    #[error("cannot read {path}: {error}")]
    Unreadable {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A path's name cannot be carried (not UTF-8, control characters, too long...).
    #[error("cannot send {path}: its name {name:?} is not a safe relative name ({reason})")]
    BadName {
        /// The path.
        path: PathBuf,
        /// The name derived from it.
        name: String,
        /// Why it was refused.
        reason: name::NameError,
    },
    /// Two different files map to the same name on the high side.
    #[error("two different files would both arrive as {name:?}: {} and {}; send them separately or rename one", first.display(), second.display())]
    Duplicate {
        /// The name on the high side.
        name: String,
        /// The file listed first.
        first: PathBuf,
        /// The other file.
        second: PathBuf,
    },
    /// Neither a regular file nor a directory.
    #[error("{0} is neither a regular file nor a directory")]
    NotAFile(PathBuf),
    /// A MISP export could not be cut into events, or holds an event the feed refuses.
    #[error("{path}: not sent: as kind misp it cannot be split into acceptable events: {reason}")]
    Misp {
        /// The export.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The high side would refuse the file for its kind.
    #[error("{path}: not sent: the high side would refuse it as kind {kind}: {reason}")]
    Refused {
        /// The file.
        path: PathBuf,
        /// The kind it was to be sent as.
        kind: ObjectKind,
        /// Why.
        reason: String,
    },
}

impl SourceError {
    /// True when the file's content is refused (sending it again will not help until
    /// it changes); false for reading errors and names.
    pub fn is_refusal(&self) -> bool {
        matches!(self, SourceError::Misp { .. } | SourceError::Refused { .. })
    }
}

fn refused(path: &Path, kind: ObjectKind, reason: impl ToString) -> SourceError {
    SourceError::Refused {
        path: path.to_path_buf(),
        kind,
        reason: reason.to_string(),
    }
}

/// A STIX bundle as one object, once the STIX store's own check passed.
fn stix_file(path: &Path, name: String) -> Result<SourceFile, SourceError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    gapferry_feeds::precheck::check_stix(&bytes).map_err(|e| refused(path, ObjectKind::Stix, e))?;
    whole_file(path, name, ObjectKind::Stix)
}

/// An image tarball as one object, once the image store's own check passed.
fn image_file(path: &Path, name: String) -> Result<SourceFile, SourceError> {
    let base = name.rsplit('/').next().unwrap_or(&name);
    gapferry_feeds::precheck::check_image(path, base)
        .map_err(|e| refused(path, ObjectKind::Image, e))?;
    whole_file(path, name, ObjectKind::Image)
}

fn unreadable(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Unreadable {
        path: path.to_path_buf(),
        error: source,
    }
}

fn checked_name(path: &Path, name: String) -> Result<String, SourceError> {
    name::validate(&name).map_err(|reason| SourceError::BadName {
        path: path.to_path_buf(),
        name: name.clone(),
        reason,
    })?;
    Ok(name)
}

fn whole_file(path: &Path, name: String, kind: ObjectKind) -> Result<SourceFile, SourceError> {
    let name = checked_name(path, name)?;
    // Fail now, not half-way through a transfer, on a file we may not open.
    let f = std::fs::File::open(path).map_err(|e| unreadable(path, e))?;
    let size = f.metadata().map_err(|e| unreadable(path, e))?.len();
    Ok(SourceFile {
        path: path.to_path_buf(),
        name,
        size,
        kind,
        bytes: None,
    })
}

/// One MISP file (single event, REST export, list of events) as one object per event,
/// each in feed form when `opts` asks; the file itself is never modified.
fn misp_events(
    path: &Path,
    opts: &SourceOptions,
    spill: &mut Spill,
    out: &mut Vec<SourceFile>,
) -> Result<(), SourceError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let docs = gapferry_feeds::split_misp(&bytes).map_err(|e| SourceError::Misp {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if docs.is_empty() {
        return Err(SourceError::Misp {
            path: path.to_path_buf(),
            reason: "it holds no event".into(),
        });
    }
    let now = std::time::SystemTime::now();
    for mut doc in docs {
        if let Some(form) = &opts.misp_feed_form {
            match gapferry_feeds::misp_to_feed::to_feed(&doc.json, form, now) {
                Ok(Some(feed)) => doc.json = feed,
                Ok(None) => {
                    tracing::info!(path = %path.display(), event = %doc.uuid, "not sent: its distribution is not among the exported ones");
                    continue;
                }
                Err(e) => {
                    return Err(SourceError::Misp {
                        path: path.to_path_buf(),
                        reason: format!("event {}: {e}", doc.uuid),
                    })
                }
            }
        }
        gapferry_feeds::precheck::check_misp_event(&doc.json, now).map_err(|e| {
            SourceError::Misp {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        })?;
        let name = checked_name(path, format!("{}.json", doc.uuid))?;
        out.push(SourceFile {
            path: path.to_path_buf(),
            name,
            size: doc.json.len() as u64,
            kind: ObjectKind::Misp,
            bytes: Some(spill.keep(doc.json)),
        });
    }
    Ok(())
}

/// Classifies one file named `name` and appends its object(s).
fn classify_file(
    path: &Path,
    name: String,
    mode: KindMode,
    in_tree: bool,
    opts: &SourceOptions,
    spill: &mut Spill,
    out: &mut Vec<SourceFile>,
) -> Result<(), SourceError> {
    let detected = match mode {
        KindMode::Force(ObjectKind::Misp) => Detected::Misp(MispShape::Event),
        KindMode::Force(ObjectKind::Stix) => Detected::Stix,
        KindMode::Force(ObjectKind::Image) => {
            return image_file(path, name).map(|f| out.push(f));
        }
        KindMode::Force(k) => return whole_file(path, name, k).map(|f| out.push(f)),
        KindMode::Auto => gapferry_feeds::detect(path).map_err(|e| match e {
            gapferry_feeds::DetectError::Io { path, source } => unreadable(&path, source),
            other => unreadable(path, io::Error::other(other.to_string())),
        })?,
    };
    match detected {
        // Forced or detected, what the feed would refuse is refused here.
        Detected::Misp(_) => misp_events(path, opts, spill, out),
        Detected::Stix => stix_file(path, name).map(|f| out.push(f)),
        // Sent with its image, just before it.
        Detected::Signature { .. } if in_tree => Ok(()),
        Detected::Image { signature, .. } => {
            if let Some(sig) = signature {
                let sig_name = format!("{name}.sig");
                out.push(whole_file(&sig, sig_name, ObjectKind::ImageSignature)?);
            }
            out.push(image_file(path, name)?);
            Ok(())
        }
        other => whole_file(path, name, other.kind()).map(|f| out.push(f)),
    }
}

/// The object(s) one file becomes under `name`, as [`collect`] would classify it.
pub fn classify_named(
    path: &Path,
    name: String,
    mode: KindMode,
) -> Result<Vec<SourceFile>, SourceError> {
    classify_named_with(path, name, mode, &SourceOptions::default())
}

/// [`classify_named`] with `opts`.
pub fn classify_named_with(
    path: &Path,
    name: String,
    mode: KindMode,
    opts: &SourceOptions,
) -> Result<Vec<SourceFile>, SourceError> {
    let mut out = Vec::new();
    match mode {
        // An image forced by its directory still takes its signature along.
        KindMode::Force(ObjectKind::Image) => {
            if let Some(sig) = gapferry_feeds::image_signature(path) {
                out.push(whole_file(
                    &sig,
                    format!("{name}.sig"),
                    ObjectKind::ImageSignature,
                )?);
            }
            out.push(image_file(path, name)?);
        }
        _ => classify_file(
            path,
            name,
            mode,
            false,
            opts,
            &mut Spill::default(),
            &mut out,
        )?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
