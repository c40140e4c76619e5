//! Following the receiver's `records.jsonl` as it grows, and reading the processes' logs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::SystemTime;

/// Outcomes read so far from one receiver's record log.
#[derive(Debug, Default)]
pub struct RecordTail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    /// Objects delivered (verified and published).
    pub delivered: u64,
    /// Bytes of the delivered objects.
    pub delivered_bytes: u64,
    /// Objects failed.
    pub failed: u64,
    /// Objects lost.
    pub lost: u64,
    /// Time stamp of the latest delivered record.
    pub last_delivered: Option<SystemTime>,
    /// The first few failure reasons, for the log.
    pub reasons: Vec<String>,
}

impl RecordTail {
    /// Follows the record log at `path` (it may not exist yet).
    pub fn new(path: PathBuf) -> Self {
        RecordTail {
            path,
            ..RecordTail::default()
        }
    }

    /// Objects with an outcome.
    pub fn resolved(&self) -> u64 {
        self.delivered + self.failed + self.lost
    }

    /// Reads the lines appended since the last call.
    pub fn poll(&mut self) {
        let Ok(mut f) = File::open(&self.path) else {
            return;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return;
        }
        let mut fresh = Vec::new();
        if f.read_to_end(&mut fresh).is_err() {
            return;
        }
        self.offset += fresh.len() as u64;
        self.partial.extend_from_slice(&fresh);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            return;
        };
        let complete: Vec<u8> = self.partial.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.take(line);
        }
    }

    fn take(&mut self, line: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        match v["outcome"].as_str() {
            Some("delivered") => {
                self.delivered += 1;
                self.delivered_bytes += v["size"].as_u64().unwrap_or(0);
                let t = v["time"]
                    .as_str()
                    .and_then(|t| humantime::parse_rfc3339(t).ok());
                if let Some(t) = t {
                    self.last_delivered = Some(self.last_delivered.map_or(t, |l| l.max(t)));
                }
            }
            Some(other) => {
                if other == "lost" {
                    self.lost += 1;
                } else {
                    self.failed += 1;
                }
                if self.reasons.len() < 3 {
                    let reason = v["reason"].as_str().unwrap_or("-");
                    self.reasons.push(format!("{other}: {reason}"));
                }
            }
            None => {}
        }
    }
}

/// The value of `key=` on the last log line containing `marker`, ANSI colours ignored.
pub fn log_field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let clean = strip_ansi(line);
    let needle = format!("{key}=");
    clean.split_whitespace().find_map(|tok| {
        tok.strip_prefix(&needle)
            .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
    })
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_a_growing_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("records.jsonl");
        let mut tail = RecordTail::new(path.clone());
        tail.poll();
        let mut f = File::create(&path).unwrap();
        f.write_all(
            concat!(
                r#"{"time":"2026-01-02T03:04:05.678Z","outcome":"delivered","object":0,"size":10}"#,
                "\n",
                r#"{"time":"2026-01-02T03:04:06.000Z","outcome":"failed","#
            )
            .as_bytes(),
        )
        .unwrap();
        tail.poll();
        assert_eq!(
            (tail.delivered, tail.delivered_bytes, tail.failed),
            (1, 10, 0)
        );
        writeln!(f, r#""object":1,"reason":"x"}}"#).unwrap();
        tail.poll();
        assert_eq!((tail.failed, tail.resolved()), (1, 2));
        assert_eq!(tail.reasons, vec!["failed: x".to_string()]);
        assert!(tail.last_delivered.is_some());
    }

    #[test]
    fn reads_tracing_fields() {
        let log = "\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m gapferry_send: done \
                   \u{1b}[3mdatagrams\u{1b}[0m\u{1b}[2m=\u{1b}[0m123 bytes=4567 objects=1\n";
        assert_eq!(log_field(log, "done", "datagrams"), Some(123));
        assert_eq!(log_field(log, "done", "bytes"), Some(4567));
        assert_eq!(log_field(log, "stopped", "bytes"), None);
    }
}
