//! The high side's image store, in the layout MISP-airgap's image server uses:
//!
//! ```text
//! <store>/<stem>/<stem>.tar.gz         the LXD unified image (or .tar.xz)
//! <store>/<stem>/<stem>.tar.gz.sig     its detached signature, when one was sent
//! <store>/<stem>/SHA256SUMS            "<sha256>  <stem>.tar.gz\n", as sha256sum prints it
//! <store>/latest_<Link> -> <stem>      relative symlink to the newest build of Name
//! ```
//!
//! Rules:
//! - `Name` is the part of the stem before its first `_` (`MISP_v2.5.1_<commit>` → `MISP`),
//!   the whole stem when it has none; the stem is the file name less `.tar.gz`, `.tgz`,
//!   `.tar.xz` or `.txz`; the stored suffix follows the content (gzip or xz);
//! - the link is named as MISP-airgap's `update_tracker.py` names it with its shipped
//!   `tracker.json`: `latest_MISP`, `latest_MySQL`, `latest_Redis`, `latest_Valkey`, and
//!   `latest_MISP-modules` for the `Modules_<version>` images (see [`latest_link`]);
//! - "newest" is the newest build, as the tracker links the image it built last: builds
//!   are ordered by `creation_date` in their `metadata.yaml` (read from the head of the
//!   tarball; one without is older than one with); equal or missing dates by version (the
//!   first `_`-separated token after `Name`, less a leading `v`, cut on `.`, `-`, `+` and
//!   `~` into numeric parts up to the first part that is not all digits: `v2.5.10` →
//!   2.5.10 > `v2.5.9`; a stem with a version is newer than one without), then by delivery
//!   time (the modification time of their `SHA256SUMS`), then by name. So an older build
//!   that arrives later (a replay, an old file sent again) neither moves `latest_` nor
//!   pushes a newer build out, while a rebuild is linked even if its version is lower;
//! - the `keep` newest of each Name are kept, older directories are removed; an image
//!   older than all kept ones is delivered and then pruned at once (`retained: false`);
//! - the sha256 of the tarball is the fingerprint `lxc image import` shows;
//! - the staged tarball and signature are moved in by rename (the staging directory must
//!   be on the store's filesystem); a name with `/`, `\`, `..`, a control character or a
//!   leading `.` is refused; the store never follows a symlink it did not make: a symlink
//!   where an image directory should be is refused, one in place of a file is replaced;
//! - the tarball, signature and `SHA256SUMS` get the store's [`Publish`] file mode and
//!   group before their rename, directories the store creates its directory mode.

use crate::fsutil::{ensure_real_dir, hex, sync_dir, write_atomic, Publish};
use crate::kind::Compression;
use sha2::{Digest, Sha256};
use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use thiserror::Error;

/// Versions of each image name kept by default.
pub const DEFAULT_KEEP: usize = 3;
/// Name of the checksum file in each image directory.
pub const SUMS: &str = "SHA256SUMS";
/// Prefix of the per-name symlink to the newest version.
pub const LATEST_PREFIX: &str = "latest_";

/// The `latest_` link of image `name`, as MISP-airgap's tracker names it: its
/// `tracker.json` builds the `Modules` images under the tracker name `MISP-modules`.
pub fn latest_link(name: &str) -> String {
    match name {
        "Modules" => format!("{LATEST_PREFIX}MISP-modules"),
        _ => format!("{LATEST_PREFIX}{name}"),
    }
}

