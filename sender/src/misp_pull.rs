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

use crate::http::{HttpClient, HttpError, HttpOptions};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::io::Write;
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

/// Which events by their `published` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Published {
    /// Only published events (the default).
    #[default]
    Yes,
    /// Only unpublished events.
    No,
    /// Both.
    Any,
}

impl std::str::FromStr for Published {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "yes" | "true" => Ok(Published::Yes),
            "no" | "false" => Ok(Published::No),
            "any" => Ok(Published::Any),
            _ => Err(format!("{s:?}: expected yes, no or any")),
        }
    }
}

/// `[misp_pull]` in the sender's configuration file (flags of `misp-pull` win over it).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MispPullSection {
    /// MISP's base URL, e.g. `https://misp.example.org`.
    pub url: Option<String>,
    /// File holding the API key (only the key).
    pub key_file: Option<PathBuf>,
    /// Event tags; an event with any of them is pulled (`tags` of restSearch).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Creator organisations (names or ids; `org` of restSearch).
    #[serde(default)]
    pub orgs: Vec<String>,
    /// yes (default), no or any.
    pub published: Option<Published>,
    /// Events per page.
    pub limit: Option<u32>,
    /// PEM file of the CA(s) to trust instead of the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one request, seconds.
    pub timeout: Option<f64>,
    /// Further attempts after a timeout, a connection error or a 5xx.
    pub retries: Option<u32>,
    /// Watch service: seconds between two pulls.
    pub interval: Option<f64>,
}

/// A complete pull configuration.
#[derive(Debug, Clone)]
pub struct MispPullConfig {
    /// MISP's base URL without trailing slash.
    pub url: String,
    /// The API key's file.
    pub key_file: PathBuf,
    /// Event tags (any of them).
    pub tags: Vec<String>,
    /// Creator organisations (any of them).
    pub orgs: Vec<String>,
    /// Published filter.
    pub published: Published,
    /// Events per page (at least 1).
    pub limit: u32,
    /// Client settings.
    pub http: HttpOptions,
    /// Watch service: time between two pulls.
    pub interval: Duration,
}

impl MispPullConfig {
    /// The configuration of `section` with defaults; `url` and `key_file` are required.
    pub fn from_section(s: &MispPullSection) -> Result<Self, PullError> {
        let url = s.url.clone().ok_or(PullError::Missing("url"))?;
        let key_file = s.key_file.clone().ok_or(PullError::Missing("key_file"))?;
        let mut http = HttpOptions {
            ca_file: s.ca_file.clone(),
            ..HttpOptions::default()
        };
        if let Some(t) = s.timeout {
            http.timeout = Duration::from_secs_f64(t.clamp(0.1, 86_400.0));
        }
        if let Some(r) = s.retries {
            http.retries = r;
        }
        Ok(MispPullConfig {
            url: url.trim_end_matches('/').to_string(),
            key_file,
            tags: s.tags.clone(),
            orgs: s.orgs.clone(),
            published: s.published.unwrap_or_default(),
            limit: s.limit.unwrap_or(DEFAULT_LIMIT).max(1),
            http,
            interval: Duration::from_secs_f64(
                s.interval
                    .unwrap_or(DEFAULT_INTERVAL_S)
                    .clamp(1.0, 86_400.0 * 7.0),
            ),
        })
    }

    /// What identifies the set of events pulled: when it changes, the cursor starts over.
    fn fingerprint(&self) -> String {
        format!(
            "{} tags={:?} orgs={:?} published={:?}",
            self.url, self.tags, self.orgs, self.published
        )
    }
}

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

