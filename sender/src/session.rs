//! One sender session's I/O: the protocol core ([`gapferry_common::send::Session`]:
//! numbering, burst spreading, padding, heartbeats) driven against a pacer and a datagram
//! sink, with the session's counters and metrics.
//!
//! Sending whole files through a session (`send_files`, `send_whole`) lives in
//! [`crate::transfer`], which builds on this module.

use crate::object_pace::ObjectPace;
use crate::pacer::Pacer;
use crate::sink::DatagramSink;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::layout::{self, LayoutError};
use gapferry_common::send::{ObjectSchedule, Session, Transmit};
use gapferry_common::Key;
use std::io;
use std::time::{Duration, Instant};

pub use gapferry_common::send::{FLUSH_SPAN, HEARTBEAT_EVERY};

/// What a sender session is configured with.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Link rate in bits per second of IP packets.
    pub rate_bps: u64,
    /// Repair symbols per block, as a percentage of its source symbols.
    pub repair_percent: u32,
    /// Path MTU the datagrams must fit.
    pub mtu: usize,
    /// IP version of the destinations, for the header bytes the MTU holds.
    pub ip: gapferry_common::layout::IpVersion,
    /// Pre-shared key; when set every datagram carries a tag.
    pub key: Option<Key>,
    /// Passes over each object; each further pass sends fresh repair symbols.
    pub passes: u8,
    /// zstd level for block compression.
    pub zstd_level: i32,
    /// Threads preparing (reading, hashing, compressing, RaptorQ-encoding) blocks.
    pub threads: usize,
    /// Most objects per second on average (`--max-objects-rate`); `None`: no object pace.
    pub max_objects_rate: Option<f64>,
    /// Objects sent back to back before the object pace applies (`--objects-burst`).
    pub objects_burst: u32,
}

/// Threads the sender prepares blocks on unless told: one per available core but one,
/// which is left to the thread that paces and sends (on 2 cores a second worker measured
/// no faster and took the core the sending thread needed; bench/README.md).
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().saturating_sub(1).max(1))
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            rate_bps: 100_000_000,
            repair_percent: 10,
            mtu: 1500,
            ip: gapferry_common::layout::IpVersion::V6,
            key: None,
            passes: 1,
            zstd_level: gapferry_common::compress::DEFAULT_LEVEL,
            threads: default_threads(),
            max_objects_rate: None,
            objects_burst: crate::object_pace::DEFAULT_OBJECTS_BURST,
        }
    }
}

/// Why a session could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The MTU cannot carry datagrams.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Zero passes or zero rate.
    #[error("{0}")]
    Config(&'static str),
}

/// A sender session: every datagram it emits carries its random session id.
pub struct SenderSession {
    cfg: SenderConfig,
    core: Session,
    max_symbol: u16,
    link: Link,
}

/// The pacer and the sink, and where the schedule stands.
struct Link {
    pacer: Pacer,
    sink: Box<dyn DatagramSink + Send>,
    started: Instant,
    /// The latest time on the schedule: the session's clock when the sink only records.
    clock: Instant,
    last_at: Option<Instant>,
    metrics: crate::metrics::SenderMetrics,
    /// `--max-objects-rate`, where it reports to, and whether it held the last object.
    pace: Option<(ObjectPace, PaceReports)>,
}

/// Where the object pace is shown: the progress bar, the outbox service's state file.
#[derive(Default)]
struct PaceReports {
    progress: Option<crate::progress::Progress>,
    file: Option<crate::object_pace::PaceFile>,
    holding: bool,
}

impl Link {
    fn now(&self) -> Instant {
        if self.sink.real_time() {
            Instant::now()
        } else {
            self.clock
        }
    }

    /// Takes an object pace token before a new object: when none is left, every later
    /// datagram waits for the next (the sink sleeps, a capture's clock moves on).
    fn admit_object(&mut self) {
        let now = self.now();
        let Some((pace, shown)) = &mut self.pace else {
            return;
        };
        let at = pace.admit(now);
        let holding = at > now;
        if holding {
            self.pacer.hold_until(at);
            self.metrics.objects_paced.inc();
        }
        if holding != shown.holding {
            shown.holding = holding;
            if let Some(p) = &shown.progress {
                p.set_prefix(match holding {
                    true => format!("[held by --max-objects-rate {}] ", pace.per_second()),
                    false => String::new(),
                });
            }
        }
        self.save_pace();
    }

