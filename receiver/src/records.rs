//! The machine-readable record of every object delivered, failed or lost: JSON lines in
//! `<out>/.gapferry/records.jsonl`, written and read back (ledger, `status`) through the
//! same types: [`Record`], its [`Outcome`], its kind as [`ObjectKind`].

use gapferry_common::ObjectKind;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Directory under `--out` holding the receiver's own state.
pub const STATE_DIR: &str = ".gapferry";
/// File name of the record log inside [`STATE_DIR`].
pub const RECORDS_FILE: &str = "records.jsonl";

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

impl Outcome {
    /// Its name in the record log and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed => "failed",
            Outcome::Lost => "lost",
            Outcome::Skipped => "skipped",
            Outcome::HookFailed => "hook_failed",
            Outcome::SessionRefused => "session_refused",
            Outcome::HookOk => "hook_ok",
            Outcome::Pushed => "pushed",
            Outcome::PushFailed => "push_failed",
        }
    }

    /// Whether the object is where it belongs (delivered before included): not worth
    /// naming among the failures.
    pub fn is_success(self) -> bool {
        matches!(
            self,
            Outcome::Delivered | Outcome::Skipped | Outcome::HookOk | Outcome::Pushed
        )
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the record log. Read back, a line missing `time`, `session` or `object`
/// reads them as empty or 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// When it was recorded (RFC 3339, UTC).
    #[serde(default)]
    pub time: String,
    /// What happened.
    pub outcome: Outcome,
    /// Sender session id (16 hex digits).
    #[serde(default)]
    pub session: String,
    /// Object id within the session (the first of a run of lost ids).
    #[serde(default)]
    pub object: u32,
    /// A run of lost object ids, first and last, when one record stands for several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<[u32; 2]>,
    /// Object kind, when known.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "kind_name")]
    pub kind: Option<ObjectKind>,
    /// Relative name, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Size in bytes, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// blake3 of the content (hex), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// Where it was delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where the datagrams a failed object needed went, when the receiver can tell.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<crate::cause::Cause>,
    /// Milliseconds from the object's first descriptor to its outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_ms: Option<u64>,
    /// `pushed`: added, edited, or unchanged (MISP already held this version or a newer one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push: Option<crate::misp_push::Pushed>,
    /// `push_failed`: MISP's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// Push attempt this record is about (1 is the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// `push_failed`: seconds until the next attempt; absent when no attempt follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
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

/// An object kind by its name in the record log (`image-signature`), as the command line
/// and the logs spell it.
mod kind_name {
    use gapferry_common::ObjectKind;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &Option<ObjectKind>, s: S) -> Result<S::Ok, S::Error> {
        match kind {
            Some(k) => s.serialize_str(k.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ObjectKind>, D::Error> {
        match Option::<std::borrow::Cow<'de, str>>::deserialize(d)? {
            Some(name) => name.parse().map(Some).map_err(serde::de::Error::custom),
            None => Ok(None),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_with_the_log_names_of_outcome_and_kind() {
        let mut r = Record::new(Outcome::HookFailed, 0xab, 7);
        r.kind = Some(ObjectKind::ImageSignature);
        r.name = Some("MISP_v2.5.1.tar.gz.sig".into());
        r.push = Some(crate::misp_push::Pushed::Unchanged);
        r.cause = Some(crate::cause::Cause::Receiver);
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""outcome":"hook_failed""#), "{line}");
        assert!(line.contains(r#""kind":"image-signature""#), "{line}");
        assert!(line.contains(r#""push":"unchanged""#), "{line}");
        assert!(line.contains(r#""session":"00000000000000ab""#), "{line}");
        assert!(
            !line.contains("reason"),
            "unset fields are left out: {line}"
        );
        let back: Record = serde_json::from_str(&line).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), line);
        for o in [
            Outcome::Delivered,
            Outcome::SessionRefused,
            Outcome::PushFailed,
        ] {
            let text = serde_json::to_string(&o).unwrap();
            assert_eq!(text, format!("\"{}\"", o.as_str()));
        }
    }

    #[test]
    fn hostile_record_lines_do_not_read_as_records() {
        for line in [
            r#"{"outcome":"delivered!","object":1}"#,
            r#"{"outcome":"delivered","kind":"rootkit"}"#,
            r#"{"outcome":"delivered","kind":"File"}"#,
            r#"{"outcome":"delivered","object":-1}"#,
            r#"{"kind":"file"}"#,
            r#"["delivered"]"#,
        ] {
            assert!(serde_json::from_str::<Record>(line).is_err(), "{line}");
        }
        let minimal: Record = serde_json::from_str(r#"{"outcome":"lost"}"#).unwrap();
        assert_eq!((minimal.outcome, minimal.object), (Outcome::Lost, 0));
    }
}
