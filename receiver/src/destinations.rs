//! Where each kind of object is delivered (directories that must not overlap each other,
//! `--out` or its state directory), the permissions it is published with, and the
//! post-delivery hooks' configuration.

use gapferry_common::ObjectKind;
use gapferry_feeds::Publish;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Directory under `--out` for MISP events (a MISP local feed).
pub const MISP_DIR: &str = "misp";
/// Directory under `--out` for STIX bundles.
pub const STIX_DIR: &str = "stix";
/// Directory under `--out` for the image store.
pub const IMAGES_DIR: &str = "images";
/// Directory under `--out` for everything else.
pub const FILES_DIR: &str = "files";

/// The delivery directory of every kind, and the image retention.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// MISP local-feed directory.
    pub misp: PathBuf,
    /// STIX bundle directory.
    pub stix: PathBuf,
    /// Image store (MISP-airgap's server layout).
    pub images: PathBuf,
    /// Plain files.
    pub files: PathBuf,
    /// Image versions kept per image name.
    pub keep_images: usize,
    /// Keyring every image's signature must verify against (`[images] keyring`).
    pub image_keyring: Option<PathBuf>,
    /// How STIX bundles are written (`[stix] layout`).
    pub stix_layout: gapferry_feeds::StixLayout,
    /// Commands run after each delivery, per kind.
    pub hooks: Hooks,
    /// File mode, directory mode and group per kind.
    pub permissions: Permissions,
    /// `[misp_push]`: push delivered events and bundles into the high-side MISP.
    pub misp_push: Option<crate::misp_push::MispPushOptions>,
    /// The archive of delivered MISP events and STIX bundles (`[archive]`).
    pub archive: ArchiveSettings,
}

/// `[archive]`: whether delivered MISP events and STIX bundles are kept under
/// `OUT/.gapferry/archive` so a consumed feed can be republished, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// Whether deliveries are archived.
    pub enabled: bool,
    /// Archived files older than this are pruned.
    pub keep: std::time::Duration,
}

/// Days an archived event or bundle is kept unless configured otherwise.
pub const ARCHIVE_KEEP_DAYS: u64 = 30;

impl Default for ArchiveSettings {
    fn default() -> Self {
        ArchiveSettings {
            enabled: true,
            keep: std::time::Duration::from_secs(ARCHIVE_KEEP_DAYS * 86_400),
        }
    }
}

impl Destinations {
    /// The default layout under `out`.
    pub fn under(out: &Path) -> Self {
        Destinations {
            misp: out.join(MISP_DIR),
            stix: out.join(STIX_DIR),
            images: out.join(IMAGES_DIR),
            files: out.join(FILES_DIR),
            keep_images: 3,
            image_keyring: None,
            stix_layout: gapferry_feeds::StixLayout::Plain,
            hooks: Hooks::default(),
            permissions: Permissions::default(),
            misp_push: None,
            archive: ArchiveSettings::default(),
        }
    }
}

/// How delivered files and created directories are published, per kind (config file
/// `[permissions]`); by default files 0644 and directories 0755, in the receiver's group.
/// Never taken from the sender.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Permissions {
    /// For directories that belong to no kind (`--out` itself).
    pub default: Publish,
    /// The MISP feed: event files, `manifest.json`, `hashes.csv`.
    pub misp: Publish,
    /// STIX bundles.
    pub stix: Publish,
    /// Image store: tarballs, signatures, `SHA256SUMS`, image directories.
    pub images: Publish,
    /// Plain files and the directories of their names.
    pub files: Publish,
}

impl Permissions {
    /// The permissions `kind` is published with (a signature: the image store's).
    pub fn for_kind(&self, kind: ObjectKind) -> Publish {
        match kind {
            ObjectKind::Misp => self.misp,
            ObjectKind::Stix => self.stix,
            ObjectKind::Image | ObjectKind::ImageSignature => self.images,
            ObjectKind::File => self.files,
        }
    }
}

