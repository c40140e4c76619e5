//! The high side's STIX directory: one file per bundle, named after its bundle id.
//!
//! Rules:
//! - a STIX 2.1 or 2.0 bundle is accepted (MISP's STIX parser takes both):
//!   `"type": "bundle"`, `"id": "bundle--<uuid>"`, an `objects` list whose members each
//!   have a `type` and an `id` of the form `<type>--<uuid>`; a 2.0 bundle declares
//!   `"spec_version": "2.0"` on the bundle and none on its objects, a 2.1 bundle declares
//!   none on the bundle (or `2.1`) and `2.1`, where present, on its objects; anything
//!   else is refused with its reason and nothing is written. The same check runs on the
//!   low side before anything is sent ([`validate_bundle`]);
//! - [`StixLayout::Plain`] stores the bundle's bytes as they crossed;
//!   [`StixLayout::OpenCti`] stores `{"connector": {...}, "applicant_id": "...",
//!   "bundle": <the bundle's bytes>}`, the file OpenCTI's diode-import connector reads
//!   from a directory, with the delivery time as its mtime (the connector skips files
//!   not newer than its last run);
//! - the file is `bundle--<uuid>.json`; when that name already holds *different* bytes
//!   (the OASIS examples ship two different bundles with one id), the newcomer is stored
//!   as `bundle--<uuid>.<first 32 hex digits of its blake3>.json`, so two different bundles
//!   never overwrite each other and the same bytes delivered twice are stored once;
//! - writes are atomic (staging file in the directory, fsync, rename or link, fsync of
//!   the directory); a symlink found under a bundle's name is never followed;
//! - bundles get the store's [`Publish`] file mode and group before their rename, the
//!   directory its directory mode when the store creates it.

use crate::fsutil::{ensure_real_dir, hex, is_uuid, stage_in, sync_dir, Publish, STAGE_PREFIX};
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
    /// Valid JSON that is not a STIX 2.0 or 2.1 bundle.
    #[error("not a STIX 2.0 or 2.1 bundle: {0}; nothing was written: send STIX bundles only, or send it as kind `file`")]
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
    /// The STIX version it follows.
    pub spec: StixSpec,
}

/// The STIX version of a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StixSpec {
    /// STIX 2.0: `spec_version` on the bundle.
    V20,
    /// STIX 2.1: `spec_version` on each object.
    V21,
}

impl StixSpec {
    /// `2.0` or `2.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            StixSpec::V20 => "2.0",
            StixSpec::V21 => "2.1",
        }
    }
}

/// How bundles are written into the STIX directory.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StixLayout {
    /// `bundle--<uuid>.json` holding the bundle as it crossed.
    #[default]
    Plain,
    /// `bundle--<uuid>.json` holding the file OpenCTI's diode-import connector reads.
    OpenCti(OpenCtiImport),
}

/// What the OpenCTI layout writes around each bundle: the connector the diode-import
/// connector registers and impersonates, and the applicant it maps to a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCtiImport {
    /// `connector.id`: a UUID, registered in OpenCTI by the diode-import connector.
    pub connector_id: String,
    /// `connector.name`, shown in OpenCTI's works.
    pub connector_name: String,
    /// `applicant_id`: matched against the connector's `applicant_mappings`.
    pub applicant_id: String,
}

/// The connector id written when none is configured (a fixed random UUID, so that
/// OpenCTI sees one connector across restarts).
pub const DEFAULT_OPENCTI_CONNECTOR_ID: &str = "6a1b7c0e-3f9d-4c2a-9e57-0d4b8f21c6e3";

impl Default for OpenCtiImport {
    fn default() -> Self {
        OpenCtiImport {
            connector_id: DEFAULT_OPENCTI_CONNECTOR_ID.into(),
            connector_name: "gapferry".into(),
            applicant_id: String::new(),
        }
    }
}

impl OpenCtiImport {
    /// The same import with `connector.id` set to `id`, which must be a UUID.
    pub fn with_connector_id(mut self, id: &str) -> Result<Self, String> {
        if !is_uuid(id) {
            return Err(format!(
                "{id:?} is not a UUID: OpenCTI registers the connector under it"
            ));
        }
        self.connector_id = id.to_ascii_lowercase();
        Ok(self)
    }

