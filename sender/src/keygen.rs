//! Creating a new pre-shared key file.

use gapferry_common::Key;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes a new random key to `path` with mode 0600; refuses to overwrite unless `force`.
pub fn write_new_key(path: &Path, force: bool) -> std::io::Result<Key> {
    let key = Key::from_bytes(rand::random());
    let mut opts = OpenOptions::new();
    opts.write(true).mode(0o600);
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let mut f = opts.open(path)?;
    f.write_all(format!("{}\n", key.to_hex()).as_bytes())?;
    f.sync_all()?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_file_is_private_and_parses() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let key = write_new_key(&p, false).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(Key::parse(&std::fs::read(&p).unwrap()).unwrap(), key);
        assert!(write_new_key(&p, false).is_err());
        assert_ne!(write_new_key(&p, true).unwrap(), key);
    }
}
