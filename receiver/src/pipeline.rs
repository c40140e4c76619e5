//! The receiver's threads: one drains the socket and does nothing else, one runs the
//! assembler, one writes to disk. Replay drives the same assembler and delivery.
//!
//! Memory between them is bounded in bytes: the socket thread drops a datagram longer
//! than the MTU, or failing the wire checks (tag included), before copying it, and
//! queues for the assembler only while the queued bytes stay under `queue_bytes`; the
//! assembler hands decoded blocks to the disk writer only while their bytes stay under
//! [`EVENT_BYTES`].

use crate::delivery::{Delivery, Summary};
use crate::socket::UdpSource;
use crate::solvers::Solvers;
use crossbeam_channel::{bounded, Receiver, Sender};
use gapferry_common::assembler::Stats;
use gapferry_common::wire::RejectReason;
use gapferry_common::{wire, Assembler, Event, KeyRing, Limits};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often timeouts are checked, in the clock of the datagrams.
const TICK: Duration = Duration::from_millis(100);
/// Least time between two writes of the replay-protection state while running (it is
/// written once more when the receiver stops).
const FRESHNESS_EVERY: Duration = Duration::from_secs(1);
/// Datagrams queued between the socket thread and the assembler.
pub const DEFAULT_QUEUE: usize = 1 << 16;
/// Bytes of datagrams queued between the socket thread and the assembler.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;
/// Largest MTU of the link by default: jumbo frames pass, anything longer is dropped.
pub const DEFAULT_MTU: usize = 9000;
/// Bytes of an IPv4 and a UDP header: what an MTU leaves at most for a UDP payload.
const IP_UDP_HEADERS: usize = 28;
/// Bytes of decoded blocks queued between the assembler and the disk writer (one block
/// always passes, however large).
pub const EVENT_BYTES: usize = 128 << 20;
/// Datagrams the socket thread hands over at once at most.
const BATCH: usize = 64;
/// How long a partly filled batch waits for more datagrams.
const BATCH_WAIT: Duration = Duration::from_micros(500);
/// Events queued between the assembler and the disk writer.
const EVENT_QUEUE: usize = 256;
/// Least time between two warnings that the receiver drops datagrams itself.
const OWN_DROPS_WARNING_EVERY: Duration = Duration::from_secs(5);
/// Least time between two rewrites of the datagram activity file.
const ACTIVITY_EVERY: Duration = Duration::from_secs(1);
/// How often the socket thread reads the kernel's drop counter of its socket.
const KERNEL_DROPS_EVERY: Duration = Duration::from_millis(500);

/// What the receiver is configured with.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    /// Root of the delivery directories and of the state directory.
    pub out: PathBuf,
    /// Keys accepted; empty accepts untagged datagrams.
    pub keys: KeyRing,
    /// What a sender may make the receiver hold.
    pub limits: Limits,
    /// Receive buffer to request from the kernel.
    pub recv_buffer: usize,
    /// Datagrams queued between the socket thread and the assembler.
    pub queue: usize,
    /// Bytes of datagrams queued between the socket thread and the assembler.
    pub queue_bytes: usize,
    /// The link's MTU: a datagram whose UDP payload cannot fit it is dropped unread.
    pub mtu: usize,
    /// Largest MISP event or STIX bundle read into memory; also the bytes of MISP events
    /// one feed update holds.
    pub max_document: u64,
    /// Where each kind is delivered.
    pub destinations: crate::destinations::Destinations,
    /// Prometheus metrics, updated by every thread.
    pub metrics: crate::metrics::ReceiverMetrics,
    /// Refuse replays of sessions heard before, across restarts (state under `out`); set
    /// by [`Listener::run`] when keys are configured.
    pub replay_protection: bool,
}

impl ReceiverConfig {
    /// Defaults for delivering under `out`.
    pub fn new(out: PathBuf) -> Self {
        ReceiverConfig {
            destinations: crate::destinations::Destinations::under(&out),
            metrics: crate::metrics::ReceiverMetrics::default(),
            out,
            keys: KeyRing::default(),
            limits: Limits::default(),
            recv_buffer: crate::socket::DEFAULT_RECV_BUFFER,
            queue: DEFAULT_QUEUE,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            mtu: DEFAULT_MTU,
            max_document: crate::delivery::MAX_DOCUMENT,
            replay_protection: false,
        }
    }
}

