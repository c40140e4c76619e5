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
    /// `--bind`.
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
        let d = c.destinations(Path::new("/srv/gapferry")).unwrap();
        assert_eq!(d.misp, Path::new("/var/www/MISP/feed"));
        assert_eq!(d.stix, Path::new("/srv/gapferry/stix"));
        assert_eq!(d.keep_images, 5);
        assert_eq!(d.hooks.image.as_ref().unwrap()[3], "{path}");
        std::fs::write(&p, "[hooks]\nfile = [\"sh\", \"-c\", \"cp {path} /x\"]\n").unwrap();
        let e = FileConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("GAPFERRY_PATH") && e.contains("r.toml"), "{e}");
        std::fs::write(&p, "[hooks]\nworkers = 2\nqueue = 10\ntimeout = 5\n").unwrap();
        let c = FileConfig::load(&p).unwrap();
        assert_eq!(
            (c.hooks.workers, c.hooks.queue, c.hooks.timeout),
            (Some(2), Some(10), Some(5))
        );
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
        let p = c
            .destinations(std::path::Path::new("/x"))
            .unwrap()
            .permissions;
        assert_eq!(p.misp.file_mode, 0o644);
        assert_eq!(p.files.dir_mode, 0o755);
    }
}

#[cfg(test)]
mod permissions {
    use super::*;
    use gapferry_common::ObjectKind;

