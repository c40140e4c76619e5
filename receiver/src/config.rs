//! The receiver's configuration file (TOML). Every command-line flag has a key here;
//! a flag given on the command line wins over the file. Also owns checking the
//! `[permissions]` section (modes, group names) when the file is loaded; hooks that would
//! pass a sender's text into a command are refused then too.

use crate::destinations::{Destinations, Hooks, Permissions};
use gapferry_feeds::Publish;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The configuration file's content.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// `--bind`: one address, or a list of them (one lane each), kept comma-separated.
    #[serde(default, deserialize_with = "gapferry_shell::config::one_or_list")]
    pub bind: Option<String>,
    /// `--out`.
    pub out: Option<PathBuf>,
    /// `--key`, a list for key rollover.
    #[serde(default)]
    pub keys: Vec<PathBuf>,
    /// `--retired-key`: keys no longer accepted, whose datagrams are counted apart.
    #[serde(default)]
    pub retired_keys: Vec<PathBuf>,
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
    /// STIX directory options.
    #[serde(default)]
    pub stix: StixOptions,
    /// Post-delivery hooks per kind.
    #[serde(default)]
    pub hooks: Hooks,
    /// Limits on what a sender may make the receiver hold.
    #[serde(default)]
    pub limits: LimitOptions,
    /// File mode, directory mode and group of deliveries, per kind.
    #[serde(default)]
    pub permissions: PermissionOptions,
    /// Pushing delivered events and bundles into the high-side MISP.
    pub misp_push: Option<crate::misp_push::MispPushOptions>,
    /// The archive of delivered MISP events and STIX bundles.
    #[serde(default)]
    pub archive: ArchiveOptions,
}

/// `[archive]`: `enabled` (default true) and `keep_days` (default 30, at least 1).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveOptions {
    /// Whether delivered MISP events and STIX bundles are archived.
    pub enabled: Option<bool>,
    /// Days an archived file is kept.
    pub keep_days: Option<u64>,
}

/// `[permissions]`: the defaults, and per kind `[permissions.misp]`, `.stix`, `.images`,
/// `.files` overriding them key by key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionOptions {
    /// Mode of delivered files, octal text (default "0644").
    pub file_mode: Option<String>,
    /// Mode of directories the receiver creates, octal text (default "0755").
    pub dir_mode: Option<String>,
    /// Group (name or number) of delivered files and created directories.
    pub group: Option<String>,
    /// Overrides for the MISP feed.
    #[serde(default)]
    pub misp: KindPermissions,
    /// Overrides for the STIX store.
    #[serde(default)]
    pub stix: KindPermissions,
    /// Overrides for the image store.
    #[serde(default)]
    pub images: KindPermissions,
    /// Overrides for plain files.
    #[serde(default)]
    pub files: KindPermissions,
}

/// `[permissions.<kind>]`: what differs for one kind.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindPermissions {
    /// Mode of delivered files, octal text.
    pub file_mode: Option<String>,
    /// Mode of created directories, octal text.
    pub dir_mode: Option<String>,
    /// Group (name or number).
    pub group: Option<String>,
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
    /// OpenPGP public keyring (binary): every image must carry a `.sig` that verifies
    /// against it, or it is failed and `latest_` does not move.
    pub keyring: Option<PathBuf>,
}

/// `[stix]`: how bundles are written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StixOptions {
    /// `plain` (the bundle as sent, the default) or `opencti` (the file OpenCTI's
    /// diode-import connector reads).
    pub layout: Option<StixLayoutName>,
    /// `connector.id` of the OpenCTI layout (a UUID).
    pub opencti_connector_id: Option<String>,
    /// `connector.name` of the OpenCTI layout.
    pub opencti_connector_name: Option<String>,
    /// `applicant_id` of the OpenCTI layout.
    pub opencti_applicant_id: Option<String>,
}

/// The values of `[stix] layout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StixLayoutName {
    /// Bundles as sent.
    Plain,
    /// OpenCTI diode-import files.
    Opencti,
}

