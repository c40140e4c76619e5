//! The machine-readable record of every object delivered, failed or lost: JSON lines in
//! `<out>/.gapferry/records.jsonl`.

use serde::Serialize;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Directory under `--out` holding the receiver's own state.
pub const STATE_DIR: &str = ".gapferry";
/// File name of the record log inside [`STATE_DIR`].
pub const RECORDS_FILE: &str = "records.jsonl";

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Verified and published.
    Delivered,
    /// Seen but not delivered; `reason` says why.
    Failed,
    /// Sent by the sender but never seen.
    Lost,
    /// Delivered before (same name and content); ignored without decoding it again.
    Skipped,
    /// Delivered, but its post-delivery hook failed, timed out or was not run (the file
    /// stays delivered); `reason` says which.
    #[serde(rename = "hook_failed")]
    HookFailed,
    /// A sender session was refused a place (the table of sessions was full); `object` is
    /// the lowest object id heard from it.
    #[serde(rename = "session_refused")]
    SessionRefused,
    /// Delivered, and its post-delivery hook exited with status 0.
    #[serde(rename = "hook_ok")]
    HookOk,
    /// Delivered, and now in the high-side MISP too (`[misp_push]`); `push` says how.
    #[serde(rename = "pushed")]
    Pushed,
    /// Delivered, but one attempt at pushing it into the high-side MISP failed, or the push
    /// was not made; `http_status` and `reason` say why, `retry_in_s` when it is tried again.
    #[serde(rename = "push_failed")]
    PushFailed,
}

/// One line of the record log.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// When it was recorded (RFC 3339, UTC).
    pub time: String,
    /// What happened.
    pub outcome: Outcome,
    /// Sender session id (16 hex digits).
    pub session: String,
    /// Object id within the session (the first of a run of lost ids).
    pub object: u32,
    /// A run of lost object ids, first and last, when one record stands for several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub objects: Option<[u32; 2]>,
    /// Object kind, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Relative name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// blake3 of the content (hex), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Where it was delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Why it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the datagrams a failed object needed went, when the receiver can tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::cause::Cause>,
    /// Milliseconds from the object's first descriptor to its outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// `pushed`: added, edited, or unchanged (MISP already held this version or a newer one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push: Option<String>,
    /// `push_failed`: MISP's HTTP status, when it answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Push attempt this record is about (1 is the first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `push_failed`: seconds until the next attempt; absent when no attempt follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<u64>,
}

impl Record {
    /// A record stamped now, with only the mandatory fields set.
    pub fn new(outcome: Outcome, session: u64, object: u32) -> Self {
        Record {
            time: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
            outcome,
            session: format!("{session:016x}"),
            object,
            objects: None,
            kind: None,
            name: None,
            size: None,
            blake3: None,
            path: None,
            reason: None,
            cause: None,
            elapsed_ms: None,
            push: None,
            http_status: None,
            attempt: None,
            retry_in_s: None,
        }
    }
}

/// Appends records to the log, one JSON object per line, flushed after each.
pub struct RecordLog {
    file: File,
    path: PathBuf,
}

impl RecordLog {
    /// Opens (creating) the record log under `state_dir`.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(state_dir)?;
        let path = state_dir.join(RECORDS_FILE);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(RecordLog { file, path })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record.
    pub fn append(&mut self, record: &Record) -> io::Result<()> {
        let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()
    }
}
