//! Listing what command-line paths hold: a file under its file name, a directory's tree
//! under names relative to it, a MISP feed directory as its events; then one object per
//! file reached (a file reached twice is sent once; two different files under one name
//! are refused).

use super::{
    classify_file, misp_events, unreadable, KindMode, SourceError, SourceFile, SourceOptions, Spill,
};
use gapferry_common::ObjectKind;
use gapferry_feeds::{Detected, MispShape};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

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
    // One temporary file for the content of every event the paths hold.
    let mut spill = Spill::default();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|e| unreadable(path, e))?;
        if meta.is_file() {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            classify_file(path, name, mode, false, opts, &mut spill, &mut out)?;
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
                    misp_events(&event, opts, &mut spill, &mut out)?;
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
                classify_file(entry.path(), name, mode, true, opts, &mut spill, &mut out)?;
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
