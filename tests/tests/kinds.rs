//! What the high side gets, per kind: the real Infoblox MISP events become a MISP local
//! feed equal to PyMISP's, the real STIX bundles land in `stix/`, an LXD image and its
//! signature land in MISP-airgap's image-store layout.

use gapferry_tests::harness::{binary, with_outcome, TestReceiver};
use gapferry_tests::lxd::lxd_image;
use gapferry_tests::realdata::{assert_feed_matches_infoblox_reference, infoblox_events, realdata};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn send_cli(paths: &[&Path], to: std::net::SocketAddr, extra: &[&str]) {
    let mut cmd = Command::new(binary("gapferry-send"));
    cmd.arg("file")
        .args(paths)
        .args(["--to", &to.to_string(), "--rate", "400M", "--quiet"])
        .args(extra);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn infoblox_events_as_files_as_a_directory_and_as_a_rest_export_build_the_reference_feed() {
    let events = infoblox_events();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("rest-export.json");
    let docs: Vec<Value> = events
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    std::fs::write(
        &export,
        serde_json::to_vec(&serde_json::json!({ "response": docs })).unwrap(),
    )
    .unwrap();
    let feed_dir = realdata().join("misp-feed/infoblox");
    let as_files: Vec<&Path> = events.iter().map(PathBuf::as_path).collect();
    for (how, paths) in [
        ("files", as_files),
        ("directory", vec![feed_dir.as_path()]),
        ("export", vec![export.as_path()]),
    ] {
        let rx = TestReceiver::start(|_| {});
        send_cli(&paths, rx.addr, &[]);
        let records = rx.wait_records(41, Duration::from_secs(60));
        assert_eq!(
            with_outcome(&records, "delivered").len(),
            41,
            "{how}: {records:#?}"
        );
        assert!(records.iter().all(|r| r["kind"] == "misp"), "{how}");
        assert_feed_matches_infoblox_reference(&rx.out.join("misp"));
        if how == "files" {
            pymisp_loads_every_event(&rx.out.join("misp"));
        }
    }
}

#[test]
fn a_non_bundle_sent_as_stix_or_as_misp_is_refused_by_the_sender_with_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.json");
    std::fs::write(&fake, br#"{"type":"report","id":"x"}"#).unwrap();
    let rx = TestReceiver::start(|_| {});
    for (kind, why) in [("stix", "STIX"), ("misp", "MISP")] {
        let out = Command::new(binary("gapferry-send"))
            .args(["file", fake.to_str().unwrap(), "--kind", kind, "--quiet"])
            .args(["--to", &rx.addr.to_string()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{kind}: {stderr}");
        assert!(
            stderr.contains(&fake.display().to_string()) && stderr.contains(why),
            "{kind}: {stderr}"
        );
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(rx.records().is_empty(), "{:#?}", rx.records());
    assert_eq!(std::fs::read_dir(rx.out.join("misp")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(rx.out.join("stix")).unwrap().count(), 0);
}

fn is_bundle(p: &Path) -> bool {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .is_some_and(|v| v["type"] == "bundle")
}

#[test]
fn real_stix_bundles_arrive_in_stix_and_validate() {
    let stix = realdata().join("stix21");
    let rx = TestReceiver::start(|_| {});
    send_cli(&[&stix], rx.addr, &[]);
    let bundles: Vec<PathBuf> = walk(&stix).into_iter().filter(|p| is_bundle(p)).collect();
    // Every object is recorded: wait until the record stops growing, then check.
    let mut records = rx.wait_records(bundles.len(), Duration::from_secs(60));
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = rx.records();
        if now.len() == records.len() {
            break;
        }
        records = now;
    }
    assert!(with_outcome(&records, "failed").is_empty(), "{records:#?}");
    let stored: Vec<PathBuf> = std::fs::read_dir(rx.out.join("stix"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(
        stored.len(),
        bundles.len(),
        "every bundle stored once, none overwritten: {stored:#?}"
    );
    assert_eq!(
        records.iter().filter(|r| r["kind"] == "stix").count(),
        bundles.len()
    );
    for b in &bundles {
        let content = std::fs::read(b).unwrap();
        assert!(
            stored.iter().any(|s| std::fs::read(s).unwrap() == content),
            "{} stored verbatim",
            b.display()
        );
    }
    stix_validates(&stored);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The Python with PyMISP and stix2-validator that `.ci/run` installs.
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
        "{} missing: .ci/run installs PyMISP and stix2-validator there",
        p.display()
    );
    eprintln!(
        "skipping the Python validators: {} missing (run .ci/run or set GAPFERRY_PYTHON)",
        p.display()
    );
    None
}

fn pymisp_loads_every_event(misp: &Path) {
    let Some(py) = python() else { return };
    let script = "import sys, glob\nfrom pymisp import MISPEvent\nn = 0\nfor p in glob.glob(sys.argv[1] + '/*-*-*-*-*.json'):\n    e = MISPEvent(); e.load_file(p); assert e.uuid in p, p; n += 1\nprint(n)\n";
    let out = Command::new(py)
        .args(["-c", script, misp.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "PyMISP: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "41");
}

fn stix_validates(files: &[PathBuf]) {
    let Some(py) = python() else { return };
    let script = "import sys\nfrom stix2validator import validate_file, ValidationOptions\nbad = [p for p in sys.argv[1:] if not validate_file(p, ValidationOptions(version='2.1')).is_valid]\nprint(bad)\nsys.exit(1 if bad else 0)\n";
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stix2-validator: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn lxd_images_with_signatures_land_in_the_image_store_layout() {
    use sha2::Digest;
    let dir = tempfile::tempdir().unwrap();
    let rx = TestReceiver::start(|_| {});
    let versions = [
        "MISP_v2.5.1_aaaa",
        "MISP_v2.5.2_bbbb",
        "MISP_v2.5.10_cccc",
        "MISP_v2.5.11_dddd",
    ];
    for (i, stem) in versions.iter().enumerate() {
        let img = dir.path().join(format!("{stem}.tar.gz"));
        // The first version is a few hundred MB; the others are small to keep the test quick.
        lxd_image(&img, if i == 0 { 200 << 20 } else { 1 << 20 }, i as u64);
        std::fs::write(
            dir.path().join(format!("{stem}.tar.gz.sig")),
            format!("signature of {stem}"),
        )
        .unwrap();
        send_cli(&[&img], rx.addr, &[]);
        let records = rx.wait_records(2 * (i + 1), Duration::from_secs(120));
        assert_eq!(
            with_outcome(&records, "delivered").len(),
            2 * (i + 1),
            "{records:#?}"
        );
        let stored = rx
            .out
            .join("images")
            .join(stem)
            .join(format!("{stem}.tar.gz"));
        let sums =
            std::fs::read_to_string(rx.out.join("images").join(stem).join("SHA256SUMS")).unwrap();
        let sha = hex(&sha2::Sha256::digest(std::fs::read(&img).unwrap()));
        assert!(sums.contains(&format!("{sha}  {stem}.tar.gz")), "{sums}");
        assert_eq!(
            std::fs::read(&stored).unwrap(),
            std::fs::read(&img).unwrap()
        );
        let sig =
            std::fs::read_to_string(stored.with_file_name(format!("{stem}.tar.gz.sig"))).unwrap();
        assert_eq!(sig, format!("signature of {stem}"));
        let latest = std::fs::read_link(rx.out.join("images/latest_MISP")).unwrap();
        assert!(latest.is_relative(), "{latest:?}");
        assert_eq!(latest, Path::new(stem), "the newest version so far");
        if let Ok(out) = Command::new("sha256sum").arg(&stored).output() {
            assert!(String::from_utf8_lossy(&out.stdout).starts_with(&sha));
        }
    }
    let kept: BTreeSet<String> = std::fs::read_dir(rx.out.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("latest_") && !n.starts_with('.'))
        .collect();
    assert_eq!(
        kept,
        versions[1..].iter().map(|s| s.to_string()).collect(),
        "the 3 newest are kept"
    );
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
