//! Turning command-line paths into the objects to send: their content, their safe
//! relative names on the high side, and their kind (from content, or forced).
//!
//! A multi-event MISP export or a MISP feed directory becomes one object per event; an
//! image's detached signature travels just before its image.

use gapferry_common::{name, ObjectKind};
use gapferry_feeds::{Detected, MispShape};
use std::collections::HashSet;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;

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
    pub bytes: Option<Arc<Vec<u8>>>,
}

impl SourceFile {
    /// Opens the object's content for reading.
    pub fn open(&self) -> io::Result<Box<dyn Read + Send>> {
        match &self.bytes {
            Some(b) => Ok(Box::new(io::Cursor::new(SharedBytes(b.clone())))),
            None => Ok(Box::new(std::fs::File::open(&self.path)?)),
        }
    }
}

struct SharedBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
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
    /// Two paths map to the same name on the high side.
    #[error("two inputs would both arrive as {0:?}; send them separately or rename one")]
    Duplicate(String),
    /// Neither a regular file nor a directory.
    #[error("{0} is neither a regular file nor a directory")]
    NotAFile(PathBuf),
    /// A MISP export could not be cut into events.
    #[error("{path} looks like MISP data but cannot be split into events: {reason}")]
    Misp {
        /// The export.
        path: PathBuf,
        /// Why.
        reason: String,
    },
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

fn to_object_kind(k: gapferry_feeds::Kind) -> ObjectKind {
    match k {
        gapferry_feeds::Kind::File => ObjectKind::File,
        gapferry_feeds::Kind::Misp => ObjectKind::Misp,
        gapferry_feeds::Kind::Stix => ObjectKind::Stix,
        gapferry_feeds::Kind::Image => ObjectKind::Image,
        gapferry_feeds::Kind::ImageSignature => ObjectKind::ImageSignature,
    }
}

