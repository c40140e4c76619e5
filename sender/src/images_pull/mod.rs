//! `gapferry-send images-pull`: mirrors the newest images of a MISP-airgap image server
//! into the outbox's `images/`, for the watch service to send.
//!
//! The server is the directory MISP-airgap's `update_tracker.py` fills, served as static
//! files with directory listings (as the public image server does): `<stem>/<stem>.tar.gz`,
//! its detached `<stem>.tar.gz.sig`, and one `latest_<Name>` symlink per tracked image
//! (`latest_MISP`, `latest_MISP-modules`, `latest_MySQL`, `latest_Redis`,
//! `latest_Valkey`). There is no JSON index: for each name the pull
//! 1. reads the listing of `<base>/latest_<Name>/` and takes the one tarball it lists
//!    (its stem must be a name the image store accepts);
//! 2. stops there when the state file says this stem was already pulled (nothing is
//!    downloaded), or when the outbox already holds the tarball;
//! 3. downloads `<base>/<stem>/<file>.sig` (required when a keyring is given) and then
//!    `<base>/<stem>/<file>` into the outbox's staging area (`.gapferry-send/pull/`,
//!    hidden from the watch service), requiring the server's `Content-Length` and
//!    exactly that many bytes;
//! 4. with a keyring, verifies the signature with `gpgv` ([`gapferry_feeds::signature`]);
//!    a bad signature deletes the download and fails the image;
//! 5. renames the signature, then the tarball, into `images/` (same filesystem, so each
//!    appears whole) and records the stem in `.gapferry-send/images-pull.json`.
//!
//! HTTP: rustls with TLS verification always on (Mozilla's roots, or only the CA file
//! given), timeouts on connect and on every read, up to `retries` retries with doubling
//! backoff on transport errors, timeouts and 5xx; 401, 403 and 404 fail at once with what
//! to check. A failed download starts over on the next run.
//!
//! This module owns the client and the steps above; `listing` reads the server's listings.

use gapferry_feeds::image_store::image_stem;
use gapferry_feeds::{SignatureError, Verifier};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;

mod listing;

use listing::tarball_in_listing;

/// The staging directory under the outbox's journal directory.
pub const PULL_DIR: &str = "pull";
/// The state file under the outbox's journal directory.
pub const STATE_FILE: &str = "images-pull.json";
/// Largest directory listing or signature read, bytes.
const SMALL_LIMIT: u64 = 4 << 20;

/// How a pull runs.
#[derive(Debug, Clone)]
pub struct PullConfig {
    /// The image server's base URL (the directory holding the `latest_` links).
    pub base_url: String,
    /// Image names, as in `latest_<Name>` (`MISP`, `MISP-modules`, `MySQL`, ...).
    pub images: Vec<String>,
    /// The watch service's outbox.
    pub outbox: PathBuf,
    /// OpenPGP keyring (binary): with one, an image whose signature is missing or does
    /// not verify is not put in the outbox.
    pub keyring: Option<PathBuf>,
    /// PEM file of the CA certificates to trust instead of Mozilla's roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout for connecting and for each read.
    pub timeout: Duration,
    /// Retries after a transport error, a timeout or a 5xx.
    pub retries: u32,
    /// First wait before a retry; doubled after each.
    pub backoff: Duration,
}

impl PullConfig {
    /// Defaults: 30 s timeouts, 4 retries starting at 2 s, no keyring, Mozilla's roots.
    pub fn new(base_url: &str, images: Vec<String>, outbox: PathBuf) -> Self {
        PullConfig {
            base_url: base_url.to_string(),
            images,
            outbox,
            keyring: None,
            ca_file: None,
            timeout: Duration::from_secs(30),
            retries: 4,
            backoff: Duration::from_secs(2),
        }
    }
}

