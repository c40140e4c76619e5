//! STIX for its consumers, end to end: a real STIX 2.0 bundle is delivered by bundle id;
//! what the high side would refuse as kind `stix` stops the sender before a datagram
//! leaves; `[stix] layout = "opencti"` writes files OpenCTI's diode-import connector reads.

use gapferry_feeds::{OpenCtiImport, StixLayout};
use gapferry_tests::harness::{binary, with_outcome, TestReceiver};
use gapferry_tests::realdata::realdata;
use serde_json::Value;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

fn send(paths: &[&Path], to: std::net::SocketAddr, extra: &[&str]) -> Output {
    Command::new(binary("gapferry-send"))
        .arg("file")
        .args(paths)
        .args(["--to", &to.to_string(), "--rate", "400M", "--quiet"])
        .args(extra)
        .output()
        .unwrap()
}

fn stix20_bundles() -> Vec<PathBuf> {
    let dir = realdata().join("stix20/misp-stix-tests");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    v.sort();
    assert_eq!(v.len(), 3, "realdata holds three STIX 2.0 bundles");
    v
}

#[test]
fn real_stix_2_0_bundles_are_delivered_by_bundle_id() {
    let bundles = stix20_bundles();
    let rx = TestReceiver::start(|_| {});
    // Detected from content, and forced.
    let first: Vec<&Path> = bundles[..2].iter().map(PathBuf::as_path).collect();
    let out = send(&first, rx.addr, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = send(&[&bundles[2]], rx.addr, &["--kind", "stix"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = rx.wait_records(3, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 3, "{records:#?}");
    for b in &bundles {
        let bytes = std::fs::read(b).unwrap();
        let id = serde_json::from_slice::<Value>(&bytes).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        let stored = rx.out.join("stix").join(format!("{id}.json"));
        assert_eq!(std::fs::read(&stored).unwrap(), bytes, "{}", b.display());
    }
}

/// Runs the sender at a bound socket that counts every datagram it gets.
fn sent_datagrams(path: &Path, extra: &[&str]) -> (Output, usize) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let out = send(&[path], sock.local_addr().unwrap(), extra);
    let mut buf = [0u8; 65536];
    let mut n = 0;
    while sock.recv(&mut buf).is_ok() {
        n += 1;
    }
    (out, n)
}

#[test]
fn a_non_bundle_sent_as_stix_stops_the_sender_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    std::fs::write(
        &report,
        br#"{"type":"report","id":"report--5d0092c5-5f74-4287-9642-33f4c354e56d"}"#,
    )
    .unwrap();
    let (out, datagrams) = sent_datagrams(&report, &["--kind", "stix"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&report.display().to_string()) && stderr.contains("not \"bundle\""),
        "{stderr}"
    );
    assert_eq!(datagrams, 0, "nothing may leave the low side");
    // The control: the same sender and socket do see a valid 2.0 bundle's datagrams.
    let (out, datagrams) = sent_datagrams(&stix20_bundles()[0], &["--kind", "stix"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(datagrams > 0);
}

/// Reads the STIX directory the way the diode-import connector does
/// (`_process_directory`, `_process_bundle`): `*.json`, oldest mtime first, those newer
/// than the last run only, each parsed for `connector`, `applicant_id` and `bundle`.
fn diode_import_reads(dir: &Path, last_run: SystemTime) -> Vec<(SystemTime, Value)> {
    let mut files: Vec<(SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| (std::fs::metadata(&p).unwrap().modified().unwrap(), p))
        .collect();
    files.sort();
    files
        .into_iter()
        .filter(|(t, _)| *t > last_run)
        .map(|(t, p)| {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            let connector = &v["connector"];
            assert!(connector.is_object(), "{}: no connector", p.display());
            assert!(
                !v["applicant_id"].is_null(),
                "{}: no applicant_id",
                p.display()
            );
            for key in ["id", "name", "type", "scope"] {
                assert!(
                    connector[key].is_string(),
                    "{}: connector.{key}",
                    p.display()
                );
            }
            assert!(connector["auto"].is_boolean());
            (t, v["bundle"].clone())
        })
        .collect()
}

#[test]
fn the_opencti_layout_is_what_the_diode_import_connector_reads() {
    let import = OpenCtiImport {
        applicant_id: "low-side".into(),
        ..OpenCtiImport::default()
    }
    .with_connector_id("0e7d3a52-8c1b-4f6e-9a2d-5b4c3e2f1a09")
    .unwrap();
    let rx = TestReceiver::start(|c| {
        c.destinations.stix_layout = StixLayout::OpenCti(import);
    });
    let before = SystemTime::now() - Duration::from_secs(1);
    let bundle21 = realdata().join("stix21/oasis-examples/infrastructure.json");
    let bundle20 = stix20_bundles()[0].clone();
    let out = send(&[&bundle21, &bundle20], rx.addr, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let records = rx.wait_records(2, Duration::from_secs(30));
    assert_eq!(with_outcome(&records, "delivered").len(), 2, "{records:#?}");
    let read = diode_import_reads(&rx.out.join("stix"), before);
    assert_eq!(
        read.len(),
        2,
        "both files are newer than the connector's last run"
    );
    let mut got: Vec<Value> = read.iter().map(|(_, b)| b.clone()).collect();
    let mut want: Vec<Value> = [&bundle21, &bundle20]
        .iter()
        .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
        .collect();
    got.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    want.sort_by_key(|v| v["id"].as_str().unwrap().to_string());
    assert_eq!(got, want);
    for entry in std::fs::read_dir(rx.out.join("stix")).unwrap() {
        let v: Value =
            serde_json::from_slice(&std::fs::read(entry.unwrap().path()).unwrap()).unwrap();
        assert_eq!(v["connector"]["id"], "0e7d3a52-8c1b-4f6e-9a2d-5b4c3e2f1a09");
        assert_eq!(v["applicant_id"], "low-side");
    }
    // A connector that ran after the delivery takes nothing again.
    let after = read.iter().map(|(t, _)| *t).max().unwrap();
    assert!(diode_import_reads(&rx.out.join("stix"), after).is_empty());
}