    /// The file the diode-import connector reads, around the bundle's bytes `bundle`
    /// (kept as they crossed, not re-serialised).
    pub fn wrap(&self, bundle: &[u8]) -> Vec<u8> {
        let connector = serde_json::json!({
            "id": self.connector_id,
            "name": self.connector_name,
            "type": "EXTERNAL_IMPORT",
            "scope": "stix2",
            "auto": false,
            "validate_before_import": false,
        });
        let head = serde_json::json!({
            "connector": connector,
            "applicant_id": self.applicant_id,
        })
        .to_string();
        let mut out = Vec::with_capacity(head.len() + bundle.len() + 16);
        out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
        out.extend_from_slice(b",\"bundle\":");
        out.extend_from_slice(bundle);
        out.push(b'}');
        out
    }
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

/// The STIX bundle directory.
#[derive(Debug, Clone)]
pub struct StixStore {
    dir: PathBuf,
    publish: Publish,
    layout: StixLayout,
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

/// Checks that `json` is a STIX 2.0 or 2.1 bundle. The bundle is walked object by object, never
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
    let (id, spec) = bundle_id_and_spec(&view).map_err(not)?;
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
        check_object(i, o, spec)?;
        count += 1;
        Ok(())
    })
    .map_err(not)?;
    Ok(BundleInfo {
        id,
        objects: count,
        spec,
    })
}

/// The bundle's `type` (must be `bundle`), its id in lower case and its spec version.
fn bundle_id_and_spec(view: &BundleView) -> Result<(String, StixSpec), String> {
    match small_value(view.ty, "`type`")? {
        Value::String(t) if t == "bundle" => {}
        Value::Null => return Err("it has no `type`".into()),
        other => return Err(format!("its type is {}, not \"bundle\"", shown(&other))),
    }
    let id = match small_value(view.id, "`id`")? {
        // Lower case: the same bundle id in upper case names the same file.
        Value::String(id) if id.strip_prefix("bundle--").is_some_and(is_uuid) => {
            id.to_ascii_lowercase()
        }
        Value::Null => return Err("it has no `id`".into()),
        other => return Err(format!("its id {} is not bundle--<uuid>", shown(&other))),
    };
    let spec = match small_value(view.spec_version, "`spec_version`")? {
        Value::Null => StixSpec::V21,
        Value::String(s) if s == "2.0" => StixSpec::V20,
        Value::String(s) if s == "2.1" => StixSpec::V21,
        other => {
            return Err(format!(
                "the bundle declares spec_version {}, neither 2.0 nor 2.1",
                shown(&other)
            ))
        }
    };
    Ok((id, spec))
}

