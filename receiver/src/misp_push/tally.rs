//! What the record log says about pushes, counted for `status`.

use super::Pushed;
use crate::records::{Outcome, Record};

/// What the record log says about pushes, for `status`.
#[derive(Debug, Default, Clone)]
pub struct PushTally {
    /// `pushed` records by `push`: added, edited, unchanged.
    pub added: u64,
    /// Events edited.
    pub edited: u64,
    /// Pushes that found MISP current.
    pub unchanged: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Pushes given up (not retried further).
    pub given_up: u64,
    /// The last `pushed` record's time and name.
    pub last_push: Option<(String, String)>,
    /// The last `push_failed` record's time, status and reason.
    pub last_error: Option<(String, Option<u64>, String)>,
}

impl PushTally {
    /// Counts one record of the log.
    pub fn note(&mut self, r: &Record) {
        let name = r.name.clone().unwrap_or_default();
        match r.outcome {
            Outcome::Pushed => {
                match r.push {
                    Some(Pushed::Added) => self.added += 1,
                    Some(Pushed::Edited) => self.edited += 1,
                    _ => self.unchanged += 1,
                }
                self.last_push = Some((r.time.clone(), name));
            }
            Outcome::PushFailed => {
                self.failed += 1;
                if r.retry_in_s.is_none() {
                    self.given_up += 1;
                }
                let status = r.http_status.map(u64::from);
                let reason = r.reason.clone().unwrap_or_default();
                self.last_error = Some((r.time.clone(), status, reason));
            }
            _ => {}
        }
    }

    /// The `status` lines, empty when nothing was ever pushed.
    pub fn report(&self) -> String {
        let pushed = self.added + self.edited + self.unchanged;
        if pushed == 0 && self.failed == 0 {
            return String::new();
        }
        let esc = |s: &str| gapferry_common::name::escape(s).into_owned();
        let mut text = format!(
            "misp push: {pushed} pushed ({} added, {} edited, {} already current), {} failed attempts, {} not pushed\n",
            self.added, self.edited, self.unchanged, self.failed, self.given_up
        );
        if let Some((time, name)) = &self.last_push {
            text += &format!("  last push: {} {}\n", esc(time), esc(name));
        }
        if let Some((time, status, reason)) = &self.last_error {
            let status = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
            text += &format!(
                "  last push error: {} {status}— {}\n",
                esc(time),
                esc(reason)
            );
        }
        text
    }
}
