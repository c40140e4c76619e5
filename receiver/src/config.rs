//! The receiver's configuration file (TOML). Every command-line flag has a key here;
//! a flag given on the command line wins over the file.

use crate::destinations::{Destinations, Hooks};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The configuration file's content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--bind`.
    pub bind: Option<String>,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// `--key`, a list for key rollover.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// `--recv-buffer`.
    pub recv_buffer: Option<usize>,
    /// `--mtu`: the link's MTU; longer datagrams are dropped unread.
    pub mtu: Option<usize>,
    /// `--session-timeout`, seconds.
    pub session_timeout: Option<u64>,
    /// `--metrics`, the Prometheus endpoint's address.
    pub metrics: Option<std::net::SocketAddr>,
    /// Delivery directories per kind (default: under `out`).
    #[serde(default)]
    pub dirs: Dirs,
    /// Image store options.
    #[serde(default)]
    pub images: ImageOptions,
    /// Post-delivery hooks per kind.
    #[serde(default)]
    pub hooks: Hooks,
    /// Limits on what a sender may make the receiver hold.
    #[serde(default)]
    pub limits: LimitOptions,
}

/// `[dirs]`: where each kind goes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dirs {
    /// MISP local feed directory.
    pub misp: Option<PathBuf>,
    /// STIX bundles.
    pub stix: Option<PathBuf>,
    /// Image store.
    pub images: Option<PathBuf>,
    /// Plain files.
    pub files: Option<PathBuf>,
}

/// `[images]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    /// Versions kept per image name (default 3).
    pub keep: Option<usize>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOptions {
    /// Largest object accepted, bytes.
    pub max_object_size: Option<u64>,
    /// Most incomplete objects at once.
    pub max_objects_in_flight: Option<usize>,
    /// Most bytes of incomplete blocks held.
    pub max_held_bytes: Option<usize>,
    /// Largest block once decompressed, bytes: a zstd bomb stops there.
    pub max_block_plain: Option<u32>,
    /// Longest object name, bytes (at most 1024).
    pub max_name_bytes: Option<usize>,
    /// Most path components in an object name (at most 32).
    pub max_name_depth: Option<usize>,
    /// Most sender sessions tracked at once.
    pub max_sessions: Option<usize>,
    /// Most bytes of datagrams queued between the socket thread and the assembler.
    pub max_queue_bytes: Option<usize>,
    /// Largest MISP event or STIX bundle, bytes (read into memory to be checked).
    pub max_document: Option<u64>,
}

/// Why the configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the configuration file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            error: source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// The delivery directories under `out`, with this file's overrides.
    pub fn destinations(&self, out: &Path) -> Destinations {
        let mut d = Destinations::under(out);
        if let Some(p) = &self.dirs.misp {
            d.misp = p.clone();
        }
        if let Some(p) = &self.dirs.stix {
            d.stix = p.clone();
        }
        if let Some(p) = &self.dirs.images {
            d.images = p.clone();
        }
        if let Some(p) = &self.dirs.files {
            d.files = p.clone();
        }
        if let Some(k) = self.images.keep {
            d.keep_images = k.max(1);
        }
        d.hooks = self.hooks.clone();
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_section_and_refuses_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(
            &p,
            r#"
bind = "0.0.0.0:7000"
out = "/srv/gapferry"
keys = ["/etc/gapferry/a.key", "/etc/gapferry/b.key"]
session_timeout = 60
mtu = 1500
[dirs]
misp = "/var/www/MISP/feed"
[images]
keep = 5
[hooks]
image = ["lxc", "image", "import", "{path}"]
[limits]
max_object_size = 1000
max_queue_bytes = 16777216
max_document = 33554432
"#,
        )
        .unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(c.keys.len(), 2);
        assert_eq!(c.mtu, Some(1500));
        assert_eq!(c.limits.max_queue_bytes, Some(16 << 20));
        assert_eq!(c.limits.max_document, Some(32 << 20));
        let d = c.destinations(Path::new("/srv/gapferry"));
        assert_eq!(d.misp, Path::new("/var/www/MISP/feed"));
        assert_eq!(d.stix, Path::new("/srv/gapferry/stix"));
        assert_eq!(d.keep_images, 5);
        assert_eq!(d.hooks.image.as_ref().unwrap()[3], "{path}");
        std::fs::write(&p, "bnid = 1\n").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("bnid"), "{e}");
    }
}

#[cfg(test)]
mod example {
    #[test]
    fn the_packaged_example_parses() {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../packaging/gapferry-recv.toml");
        let c = super::FileConfig::load(&p).unwrap();
        assert_eq!(c.keys.len(), 1);
        assert_eq!(c.images.keep, Some(3));
    }
}
