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

/// `[misp_push]` in the receiver's configuration file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MispPushOptions {
    /// MISP's base URL, e.g. `https://misp.high.example`.
    pub url: String,
    /// File holding the API (automation) key of the MISP user the pushes run as.
    pub key_file: PathBuf,
    /// PEM file of the CA certificates that sign MISP's certificate (default: the
    /// built-in Mozilla roots; the system store is not read).
    pub ca_file: Option<PathBuf>,
    /// Seconds allowed to connect.
    pub connect_timeout: Option<u64>,
    /// Seconds one API call may take.
    pub timeout: Option<u64>,
    /// Attempts per push, the first included.
    pub attempts: Option<u32>,
    /// Seconds before the first retry; doubled each time, at most 600.
    pub backoff: Option<u64>,
    /// Pushes waiting before new ones are recorded `push_failed` and not made.
    pub queue: Option<usize>,
    /// Push MISP events (default true).
    pub events: Option<bool>,
    /// Push STIX bundles through `upload_stix` (default true).
    pub stix: Option<bool>,
    /// Distribution of the events MISP makes from STIX bundles (0-3 or 5; MISP's default).
    pub stix_distribution: Option<u8>,
    /// Publish the events MISP makes from STIX bundles (default false).
    pub stix_publish: Option<bool>,
}

