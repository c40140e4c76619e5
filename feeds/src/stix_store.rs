//! The high side's STIX 2.1 directory: one file per bundle, named after its bundle id.
//!
//! Rules:
//! - only a STIX 2.1 bundle is accepted: `"type": "bundle"`, `"id": "bundle--<uuid>"`, an
//!   `objects` list whose members each have a `type` and an `id` of the form
//!   `<type>--<uuid>`, and `spec_version`, where present (bundle or object), equal to
//!   `2.1`; anything else is refused with its reason and nothing is written;
//! - the file is `bundle--<uuid>.json`; when that name already holds *different* bytes
//!   (the OASIS examples ship two different bundles with one id), the newcomer is stored
//!   as `bundle--<uuid>.<first 32 hex digits of its blake3>.json`, so two different bundles
//!   never overwrite each other and the same bytes delivered twice are stored once;
//! - writes are atomic (staging file in the directory, fsync, rename or link, fsync of
//!   the directory); a symlink found under a bundle's name is never followed;
//! - bundles get the store's [`Publish`] file mode and group before their rename, the
//!   directory its directory mode when the store creates it.

use crate::fsutil::{ensure_real_dir, hex, is_uuid, stage_in, sync_dir, write_atomic, Publish};
use crate::json_scan::{first_byte, for_each_element, members, small_value};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Why a bundle was not stored.
#[derive(Debug, Error)]
pub enum StixError {
    /// The bytes are not JSON.
    #[error("not valid JSON ({0}); it is not a STIX bundle: send it as kind `file`")]
    NotJson(String),
    /// Valid JSON that is not a STIX 2.1 bundle.
    #[error("not a STIX 2.1 bundle: {0}; nothing was written: send STIX 2.1 bundles only (convert 2.0 content first), or send it as kind `file`")]
    NotABundle(String),
    /// Reading or writing the STIX directory failed.
    #[error("STIX directory {}: {source}; check that it is writable by the receiver and that the disk has room", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StixError + '_ {
    move |source| StixError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a checked bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleInfo {
    /// `bundle--<uuid>`.
    pub id: String,
    /// Number of objects in it.
    pub objects: usize,
}

/// A bundle in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// Where it is.
    pub path: PathBuf,
    /// Its bundle id.
    pub bundle_id: String,
    /// Number of objects in it.
    pub objects: usize,
    /// True when the same bytes were already stored (nothing written).
    pub already_stored: bool,
}

/// The STIX 2.1 bundle directory.
#[derive(Debug, Clone)]
pub struct StixStore {
    dir: PathBuf,
    publish: Publish,
}

/// The members of a bundle that are checked, borrowed from the document unparsed.
#[derive(Deserialize)]
struct BundleView<'a> {
    #[serde(default, borrow, rename = "type")]
    ty: Option<&'a RawValue>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default, borrow)]
    spec_version: Option<&'a RawValue>,
    #[serde(default, borrow)]
    objects: Option<&'a RawValue>,
}

/// Checks that `json` is a STIX 2.1 bundle. The bundle is walked object by object, never
/// built into a JSON tree, so a bundle costs about its own size to check.
pub fn validate_bundle(json: &[u8]) -> Result<BundleInfo, StixError> {
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(json) {
        return Err(StixError::NotJson(e.to_string()));
    }
    let not = |s: String| StixError::NotABundle(s);
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(not("the top level is not a JSON object".into()));
    }
    let view: BundleView = serde_json::from_slice(json).map_err(|e| not(e.to_string()))?;
    match small_value(view.ty, "`type`").map_err(not)? {
        Value::String(t) if t == "bundle" => {}
        Value::Null => return Err(not("it has no `type`".into())),
        other => {
            return Err(not(format!(
                "its type is {}, not \"bundle\"",
                shown(&other)
            )))
        }
    }
    let id = match small_value(view.id, "`id`").map_err(not)? {
        // Lower case: the same bundle id in upper case names the same file.
        Value::String(id) if id.strip_prefix("bundle--").is_some_and(is_uuid) => {
            id.to_ascii_lowercase()
        }
        Value::Null => return Err(not("it has no `id`".into())),
        other => {
            return Err(not(format!(
                "its id {} is not bundle--<uuid>",
                shown(&other)
            )))
        }
    };
    check_spec_version(&small_value(view.spec_version, "`spec_version`").map_err(not)?)
        .map_err(|v| not(format!("the bundle declares spec_version {v}")))?;
    let objects = match view.objects {
        Some(o) if first_byte(o) == b'[' => o,
        Some(o) if first_byte(o) != b'n' => {
            return Err(not(
                "its `objects` is not a sequence (a JSON list) of objects".into(),
            ))
        }
        _ => return Err(not("it has no `objects` list".into())),
    };
    let mut count = 0usize;
    for_each_element(objects, |i, o| {
        if first_byte(o) != b'{' {
            return Err(format!("object {i} is not a JSON object"));
        }
        let [ty, id, spec_version] = members(o, ["type", "id", "spec_version"])?;
        let ty = match small_value(ty, "`type`")? {
            Value::String(t) if !t.is_empty() => t,
            _ => return Err(format!("object {i} has no `type`")),
        };
        let id = small_value(id, "`id`")?;
        let ok_id = matches!(&id, Value::String(id)
            if id.strip_prefix(ty.as_str()).and_then(|r| r.strip_prefix("--")).is_some_and(is_uuid));
        if !ok_id {
            return Err(format!(
                "object {i} ({ty}) has id {}, not {ty}--<uuid>",
                shown(&id)
            ));
        }
        check_spec_version(&small_value(spec_version, "`spec_version`")?)
            .map_err(|v| format!("object {i} ({ty}) declares spec_version {v}"))?;
        count += 1;
        Ok(())
    })
    .map_err(not)?;
    Ok(BundleInfo { id, objects: count })
}

