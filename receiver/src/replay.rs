//! Replaying captures: UDP datagrams read from pcap/pcapng files drive the same assembler
//! and delivery as live UDP, on the capture's own clock.

use crate::pipeline::{Clock, Engine, Input, ReceiverConfig, Report};
use gapferry_common::wire::MAGIC;
use gapferry_pcap::CaptureReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Speed {
    /// As fast as the receiver can go; timeouts still follow capture time.
    Max,
    /// Honour the capture's timestamps, to exercise timeouts in real time.
    Realtime,
}

/// What to replay and how.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Only datagrams to this UDP port; all when `None`.
    pub port: Option<u16>,
    /// Replay speed.
    pub speed: Speed,
}

/// What a replay read and what came of it.
#[derive(Debug, Clone)]
pub struct ReplayReport {
    /// Outcomes and assembler counters.
    pub report: Report,
    /// UDP datagrams read from the captures.
    pub datagrams: u64,
    /// Datagrams skipped: another port, or not a gapferry datagram.
    pub ignored: u64,
    /// Frames of the capture that held no UDP datagram (other protocols, truncated frames).
    pub frames_ignored: u64,
    /// The first capture error (truncated or corrupt file), naming where.
    pub error: Option<String>,
}

/// Replays `files` in order into deliveries under `cfg.out`.
pub fn replay(
    files: &[PathBuf],
    cfg: &ReceiverConfig,
    opts: &ReplayOptions,
) -> std::io::Result<ReplayReport> {
    let engine = Engine::start(cfg, Clock::Inputs, 4096)?;
    let mut datagrams = 0u64;
    let mut ignored = 0u64;
    let mut frames_ignored = 0u64;
    let mut error = None;
    let mut last = Duration::ZERO;
    let mut pace: Option<(Instant, Duration)> = None;
    'files: for path in files {
        let mut reader = match CaptureReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                error = Some(format!("{}: {e}", path.display()));
                break;
            }
        };
        loop {
            let d = match reader.next_datagram() {
                Ok(Some(d)) => d,
                Ok(None) => break,
                Err(e) => {
                    error = Some(format!("{}: {e}", path.display()));
                    frames_ignored += reader.stats().frames_ignored();
                    break 'files;
                }
            };
            datagrams += 1;
            if opts.port.is_some_and(|p| d.dst.port() != p) || !d.payload.starts_with(&MAGIC) {
                ignored += 1;
                continue;
            }
            if opts.speed == Speed::Realtime {
                let (start, first) = *pace.get_or_insert((Instant::now(), d.timestamp));
                let due = d.timestamp.saturating_sub(first);
                let elapsed = start.elapsed();
                if due > elapsed {
                    std::thread::sleep(due - elapsed);
                }
            }
            last = last.max(d.timestamp);
            // A capture taken on the sending host holds GSO batches unsegmented.
            for part in gapferry_common::wire::split_coalesced(&d.payload) {
                let input = Input::Datagram {
                    at: d.timestamp,
                    bytes: part.to_vec(),
                };
                if engine.input().send(input).is_err() {
                    break 'files;
                }
            }
        }
        frames_ignored += reader.stats().frames_ignored();
    }
    let reason = match &error {
        Some(_) => "the capture ended early (truncated or corrupt)",
        None => "the capture ended",
    };
    let _ = engine.input().send(Input::End(reason.into()));
    let report = engine.finish();
    Ok(ReplayReport {
        report,
        datagrams,
        ignored,
        frames_ignored,
        error,
    })
}
