//! The lanes' state file (`OUTBOX/.gapferry-send/lanes.json`), written by the outbox service
//! about once a second, and the lane lines of `gapferry-send status` read from it.

use super::LaneCounts;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// File name of the lanes' state inside the outbox's journal directory.
pub const LANES_FILE: &str = "lanes.json";
/// Least time between two writes of the state file.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// One lane as the state file holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaneState {
    /// The lane's destination.
    pub lane: String,
    /// Its rate, bits per second.
    pub rate_bps: u64,
    /// Datagrams sent.
    pub datagrams: u64,
    /// UDP payload bytes sent.
    pub bytes: u64,
    /// Sends its socket refused.
    pub send_errors: u64,
    /// Its last send failed.
    pub failing: bool,
}

/// The file as written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LanesState {
    /// When it was written, Unix seconds.
    pub written_unix: u64,
    /// Every lane, in `--to` order.
    pub lanes: Vec<LaneState>,
}

/// Writes the state file at most once per [`WRITE_EVERY`].
pub struct StateFile {
    dir: PathBuf,
    written: Option<Instant>,
}

impl StateFile {
    /// A writer into `dir` (the outbox's journal directory).
    pub fn new(dir: PathBuf) -> Self {
        StateFile { dir, written: None }
    }

    /// Writes `lanes` when the last write is old enough (`force`: now); a failure is
    /// logged, never stops sending.
    pub fn update(&mut self, lanes: impl FnOnce() -> Vec<LaneState>, force: bool) {
        if !force && self.written.is_some_and(|w| w.elapsed() < WRITE_EVERY) {
            return;
        }
        self.written = Some(Instant::now());
        let state = LanesState {
            written_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            lanes: lanes(),
        };
        let tmp = self.dir.join(format!(".{LANES_FILE}.tmp"));
        let result = serde_json::to_vec_pretty(&state)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&tmp, b))
            .and_then(|()| std::fs::rename(&tmp, self.dir.join(LANES_FILE)));
        if let Err(e) = result {
            tracing::warn!("cannot write the lanes' state for `status`: {e}");
        }
    }
}

impl LaneState {
    /// A lane's state from its counts.
    pub fn of(lane: &str, rate_bps: u64, c: &LaneCounts, failing: bool) -> Self {
        LaneState {
            lane: lane.to_string(),
            rate_bps,
            datagrams: c.datagrams,
            bytes: c.bytes,
            send_errors: c.send_errors,
            failing,
        }
    }
}

/// The lane lines of `gapferry-send status` from `journal`'s state file at `now` (Unix
/// seconds); nothing without one (a single `--to` writes none).
pub fn report(journal: &Path, now: u64) -> String {
    let Some(state) = std::fs::read(journal.join(LANES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<LanesState>(&b).ok())
    else {
        return String::new();
    };
    let mut text = format!(
        "lanes: {} (counts of the running service, {} s old)\n",
        state.lanes.len(),
        now.saturating_sub(state.written_unix)
    );
    for l in &state.lanes {
        text += &format!(
            "  lane {}: {} at {} bit/s: {} datagrams, {} bytes, {} send errors\n",
            gapferry_common::name::escape(&l.lane),
            if l.failing { "failing" } else { "sending" },
            l.rate_bps,
            l.datagrams,
            l.bytes,
            l.send_errors
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_state_reads_back_as_one_line_per_lane() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(report(dir.path(), 0), "");
        let mut f = StateFile::new(dir.path().to_path_buf());
        let counts = LaneCounts {
            datagrams: 10,
            bytes: 14_000,
            send_errors: 2,
        };
        f.update(
            || {
                vec![
                    LaneState::of("192.0.2.10:7000", 600_000_000, &counts, false),
                    LaneState::of("192.0.2.11:7000", 200_000_000, &LaneCounts::default(), true),
                ]
            },
            false,
        );
        // Within a second only a forced write goes to disk.
        f.update(Vec::new, false);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t = report(dir.path(), now);
        assert!(
            t.starts_with("lanes: 2 (counts of the running service, "),
            "{t}"
        );
        assert!(t.contains("  lane 192.0.2.10:7000: sending at 600000000 bit/s: 10 datagrams, 14000 bytes, 2 send errors\n"), "{t}");
        assert!(
            t.contains("  lane 192.0.2.11:7000: failing at 200000000 bit/s: 0 datagrams"),
            "{t}"
        );
        f.update(Vec::new, true);
        assert!(report(dir.path(), now).starts_with("lanes: 0"));
    }
}
