//! The STIX store against the real bundles under realdata/stix21/ and realdata/stix20/.

use gapferry_feeds::stix_store::validate_bundle;
use gapferry_feeds::{OpenCtiImport, StixError, StixLayout, StixSpec, StixStore};
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            json_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "json") {
            out.push(p);
        }
    }
}

/// Every JSON file under stix21/, split into bundles and the rest.
fn stix_files() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut all = Vec::new();
    json_files(&realdata().join("stix21"), &mut all);
    all.sort();
    all.into_iter().partition(|p| {
        let v: Value = serde_json::from_slice(&fs::read(p).unwrap()).unwrap();
        v["type"] == "bundle"
    })
}

fn file_count(dir: &Path) -> usize {
    fs::read_dir(dir).unwrap().count()
}

/// The two OASIS examples that share one bundle id both survive; their original bytes.
fn shared_id_twins_both_survive(store: &StixStore) -> [Vec<u8>; 2] {
    let shared = "bundle--44af6c39-c09b-49c5-9de2-394224b04982";
    let mut twins: Vec<String> = fs::read_dir(store.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(shared))
        .collect();
    twins.sort();
    assert_eq!(twins.len(), 2, "{twins:?}");
    assert!(twins.contains(&format!("{shared}.json")), "{twins:?}");
    let originals = [
        fs::read(realdata().join("stix21/oasis-examples/indicator-for-c2-ip-address.json"))
            .unwrap(),
        fs::read(realdata().join("stix21/oasis-examples/indicator-to-campaign-relationship.json"))
            .unwrap(),
    ];
    for t in &twins {
        let content = fs::read(store.dir().join(t)).unwrap();
        assert!(
            originals.contains(&content),
            "{t} holds one of the two bundles"
        );
    }
    originals
}

#[test]
fn every_real_bundle_is_stored_once_and_none_is_overwritten() {
    let (bundles, others) = stix_files();
    assert_eq!(bundles.len(), 13, "bundles under realdata/stix21");
    assert_eq!(others.len(), 3, "non-bundles under realdata/stix21");
    let tmp = tempfile::tempdir().unwrap();
    let store = StixStore::new(tmp.path().join("stix"));

    let mut stored = Vec::new();
    for b in &bundles {
        let bytes = fs::read(b).unwrap();
        let s = store.store_bundle(&bytes).unwrap();
        assert!(!s.already_stored, "{}", b.display());
        assert_eq!(
            fs::read(&s.path).unwrap(),
            bytes,
            "{} stored verbatim",
            b.display()
        );
        let name = s.path.file_name().unwrap().to_str().unwrap().to_string();
        assert!(
            name.starts_with(&s.bundle_id),
            "{name} named after {}",
            s.bundle_id
        );
        stored.push(s.path);
    }
    stored.sort();
    stored.dedup();
    assert_eq!(stored.len(), bundles.len(), "no two bundles share a file");
    assert_eq!(
        file_count(store.dir()),
        bundles.len(),
        "nothing else left behind"
    );

    let originals = shared_id_twins_both_survive(&store);

    // Delivering everything again stores nothing new.
    for b in &bundles {
        let s = store.store_bundle(&fs::read(b).unwrap()).unwrap();
        assert!(s.already_stored, "{}", b.display());
    }
    assert_eq!(file_count(store.dir()), bundles.len());

    // deliver_bundle gives the same path for the same bundle.
    let p1 = store.deliver_bundle(&originals[1]).unwrap();
    let p2 = store.deliver_bundle(&originals[1]).unwrap();
    assert_eq!(p1, p2);

    for o in &others {
        let err = store.deliver_bundle(&fs::read(o).unwrap()).unwrap_err();
        assert!(
            matches!(err, StixError::NotABundle(_)),
            "{}: {err}",
            o.display()
        );
    }
    assert_eq!(file_count(store.dir()), bundles.len());
}