/// A value quoted in an error message, cut to 120 characters.
fn shown(v: &Value) -> String {
    let mut text = v.to_string();
    if let Some((at, _)) = text.char_indices().nth(120) {
        text.truncate(at);
        text.push_str("...");
    }
    text
}

fn check_spec_version(v: &Value) -> Result<(), String> {
    match v {
        Value::Null => Ok(()),
        Value::String(s) if s == "2.1" => Ok(()),
        other => Err(shown(other)),
    }
}

fn same_content(path: &Path, hash: &blake3::Hash) -> io::Result<bool> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Ok(false);
    }
    let mut hasher = blake3::Hasher::new();
    hasher.update_reader(File::open(path)?)?;
    Ok(hasher.finalize() == *hash)
}

impl StixStore {
    /// A store in `dir`; the directory is created on first delivery.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StixStore {
            dir: dir.into(),
            publish: Publish::default(),
        }
    }

    /// The same store, publishing bundles with `publish`'s modes and group.
    pub fn with_publish(mut self, publish: Publish) -> Self {
        self.publish = publish;
        self
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks and stores one bundle; returns where it is.
    pub fn deliver_bundle(&self, json: &[u8]) -> Result<PathBuf, StixError> {
        self.store_bundle(json).map(|s| s.path)
    }

    /// Checks and stores one bundle; says where and whether it was already there.
    pub fn store_bundle(&self, json: &[u8]) -> Result<StoredBundle, StixError> {
        let info = validate_bundle(json)?;
        let dir = &self.dir;
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        let hash = blake3::hash(json);
        let stored = |path: PathBuf, already_stored: bool| StoredBundle {
            path,
            bundle_id: info.id.clone(),
            objects: info.objects,
            already_stored,
        };

        let plain = dir.join(format!("{}.json", info.id));
        match fs::symlink_metadata(&plain) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let staged = stage_in(dir, &self.publish).map_err(io_err(dir))?;
                staged
                    .as_file()
                    .write_all(json)
                    .and_then(|()| staged.as_file().sync_all())
                    .map_err(io_err(staged.path()))?;
                match staged.persist_noclobber(&plain) {
                    Ok(_) => {
                        sync_dir(dir).map_err(io_err(dir))?;
                        return Ok(stored(plain, false));
                    }
                    Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(io_err(&plain)(e.error)),
                }
            }
            Err(e) => return Err(io_err(&plain)(e)),
            Ok(_) => {}
        }
        if same_content(&plain, &hash).map_err(io_err(&plain))? {
            return Ok(stored(plain, true));
        }

        let short = &hex(hash.as_bytes())[..32];
        let alt = dir.join(format!("{}.{short}.json", info.id));
        match same_content(&alt, &hash) {
            Ok(true) => return Ok(stored(alt, true)),
            Ok(false) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&alt)(e)),
        }
        write_atomic(&alt, json, &self.publish).map_err(io_err(&alt))?;
        Ok(stored(alt, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_upper_case_bundle_id_names_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = StixStore::new(dir.path());
        let lower = "bundle--5a0a9aa9-23a4-4607-b6df-41a9950d210f";
        let bundle = |id: &str| {
            serde_json::json!({
                "type": "bundle",
                "id": id,
                "objects": [{
                    "type": "indicator",
                    "spec_version": "2.1",
                    "id": "indicator--11111111-1111-4111-8111-111111111111",
                }],
            })
            .to_string()
            .into_bytes()
        };
        let upper = format!("bundle--{}", lower["bundle--".len()..].to_ascii_uppercase());
        let first = store.store_bundle(&bundle(&upper)).unwrap();
        assert_eq!(first.bundle_id, lower);
        assert_eq!(first.path, dir.path().join(format!("{lower}.json")));
        // The same id in lower case with other bytes: beside it, under the same id.
        let second = store.store_bundle(&bundle(lower)).unwrap();
        assert_eq!(second.bundle_id, lower);
        assert!(second
            .path
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(&format!("{lower}.")));
    }
}