/// One input of the assembler thread.
pub enum Input {
    /// A datagram received at `at` (in the pipeline's clock).
    Datagram {
        /// When it arrived.
        at: Duration,
        /// Its bytes.
        bytes: Vec<u8>,
    },
    /// Datagrams received back to back.
    Batch(Vec<Arrival>),
    /// Time passed without datagrams.
    Tick(Duration),
    /// No more input will come: close every session for this reason.
    End(String),
}

/// Datagrams of one socket read, as the kernel handed them over.
pub struct Arrival {
    /// When they arrived.
    pub at: Duration,
    /// One datagram, or several of `stride` bytes back to back (a GRO read).
    pub bytes: Vec<u8>,
    /// Bytes of each datagram but the last.
    pub stride: usize,
    /// Where they came from (a hash of the UDP source address; 0 when unknown), so that
    /// one source cannot hold the whole session table while another waits.
    pub source: u64,
}

impl Arrival {
    /// The datagrams it holds.
    pub fn datagrams(&self) -> std::slice::Chunks<'_, u8> {
        self.bytes.chunks(self.stride.max(1))
    }

    /// How many datagrams it holds.
    pub fn count(&self) -> usize {
        self.bytes.len().div_ceil(self.stride.max(1))
    }

    /// Bytes of memory it takes while queued.
    pub fn cost(&self) -> usize {
        self.bytes.capacity() + std::mem::size_of::<Arrival>()
    }
}

/// Whose clock the pipeline runs on.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Wall-clock time since `start`: timeouts fire while idle.
    Live(Instant),
    /// Only the timestamps carried by inputs (capture replay).
    Inputs,
}

/// What a finished pipeline reports.
#[derive(Debug, Clone)]
pub struct Report {
    /// Outcomes of objects.
    pub summary: Summary,
    /// What the assembler saw.
    pub assembler: Stats,
}

/// The assembler and delivery threads, fed through [`Engine::input`].
pub struct Engine {
    input: Sender<Input>,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    assembler: JoinHandle<Stats>,
    delivery: JoinHandle<Summary>,
}

/// Bytes handed from one thread to another and not yet consumed: the producer waits
/// while they exceed the limit (one hand-over always passes, however large).
#[derive(Debug)]
struct ByteBudget {
    /// Bytes in flight, and whether the consumer is gone.
    state: Mutex<(usize, bool)>,
    freed: Condvar,
    limit: usize,
}

