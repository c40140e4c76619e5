//! The link's state on disk (`<out>/.gapferry/link.json`, rewritten on each heartbeat)
//! and the `status` report built from it and the record log.

use crate::records::{RECORDS_FILE, STATE_DIR};
use gapferry_common::Heartbeat;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
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
    match std::fs::File::open(state.join(RECORDS_FILE)) {
        Ok(file) => text += &records_report(file, last)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            text += &records_report(&[][..], last)?
        }
        Err(e) => return Err(e),
    }
    Ok(text)
}

/// The outcome counts and the last `last` objects not delivered, from a record log's
/// content streamed line by line: memory does not depend on the log's length.
pub fn records_report(records: impl std::io::Read, last: usize) -> std::io::Result<String> {
    // delivered, failed, lost, skipped, hook_failed
    let mut counts = [0u64; 5];
    let mut bad_total = 0usize;
    let mut bad: VecDeque<serde_json::Value> = VecDeque::new();
    crate::record_lines::for_each_line(records, |line| {
        let Ok(r) = serde_json::from_slice::<serde_json::Value>(line) else {
            return;
        };
        let outcome = r["outcome"].as_str().unwrap_or("");
        match outcome {
            "delivered" => counts[0] += 1,
            "failed" => counts[1] += 1,
            "lost" => counts[2] += 1,
            "skipped" => counts[3] += 1,
            "hook_failed" => counts[4] += 1,
            _ => {}
        }
        if outcome != "delivered" && outcome != "skipped" {
            bad_total += 1;
            if last > 0 {
                if bad.len() == last {
                    bad.pop_front();
                }
                bad.push_back(r);
            }
        }
    })?;
    let mut text = format!(
        "objects: {} delivered, {} failed, {} lost, {} skipped (already delivered), {} hooks failed\n",
        counts[0], counts[1], counts[2], counts[3], counts[4]
    );
    if bad_total > 0 {
        text += &format!("last {} not delivered:\n", bad_total.min(last));
        for r in &bad {
            text += &format!(
                "  {} {:<11} session {} object {} {} {}\n",
                r["time"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or(""),
                r["session"].as_str().unwrap_or(""),
                r["object"],
                r["name"].as_str().unwrap_or("(name unknown)"),
                r["reason"]
                    .as_str()
                    .map(|s| format!("— {s}"))
                    .unwrap_or_default()
            );
        }
    }
    Ok(text)
}
