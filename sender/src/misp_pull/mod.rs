//! `misp-pull`: fetches the events a low-side MISP marks for the air-gapped side through
//! its REST API (`POST /events/restSearch`, `returnFormat: json`) and writes each one
//! atomically into `OUTBOX/misp/<uuid>.json`, as the API returned it (the sender converts
//! it to feed form when it sends it).
//!
//! Position. MISP's `timestamp` filter is `Event.timestamp >= T` (whole seconds) and every
//! change of an event raises its timestamp. The pull walks the matching events in
//! `Event.timestamp ASC, Event.id ASC` order by keyset: each request asks for page 1 of
//! `timestamp >= T`, where T is the highest timestamp taken so far, so an event edited,
//! deleted or untagged during the pull cannot shift an unseen one past a page boundary.
//! Events whose timestamp equals T are kept in a `seen` set (uuid -> timestamp) and not
//! written again. When a whole page has one timestamp (more events of one second than the
//! page holds), that second is paged through with `timestamp: [T, T]` until a pass brings
//! nothing new, then the walk goes on from T + 1. The cursor (T and `seen`) is saved after
//! every event written in `OUTBOX/.gapferry-send/misp-pull.json`, together with the last
//! pull's time, counts and error, so a restart neither repeats nor misses an event (a kill
//! between writing an event and saving the cursor writes that one event again).
//!
//! This module owns the walk and its state; `settings` what to pull, `answer` reading
//! restSearch's answer, `outbox_files` the key file, the lock and atomic writes.

mod answer;
mod outbox_files;
mod settings;

pub use settings::{MispPullConfig, MispPullSection, Published};

use crate::http::{HttpClient, HttpError};
use answer::{parse_answer, PulledEvent};
use outbox_files::{lock_outbox, read_key, write_atomically};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The pull's state file, under the outbox's journal directory.
pub const STATE_FILE: &str = "misp-pull.json";
/// Held (flock) by the one puller of an outbox, next to the state file.
pub const LOCK_FILE: &str = "misp-pull.lock";
/// Events per restSearch page by default.
pub const DEFAULT_LIMIT: u32 = 100;
/// Seconds between two pulls of the watch service by default.
pub const DEFAULT_INTERVAL_S: f64 = 300.0;

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// A required setting is missing.
    #[error("misp-pull needs `{0}` (a flag, or under [misp_pull] in --config)")]
    Missing(&'static str),
    /// The URL is not http(s).
    #[error("the MISP URL {0:?} is not http:// or https://; give MISP's base URL, e.g. https://misp.example.org")]
    BadUrl(String),
    /// The key file cannot be used.
    #[error("cannot use the API key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The request failed.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer is not restSearch's JSON.
    #[error("{url} returned an answer that is not MISP's restSearch JSON ({reason}); check that the URL is MISP's base URL")]
    BadAnswer {
        /// The request URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The answer is not in the order asked for.
    #[error("{url} returned events not sorted by timestamp although `order` asked for it; this MISP is too old for misp-pull (it needs restSearch's `order`)")]
    Unordered {
        /// The request URL.
        url: String,
    },
    /// An event or the state cannot be written.
    #[error("cannot write {path}: {error}; check the outbox's permissions and free space")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// Another puller holds this outbox.
    #[error("another misp-pull is using the outbox (lock {path} held): the watch service's [misp_pull] or a one-shot misp-pull; let it finish, or stop the service to pull by hand")]
    Busy {
        /// The lock file.
        path: PathBuf,
    },
    /// The state file exists but cannot be read.
    #[error("cannot read the pull state {path}: {reason}; fix or remove it (removing it pulls every matching event again)")]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// One pull's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullSummary {
    /// Events written into the outbox.
    pub written: u64,
    /// Events the server returned that were already written (same uuid and timestamp).
    pub already_had: u64,
    /// restSearch requests answered.
    pub pages: u64,
}

/// The last pull, as kept in the state file for operators.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LastPull {
    /// Start, Unix seconds.
    pub started: u64,
    /// End, Unix seconds.
    pub finished: u64,
    /// What it did.
    #[serde(flatten)]
    pub summary: PullSummary,
    /// Why it failed, if it did.
    pub error: Option<String>,
}

/// The state file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PullState {
    /// URL and filters the cursor belongs to.
    #[serde(default)]
    pub filters: String,
    /// Highest event timestamp written.
    #[serde(default)]
    pub since: u64,
    /// Events written whose timestamp is `since` or more: uuid -> timestamp.
    #[serde(default)]
    pub seen: BTreeMap<String, u64>,
    /// The last pull.
    #[serde(default)]
    pub last_pull: Option<LastPull>,
    /// The last pull that succeeded.
    #[serde(default)]
    pub last_success: Option<LastPull>,
}