/// Why the delivery directories cannot be used together.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DirsError {
    /// Two kinds share a directory, or one lies inside another's.
    #[error("[dirs] {inner_kind} ({inner}) {relation} [dirs] {outer_kind} ({outer}): each kind needs a directory of its own, outside the others; give them separate directories")]
    Overlap {
        /// The kind whose directory is inside (or equal to) the other.
        inner_kind: &'static str,
        /// Its directory.
        inner: PathBuf,
        /// "is the same directory as" or "is inside".
        relation: &'static str,
        /// The other kind.
        outer_kind: &'static str,
        /// Its directory.
        outer: PathBuf,
    },
    /// A directory is `out` itself, holds `out`, or is inside the receiver's state directory.
    #[error("[dirs] {kind} ({dir}) {relation} {what} ({other}): deliveries there could overwrite the receiver's own state; use a directory under {out} other than .gapferry (the default is {out}/{kind}), or one outside it")]
    State {
        /// The kind.
        kind: &'static str,
        /// Its directory.
        dir: PathBuf,
        /// How it overlaps.
        relation: &'static str,
        /// "--out" or "the state directory".
        what: &'static str,
        /// That directory.
        other: PathBuf,
        /// The delivery root.
        out: PathBuf,
    },
}

/// `path` made absolute and with `.` and `..` resolved: through the filesystem when it
/// exists (so a symbolic link is seen through), lexically otherwise.
fn normalised(path: &Path) -> PathBuf {
    if let Ok(p) = std::fs::canonicalize(path) {
        return p;
    }
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    // The longest existing ancestor is resolved through the filesystem, the rest lexically.
    let mut out = PathBuf::new();
    for c in absolute.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => {
                out.push(other);
                if let Ok(p) = std::fs::canonicalize(&out) {
                    out = p;
                }
            }
        }
    }
    out
}

impl Destinations {
    /// Refuses directories that overlap: two kinds in one directory or one inside
    /// another, a kind at `out` itself or above it, or inside `out/.gapferry`.
    pub fn check_separate(&self, out: &Path) -> Result<(), DirsError> {
        let dirs = [
            ("misp", normalised(&self.misp), &self.misp),
            ("stix", normalised(&self.stix), &self.stix),
            ("images", normalised(&self.images), &self.images),
            ("files", normalised(&self.files), &self.files),
        ];
        let root = normalised(out);
        let state = root.join(crate::records::STATE_DIR);
        for (kind, dir, shown) in &dirs {
            let refuse = |relation, what, other: &Path| DirsError::State {
                kind,
                dir: shown.to_path_buf(),
                relation,
                what,
                other: other.to_path_buf(),
                out: out.to_path_buf(),
            };
            if *dir == root {
                return Err(refuse("is", "--out", out));
            }
            if root.starts_with(dir) {
                return Err(refuse("holds", "--out", out));
            }
            if dir.starts_with(&state) {
                return Err(refuse(
                    "is inside",
                    "the state directory",
                    &out.join(crate::records::STATE_DIR),
                ));
            }
        }
        for (i, (a_kind, a, a_shown)) in dirs.iter().enumerate() {
            for (b_kind, b, b_shown) in &dirs[i + 1..] {
                let (inner, outer) = if b.starts_with(a) {
                    ((b_kind, b_shown, b), (a_kind, a_shown, a))
                } else if a.starts_with(b) {
                    ((a_kind, a_shown, a), (b_kind, b_shown, b))
                } else {
                    continue;
                };
                return Err(DirsError::Overlap {
                    inner_kind: inner.0,
                    inner: inner.1.to_path_buf(),
                    relation: if inner.2 == outer.2 {
                        "is the same directory as"
                    } else {
                        "is inside"
                    },
                    outer_kind: outer.0,
                    outer: outer.1.to_path_buf(),
                });
            }
        }
        Ok(())
    }
}

/// A command and its arguments; an argument that is exactly `{path}` becomes the delivered
/// path (a `{path}` inside a larger argument is refused: see [`crate::hooks`]).
pub type HookCommand = Vec<String>;

