//! Small filesystem and text helpers shared by the stores: atomic writes (stage in the
//! destination directory, set mode and group, fsync, rename, fsync the directory), the
//! [`Publish`] permissions every delivered file and created directory gets, uuid checks
//! and hex.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Mode of delivered files unless configured otherwise: readable by MISP's web server user.
pub const DEFAULT_FILE_MODE: u32 = 0o644;
/// Mode of directories the stores create unless configured otherwise: traversable by all.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// The permissions a store publishes with: the mode of every file it delivers, the mode of
/// every directory it creates, and optionally their group. Set on the staging file before
/// its rename, so a reader never sees a delivered file with other permissions; never taken
/// from what the sender says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Publish {
    /// Permission bits of delivered files (at most 0o777).
    pub file_mode: u32,
    /// Permission bits of created directories (at most 0o777).
    pub dir_mode: u32,
    /// Group id given to delivered files and created directories; `None` keeps the
    /// receiver's own group.
    pub gid: Option<u32>,
}

impl Default for Publish {
    fn default() -> Self {
        Publish {
            file_mode: DEFAULT_FILE_MODE,
            dir_mode: DEFAULT_DIR_MODE,
            gid: None,
        }
    }
}

impl Publish {
    /// Gives an open file (a staging file, before its rename) the group and file mode.
    pub fn apply_to_file(&self, file: &File) -> io::Result<()> {
        if let Some(gid) = self.gid {
            std::os::unix::fs::fchown(file, None, Some(gid))?;
        }
        // After fchown, which may clear mode bits.
        file.set_permissions(fs::Permissions::from_mode(self.file_mode & 0o777))
    }