/// Why an image was not pulled.
#[derive(Debug, Error)]
pub enum PullError {
    /// The server answered with an error status.
    #[error("GET {url}: HTTP {status}: {advice}")]
    Status {
        /// The URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What to check.
        advice: &'static str,
    },
    /// No answer (connection, TLS, timeout) after every retry.
    #[error("GET {url}: {reason} (after {attempts} attempts); check the base URL, the network path to the server and, for TLS errors, --ca-file")]
    Transport {
        /// The URL.
        url: String,
        /// The last error.
        reason: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The listing of `latest_<Name>/` names no usable tarball.
    #[error("listing {url}: {reason}; check that the server serves MISP-airgap's image directory with directory listings")]
    Listing {
        /// The listing's URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The body was not as long as the server said, or the server said nothing.
    #[error("GET {url}: {reason}; the download was discarded, run images-pull again")]
    Size {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A keyring is configured and the server has no signature for the image.
    #[error("{file}: no signature on the server ({url}) and a keyring is configured; the image was not put in the outbox")]
    NoSignature {
        /// The image file.
        file: String,
        /// The signature's URL.
        url: String,
    },
    /// The signature did not verify.
    #[error("{file}: refused, not put in the outbox: {source}")]
    Signature {
        /// The image file.
        file: String,
        /// Why.
        source: SignatureError,
    },
    /// A keyring or CA file cannot be used.
    #[error("{0}")]
    Setup(String),
    /// Reading or writing the outbox failed.
    #[error("{}: {source}; check that the outbox is writable and has room", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> PullError + '_ {
    move |source| PullError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What happened to one image name.
#[derive(Debug)]
pub enum Pulled {
    /// Downloaded (and verified, with a keyring) into the outbox.
    Downloaded {
        /// The tarball's file name.
        file: String,
        /// Its size in bytes.
        bytes: u64,
        /// Whether a signature came with it.
        signed: bool,
    },
    /// The server's newest was pulled before: nothing downloaded.
    UpToDate {
        /// The tarball's file name.
        file: String,
    },
}

/// What the state file remembers per image name.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct PulledEntry {
    stem: String,
    file: String,
    size: u64,
}

type State = BTreeMap<String, PulledEntry>;

/// The progress of one download: called with the file name, bytes so far and the total.
pub type ProgressFn<'a> = dyn FnMut(&str, u64, u64) + 'a;

/// One image's download: where it comes from, where it is staged, where it lands.
struct Download {
    image_url: String,
    file: String,
    part: PathBuf,
    sig_part: PathBuf,
    dest: PathBuf,
    images_dir: PathBuf,
}

/// An image-server client for one outbox.
pub struct ImagePuller {
    cfg: PullConfig,
    agent: ureq::Agent,
    verifier: Option<Verifier>,
}

impl ImagePuller {
    /// Checks the configuration (keyring, CA file) and builds the HTTP client.
    pub fn new(mut cfg: PullConfig) -> Result<Self, PullError> {
        if !cfg.base_url.ends_with('/') {
            cfg.base_url.push('/');
        }
        if !(cfg.base_url.starts_with("https://") || cfg.base_url.starts_with("http://")) {
            return Err(PullError::Setup(format!(
                "--base-url {:?} is not an http:// or https:// URL",
                cfg.base_url
            )));
        }
        for name in &cfg.images {
            if name.is_empty()
                || name.starts_with('.')
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(PullError::Setup(format!(
                    "image name {name:?}: use the name after latest_ on the server (MISP, MISP-modules, MySQL, Redis, Valkey)"
                )));
            }
        }
        let verifier = match &cfg.keyring {
            Some(k) => {
                let v = Verifier::new(k);
                v.check()
                    .map_err(|e| PullError::Setup(format!("--keyring: {e}")))?;
                Some(v)
            }
            None => None,
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(ca) = &cfg.ca_file {
            let pem = fs::read(ca)
                .map_err(|e| PullError::Setup(format!("--ca-file {}: {e}", ca.display())))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(PullError::Setup(format!(
                    "--ca-file {} holds no PEM certificate",
                    ca.display()
                )));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        let agent = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .http_status_as_error(false)
            .timeout_connect(Some(cfg.timeout))
            .timeout_recv_response(Some(cfg.timeout))
            .timeout_per_read(Some(cfg.timeout))
            .user_agent(concat!("gapferry-send/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(ImagePuller {
            cfg,
            agent,
            verifier,
        })
    }

    fn journal_dir(&self) -> PathBuf {
        self.cfg.outbox.join(crate::watch::JOURNAL_DIR)
    }

    fn load_state(&self) -> State {
        let path = self.journal_dir().join(STATE_FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), "unreadable pull state ({e}); every image is checked again");
                State::new()
            }),
            Err(_) => State::new(),
        }
    }

