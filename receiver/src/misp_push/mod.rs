//! The optional `[misp_push]`: after a MISP event is delivered into the feed, or a STIX
//! bundle into the STIX store, it is also added to (or updated in) the high-side MISP
//! through its REST API, off the data plane.
//!
//! How an event goes in: `GET /events/view/<uuid>`; a 404 means MISP does not hold it, and
//! it is added with `POST /events/add`; a 200 carries MISP's `timestamp`, and the event is
//! edited with `POST /events/edit/<uuid>` only when the delivered one is newer, otherwise
//! nothing is sent. Races with MISP's own feed fetch are settled by MISP's answers: an
//! add refused with "Event already exists" becomes an edit, an edit refused with "not newer
//! than the local copy" means MISP is already current. A STIX bundle is posted as is to
//! `POST /events/upload_stix/2` (MISP converts it into an event; the same bundle again is
//! refused by MISP as "Event with the same UUID already exists", which counts as current).
//!
//! One worker thread takes pushes from a bounded queue; the delivery thread never waits on
//! it: when the queue is full the push is recorded `push_failed` and not made (the file
//! stays in the feed, so MISP's scheduled feed fetch remains the fallback). A push that
//! fails for a reason that may pass (no connection, a timeout, HTTP 5xx, 408, 429) is tried
//! again after a doubling delay, at most `attempts` times; every failed attempt is recorded
//! `push_failed` with the HTTP status and the reason, and `pushed` when one succeeds. A
//! refused key (401/403) or a request MISP rejects (other 4xx) is not retried. Pushes live
//! in memory only: those queued or waiting for a retry when the receiver stops are recorded
//! `push_failed` as not made, and are not resumed after a restart (the feed is the fallback).
//!
//! This file owns the queue, the worker and the records; [`settings`] the configuration,
//! `api` MISP's REST API, [`tally`] what `status` says about pushes.

use crate::metrics::ReceiverMetrics;
use crate::records::{Outcome, Record, RecordLog};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use serde::Deserialize;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Seconds allowed to connect to MISP by default.
pub const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
/// Seconds one API call may take by default (MISP may take a while to save a large event).
pub const DEFAULT_TIMEOUT: u64 = 120;
/// Attempts per push by default, the first included.
pub const DEFAULT_ATTEMPTS: u32 = 6;
/// Seconds before the first retry by default; each further retry waits twice as long.
pub const DEFAULT_BACKOFF: u64 = 5;
/// Longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// Pushes waiting (queued or for a retry) by default.
pub const DEFAULT_QUEUE: usize = 256;
/// Bytes of documents held for pushes waiting, by default.
pub const DEFAULT_QUEUE_BYTES: u64 = 256 << 20;
/// How long a push in flight may go on once the receiver is stopping.
pub const STOP_GRACE: Duration = Duration::from_secs(20);
/// Most bytes of a view answer read (a large event, parsed as it streams in, not held).
const MAX_VIEW: u64 = 4 << 30;
/// Most bytes of any other answer read (MISP's error messages; a successful add or edit's
/// copy of the event is not read).
const MAX_ANSWER: u64 = 64 << 10;
/// Most bytes of an error answer quoted in a record.
const QUOTED: usize = 300;

mod api;
pub mod settings;
pub mod tally;
#[cfg(test)]
mod tests;

use api::push;
pub use settings::{MispPushOptions, PushConfigError, PushSettings};
pub use tally::PushTally;

/// What is pushed.
#[derive(Debug, Clone)]
pub enum PushItem {
    /// A MISP event delivered into the feed, with its bytes.
    Event {
        /// Its uuid (checked by the feed).
        uuid: String,
        /// Its `timestamp`.
        timestamp: i64,
        /// The event file's bytes, `{"Event": {...}}`.
        body: Vec<u8>,
    },
    /// A STIX bundle delivered into the STIX store, read from there when pushed.
    Stix {
        /// The delivered bundle.
        path: PathBuf,
    },
}

impl PushItem {
    fn bytes(&self) -> u64 {
        match self {
            PushItem::Event { body, .. } => body.len() as u64,
            PushItem::Stix { .. } => 0,
        }
    }
}

/// One push: what, the delivery record it follows, and its attempts so far.
#[derive(Debug)]
struct PushJob {
    item: PushItem,
    record: Record,
    attempt: u32,
    due: Instant,
}

