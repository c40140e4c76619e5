//! The watch service's journal: an append-only record, in `<outbox>/.gapferry-send/`, of
//! each file sent in full and of its moving away, so a restart neither loses nor blindly
//! re-sends a file. Also owns [`Stamp`], what "the same file" means to the journal.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Directory under the outbox holding the service's journal.
pub const JOURNAL_DIR: &str = ".gapferry-send";
/// The journal's file name in [`JOURNAL_DIR`].
const JOURNAL_FILE: &str = "journal.jsonl";

/// A file's size and modification time: a file whose stamp changed is another file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Stamp {
    pub(super) size: u64,
    pub(super) mtime_ns: u128,
}

impl Stamp {
    /// The stamp of a file with metadata `meta`.
    pub(super) fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos()),
        }
    }
}

/// What a journal line records (its `event` field on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum JournalEvent {
    /// Every object of the file went out; it may not have been moved away yet.
    Sent,
    /// The file was moved to the sent directory or deleted.
    Moved,
}

/// One journal line. The stamp's fields are spelled out rather than `#[serde(flatten)]`:
/// serde's flatten cannot read a `u128` back, which made every line unreadable.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct JournalEntry {
    pub(super) event: JournalEvent,
    pub(super) path: String,
    size: u64,
    mtime_ns: u128,
    #[serde(default)]
    pub(super) session: String,
    #[serde(default)]
    pub(super) objects: Vec<u32>,
}

impl JournalEntry {
    /// A line without session or objects (compaction, moves).
    pub(super) fn bare(event: JournalEvent, path: &str, stamp: &Stamp) -> Self {
        Self::new(event, path, stamp, String::new(), vec![])
    }

    /// A line about `path` with stamp `stamp`, sent by `session` as `objects`.
    pub(super) fn new(
        event: JournalEvent,
        path: &str,
        stamp: &Stamp,
        session: String,
        objects: Vec<u32>,
    ) -> Self {
        JournalEntry {
            event,
            path: path.to_string(),
            size: stamp.size,
            mtime_ns: stamp.mtime_ns,
            session,
            objects,
        }
    }

    /// The stamp of the file this line is about.
    fn stamp(&self) -> Stamp {
        Stamp {
            size: self.size,
            mtime_ns: self.mtime_ns,
        }
    }
}

/// The append-only record of files sent in full but perhaps not yet moved away.
pub(super) struct Journal {
    pub(super) path: PathBuf,
    /// Files sent in full and not moved away, by path relative to the outbox.
    pub(super) sent: HashMap<String, Stamp>,
}

impl Journal {
    /// Reads the journal of `outbox` and compacts it to what is still pending.
    pub(super) fn open(outbox: &Path) -> io::Result<Journal> {
        let dir = outbox.join(JOURNAL_DIR);
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(JOURNAL_FILE);
        let sent = match std::fs::read_to_string(&path) {
            Ok(text) => pending(&text),
            Err(_) => HashMap::new(),
        };
        // Compact: keep only what is still pending.
        let tmp = dir.join("journal.jsonl.tmp");
        let mut f = std::fs::File::create(&tmp)?;
        for (p, s) in &sent {
            let e = JournalEntry::bare(JournalEvent::Sent, p, s);
            writeln!(
                f,
                "{}",
                serde_json::to_string(&e).map_err(io::Error::other)?
            )?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        Ok(Journal { path, sent })
    }

    /// Appends `e` and syncs it to disk.
    pub(super) fn append(&self, e: &JournalEntry) -> io::Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(f, "{}", serde_json::to_string(e).map_err(io::Error::other)?)?;
        f.sync_data()
    }
}

/// The files a journal's text says were sent and not moved away.
fn pending(text: &str) -> HashMap<String, Stamp> {
    let mut sent = HashMap::new();
    for line in text.lines() {
        // A torn last line (killed mid-write) is ignored: that file is re-sent.
        let Ok(e) = serde_json::from_str::<JournalEntry>(line) else {
            continue;
        };
        match e.event {
            JournalEvent::Sent => {
                sent.insert(e.path.clone(), e.stamp());
            }
            JournalEvent::Moved => {
                sent.remove(&e.path);
            }
        }
    }
    sent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_lines_keep_their_on_disk_form() {
        let stamp = Stamp {
            size: 5,
            mtime_ns: 7,
        };
        let line = serde_json::to_string(&JournalEntry::bare(
            JournalEvent::Sent,
            "misp/a.json",
            &stamp,
        ))
        .unwrap();
        assert_eq!(
            line,
            r#"{"event":"sent","path":"misp/a.json","size":5,"mtime_ns":7,"session":"","objects":[]}"#
        );
        let moved =
            serde_json::to_string(&JournalEntry::bare(JournalEvent::Moved, "x", &stamp)).unwrap();
        assert!(moved.starts_with(r#"{"event":"moved""#), "{moved}");
    }

    #[test]
    fn a_moved_file_is_no_longer_pending_and_torn_or_unknown_lines_are_ignored() {
        let text = concat!(
            r#"{"event":"sent","path":"a","size":1,"mtime_ns":2,"session":"00","objects":[1]}"#,
            "\n",
            r#"{"event":"sent","path":"b","size":3,"mtime_ns":4}"#,
            "\n",
            r#"{"event":"moved","path":"a","size":1,"mtime_ns":2}"#,
            "\n",
            r#"{"event":"lost","path":"b","size":3,"mtime_ns":4}"#,
            "\n",
            r#"{"event":"sent","path":"c","si"#,
        );
        let p = pending(text);
        assert_eq!(p.len(), 1, "{p:?}");
        let real = Stamp {
            size: 9,
            mtime_ns: 1_764_000_000_123_456_789,
        };
        let line =
            serde_json::to_string(&JournalEntry::bare(JournalEvent::Sent, "r", &real)).unwrap();
        assert_eq!(pending(&line)["r"], real, "a real mtime reads back: {line}");
        assert_eq!(
            p["b"],
            Stamp {
                size: 3,
                mtime_ns: 4
            }
        );
    }

    #[test]
    fn opening_compacts_to_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path()).unwrap();
        let s = Stamp {
            size: 1,
            mtime_ns: 1,
        };
        j.append(&JournalEntry::bare(JournalEvent::Sent, "a", &s))
            .unwrap();
        j.append(&JournalEntry::bare(JournalEvent::Sent, "b", &s))
            .unwrap();
        j.append(&JournalEntry::bare(JournalEvent::Moved, "a", &s))
            .unwrap();
        let j = Journal::open(dir.path()).unwrap();
        assert_eq!(j.sent.keys().collect::<Vec<_>>(), ["b"]);
        let text = std::fs::read_to_string(&j.path).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
    }
}
