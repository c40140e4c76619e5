//! Small filesystem and text helpers shared by the stores: atomic writes (stage in the
//! destination directory, fsync, rename, fsync the directory), uuid checks and hex.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Prefix of every staging file the stores create; names starting with it are never
/// taken for content.
pub(crate) const STAGE_PREFIX: &str = ".gapferry-stage-";

/// Opens a new staging file in `dir` (same filesystem as the final name), mode 0644 less
/// the process umask like any other file the receiver writes (a temporary file's 0600
/// would hide the feed from MISP, which reads it as another user).
pub(crate) fn stage_in(dir: &Path) -> io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(STAGE_PREFIX)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(0o644))
        .tempfile_in(dir)
}

/// Writes `bytes` to `dest` atomically: staging file in the same directory, fsync,
/// rename over `dest`, fsync of the directory.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(dest, |w| w.write_all(bytes))
}

/// Like [`write_atomic`], with the content produced by `fill` into a buffered writer.
pub(crate) fn write_atomic_with(
    dest: &Path,
    fill: impl FnOnce(&mut io::BufWriter<&File>) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_of(dest);
    let staged = stage_in(dir)?;
    {
        let mut w = io::BufWriter::with_capacity(1 << 16, staged.as_file());
        fill(&mut w)?;
        w.flush()?;
    }
    staged.as_file().sync_all()?;
    staged.persist(dest).map_err(|e| e.error)?;
    sync_dir(dir)
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

/// Creates `dir` (and its parents) if missing and refuses it when it is a symlink or not
/// a directory.
pub(crate) fn ensure_real_dir(dir: &Path) -> io::Result<()> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a directory", dir.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
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
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
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
}