/// What a successful push did (the record's `push` field).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pushed {
    /// MISP did not hold it; added.
    Added,
    /// MISP held an older version; edited.
    Edited,
    /// MISP already held this version or a newer one; nothing was changed.
    Unchanged,
}

impl Pushed {
    /// The record's `push` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Pushed::Added => "added",
            Pushed::Edited => "edited",
            Pushed::Unchanged => "unchanged",
        }
    }
}

/// Why a push attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushFailure {
    /// MISP's HTTP status, when it answered.
    pub status: Option<u16>,
    /// What happened and what to do.
    pub reason: String,
    /// Whether trying again later may succeed.
    pub retry: bool,
}

struct Shared {
    settings: PushSettings,
    records: Arc<Mutex<RecordLog>>,
    metrics: ReceiverMetrics,
    stopping: AtomicBool,
    held_bytes: AtomicU64,
}

/// The push worker and its bounded queue.
pub struct Pusher {
    queue: Option<Sender<PushJob>>,
    worker: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Pusher {
    /// Starts the worker thread.
    pub fn start(
        settings: PushSettings,
        records: Arc<Mutex<RecordLog>>,
        metrics: ReceiverMetrics,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded::<PushJob>(settings.queue);
        if settings.base.starts_with("http://") {
            tracing::warn!(url = %settings.base, "[misp_push] url is http://: the API key and the events cross the high-side network in clear; use https:// with ca_file");
        }
        tracing::info!(url = %settings.base, events = settings.events, stix = settings.stix, attempts = settings.attempts, "pushing deliveries into the high-side MISP");
        let shared = Arc::new(Shared {
            settings,
            records,
            metrics,
            stopping: AtomicBool::new(false),
            held_bytes: AtomicU64::new(0),
        });
        let s = shared.clone();
        let worker = std::thread::Builder::new()
            .name("gapferry-misp-push".into())
            .spawn(move || work(&rx, &s))?;
        Ok(Pusher {
            queue: Some(tx),
            worker: Some(worker),
            shared,
        })
    }

    /// Whether deliveries of `kind` are pushed.
    pub fn pushes(&self, kind: gapferry_common::ObjectKind) -> bool {
        match kind {
            gapferry_common::ObjectKind::Misp => self.shared.settings.events,
            gapferry_common::ObjectKind::Stix => self.shared.settings.stix,
            _ => false,
        }
    }

    /// Queues a push of `item`, which followed the delivery `record`; never waits: a full
    /// queue is recorded `push_failed` and the push is not made.
    pub fn submit(&self, item: PushItem, record: Record) {
        let Some(queue) = &self.queue else { return };
        let bytes = item.bytes();
        let held = self.shared.held_bytes.fetch_add(bytes, Ordering::SeqCst);
        let job = PushJob {
            item,
            record,
            attempt: 0,
            due: Instant::now(),
        };
        let full = |job: PushJob, why: String| {
            self.shared.held_bytes.fetch_sub(bytes, Ordering::SeqCst);
            give_up(&self.shared, &job, None, why);
        };
        if held + bytes > DEFAULT_QUEUE_BYTES && held > 0 {
            return full(job, format!("push queue full ({} MiB of documents waiting): not pushed; the file stays in the feed for MISP's feed fetch; check that MISP answers (gapferry-recv status shows the last push error)", held >> 20));
        }
        match queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => full(job, format!("push queue full ({} pushes waiting): not pushed; the file stays in the feed for MISP's feed fetch; check that MISP answers, or raise [misp_push] queue", self.shared.settings.queue)),
            Err(TrySendError::Disconnected(job)) => full(job, "the push worker is not running: not pushed; the file stays in the feed for MISP's feed fetch".into()),
        }
    }
}

impl Drop for Pusher {
    /// Stops: pushes not made yet are recorded as not made; the one in flight gets
    /// [`STOP_GRACE`] to finish, after which the receiver stops without its record.
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.queue = None;
        if let Some(w) = self.worker.take() {
            let deadline = Instant::now() + STOP_GRACE;
            while !w.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if w.is_finished() {
                let _ = w.join();
            } else {
                tracing::warn!("a push into the high-side MISP was still waiting for MISP's answer at stop; not recorded (the file stays in the feed)");
            }
        }
    }
}