impl ByteBudget {
    fn new(limit: usize) -> Self {
        ByteBudget {
            state: Mutex::new((0, false)),
            freed: Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, bool)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `n` more bytes fit (or nothing is in flight, or the consumer is gone).
    fn acquire(&self, n: usize) {
        let mut st = self.lock();
        while !st.1 && st.0 > 0 && st.0 + n > self.limit {
            st = self.freed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.0 += n;
    }

    /// `n` bytes were consumed.
    fn release(&self, n: usize) {
        let mut st = self.lock();
        st.0 = st.0.saturating_sub(n);
        self.freed.notify_all();
    }

    /// The consumer stopped: nobody waits any more.
    fn close(&self) {
        self.lock().1 = true;
        self.freed.notify_all();
    }
}

/// Closes a budget when the consumer thread ends, even by a panic.
struct CloseOnDrop(Arc<ByteBudget>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.0.close();
    }
}

/// Bytes an event carries to the disk writer.
fn event_bytes(ev: &Event) -> usize {
    match ev {
        Event::BlockDecoded { data, .. } => data.capacity(),
        _ => 0,
    }
}

/// Hands `ev` to the disk writer once its bytes fit the budget; false when it is gone.
fn hand_over(events: &Sender<Event>, budget: &ByteBudget, ev: Event) -> bool {
    let n = event_bytes(&ev);
    budget.acquire(n);
    if events.send(ev).is_err() {
        budget.release(n);
        return false;
    }
    true
}

impl Engine {
    /// Starts the assembler and delivery threads.
    pub fn start(cfg: &ReceiverConfig, clock: Clock, queue: usize) -> std::io::Result<Self> {
        let ledger = std::sync::Arc::new(crate::ledger::DeliveredLedger::load(&cfg.out));
        let mut delivery = Delivery::open(&cfg.out, cfg.destinations.clone(), cfg.metrics.clone())?;
        delivery.set_ledger(ledger.clone());
        delivery.set_max_document(cfg.max_document);
        let (input, input_rx) = bounded::<Input>(queue);
        let (events, events_rx) = bounded::<Event>(EVENT_QUEUE);
        let budget = Arc::new(ByteBudget::new(EVENT_BYTES));
        let delivery = std::thread::Builder::new()
            .name("gapferry-delivery".into())
            .spawn({
                let budget = budget.clone();
                move || {
                    let _closed = CloseOnDrop(budget.clone());
                    loop {
                        let ev = match events_rx.try_recv() {
                            Ok(ev) => ev,
                            Err(crossbeam_channel::TryRecvError::Empty) => {
                                // Idle for a moment: deliver the batched MISP events now.
                                delivery.flush();
                                match events_rx.recv() {
                                    Ok(ev) => ev,
                                    Err(_) => break,
                                }
                            }
                            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                        };
                        let n = event_bytes(&ev);
                        delivery.handle(ev);
                        budget.release(n);
                    }
                    delivery.abandon_all("the receiver stopped before the object completed");
                    delivery.into_summary()
                }
            })?;
        let mut assembler = Assembler::new(cfg.limits.clone(), cfg.keys.clone());
        assembler.set_announce(true);
        // A keyed live receiver refuses replays of sessions it knew, across restarts; a
        // capture replayed on purpose (`replay`) is the operator's own, and not refused.
        let freshness = (matches!(clock, Clock::Live(_)) && cfg.replay_protection).then(|| {
            crate::freshness::FreshnessFile::new(&cfg.out.join(crate::records::STATE_DIR))
        });
        if let Some(file) = &freshness {
            assembler.set_freshness(file.load()?);
        }
        let backlog = Arc::new(AtomicUsize::new(0));
        // Only a live link has an activity to show; a replayed capture's is long past.
        let activity = match clock {
            Clock::Live(_) => Some(ActivityFile::new(
                cfg.out.join(crate::records::STATE_DIR),
                cfg.metrics.clone(),
            )),
            Clock::Inputs => None,
        };
        let backlog_bytes = Arc::new(AtomicUsize::new(0));
        let assembler = std::thread::Builder::new()
            .name("gapferry-assembler".into())
            .spawn({
                let to_delivery = Handover {
                    events,
                    budget,
                    metrics: cfg.metrics.clone(),
                    ledger,
                };
                let backlog = backlog.clone();
                let backlog_bytes = backlog_bytes.clone();
                move || {
                    run_assembler(
                        assembler,
                        input_rx,
                        to_delivery,
                        clock,
                        backlog,
                        backlog_bytes,
                        activity,
                        freshness,
                    )
                }
            })?;
        Ok(Engine {
            input,
            backlog,
            backlog_bytes,
            assembler,
            delivery,
        })
    }

    /// Where inputs go; sending blocks when the queue is full.
    pub fn input(&self) -> &Sender<Input> {
        &self.input
    }

    /// Datagrams handed over in [`Input::Batch`]es that the assembler has not handled yet.
    pub fn backlog(&self) -> Arc<AtomicUsize> {
        self.backlog.clone()
    }

    /// Bytes ([`Arrival::cost`]) of the [`Input::Batch`]es the assembler has not finished.
    pub fn backlog_bytes(&self) -> Arc<AtomicUsize> {
        self.backlog_bytes.clone()
    }