    fn save_state(&self, state: &State) -> Result<(), PullError> {
        let dir = self.journal_dir();
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state).expect("serialisable");
        File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&bytes)?;
                f.sync_all()
            })
            .and_then(|()| fs::rename(&tmp, &path))
            .map_err(io_err(&path))
    }

    /// Pulls every configured image name; one result per name, in order.
    pub fn pull_all(
        &self,
        progress: &mut ProgressFn<'_>,
    ) -> Vec<(String, Result<Pulled, PullError>)> {
        self.cfg
            .images
            .iter()
            .map(|name| (name.clone(), self.pull(name, progress)))
            .collect()
    }

    /// Pulls the newest image of `name` (as in `latest_<name>`) if it is new.
    pub fn pull(&self, name: &str, progress: &mut ProgressFn<'_>) -> Result<Pulled, PullError> {
        let (file, stem) = self.newest(name)?;
        let mut state = self.load_state();
        let images_dir = self.cfg.outbox.join("images");
        let dest = images_dir.join(&file);
        if state.get(name).is_some_and(|e| e.stem == stem) || dest.is_file() {
            return Ok(Pulled::UpToDate { file });
        }

        let staging = self.journal_dir().join(PULL_DIR);
        fs::create_dir_all(&staging).map_err(io_err(&staging))?;
        fs::create_dir_all(&images_dir).map_err(io_err(&images_dir))?;
        let image_url = format!("{}{stem}/{file}", self.cfg.base_url);
        let sig_url = format!("{image_url}.sig");
        let sig = self.get_small(&sig_url)?;
        if sig.is_none() && self.verifier.is_some() {
            return Err(PullError::NoSignature { file, url: sig_url });
        }
        let d = Download {
            part: staging.join(format!("{file}.part")),
            sig_part: staging.join(format!("{file}.sig.part")),
            image_url,
            file: file.clone(),
            dest,
            images_dir,
        };
        let bytes = self
            .download_verified(&d, sig.as_deref(), progress)
            .inspect_err(|_| {
                let _ = fs::remove_file(&d.part);
                let _ = fs::remove_file(&d.sig_part);
            })?;
        let entry = PulledEntry {
            stem,
            file: file.clone(),
            size: bytes,
        };
        state.insert(name.to_string(), entry);
        self.save_state(&state)?;
        Ok(Pulled::Downloaded {
            file,
            bytes,
            signed: sig.is_some(),
        })
    }

    /// The file name and stem of the one tarball `latest_<name>/` lists.
    fn newest(&self, name: &str) -> Result<(String, String), PullError> {
        let listing_url = format!("{}latest_{name}/", self.cfg.base_url);
        let listing = self.get_small(&listing_url)?.ok_or(PullError::Status {
            url: listing_url.clone(),
            status: 404,
            advice: "no such image on the server; check --image against the server's latest_ links",
        })?;
        let file = tarball_in_listing(&listing).map_err(|reason| PullError::Listing {
            url: listing_url.clone(),
            reason,
        })?;
        let (stem, _) = image_stem(&file).map_err(|e| PullError::Listing {
            url: listing_url.clone(),
            reason: e.to_string(),
        })?;
        Ok((file, stem))
    }

    /// Downloads the tarball into staging, writes its signature beside it, verifies it
    /// with a keyring, and renames both into `images/` (the signature first: the watch
    /// service takes a tarball with the `.sig` beside it; both settle before it takes them).
    fn download_verified(
        &self,
        d: &Download,
        sig: Option<&[u8]>,
        progress: &mut ProgressFn<'_>,
    ) -> Result<u64, PullError> {
        let bytes = self.download(&d.image_url, &d.part, &d.file, progress)?;
        if let Some(sig) = sig {
            File::create(&d.sig_part)
                .and_then(|mut f| {
                    f.write_all(sig)?;
                    f.sync_all()
                })
                .map_err(io_err(&d.sig_part))?;
        }
        if let Some(v) = &self.verifier {
            let good = v
                .verify(&d.part, &d.sig_part)
                .map_err(|source| PullError::Signature {
                    file: d.file.clone(),
                    source,
                })?;
            tracing::info!(file = %d.file, key = %good.fingerprint, signer = %good.signer, "signature verified");
        }
        if sig.is_some() {
            let sig_dest = d.images_dir.join(format!("{}.sig", d.file));
            fs::rename(&d.sig_part, &sig_dest).map_err(io_err(&sig_dest))?;
        }
        fs::rename(&d.part, &d.dest).map_err(io_err(&d.dest))?;
        File::open(&d.images_dir)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err(&d.images_dir))?;
        Ok(bytes)
    }

    /// GET with retries; `Ok(None)` on 404, an error on other failures.
    fn get(&self, url: &str) -> Result<Option<ureq::http::Response<ureq::Body>>, PullError> {
        let mut wait = self.cfg.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let retry_reason = match self.agent.get(url).call() {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match status {
                        200..=299 => return Ok(Some(resp)),
                        404 => return Ok(None),
                        401 => return Err(status_error(url, status, "the server asks for credentials, which images-pull does not send; check --base-url")),
                        403 => return Err(status_error(url, status, "forbidden; check the server's access rules for this host")),
                        500..=599 => format!("HTTP {status}"),
                        _ => return Err(status_error(url, status, "unexpected answer; check --base-url")),
                    }
                }
                Err(e) => e.to_string(),
            };
            if attempt > self.cfg.retries {
                if let Some(status) = retry_reason
                    .strip_prefix("HTTP ")
                    .and_then(|s| s.parse().ok())
                {
                    return Err(status_error(
                        url,
                        status,
                        "server error after every retry; try again later or tell the server's operator",
                    ));
                }
                return Err(PullError::Transport {
                    url: url.to_string(),
                    reason: retry_reason,
                    attempts: attempt,
                });
            }
            tracing::warn!(url, attempt, reason = %retry_reason, wait_ms = wait.as_millis() as u64, "retrying");
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
    }

    /// A small body (listing, signature), or `None` on 404.
    fn get_small(&self, url: &str) -> Result<Option<Vec<u8>>, PullError> {
        let Some(resp) = self.get(url)? else {
            return Ok(None);
        };
        let mut body = Vec::new();
        resp.into_body()
            .into_reader()
            .take(SMALL_LIMIT + 1)
            .read_to_end(&mut body)
            .map_err(|e| PullError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
                attempts: 1,
            })?;
        if body.len() as u64 > SMALL_LIMIT {
            return Err(PullError::Size {
                url: url.to_string(),
                reason: format!(
                    "longer than {SMALL_LIMIT} bytes, too long for a listing or signature"
                ),
            });
        }
        Ok(Some(body))
    }

    /// Streams `url` into `part`; returns its size, which matches `Content-Length`.
    fn download(
        &self,
        url: &str,
        part: &Path,
        file: &str,
        progress: &mut ProgressFn<'_>,
    ) -> Result<u64, PullError> {
        let resp = self.get(url)?.ok_or(PullError::Status {
            url: url.to_string(),
            status: 404,
            advice: "the server lists the image but does not serve it; try again later",
        })?;
        let size_err = |reason: String| PullError::Size {
            url: url.to_string(),
            reason,
        };
        let expected = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .ok_or_else(|| {
                size_err("the server gave no Content-Length, so the size cannot be verified".into())
            })?;
        let mut reader = resp.into_body().into_reader();
        let mut out = File::create(part).map_err(io_err(part))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut done = 0u64;
        progress(file, 0, expected);
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(size_err(format!(
                        "the transfer broke after {done} of {expected} bytes: {e}"
                    )))
                }
            };
            done += n as u64;
            if done > expected {
                return Err(size_err(format!(
                    "more bytes than the {expected} the server announced"
                )));
            }
            out.write_all(&buf[..n]).map_err(io_err(part))?;
            progress(file, done, expected);
        }
        if done != expected {
            return Err(size_err(format!(
                "{done} bytes received, the server announced {expected}"
            )));
        }
        out.sync_all().map_err(io_err(part))?;
        Ok(done)
    }
}

fn status_error(url: &str, status: u16, advice: &'static str) -> PullError {
    PullError::Status {
        url: url.to_string(),
        status,
        advice,
    }
}
