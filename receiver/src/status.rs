//! The link's state on disk (`<out>/.gapferry/link.json`, rewritten on each heartbeat)
//! and the `status` report built from it and the record log, every text from the log
//! escaped so that a name cannot take over the operator's terminal.

use crate::records::{RECORDS_FILE, STATE_DIR};
use gapferry_common::name::escape;
use gapferry_common::Heartbeat;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// File name of the link state inside the state directory.
pub const LINK_FILE: &str = "link.json";
/// A link whose last heartbeat is older than this is reported down.
pub const LINK_DOWN_AFTER: Duration = Duration::from_secs(5);

/// The last heartbeat heard and what it says about the link.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LinkState {
    /// Sender session id (16 hex digits).
    pub session: String,
    /// When the last heartbeat arrived, Unix milliseconds.
    pub last_heartbeat_unix_ms: u64,
    /// The sender's counters from that heartbeat.
    pub sender_datagrams_sent: u64,
    /// UDP payload bytes the sender sent.
    pub sender_bytes_sent: u64,
    /// The sender's next object id.
    pub sender_next_object: u32,
    /// The sender's configured rate.
    pub sender_rate_bps: u64,
    /// Datagrams of the session the receiver accepted.
    pub received: u64,
    /// Share of datagrams lost on the way since the receiver first heard the session.
    pub loss_rate: Option<f64>,
    /// Whether the sender said it was ending its session.
    pub ending: bool,
}

impl LinkState {
    /// The state after `hb` arrived now.
    pub fn from_heartbeat(
        session: u64,
        hb: &Heartbeat,
        received: u64,
        loss_rate: Option<f64>,
    ) -> Self {
        LinkState {
            session: format!("{session:016x}"),
            last_heartbeat_unix_ms: unix_ms(SystemTime::now()),
            sender_datagrams_sent: hb.datagrams_sent,
            sender_bytes_sent: hb.bytes_sent,
            sender_next_object: hb.next_object,
            sender_rate_bps: hb.rate_bps,
            received,
            loss_rate,
            ending: hb.ending,
        }
    }

    /// Writes the state atomically under `state_dir`.
    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let tmp = state_dir.join(".link.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, state_dir.join(LINK_FILE))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The `status` report: link and outcome counts, with the last failures named.
pub fn report(out: &Path, last: usize) -> std::io::Result<String> {
    let state = out.join(STATE_DIR);
    let mut text = String::new();
    match std::fs::read(state.join(LINK_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<LinkState>(&b).ok())
    {
        Some(link) => {
            let age = Duration::from_millis(
                unix_ms(SystemTime::now()).saturating_sub(link.last_heartbeat_unix_ms),
            );
            let up = age < LINK_DOWN_AFTER && !link.ending;
            text += &format!(
                "link: {} (last heartbeat {:.1} s ago, session {}{})\n",
                if up { "up" } else { "down" },
                age.as_secs_f64(),
                link.session,
                if link.ending { ", sender ended it" } else { "" }
            );
            text += &format!(
                "loss rate: {}  (sender sent {} datagrams, receiver accepted {}; sender rate {} bit/s)\n",
                link.loss_rate.map_or("n/a".to_string(), |l| format!("{:.2} %", l * 100.0)),
                link.sender_datagrams_sent,
                link.received,
                link.sender_rate_bps
            );
        }
        None => text += "link: down (no heartbeat ever heard)\n",
    }
    let records = std::fs::read_to_string(state.join(RECORDS_FILE)).unwrap_or_default();
    let rows: Vec<serde_json::Value> = records
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let count = |o: &str| rows.iter().filter(|r| r["outcome"] == o).count();
    text += &format!(
        "objects: {} delivered, {} failed, {} lost, {} skipped (already delivered), {} hooks failed\n",
        count("delivered"),
        count("failed"),
        count("lost"),
        count("skipped"),
        count("hook_failed")
    );
    let bad: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| {
            !["delivered", "skipped", "hook_ok"].contains(&r["outcome"].as_str().unwrap_or(""))
        })
        .collect();
    // Every field may hold a sender's text (names, reasons): escaped, it cannot drive the
    // terminal (escape sequences) or disguise itself (bidi overrides).
    let field = |r: &serde_json::Value, key: &str| -> String {
        escape(r[key].as_str().unwrap_or("")).into_owned()
    };
    if !bad.is_empty() {
        text += &format!("last {} not delivered:\n", bad.len().min(last));
        for r in bad.iter().rev().take(last).rev() {
            let name = match r["name"].as_str() {
                Some(n) => escape(n).into_owned(),
                None => "(name unknown)".into(),
            };
            text += &format!(
                "  {} {:<11} session {} object {} {} {}\n",
                field(r, "time"),
                field(r, "outcome"),
                field(r, "session"),
                r["object"].as_u64().map_or("?".into(), |o| o.to_string()),
                name,
                r["reason"]
                    .as_str()
                    .map(|s| format!("— {}", escape(s)))
                    .unwrap_or_default()
            );
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{Outcome, Record, RecordLog};

    #[test]
    fn status_escapes_terminal_sequences_and_bidi_controls_in_names_and_reasons() {
        let out = tempfile::tempdir().unwrap();
        let state = out.path().join(STATE_DIR);
        let mut log = RecordLog::open(&state).unwrap();
        // Records written by an older receiver, or by hand: names it would refuse today.
        let mut r = Record::new(Outcome::Failed, 7, 3);
        r.name = Some("evil\u{1b}]0;pwned\u{7}\u{1b}[2J\u{1b}[31mname\u{202e}fdp.exe".into());
        r.reason = Some("blake3 differs\u{1b}[1A\rdelivered OK".into());
        log.append(&r).unwrap();
        let mut ok = Record::new(Outcome::HookOk, 7, 4);
        ok.name = Some("fine.json".into());
        log.append(&ok).unwrap();
        let text = report(out.path(), 10).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| (c.is_control() && c != '\n')
                    || gapferry_common::name::is_invisible_format(c)),
            "raw control or format character in {text:?}"
        );
        assert!(
            text.contains("evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J"),
            "{text}"
        );
        assert!(text.contains("name\\u{202e}fdp.exe"), "{text}");
        assert!(
            text.contains("differs\\u{1b}[1A\\u{d}delivered OK"),
            "{text}"
        );
        // A successful hook is not listed among what was not delivered.
        assert!(!text.contains("fine.json"), "{text}");
        assert!(text.contains("last 1 not delivered"), "{text}");
    }
}
