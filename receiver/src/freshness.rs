//! Keeping the replay-protection state of a keyed receiver across restarts:
//! `OUT/.gapferry/sessions.json`, written atomically whenever it changed (at most once a
//! tick) and when the receiver stops.

use gapferry_common::freshness::Freshness;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File name of the state inside the state directory.
pub const SESSIONS_FILE: &str = "sessions.json";

/// Where the state lives, and loading and saving it.
#[derive(Debug, Clone)]
pub struct FreshnessFile {
    path: PathBuf,
}

impl FreshnessFile {
    /// The state file under `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        FreshnessFile {
            path: state_dir.join(SESSIONS_FILE),
        }
    }

    /// Reads the state; a missing file is a fresh start. A file that does not parse is an
    /// error: starting without it would accept every replay.
    pub fn load(&self) -> io::Result<Freshness> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{} does not parse ({e}); it holds the replay protection of keyed \
                         links: restore it from a backup, or delete it to start afresh \
                         (captured traffic of known sessions would then be accepted once more)",
                        self.path.display()
                    ),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Freshness::default()),
            Err(e) => Err(e),
        }
    }

    /// Writes the state if it changed, by rename, fsynced.
    pub fn save_if_dirty(&self, state: &mut Freshness) -> io::Result<()> {
        if !state.dirty() {
            return Ok(());
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&serde_json::to_vec(state).map_err(io::Error::other)?)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        state.saved();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_common::freshness::session_id;

    #[test]
    fn round_trips_and_refuses_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = FreshnessFile::new(dir.path());
        let mut state = file.load().unwrap();
        state.admit(session_id(100, 1)).unwrap();
        state.closed(session_id(100, 1));
        file.save_if_dirty(&mut state).unwrap();
        assert!(!state.dirty());
        let mut again = file.load().unwrap();
        assert!(again.admit(session_id(100, 1)).is_err());
        std::fs::write(dir.path().join(SESSIONS_FILE), b"{not json").unwrap();
        let err = file.load().unwrap_err();
        assert!(err.to_string().contains("replay protection"), "{err}");
    }
}