#[test]
fn non_bundles_are_refused_with_a_reason() {
    let ok = json!({
        "type": "bundle",
        "id": "bundle--5d0092c5-5f74-4287-9642-33f4c354e56d",
        "objects": [{
            "type": "indicator", "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f"
        }]
    });
    assert_eq!(
        validate_bundle(ok.to_string().as_bytes()).unwrap().objects,
        1
    );
    let mutate = |f: &dyn Fn(&mut Value)| {
        let mut v = ok.clone();
        f(&mut v);
        v.to_string().into_bytes()
    };
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"garbage".to_vec(), "not valid JSON"),
        (b"[1, 2]".to_vec(), "not a JSON object"),
        (mutate(&|v| v["type"] = json!("report")), "not \"bundle\""),
        (
            mutate(&|v| v["id"] = json!("bundle--1234")),
            "bundle--<uuid>",
        ),
        (
            mutate(&|v| v["id"] = json!("bundle--../../etc/passwd")),
            "bundle--<uuid>",
        ),
        (
            mutate(&|v| v["spec_version"] = json!("2.0")),
            "spec_version",
        ),
        (
            mutate(&|v| v["objects"][0]["spec_version"] = json!("2.0")),
            "spec_version",
        ),
        (
            mutate(&|v| {
                v["objects"][0]["id"] = json!("malware--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f")
            }),
            "indicator--<uuid>",
        ),
        (
            mutate(&|v| {
                v.as_object_mut().unwrap().remove("objects");
            }),
            "objects",
        ),
        (mutate(&|v| v["objects"] = json!({"a": 1})), "sequence"),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let store = StixStore::new(tmp.path().join("stix"));
    for (bytes, want) in cases {
        let err = store.deliver_bundle(&bytes).unwrap_err().to_string();
        assert!(err.contains(want), "expected {want:?} in {err:?}");
    }
    assert!(!store.dir().exists() || file_count(store.dir()) == 0);
}

#[test]
fn a_planted_symlink_is_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stix");
    fs::create_dir(&dir).unwrap();
    let outside = tmp.path().join("outside.txt");
    fs::write(&outside, b"precious").unwrap();
    let bundle = fs::read(realdata().join("stix21/oasis-examples/infrastructure.json")).unwrap();
    let id = validate_bundle(&bundle).unwrap().id;
    std::os::unix::fs::symlink(&outside, dir.join(format!("{id}.json"))).unwrap();
    let store = StixStore::new(&dir);
    let p = store.deliver_bundle(&bundle).unwrap();
    assert_ne!(p, dir.join(format!("{id}.json")));
    assert_eq!(fs::read(&p).unwrap(), bundle);
    assert_eq!(fs::read(&outside).unwrap(), b"precious");
}

#[test]
fn real_stix_2_0_bundles_are_stored_by_bundle_id() {
    let mut files = Vec::new();
    json_files(&realdata().join("stix20"), &mut files);
    files.sort();
    assert_eq!(files.len(), 3, "bundles under realdata/stix20");
    let tmp = tempfile::tempdir().unwrap();
    let store = StixStore::new(tmp.path().join("stix"));
    for f in &files {
        let bytes = fs::read(f).unwrap();
        let info = validate_bundle(&bytes).unwrap();
        assert_eq!(info.spec, StixSpec::V20, "{}", f.display());
        let stored = store.store_bundle(&bytes).unwrap();
        assert_eq!(
            stored.path,
            store.dir().join(format!("{}.json", info.id)),
            "{}",
            f.display()
        );
        assert_eq!(fs::read(&stored.path).unwrap(), bytes);
    }
    // A 2.0 bundle whose objects declare a version, 2.1 or 2.0, is neither.
    let one = fs::read(&files[0]).unwrap();
    for v in ["2.1", "2.0"] {
        let mut doc: Value = serde_json::from_slice(&one).unwrap();
        doc["objects"][1]["spec_version"] = json!(v);
        let err = validate_bundle(doc.to_string().as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("object 1") && err.to_string().contains("STIX 2.0"),
            "{err}"
        );
    }
    let mut doc: Value = serde_json::from_slice(&one).unwrap();
    doc["spec_version"] = json!("2.2");
    let err = validate_bundle(doc.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("neither 2.0 nor 2.1"), "{err}");
}

#[test]
fn the_opencti_layout_wraps_the_bundle_for_the_diode_import_connector() {
    let bundle = fs::read(realdata().join("stix21/oasis-examples/infrastructure.json")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let import = OpenCtiImport {
        applicant_id: "user-on-the-low-side".into(),
        ..OpenCtiImport::default()
    };
    let store = StixStore::new(tmp.path().join("stix")).with_layout(StixLayout::OpenCti(import));
    let before = std::time::SystemTime::now() - std::time::Duration::from_secs(1);
    let stored = store.store_bundle(&bundle).unwrap();
    let file: Value = serde_json::from_slice(&fs::read(&stored.path).unwrap()).unwrap();
    let original: Value = serde_json::from_slice(&bundle).unwrap();
    assert_eq!(file["bundle"], original);
    assert_eq!(file["applicant_id"], "user-on-the-low-side");
    assert_eq!(
        file["connector"]["id"],
        gapferry_feeds::stix_store::DEFAULT_OPENCTI_CONNECTOR_ID
    );
    for key in ["name", "type", "scope"] {
        assert!(file["connector"][key].is_string(), "connector.{key}");
    }
    assert!(fs::metadata(&stored.path).unwrap().modified().unwrap() >= before);
    // The same bundle again: stored once.
    assert!(store.store_bundle(&bundle).unwrap().already_stored);
    // A bad connector id is refused.
    assert!(OpenCtiImport::default()
        .with_connector_id("not-a-uuid")
        .is_err());
}
