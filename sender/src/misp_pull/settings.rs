//! What `misp-pull` pulls and from where: `[misp_pull]` as written in the configuration
//! file, and the complete configuration with its defaults.

use super::{PullError, DEFAULT_INTERVAL_S, DEFAULT_LIMIT};
use crate::http::HttpOptions;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

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
    pub(super) fn fingerprint(&self) -> String {
        format!(
            "{} tags={:?} orgs={:?} published={:?}",
            self.url, self.tags, self.orgs, self.published
        )
    }
}