    /// Closes the input, lets every thread finish, and reports.
    pub fn finish(self) -> Report {
        drop(self.input);
        let assembler = self.assembler.join().expect("assembler thread panicked");
        let summary = self.delivery.join().expect("delivery thread panicked");
        Report { summary, assembler }
    }
}

/// Feeds one datagram to the assembler, counting a rejection by its reason.
/// An opaque id of a UDP source address, for the assembler's fairness between sources.
fn source_id(addr: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(addr)
}

fn handle(
    asm: &mut Assembler,
    now: Duration,
    source: u64,
    bytes: &[u8],
    metrics: &crate::metrics::ReceiverMetrics,
) {
    if let Err(reject) = asm.handle_from(now, source, bytes) {
        let advice = crate::cause::reject_advice(reject.reason());
        tracing::trace!(%reject, advice, "datagram rejected");
        metrics.rejected(reject.reason(), 1);
    }
}

/// The assembler thread's way to the disk writer.
struct Handover {
    events: Sender<Event>,
    budget: Arc<ByteBudget>,
    metrics: crate::metrics::ReceiverMetrics,
    /// Answers the assembler's question whether an announced object was delivered before.
    ledger: Arc<crate::ledger::DeliveredLedger>,
}

impl Handover {
    /// Hands every pending event over, answering announced objects from the ledger on
    /// the way (before any further datagram); false when the disk writer is gone.
    fn drain(&self, asm: &mut Assembler) -> bool {
        while let Some(ev) = asm.poll_event() {
            if let Event::ObjectAnnounced { object, descriptor } = &ev {
                if self.ledger.already_delivered(descriptor) {
                    asm.skip(*object);
                } else if let Err(reject) = asm.proceed(*object) {
                    tracing::debug!(%object, %reject, "announced object not admitted");
                    self.metrics.rejected(reject.reason(), 1);
                }
                continue;
            }
            if !hand_over(&self.events, &self.budget, ev) {
                return false;
            }
        }
        true
    }
}

/// Persists the replay-protection state when it changed; a failure is logged (the
/// receiver goes on: refusing traffic because the state disk is full would be worse).
fn save_freshness(asm: &mut Assembler, file: Option<&crate::freshness::FreshnessFile>) {
    if let (Some(file), Some(state)) = (file, asm.freshness_mut()) {
        if let Err(e) = file.save_if_dirty(state) {
            tracing::warn!(error = %e, "cannot save the replay-protection state");
        }
    }
}

/// Keeps `<state>/activity.json` saying when authenticated datagrams last arrived and what
/// the receiver dropped itself, rewritten at most once per [`ACTIVITY_EVERY`].
struct ActivityFile {
    state_dir: PathBuf,
    metrics: crate::metrics::ReceiverMetrics,
    seen: u64,
    own_drops: gapferry_common::assembler::OwnDrops,
    last: Option<(u64, std::time::SystemTime)>,
    changed: bool,
    written: Option<Instant>,
}

impl ActivityFile {
    fn new(state_dir: PathBuf, metrics: crate::metrics::ReceiverMetrics) -> Self {
        ActivityFile {
            state_dir,
            metrics,
            seen: 0,
            own_drops: Default::default(),
            last: None,
            changed: false,
            written: None,
        }
    }

