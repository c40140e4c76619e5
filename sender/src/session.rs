//! One sender session: its id, object numbering, pacing, heartbeats and counters.
//!
//! Every datagram of an object (symbols and descriptor copies) goes through a
//! [`Spreader`], so a burst loss anywhere in the stream costs each object only a sliver;
//! when the stream pauses or ends, the spreader's last matrix is padded with descriptor
//! copies, heartbeats and inventories and sent over at least [`FLUSH_SPAN`]. Time-driven
//! heartbeats and inventories go out at once, beside the spread stream.

use crate::pacer::Pacer;
use crate::progress::Progress;
use crate::sink::DatagramSink;
use crate::source::SourceFile;
use crate::transfer::{self, TransferError};
use gapferry_common::control::Inventory;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::DatagramWriter;
use gapferry_common::layout::{self, LayoutError};
use gapferry_common::spread::{Spreader, CELLS};
use gapferry_common::{Heartbeat, Key};
use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

/// Interval between heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// An inventory of recent objects goes out with every this many heartbeats.
const INVENTORY_EVERY: u64 = 5;
/// Recent objects named in inventories.
const INVENTORY_OBJECTS: usize = 32;
/// Heartbeats sent after the last matrix when a session ends, [`ENDING_SPACING`] apart, on
/// top of those padding the last matrix.
const ENDING_HEARTBEATS: u32 = 5;
/// Time between the trailing ending heartbeats, so one link flap cannot take them all.
const ENDING_SPACING: Duration = Duration::from_millis(100);
/// Shortest time over which a padded matrix is sent: its real datagrams leave about
/// `FLUSH_SPAN / 16` apart, so a short link outage costs each object one at most.
pub const FLUSH_SPAN: Duration = Duration::from_millis(250);
/// Descriptors of the current matrix remembered for padding.
const PADDING_DESCRIPTORS: usize = 64;
/// Stands in a padded matrix for a heartbeat built when it leaves, so its counters are
/// those of that moment. No datagram is one byte long: it cannot be mistaken for one.
const HEARTBEAT_SLOT: &[u8] = &[0];

/// What a sender session is configured with.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Link rate in bits per second of IP packets.
    pub rate_bps: u64,
    /// Repair symbols per block, as a percentage of its source symbols.
    pub repair_percent: u32,
    /// Path MTU the datagrams must fit.
    pub mtu: usize,
    /// Pre-shared key; when set every datagram carries a tag.
    pub key: Option<Key>,
    /// Passes over each object; each further pass sends fresh repair symbols.
    pub passes: u8,
    /// zstd level for block compression.
    pub zstd_level: i32,
}

