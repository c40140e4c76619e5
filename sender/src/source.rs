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

use gapferry_common::{name, ObjectKind};
use gapferry_feeds::{Detected, MispShape};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
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
    opts: &SourceOptions,
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
        Detected::Misp(_) => misp_events(path, opts, out),
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
        _ => classify_file(path, name, mode, false, opts, &mut out)?,
    }
    Ok(out)
}

/// Lists the objects for `paths`: a file is sent under its file name, a directory's tree
/// under names relative to that directory, a MISP feed directory as its events.
/// Symbolic links inside directories are skipped.
pub fn collect(paths: &[PathBuf], mode: KindMode) -> Result<Vec<SourceFile>, SourceError> {
    collect_with(paths, mode, &SourceOptions::default())
}

/// [`collect`] with `opts`.
pub fn collect_with(
    paths: &[PathBuf],
    mode: KindMode,
    opts: &SourceOptions,
) -> Result<Vec<SourceFile>, SourceError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            classify_file(path, name, mode, false, opts, &mut out)?;
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
                    misp_events(&event, opts, &mut out)?;
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
                classify_file(entry.path(), name, mode, true, opts, &mut out)?;
            }
        } else {
            return Err(SourceError::NotAFile(path.clone()));
        }
    }
    once_each(out)
}

/// Which file an object's bytes come from: a split MISP event is one event of its export.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Origin {
    dev: u64,
    ino: u64,
    event: Option<String>,
}

/// True when `short` is `long` or its last path components (`b.bin` of `sub/b.bin`).
fn names_the_same(long: &str, short: &str) -> bool {
    long == short
        || long
            .strip_suffix(short)
            .is_some_and(|head| head.ends_with('/'))
}