fn work(rx: &Receiver<PushJob>, shared: &Shared) {
    // Pushes waiting for a retry, at most the queue's capacity.
    let mut waiting: Vec<PushJob> = Vec::new();
    loop {
        let now = Instant::now();
        let due = waiting
            .iter()
            .enumerate()
            .min_by_key(|(_, j)| j.due)
            .map(|(i, j)| (i, j.due));
        let job = match due {
            Some((i, at)) if at <= now => waiting.swap_remove(i),
            Some((_, at)) => match rx.recv_timeout(at - now) {
                Ok(job) => job,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => break,
            },
            None => match rx.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        if shared.stopping.load(Ordering::SeqCst) {
            stopped(shared, job);
            continue;
        }
        let mut job = job;
        job.attempt += 1;
        match push(&shared.settings, &job.item) {
            Ok(done) => {
                release(shared, &job);
                succeeded(shared, &job, done);
            }
            Err(f) if f.retry && job.attempt < shared.settings.attempts => {
                let wait = backoff(shared.settings.backoff, job.attempt);
                failed(shared, &job, &f, Some(wait));
                job.due = Instant::now() + wait;
                if waiting.len() >= shared.settings.queue {
                    release(shared, &job);
                    give_up(shared, &job, None, "too many pushes waiting for a retry: not pushed; the file stays in the feed for MISP's feed fetch".into());
                } else {
                    waiting.push(job);
                }
            }
            Err(f) => {
                release(shared, &job);
                failed(shared, &job, &f, None);
            }
        }
    }
    for job in waiting.drain(..) {
        stopped(shared, job);
    }
}

fn release(shared: &Shared, job: &PushJob) {
    shared
        .held_bytes
        .fetch_sub(job.item.bytes(), Ordering::SeqCst);
}

fn stopped(shared: &Shared, job: PushJob) {
    release(shared, &job);
    give_up(shared, &job, None, "the receiver stopped before the push was made: not pushed, and not resumed at the next start; the file stays in the feed for MISP's feed fetch".into());
}

/// The wait after failed attempt `attempt` (1-based): `first`, doubled each time.
pub fn backoff(first: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(1u32 << (attempt - 1).min(16))
        .min(MAX_BACKOFF)
}

fn record(shared: &Shared, r: &Record) {
    shared.metrics.object(r.kind, r.outcome);
    let mut log = shared.records.lock().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = log.append(r) {
        tracing::error!(path = %log.path().display(), "cannot append to the record log: {e}");
    }
}

fn base_record(job: &PushJob, outcome: Outcome) -> Record {
    let mut r = job.record.clone();
    r.time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
    r.outcome = outcome;
    r.reason = None;
    r.cause = None;
    r.elapsed_ms = None;
    r.attempt = (job.attempt > 0).then_some(job.attempt);
    r
}

fn succeeded(shared: &Shared, job: &PushJob, done: Pushed) {
    tracing::info!(name = %gapferry_common::name::escape(job.record.name.as_deref().unwrap_or("")), push = done.as_str(), attempt = job.attempt, "pushed into the high-side MISP");
    let mut r = base_record(job, Outcome::Pushed);
    r.push = Some(done);
    record(shared, &r);
}

fn failed(shared: &Shared, job: &PushJob, f: &PushFailure, retry_in: Option<Duration>) {
    let reason = match retry_in {
        Some(w) => format!(
            "{}; attempt {} of {}, trying again in {} s",
            f.reason,
            job.attempt,
            shared.settings.attempts,
            w.as_secs()
        ),
        None if f.retry => format!(
            "{}; gave up after {} attempt{}: the file stays in the feed for MISP's feed fetch",
            f.reason,
            job.attempt,
            if job.attempt == 1 { "" } else { "s" }
        ),
        None => format!(
            "{}; not retried: the file stays in the feed for MISP's feed fetch",
            f.reason
        ),
    };
    tracing::warn!(name = %gapferry_common::name::escape(job.record.name.as_deref().unwrap_or("")), status = f.status, %reason, "push into the high-side MISP failed");
    let mut r = base_record(job, Outcome::PushFailed);
    r.http_status = f.status;
    r.retry_in_s = retry_in.map(|w| w.as_secs());
    r.reason = Some(reason);
    record(shared, &r);
}

fn give_up(shared: &Shared, job: &PushJob, status: Option<u16>, reason: String) {
    tracing::warn!(name = %gapferry_common::name::escape(job.record.name.as_deref().unwrap_or("")), %reason, "push into the high-side MISP not made");
    let mut r = base_record(job, Outcome::PushFailed);
    r.http_status = status;
    r.reason = Some(reason);
    record(shared, &r);
}
