//! `[misp_push]` as configured, checked at start (URL, key file, ranges, CA file) and
//! turned into the settings the push worker uses: the HTTP agent (no redirects, no
//! environment proxy, the configured timeouts and CA) and the API paths.

use super::*;

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
    pub(super) base: String,
    pub(super) key: String,
    pub(super) agent: ureq::Agent,
    pub(super) attempts: u32,
    pub(super) backoff: Duration,
    pub(super) queue: usize,
    pub(super) events: bool,
    pub(super) stix: bool,
    pub(super) stix_path: String,
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
        let url = self.checked_url()?;
        let key = self.read_key()?;
        self.check_ranges()?;
        let agent = self.agent()?;
        Ok(PushSettings {
            base: url.to_string(),
            key,
            agent,
            attempts: self.attempts.unwrap_or(DEFAULT_ATTEMPTS),
            backoff: Duration::from_secs(self.backoff.unwrap_or(DEFAULT_BACKOFF)),
            queue: self.queue.unwrap_or(DEFAULT_QUEUE),
            events: self.events.unwrap_or(true),
            stix: self.stix.unwrap_or(true),
            stix_path: self.stix_path(),
        })
    }

    /// The base URL without a trailing slash, if it is an http(s) URL with a host.
    fn checked_url(&self) -> Result<&str, PushConfigError> {
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
        Ok(url)
    }

    /// The API key from `key_file`, trimmed; refused when empty or not printable.
    fn read_key(&self) -> Result<String, PushConfigError> {
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
        Ok(key)
    }

    /// Refuses numbers out of their range.
    fn check_ranges(&self) -> Result<(), PushConfigError> {
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
        match self.stix_distribution {
            Some(d) if d > 5 || d == 4 => Err(PushConfigError::OutOfRange {
                key: "stix_distribution",
                value: d.into(),
                range: "0, 1, 2, 3 or 5 (a sharing group cannot be named here)",
            }),
            _ => Ok(()),
        }
    }

    /// The TLS configuration: the system's roots, or only the certificates of `ca_file`.
    fn tls(&self) -> Result<ureq::tls::TlsConfig, PushConfigError> {
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
        Ok(tls.build())
    }

    /// The HTTP agent: no redirects, no environment proxy, the configured timeouts.
    fn agent(&self) -> Result<ureq::Agent, PushConfigError> {
        let timeout = Duration::from_secs(self.timeout.unwrap_or(DEFAULT_TIMEOUT));
        let config = ureq::Agent::config_builder()
            .tls_config(self.tls()?)
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
        Ok(config.into())
    }

    /// The STIX upload path with the configured distribution and publish flag.
    fn stix_path(&self) -> String {
        let mut stix_path = "/events/upload_stix/2".to_string();
        if let Some(d) = self.stix_distribution {
            stix_path += &format!("/distribution:{d}");
        }
        if self.stix_publish.unwrap_or(false) {
            stix_path += "/publish:1";
        }
        stix_path
    }
}