/// An event of a restSearch answer.
struct PulledEvent {
    uuid: String,
    timestamp: u64,
    raw: Box<RawValue>,
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

/// Parses `{"response": [{"Event": {...}}, ...]}`, keeping each element's bytes as sent.
fn parse_answer(body: &[u8]) -> Result<Vec<PulledEvent>, String> {
    #[derive(Deserialize)]
    struct Answer<'a> {
        #[serde(borrow)]
        response: Vec<&'a RawValue>,
    }
    #[derive(Deserialize)]
    struct Wrapped {
        #[serde(rename = "Event")]
        event: Head,
    }
    #[derive(Deserialize)]
    struct Head {
        uuid: String,
        timestamp: serde_json::Value,
    }
    let answer: Answer = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let mut events = Vec::with_capacity(answer.response.len());
    for (i, raw) in answer.response.into_iter().enumerate() {
        let w: Wrapped = serde_json::from_str(raw.get()).map_err(|e| {
            format!("element {i} is not {{\"Event\": {{...}}}} with uuid and timestamp: {e}")
        })?;
        let uuid = w.event.uuid.to_ascii_lowercase();
        if !is_uuid(&uuid) {
            return Err(format!("element {i}: {:?} is not a UUID", w.event.uuid));
        }
        let timestamp = match &w.event.timestamp {
            serde_json::Value::String(s) => s.parse::<u64>().ok(),
            serde_json::Value::Number(n) => n.as_u64(),
            _ => None,
        }
        .ok_or_else(|| {
            format!(
                "element {i} ({uuid}): timestamp {} is not Unix seconds",
                w.event.timestamp
            )
        })?;
        events.push(PulledEvent {
            uuid,
            timestamp,
            raw: raw.to_owned(),
        });
    }
    Ok(events)
}

/// `8-4-4-4-12` hex digits: the only names written into the outbox.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Reads the API key: only the key (surrounding white space ignored), in a file others
/// cannot read.
fn read_key(path: &Path) -> Result<String, PullError> {
    let bad = |reason: String| PullError::KeyFile {
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(bad(format!(
                "it is readable by every user (mode {mode:03o}); run chmod o-rwx on it (0600 or 0640)"
            )));
        }
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(bad("it is empty; put the MISP API key in it".into()));
    }
    if !key.chars().all(|c| c.is_ascii_graphic()) {
        return Err(bad(
            "it holds more than one word or non-ASCII characters; put only the API key in it"
                .into(),
        ));
    }
    Ok(key.to_string())
}

/// Takes the outbox's pull lock, so two pullers never write one position file.
fn lock_outbox(path: &Path) -> Result<std::fs::File, PullError> {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|error| PullError::Write {
            path: path.to_path_buf(),
            error,
        })?;
    // SAFETY: flock on a descriptor this function owns; no memory is passed. The lock goes
    // with the descriptor (closed with the puller, or by the kernel when the process ends).
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        return Err(if error.kind() == std::io::ErrorKind::WouldBlock {
            PullError::Busy {
                path: path.to_path_buf(),
            }
        } else {
            PullError::Write {
                path: path.to_path_buf(),
                error,
            }
        });
    }
    Ok(f)
}