    /// Notes the assembler's counters, now.
    fn update(&mut self, stats: &Stats, session: Option<u64>) {
        if stats.authenticated > self.seen {
            self.seen = stats.authenticated;
            if let Some(session) = session {
                let now = std::time::SystemTime::now();
                self.last = Some((session, now));
                let ms = now
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                self.metrics.last_datagram_ms.store(ms, Ordering::Relaxed);
            }
            self.changed = true;
        }
        if stats.own_drops != self.own_drops {
            self.own_drops = stats.own_drops;
            self.changed = true;
        }
        let due = self.written.is_none_or(|w| w.elapsed() >= ACTIVITY_EVERY);
        if self.changed && due {
            let activity = crate::status::Activity::new(self.last, self.seen, self.own_drops);
            if let Err(e) = activity.save(&self.state_dir) {
                tracing::warn!("cannot write the datagram activity for `status`: {e}");
            }
            self.changed = false;
            self.written = Some(Instant::now());
        }
    }
}

/// Warns, at most once per [`OWN_DROPS_WARNING_EVERY`], that the receiver drops datagrams
/// itself, with the counts since the last warning.
#[derive(Default)]
struct OwnDropsWarning {
    warned: gapferry_common::assembler::OwnDrops,
    at: Option<Duration>,
}

impl OwnDropsWarning {
    /// Warns when `total` grew and the last warning is old enough; returns what it warned of.
    fn check(
        &mut self,
        now: Duration,
        total: gapferry_common::assembler::OwnDrops,
    ) -> Option<gapferry_common::assembler::OwnDrops> {
        let new = total.since(&self.warned);
        if new.total() == 0
            || self
                .at
                .is_some_and(|at| now.saturating_sub(at) < OWN_DROPS_WARNING_EVERY)
        {
            return None;
        }
        tracing::warn!(
            dropped = new.total(),
            queue_full = new.queue_full,
            memory_limit = new.memory_limit,
            object_limit = new.objects_limit,
            socket_buffer_full = new.socket_buffer,
            "the receiver is dropping datagrams itself (not the link): objects in flight may fail; {}",
            crate::cause::own_advice(&new)
        );
        self.warned = total;
        self.at = Some(now);
        Some(new)
    }
}

/// Tells the assembler what the socket thread and the kernel dropped since the last call.
fn note_host_drops(
    asm: &mut Assembler,
    metrics: &crate::metrics::ReceiverMetrics,
    seen: &mut (u64, u64),
) {
    let now = (metrics.queue_dropped.get(), metrics.socket_dropped.get());
    if now != *seen {
        asm.note_host_drops(now.0.saturating_sub(seen.0), now.1.saturating_sub(seen.1));
        *seen = now;
    }
}

#[allow(clippy::too_many_arguments)]
fn run_assembler(
    mut asm: Assembler,
    rx: Receiver<Input>,
    out: Handover,
    clock: Clock,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    mut activity: Option<ActivityFile>,
    freshness: Option<crate::freshness::FreshnessFile>,
) -> Stats {
    let metrics = out.metrics.clone();
    let mut published = (0u64, 0u64, 0u64);
    let mut host_drops = (0u64, 0u64);
    let mut warning = OwnDropsWarning::default();
    let mut last_tick = Duration::ZERO;
    let mut last_freshness_save = Duration::ZERO;
    let mut now = Duration::ZERO;
    asm.set_solve_elsewhere(true);
    // The sender spreads each block's symbols over its stream: a repair symbol often
    // arrives before the last source symbols, and a solve started then would be wasted.
    asm.set_hold_solves(true);
    let mut solvers = match Solvers::start(Solvers::default_threads()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start solver threads; solving on the assembler thread");
            asm.set_solve_elsewhere(false);
            None
        }
    };
    let never = crossbeam_channel::never();
    loop {
        let done = solvers.as_ref().map_or(&never, |s| s.done());
        let wait = match clock {
            Clock::Live(_) => TICK,
            Clock::Inputs => Duration::MAX,
        };
        let input = crossbeam_channel::select! {
            recv(rx) -> i => match i {
                Ok(i) => Some(i),
                Err(_) => break,
            },
            recv(done) -> s => {
                if let (Ok(s), Some(solvers)) = (s, solvers.as_mut()) {
                    solvers.apply(&mut asm, s);
                }
                None
            },
            default(wait) => None,
        };
        match input {
            Some(Input::Datagram { at, bytes }) => {
                now = now.max(at);
                handle(&mut asm, now, 0, &bytes, &metrics);
            }
            Some(Input::Batch(batch)) => {
                let n: usize = batch.iter().map(Arrival::count).sum();
                let cost: usize = batch.iter().map(Arrival::cost).sum();
                backlog.fetch_sub(n, Ordering::Relaxed);
                for arrival in &batch {
                    now = now.max(arrival.at);
                    for bytes in arrival.datagrams() {
                        handle(&mut asm, now, arrival.source, bytes, &metrics);
                        if !out.drain(&mut asm) {
                            return asm.stats().clone();
                        }
                    }
                }
                drop(batch);
                // The batch's bytes count until they are freed.
                backlog_bytes.fetch_sub(cost, Ordering::Relaxed);
            }
            Some(Input::Tick(t)) => now = now.max(t),
            Some(Input::End(reason)) => {
                asm.flush_ready();
                if let Some(solvers) = solvers.as_mut() {
                    solvers.drain(&mut asm);
                }
                note_host_drops(&mut asm, &metrics, &mut host_drops);
                asm.tick(now);
                asm.finish(&reason);
                break;
            }
            None => {}
        }
        if let Some(solvers) = solvers.as_mut() {
            solvers.submit_from(&mut asm);
        }
        note_host_drops(&mut asm, &metrics, &mut host_drops);
        if let Clock::Live(start) = clock {
            now = now.max(start.elapsed());
        }
        if now.saturating_sub(last_tick) >= TICK {
            asm.tick(now);
            if now.saturating_sub(last_freshness_save) >= FRESHNESS_EVERY {
                save_freshness(&mut asm, freshness.as_ref());
                last_freshness_save = now;
            }
            last_tick = now;
            let st = asm.stats();
            metrics
                .blocks_decoded
                .inc_by(st.blocks_decoded - published.0);
            metrics
                .blocks_repaired
                .inc_by(st.blocks_repaired - published.1);
            let refused = st.own_drops.memory_limit + st.own_drops.objects_limit;
            metrics.limit_refused.inc_by(refused - published.2);
            published = (st.blocks_decoded, st.blocks_repaired, refused);
            warning.check(now, st.own_drops);
            if let Some(a) = activity.as_mut() {
                a.update(st, asm.last_session());
            }
            metrics
                .objects_in_flight
                .set(asm.objects_in_flight() as i64);
            metrics.held_bytes.set(asm.held_bytes() as i64);
            metrics
                .queue_depth
                .set(backlog.load(Ordering::Relaxed) as i64);
        }
        if !out.drain(&mut asm) {
            return asm.stats().clone();
        }
    }
    asm.flush_ready();
    if let Some(solvers) = solvers.as_mut() {
        solvers.drain(&mut asm);
    }
    note_host_drops(&mut asm, &metrics, &mut host_drops);
    asm.finish("the receiver stopped");
    save_freshness(&mut asm, freshness.as_ref());
    out.drain(&mut asm);
    asm.stats().clone()
}

