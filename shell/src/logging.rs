//! The tracing log setup shared by both binaries and its flags (`--log-format`, `--log`):
//! text for terminals, JSON lines for log collectors, always on stderr. Colours only when
//! stderr is a terminal (never in log files or the journal) and `NO_COLOR` is unset.

use std::io::IsTerminal;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The log flags both binaries take, global to every subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format: text, or json (one object per line, for log collectors).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "GAPFERRY_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter (e.g. info, debug, gapferry_receiver=trace).
    #[arg(long, global = true, default_value = "info", env = "GAPFERRY_LOG")]
    pub log: String,
}

impl LogArgs {
    /// Installs the global subscriber these flags ask for; `quiet` keeps warnings and
    /// errors only.
    pub fn init(&self, quiet: bool) {
        init(filter(&self.log, quiet), self.log_format);
    }
}

/// Installs the global subscriber with `filter` (e.g. `info`, `gapferry_receiver=debug`).
pub fn init(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter).unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours(
            std::io::stderr().is_terminal(),
            std::env::var_os("NO_COLOR"),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// Whether log lines carry ANSI colours: on a terminal, unless `NO_COLOR` is set to
/// anything non-empty.
fn colours(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The filter to log with: `--quiet` keeps warnings and errors only.
pub fn filter(requested: &str, quiet: bool) -> &str {
    if quiet {
        "warn"
    } else {
        requested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colours(true, None));
        assert!(!colours(false, None));
        assert!(!colours(true, Some("1".into())));
        assert!(colours(true, Some("".into())));
    }
}