    fn load(text: &str) -> Result<FileConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("r.toml");
        std::fs::write(&p, text).unwrap();
        FileConfig::load(&p).map_err(|e| e.to_string())
    }

    #[test]
    fn the_archive_is_on_for_30_days_by_default_and_configurable() {
        let d = load("").unwrap().destinations(Path::new("/o")).unwrap();
        assert!(d.archive.enabled);
        assert_eq!(d.archive.keep.as_secs(), 30 * 86_400);
        let c = load("[archive]\nenabled = false\nkeep_days = 7\n").unwrap();
        let d = c.destinations(Path::new("/o")).unwrap();
        assert!(!d.archive.enabled);
        assert_eq!(d.archive.keep.as_secs(), 7 * 86_400);
        let e = load("[archive]\nkeep = 7\n").unwrap_err();
        assert!(e.contains("keep"), "{e}");
    }

    fn resolved(text: &str) -> Permissions {
        load(text)
            .unwrap()
            .destinations(Path::new("/out"))
            .unwrap()
            .permissions
    }

    #[test]
    fn defaults_are_0644_files_and_0755_directories_without_a_group() {
        let p = resolved("");
        for kind in [
            ObjectKind::Misp,
            ObjectKind::Stix,
            ObjectKind::Image,
            ObjectKind::ImageSignature,
            ObjectKind::File,
        ] {
            let k = p.for_kind(kind);
            assert_eq!(
                (k.file_mode, k.dir_mode, k.gid),
                (0o644, 0o755, None),
                "{kind}"
            );
        }
        assert_eq!(p.default, Publish::default());
    }

    #[test]
    fn a_kind_overrides_the_defaults_key_by_key() {
        let p = resolved(
            r#"
[permissions]
file_mode = "0640"
dir_mode = "0o750"
group = "0"
[permissions.misp]
file_mode = "644"
group = "root"
[permissions.files]
dir_mode = "0700"
file_mode = "0600"
"#,
        );
        assert_eq!(
            (p.default.file_mode, p.default.dir_mode, p.default.gid),
            (0o640, 0o750, Some(0))
        );
        assert_eq!(
            (p.misp.file_mode, p.misp.dir_mode, p.misp.gid),
            (0o644, 0o750, Some(0))
        );
        assert_eq!((p.files.file_mode, p.files.dir_mode), (0o600, 0o700));
        assert_eq!(p.stix, p.default);
        assert_eq!(p.for_kind(ObjectKind::ImageSignature), p.images);
    }

    #[test]
    fn bad_modes_are_refused_at_load_with_the_key_and_a_fix() {
        for (text, expect) in [
            ("[permissions]\nfile_mode = \"04644\"\n", "setuid"),
            ("[permissions]\ndir_mode = \"2755\"\n", "setgid"),
            ("[permissions.stix]\ndir_mode = \"1777\"\n", "sticky"),
            ("[permissions]\nfile_mode = \"10644\"\n", "above 07777"),
            (
                "[permissions]\nfile_mode = \"0o77777777777\"\n",
                "above 07777",
            ),
            ("[permissions]\nfile_mode = \"0689\"\n", "octal"),
            ("[permissions]\nfile_mode = \"\"\n", "octal"),
            ("[permissions]\nfile_mode = \"-644\"\n", "octal"),
            ("[permissions]\nfile_mode = \"rw-r--r--\"\n", "octal"),
            ("[permissions.images]\nfile_mode = \"0755\"\n", "executable"),
            ("[permissions]\nfile_mode = \"0444\"\n", "owner needs rw"),
            (
                "[permissions.files]\ndir_mode = \"0555\"\n",
                "owner needs rwx",
            ),
            ("[permissions]\nfile_mode = 420\n", "string"),
            ("[permissions]\nmode = \"0644\"\n", "mode"),
            ("[permissions.misp]\nowner = \"www-data\"\n", "owner"),
            ("[permissions.mips]\ngroup = \"0\"\n", "mips"),
        ] {
            let e = load(text).unwrap_err();
            assert!(e.contains(expect), "{text:?}: {e}");
        }
        let e = load("[permissions.stix]\ndir_mode = \"1777\"\n").unwrap_err();
        assert!(e.contains("[permissions.stix] dir_mode = \"1777\""), "{e}");
    }

    #[test]
    fn a_group_that_does_not_exist_is_refused_at_load() {
        let e = load("[permissions.misp]\ngroup = \"no-such-group-gapferry\"\n").unwrap_err();
        assert!(e.contains("[permissions.misp] group"), "{e}");
        assert!(
            e.contains("no group named \"no-such-group-gapferry\""),
            "{e}"
        );
        assert!(e.contains("groupadd"), "{e}");
        let e = load("[permissions]\ngroup = \"99999999999\"\n").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = load("[permissions]\ngroup = \"a\\u0000b\"\n").unwrap_err();
        assert!(e.contains("no group named"), "{e}");
    }

    #[test]
    fn a_group_name_resolves_through_the_group_database() {
        // Every Linux system has group 0 named root.
        assert_eq!(
            resolved("[permissions]\ngroup = \"root\"\n").default.gid,
            Some(0)
        );
        assert_eq!(
            resolved("[permissions.images]\ngroup = \"0\"\n").images.gid,
            Some(0)
        );
    }

    #[test]
    fn stix_layout_is_plain_by_default_and_opencti_when_asked() {
        let layout = |text: &str| {
            load(text)
                .unwrap()
                .destinations(Path::new("/out"))
                .unwrap()
                .stix_layout
        };
        assert_eq!(layout(""), gapferry_feeds::StixLayout::Plain);
        assert_eq!(
            layout("[stix]\nlayout = \"plain\"\n"),
            gapferry_feeds::StixLayout::Plain
        );
        let gapferry_feeds::StixLayout::OpenCti(import) = layout(
            "[stix]\nlayout = \"opencti\"\nopencti_connector_id = \"5A0A9AA9-23A4-4607-B6DF-41A9950D210F\"\nopencti_applicant_id = \"low-side-user\"\n",
        ) else {
            panic!("not the OpenCTI layout");
        };
        assert_eq!(import.connector_id, "5a0a9aa9-23a4-4607-b6df-41a9950d210f");
        assert_eq!(import.applicant_id, "low-side-user");
        assert_eq!(import.connector_name, "gapferry");
        let e = load("[stix]\nlayout = \"opencti\"\nopencti_connector_id = \"x\"\n").unwrap_err();
        assert!(e.contains("not a UUID"), "{e}");
        let e = load("[stix]\nlayout = \"taxii\"\n").unwrap_err();
        assert!(e.contains("taxii"), "{e}");
        let e = load("[stix]\nopencti_applicant_id = \"u\"\n").unwrap_err();
        assert!(e.contains("layout = \"opencti\""), "{e}");
    }
}
