//! The socket side of a live receiver: the thread that drains the UDP socket, checks
//! every datagram at the gate (MTU, wire checks, tag) before anything else, hands a GRO
//! read that passed whole to the assembler in its receive buffer (replaced from a pool
//! of buffers the assembler gives back) and copies anything smaller, and queues batches
//! for the assembler without ever blocking the socket.

use super::*;
use crate::lanes::LaneCounters;

/// An opaque id of a UDP source address, for the assembler's fairness between sources.
pub(super) fn source_id(addr: SocketAddr) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(addr)
}

/// Counters of the socket-draining thread.
#[derive(Debug, Default)]
pub struct SocketCounters {
    /// Datagrams read from the socket.
    pub received: AtomicU64,
    /// Datagrams dropped because the assembler queue was full.
    pub queue_full: AtomicU64,
}

/// A bound receiver, ready to run until told to stop: one socket per lane.
pub struct Listener {
    sources: Vec<UdpSource>,
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
pub(super) struct SocketRejects {
    counts: HashMap<RejectReason, u64>,
    counters: HashMap<RejectReason, prometheus_client::metrics::counter::Counter>,
    metrics: crate::metrics::ReceiverMetrics,
    lane: Arc<LaneCounters>,
}

impl SocketRejects {
    fn count(&mut self, reason: RejectReason, n: u64) {
        *self.counts.entry(reason).or_default() += n;
        self.lane.rejected(n);
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
pub(super) struct Gate {
    /// Longest UDP payload the MTU allows.
    max_payload: usize,
    keys: KeyRing,
    rejects: SocketRejects,
    /// Scratch: which datagrams of the current message passed.
    passed: Vec<bool>,
}

impl Gate {
    /// A gate for UDP payloads of at most `max_payload` bytes, tagged with `keys` (when
    /// any), counting what it drops in `metrics`.
    pub(super) fn new(
        max_payload: usize,
        keys: KeyRing,
        metrics: crate::metrics::ReceiverMetrics,
        lane: Arc<LaneCounters>,
    ) -> Self {
        Gate {
            max_payload,
            keys,
            rejects: SocketRejects {
                counts: HashMap::new(),
                counters: HashMap::new(),
                metrics,
                lane,
            },
            passed: Vec::new(),
        }
    }

    /// Datagrams dropped so far, by reason.
    #[cfg(test)]
    pub(super) fn rejected(&self) -> &HashMap<RejectReason, u64> {
        &self.rejects.counts
    }
    /// Checks every datagram of one message (`stride` bytes each, the last may be
    /// shorter); true when all pass. What fails is counted; the verdicts stay in `passed`.
    fn check(&mut self, bytes: &[u8], stride: usize) -> bool {
        self.passed.clear();
        // Every datagram of a GRO read but the last is `stride` bytes long.
        if stride > self.max_payload || bytes.len() > self.max_payload && stride == bytes.len() {
            let n = bytes.len().div_ceil(stride);
            self.rejects.count(RejectReason::TooLong, n as u64);
            return false;
        }
        for datagram in bytes.chunks(stride) {
            let verdict = wire::parse(datagram, &self.keys);
            if let Err(r) = &verdict {
                self.rejects.count(r.reason(), 1);
            }
            self.passed.push(verdict.is_ok());
        }
        self.passed.iter().all(|&ok| ok)
    }

    /// Queues in `out` copies of what passed [`Gate::check`] of one message: the message
    /// whole when every datagram in it passed (`all`), else those that passed, one by one.
    fn copy_passed(
        &self,
        bytes: &[u8],
        stride: usize,
        all: bool,
        arrived: (Duration, u64),
        out: &mut Vec<Arrival>,
    ) {
        let (at, source) = arrived;
        if all {
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
        Self::bind_lanes(&[addr], cfg)
    }

    /// Binds one socket per lane address, each to be drained by its own thread.
    pub fn bind_lanes(addrs: &[SocketAddr], cfg: ReceiverConfig) -> std::io::Result<Self> {
        let sources = addrs
            .iter()
            .map(|&a| UdpSource::bind(a, cfg.recv_buffer))
            .collect::<std::io::Result<_>>()?;
        Ok(Listener {
            sources,
            cfg,
            counters: Arc::default(),
        })
    }

    /// The (first lane's) bound address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.sources[0].local_addr()
    }

    /// Every lane's bound address.
    pub fn local_addrs(&self) -> std::io::Result<Vec<SocketAddr>> {
        self.sources.iter().map(UdpSource::local_addr).collect()
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
        let mut drains = Vec::new();
        let mut lanes = Vec::new();
        for (i, source) in self.sources.into_iter().enumerate() {
            let lane = LaneCounters::new(source.local_addr()?, &self.cfg.metrics.lanes);
            lanes.push(lane.clone());
            let parts = (start, keys.clone(), self.counters.clone(), lane);
            let drain = SocketDrain::new(source, &self.cfg, &engine, parts);
            let name = match i {
                0 => "gapferry-socket".to_string(),
                i => format!("gapferry-socket{i}"),
            };
            let shutdown = shutdown.clone();
            drains.push(
                std::thread::Builder::new()
                    .name(name)
                    .spawn(move || drain.run(&shutdown))?,
            );
        }
        let rejected = watch_lanes(&self.cfg.out, lanes, drains);
        let mut report = engine.finish();
        let rejected = rejected?;
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

/// Waits for the socket threads to end, rewriting the lanes' state file about once per
/// [`ACTIVITY_EVERY`] meanwhile; returns what their gates rejected, all lanes together.
fn watch_lanes(
    out: &std::path::Path,
    lanes: Vec<Arc<LaneCounters>>,
    drains: Vec<JoinHandle<std::io::Result<HashMap<RejectReason, u64>>>>,
) -> std::io::Result<HashMap<RejectReason, u64>> {
    let mut file = crate::lanes::LanesFile::new(out.join(crate::records::STATE_DIR), lanes);
    let mut written = Instant::now();
    while !drains.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(Duration::from_millis(50));
        if written.elapsed() >= ACTIVITY_EVERY {
            if let Err(e) = file.write() {
                tracing::warn!("cannot write the lanes' activity for `status`: {e}");
            }
            written = Instant::now();
        }
    }
    let _ = file.write();
    let mut rejected = HashMap::new();
    for drain in drains {
        for (reason, n) in drain.join().expect("socket thread panicked")? {
            *rejected.entry(reason).or_default() += n;
        }
    }
    Ok(rejected)
}

/// Binds `addr` and receives until `shutdown` is set.
pub fn listen(
    addr: SocketAddr,
    cfg: ReceiverConfig,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<ListenReport> {
    Listener::bind(addr, cfg)?.run(shutdown)
}

/// The assembler's input queue as the socket thread sees it: bounded in datagrams and
/// bytes, and never waited on.
struct AssemblerQueue {
    input: Sender<Input>,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    limit: usize,
    byte_limit: usize,
    counters: Arc<SocketCounters>,
    metrics: crate::metrics::ReceiverMetrics,
}

impl AssemblerQueue {
    /// Queues the datagrams of `batch` (leaving it empty); a full queue is a counted drop:
    /// the socket never blocks.
    fn flush(&self, batch: &mut Vec<Arrival>) {
        if batch.is_empty() {
            return;
        }
        let full = std::mem::take(batch);
        let n: usize = full.iter().map(Arrival::count).sum();
        let cost: usize = full.iter().map(Arrival::cost).sum();
        let room = self.backlog.load(Ordering::Relaxed) + n <= self.limit
            && self.backlog_bytes.load(Ordering::Relaxed) + cost <= self.byte_limit;
        if room {
            self.backlog.fetch_add(n, Ordering::Relaxed);
            self.backlog_bytes.fetch_add(cost, Ordering::Relaxed);
        }
        if !room {
            (self.metrics.queue_drops).note(full.iter().flat_map(Arrival::datagrams));
        }
        if !room || self.input.try_send(Input::Batch(full)).is_err() {
            if room {
                self.backlog.fetch_sub(n, Ordering::Relaxed);
                self.backlog_bytes.fetch_sub(cost, Ordering::Relaxed);
            }
            self.counters
                .queue_full
                .fetch_add(n as u64, Ordering::Relaxed);
            self.metrics.queue_dropped.inc_by(n as u64);
        }
    }
}

/// Checks the messages of the last read at `gate` and queues what passes in `out`;
/// returns the datagrams and bytes read.
///
/// A message whose datagrams all pass and that fills half its receive buffer or more
/// (a GRO read) leaves in that buffer, replaced from `pool`: no copy. Anything else is
/// copied out (a small message, so that the queue's bytes are its bytes and not a whole
/// buffer's; or the datagrams that passed of a message with some that did not). A
/// rejected datagram costs neither a copy nor a buffer.
pub(super) fn admit_messages(
    reads: &mut crate::socket::RecvBatch,
    gate: &mut Gate,
    pool: &mut crate::socket::BufferPool,
    at: Duration,
    out: &mut Vec<Arrival>,
) -> (u64, u64) {
    let (mut datagrams, mut read) = (0, 0);
    for i in 0..reads.len() {
        let (bytes, stride, from) = reads.message(i);
        datagrams += bytes.len().div_ceil(stride) as u64;
        read += bytes.len() as u64;
        let all = gate.check(bytes, stride);
        let arrived = (at, source_id(from));
        if all && bytes.len() * 2 >= crate::socket::RECV_BUFFER_BYTES {
            let bytes = reads.take_buffer(i, pool.take());
            out.push(Arrival {
                at,
                bytes,
                stride,
                source: arrived.1,
            });
        } else {
            gate.copy_passed(bytes, stride, all, arrived, out);
        }
    }
    (datagrams, read)
}

/// The socket thread: reads, checks at the gate, batches, queues.
struct SocketDrain {
    source: UdpSource,
    start: Instant,
    reads: crate::socket::RecvBatch,
    /// Receive buffers to replace those handed to the assembler.
    pool: crate::socket::BufferPool,
    batch: Vec<Arrival>,
    gate: Gate,
    queue: AssemblerQueue,
    counters: Arc<SocketCounters>,
    metrics: crate::metrics::ReceiverMetrics,
    /// When the kernel's drop counter was last read, and its value then.
    kernel_drops: (Instant, u64),
    /// This socket's lane.
    lane: Arc<LaneCounters>,
}

impl SocketDrain {
    /// The drain of `source` (one lane) into `engine`'s queue, started at `start`, checking
    /// tags with `keys`, counting in the listener's counters and in its lane's.
    fn new(
        source: UdpSource,
        cfg: &ReceiverConfig,
        engine: &Engine,
        (start, keys, counters, lane): (Instant, KeyRing, Arc<SocketCounters>, Arc<LaneCounters>),
    ) -> Self {
        let max_payload = cfg
            .mtu
            .saturating_sub(IP_UDP_HEADERS)
            .min(wire::MAX_DATAGRAM);
        let metrics = cfg.metrics.clone();
        SocketDrain {
            source,
            start,
            reads: crate::socket::RecvBatch::default(),
            pool: engine.buffer_pool(),
            batch: Vec::new(),
            gate: Gate::new(max_payload, keys, metrics.clone(), lane.clone()),
            queue: AssemblerQueue {
                input: engine.input().clone(),
                backlog: engine.backlog(),
                backlog_bytes: engine.backlog_bytes(),
                limit: cfg.queue,
                byte_limit: cfg.queue_bytes,
                counters: counters.clone(),
                metrics: metrics.clone(),
            },
            counters,
            metrics,
            kernel_drops: (Instant::now(), 0),
            lane,
        }
    }

    /// Drains the socket until `shutdown` is set; returns what the gate rejected.
    ///
    /// Datagrams go to the assembler in batches: one queue operation and one wake-up per
    /// batch rather than per datagram. A batch leaves when it holds BATCH datagrams or as
    /// soon as the socket has been quiet for BATCH_WAIT.
    fn run(mut self, shutdown: &AtomicBool) -> std::io::Result<HashMap<RejectReason, u64>> {
        let mut waiting_short = false;
        while !shutdown.load(Ordering::Relaxed) {
            if self.kernel_drops.0.elapsed() >= KERNEL_DROPS_EVERY {
                self.note_kernel_drops();
            }
            if self.batch.is_empty() == waiting_short {
                waiting_short = !self.batch.is_empty();
                self.source.set_wait(if waiting_short {
                    BATCH_WAIT
                } else {
                    crate::socket::POLL_INTERVAL
                });
            }
            if !self.source.recv(&mut self.reads)? {
                self.queue.flush(&mut self.batch);
                continue;
            }
            self.admit_reads();
            if self.batch.iter().map(Arrival::count).sum::<usize>() >= BATCH {
                self.queue.flush(&mut self.batch);
            }
        }
        self.queue.flush(&mut self.batch);
        Ok(self.gate.rejects.counts)
    }

    /// Counts and checks the messages of the last read into the batch.
    fn admit_reads(&mut self) {
        let at = self.start.elapsed();
        let (datagrams, bytes) = admit_messages(
            &mut self.reads,
            &mut self.gate,
            &mut self.pool,
            at,
            &mut self.batch,
        );
        self.counters
            .received
            .fetch_add(datagrams, Ordering::Relaxed);
        self.metrics.datagrams.inc_by(datagrams);
        self.metrics.bytes.inc_by(bytes);
        self.lane.received(datagrams, bytes);
    }

    /// Publishes what the kernel dropped for the socket since the last reading.
    fn note_kernel_drops(&mut self) {
        let (_, before) = self.kernel_drops;
        let total = self.source.kernel_drops().unwrap_or(before);
        self.metrics
            .socket_dropped
            .inc_by(total.saturating_sub(before));
        self.lane.kernel_dropped(total.saturating_sub(before));
        self.kernel_drops = (Instant::now(), total.max(before));
    }
}
