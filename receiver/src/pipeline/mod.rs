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

mod assembler_loop;
mod handover;
mod listener;
#[cfg(test)]
mod tests;

use assembler_loop::{run_assembler, ActivityFile, Recycling};
use handover::{run_delivery, ByteBudget, Handover};
pub use listener::{listen, ListenReport, Listener, SocketCounters};

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
/// Written blocks' buffers on their way back to the assembler at most (each up to
/// `[limits] max_block_plain`).
const SPARE_HANDBACK: usize = 4;
/// Events queued between the assembler and the disk writer. Bytes are bounded by
/// [`EVENT_BYTES`]; this count only has to let a burst of small objects (three events
/// each) fill that byte budget: at 256, a burst of 10 000 MISP events stalled the
/// assembler after ~85 objects, its datagram queue overflowed and a quarter were lost.
const EVENT_QUEUE: usize = 16 << 10;

/// [`EVENT_QUEUE`], or `GAPFERRY_TEST_EVENT_QUEUE` (hidden: for tests of a receiver that
/// cannot keep up with a long stream of small objects).
fn event_queue() -> usize {
    let knob = std::env::var("GAPFERRY_TEST_EVENT_QUEUE").ok();
    knob.and_then(|v| v.parse().ok()).unwrap_or(EVENT_QUEUE)
}

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
    /// Threads writing and hashing big objects' blocks (`--threads`; 0: the disk writer's).
    pub block_threads: usize,
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
            block_threads: crate::delivery::default_block_threads(),
        }
    }
}

/// Turns transparent huge pages off for this process. The receiver's block and receive
/// buffers come and go by the MiB; with huge pages each fresh one faulted in a zeroed 2 MiB
/// page, often after the kernel compacted memory to find one (perf, receiver alone: 15-45 %
/// of its CPU in `clear_page_erms` and `__compact_zone` under `do_huge_pmd_anonymous_page`).
/// Measured on the 2-core VM: about 7 % fewer CPU-s per GiB and a lower peak RSS
/// (bench/README.md). Advice only: a kernel that refuses it costs speed, not correctness.
fn small_pages_only() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: prctl(PR_SET_THP_DISABLE) takes integer arguments only and changes a
        // flag of this process's memory map; it touches no memory of ours.
        let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "PR_SET_THP_DISABLE refused");
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
    /// Where handled receive buffers come back (see [`Engine::buffer_pool`]).
    reads_pool: Receiver<Vec<u8>>,
    backlog: Arc<AtomicUsize>,
    backlog_bytes: Arc<AtomicUsize>,
    assembler: JoinHandle<Stats>,
    delivery: JoinHandle<Summary>,
}

impl Engine {
    /// Starts the assembler and delivery threads.
    pub fn start(cfg: &ReceiverConfig, clock: Clock, queue: usize) -> std::io::Result<Self> {
        small_pages_only();
        let ledger = std::sync::Arc::new(crate::ledger::DeliveredLedger::load(&cfg.out));
        let mut delivery = Delivery::open(&cfg.out, cfg.destinations.clone(), cfg.metrics.clone())?;
        delivery.set_ledger(ledger.clone());
        delivery.set_max_document(cfg.max_document);
        delivery.set_block_threads(cfg.block_threads);
        // Written blocks' buffers go back to the assembler for the next blocks.
        // The assembler takes them into its own spares (bounded in bytes) at every turn
        // of its loop, so a few in the channel are enough.
        let (spare, spare_rx) = bounded::<Vec<u8>>(SPARE_HANDBACK);
        delivery.set_spare_blocks(spare);
        // Receive buffers go back to the socket threads once their datagrams are handled.
        let (reads_back, reads_pool) = crate::socket::BufferPool::channel();
        let (input, input_rx) = bounded::<Input>(queue);
        let (events, events_rx) = bounded::<Event>(event_queue());
        let budget = Arc::new(ByteBudget::new(EVENT_BYTES));
        let delivery = std::thread::Builder::new()
            .name("gapferry-delivery".into())
            .spawn({
                let budget = budget.clone();
                move || run_delivery(delivery, events_rx, budget)
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
                        Recycling {
                            blocks: spare_rx,
                            reads: reads_back,
                        },
                    )
                }
            })?;
        Ok(Engine {
            input,
            reads_pool,
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

    /// A pool of receive buffers for a socket thread, fed with the buffers of the
    /// [`Arrival`]s the assembler has handled.
    pub fn buffer_pool(&self) -> crate::socket::BufferPool {
        crate::socket::BufferPool::new(self.reads_pool.clone())
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