/// Post-delivery hooks per kind and the pool that runs them (config file `[hooks]`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// After a MISP event is in the feed (e.g. ask MISP to fetch the feed).
    pub misp: Option<HookCommand>,
    /// After a STIX bundle is stored.
    pub stix: Option<HookCommand>,
    /// After an image is in the store (e.g. `lxc image import {path}`).
    pub image: Option<HookCommand>,
    /// After a plain file is delivered.
    pub file: Option<HookCommand>,
    /// Hooks run at once (default 4).
    pub workers: Option<usize>,
    /// Hooks waiting for a worker before new ones are recorded `hook_failed` (default 1024).
    pub queue: Option<usize>,
    /// Seconds a hook may run before its process group is killed (default 300).
    pub timeout: Option<u64>,
}

impl Hooks {
    /// The hook for `kind`, if one is configured.
    pub fn for_kind(&self, kind: ObjectKind) -> Option<&HookCommand> {
        match kind {
            ObjectKind::Misp => self.misp.as_ref(),
            ObjectKind::Stix => self.stix.as_ref(),
            ObjectKind::Image => self.image.as_ref(),
            ObjectKind::File => self.file.as_ref(),
            ObjectKind::ImageSignature => None,
        }
    }

    /// Every configured hook with the name of its kind.
    pub fn commands(&self) -> impl Iterator<Item = (&'static str, &HookCommand)> {
        [
            ("misp", &self.misp),
            ("stix", &self.stix),
            ("image", &self.image),
            ("file", &self.file),
        ]
        .into_iter()
        .filter_map(|(kind, c)| c.as_ref().map(|c| (kind, c)))
    }

    /// Whether any kind has a hook.
    pub fn any(&self) -> bool {
        self.commands().next().is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_layout_is_separate() {
        let out = tempfile::tempdir().unwrap();
        assert_eq!(
            Destinations::under(out.path()).check_separate(out.path()),
            Ok(())
        );
        let mut d = Destinations::under(out.path());
        d.misp = PathBuf::from("/var/www/MISP/app/files/feeds/gapferry");
        assert_eq!(d.check_separate(out.path()), Ok(()));
    }

    #[test]
    fn overlapping_dirs_are_refused_with_a_clear_message() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        let check = |f: &dyn Fn(&mut Destinations)| {
            let mut d = Destinations::under(out);
            f(&mut d);
            d.check_separate(out).unwrap_err()
        };
        // Two kinds in one directory, spelled differently.
        let e = check(&|d| d.stix = out.join("misp/./"));
        assert!(
            matches!(
                e,
                DirsError::Overlap {
                    relation: "is the same directory as",
                    ..
                }
            ),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("[dirs] stix") && text.contains("[dirs] misp"),
            "{text}"
        );
        assert!(text.contains("separate directories"), "{text}");
        // One inside another.
        let e = check(&|d| d.files = out.join("images/files"));
        assert!(
            matches!(
                e,
                DirsError::Overlap {
                    inner_kind: "files",
                    outer_kind: "images",
                    relation: "is inside",
                    ..
                }
            ),
            "{e:?}"
        );
        // A kind at out itself: a file named .gapferry/records.jsonl would land in the state.
        let e = check(&|d| d.files = out.to_path_buf());
        assert!(matches!(e, DirsError::State { kind: "files", .. }), "{e:?}");
        assert!(e.to_string().contains("own state"), "{e}");
        // Above out.
        let e = check(&|d| d.misp = out.parent().unwrap().to_path_buf());
        assert!(
            matches!(
                e,
                DirsError::State {
                    relation: "holds",
                    ..
                }
            ),
            "{e:?}"
        );
        // Inside the state directory, also through `..`.
        let e = check(&|d| d.images = out.join("stix/../.gapferry/images"));
        assert!(
            matches!(
                e,
                DirsError::State {
                    kind: "images",
                    relation: "is inside",
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn a_symbolic_link_does_not_hide_an_overlap() {
        let out = tempfile::tempdir().unwrap();
        let out = out.path();
        std::fs::create_dir_all(out.join("misp")).unwrap();
        std::os::unix::fs::symlink(out.join("misp"), out.join("alias")).unwrap();
        let mut d = Destinations::under(out);
        d.stix = out.join("alias");
        assert!(matches!(
            d.check_separate(out),
            Err(DirsError::Overlap { .. })
        ));
    }
}
