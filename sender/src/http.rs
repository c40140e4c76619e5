//! The sender's HTTP client for the low-side pulls (`misp-pull`): TLS verification always on
//! (Mozilla's roots, or only the CA file given), timeouts, retries with exponential backoff
//! for what may pass (timeouts, refused connections, 5xx, 429), and errors that name the URL
//! and what the operator should check. Never a silent skip: every failure is an error.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Largest response body read (a restSearch page of big events can be large).
const MAX_BODY: u64 = 1 << 30;

/// How the client connects.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// PEM file of the CA(s) to trust instead of the built-in Mozilla roots.
    pub ca_file: Option<PathBuf>,
    /// Timeout of one attempt (connect, send, receive).
    pub timeout: Duration,
    /// Further attempts after a failure that may pass.
    pub retries: u32,
    /// Pause before the first retry; doubled at each further one (at most 30 s).
    pub backoff: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            ca_file: None,
            timeout: Duration::from_secs(60),
            retries: 3,
            backoff: Duration::from_secs(1),
        }
    }
}

/// Why a request failed, phrased for the operator.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The CA file cannot be used.
    #[error("cannot use the CA file {path}: {reason}; give a PEM file with the CA certificate(s) of the server")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// 401: the key is not known.
    #[error("{url} answered 401 Unauthorized: the API key was not accepted; check the key file {key_file} (the key of an enabled MISP user, the file holding only the key)")]
    Unauthorized {
        /// The request URL.
        url: String,
        /// Where the key came from.
        key_file: String,
    },
    /// 403: the key is refused.
    #[error("{url} answered 403 Forbidden: the API key in {key_file} was refused; check that the key is valid and not expired, that its user is enabled and its role may use the API (auth key access), and that the key's allowed IPs include this host")]
    Forbidden {
        /// The request URL.
        url: String,
        /// Where the key came from.
        key_file: String,
    },
    /// Another 4xx answer: the request itself is wrong.
    #[error("{url} answered {status}: {excerpt}; check the URL (MISP's base URL) and the filters")]
    Refused {
        /// The request URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the answer's body.
        excerpt: String,
    },
    /// 5xx (or 429) on every attempt.
    #[error("{url} answered {status} on each of {attempts} attempts: the server failed; check that MISP is up and its error log (app/tmp/logs/error.log)")]
    Server {
        /// The request URL.
        url: String,
        /// The last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
    },
    /// No answer in time on every attempt.
    #[error("{url} did not answer within {timeout_s} s on each of {attempts} attempts: check that the server is reachable from this host and not overloaded, or raise the timeout")]
    Timeout {
        /// The request URL.
        url: String,
        /// The timeout of one attempt, seconds.
        timeout_s: f64,
        /// Attempts made.
        attempts: u32,
    },
    /// TLS failed (certificate not trusted, wrong name, ...).
    #[error("TLS with {url} failed: {reason}; check the server's certificate and the CA file (--ca-file)")]
    Tls {
        /// The request URL.
        url: String,
        /// The TLS error.
        reason: String,
    },
    /// No connection (refused, unreachable, name unknown) on every attempt.
    #[error("cannot reach {url} ({attempts} attempts): {reason}; check the URL and the network path to the server")]
    Connect {
        /// The request URL.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
}

/// A complete answer with a 2xx status.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The body.
    pub body: Vec<u8>,
}

/// A configured client.
pub struct HttpClient {
    agent: ureq::Agent,
    opts: HttpOptions,
}

impl HttpClient {
    /// Builds a client; reads the CA file now, so a bad one is reported at start.
    pub fn new(opts: HttpOptions) -> Result<Self, HttpError> {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &opts.ca_file {
            tls = tls.root_certs(read_ca_file(path)?);
        }
        let config = ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .user_agent(concat!("gapferry-send/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(HttpClient {
            agent: config.into(),
            opts,
        })
    }

    /// POSTs `body` (JSON) to `url` with the headers given, retrying what may pass.
    /// `key_file` only names the key's origin in error messages.
    pub fn post_json(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        key_file: &Path,
    ) -> Result<HttpAnswer, HttpError> {
        let attempts = self.opts.retries + 1;
        let mut pause = self.opts.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let err = match self.attempt(url, headers, body) {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err((status, excerpt))) => {
                    let key_file = key_file.display().to_string();
                    match status {
                        401 => {
                            return Err(HttpError::Unauthorized {
                                url: url.into(),
                                key_file,
                            })
                        }
                        403 => {
                            return Err(HttpError::Forbidden {
                                url: url.into(),
                                key_file,
                            })
                        }
                        429 | 500..=599 => HttpError::Server {
                            url: url.into(),
                            status,
                            attempts: attempt,
                        },
                        _ => {
                            return Err(HttpError::Refused {
                                url: url.into(),
                                status,
                                excerpt,
                            })
                        }
                    }
                }
                Err(ureq::Error::Timeout(_)) => HttpError::Timeout {
                    url: url.into(),
                    timeout_s: self.opts.timeout.as_secs_f64(),
                    attempts: attempt,
                },
                // rustls reports a refused certificate or handshake as an I/O error of kind
                // InvalidData wrapping its own error.
                Err(ureq::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::InvalidData && e.get_ref().is_some() =>
                {
                    return Err(HttpError::Tls {
                        url: url.into(),
                        reason: e.to_string(),
                    })
                }
                Err(e @ (ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_))) => {
                    return Err(HttpError::Tls {
                        url: url.into(),
                        reason: e.to_string(),
                    })
                }
                Err(e) => HttpError::Connect {
                    url: url.into(),
                    attempts: attempt,
                    reason: e.to_string(),
                },
            };
            if attempt >= attempts {
                return Err(err);
            }
            tracing::warn!(%url, attempt, of = attempts, retry_in_s = pause.as_secs_f64(), "{err}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// One exchange: the answer, a non-2xx status with the start of its body, or a transport error.
    #[allow(clippy::type_complexity)]
    fn attempt(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Result<HttpAnswer, (u16, String)>, ureq::Error> {
        let mut req = self
            .agent
            .post(url)
            .header("Content-Type", "application/json")
            .header("Accept", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = req.send(body)?;
        let status = resp.status().as_u16();
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_vec()?;
        if (200..300).contains(&status) {
            Ok(Ok(HttpAnswer { body: bytes }))
        } else {
            let text = String::from_utf8_lossy(&bytes);
            let excerpt: String = text.chars().filter(|c| !c.is_control()).take(200).collect();
            Ok(Err((status, excerpt)))
        }
    }
}

fn read_ca_file(path: &Path) -> Result<ureq::tls::RootCerts, HttpError> {
    let bad = |reason: String| HttpError::CaFile {
        path: path.to_path_buf(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item.map_err(|e| bad(e.to_string()))? {
            ureq::tls::PemItem::Certificate(c) => certs.push(c),
            _ => return Err(bad("it holds a private key; give only certificates".into())),
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(ureq::tls::RootCerts::new_with_certs(&certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate\n").unwrap();
        let e = HttpClient::new(HttpOptions {
            ca_file: Some(p.clone()),
            ..HttpOptions::default()
        })
        .err()
        .expect("refused");
        assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        let missing = dir.path().join("missing.pem");
        let e = HttpClient::new(HttpOptions {
            ca_file: Some(missing),
            ..HttpOptions::default()
        })
        .err()
        .expect("refused");
        assert!(e.to_string().contains("missing.pem"), "{e}");
    }
}