    /// Gives a directory this receiver just created the group and directory mode.
    pub fn apply_to_dir(&self, dir: &Path) -> io::Result<()> {
        let handle = File::open(dir)?;
        if !handle.metadata()?.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} is not a directory", dir.display()),
            ));
        }
        if let Some(gid) = self.gid {
            std::os::unix::fs::fchown(&handle, None, Some(gid))?;
        }
        handle.set_permissions(fs::Permissions::from_mode(self.dir_mode & 0o777))
    }

    /// Creates `dir` and its missing parents, giving each directory it creates the group
    /// and directory mode (whatever the umask); existing directories are left as they are.
    pub fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.as_os_str().is_empty() || fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.create_dir_all(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => self.apply_to_dir(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Prefix of every staging file the stores create; names starting with it are never
/// taken for content.
pub(crate) const STAGE_PREFIX: &str = ".gapferry-stage-";

/// Opens a new staging file in `dir` (same filesystem as the final name), already with
/// the mode and group `publish` gives delivered files.
pub(crate) fn stage_in(dir: &Path, publish: &Publish) -> io::Result<tempfile::NamedTempFile> {
    let staged = tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .suffix(".tmp")
        .tempfile_in(dir)?;
    publish.apply_to_file(staged.as_file())?;
    Ok(staged)
}

/// Writes `bytes` to `dest` atomically: staging file in the same directory with
/// `publish`'s mode and group, fsync, rename over `dest`, fsync of the directory.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8], publish: &Publish) -> io::Result<()> {
    write_atomic_with(dest, publish, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` into a buffered writer.
pub(crate) fn write_atomic_with(
    dest: &Path,
    publish: &Publish,
    fill: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_of(dest);
    let staged = stage_in(dir, publish)?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 16, staged.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    staged.as_file().sync_all()?;
    staged.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)
}

/// Files written in their destination directories but not yet visible, published
/// together (group commit): every staging file fsynced, then all renamed in order, then
/// each destination directory fsynced once. A batch of fsyncs rather than one `syncfs`:
/// on ext4 the first fsync commits the journal for the whole group and the others find
/// their inodes committed, while `syncfs` would also flush whatever else is dirty on the
/// filesystem (large objects being staged, other programs), a cost the group cannot bound.
#[derive(Debug, Default)]
pub(crate) struct StagedFiles {
    items: Vec<(tempfile::NamedTempFile, PathBuf)>,
    /// Whether every item staged so far is fsynced.
    synced: bool,
}

impl StagedFiles {
    /// Writes `bytes` to a staging file next to `dest` with `publish`'s mode and group;
    /// nothing is visible under `dest` until [`StagedFiles::publish`].
    pub(crate) fn stage(&mut self, dest: &Path, bytes: &[u8], publish: &Publish) -> io::Result<()> {
        let mut staged = stage_in(parent_of(dest), publish)?;
        staged.write_all(bytes)?;
        self.items.push((staged, dest.to_path_buf()));
        self.synced = false;
        Ok(())
    }

    /// How many files are staged; the next [`StagedFiles::stage`] gets this index.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The staging file of item `k` (its bytes, under a name nobody reads).
    pub(crate) fn staged_path(&self, k: usize) -> Option<&Path> {
        self.items.get(k).map(|(staged, _)| staged.path())
    }

    /// Makes every staged file durable (before anything else links or renames them).
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if !self.synced {
            for (staged, _) in &self.items {
                staged.as_file().sync_all()?;
            }
            self.synced = true;
        }
        Ok(())
    }

    /// Makes every staged file durable, renames each over its destination (in the order
    /// staged: a later one of the same name wins) and fsyncs each directory once. On an
    /// error, what was not renamed yet is removed.
    pub(crate) fn publish(mut self) -> io::Result<()> {
        self.sync()?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (staged, dest) in self.items {
            let dir = parent_of(&dest).to_path_buf();
            staged.persist(&dest).map_err(|e| e.error)?;
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs.iter().try_for_each(|d| sync_dir(d))
    }
}

/// fsyncs a directory so that renames inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory holding `path` (`.` for a bare name).
pub(crate) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` (and its parents, with `publish`'s directory mode and group) if missing
/// and refuses it when it is a symlink or not a directory.
pub(crate) fn ensure_real_dir(dir: &Path, publish: &Publish) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            publish.create_dir_all(dir)?;
            if let Some(parent) = dir.parent() {
                if !parent.as_os_str().is_empty() {
                    // Make the new entry durable; failure here is not worth refusing for.
                    let _ = sync_dir(parent);
                }
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// True when `s` is a canonical textual UUID (8-4-4-4-12 hexadecimal digits).
pub(crate) fn is_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Lower-case hexadecimal of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// `path` joined with `name`, as a `PathBuf`.
pub(crate) fn child(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Number of days in `month` of `year` (Gregorian), 0 for an invalid month.
pub(crate) fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_shapes() {
        assert!(is_uuid("0dbb179a-1c8c-4e7c-a264-2440414dbac8"));
        assert!(is_uuid("0DBB179A-1C8C-4E7C-A264-2440414DBAC8"));
        assert!(!is_uuid("0dbb179a-1c8c-4e7c-a264-2440414dbac"));
        assert!(!is_uuid("0dbb179a-1c8c-4e7c-a264-2440414dbac8x"));
        assert!(!is_uuid("../../../../etc/passwd-aaaaaaaaaaaaaaa"));
        assert!(!is_uuid("0dbb179a_1c8c-4e7c-a264-2440414dbac8"));
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x");
        let publish = Publish::default();
        write_atomic(&p, b"one", &publish).unwrap();
        write_atomic(&p, b"two", &publish).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
        // Readable as a file created with the process umask, not a private 0600.
        use std::os::unix::fs::PermissionsExt;
        let umask = fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .map(|m| u32::from_str_radix(m.trim(), 8).unwrap())
            .unwrap();
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644 & !umask, "mode {mode:o} with umask {umask:o}");
    }

    fn mode_of(p: &Path) -> u32 {
        fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn atomic_writes_and_created_directories_get_the_configured_modes() {
        let d = tempfile::tempdir().unwrap();
        for (file_mode, dir_mode) in [(0o644, 0o755), (0o640, 0o750), (0o600, 0o700)] {
            let publish = Publish {
                file_mode,
                dir_mode,
                gid: None,
            };
            let dir = d.path().join(format!("{dir_mode:o}/a/b"));
            ensure_real_dir(&dir, &publish).unwrap();
            for created in [
                dir.as_path(),
                dir.parent().unwrap(),
                &d.path().join(format!("{dir_mode:o}")),
            ] {
                assert_eq!(mode_of(created), dir_mode, "{}", created.display());
            }
            let p = dir.join("x");
            write_atomic(&p, b"one", &publish).unwrap();
            assert_eq!(mode_of(&p), file_mode);
            // A replaced file takes the mode again, whatever the old one had.
            fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap();
            write_atomic(&p, b"two", &publish).unwrap();
            assert_eq!(mode_of(&p), file_mode);
        }
        // An existing directory keeps its mode: the operator chose it.
        let existing = d.path().join("existing");
        fs::create_dir(&existing).unwrap();
        fs::set_permissions(&existing, fs::Permissions::from_mode(0o711)).unwrap();
        ensure_real_dir(&existing, &Publish::default()).unwrap();
        assert_eq!(mode_of(&existing), 0o711);
    }

    #[test]
    fn the_group_is_set_on_files_and_directories() {
        use std::os::unix::fs::MetadataExt;
        let d = tempfile::tempdir().unwrap();
        // Our own primary group is always allowed, with or without privileges.
        let gid = fs::metadata(d.path()).unwrap().gid();
        let other = if gid == 0 { 65534 } else { gid };
        let publish = Publish {
            gid: Some(other),
            ..Publish::default()
        };
        let dir = d.path().join("g/h");
        match ensure_real_dir(&dir, &publish) {
            Ok(()) => {}
            // Not root and 65534 is not one of our groups: nothing to check here.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return,
            Err(e) => panic!("{e}"),
        }
        let p = dir.join("x");
        write_atomic(&p, b"x", &publish).unwrap();
        for path in [&dir, &p, &d.path().join("g")] {
            assert_eq!(
                fs::metadata(path).unwrap().gid(),
                other,
                "{}",
                path.display()
            );
        }
        assert_eq!(mode_of(&p), DEFAULT_FILE_MODE);
        assert_eq!(mode_of(&dir), DEFAULT_DIR_MODE);
    }
}