/// Writes `bytes` under a hidden name next to `path`, syncs, and renames it into place.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PullError> {
    let err = |error| PullError::Write {
        path: path.to_path_buf(),
        error,
    };
    let name = path.file_name().expect("a file name").to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.part"));
    let mut f = std::fs::File::create(&tmp).map_err(err)?;
    f.write_all(bytes).map_err(err)?;
    f.sync_all().map_err(err)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_and_hostile_ones_are_refused() {
        let ok = br#"{"response": [{"Event": {"uuid": "0472809B-1582-4dde-88a9-d82848e9e660", "timestamp": "1715767125", "info": "x"}}, {"Event": {"uuid": "0985427f-ab14-4acb-b62f-d56529114048", "timestamp": 1783434180}}]}"#;
        let e = parse_answer(ok).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].uuid, "0472809b-1582-4dde-88a9-d82848e9e660");
        assert_eq!(e[0].timestamp, 1_715_767_125);
        assert_eq!(
            e[0].raw.get(),
            r#"{"Event": {"uuid": "0472809B-1582-4dde-88a9-d82848e9e660", "timestamp": "1715767125", "info": "x"}}"#
        );
        assert_eq!(e[1].timestamp, 1_783_434_180);
        assert!(parse_answer(br#"{"response": []}"#).unwrap().is_empty());
        for hostile in [
            &br#"{"response": [{"Event": {"uuid": "../../etc/passwd", "timestamp": "1"}}]}"#[..],
            br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e66/", "timestamp": "1"}}]}"#,
            br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660", "timestamp": "-5"}}]}"#,
            br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660"}}]}"#,
            br#"{"response": [{"Attribute": {}}]}"#,
            br#"{"name": "Not Found", "message": "x", "url": "/events/restSearch"}"#,
            br#"<html>login</html>"#,
            br#"{"response": [{"Event": {"uuid": "0472809b-1582-4dde-88a9-d82848e9e660", "timestamp": "1"}}"#,
        ] {
            assert!(parse_answer(hostile).is_err(), "{}", String::from_utf8_lossy(hostile));
        }
    }

    #[test]
    fn the_key_file_must_hold_only_a_key_that_others_cannot_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("misp.key");
        std::fs::write(&p, "  abcdefABCDEF0123456789abcdefABCDEF012345\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(
            read_key(&p).unwrap(),
            "abcdefABCDEF0123456789abcdefABCDEF012345"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_key(&p).unwrap_err().to_string();
        assert!(e.contains("chmod o-rwx") && e.contains("644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        for bad in ["", "key\r\nX-Injected: 1", "two words"] {
            std::fs::write(&p, bad).unwrap();
            assert!(read_key(&p).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_puller_per_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k");
        std::fs::write(&key, "k3y\n").unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = MispPullConfig::from_section(&MispPullSection {
            url: Some("http://127.0.0.1:9".into()),
            key_file: Some(key),
            ..Default::default()
        })
        .unwrap();
        let outbox = dir.path().join("outbox");
        let first = MispPuller::new(cfg.clone(), &outbox, MispPullMetrics::default()).unwrap();
        let e = MispPuller::new(cfg.clone(), &outbox, MispPullMetrics::default())
            .err()
            .expect("second puller refused");
        assert!(matches!(e, PullError::Busy { .. }), "{e}");
        assert!(e.to_string().contains("misp-pull.lock"), "{e}");
        drop(first);
        MispPuller::new(cfg, &outbox, MispPullMetrics::default()).expect("free again");
    }

    #[test]
    fn the_packaged_example_section_parses_once_uncommented() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/gapferry-send.toml");
        let text = std::fs::read_to_string(p).unwrap();
        let start = text.find("# [misp_pull]").expect("the example section");
        // Up to the next section of the file (commented out or not).
        let section: String = text[start..]
            .lines()
            .enumerate()
            .take_while(|(i, l)| *i == 0 || !(l.starts_with('[') || l.starts_with("# [")))
            .filter_map(|(_, l)| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c: crate::config::FileConfig = toml::from_str(&section).unwrap();
        let s = c.misp_pull.expect("[misp_pull]");
        let cfg = MispPullConfig::from_section(&s).unwrap();
        assert_eq!(cfg.url, "https://misp.example.org");
        assert_eq!(cfg.tags, ["airgap:export"]);
        assert_eq!(cfg.interval, Duration::from_secs(300));
        assert_eq!(
            cfg.http.ca_file,
            Some(PathBuf::from("/etc/gapferry/misp-ca.pem"))
        );
    }

    #[test]
    fn the_section_needs_url_and_key_and_bad_urls_are_refused() {
        let e = MispPullConfig::from_section(&MispPullSection::default()).unwrap_err();
        assert!(e.to_string().contains("`url`"), "{e}");
        let s = MispPullSection {
            url: Some("ftp://misp/".into()),
            key_file: Some("/nonexistent".into()),
            ..Default::default()
        };
        let cfg = MispPullConfig::from_section(&s).unwrap();
        assert_eq!(cfg.limit, DEFAULT_LIMIT);
        assert_eq!(cfg.published, Published::Yes);
        let dir = tempfile::tempdir().unwrap();
        let e = MispPuller::new(cfg, dir.path(), MispPullMetrics::default())
            .err()
            .unwrap();
        assert!(matches!(e, PullError::BadUrl(_)), "{e}");
    }
}