/// Why `[misp_push]` cannot be used; the receiver refuses to start.
#[derive(Debug, thiserror::Error)]
pub enum PushConfigError {
    /// The URL is not http(s) or has no host.
    #[error("[misp_push] url = {0:?} is not an http:// or https:// URL of a host; write MISP's base URL, e.g. \"https://misp.example\"")]
    Url(String),
    /// The key file cannot be read.
    #[error("[misp_push] key_file {path}: {error}; write the MISP user's API key (Administration > List Auth Keys) alone in this file, readable by the receiver only")]
    KeyRead {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The key file holds no usable key.
    #[error("[misp_push] key_file {path} holds no API key (MISP's keys are 40 letters and digits); write the key alone in the file")]
    KeyEmpty {
        /// The file.
        path: PathBuf,
    },
    /// The CA file cannot be read or holds no certificate.
    #[error("[misp_push] ca_file {path}: {reason}; give a PEM file with the certificate of the CA that signed MISP's certificate")]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A number is out of range.
    #[error("[misp_push] {key} = {value} is out of range: use {range}")]
    OutOfRange {
        /// The key.
        key: &'static str,
        /// Its value.
        value: u64,
        /// What is accepted.
        range: &'static str,
    },
}

/// `[misp_push]` checked and loaded: what the worker needs.
#[derive(Clone)]
pub struct PushSettings {
    base: String,
    key: String,
    agent: ureq::Agent,
    attempts: u32,
    backoff: Duration,
    queue: usize,
    events: bool,
    stix: bool,
    stix_path: String,
}

impl std::fmt::Debug for PushSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PushSettings")
            .field("base", &self.base)
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl MispPushOptions {
    /// Checks the options and reads the key and CA files.
    pub fn prepare(&self) -> Result<PushSettings, PushConfigError> {
        let url = self.url.trim().trim_end_matches('/');
        let host = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(|| PushConfigError::Url(self.url.clone()))?;
        if host.is_empty()
            || host.starts_with('/')
            || host.contains(['?', '#', ' ', '@'])
            || url.parse::<ureq::http::Uri>().is_err()
        {
            return Err(PushConfigError::Url(self.url.clone()));
        }
        let key = std::fs::read_to_string(&self.key_file)
            .map_err(|error| PushConfigError::KeyRead {
                path: self.key_file.clone(),
                error,
            })?
            .trim()
            .to_string();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PushConfigError::KeyEmpty {
                path: self.key_file.clone(),
            });
        }
        let range = |key, value: Option<u64>, min: u64, max: u64, text| match value {
            Some(v) if v < min || v > max => Err(PushConfigError::OutOfRange {
                key,
                value: v,
                range: text,
            }),
            _ => Ok(()),
        };
        range("attempts", self.attempts.map(u64::from), 1, 100, "1 to 100")?;
        range("backoff", self.backoff, 1, 600, "1 to 600 seconds")?;
        range("timeout", self.timeout, 1, 3600, "1 to 3600 seconds")?;
        range(
            "connect_timeout",
            self.connect_timeout,
            1,
            600,
            "1 to 600 seconds",
        )?;
        range(
            "queue",
            self.queue.map(|q| q as u64),
            1,
            1 << 20,
            "1 to 1048576",
        )?;
        if let Some(d) = self.stix_distribution {
            if d > 5 || d == 4 {
                return Err(PushConfigError::OutOfRange {
                    key: "stix_distribution",
                    value: d.into(),
                    range: "0, 1, 2, 3 or 5 (a sharing group cannot be named here)",
                });
            }
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &self.ca_file {
            let bad = |reason: String| PushConfigError::Ca {
                path: path.clone(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let mut certs = Vec::new();
            for item in ureq::tls::parse_pem(&pem) {
                match item.map_err(|e| bad(format!("not PEM: {e}")))? {
                    ureq::tls::PemItem::Certificate(c) => certs.push(c),
                    _ => continue,
                }
            }
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE in it".into()));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let timeout = Duration::from_secs(self.timeout.unwrap_or(DEFAULT_TIMEOUT));
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            // The key goes only where it was configured to go.
            .max_redirects(0)
            // The high side's MISP is reached directly, never through an environment proxy.
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(
                self.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            )))
            .timeout_global(Some(timeout))
            .user_agent(concat!("gapferry-recv/", env!("CARGO_PKG_VERSION")))
            .build();
        let mut stix_path = "/events/upload_stix/2".to_string();
        if let Some(d) = self.stix_distribution {
            stix_path += &format!("/distribution:{d}");
        }
        if self.stix_publish.unwrap_or(false) {
            stix_path += "/publish:1";
        }
        Ok(PushSettings {
            base: url.to_string(),
            key,
            agent: config.into(),
            attempts: self.attempts.unwrap_or(DEFAULT_ATTEMPTS),
            backoff: Duration::from_secs(self.backoff.unwrap_or(DEFAULT_BACKOFF)),
            queue: self.queue.unwrap_or(DEFAULT_QUEUE),
            events: self.events.unwrap_or(true),
            stix: self.stix.unwrap_or(true),
            stix_path,
        })
    }
}

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

/// One attempt at pushing `item`.
fn push(s: &PushSettings, item: &PushItem) -> Result<Pushed, PushFailure> {
    match item {
        PushItem::Event {
            uuid,
            timestamp,
            body,
        } => push_event(s, uuid, *timestamp, body),
        PushItem::Stix { path } => {
            let body = std::fs::read(path).map_err(|e| PushFailure {
                status: None,
                reason: format!(
                    "cannot read the delivered bundle {}: {e}",
                    gapferry_common::name::escape(&path.to_string_lossy())
                ),
                retry: false,
            })?;
            let answer = call(s, "POST", &s.stix_path, Some(&body))?;
            match answer.status {
                200..=299 => Ok(Pushed::Added),
                403 if answer.text.contains("same UUID already exists") => Ok(Pushed::Unchanged),
                _ => Err(refused(&answer, "upload_stix")),
            }
        }
    }
}

fn push_event(
    s: &PushSettings,
    uuid: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<Pushed, PushFailure> {
    if !is_uuid(uuid) {
        return Err(PushFailure {
            status: None,
            reason: format!(
                "the event's uuid {:?} is not a uuid",
                gapferry_common::name::escape(uuid)
            ),
            retry: false,
        });
    }
    let view = call(s, "GET", &format!("/events/view/{uuid}"), None)?;
    let edit = match view.status {
        404 => false,
        200..=299 => match view.view.unwrap_or(Ok(None)) {
            Ok(Some(theirs)) if theirs >= timestamp => return Ok(Pushed::Unchanged),
            Ok(_) => true,
            Err(why) => {
                return Err(PushFailure {
                    status: Some(view.status),
                    reason: format!(
                        "view: the answer is not a MISP event ({}); check that [misp_push] url is MISP's base URL",
                        gapferry_common::name::escape(&why)
                    ),
                    retry: false,
                })
            }
        },
        _ => return Err(refused(&view, "view")),
    };
    if !edit {
        let add = call(s, "POST", "/events/add", Some(body))?;
        match add.status {
            200..=299 => return Ok(Pushed::Added),
            // MISP (or its feed fetch) added it meanwhile: 404 in MISP 2.4/2.5, 403 before.
            400..=499 if add.text.contains("already exists") => {}
            _ => return Err(refused(&add, "add")),
        }
    }
    let edited = call(s, "POST", &format!("/events/edit/{uuid}"), Some(body))?;
    match edited.status {
        200..=299 => Ok(Pushed::Edited),
        403 if edited.text.contains("not newer than the local copy") => Ok(Pushed::Unchanged),
        // Deleted in MISP between the view and the edit: the next attempt adds it.
        404 => Err(PushFailure {
            status: Some(404),
            reason: "MISP lost the event between looking it up and editing it".into(),
            retry: true,
        }),
        _ => Err(refused(&edited, "edit")),
    }
}

/// Whether `s` is a uuid in its 8-4-4-4-12 hex form (it goes into a URL path).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// MISP's answer to one call.
#[derive(Debug)]
struct Answer {
    status: u16,
    /// The top of the body of an answer that is not a success.
    text: String,
    /// A successful view's `Event.timestamp`, or why it is not an event.
    view: Option<Result<Option<i64>, String>>,
    location: Option<String>,
}

fn call(
    s: &PushSettings,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Answer, PushFailure> {
    let url = format!("{}{path}", s.base);
    let result = match body {
        None => s
            .agent
            .get(&url)
            .header("Authorization", &s.key)
            .header("Accept", "application/json")
            .call(),
        Some(b) => {
            debug_assert_eq!(method, "POST");
            s.agent
                .post(&url)
                .header("Authorization", &s.key)
                .header("Accept", "application/json")
                .header("Content-Type", "application/json")
                .send(b)
        }
    };
    let mut response = result.map_err(|e| transport(&s.base, e))?;
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut answer = Answer {
        status,
        text: String::new(),
        view: None,
        location,
    };
    let success = (200..300).contains(&status);
    if success && body.is_none() {
        let reader = response.body_mut().with_config().limit(MAX_VIEW).reader();
        answer.view = Some(view_timestamp(reader));
    } else if !success {
        let mut top = Vec::new();
        response
            .body_mut()
            .as_reader()
            .take(MAX_ANSWER)
            .read_to_end(&mut top)
            .map_err(|e| transport(&s.base, ureq::Error::Io(e)))?;
        answer.text = String::from_utf8_lossy(&top).into_owned();
    }
    Ok(answer)
}

fn transport(base: &str, e: ureq::Error) -> PushFailure {
    let text = e.to_string().to_ascii_lowercase();
    // rustls' refusals (an unknown issuer, a name mismatch) reach here as I/O errors.
    let tls = text.contains("certificate") || text.contains("tls") || text.contains("handshake");
    let advice = match &e {
        _ if tls => "TLS failed; check that [misp_push] ca_file holds the CA that signed MISP's certificate and that the url's host name is in it",
        ureq::Error::Timeout(_) => "MISP did not answer in time; check that it is up and not overloaded, or raise [misp_push] timeout",
        ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => "nothing listens there; check [misp_push] url and that MISP is up",
        ureq::Error::HostNotFound => "the host name does not resolve; check [misp_push] url",
        _ => "check [misp_push] url and that MISP is up",
    };
    PushFailure {
        status: None,
        reason: format!("cannot reach MISP at {base}: {e}; {advice}"),
        retry: true,
    }
}

/// The failure for an answer that is not what `step` expects.
fn refused(a: &Answer, step: &str) -> PushFailure {
    let message = misp_message(&a.text);
    let (advice, retry) = match a.status {
        401 | 403 if message.contains("Authentication failed") || a.status == 401 => (
            "MISP refused the API key: write the automation key of an enabled MISP user with API access into [misp_push] key_file (Administration > List Auth Keys; check that the key has not expired and allows this host's address), then restart the receiver",
            false,
        ),
        403 => (
            "the key's MISP user may not do this: give it a role that may add and modify events (e.g. Org Admin or Sync user) in an organisation that may edit them",
            false,
        ),
        300..=399 => (
            "MISP redirected the call; set [misp_push] url to the exact base URL MISP answers on (https://, host, and MISP's baseurl)",
            false,
        ),
        408 | 429 => ("MISP is busy; trying again later", true),
        500..=599 => ("MISP failed; trying again later (MISP's error log says why)", true),
        _ => ("MISP refused the request", false),
    };
    let location = a
        .location
        .as_deref()
        .filter(|_| (300..400).contains(&a.status))
        .map(|l| format!(" to {}", gapferry_common::name::escape(l)))
        .unwrap_or_default();
    PushFailure {
        status: Some(a.status),
        reason: format!(
            "{step}: MISP answered HTTP {}{location}{}; {advice}",
            a.status,
            if message.is_empty() {
                String::new()
            } else {
                format!(" ({})", gapferry_common::name::escape(&message))
            }
        ),
        retry,
    }
}

/// MISP's error message in an answer (`message`, `errors`), or its first bytes.
fn misp_message(text: &str) -> String {
    let mut m = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v) => {
            let mut parts = Vec::new();
            for key in ["message", "errors"] {
                match &v[key] {
                    serde_json::Value::Null => {}
                    serde_json::Value::String(s) => parts.push(s.clone()),
                    other => parts.push(other.to_string()),
                }
            }
            parts.join(": ")
        }
        Err(_) => text.trim().to_string(),
    };
    if m.len() > QUOTED {
        let mut cut = QUOTED;
        while !m.is_char_boundary(cut) {
            cut -= 1;
        }
        m.truncate(cut);
        m += "…";
    }
    m
}

/// `Event.timestamp` of a view answer (a string or a number in MISP's JSON), read as it
/// streams (the rest of the event is skipped, not held); `Err` says why the answer is not
/// an event at all.
fn view_timestamp(answer: impl std::io::Read) -> Result<Option<i64>, String> {
    #[derive(Deserialize)]
    struct View {
        #[serde(rename = "Event")]
        event: ViewEvent,
    }
    #[derive(Deserialize)]
    struct ViewEvent {
        timestamp: Option<serde_json::Value>,
    }
    let v: View = serde_json::from_reader(std::io::BufReader::new(answer))
        .map_err(|e| format!("not JSON with an Event: {e}"))?;
    Ok(match v.event.timestamp {
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        Some(serde_json::Value::Number(n)) => n.as_i64(),
        _ => None,
    })
}

/// What the record log says about pushes, for `status`.
#[derive(Debug, Default, Clone)]
pub struct PushTally {
    /// `pushed` records by `push`: added, edited, unchanged.
    pub added: u64,
    /// Events edited.
    pub edited: u64,
    /// Pushes that found MISP current.
    pub unchanged: u64,
    /// Failed attempts (retried or not).
    pub failed: u64,
    /// Pushes given up (not retried further).
    pub given_up: u64,
    /// The last `pushed` record's time and name.
    pub last_push: Option<(String, String)>,
    /// The last `push_failed` record's time, status and reason.
    pub last_error: Option<(String, Option<u64>, String)>,
}

impl PushTally {
    /// Counts one record of the log.
    pub fn note(&mut self, r: &Record) {
        let name = r.name.clone().unwrap_or_default();
        match r.outcome {
            Outcome::Pushed => {
                match r.push {
                    Some(Pushed::Added) => self.added += 1,
                    Some(Pushed::Edited) => self.edited += 1,
                    _ => self.unchanged += 1,
                }
                self.last_push = Some((r.time.clone(), name));
            }
            Outcome::PushFailed => {
                self.failed += 1;
                if r.retry_in_s.is_none() {
                    self.given_up += 1;
                }
                let status = r.http_status.map(u64::from);
                let reason = r.reason.clone().unwrap_or_default();
                self.last_error = Some((r.time.clone(), status, reason));
            }
            _ => {}
        }
    }