    /// Rewrites the pace's state file for `status` when it is due (about once a second).
    fn save_pace(&mut self) {
        if let Some((pace, PaceReports { file: Some(f), .. })) = &mut self.pace {
            f.update(pace);
        }
    }

    /// Sends one datagram on the pacer's schedule, at least `gap` after the previous one.
    fn transmit(&mut self, datagram: &[u8], gap: Duration) -> io::Result<()> {
        let mut at = if self.sink.real_time() {
            self.pacer.schedule(datagram.len(), Instant::now())
        } else {
            self.pacer.schedule_virtual(datagram.len(), self.started)
        };
        // Never before the previous datagram: a gap moved that one past the pacer's plan.
        if let Some(last) = self.last_at {
            at = at.max(last + gap);
        }
        self.last_at = Some(at);
        self.clock = self.clock.max(at);
        self.sink.send(datagram, at)?;
        self.metrics.datagrams.inc();
        self.metrics.bytes.inc_by(datagram.len() as u64);
        Ok(())
    }
}

/// A new session id: the second it starts and 24 random bits, so a keyed receiver can tell
/// a replay of older traffic.
fn fresh_session_id() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    gapferry_common::freshness::session_id(now, rand::random())
}

impl SenderSession {
    /// Starts a session with a fresh id (the second it starts and 24 random bits, so a
    /// keyed receiver can tell a replay of older traffic), emitting into `sink`.
    pub fn new(
        cfg: SenderConfig,
        sink: Box<dyn DatagramSink + Send>,
    ) -> Result<Self, SessionError> {
        Self::with_id(fresh_session_id(), cfg, sink)
    }

    /// Starts a session with a given id (for tests and replays).
    pub fn with_id(
        id: u64,
        cfg: SenderConfig,
        sink: Box<dyn DatagramSink + Send>,
    ) -> Result<Self, SessionError> {
        if cfg.passes == 0 {
            return Err(SessionError::Config("--passes must be at least 1"));
        }
        if cfg.rate_bps == 0 {
            return Err(SessionError::Config("--rate must be above zero"));
        }
        if cfg.threads == 0 {
            return Err(SessionError::Config("--threads must be at least 1"));
        }
        if cfg
            .max_objects_rate
            .is_some_and(|r| !(r.is_finite() && r > 0.0))
        {
            return Err(SessionError::Config(
                "--max-objects-rate must be a number of objects per second above zero",
            ));
        }
        if cfg.objects_burst == 0 {
            return Err(SessionError::Config("--objects-burst must be at least 1"));
        }
        let max_symbol = layout::max_symbol_size(cfg.mtu, cfg.key.is_some(), cfg.ip)?;
        let metrics = crate::metrics::SenderMetrics::default();
        metrics.rate.set(cfg.rate_bps as i64);
        let now = Instant::now();
        Ok(SenderSession {
            core: Session::new(DatagramWriter::new(id, cfg.key.clone()), cfg.rate_bps, now),
            max_symbol,
            link: Link {
                pacer: Pacer::new(cfg.rate_bps),
                sink,
                started: now,
                clock: now,
                last_at: None,
                metrics,
                pace: cfg.max_objects_rate.map(|r| {
                    (
                        ObjectPace::new(r, cfg.objects_burst),
                        PaceReports::default(),
                    )
                }),
            },
            cfg,
        })
    }

    /// The session's metrics (shared by clones).
    pub fn metrics(&self) -> &crate::metrics::SenderMetrics {
        &self.link.metrics
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.core.writer().session()
    }

    /// The configuration.
    pub fn config(&self) -> &SenderConfig {
        &self.cfg
    }

    /// Largest symbol per datagram.
    pub fn max_symbol(&self) -> u16 {
        self.max_symbol
    }