/// Why an image was not delivered.
#[derive(Debug, Error)]
pub enum ImageError {
    /// The file name cannot name an image in the store.
    #[error("image name {name:?} refused: {reason}; rename the tarball on the low side (e.g. MISP_v2.5.1_<commit>.tar.gz) and send it again")]
    BadName {
        /// The refused name.
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The staged file is neither gzip nor xz.
    #[error("{} is neither gzip nor xz compressed: LXD unified images travel as .tar.gz or .tar.xz; send other files as kind `file`", .0.display())]
    NotATarball(PathBuf),
    /// The staged tarball or signature is missing, a symlink or not a regular file.
    #[error("staged file {} is not a regular file; this is a receiver bug or a tampered staging directory", .0.display())]
    NotARegularFile(PathBuf),
    /// Something that is not the store's own sits where the store writes.
    #[error("{} is a symlink or not a directory where the image store keeps its own directory; remove it by hand (nothing was written)", .0.display())]
    Planted(PathBuf),
    /// The staged file is on another filesystem than the store.
    #[error("cannot move {} into {} by rename: put the receiver's staging directory on the image store's filesystem", from.display(), to.display())]
    CrossDevice {
        /// The staged file.
        from: PathBuf,
        /// The destination.
        to: PathBuf,
    },
    /// Reading or writing the store failed.
    #[error("image store {}: {source}; check that it is writable by the receiver and that the disk has room", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ImageError + '_ {
    move |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One image delivered into the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveredImage {
    /// The image name (`MISP`, `MySQL`, ...).
    pub name: String,
    /// The stem (`MISP_v2.5.1_<commit>`), also its directory name.
    pub stem: String,
    /// The tarball's path in the store.
    pub path: PathBuf,
    /// The signature's path, when one was delivered.
    pub signature: Option<PathBuf>,
    /// sha256 of the tarball, lower-case hex: the LXD image fingerprint.
    pub sha256: String,
    /// The `SHA256SUMS` path.
    pub sums: PathBuf,
    /// The `latest_` symlink of its name (see [`latest_link`]).
    pub latest: PathBuf,
    /// The stem `latest_<Name>` points to.
    pub latest_stem: String,
    /// Stems removed by retention.
    pub removed: Vec<String>,
    /// False when this image was older than the kept versions and was pruned at once.
    pub retained: bool,
    /// True when the store already held these exact bytes under this stem.
    pub already_present: bool,
}

/// The image store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    dir: PathBuf,
    keep: usize,
    publish: Publish,
}

/// Splits a tarball file name into its stem and Name, refusing unsafe names.
pub fn image_stem(file_name: &str) -> Result<(String, String), ImageError> {
    let bad = |reason| ImageError::BadName {
        name: file_name.to_string(),
        reason,
    };
    if file_name.is_empty() {
        return Err(bad("empty"));
    }
    if file_name.len() > 200 {
        return Err(bad("longer than 200 bytes"));
    }
    if file_name.contains('/') || file_name.contains('\\') {
        return Err(bad("it holds a path separator"));
    }
    if file_name.contains("..") {
        return Err(bad("it holds `..`"));
    }
    if file_name.chars().any(char::is_control) {
        return Err(bad("it holds a control character"));
    }
    if file_name.starts_with('.') {
        return Err(bad("it starts with `.`"));
    }
    let stem = [".tar.gz", ".tgz", ".tar.xz", ".txz"]
        .iter()
        .find_map(|s| file_name.strip_suffix(s))
        .unwrap_or(file_name);
    if stem.is_empty() {
        return Err(bad("nothing before the extension"));
    }
    if stem.starts_with(LATEST_PREFIX) {
        return Err(bad("`latest_` is reserved for the store's links"));
    }
    let name = stem.split('_').next().unwrap_or(stem);
    if name.is_empty() {
        return Err(bad("it starts with `_`, leaving no image name"));
    }
    Ok((stem.to_string(), name.to_string()))
}

/// The compression of a staged tarball, from its first bytes; not gzip nor xz is refused.
fn staged_compression(staged: &Path) -> Result<Compression, ImageError> {
    let mut head = [0u8; 6];
    let n = File::open(staged)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io_err(staged))?;
    Compression::sniff(&head[..n]).ok_or_else(|| ImageError::NotATarball(staged.to_path_buf()))
}

/// The numeric version parts of a stem (see the module rules).
pub fn version_key(stem: &str) -> Vec<u64> {
    let Some((_, after)) = stem.split_once('_') else {
        return Vec::new();
    };
    let token = after.split('_').next().unwrap_or("");
    let token = token
        .strip_prefix('v')
        .or_else(|| token.strip_prefix('V'))
        .unwrap_or(token);
    token
        .split(['.', '-', '+', '~'])
        .map_while(|p| {
            if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                p.parse().ok()
            } else {
                None
            }
        })
        .collect()
}

struct Version {
    stem: String,
    key: Vec<u64>,
    /// `creation_date` of its `metadata.yaml` (`i64::MIN` when it declares none).
    built: i64,
    delivered: SystemTime,
}

fn newest_first(a: &Version, b: &Version) -> Ordering {
    b.built
        .cmp(&a.built)
        .then(b.key.cmp(&a.key))
        .then(b.delivered.cmp(&a.delivered))
        .then(b.stem.cmp(&a.stem))
}

fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn regular_file(path: &Path) -> Result<(), ImageError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(ImageError::NotARegularFile(path.to_path_buf())),
    }
}