impl StixOptions {
    /// The layout these options describe; a connector id that is not a UUID is refused.
    pub fn layout(&self) -> Result<gapferry_feeds::StixLayout, String> {
        let opencti = self.opencti_connector_id.is_some()
            || self.opencti_connector_name.is_some()
            || self.opencti_applicant_id.is_some();
        match self.layout.unwrap_or(StixLayoutName::Plain) {
            StixLayoutName::Plain if opencti => Err(
                "[stix] opencti_* keys are set but layout is not \"opencti\": add layout = \"opencti\" or remove them".into(),
            ),
            StixLayoutName::Plain => Ok(gapferry_feeds::StixLayout::Plain),
            StixLayoutName::Opencti => {
                let mut import = gapferry_feeds::OpenCtiImport::default();
                if let Some(id) = &self.opencti_connector_id {
                    import = import.with_connector_id(id).map_err(|e| {
                        format!("[stix] opencti_connector_id: {e}")
                    })?;
                }
                if let Some(n) = &self.opencti_connector_name {
                    import.connector_name = n.clone();
                }
                if let Some(a) = &self.opencti_applicant_id {
                    import.applicant_id = a.clone();
                }
                Ok(gapferry_feeds::StixLayout::OpenCti(import))
            }
        }
    }
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
    /// The file cannot be read, is not valid TOML or has unknown keys.
    #[error(transparent)]
    File(#[from] gapferry_shell::ConfigError),
    /// A value cannot be used.
    #[error("configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its position.
        message: String,
    },
    /// A hook could pass a sender's text to a command, or the pool settings are out of range.
    #[error("configuration file {path}: {error}")]
    Hooks {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        error: crate::hooks::HookConfigError,
    },
    /// `[misp_push]` cannot be used.
    #[error("configuration file {path}: {error}")]
    MispPush {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        error: crate::misp_push::PushConfigError,
    },
    /// A `[permissions]` value cannot be used.
    #[error("[permissions{section}] {key} = {value:?}: {reason}")]
    Permission {
        /// `""` or `.misp`, `.stix`, `.images`, `.files`.
        section: String,
        /// `file_mode`, `dir_mode` or `group`.
        key: &'static str,
        /// The refused value.
        value: String,
        /// Why, and what to write instead.
        reason: String,
    },
}

/// Which mode a value is for: files or directories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeOf {
    Files,
    Directories,
}

/// Parses an octal mode (`"0644"`, `"644"`, `"0o644"`) and refuses what the receiver
/// must not publish with.
fn parse_mode(text: &str, of: ModeOf) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(
            "not an octal mode; write it as a string of octal digits, e.g. \"0644\"".into(),
        );
    }
    let mode = u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or("above 07777, not a file mode; write e.g. \"0644\"")?;
    if mode & 0o7000 != 0 {
        return Err("setuid, setgid and sticky bits are refused; use only the 0777 permission bits, e.g. \"0644\"".into());
    }
    match of {
        ModeOf::Files if mode & 0o600 != 0o600 => Err("the receiver must read and rewrite what it delivers: the owner needs rw (0600), e.g. \"0644\" or \"0640\"".into()),
        ModeOf::Files if mode & 0o111 != 0 => Err("delivered files are data from the low side and are never made executable: drop the x bits, e.g. \"0644\"".into()),
        ModeOf::Directories if mode & 0o700 != 0o700 => Err("the receiver must create and rename in its directories: the owner needs rwx (0700), e.g. \"0755\" or \"0750\"".into()),
        _ => Ok(mode),
    }
}

/// The group id of `group`: a number, or a name known to the system's group database.
fn parse_group(group: &str) -> Result<u32, String> {
    if !group.is_empty() && group.bytes().all(|b| b.is_ascii_digit()) {
        return group
            .parse()
            .map_err(|_| "group number out of range".to_string());
    }
    match group_id(group) {
        Ok(Some(gid)) => Ok(gid),
        Ok(None) => Err(format!(
            "no group named {group:?} on this host; create it (groupadd) or name an existing group"
        )),
        Err(e) => Err(format!("cannot look the group up: {e}")),
    }
}

