//! The assembler thread: takes batches of datagrams, ticks and solved blocks, drives the
//! assembler, hands its events over, and keeps what `status` and the metrics read
//! (activity file, counters, replay-protection state, warnings of the receiver's own drops).

use super::handover::Handover;
use super::*;

/// Feeds one datagram to the assembler, counting a rejection by its reason.
pub(super) fn handle(
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

/// Persists the replay-protection state when it changed; a failure is logged (the
/// receiver goes on: refusing traffic because the state disk is full would be worse).
pub(super) fn save_freshness(asm: &mut Assembler, file: Option<&crate::freshness::FreshnessFile>) {
    if let (Some(file), Some(state)) = (file, asm.freshness_mut()) {
        if let Err(e) = file.save_if_dirty(state) {
            tracing::warn!(error = %e, "cannot save the replay-protection state");
        }
    }
}

/// Keeps `<state>/activity.json` saying when authenticated datagrams last arrived and what
/// the receiver dropped itself, rewritten at most once per [`ACTIVITY_EVERY`].
pub(super) struct ActivityFile {
    state_dir: PathBuf,
    metrics: crate::metrics::ReceiverMetrics,
    seen: u64,
    own_drops: gapferry_common::assembler::OwnDrops,
    last: Option<(u64, std::time::SystemTime)>,
    changed: bool,
    written: Option<Instant>,
}

impl ActivityFile {
    pub(super) fn new(state_dir: PathBuf, metrics: crate::metrics::ReceiverMetrics) -> Self {
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
    pub(super) fn update(&mut self, stats: &Stats, session: Option<u64>) {
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
pub(super) struct OwnDropsWarning {
    warned: gapferry_common::assembler::OwnDrops,
    at: Option<Duration>,
}

impl OwnDropsWarning {
    /// Warns when `total` grew and the last warning is old enough; returns what it warned of.
    pub(super) fn check(
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
pub(super) fn note_host_drops(
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

/// Buffers the assembler thread passes on for reuse.
pub(super) struct Recycling {
    /// Buffers of blocks the disk writer has written, for the assembler's next blocks.
    pub(super) blocks: Receiver<Vec<u8>>,
    /// Receive buffers whose datagrams are handled, back to the socket threads' pool.
    pub(super) reads: Sender<Vec<u8>>,
}

/// What became of one input.
enum Flow {
    /// Go on.
    Next,
    /// The input ended (closed or `End`): finish.
    Finish,
    /// The disk writer is gone: stop at once.
    Gone,
}

/// The assembler thread's state between inputs.
struct AssemblerLoop {
    asm: Assembler,
    out: Handover,
    metrics: crate::metrics::ReceiverMetrics,
    clock: Clock,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    activity: Option<ActivityFile>,
    freshness: Option<crate::freshness::FreshnessFile>,
    solvers: Option<Solvers>,
    /// Buffers going back: written blocks' to the assembler, receive buffers to the pool.
    recycling: Recycling,
    /// Blocks decoded, repaired and datagrams refused over limits, as last published.
    published: (u64, u64, u64),
    host_drops: (u64, u64),
    warning: OwnDropsWarning,
    last_tick: Duration,
    last_freshness_save: Duration,
    now: Duration,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn run_assembler(
    mut asm: Assembler,
    rx: Receiver<Input>,
    out: Handover,
    clock: Clock,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    activity: Option<ActivityFile>,
    freshness: Option<crate::freshness::FreshnessFile>,
    recycling: Recycling,
) -> Stats {
    asm.set_solve_elsewhere(true);
    // The sender spreads each block's symbols over its stream: a repair symbol often
    // arrives before the last source symbols, and a solve started then would be wasted.
    asm.set_hold_solves(true);
    let solvers = match Solvers::start(Solvers::default_threads()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot start solver threads; solving on the assembler thread");
            asm.set_solve_elsewhere(false);
            None
        }
    };
    AssemblerLoop {
        asm,
        metrics: out.metrics.clone(),
        out,
        clock,
        backlog,
        backlog_bytes,
        activity,
        freshness,
        solvers,
        recycling,
        published: (0, 0, 0),
        host_drops: (0, 0),
        warning: OwnDropsWarning::default(),
        last_tick: Duration::ZERO,
        last_freshness_save: Duration::ZERO,
        now: Duration::ZERO,
    }
    .run(rx)
}

impl AssemblerLoop {
    fn run(mut self, rx: Receiver<Input>) -> Stats {
        let never = crossbeam_channel::never();
        loop {
            let done = self.solvers.as_ref().map_or(&never, |s| s.done()).clone();
            let wait = match self.clock {
                Clock::Live(_) => TICK,
                Clock::Inputs => Duration::MAX,
            };
            let input = crossbeam_channel::select! {
                recv(rx) -> i => match i {
                    Ok(i) => Some(i),
                    Err(_) => break,
                },
                recv(done) -> s => {
                    if let (Ok(s), Some(solvers)) = (s, self.solvers.as_mut()) {
                        solvers.apply(&mut self.asm, s);
                    }
                    None
                },
                default(wait) => None,
            };
            while let Ok(buf) = self.recycling.blocks.try_recv() {
                self.asm.recycle_block(buf);
            }
            match self.take(input) {
                Flow::Next => {}
                Flow::Finish => break,
                Flow::Gone => return self.asm.stats().clone(),
            }
            if let Some(solvers) = self.solvers.as_mut() {
                solvers.submit_from(&mut self.asm);
            }
            note_host_drops(&mut self.asm, &self.metrics, &mut self.host_drops);
            if let Clock::Live(start) = self.clock {
                self.now = self.now.max(start.elapsed());
            }
            if self.now.saturating_sub(self.last_tick) >= TICK {
                self.tick();
            }
            if !self.out.drain(&mut self.asm) {
                return self.asm.stats().clone();
            }
        }
        self.settle();
        self.asm.finish("the receiver stopped");
        save_freshness(&mut self.asm, self.freshness.as_ref());
        self.out.drain(&mut self.asm);
        self.asm.stats().clone()
    }

    /// Acts on one input (`None`: a solve came back or time passed).
    fn take(&mut self, input: Option<Input>) -> Flow {
        match input {
            Some(Input::Datagram { at, bytes }) => {
                self.now = self.now.max(at);
                handle(&mut self.asm, self.now, 0, &bytes, &self.metrics);
            }
            Some(Input::Batch(batch)) => return self.batch(batch),
            Some(Input::Tick(t)) => self.now = self.now.max(t),
            Some(Input::End(reason)) => {
                self.settle();
                self.asm.tick(self.now);
                self.asm.finish(&reason);
                return Flow::Finish;
            }
            None => {}
        }
        Flow::Next
    }

    /// Hands every datagram of `batch` to the assembler, its events over after each.
    fn batch(&mut self, batch: Vec<Arrival>) -> Flow {
        let n: usize = batch.iter().map(Arrival::count).sum();
        let cost: usize = batch.iter().map(Arrival::cost).sum();
        self.backlog.fetch_sub(n, Ordering::Relaxed);
        for arrival in &batch {
            self.now = self.now.max(arrival.at);
            for bytes in arrival.datagrams() {
                handle(
                    &mut self.asm,
                    self.now,
                    arrival.source,
                    bytes,
                    &self.metrics,
                );
                if !self.out.drain(&mut self.asm) {
                    return Flow::Gone;
                }
            }
        }
        for arrival in batch {
            crate::socket::give_back(&self.recycling.reads, arrival.bytes);
        }
        // The batch's bytes count until they are freed or given back.
        self.backlog_bytes.fetch_sub(cost, Ordering::Relaxed);
        Flow::Next
    }

    /// Solves what is ready and notes the host's drops: before the sessions close.
    fn settle(&mut self) {
        self.asm.flush_ready();
        if let Some(solvers) = self.solvers.as_mut() {
            solvers.drain(&mut self.asm);
        }
        note_host_drops(&mut self.asm, &self.metrics, &mut self.host_drops);
    }

    /// Advances the assembler's time, saves the replay-protection state now and then, and
    /// publishes counters, gauges, the activity file and warnings.
    fn tick(&mut self) {
        let now = self.now;
        self.asm.tick(now);
        if now.saturating_sub(self.last_freshness_save) >= FRESHNESS_EVERY {
            save_freshness(&mut self.asm, self.freshness.as_ref());
            self.last_freshness_save = now;
        }
        self.last_tick = now;
        let (metrics, st) = (&self.metrics, self.asm.stats());
        let published = self.published;
        metrics
            .blocks_decoded
            .inc_by(st.blocks_decoded - published.0);
        metrics
            .blocks_repaired
            .inc_by(st.blocks_repaired - published.1);
        let refused = st.own_drops.memory_limit + st.own_drops.objects_limit;
        metrics.limit_refused.inc_by(refused - published.2);
        self.published = (st.blocks_decoded, st.blocks_repaired, refused);
        self.warning.check(now, st.own_drops);
        if let Some(a) = self.activity.as_mut() {
            a.update(st, self.asm.last_session());
        }
        metrics
            .objects_in_flight
            .set(self.asm.objects_in_flight() as i64);
        metrics.held_bytes.set(self.asm.held_bytes() as i64);
        metrics
            .queue_depth
            .set(self.backlog.load(Ordering::Relaxed) as i64);
    }
}