fn move_in(from: &Path, to: &Path, publish: &Publish) -> Result<(), ImageError> {
    File::open(from)
        .and_then(|f| {
            publish.apply_to_file(&f)?;
            f.sync_all()
        })
        .map_err(io_err(from))?;
    fs::rename(from, to).map_err(|e| {
        if e.raw_os_error() == Some(18) {
            // EXDEV
            ImageError::CrossDevice {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            }
        } else {
            io_err(to)(e)
        }
    })
}

fn remove_file_if_any(path: &Path) -> Result<(), ImageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(path)(e)),
        _ => Ok(()),
    }
}

/// The sha256 recorded in an image directory's `SHA256SUMS` for `file`, if any.
fn recorded_sum(dir: &Path, file: &str) -> Option<String> {
    let path = dir.join(SUMS);
    if !fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let text = fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let (sum, name) = l.split_once("  ")?;
        (name == file).then(|| sum.to_string())
    })
}

impl ImageStore {
    /// A store in `dir` keeping the `keep` newest versions of each name (at least 1);
    /// the directory is created on first delivery.
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Self {
        ImageStore {
            dir: dir.into(),
            keep: keep.max(1),
            publish: Publish::default(),
        }
    }

    /// The same store, publishing images with `publish`'s modes and group.
    pub fn with_publish(mut self, publish: Publish) -> Self {
        self.publish = publish;
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How many versions of each name are kept.
    pub fn keep(&self) -> usize {
        self.keep
    }

    /// Moves a staged tarball (and its signature) into the store under `file_name`,
    /// writes `SHA256SUMS`, applies retention and points `latest_<Name>` at the newest.
    pub fn deliver_image(
        &self,
        staged_tarball: &Path,
        file_name: &str,
        signature: Option<&Path>,
    ) -> Result<DeliveredImage, ImageError> {
        let (stem, name) = image_stem(file_name)?;
        regular_file(staged_tarball)?;
        if let Some(sig) = signature {
            regular_file(sig)?;
        }
        let compression = staged_compression(staged_tarball)?;
        let sha256 = sha256_file(staged_tarball).map_err(io_err(staged_tarball))?;
        let image_dir = self.image_dir(&stem)?;

        let file = format!("{stem}{}", compression.suffix());
        let dest = image_dir.join(&file);
        let sig_dest = image_dir.join(format!("{file}.sig"));
        let already_present = fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file())
            && recorded_sum(&image_dir, &file).as_deref() == Some(sha256.as_str());

        move_in(staged_tarball, &dest, &self.publish)?;
        match signature {
            Some(sig) => move_in(sig, &sig_dest, &self.publish)?,
            // A signature of other bytes would no longer match.
            None if !already_present => remove_file_if_any(&sig_dest)?,
            None => {}
        }
        // Only one tarball per directory: drop one stored with the other compression.
        for other in [Compression::Gzip, Compression::Xz] {
            if other != compression {
                let stale = image_dir.join(format!("{stem}{}", other.suffix()));
                remove_file_if_any(&stale)?;
                remove_file_if_any(&stale.with_file_name(format!("{stem}{}.sig", other.suffix())))?;
            }
        }
        let sums = image_dir.join(SUMS);
        write_atomic(
            &sums,
            format!("{sha256}  {file}\n").as_bytes(),
            &self.publish,
        )
        .map_err(io_err(&sums))?;
        sync_dir(&image_dir).map_err(io_err(&image_dir))?;

        let (latest, latest_stem, removed) = self.retain(&name)?;
        let retained = !removed.contains(&stem);
        Ok(DeliveredImage {
            name,
            path: dest,
            signature: signature.map(|_| sig_dest),
            sha256,
            sums,
            latest,
            latest_stem,
            removed,
            retained,
            already_present,
            stem,
        })
    }