    /// The `status` lines, empty when nothing was ever pushed.
    pub fn report(&self) -> String {
        let pushed = self.added + self.edited + self.unchanged;
        if pushed == 0 && self.failed == 0 {
            return String::new();
        }
        let esc = |s: &str| gapferry_common::name::escape(s).into_owned();
        let mut text = format!(
            "misp push: {pushed} pushed ({} added, {} edited, {} already current), {} failed attempts, {} not pushed\n",
            self.added, self.edited, self.unchanged, self.failed, self.given_up
        );
        if let Some((time, name)) = &self.last_push {
            text += &format!("  last push: {} {}\n", esc(time), esc(name));
        }
        if let Some((time, status, reason)) = &self.last_error {
            let status = status.map(|s| format!("HTTP {s} ")).unwrap_or_default();
            text += &format!(
                "  last push error: {} {status}— {}\n",
                esc(time),
                esc(reason)
            );
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(dir: &Path, url: &str) -> MispPushOptions {
        let key = dir.join("misp.key");
        std::fs::write(&key, "0123456789abcdefABCDEF0123456789abcdefAB\n").unwrap();
        MispPushOptions {
            url: url.into(),
            key_file: key,
            ..Default::default()
        }
    }

    #[test]
    fn bad_options_are_refused_with_the_key_and_a_fix() {
        let dir = tempfile::tempdir().unwrap();
        for url in [
            "ftp://misp",
            "misp.example",
            "https://",
            "https:///x",
            "http://a b",
            "https://u:p@misp",
        ] {
            let e = options(dir.path(), url).prepare().unwrap_err().to_string();
            assert!(e.contains("[misp_push] url"), "{url}: {e}");
        }
        let mut o = options(dir.path(), "https://misp.example/");
        assert_eq!(o.prepare().unwrap().base, "https://misp.example");
        std::fs::write(&o.key_file, "\n  \n").unwrap();
        let e = o.prepare().unwrap_err().to_string();
        assert!(e.contains("holds no API key"), "{e}");
        o.key_file = dir.path().join("absent.key");
        let e = o.prepare().unwrap_err().to_string();
        assert!(e.contains("key_file") && e.contains("absent.key"), "{e}");
        let mut o = options(dir.path(), "https://misp.example");
        o.ca_file = Some(dir.path().join("misp.key"));
        let e = o.prepare().unwrap_err().to_string();
        assert!(e.contains("ca_file") && e.contains("CERTIFICATE"), "{e}");
        o.ca_file = None;
        o.stix_distribution = Some(4);
        let e = o.prepare().unwrap_err().to_string();
        assert!(e.contains("stix_distribution = 4"), "{e}");
        o.stix_distribution = Some(1);
        o.stix_publish = Some(true);
        assert_eq!(
            o.prepare().unwrap().stix_path,
            "/events/upload_stix/2/distribution:1/publish:1"
        );
        o.attempts = Some(0);
        let e = o.prepare().unwrap_err().to_string();
        assert!(e.contains("attempts = 0"), "{e}");
    }

    #[test]
    fn a_full_queue_is_recorded_and_never_waited_on() {
        let dir = tempfile::tempdir().unwrap();
        // A "MISP" whose kernel accepts connections that nobody ever answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut o = options(
            dir.path(),
            &format!("http://{}", silent.local_addr().unwrap()),
        );
        (o.queue, o.attempts, o.timeout) = (Some(1), Some(1), Some(1));
        let records = Arc::new(Mutex::new(RecordLog::open(dir.path()).unwrap()));
        let pusher =
            Pusher::start(o.prepare().unwrap(), records, ReceiverMetrics::default()).unwrap();
        let event = |n: u32| {
            let mut r = Record::new(Outcome::Delivered, 1, n);
            r.kind = Some(gapferry_common::ObjectKind::Misp);
            r.name = Some(format!("{n}.json"));
            let item = PushItem::Event {
                uuid: "0472809b-1582-4dde-88a9-d82848e9e660".into(),
                timestamp: 1,
                body: b"{}".to_vec(),
            };
            (item, r)
        };
        // The worker takes the first and waits for MISP; the second fills the queue.
        let (item, r) = event(0);
        pusher.submit(item, r);
        let read = || {
            std::fs::read_to_string(dir.path().join(crate::records::RECORDS_FILE))
                .unwrap_or_default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !pusher.queue.as_ref().unwrap().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the worker never took the first push"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        for n in 1..4 {
            let (item, r) = event(n);
            pusher.submit(item, r);
        }
        let full: Vec<String> = read()
            .lines()
            .filter(|l| l.contains("push queue full"))
            .map(String::from)
            .collect();
        assert_eq!(full.len(), 2, "{}", read());
        assert!(full
            .iter()
            .all(|l| l.contains("\"outcome\":\"push_failed\"")
                && l.contains("raise [misp_push] queue")));
        drop(pusher);
        let log = read();
        // The first timed out, the queued one was not made at stop: every push has a record.
        for n in 0..4 {
            assert!(
                log.contains(&format!("\"name\":\"{n}.json\"")),
                "{n}: {log}"
            );
        }
        assert!(log.contains("did not answer in time"), "{log}");
        assert!(
            log.contains("receiver stopped before the push was made"),
            "{log}"
        );
        assert_eq!(log.lines().count(), 4, "one record per push: {log}");
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let dir = tempfile::tempdir().unwrap();
        let s = options(dir.path(), "https://misp.example")
            .prepare()
            .unwrap();
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let first = Duration::from_secs(5);
        assert_eq!(backoff(first, 1), Duration::from_secs(5));
        assert_eq!(backoff(first, 2), Duration::from_secs(10));
        assert_eq!(backoff(first, 4), Duration::from_secs(40));
        assert_eq!(backoff(first, 60), MAX_BACKOFF);
    }

    fn answer(status: u16, text: &str) -> Answer {
        Answer {
            status,
            text: text.into(),
            view: None,
            location: None,
        }
    }

    #[test]
    fn answers_are_classified_retryable_or_not_with_advice() {
        let auth = refused(
            &answer(
                403,
                r#"{"name":"Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.","message":"Authentication failed. Please make sure you pass the API key of an API enabled user along in the Authorization header.","url":"\/events\/view\/x"}"#,
            ),
            "view",
        );
        assert_eq!(auth.status, Some(403));
        assert!(!auth.retry);
        assert!(
            auth.reason.contains("key_file") && auth.reason.contains("Authentication failed"),
            "{}",
            auth.reason
        );
        let perm = refused(
            &answer(
                403,
                r#"{"saved":false,"name":"Could not edit Event","message":"Could not edit Event","url":"\/events\/edit\/1","errors":"Event could not be saved: The user used to edit the event is not authorised to do so."}"#,
            ),
            "edit",
        );
        assert!(
            !perm.retry && perm.reason.contains("not authorised") && perm.reason.contains("role"),
            "{}",
            perm.reason
        );
        let down = refused(
            &answer(500, "<html>Internal error \u{1b}[31m</html>"),
            "add",
        );
        assert!(
            down.retry && down.reason.contains("HTTP 500"),
            "{}",
            down.reason
        );
        assert!(
            !down.reason.contains('\u{1b}'),
            "MISP's text is escaped: {}",
            down.reason
        );
        assert!(refused(&answer(429, ""), "add").retry);
        assert!(!refused(&answer(400, "{}"), "add").retry);
        let long = refused(&answer(502, &"x".repeat(10_000)), "add");
        assert!(
            long.reason.len() < 1000,
            "quoted, not copied: {}",
            long.reason.len()
        );
        let moved = Answer {
            status: 302,
            text: String::new(),
            view: None,
            location: Some("https://misp.example/users/login".into()),
        };
        let r = refused(&moved, "view");
        assert!(
            !r.retry && r.reason.contains("/users/login") && r.reason.contains("url"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn view_timestamps_are_read_as_misp_writes_them() {
        assert_eq!(
            view_timestamp(
                &br#"{"Event":{"id":"1","timestamp":"1715767125","Attribute":[{"timestamp":"9999999999"}]}}"#[..]
            ),
            Ok(Some(1715767125))
        );
        assert_eq!(
            view_timestamp(&br#"{"Event":{"timestamp":1700000000}}"#[..]),
            Ok(Some(1700000000))
        );
        assert_eq!(view_timestamp(&br#"{"Event":{}}"#[..]), Ok(None));
        assert!(view_timestamp(&b"<html>"[..]).is_err());
        assert!(view_timestamp(&br#"{"name":"Login"}"#[..]).is_err());
    }

    #[test]
    fn the_tally_counts_pushes_and_keeps_the_last_error() {
        let mut t = PushTally::default();
        assert_eq!(t.report(), "");
        for line in [
            r#"{"time":"t1","outcome":"pushed","push":"added","name":"a.json"}"#,
            r#"{"time":"t2","outcome":"push_failed","http_status":500,"retry_in_s":5,"reason":"add: MISP answered HTTP 500"}"#,
            r#"{"time":"t3","outcome":"pushed","push":"edited","name":"b.json"}"#,
            r#"{"time":"t4","outcome":"push_failed","http_status":403,"reason":"view: bad key \u001b[2J"}"#,
            r#"{"time":"t5","outcome":"delivered","name":"c.json"}"#,
        ] {
            t.note(&serde_json::from_str(line).unwrap());
        }
        let r = t.report();
        assert!(
            r.contains(
                "2 pushed (1 added, 1 edited, 0 already current), 2 failed attempts, 1 not pushed"
            ),
            "{r}"
        );
        assert!(r.contains("last push: t3 b.json"), "{r}");
        assert!(
            r.contains("last push error: t4 HTTP 403 — view: bad key"),
            "{r}"
        );
        assert!(!r.contains('\u{1b}'), "{r}");
    }
}