/// Keeps one object per origin and name: the same file reached twice is sent once. The
/// copy kept is a signature sent with its image rather than named alone, else the one
/// with the most name components (the outermost named directory's name), else the
/// first; a copy is dropped only when its name is the kept one's or its tail (a file
/// given under another name, through a symlink, still goes under both). Two different
/// files under one name are refused; MISP events may repeat (the receiver keeps the
/// newest).
fn once_each(out: Vec<SourceFile>) -> Result<Vec<SourceFile>, SourceError> {
    let origins: Vec<Option<Origin>> = out
        .iter()
        .map(|f| {
            let m = std::fs::metadata(&f.path).ok()?;
            Some(Origin {
                dev: m.dev(),
                ino: m.ino(),
                event: f.bytes.as_ref().map(|_| f.name.clone()),
            })
        })
        .collect();
    let with_its_image = |i: usize| {
        out[i].kind == ObjectKind::ImageSignature
            && out.get(i + 1).is_some_and(|next| {
                next.kind == ObjectKind::Image
                    && out[i].name.strip_suffix(".sig") == Some(next.name.as_str())
            })
    };
    let rank = |i: usize| (with_its_image(i), out[i].name.split('/').count());
    let mut kept: HashMap<&Origin, usize> = HashMap::new();
    for (i, origin) in origins.iter().enumerate() {
        let Some(origin) = origin else { continue };
        match kept.entry(origin) {
            Entry::Vacant(e) => {
                e.insert(i);
            }
            Entry::Occupied(mut e) => {
                if rank(i) > rank(*e.get()) {
                    e.insert(i);
                }
            }
        }
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut keep = vec![true; out.len()];
    for (i, f) in out.iter().enumerate() {
        if let Some(origin) = &origins[i] {
            let k = kept[origin];
            if k != i && names_the_same(&out[k].name, &f.name) {
                tracing::info!(
                    path = %f.path.display(),
                    name = %f.name,
                    sent_as = %out[k].name,
                    "named more than once; sent once"
                );
                keep[i] = false;
                continue;
            }
        }
        if f.kind == ObjectKind::Misp {
            continue;
        }
        if let Some(&j) = names.get(f.name.as_str()) {
            return Err(SourceError::Duplicate {
                name: f.name.clone(),
                first: out[j].path.clone(),
                second: f.path.clone(),
            });
        }
        names.insert(&f.name, i);
    }
    let mut keep = keep.into_iter();
    let mut out = out;
    out.retain(|_| keep.next().unwrap_or(true));
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
        let e = collect(&[a.clone(), dir.path().join("f")], KindMode::Auto).unwrap_err();
        assert!(
            matches!(&e, SourceError::Duplicate { name, .. } if name == "f"),
            "{e}"
        );
        let text = e.to_string();
        assert!(
            text.contains(&a.join("f").display().to_string())
                && text.contains(&dir.path().join("f").display().to_string())
                && text.contains("two different files"),
            "{text}"
        );
    }

    fn names(files: &[SourceFile]) -> Vec<(&str, ObjectKind)> {
        files.iter().map(|f| (f.name.as_str(), f.kind)).collect()
    }

    #[test]
    fn a_file_named_twice_is_one_object() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.json");
        std::fs::write(&a, b"{}").unwrap();
        let files = collect(&[a.clone(), a.clone(), a.clone()], KindMode::Auto).unwrap();
        assert_eq!(names(&files), [("a.json", ObjectKind::File)]);
        // The same file through another path naming it the same: once.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let dotted = sub.join("../a.json");
        let files = collect(&[a.clone(), dotted], KindMode::Auto).unwrap();
        assert_eq!(names(&files), [("a.json", ObjectKind::File)]);
        // Another name for the same file is asked for explicitly: both names go.
        let link = dir.path().join("link-to-a.json");
        std::os::unix::fs::symlink(&a, &link).unwrap();
        let files = collect(&[a.clone(), link], KindMode::Auto).unwrap();
        assert_eq!(
            names(&files),
            [
                ("a.json", ObjectKind::File),
                ("link-to-a.json", ObjectKind::File)
            ]
        );
        std::fs::write(
            &a,
            br#"{"type":"bundle","id":"bundle--33333333-3333-4333-8333-333333333333","objects":[]}"#,
        )
        .unwrap();
        let files = collect(&[a.clone(), a], KindMode::Force(ObjectKind::Stix)).unwrap();
        assert_eq!(names(&files), [("a.json", ObjectKind::Stix)]);
    }

    /// An LXD unified image (gzip'd tar with `metadata.yaml`) and its signature.
    fn image(dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let img = dir.join(format!("{stem}.tar.gz"));
        let gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&img).unwrap(),
            flate2::Compression::fast(),
        );
        let mut t = tar::Builder::new(gz);
        let meta = b"architecture: x86_64\n";
        let mut h = tar::Header::new_gnu();
        h.set_size(meta.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, "metadata.yaml", &meta[..]).unwrap();
        t.into_inner().unwrap().finish().unwrap();
        let sig = dir.join(format!("{stem}.tar.gz.sig"));
        std::fs::write(&sig, b"sig").unwrap();
        (img, sig)
    }

    #[test]
    fn a_signature_named_beside_its_image_travels_once_just_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (img, sig) = image(dir.path(), "MISP_v2.5.1_abc");
        let expected = [
            ("MISP_v2.5.1_abc.tar.gz.sig", ObjectKind::ImageSignature),
            ("MISP_v2.5.1_abc.tar.gz", ObjectKind::Image),
        ];
        for inputs in [
            vec![img.clone(), sig.clone()],
            vec![sig.clone(), img.clone()],
            vec![sig.clone(), img.clone(), sig.clone(), img.clone()],
            vec![dir.path().to_path_buf(), img.clone(), sig.clone()],
        ] {
            let files = collect(&inputs, KindMode::Auto).unwrap();
            assert_eq!(names(&files), expected, "{inputs:?}");
        }
        // Between them, another file: the signature still comes just before its image.
        let other = dir.path().join("notes.txt");
        std::fs::write(&other, b"n").unwrap();
        let files = collect(&[sig.clone(), other, img.clone()], KindMode::Auto).unwrap();
        assert_eq!(
            names(&files),
            [
                ("notes.txt", ObjectKind::File),
                ("MISP_v2.5.1_abc.tar.gz.sig", ObjectKind::ImageSignature),
                ("MISP_v2.5.1_abc.tar.gz", ObjectKind::Image),
            ]
        );
        // Named alone, a signature still goes (its image may follow later).
        let files = collect(&[sig], KindMode::Auto).unwrap();
        assert_eq!(names(&files), [expected[0]]);
    }

    #[test]
    fn a_file_inside_a_named_directory_keeps_the_directory_s_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("tree");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("a.json"), b"{}").unwrap();
        std::fs::write(root.join("sub/b.bin"), b"b").unwrap();
        let expected = [
            ("a.json", ObjectKind::File),
            ("sub/b.bin", ObjectKind::File),
        ];
        for inputs in [
            vec![root.clone(), root.join("a.json")],
            vec![root.join("a.json"), root.clone()],
            vec![root.join("sub/b.bin"), root.clone()],
            vec![root.join("sub"), root.clone(), root.join("sub/b.bin")],
            vec![root.clone(), root.clone()],
        ] {
            let files = collect(&inputs, KindMode::Auto).unwrap();
            let mut got = names(&files);
            got.sort_by_key(|(n, _)| *n);
            assert_eq!(got, expected, "{inputs:?}");
        }
    }

    #[test]
    fn a_misp_export_named_twice_sends_each_event_once() {
        let dir = tempfile::tempdir().unwrap();
        let ev = |u: &str, ts: &str| {
            format!(
                r#"{{"Event":{{"uuid":"{u}","info":"x","Orgc":{{"name":"o","uuid":"{u}"}},"timestamp":"{ts}","date":"2024-01-01","analysis":"0","threat_level_id":"1","Attribute":[]}}}}"#
            )
        };
        let u1 = "11111111-1111-4111-8111-111111111111";
        let u2 = "22222222-2222-4222-8222-222222222222";
        let export = dir.path().join("export.json");
        std::fs::write(
            &export,
            format!(r#"{{"response":[{},{}]}}"#, ev(u1, "1"), ev(u2, "1")),
        )
        .unwrap();
        let files = collect(&[export.clone(), export.clone()], KindMode::Auto).unwrap();
        assert_eq!(files.len(), 2);
        // Two different exports with one event each: both copies go, the receiver keeps the newest.
        let newer = dir.path().join("newer.json");
        std::fs::write(&newer, ev(u1, "2")).unwrap();
        let files = collect(&[export, newer], KindMode::Auto).unwrap();
        assert_eq!(
            files
                .iter()
                .filter(|f| f.name == format!("{u1}.json"))
                .count(),
            2
        );
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

    #[test]
    fn what_the_high_side_would_refuse_is_refused_before_sending() {
        let dir = tempfile::tempdir().unwrap();
        let report = dir.path().join("report.json");
        std::fs::write(&report, br#"{"type":"report","id":"x"}"#).unwrap();
        let bad_bundle = dir.path().join("bad-bundle.json");
        std::fs::write(
            &bad_bundle,
            br#"{"type":"bundle","id":"bundle--1","objects":[]}"#,
        )
        .unwrap();
        let no_event = dir.path().join("empty-export.json");
        std::fs::write(&no_event, br#"{"response":[]}"#).unwrap();
        let no_info = dir.path().join("no-info.json");
        std::fs::write(
            &no_info,
            br#"{"Event":{"uuid":"11111111-1111-4111-8111-111111111111","Orgc":{"name":"o"}}}"#,
        )
        .unwrap();
        let not_image = dir.path().join("MISP_v1_abc.tar.gz");
        std::fs::write(&not_image, b"plain bytes").unwrap();
        let (no_metadata, _) = {
            let img = dir.path().join("Other_v1_abc.tar.gz");
            let gz = flate2::write::GzEncoder::new(
                std::fs::File::create(&img).unwrap(),
                flate2::Compression::fast(),
            );
            let mut t = tar::Builder::new(gz);
            let mut h = tar::Header::new_gnu();
            h.set_size(1);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, "rootfs/etc/hostname", &b"x"[..])
                .unwrap();
            t.into_inner().unwrap().finish().unwrap();
            (img, ())
        };
        let cases: [(&Path, KindMode, &str); 7] = [
            (&report, KindMode::Force(ObjectKind::Stix), "not \"bundle\""),
            (&report, KindMode::Force(ObjectKind::Misp), "no MISP event"),
            (&bad_bundle, KindMode::Auto, "bundle--<uuid>"),
            (&no_event, KindMode::Force(ObjectKind::Misp), "no event"),
            (&no_info, KindMode::Auto, "no `info`"),
            (
                &not_image,
                KindMode::Force(ObjectKind::Image),
                "neither gzip nor xz",
            ),
            (
                &no_metadata,
                KindMode::Force(ObjectKind::Image),
                "metadata.yaml",
            ),
        ];
        for (path, mode, why) in cases {
            let e = collect(&[path.to_path_buf()], mode).unwrap_err();
            let text = e.to_string();
            assert!(e.is_refusal(), "{text}");
            assert!(
                text.contains(&path.display().to_string()) && text.contains("not sent"),
                "{text}"
            );
            assert!(text.contains(why), "{why:?} in {text}");
        }
        // The report is still a plain file when nothing forces a kind.
        let files = collect(&[report], KindMode::Auto).unwrap();
        assert_eq!(names(&files), [("report.json", ObjectKind::File)]);
    }
}
