//! The progress bar shown on a terminal, and nothing at all in service logs.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// Progress of a transfer in bytes of source data, drawn only on a terminal; clones
/// draw the same bar.
#[derive(Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar for `total` bytes, shown when stderr is a terminal and `enabled`.
    pub fn new(total: u64, enabled: bool) -> Self {
        let bar = if enabled && std::io::stderr().is_terminal() {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {prefix}{msg}",
                )
                .expect("valid template"),
            );
            bar
        } else {
            ProgressBar::hidden()
        };
        Progress { bar }
    }

    /// A progress that never draws.
    pub fn hidden() -> Self {
        Progress {
            bar: ProgressBar::hidden(),
        }
    }

    /// Counts `bytes` more source bytes as sent.
    pub fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    /// Bytes counted so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Names what is being sent now.
    pub fn set_message(&self, msg: String) {
        self.bar.set_message(msg);
    }

    /// Says what holds sending back (empty: nothing), before the message.
    pub fn set_prefix(&self, prefix: String) {
        self.bar.set_prefix(prefix);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