/// Counters of the socket-draining thread.
#[derive(Debug, Default)]
pub struct SocketCounters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams dropped because the assembler queue was full.
    pub queue_full: AtomicU64,
}

/// A bound receiver, ready to run until told to stop.
pub struct Listener {
    source: UdpSource,
    cfg: ReceiverConfig,
    counters: Arc<SocketCounters>,
}

/// What a listener reports when it stops.
#[derive(Debug, Clone)]
pub struct ListenReport {
    /// Outcomes and assembler counters (datagrams the socket thread rejected included).
    pub report: Report,
    /// Datagrams read from the socket.
    pub received: u64,
    /// Datagrams dropped because the assembler could not keep up.
    pub queue_full: u64,
}

/// Datagrams the socket thread dropped, by reject label, with their metric counters.
struct SocketRejects {
    counts: HashMap<RejectReason, u64>,
    counters: HashMap<RejectReason, prometheus_client::metrics::counter::Counter>,
    metrics: crate::metrics::ReceiverMetrics,
}

impl SocketRejects {
    fn count(&mut self, reason: RejectReason, n: u64) {
        *self.counts.entry(reason).or_default() += n;
        let metrics = &self.metrics;
        self.counters
            .entry(reason)
            .or_insert_with(|| {
                metrics
                    .rejected
                    .get_or_create(&crate::metrics::ReasonLabel { reason })
                    .clone()
            })
            .inc_by(n);
    }
}

/// The socket thread's checks: what fails them is counted and dropped, never copied.
struct Gate {
    /// Longest UDP payload the MTU allows.
    max_payload: usize,
    keys: KeyRing,
    rejects: SocketRejects,
    /// Scratch: which datagrams of the current message passed.
    passed: Vec<bool>,
}

impl Gate {
    /// Queues in `out` what passes of one message: the message whole when every
    /// datagram in it passes the wire checks, else only those that pass, one by one.
    fn admit(
        &mut self,
        bytes: &[u8],
        stride: usize,
        at: Duration,
        source: u64,
        out: &mut Vec<Arrival>,
    ) {
        let n = bytes.len().div_ceil(stride);
        // Every datagram of a GRO read but the last is `stride` bytes long.
        if stride > self.max_payload || bytes.len() > self.max_payload && stride == bytes.len() {
            self.rejects.count(RejectReason::TooLong, n as u64);
            return;
        }
        self.passed.clear();
        for datagram in bytes.chunks(stride) {
            let verdict = wire::parse(datagram, &self.keys);
            if let Err(r) = &verdict {
                self.rejects.count(r.reason(), 1);
            }
            self.passed.push(verdict.is_ok());
        }
        if self.passed.iter().all(|&ok| ok) {
            out.push(Arrival {
                at,
                bytes: bytes.to_vec(),
                stride,
                source,
            });
            return;
        }
        for (datagram, _) in bytes
            .chunks(stride)
            .zip(self.passed.iter())
            .filter(|(_, &ok)| ok)
        {
            out.push(Arrival {
                at,
                bytes: datagram.to_vec(),
                stride: datagram.len(),
                source,
            });
        }
    }
}