/// Labels of the pull counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PullOutcome {
    /// ok or failed.
    pub outcome: String,
}

/// The pull's metrics; clones share the same values.
#[derive(Clone, Debug, Default)]
pub struct MispPullMetrics {
    /// Events written into the outbox.
    pub events: Counter,
    /// Pulls by outcome.
    pub pulls: Family<PullOutcome, Counter>,
    /// End of the last successful pull, Unix seconds.
    pub last_success: Gauge,
}

impl MispPullMetrics {
    /// Registers the metrics in `r` (the sender's `gapferry_sender` sub-registry).
    pub fn register(&self, r: &mut prometheus_client::registry::Registry) {
        r.register(
            "misp_pull_events",
            "MISP events pulled into the outbox",
            self.events.clone(),
        );
        r.register(
            "misp_pull_runs",
            "MISP pulls by outcome",
            self.pulls.clone(),
        );
        r.register(
            "misp_pull_last_success_timestamp_seconds",
            "End of the last successful MISP pull",
            self.last_success.clone(),
        );
    }
}

/// Which timestamps a request asks for.
#[derive(Clone, Copy)]
enum Window {
    From(u64),
    Exactly(u64),
}

/// Pulls events from one MISP into one outbox.
pub struct MispPuller {
    cfg: MispPullConfig,
    key: String,
    client: HttpClient,
    endpoint: String,
    misp_dir: PathBuf,
    state_path: PathBuf,
    state: PullState,
    metrics: MispPullMetrics,
    /// The outbox's lock, held as long as the puller lives.
    _lock: std::fs::File,
}

