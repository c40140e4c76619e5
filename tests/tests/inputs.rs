//! Inputs named more than once on `gapferry-send file`, with the real binaries on loopback:
//! an image and its signature both named (as `images/*` expands), a directory and a file
//! inside it, the same file twice, a glob-like list; each object is sent and delivered
//! once. Two different files that would arrive under one name fail before anything is sent.

use gapferry_tests::harness::{binary, with_outcome, TestReceiver};
use gapferry_tests::lxd::signed_image;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn send_cli(paths: &[&Path], to: std::net::SocketAddr) -> Output {
    Command::new(binary("gapferry-send"))
        .arg("file")
        .args(paths)
        .args(["--to", &to.to_string(), "--rate", "400M", "--quiet"])
        .output()
        .expect("run gapferry-send")
}

fn sent(paths: &[&Path], to: std::net::SocketAddr) {
    let out = send_cli(paths, to);
    assert!(
        out.status.success(),
        "gapferry-send {paths:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits for `n` records, then until no more arrive for a second; returns them all.
fn settled_records(rx: &TestReceiver, n: usize) -> Vec<Value> {
    let mut records = rx.wait_records(n, Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = rx.records();
        if now.len() == records.len() || Instant::now() > deadline {
            return now;
        }
        records = now;
    }
}

/// For each object name: the distinct objects (session, object id) the receiver heard of.
fn objects_per_name(records: &[Value]) -> BTreeMap<String, BTreeSet<(String, u64)>> {
    let mut m: BTreeMap<String, BTreeSet<(String, u64)>> = BTreeMap::new();
    for r in records {
        let name = r["name"].as_str().unwrap_or("<unnamed>").to_string();
        let id = (
            r["session"].to_string(),
            r["object"].as_u64().unwrap_or(u64::MAX),
        );
        m.entry(name).or_default().insert(id);
    }
    m
}

/// Every record is a delivery, and each name in `expected` was sent and delivered exactly once.
fn assert_each_once(records: &[Value], expected: &[&str]) {
    assert_eq!(
        with_outcome(records, "delivered").len(),
        records.len(),
        "{records:#?}"
    );
    let per_name = objects_per_name(records);
    let names: BTreeSet<&str> = per_name.keys().map(String::as_str).collect();
    assert_eq!(names, expected.iter().copied().collect(), "{records:#?}");
    for (name, objects) in &per_name {
        assert_eq!(
            objects.len(),
            1,
            "{name} sent {} times: {records:#?}",
            objects.len()
        );
    }
    assert_eq!(records.len(), expected.len(), "{records:#?}");
}

#[test]
fn an_image_named_with_its_signature_is_sent_once_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let stem = "MISP_v2.5.1_abc";
    let (img, sig) = signed_image(dir.path(), stem, 256 << 10, 1);
    for (i, order) in [[&img, &sig], [&sig, &img]].into_iter().enumerate() {
        let rx = TestReceiver::start(|_| {});
        sent(&[order[0], order[1]], rx.addr);
        let records = settled_records(&rx, 2);
        assert_each_once(
            &records,
            &[&format!("{stem}.tar.gz"), &format!("{stem}.tar.gz.sig")],
        );
        let stored = rx.out.join("images").join(stem);
        assert_eq!(
            std::fs::read(stored.join(format!("{stem}.tar.gz"))).unwrap(),
            std::fs::read(&img).unwrap(),
            "order {i}"
        );
        assert_eq!(
            std::fs::read(stored.join(format!("{stem}.tar.gz.sig"))).unwrap(),
            std::fs::read(&sig).unwrap(),
            "order {i}: the signature is stored beside its image"
        );
    }
}

#[test]
fn a_directory_and_a_file_inside_it_and_a_file_named_twice_are_sent_once() {
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("dir");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.json"), br#"{"a":1}"#).unwrap();
    std::fs::write(tree.join("sub/b.bin"), b"bbbb").unwrap();

    let rx = TestReceiver::start(|_| {});
    sent(&[&tree, &tree.join("a.json")], rx.addr);
    assert_each_once(&settled_records(&rx, 2), &["a.json", "sub/b.bin"]);
    drop(rx);

    // The file inside named first: the directory's name for it wins.
    let rx = TestReceiver::start(|_| {});
    sent(&[&tree.join("sub/b.bin"), &tree], rx.addr);
    assert_each_once(&settled_records(&rx, 2), &["a.json", "sub/b.bin"]);
    assert_eq!(
        std::fs::read(rx.files_dir().join("sub/b.bin")).unwrap(),
        b"bbbb"
    );
    assert!(!rx.files_dir().join("b.bin").exists());
    drop(rx);

    let rx = TestReceiver::start(|_| {});
    let a = tree.join("a.json");
    sent(&[&a, &a], rx.addr);
    assert_each_once(&settled_records(&rx, 1), &["a.json"]);
    assert_eq!(
        std::fs::read(rx.files_dir().join("a.json")).unwrap(),
        br#"{"a":1}"#
    );
}

#[test]
fn a_glob_like_list_of_images_and_signatures_delivers_each_once() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir(&images).unwrap();
    signed_image(&images, "MISP_v2.5.1_abc", 128 << 10, 1);
    signed_image(&images, "MySQL_10.11.2_def", 64 << 10, 2);
    std::fs::write(images.join("README.txt"), b"what these are\n").unwrap();
    // What the shell makes of `images/*`: every entry, sorted.
    let mut glob: Vec<PathBuf> = std::fs::read_dir(&images)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    glob.sort();
    assert_eq!(glob.len(), 5);
    let rx = TestReceiver::start(|_| {});
    let paths: Vec<&Path> = glob.iter().map(PathBuf::as_path).collect();
    sent(&paths, rx.addr);
    let records = settled_records(&rx, 5);
    assert_each_once(
        &records,
        &[
            "MISP_v2.5.1_abc.tar.gz",
            "MISP_v2.5.1_abc.tar.gz.sig",
            "MySQL_10.11.2_def.tar.gz",
            "MySQL_10.11.2_def.tar.gz.sig",
            "README.txt",
        ],
    );
    for stem in ["MISP_v2.5.1_abc", "MySQL_10.11.2_def"] {
        let sig = rx
            .out
            .join("images")
            .join(stem)
            .join(format!("{stem}.tar.gz.sig"));
        assert_eq!(
            std::fs::read_to_string(&sig).unwrap(),
            format!("signature of {stem}\n")
        );
    }
    assert!(rx.files_dir().join("README.txt").is_file());
}

#[test]
fn two_different_files_under_one_name_fail_before_anything_is_sent() {
    let src = tempfile::tempdir().unwrap();
    let (one, two) = (src.path().join("one"), src.path().join("two"));
    for (d, content) in [(&one, "1"), (&two, "2")] {
        std::fs::create_dir(d).unwrap();
        std::fs::write(d.join("a.json"), content).unwrap();
    }
    let rx = TestReceiver::start(|_| {});
    let out = send_cli(&[&one.join("a.json"), &two.join("a.json")], rx.addr);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("\"a.json\""), "{err}");
    assert!(
        err.contains(&one.join("a.json").display().to_string()),
        "{err}"
    );
    assert!(
        err.contains(&two.join("a.json").display().to_string()),
        "{err}"
    );
    assert!(err.contains("rename one"), "{err}");
    // A directory whose tree holds a different a.json than the one named beside it.
    let out = send_cli(&[&one, &two.join("a.json")], rx.addr);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("two different files"));
    std::thread::sleep(Duration::from_secs(1));
    assert!(rx.records().is_empty(), "{:#?}", rx.records());
}