/// One MISP file (single event, REST export, list of events) as one object per event.
fn misp_events(path: &Path, out: &mut Vec<SourceFile>) -> Result<(), SourceError> {
    let bytes = std::fs::read(path).map_err(|e| unreadable(path, e))?;
    let docs = gapferry_feeds::split_misp(&bytes).map_err(|e| SourceError::Misp {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    for doc in docs {
        let name = checked_name(path, format!("{}.json", doc.uuid))?;
        out.push(SourceFile {
            path: path.to_path_buf(),
            name,
            size: doc.json.len() as u64,
            kind: ObjectKind::Misp,
            bytes: Some(Arc::new(doc.json)),
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
    out: &mut Vec<SourceFile>,
) -> Result<(), SourceError> {
    let detected = match mode {
        KindMode::Force(ObjectKind::Misp) => Detected::Misp(MispShape::Event),
        KindMode::Force(k) => return whole_file(path, name, k).map(|f| out.push(f)),
        KindMode::Auto => gapferry_feeds::detect(path).map_err(|e| match e {
            gapferry_feeds::DetectError::Io { path, source } => unreadable(&path, source),
            other => unreadable(path, io::Error::other(other.to_string())),
        })?,
    };
    match detected {
        // Forced: what cannot be split goes as one object, and the high side records why it refuses it.
        Detected::Misp(_) if mode != KindMode::Auto => misp_events(path, out).or_else(|e| {
            tracing::warn!("{e}; sending it whole as kind misp as asked");
            whole_file(path, name, ObjectKind::Misp).map(|f| out.push(f))
        }),
        Detected::Misp(_) => misp_events(path, out),
        // Sent with its image, just before it.
        Detected::Signature { .. } if in_tree => Ok(()),
        Detected::Image { signature, .. } => {
            if let Some(sig) = signature {
                let sig_name = format!("{name}.sig");
                out.push(whole_file(&sig, sig_name, ObjectKind::ImageSignature)?);
            }
            out.push(whole_file(path, name, ObjectKind::Image)?);
            Ok(())
        }
        other => whole_file(path, name, to_object_kind(other.kind())).map(|f| out.push(f)),
    }
}

/// The object(s) one file becomes under `name`, as [`collect`] would classify it.
pub fn classify_named(
    path: &Path,
    name: String,
    mode: KindMode,
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
            out.push(whole_file(path, name, ObjectKind::Image)?);
        }
        _ => classify_file(path, name, mode, false, &mut out)?,
    }
    Ok(out)
}

/// Lists the objects for `paths`: a file is sent under its file name, a directory's tree
/// under names relative to that directory, a MISP feed directory as its events.
/// Symbolic links inside directories are skipped.
pub fn collect(paths: &[PathBuf], mode: KindMode) -> Result<Vec<SourceFile>, SourceError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            classify_file(path, name, mode, false, &mut out)?;
        } else if meta.is_dir() {
            let feed = matches!(mode, KindMode::Auto | KindMode::Force(ObjectKind::Misp))
                && matches!(
                    gapferry_feeds::detect(path),
                    Ok(Detected::Misp(MispShape::FeedDirectory))
                );
            if feed {
                for event in
                    gapferry_feeds::feed_event_files(path).map_err(|e| unreadable(path, e))?
                {
                    misp_events(&event, &mut out)?;
                }
                continue;
            }
            for entry in walkdir::WalkDir::new(path).sort_by_file_name() {
                let entry = entry.map_err(|e| {
                    let p = e.path().unwrap_or(path).to_path_buf();
                    unreadable(&p, e.into())
                })?;
                if entry.file_type().is_symlink() {
                    tracing::warn!(path = %entry.path().display(), "skipping symbolic link");
                    continue;
                }
                if !entry.file_type().is_file() {
                    continue;
                }
                let rel = entry.path().strip_prefix(path).expect("walk stays inside");
                let name = rel
                    .to_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| rel.to_string_lossy().into_owned());
                classify_file(entry.path(), name, mode, true, &mut out)?;
            }
        } else {
            return Err(SourceError::NotAFile(path.clone()));
        }
    }
    // MISP events may repeat (the receiver keeps the newest); anything else may not.
    let mut seen = HashSet::new();
    for f in out.iter().filter(|f| f.kind != ObjectKind::Misp) {
        if !seen.insert(f.name.as_str()) {
            return Err(SourceError::Duplicate(f.name.clone()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_and_trees_get_relative_names() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.txt"), b"a").unwrap();
        std::fs::write(root.join("sub/b.bin"), b"bb").unwrap();
        let single = dir.path().join("single.json");
        std::fs::write(&single, b"{}").unwrap();
        let files = collect(&[root.clone(), single.clone()], KindMode::Auto).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "sub/b.bin", "single.json"]);
        assert_eq!(files[1].size, 2);
        assert!(files.iter().all(|f| f.kind == ObjectKind::File));
    }

    #[test]
    fn refuses_missing_and_duplicate_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        assert!(matches!(
            collect(&[missing], KindMode::Auto),
            Err(SourceError::Unreadable { .. })
        ));
        let a = dir.path().join("x");
        std::fs::create_dir(&a).unwrap();
        std::fs::write(a.join("f"), b"1").unwrap();
        std::fs::write(dir.path().join("f"), b"2").unwrap();
        assert!(matches!(
            collect(&[a, dir.path().join("f")], KindMode::Auto),
            Err(SourceError::Duplicate(_))
        ));
    }

    #[test]
    fn misp_exports_split_into_events_and_stix_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |u: &str| {
            format!(
                r#"{{"Event":{{"uuid":"{u}","info":"x","Orgc":{{"name":"o","uuid":"{u}"}},"timestamp":"1","date":"2024-01-01","analysis":"0","threat_level_id":"1","Attribute":[]}}}}"#
            )
        };
        let u1 = "11111111-1111-4111-8111-111111111111";
        let u2 = "22222222-2222-4222-8222-222222222222";
        let export = format!(r#"{{"response":[{},{}]}}"#, ev(u1), ev(u2));
        std::fs::write(dir.path().join("export.json"), export).unwrap();
        std::fs::write(
            dir.path().join("b.json"),
            r#"{"type":"bundle","id":"bundle--33333333-3333-4333-8333-333333333333","objects":[]}"#,
        )
        .unwrap();
        let files = collect(&[dir.path().to_path_buf()], KindMode::Auto).unwrap();
        let got: Vec<_> = files.iter().map(|f| (f.name.as_str(), f.kind)).collect();
        assert_eq!(
            got,
            [
                ("b.json", ObjectKind::Stix),
                (&*format!("{u1}.json"), ObjectKind::Misp),
                (&*format!("{u2}.json"), ObjectKind::Misp)
            ]
        );
        let mut content = String::new();
        files[1]
            .open()
            .unwrap()
            .read_to_string(&mut content)
            .unwrap();
        assert!(content.contains(u1) && !content.contains(u2));
        let forced = collect(
            &[dir.path().join("b.json")],
            KindMode::Force(ObjectKind::File),
        )
        .unwrap();
        assert_eq!(forced[0].kind, ObjectKind::File);
    }
}