/// Checks object `i` of a bundle of version `spec`: an object with a `type`, an id
/// `<type>--<uuid>` and no other spec version.
fn check_object(i: usize, o: &RawValue, spec: StixSpec) -> Result<(), String> {
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
    check_spec_version(spec, &small_value(spec_version, "`spec_version`")?).map_err(|v| {
        format!(
            "object {i} ({ty}) declares spec_version {v} in a STIX {} bundle",
            spec.as_str()
        )
    })
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

/// An object's `spec_version` in a bundle of `spec`: none in 2.0, none or `2.1` in 2.1.
fn check_spec_version(spec: StixSpec, v: &Value) -> Result<(), String> {
    match (spec, v) {
        (_, Value::Null) => Ok(()),
        (StixSpec::V21, Value::String(s)) if s == "2.1" => Ok(()),
        (_, other) => Err(shown(other)),
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
            layout: StixLayout::Plain,
        }
    }

    /// The same store, writing bundles in `layout`.
    pub fn with_layout(mut self, layout: StixLayout) -> Self {
        self.layout = layout;
        self
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

    /// Removes the staging files a previous run left in the directory (it stopped
    /// before its group's commit); call at start, before any bundle is staged. Returns
    /// how many were removed.
    pub fn remove_stale_staging(&self) -> io::Result<usize> {
        let rd = match fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut removed = 0;
        for entry in rd {
            let entry = entry?;
            let stale = entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGE_PREFIX);
            if stale && entry.file_type()?.is_file() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Checks and stores one bundle; returns where it is.
    pub fn deliver_bundle(&self, json: &[u8]) -> Result<PathBuf, StixError> {
        self.store_bundle(json).map(|s| s.path)
    }

    /// Checks and stores one bundle; says where and whether it was already there.
    pub fn store_bundle(&self, json: &[u8]) -> Result<StoredBundle, StixError> {
        match self.stage_bundle(json)? {
            Staging::Stored(stored) => Ok(stored),
            Staging::Staged(b) => self.publish_bundles(vec![b]).pop().expect("one result"),
        }
    }

    /// Checks a bundle and writes it to a staging file in the directory, invisible until
    /// [`StixStore::publish_bundles`]; when the same bytes are stored already, says where
    /// and writes nothing.
    pub fn stage_bundle(&self, json: &[u8]) -> Result<Staging, StixError> {
        let info = validate_bundle(json)?;
        let wrapped;
        let json = match &self.layout {
            StixLayout::Plain => json,
            StixLayout::OpenCti(import) => {
                wrapped = import.wrap(json);
                &wrapped[..]
            }
        };
        let dir = &self.dir;
        ensure_real_dir(dir, &self.publish).map_err(io_err(dir))?;
        let hash = blake3::hash(json);
        let plain = dir.join(format!("{}.json", info.id));
        let alt = dir.join(format!("{}.{}.json", info.id, &hex(hash.as_bytes())[..32]));
        if let Some(path) = self.holding(&plain, &alt, &hash)? {
            return Ok(Staging::Stored(stored(path, &info, true)));
        }
        let staged = stage_in(dir, &self.publish).map_err(io_err(dir))?;
        staged
            .as_file()
            .write_all(json)
            .map_err(io_err(staged.path()))?;
        Ok(Staging::Staged(StagedBundle {
            staged,
            info,
            hash,
            plain,
            alt,
        }))
    }

    /// Which of `plain` and `alt` already holds the bytes hashing to `hash`, if one does
    /// (a symlink under either name is never followed).
    fn holding(
        &self,
        plain: &Path,
        alt: &Path,
        hash: &blake3::Hash,
    ) -> Result<Option<PathBuf>, StixError> {
        for path in [plain, alt] {
            match same_content(path, hash) {
                Ok(true) => return Ok(Some(path.to_path_buf())),
                Ok(false) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(path)(e)),
            }
        }
        Ok(None)
    }

    /// Publishes staged bundles as one group: every one fsynced (and, in the OpenCTI
    /// layout, given the delivery time as its mtime), then each placed under its bundle
    /// id (or the name with its hash when the id holds other bytes, as
    /// [`StixStore::store_bundle`] would), then the directory fsynced once. One result per
    /// bundle, in order; a bundle whose fsync or rename failed is removed, a failed
    /// directory fsync fails every bundle the group wrote.
    pub fn publish_bundles(
        &self,
        bundles: Vec<StagedBundle>,
    ) -> Vec<Result<StoredBundle, StixError>> {
        let mut results: Vec<Result<StoredBundle, StixError>> = bundles
            .into_iter()
            .map(|b| {
                let f = b.staged.as_file();
                if self.layout != StixLayout::Plain {
                    // The diode-import connector takes files newer than its last run.
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                f.sync_all().map_err(io_err(b.staged.path()))?;
                self.place(b)
            })
            .collect();
        let wrote = results
            .iter()
            .any(|r| r.as_ref().is_ok_and(|s| !s.already_stored));
        if wrote {
            if let Err(e) = sync_dir(&self.dir) {
                for r in results
                    .iter_mut()
                    .filter(|r| r.as_ref().is_ok_and(|s| !s.already_stored))
                {
                    *r = Err(io_err(&self.dir)(io::Error::new(
                        e.kind(),
                        format!("fsync: {e}"),
                    )));
                }
            }
        }
        results
    }

    /// Renames a durable staged bundle under its id, unless that name holds other bytes
    /// (then under its hashed name), or drops it when its bytes are already there.
    fn place(&self, b: StagedBundle) -> Result<StoredBundle, StixError> {
        let StagedBundle {
            staged,
            info,
            hash,
            plain,
            alt,
        } = b;
        let staged = match staged.persist_noclobber(&plain) {
            Ok(_) => return Ok(stored(plain, &info, false)),
            Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => e.file,
            Err(e) => return Err(io_err(&plain)(e.error)),
        };
        // Another bundle of this id arrived first (in this group or before).
        if let Some(path) = self.holding(&plain, &alt, &hash)? {
            return Ok(stored(path, &info, true));
        }
        staged.persist(&alt).map_err(|e| io_err(&alt)(e.error))?;
        Ok(stored(alt, &info, false))
    }
}

/// A checked bundle in a staging file of the STIX directory, not visible yet.
#[derive(Debug)]
pub struct StagedBundle {
    staged: tempfile::NamedTempFile,
    info: BundleInfo,
    hash: blake3::Hash,
    plain: PathBuf,
    alt: PathBuf,
}

/// What [`StixStore::stage_bundle`] did with a bundle.
#[derive(Debug)]
pub enum Staging {
    /// The same bytes are already stored: nothing to publish.
    Stored(StoredBundle),
    /// Staged, waiting for [`StixStore::publish_bundles`].
    Staged(StagedBundle),
}

/// The [`StoredBundle`] of `info` at `path`.
fn stored(path: PathBuf, info: &BundleInfo, already_stored: bool) -> StoredBundle {
    StoredBundle {
        path,
        bundle_id: info.id.clone(),
        objects: info.objects,
        already_stored,
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