/// Looks `name` up in the group database (files, LDAP, ... as nsswitch says).
fn group_id(name: &str) -> std::io::Result<Option<u32>> {
    let Ok(c_name) = std::ffi::CString::new(name) else {
        return Ok(None);
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut found: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and `buf` outlives it; getgrnam_r
        // writes only into `grp` and `buf` and sets `found` to `grp` or null.
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut found,
            )
        };
        match rc {
            0 if found.is_null() => return Ok(None),
            // SAFETY: getgrnam_r returned 0 with `found` set: `grp` is initialised.
            0 => return Ok(Some(unsafe { grp.assume_init() }.gr_gid)),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 2, 0),
            libc::ENOENT | libc::ESRCH => return Ok(None),
            e => return Err(std::io::Error::from_raw_os_error(e)),
        }
    }
}

impl PermissionOptions {
    /// The permissions of every kind, or the first value that cannot be used.
    pub fn resolve(&self) -> Result<Permissions, ConfigError> {
        let bad = |section: &str, key: &'static str, value: &str, reason: String| {
            ConfigError::Permission {
                section: section.to_string(),
                key,
                value: value.to_string(),
                reason,
            }
        };
        let apply = |base: Publish,
                     section: &str,
                     file_mode: &Option<String>,
                     dir_mode: &Option<String>,
                     group: &Option<String>|
         -> Result<Publish, ConfigError> {
            let mut p = base;
            if let Some(v) = file_mode {
                p.file_mode =
                    parse_mode(v, ModeOf::Files).map_err(|r| bad(section, "file_mode", v, r))?;
            }
            if let Some(v) = dir_mode {
                p.dir_mode = parse_mode(v, ModeOf::Directories)
                    .map_err(|r| bad(section, "dir_mode", v, r))?;
            }
            if let Some(v) = group {
                p.gid = Some(parse_group(v).map_err(|r| bad(section, "group", v, r))?);
            }
            Ok(p)
        };
        let default = apply(
            Publish::default(),
            "",
            &self.file_mode,
            &self.dir_mode,
            &self.group,
        )?;
        let kind = |section: &str, k: &KindPermissions| {
            apply(default, section, &k.file_mode, &k.dir_mode, &k.group)
        };
        Ok(Permissions {
            default,
            misp: kind(".misp", &self.misp)?,
            stix: kind(".stix", &self.stix)?,
            images: kind(".images", &self.images)?,
            files: kind(".files", &self.files)?,
        })
    }
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let config: FileConfig = gapferry_shell::config::load(path)?;
        // Refused at start, not at the first delivery.
        config
            .permissions
            .resolve()
            .map_err(|e| ConfigError::Parse {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        config.stix.layout().map_err(|message| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        })?;
        crate::hooks::check(&config.hooks).map_err(|error| ConfigError::Hooks {
            path: path.to_path_buf(),
            error,
        })?;
        if let Some(push) = &config.misp_push {
            push.prepare().map_err(|error| ConfigError::MispPush {
                path: path.to_path_buf(),
                error,
            })?;
        }
        Ok(config)
    }

    /// The delivery directories under `out`, with this file's overrides; fails on a
    /// `[permissions]` value that cannot be used.
    pub fn destinations(&self, out: &Path) -> Result<Destinations, ConfigError> {
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
        d.image_keyring = self.images.keyring.clone();
        d.stix_layout = self.stix.layout().map_err(|message| ConfigError::Parse {
            path: PathBuf::from("[stix]"),
            message,
        })?;
        d.hooks = self.hooks.clone();
        d.misp_push = self.misp_push.clone();
        d.permissions = self.permissions.resolve()?;
        if let Some(e) = self.archive.enabled {
            d.archive.enabled = e;
        }
        if let Some(days) = self.archive.keep_days {
            d.archive.keep = std::time::Duration::from_secs(days.max(1) * 86_400);
        }
        Ok(d)
    }
}

#[cfg(test)]
mod tests;