impl MispPuller {
    /// Checks the settings, reads the key and the saved position.
    pub fn new(
        cfg: MispPullConfig,
        outbox: &Path,
        metrics: MispPullMetrics,
    ) -> Result<Self, PullError> {
        if !(cfg.url.starts_with("https://") || cfg.url.starts_with("http://")) {
            return Err(PullError::BadUrl(cfg.url));
        }
        if cfg.url.starts_with("http://") {
            tracing::warn!(url = %cfg.url, "the MISP URL is plain http: the API key and the events travel unencrypted; use https");
        }
        let key = read_key(&cfg.key_file)?;
        let client = HttpClient::new(cfg.http.clone())?;
        let misp_dir = outbox.join("misp");
        let journal_dir = outbox.join(crate::watch::JOURNAL_DIR);
        for d in [&misp_dir, &journal_dir] {
            std::fs::create_dir_all(d).map_err(|error| PullError::Write {
                path: d.clone(),
                error,
            })?;
        }
        let lock = lock_outbox(&journal_dir.join(LOCK_FILE))?;
        let state_path = journal_dir.join(STATE_FILE);
        let mut state = match std::fs::read(&state_path) {
            Ok(bytes) => {
                serde_json::from_slice::<PullState>(&bytes).map_err(|e| PullError::State {
                    path: state_path.clone(),
                    reason: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PullState::default(),
            Err(e) => {
                return Err(PullError::State {
                    path: state_path,
                    reason: e.to_string(),
                })
            }
        };
        let fingerprint = cfg.fingerprint();
        if state.filters != fingerprint {
            if !state.filters.is_empty() {
                tracing::info!(before = %state.filters, now = %fingerprint, "the MISP URL or filters changed: pulling every matching event from the start");
            }
            state.filters = fingerprint;
            state.since = 0;
            state.seen.clear();
        }
        Ok(MispPuller {
            endpoint: format!("{}/events/restSearch", cfg.url),
            cfg,
            key,
            client,
            misp_dir,
            state_path,
            state,
            metrics,
            _lock: lock,
        })
    }

    /// The saved position and last pulls.
    pub fn state(&self) -> &PullState {
        &self.state
    }

    /// Where the state (position, last pull) is kept.
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The configuration.
    pub fn config(&self) -> &MispPullConfig {
        &self.cfg
    }

    /// Fetches every matching event changed since the last pull into the outbox.
    pub fn pull(&mut self) -> Result<PullSummary, PullError> {
        let started = unix_now();
        let mut summary = PullSummary::default();
        tracing::info!(url = %self.cfg.url, since = self.state.since, tags = ?self.cfg.tags, "misp-pull: pulling");
        let result = self.walk(&mut summary);
        let last = LastPull {
            started,
            finished: unix_now(),
            summary: summary.clone(),
            error: result.as_ref().err().map(|e| e.to_string()),
        };
        self.state.last_pull = Some(last.clone());
        let outcome = if result.is_ok() {
            self.metrics.last_success.set(last.finished as i64);
            self.state.last_success = Some(last);
            "ok"
        } else {
            "failed"
        };
        self.metrics
            .pulls
            .get_or_create(&PullOutcome {
                outcome: outcome.into(),
            })
            .inc();
        let saved = self.save_state();
        result?;
        saved?;
        tracing::info!(
            written = summary.written,
            already_had = summary.already_had,
            pages = summary.pages,
            since = self.state.since,
            "misp-pull: done"
        );
        Ok(summary)
    }

    fn walk(&mut self, s: &mut PullSummary) -> Result<(), PullError> {
        let limit = self.cfg.limit as usize;
        let mut from = self.state.since;
        loop {
            let page = self.fetch(Window::From(from), 1)?;
            s.pages += 1;
            let full = page.len() >= limit;
            let top = page.iter().map(|e| e.timestamp).max();
            self.take(page, s)?;
            let Some(top) = top.filter(|_| full) else {
                return Ok(());
            };
            if top > from {
                from = top;
                continue;
            }
            // A full page of one second: page through it until a pass brings nothing new
            // (an event edited during the pass leaves the second and shifts the pages).
            loop {
                let mut new = 0;
                for p in 1.. {
                    let page = self.fetch(Window::Exactly(from), p)?;
                    s.pages += 1;
                    let n = page.len();
                    new += self.take(page, s)?;
                    if n < limit {
                        break;
                    }
                }
                if new == 0 {
                    break;
                }
            }
            from += 1;
        }
    }

    /// Writes the events not written yet; returns how many it wrote.
    fn take(&mut self, events: Vec<PulledEvent>, s: &mut PullSummary) -> Result<u64, PullError> {
        let mut new = 0;
        for e in events {
            if self
                .state
                .seen
                .get(&e.uuid)
                .is_some_and(|&t| t >= e.timestamp)
            {
                s.already_had += 1;
                continue;
            }
            let path = self.misp_dir.join(format!("{}.json", e.uuid));
            write_atomically(&path, e.raw.get().as_bytes())?;
            tracing::info!(uuid = %e.uuid, timestamp = e.timestamp, "misp-pull: event written");
            self.state.seen.insert(e.uuid, e.timestamp);
            if e.timestamp > self.state.since {
                self.state.since = e.timestamp;
                let since = e.timestamp;
                self.state.seen.retain(|_, t| *t >= since);
            }
            self.save_state()?;
            self.metrics.events.inc();
            s.written += 1;
            new += 1;
        }
        Ok(new)
    }

    fn fetch(&self, window: Window, page: u32) -> Result<Vec<PulledEvent>, PullError> {
        let mut q = serde_json::json!({
            "returnFormat": "json",
            "limit": self.cfg.limit,
            "page": page,
            "order": "Event.timestamp ASC, Event.id ASC",
        });
        q["timestamp"] = match window {
            Window::From(t) => serde_json::json!(t),
            Window::Exactly(t) => serde_json::json!([t, t]),
        };
        if !self.cfg.tags.is_empty() {
            q["tags"] = serde_json::json!(self.cfg.tags);
        }
        if !self.cfg.orgs.is_empty() {
            q["org"] = serde_json::json!(self.cfg.orgs);
        }
        match self.cfg.published {
            Published::Yes => q["published"] = serde_json::json!(true),
            Published::No => q["published"] = serde_json::json!(false),
            Published::Any => {}
        }
        let body = serde_json::to_vec(&q).expect("a JSON value serialises");
        tracing::debug!(url = %self.endpoint, query = %q, "misp-pull: request");
        let answer = self.client.post_json(
            &self.endpoint,
            &[("Authorization", &self.key)],
            &body,
            &self.cfg.key_file,
        )?;
        let events = parse_answer(&answer.body).map_err(|reason| PullError::BadAnswer {
            url: self.endpoint.clone(),
            reason,
        })?;
        if events.windows(2).any(|w| w[0].timestamp > w[1].timestamp) {
            return Err(PullError::Unordered {
                url: self.endpoint.clone(),
            });
        }
        Ok(events)
    }

    fn save_state(&self) -> Result<(), PullError> {
        let bytes = serde_json::to_vec_pretty(&self.state).expect("the state serialises");
        write_atomically(&self.state_path, &bytes)
    }
}

/// Runs `puller` every `interval` on a thread until `shutdown` is set (the watch service's
/// `[misp_pull]`). A failed pull is logged and recorded; the next one runs at the next interval.
pub fn spawn_service(
    mut puller: MispPuller,
    shutdown: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("misp-pull".into())
        .spawn(move || {
            let interval = puller.config().interval;
            while !shutdown.load(Ordering::Relaxed) {
                if let Err(e) = puller.pull() {
                    tracing::error!(
                        "misp-pull failed (next try in {} s): {e}",
                        interval.as_secs_f64()
                    );
                }
                let until = std::time::Instant::now() + interval;
                while !shutdown.load(Ordering::Relaxed) && std::time::Instant::now() < until {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests;