impl Default for SenderConfig {
    fn default() -> Self {
        SenderConfig {
            rate_bps: 100_000_000,
            repair_percent: 10,
            mtu: 1500,
            key: None,
            passes: 1,
            zstd_level: gapferry_common::compress::DEFAULT_LEVEL,
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

/// The outcome of sending one file.
#[derive(Debug)]
pub struct SendReport {
    /// The file.
    pub name: String,
    /// The object id it was sent as.
    pub object: u32,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// A sender session: every datagram it emits carries its random session id.
pub struct SenderSession {
    cfg: SenderConfig,
    writer: DatagramWriter,
    max_symbol: u16,
    pacer: Pacer,
    sink: Box<dyn DatagramSink + Send>,
    buf: Vec<u8>,
    started: Instant,
    clock: Instant,
    last_heartbeat: Option<Instant>,
    heartbeat_seq: u64,
    datagrams: u64,
    bytes: u64,
    next_object: u32,
    in_progress: BTreeSet<u32>,
    metrics: crate::metrics::SenderMetrics,
    recent: VecDeque<gapferry_common::control::InventoryEntry>,
    spreader: Spreader,
    /// Objects whose descriptor copies went into the current matrix, for padding it.
    matrix_descriptors: Vec<(u32, ObjectDescriptor)>,
    /// Objects done whose datagrams are not all out of the spreader yet, with the count of
    /// datagrams written when they were done.
    unemitted: VecDeque<(u32, u64)>,
    last_at: Option<Instant>,
    /// Set once the session is ending: heartbeats then say so.
    ending: bool,
}

impl SenderSession {
    /// Starts a session with a fresh random id, emitting into `sink`.
    pub fn new(
        cfg: SenderConfig,
        sink: Box<dyn DatagramSink + Send>,
    ) -> Result<Self, SessionError> {
        Self::with_id(rand::random(), cfg, sink)
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
        let max_symbol = layout::max_symbol_size(cfg.mtu, cfg.key.is_some())?;
        let metrics = crate::metrics::SenderMetrics::default();
        metrics.rate.set(cfg.rate_bps as i64);
        let now = Instant::now();
        Ok(SenderSession {
            writer: DatagramWriter::new(id, cfg.key.clone()),
            max_symbol,
            pacer: Pacer::new(cfg.rate_bps),
            sink,
            buf: Vec::with_capacity(cfg.mtu),
            started: now,
            clock: now,
            last_heartbeat: None,
            heartbeat_seq: 0,
            datagrams: 0,
            bytes: 0,
            next_object: 0,
            in_progress: BTreeSet::new(),
            metrics,
            recent: Default::default(),
            spreader: Spreader::new(),
            matrix_descriptors: Vec::new(),
            unemitted: VecDeque::new(),
            last_at: None,
            ending: false,
            cfg,
        })
    }

    /// The session's metrics (shared by clones).
    pub fn metrics(&self) -> &crate::metrics::SenderMetrics {
        &self.metrics
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.writer.session()
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
        (self.datagrams, self.bytes)
    }

    /// The next object id to be assigned.
    pub fn next_object(&self) -> u32 {
        self.next_object
    }

    /// Reserves the next object id; it counts as in progress until [`Self::object_done`].
    pub fn allocate_object(&mut self) -> u32 {
        let id = self.next_object;
        self.next_object += 1;
        self.in_progress.insert(id);
        id
    }

    /// Records that object `id` has had its last pass (or will never be sent).
    pub fn object_done(&mut self, id: u32) {
        if self.in_progress.remove(&id) && self.spreader.held() > 0 {
            self.unemitted.push_back((id, self.spreader.written()));
        }
    }

    /// Every object id below this has had its last pass, and its last datagram has left.
    pub fn done_below(&self) -> u32 {
        let unemitted = self.unemitted.iter().map(|&(id, _)| id).min();
        let in_progress = self.in_progress.first().copied();
        [unemitted, in_progress]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(self.next_object)
            .min(self.next_object)
    }

    fn now(&self) -> Instant {
        if self.sink.real_time() {
            Instant::now()
        } else {
            self.clock
        }
    }

    /// Builds a datagram of an object with `build` and sends it through the spreader;
    /// false if `build` had nothing.
    pub fn emit_with(
        &mut self,
        build: impl FnOnce(&DatagramWriter, &mut Vec<u8>) -> bool,
    ) -> io::Result<bool> {
        let built = build(&self.writer, self.spreader.slot());
        if built {
            self.spreader.commit();
            if self.spreader.is_full() {
                self.drain(Duration::ZERO)?;
            }
            self.heartbeat_if_due(false)?;
        }
        Ok(built)
    }

    /// Sends the spreader's matrix, at least `gap` apart; forgets what has left.
    fn drain(&mut self, gap: Duration) -> io::Result<()> {
        let mut spreader = std::mem::take(&mut self.spreader);
        let mut result = Ok(());
        while let Some(datagram) = spreader.pop() {
            result = if datagram == HEARTBEAT_SLOT {
                let hb = self.next_heartbeat(self.ending);
                let mut buf = std::mem::take(&mut self.buf);
                self.writer.heartbeat(&mut buf, &hb);
                let r = self.transmit(&buf, gap);
                self.buf = buf;
                r
            } else {
                self.transmit(datagram, gap)
            };
            if result.is_err() {
                break;
            }
        }
        self.spreader = spreader;
        let drained = self.spreader.drained_below();
        while self.unemitted.front().is_some_and(|&(_, w)| w <= drained) {
            self.unemitted.pop_front();
        }
        self.matrix_descriptors.clear();
        result
    }

    /// Pads the spreader's matrix (descriptor copies of its objects, heartbeats, and the
    /// inventory) and sends it over at least [`FLUSH_SPAN`].
    fn flush(&mut self) -> io::Result<()> {
        if self.spreader.held() == 0 {
            return Ok(());
        }
        let ending = self.ending;
        let inventory = Inventory::fitting(self.recent.iter().cloned().collect());
        let descriptors = &self.matrix_descriptors;
        let writer = &self.writer;
        let heartbeat_every = if ending { 4 } else { 16 };
        let mut i = 0usize;
        let mut next_descriptor = 0usize;
        self.spreader.pad(|out| {
            i += 1;
            if i % 64 == 1 && !inventory.entries.is_empty() {
                writer.inventory(out, &inventory);
            } else if i.is_multiple_of(heartbeat_every) || descriptors.is_empty() {
                out.extend_from_slice(HEARTBEAT_SLOT);
            } else {
                let (object, d) = &descriptors[next_descriptor % descriptors.len()];
                next_descriptor += 1;
                writer
                    .descriptor(out, *object, d)
                    .expect("it was encoded once already");
            }
        });
        self.drain(FLUSH_SPAN / CELLS as u32)
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
        self.datagrams += 1;
        self.bytes += datagram.len() as u64;
        self.metrics.datagrams.inc();
        self.metrics.bytes.inc_by(datagram.len() as u64);
        Ok(())
    }

    /// Sends a copy of `object`'s descriptor through the spreader.
    pub fn emit_descriptor(&mut self, object: u32, d: &ObjectDescriptor) -> io::Result<()> {
        if !self.recent.iter().any(|e| e.object == object) {
            self.recent
                .push_back(gapferry_common::control::InventoryEntry {
                    object,
                    kind: d.kind,
                    name: d.name.clone(),
                    size: d.size,
                });
            if self.recent.len() > INVENTORY_OBJECTS {
                self.recent.pop_front();
            }
        }
        self.writer
            .descriptor(self.spreader.slot(), object, d)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        self.spreader.commit();
        if !self.matrix_descriptors.iter().any(|(o, _)| *o == object)
            && self.matrix_descriptors.len() < PADDING_DESCRIPTORS
        {
            self.matrix_descriptors.push((object, d.clone()));
        }
        if self.spreader.is_full() {
            self.drain(Duration::ZERO)?;
        }
        Ok(())
    }

    /// The next heartbeat with the session's counters now.
    fn next_heartbeat(&mut self, ending: bool) -> Heartbeat {
        let now = self.now();
        self.heartbeat_seq += 1;
        Heartbeat {
            seq: self.heartbeat_seq,
            uptime_ms: now.saturating_duration_since(self.started).as_millis() as u64,
            datagrams_sent: self.datagrams,
            bytes_sent: self.bytes,
            next_object: self.next_object,
            done_below: self.done_below(),
            rate_bps: self.pacer.rate_bps(),
            ending,
        }
    }

    /// Sends a heartbeat (and every few, an inventory) at once if one is due.
    fn heartbeat_if_due(&mut self, ending: bool) -> io::Result<()> {
        let now = self.now();
        let due = ending
            || self
                .last_heartbeat
                .is_none_or(|t| now.saturating_duration_since(t) >= HEARTBEAT_EVERY);
        if !due {
            return Ok(());
        }
        self.last_heartbeat = Some(now);
        let hb = self.next_heartbeat(ending);
        let gap = if ending {
            ENDING_SPACING
        } else {
            Duration::ZERO
        };
        let mut buf = std::mem::take(&mut self.buf);
        self.writer.heartbeat(&mut buf, &hb);
        let mut r = self.transmit(&buf, gap);
        if r.is_ok()
            && (ending || hb.seq.is_multiple_of(INVENTORY_EVERY))
            && !self.recent.is_empty()
        {
            let inv = Inventory::fitting(self.recent.iter().cloned().collect());
            self.writer.inventory(&mut buf, &inv);
            r = self.transmit(&buf, Duration::ZERO);
        }
        self.buf = buf;
        r
    }

    /// For idle services: sends what the spreader holds (padded) and a heartbeat if due.
    pub fn tick(&mut self) -> io::Result<()> {
        self.flush()?;
        self.heartbeat_if_due(false)?;
        self.sink.flush()
    }

    /// Sends `files`, each as one object, in every pass (pass 1 of all, then pass 2...).
    ///
    /// A file that fails (vanished, unreadable, changed) is reported and the others go on.
    pub fn send_files(
        &mut self,
        files: &[SourceFile],
        progress: &Progress,
    ) -> io::Result<Vec<SendReport>> {
        let passes = self.cfg.passes;
        let mut objects: Vec<(u32, Option<ObjectDescriptor>)> = Vec::with_capacity(files.len());
        let mut reports: Vec<SendReport> = Vec::with_capacity(files.len());
        for pass in 1..=passes {
            for (i, file) in files.iter().enumerate() {
                progress.set_message(file.name.clone());
                if pass == 1 {
                    let id = self.allocate_object();
                    let d = transfer::describe(file, self.max_symbol, passes);
                    let error = d.as_ref().err().map(|e| e.to_string());
                    if let Some(e) = &error {
                        tracing::error!(file = %file.path.display(), "{e}");
                        self.object_done(id);
                    }
                    reports.push(SendReport {
                        name: file.name.clone(),
                        object: id,
                        error,
                    });
                    objects.push((id, d.ok()));
                }
                let (id, Some(d)) = &objects[i] else { continue };
                let d = ObjectDescriptor { pass, ..d.clone() };
                match transfer::send_object(self, *id, file, &d, progress) {
                    Ok(()) => {}
                    Err(TransferError::Sink(e)) => return Err(e),
                    Err(e) => {
                        tracing::error!(file = %file.path.display(), object = id, "{e}");
                        reports[i].error.get_or_insert(e.to_string());
                    }
                }
                if pass == passes {
                    self.object_done(*id);
                    let outcome = if reports[i].error.is_some() {
                        "failed"
                    } else {
                        "sent"
                    };
                    self.metrics.object(file.kind, outcome);
                }
            }
        }
        Ok(reports)
    }

    /// Sends `file` whole under a new object id, its `passes` passes back to back.
    pub fn send_whole(
        &mut self,
        file: &SourceFile,
        passes: u8,
        progress: &Progress,
    ) -> (u32, Result<(), TransferError>) {
        let id = self.allocate_object();
        let result = transfer::describe(file, self.max_symbol, passes).and_then(|d| {
            for pass in 1..=passes {
                let d = ObjectDescriptor { pass, ..d.clone() };
                transfer::send_object(self, id, file, &d, progress)?;
            }
            Ok(())
        });
        self.object_done(id);
        (id, result)
    }

    /// Ends the session: the last matrix goes out padded with ending heartbeats, then more
    /// ending heartbeats follow, spaced in time; the receiver learns every object was sent.
    pub fn finish(&mut self) -> io::Result<()> {
        let ids: Vec<u32> = self.in_progress.iter().copied().collect();
        for id in ids {
            self.object_done(id);
        }
        self.ending = true;
        self.flush()?;
        for _ in 0..ENDING_HEARTBEATS {
            self.heartbeat_if_due(true)?;
        }
        self.sink.finish()
    }
}