impl Listener {
    /// Binds the socket for `cfg`.
    pub fn bind(addr: SocketAddr, cfg: ReceiverConfig) -> std::io::Result<Self> {
        let source = UdpSource::bind(addr, cfg.recv_buffer)?;
        Ok(Listener {
            source,
            cfg,
            counters: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.source.local_addr()
    }

    /// Live counters of the socket thread.
    pub fn counters(&self) -> Arc<SocketCounters> {
        self.counters.clone()
    }

    /// Receives and delivers until `shutdown` is set, then finishes what it is writing.
    pub fn run(self, shutdown: Arc<AtomicBool>) -> std::io::Result<ListenReport> {
        let start = Instant::now();
        // The socket thread checks every tag: the assembler gets only datagrams that
        // passed, and need not check them again.
        let keys = self.cfg.keys.clone();
        let engine_cfg = ReceiverConfig {
            keys: KeyRing::default(),
            // Without keys anyone can make a new session id: nothing to protect.
            replay_protection: self.cfg.keys.is_enabled(),
            ..self.cfg.clone()
        };
        // The channel holds batches of any size; `backlog` bounds the datagrams in them,
        // `backlog_bytes` their bytes.
        let engine = Engine::start(
            &engine_cfg,
            Clock::Live(start),
            (self.cfg.queue / BATCH).max(16),
        )?;
        let input = engine.input().clone();
        let backlog = engine.backlog();
        let backlog_bytes = engine.backlog_bytes();
        let limit = self.cfg.queue;
        let byte_limit = self.cfg.queue_bytes;
        let max_payload = self
            .cfg
            .mtu
            .saturating_sub(IP_UDP_HEADERS)
            .min(wire::MAX_DATAGRAM);
        let counters = self.counters.clone();
        let metrics = self.cfg.metrics.clone();
        let mut source = self.source;
        let drain = std::thread::Builder::new()
            .name("gapferry-socket".into())
            .spawn(move || -> std::io::Result<HashMap<RejectReason, u64>> {
                let mut reads = crate::socket::RecvBatch::default();
                let mut batch: Vec<Arrival> = Vec::new();
                let mut gate = Gate {
                    max_payload,
                    keys,
                    rejects: SocketRejects {
                        counts: HashMap::new(),
                        counters: HashMap::new(),
                        metrics: metrics.clone(),
                    },
                    passed: Vec::new(),
                };
                let mut waiting_short = false;
                let mut kernel_drops = (Instant::now(), 0u64);
                // Datagrams go to the assembler in batches: one queue operation and one
                // wake-up per batch rather than per datagram. A batch leaves when it holds
                // BATCH datagrams or as soon as the socket has been quiet for BATCH_WAIT.
                let flush = |batch: &mut Vec<Arrival>| {
                    if batch.is_empty() {
                        return;
                    }
                    let full = std::mem::take(batch);
                    let n: usize = full.iter().map(Arrival::count).sum();
                    let cost: usize = full.iter().map(Arrival::cost).sum();
                    // Never block the socket: a full queue is a counted drop.
                    let room = backlog.load(Ordering::Relaxed) + n <= limit
                        && backlog_bytes.load(Ordering::Relaxed) + cost <= byte_limit;
                    if room {
                        backlog.fetch_add(n, Ordering::Relaxed);
                        backlog_bytes.fetch_add(cost, Ordering::Relaxed);
                    }
                    if !room || input.try_send(Input::Batch(full)).is_err() {
                        if room {
                            backlog.fetch_sub(n, Ordering::Relaxed);
                            backlog_bytes.fetch_sub(cost, Ordering::Relaxed);
                        }
                        counters.queue_full.fetch_add(n as u64, Ordering::Relaxed);
                        metrics.queue_dropped.inc_by(n as u64);
                    }
                };
                while !shutdown.load(Ordering::Relaxed) {
                    if kernel_drops.0.elapsed() >= KERNEL_DROPS_EVERY {
                        let total = source.kernel_drops().unwrap_or(kernel_drops.1);
                        metrics
                            .socket_dropped
                            .inc_by(total.saturating_sub(kernel_drops.1));
                        kernel_drops = (Instant::now(), total.max(kernel_drops.1));
                    }
                    if batch.is_empty() == waiting_short {
                        waiting_short = !batch.is_empty();
                        source.set_wait(if waiting_short {
                            BATCH_WAIT
                        } else {
                            crate::socket::POLL_INTERVAL
                        });
                    }
                    if !source.recv(&mut reads)? {
                        flush(&mut batch);
                        continue;
                    }
                    let at = start.elapsed();
                    for (bytes, stride, from) in reads.messages() {
                        let n = bytes.len().div_ceil(stride);
                        counters.received.fetch_add(n as u64, Ordering::Relaxed);
                        metrics.datagrams.inc_by(n as u64);
                        metrics.bytes.inc_by(bytes.len() as u64);
                        gate.admit(bytes, stride, at, source_id(from), &mut batch);
                    }
                    if batch.iter().map(Arrival::count).sum::<usize>() >= BATCH {
                        flush(&mut batch);
                    }
                }
                flush(&mut batch);
                Ok(gate.rejects.counts)
            })?;
        let drained = drain.join().expect("socket thread panicked");
        let mut report = engine.finish();
        let rejected = drained?;
        // Datagrams dropped on the socket thread count as the assembler's rejections did.
        for (label, n) in rejected {
            *report.assembler.rejected.entry(label).or_default() += n;
            report.assembler.datagrams += n;
        }
        Ok(ListenReport {
            report,
            received: self.counters.received.load(Ordering::Relaxed),
            queue_full: self.counters.queue_full.load(Ordering::Relaxed),
        })
    }
}

/// Binds `addr` and receives until `shutdown` is set.
pub fn listen(
    addr: SocketAddr,
    cfg: ReceiverConfig,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<ListenReport> {
    Listener::bind(addr, cfg)?.run(shutdown)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gapferry_common::assembler::OwnDrops;

    #[test]
    fn own_drops_warn_at_once_then_at_most_every_five_seconds_with_the_counts_since() {
        let mut w = OwnDropsWarning::default();
        let at = Duration::from_secs;
        let drops = |queue_full, memory_limit| OwnDrops {
            queue_full,
            memory_limit,
            ..OwnDrops::default()
        };
        assert_eq!(w.check(at(1), OwnDrops::default()), None, "nothing dropped");
        assert_eq!(w.check(at(2), drops(3, 0)), Some(drops(3, 0)), "at once");
        assert_eq!(w.check(at(3), drops(10, 4)), None, "too soon");
        assert_eq!(w.check(at(6), drops(12, 4)), None, "still too soon");
        assert_eq!(
            w.check(at(7), drops(12, 4)),
            Some(drops(9, 4)),
            "everything since the last warning"
        );
        assert_eq!(w.check(at(20), drops(12, 4)), None, "the drops stopped");
        assert_eq!(w.check(at(21), drops(13, 4)), Some(drops(1, 0)));
    }

    /// Joins `t`, failing the test if it has not ended within five seconds.
    fn join_soon<T>(t: std::thread::JoinHandle<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() {
            assert!(Instant::now() < deadline, "the producer is still waiting");
            std::thread::sleep(Duration::from_millis(10));
        }
        t.join().unwrap()
    }

    #[test]
    fn a_byte_budget_holds_the_producer_until_bytes_are_consumed() {
        let budget = Arc::new(ByteBudget::new(100));
        // One hand-over always passes, however large.
        budget.acquire(250);
        let waiting = std::thread::spawn({
            let budget = budget.clone();
            move || {
                budget.acquire(10);
                Instant::now()
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiting.is_finished(),
            "250 + 10 bytes exceed the 100-byte budget"
        );
        let freed_at = Instant::now();
        budget.release(250);
        assert!(join_soon(waiting) >= freed_at);
        assert_eq!(budget.lock().0, 10);
        // A consumer that is gone never leaves the producer waiting.
        budget.acquire(85);
        let waiting = std::thread::spawn({
            let budget = budget.clone();
            move || budget.acquire(50)
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiting.is_finished());
        drop(CloseOnDrop(budget.clone()));
        join_soon(waiting);
    }
}