    /// Datagrams and UDP payload bytes sent so far.
    pub fn counters(&self) -> (u64, u64) {
        self.core.counters()
    }

    /// The next object id to be assigned.
    pub fn next_object(&self) -> u32 {
        self.core.next_object()
    }

    /// Reserves the next object id; it counts as in progress until [`Self::object_done`].
    /// With an object pace, nothing more leaves before the object's token is due.
    pub fn allocate_object(&mut self) -> u32 {
        self.link.admit_object();
        self.core.allocate_object()
    }

    /// What the object pace did so far; `None` without `--max-objects-rate`.
    pub fn pace_counts(&self) -> Option<crate::object_pace::PaceCounts> {
        self.link.pace.as_ref().map(|(p, _)| p.counts())
    }

    /// Shows on `progress` when the object pace holds objects back.
    pub fn show_pace_on(&mut self, progress: &crate::progress::Progress) {
        if let Some((_, shown)) = &mut self.link.pace {
            shown.progress = Some(progress.clone());
        }
    }

    /// Keeps the object pace's counts for `gapferry-send status` in `journal`.
    pub fn report_pace_to(&mut self, journal: std::path::PathBuf) {
        if let Some((_, shown)) = &mut self.link.pace {
            shown.file = Some(crate::object_pace::PaceFile::new(journal));
        }
    }

    /// Records that object `id` has had its last pass (or will never be sent).
    pub fn object_done(&mut self, id: u32) {
        self.core.object_done(id)
    }

    /// Every object id below this has had its last pass, and its last datagram has left.
    pub fn done_below(&self) -> u32 {
        self.core.done_below()
    }

    /// Writes `schedule`'s next datagram and sends whatever that made ready; false when
    /// the schedule has nothing now.
    pub fn write(&mut self, schedule: &mut ObjectSchedule) -> io::Result<bool> {
        let wrote = self.core.write(schedule);
        self.pump()?;
        Ok(wrote)
    }

    /// Writes every datagram `schedule` has now.
    pub fn write_all(&mut self, schedule: &mut ObjectSchedule) -> io::Result<()> {
        while self.write(schedule)? {}
        Ok(())
    }

    /// Sends everything the core has ready.
    fn pump(&mut self) -> io::Result<()> {
        loop {
            let now = self.link.now();
            let Some(Transmit { datagram, gap }) = self.core.poll_transmit(now) else {
                return Ok(());
            };
            self.link.transmit(datagram, gap)?;
        }
    }

    /// For idle services: sends what the spreader holds (padded) and a heartbeat if due.
    pub fn tick(&mut self) -> io::Result<()> {
        self.link.save_pace();
        self.core.flush();
        self.pump()?;
        self.link.sink.flush()
    }

    /// Object ids this session can still assign.
    pub fn ids_left(&self) -> u64 {
        self.core.ids_left()
    }

    /// Moves the next object id up to `next`: for tests of the end of the id space.
    #[doc(hidden)]
    pub fn skip_ids_to(&mut self, next: u32) {
        self.core.skip_ids_to(next);
    }

    /// Ends this session as [`Self::finish`] does and goes on under a fresh session id on
    /// the same link, the object ids starting again at 0: for a service whose ids run low.
    /// Every object of the ending session must be done.
    pub fn renew(&mut self) -> io::Result<()> {
        let old = self.id();
        self.core.finish();
        self.pump()?;
        self.link.sink.flush()?;
        let id = fresh_session_id();
        let writer = DatagramWriter::new(id, self.cfg.key.clone());
        self.core = Session::new(writer, self.cfg.rate_bps, self.link.now());
        tracing::info!(
            ended = format_args!("{old:016x}"),
            session = format_args!("{id:016x}"),
            "session renewed: its object ids ran low"
        );
        Ok(())
    }

    /// Ends the session: the last matrix goes out padded with ending heartbeats, then more
    /// ending heartbeats follow, spaced in time; the receiver learns every object was sent.
    pub fn finish(&mut self) -> io::Result<()> {
        self.core.finish();
        self.pump()?;
        self.link.sink.finish()
    }
}