    /// The directory of image version `stem`, created (with the store) when missing; a
    /// non-directory planted under its name is refused.
    fn image_dir(&self, stem: &str) -> Result<PathBuf, ImageError> {
        let store = &self.dir;
        ensure_real_dir(store, &self.publish).map_err(io_err(store))?;
        let image_dir = store.join(stem);
        match fs::symlink_metadata(&image_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(ImageError::Planted(image_dir)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&image_dir).map_err(io_err(&image_dir))?;
                self.publish
                    .apply_to_dir(&image_dir)
                    .map_err(io_err(&image_dir))?;
                sync_dir(store).map_err(io_err(store))?;
            }
            Err(e) => return Err(io_err(&image_dir)(e)),
        }
        Ok(image_dir)
    }

    /// The stored versions of `name`, newest first.
    fn versions(&self, name: &str) -> Result<Vec<Version>, ImageError> {
        let store = &self.dir;
        let mut out = Vec::new();
        for entry in fs::read_dir(store).map_err(io_err(store))? {
            let entry = entry.map_err(io_err(store))?;
            let Ok(stem) = entry.file_name().into_string() else {
                continue;
            };
            if stem.starts_with('.') || stem.starts_with(LATEST_PREFIX) {
                continue;
            }
            if stem.split('_').next() != Some(name) {
                continue;
            }
            if !entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                continue;
            }
            let dir = entry.path();
            let Some(tarball) = [Compression::Gzip, Compression::Xz]
                .iter()
                .map(|c| dir.join(format!("{stem}{}", c.suffix())))
                .find(|p| fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            else {
                continue;
            };
            let built = crate::kind::image_creation_date(&tarball).unwrap_or(i64::MIN);
            let delivered = fs::symlink_metadata(dir.join(SUMS))
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(Version {
                key: version_key(&stem),
                stem,
                built,
                delivered,
            });
        }
        out.sort_by(newest_first);
        Ok(out)
    }

    /// Removes all but the `keep` newest versions of `name` and points its `latest_` link at
    /// the newest. Returns the link, its target stem and the removed stems.
    fn retain(&self, name: &str) -> Result<(PathBuf, String, Vec<String>), ImageError> {
        let store = &self.dir;
        let versions = self.versions(name)?;
        let mut removed = Vec::new();
        for old in versions.iter().skip(self.keep) {
            let path = store.join(&old.stem);
            // remove_dir_all does not follow symlinks inside the directory.
            fs::remove_dir_all(&path).map_err(io_err(&path))?;
            removed.push(old.stem.clone());
        }
        let newest = versions
            .first()
            .map(|v| v.stem.clone())
            .ok_or_else(|| io_err(store)(io::Error::other("no version left after delivery")))?;
        let link = latest_link(name);
        let latest = store.join(&link);
        match fs::symlink_metadata(&latest) {
            Ok(m) if m.is_dir() => return Err(ImageError::Planted(latest)),
            Ok(m)
                if m.file_type().is_symlink()
                    && fs::read_link(&latest).is_ok_and(|t| t == Path::new(&newest)) =>
            {
                sync_dir(store).map_err(io_err(store))?;
                return Ok((latest, newest, removed));
            }
            _ => {}
        }
        let tmp = store.join(format!(".{link}.{}.tmp", std::process::id()));
        remove_file_if_any(&tmp)?;
        std::os::unix::fs::symlink(&newest, &tmp).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &latest).map_err(io_err(&latest))?;
        sync_dir(store).map_err(io_err(store))?;
        Ok((latest, newest, removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_and_names() {
        assert_eq!(
            image_stem("MISP_v2.5.1_abc.tar.gz").unwrap(),
            ("MISP_v2.5.1_abc".into(), "MISP".into())
        );
        assert_eq!(
            image_stem("Redis.tar.xz").unwrap(),
            ("Redis".into(), "Redis".into())
        );
        for bad in [
            "",
            "a/b.tar.gz",
            "..tar.gz",
            "x..y.tar.gz",
            ".hidden.tar.gz",
            "latest_MISP.tar.gz",
            "a\nb.tar.gz",
            "_x.tar.gz",
            ".tar.gz",
        ] {
            assert!(image_stem(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn link_names_follow_the_tracker() {
        for (name, link) in [
            ("MISP", "latest_MISP"),
            ("Modules", "latest_MISP-modules"),
            ("MySQL", "latest_MySQL"),
            ("Redis", "latest_Redis"),
            ("Valkey", "latest_Valkey"),
        ] {
            assert_eq!(latest_link(name), link);
        }
    }

    #[test]
    fn versions_compare() {
        assert_eq!(version_key("MISP_v2.5.10_abc"), vec![2, 5, 10]);
        assert_eq!(version_key("MySQL_10.11.2"), vec![10, 11, 2]);
        assert_eq!(version_key("MISP_2024-05-01"), vec![2024, 5, 1]);
        assert_eq!(version_key("MISP_4a3b2c"), Vec::<u64>::new());
        assert_eq!(version_key("MISP"), Vec::<u64>::new());
        assert_eq!(version_key("MISP_2.5.1rc1_x"), vec![2, 5]);
        assert!(version_key("MISP_v2.5.10_a") > version_key("MISP_v2.5.9_b"));
    }
}
