//! The sender's feed form of the real PyMISP and MISP test events against PyMISP's own
//! `MISPEvent.to_feed()` (run through `target/pyvenv/bin/python`), key by key and key
//! order included, then byte for byte against `json.dumps` of it. An event PyMISP refuses
//! to load or export must be refused too.

use gapferry_feeds::misp_to_feed::{to_feed, FeedForm, ObjectTemplates};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

fn realdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/realdata")
}

/// The Python with PyMISP that `.ci/run` installs; `None` (with the reason printed) when
/// it is missing outside CI.
fn python() -> Option<PathBuf> {
    let p = std::env::var_os("GAPFERRY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pyvenv/bin/python")
        });
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{} missing: .ci/run installs PyMISP there",
        p.display()
    );
    eprintln!(
        "skipping: {} missing (run .ci/run or set GAPFERRY_PYTHON)",
        p.display()
    );
    None
}

fn events() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["misp-events/pymisp-tests", "misp-events/misp-core-tests"] {
        for e in std::fs::read_dir(realdata().join(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "json") {
                v.push(p);
            }
        }
    }
    v.sort();
    assert_eq!(v.len(), 9, "realdata holds 8 PyMISP and 1 MISP test events");
    v
}

const SCRIPT: &str = r#"
import sys, json
from pymisp import MISPEvent
for p in sys.argv[1:]:
    try:
        e = MISPEvent()
        e.load_file(p)
        f = e.to_feed()
        print(json.dumps({"path": p, "text": json.dumps(f)}))
    except Exception as ex:
        print(json.dumps({"path": p, "refused": type(ex).__name__ + ": " + str(ex)}))
"#;

/// The first path where `a` and `b` differ, in values or in key order.
fn first_difference(path: &str, a: &Value, b: &Value) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<&String> = x.keys().collect();
            let ky: Vec<&String> = y.keys().collect();
            for k in &kx {
                if !y.contains_key(*k) {
                    return Some(format!("{path}.{k}: only in ours ({})", x[*k]));
                }
            }
            for k in &ky {
                if !x.contains_key(*k) {
                    return Some(format!("{path}.{k}: only in PyMISP's ({})", y[*k]));
                }
            }
            for k in kx {
                if let Some(d) = first_difference(&format!("{path}.{k}"), &x[k], &y[k]) {
                    return Some(d);
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            if x.len() != y.len() {
                return Some(format!(
                    "{path}: {} elements in ours, {} in PyMISP's",
                    x.len(),
                    y.len()
                ));
            }
            x.iter()
                .zip(y)
                .enumerate()
                .find_map(|(i, (p, q))| first_difference(&format!("{path}[{i}]"), p, q))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: ours {a}, PyMISP's {b}")),
    }
}

/// Key order of every object, depth first, as written in the text.
fn key_order(text: &str) -> Vec<String> {
    // serde_json without preserve_order sorts keys: read the order from the text.
    let mut out = Vec::new();
    let mut de = serde_json::Deserializer::from_str(text).into_iter::<serde::de::IgnoredAny>();
    let _ = de.next();
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut in_str = false;
    let mut start = 0;
    while i < bytes.len() {
        match (in_str, bytes[i]) {
            (false, b'"') => {
                in_str = true;
                start = i;
            }
            (true, b'\\') => i += 1,
            (true, b'"') => {
                in_str = false;
                let rest = text[i + 1..].trim_start();
                if rest.starts_with(':') {
                    out.push(text[start..=i].to_string());
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// PyMISP's answer for each file: `{"text": ...}` or `{"refused": ...}`.
fn pymisp_answers(py: &Path, files: &[PathBuf]) -> Vec<Value> {
    let out = Command::new(py)
        .arg("-c")
        .arg(SCRIPT)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyMISP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(answers.len(), files.len());
    answers
}

/// The feed form with PyMISP's own object templates, as the sender's
/// --misp-object-templates would name them.
fn pymisp_form() -> FeedForm {
    let templates = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/pyvenv/lib")
        .read_dir()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .join("site-packages/pymisp/data/misp-objects/objects")
        })
        .find(|p| p.is_dir())
        .expect("PyMISP's misp-objects templates");
    let form = FeedForm {
        object_templates: ObjectTemplates::load(&templates).unwrap(),
        ..FeedForm::default()
    };
    assert!(form.object_templates.0.len() > 100);
    form
}

/// PyMISP's text with our reference uuids: PyMISP loads an object's references before
/// its uuid, so a reference without `object_uuid` gets a random one there; the sender
/// names the object's own uuid (checked here).
fn with_our_reference_uuids(file: &Path, source: &[u8], ours: &Value, theirs: &str) -> String {
    let mut theirs_text = theirs.to_string();
    let original: Value = serde_json::from_slice(source).unwrap();
    let b: Value = serde_json::from_str(theirs).unwrap();
    for (i, ob) in original["Event"]["Object"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for (j, r) in ob["ObjectReference"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if r.get("object_uuid").is_some() {
                continue;
            }
            let ours_ref = &ours["Event"]["Object"][i]["ObjectReference"][j]["object_uuid"];
            let theirs_ref = &b["Event"]["Object"][i]["ObjectReference"][j]["object_uuid"];
            assert_eq!(
                ours_ref,
                &ob["uuid"],
                "{}: object {i} reference {j}",
                file.display()
            );
            assert!(
                !String::from_utf8_lossy(source).contains(theirs_ref.as_str().unwrap()),
                "PyMISP's is a fresh uuid"
            );
            theirs_text =
                theirs_text.replace(theirs_ref.as_str().unwrap(), ours_ref.as_str().unwrap());
        }
    }
    theirs_text
}

/// Our feed form of `file` against PyMISP's: values, key order, then the text.
fn assert_same_text(file: &Path, bytes: &[u8], ours: Vec<u8>, theirs: &str) {
    let ours_text = String::from_utf8(ours).unwrap();
    let a: Value = serde_json::from_str(&ours_text).unwrap();
    let theirs_text = with_our_reference_uuids(file, bytes, &a, theirs);
    let theirs_text = theirs_text.as_str();
    let b: Value = serde_json::from_str(theirs_text).unwrap();
    if let Some(d) = first_difference("", &a, &b) {
        panic!("{}: first difference at {d}", file.display());
    }
    assert_eq!(
        key_order(&ours_text),
        key_order(theirs_text),
        "{}: key order",
        file.display()
    );
    assert_eq!(ours_text, theirs_text, "{}: text", file.display());
}

#[test]
fn the_feed_form_of_the_real_test_events_equals_pymisp_to_feed() {
    let Some(py) = python() else { return };
    let files = events();
    let answers = pymisp_answers(&py, &files);
    let form = pymisp_form();
    let mut compared = 0;
    for (file, answer) in files.iter().zip(&answers) {
        let bytes = std::fs::read(file).unwrap();
        let docs = gapferry_feeds::split_misp(&bytes);
        let ours = docs.map_err(|e| e.to_string()).and_then(|d| {
            assert_eq!(d.len(), 1, "{}", file.display());
            to_feed(&d[0].json, &form, SystemTime::now()).map_err(|e| e.to_string())
        });
        if let Some(reason) = answer.get("refused") {
            assert!(
                ours.is_err(),
                "{}: PyMISP refuses it ({reason}), the sender must too",
                file.display()
            );
            continue;
        }
        let ours = ours
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .expect("default distributions export every event");
        assert_same_text(file, &bytes, ours, answer["text"].as_str().unwrap());
        compared += 1;
    }
    assert_eq!(compared, 8, "eight events PyMISP exports, compared");
}
