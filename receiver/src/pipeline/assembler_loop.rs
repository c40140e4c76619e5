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

#[allow(clippy::too_many_arguments)]
pub(super) fn run_assembler(
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
