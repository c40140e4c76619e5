//! The sender's configuration file (TOML). Every command-line flag has a key here; a flag
//! given on the command line wins over the file.

use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The configuration file's content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--to`: one address, or a list of them (one lane each).
    pub to: Option<OneOrMany>,
    /// `--bind`: one address, or one per lane.
    pub bind: Option<OneOrMany>,
    /// `--rate`, e.g. "800M"; with lanes one rate for each, or one per lane (a list, kept
    /// comma-separated: "600M,200M").
    #[serde(default, deserialize_with = "gapferry_shell::config::one_or_list")]
    pub rate: Option<String>,
    /// `--max-objects-rate`, objects per second (the whole session, every lane together).
    pub max_objects_rate: Option<f64>,
    /// `--objects-burst`, objects.
    pub objects_burst: Option<i64>,
    /// `--repair`, percent.
    pub repair: Option<u32>,
    /// `--mtu`.
    pub mtu: Option<usize>,
    /// `--key`.
    pub key: Option<PathBuf>,
    /// `--passes`.
    pub passes: Option<u8>,
    /// `--threads`: threads preparing blocks.
    pub threads: Option<u16>,
    /// `--kind` (file command).
    pub kind: Option<String>,
    /// `--metrics`, the Prometheus endpoint's address.
    pub metrics: Option<std::net::SocketAddr>,
    /// `[watch]`: the outbox service.
    #[serde(default)]
    pub watch: WatchOptions,
    /// `[misp_pull]`: `misp-pull`, and the watch service's periodic pull when present.
    pub misp_pull: Option<crate::misp_pull::MispPullSection>,
    /// `[misp]`: how MISP events are prepared.
    #[serde(default)]
    pub misp: MispOptions,
}

/// `[misp]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MispOptions {
    /// `--misp-feed-form`: convert events to PyMISP's feed form (default true).
    pub feed_form: Option<bool>,
    /// `--misp-valid-distributions`: distributions exported (default 0 to 5).
    pub valid_distributions: Option<Vec<i64>>,
    /// `--misp-keep-non-exportable-tags`.
    pub keep_non_exportable_tags: Option<bool>,
    /// `--misp-object-templates`: a misp-objects `objects` directory.
    pub object_templates: Option<PathBuf>,
}

/// `[watch]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchOptions {
    /// `--outbox`.
    pub outbox: Option<PathBuf>,
    /// `--settle`, seconds.
    pub settle: Option<f64>,
    /// `--sent-dir`.
    pub sent_dir: Option<PathBuf>,
    /// `--delete-sent`.
    pub delete_sent: Option<bool>,
    /// `--resend-last`: carousel size.
    pub resend_last: Option<usize>,
    /// `--resend-every`: carousel period, seconds.
    pub resend_every: Option<f64>,
    /// `--poll-interval`: seconds between scans without an outbox event.
    pub poll_interval: Option<f64>,
}

/// A key that takes one string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `key = "value"`.
    One(String),
    /// `key = ["value", ...]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

pub use gapferry_shell::ConfigError;

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        gapferry_shell::config::load(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "to = \"192.0.2.10:7000\"\nrate = \"800M\"\n[watch]\noutbox = \"/srv/outbox\"\nsettle = 1.5\n").unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.rate.as_deref(), Some("800M"));
        assert_eq!(c.watch.settle, Some(1.5));
        std::fs::write(
            &p,
            "[misp]\nfeed_form = false\nvalid_distributions = [0, 1]\nkeep_non_exportable_tags = true\n",
        )
        .unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.misp.feed_form, Some(false));
        assert_eq!(c.misp.valid_distributions, Some(vec![0, 1]));
        std::fs::write(&p, "[watch]\noutbx = 1\n").unwrap();
        assert!(FileConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("outbx"));
    }
}

#[cfg(test)]
mod object_pace {
    use super::*;

    #[test]
    fn the_object_pace_is_read_as_integers_or_decimals() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(
            &p,
            "max_objects_rate = 500
objects_burst = 64
",
        )
        .unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(
            (c.max_objects_rate, c.objects_burst),
            (Some(500.0), Some(64))
        );
        std::fs::write(
            &p,
            "max_objects_rate = 2.5
",
        )
        .unwrap();
        assert_eq!(FileConfig::load(&p).unwrap().max_objects_rate, Some(2.5));
        std::fs::write(
            &p,
            "max_objects_rate = \"fast\"
",
        )
        .unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("max_objects_rate"), "{e}");
    }
}

#[cfg(test)]
mod lanes {
    use super::*;

    #[test]
    fn to_and_bind_take_one_address_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.toml");
        std::fs::write(&p, "to = [\"192.0.2.10:7000\", \"192.0.2.11:7000\"]\nbind = \"0.0.0.0:0\"\nrate = [\"600M\", \"200M\"]\n").unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.rate.as_deref(), Some("600M,200M"));
        assert_eq!(
            c.to.unwrap().into_vec(),
            ["192.0.2.10:7000", "192.0.2.11:7000"]
        );
        assert_eq!(c.bind.unwrap().into_vec(), ["0.0.0.0:0"]);
        std::fs::write(&p, "to = 7000\n").unwrap();
        assert!(FileConfig::load(&p).is_err());
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_packaged_example_parses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/gapferry-send.toml");
        let c = super::FileConfig::load(&p).unwrap();
        assert_eq!(c.rate.as_deref(), Some("800M"));
        assert!(crate::rate::parse_rate(c.rate.as_deref().unwrap()).is_ok());
        assert!(c.watch.outbox.is_some());
    }
}
