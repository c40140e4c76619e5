//! Where each kind of object is delivered, the permissions it is published with, and the
//! post-delivery hooks.

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
    /// Commands run after each delivery, per kind.
    pub hooks: Hooks,
    /// File mode, directory mode and group per kind.
    pub permissions: Permissions,
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
            hooks: Hooks::default(),
            permissions: Permissions::default(),
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

/// A command and its arguments; `{path}` in an argument becomes the delivered path.
pub type HookCommand = Vec<String>;

/// Post-delivery hooks per kind (config file `[hooks]`).
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
}
