//! The outbox service: files dropped while it runs are sent by kind, moved to `sent/`,
//! survive a kill and restart without loss or double delivery, and small intel overtakes
//! a large image.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{binary, scrape_metrics, with_outcome, ChildGuard, TestReceiver};
use gapferry_tests::realdata::realdata;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn watcher(outbox: &Path, to: std::net::SocketAddr, rate: &str) -> Child {
    Command::new(binary("gapferry-send"))
        .args([
            "watch",
            "--outbox",
            outbox.to_str().unwrap(),
            "--to",
            &to.to_string(),
            "--rate",
            rate,
            "--settle",
            "0.3",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Drops a file the way a writer should: under a hidden name, then renamed into place.
fn drop_file(outbox: &Path, rel: &str, content: &[u8]) {
    let dest = outbox.join(rel);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    let tmp = dest.with_file_name(format!(
        ".{}.part",
        dest.file_name().unwrap().to_str().unwrap()
    ));
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, dest).unwrap();
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn delivered_names(records: &[Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in with_outcome(records, "delivered") {
        *m.entry(r["name"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

fn pending(outbox: &Path) -> usize {
    ["misp", "stix", "images", "files"]
        .iter()
        .map(|d| {
            std::fs::read_dir(outbox.join(d)).map_or(0, |r| {
                r.filter(|e| {
                    !e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .starts_with('.')
                })
                .count()
            })
        })
        .sum()
}

#[test]
fn files_dropped_while_running_and_across_a_kill_arrive_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    let event = std::fs::read(
        realdata().join("misp-feed/infoblox/0472809b-1582-4dde-88a9-d82848e9e660.json"),
    )
    .unwrap();
    let bundle =
        std::fs::read(realdata().join("stix21/oasis-examples/infrastructure.json")).unwrap();
    let mut w = watcher(&outbox, rx.addr, "60M");
    drop_file(&outbox, "misp/event.json", &event);
    drop_file(&outbox, "stix/infra.json", &bundle);
    let big = dir.path().join("big.bin");
    random_file(&big, 24 << 20, 1);
    drop_file(&outbox, "files/big.bin", &std::fs::read(&big).unwrap());
    for i in 0..5 {
        drop_file(
            &outbox,
            &format!("files/small-{i}.txt"),
            format!("small {i}").as_bytes(),
        );
    }
    // Kill it hard while the big file is on its way (24 MiB at 60 Mbit/s: ~3.5 s).
    std::thread::sleep(Duration::from_millis(1500));
    w.kill().unwrap();
    w.wait().unwrap();
    drop_file(&outbox, "files/after-restart.txt", b"late");
    let mut w = watcher(&outbox, rx.addr, "200M");
    wait_until("the outbox to drain", Duration::from_secs(60), || {
        pending(&outbox) == 0
    });
    let expected = [
        "0472809b-1582-4dde-88a9-d82848e9e660.json",
        "big.bin",
        "after-restart.txt",
        "small-0.txt",
        "small-4.txt",
    ];
    wait_until("the deliveries", Duration::from_secs(30), || {
        let names = delivered_names(&rx.records());
        expected.iter().all(|n| names.contains_key(*n)) && names.len() >= 9
    });
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    assert!(w.wait().unwrap().success());
    let records = rx.records();
    let names = delivered_names(&records);
    assert_eq!(names.len(), 9, "{names:?}");
    assert!(
        names.values().all(|&n| n == 1),
        "nothing delivered twice: {names:?}"
    );
    assert_eq!(
        std::fs::read(rx.out.join("files/big.bin")).unwrap(),
        std::fs::read(&big).unwrap()
    );
    assert!(rx
        .out
        .join("misp/0472809b-1582-4dde-88a9-d82848e9e660.json")
        .exists());
    assert_eq!(std::fs::read_dir(rx.out.join("stix")).unwrap().count(), 1);
    for rel in [
        "misp/event.json",
        "stix/infra.json",
        "files/big.bin",
        "files/after-restart.txt",
    ] {
        assert!(
            outbox.join("sent").join(rel).exists(),
            "{rel} moved to sent/"
        );
    }
}

#[test]
fn a_small_event_overtakes_a_large_image() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    let mut w = watcher(&outbox, rx.addr, "100M");
    // An image of ~40 MB takes over 3 s at 100 Mbit/s.
    let img = dir.path().join("MISP_v1_test.tar.gz");
    write_image(&img, 40 << 20);
    drop_file(
        &outbox,
        "images/MISP_v1_test.tar.gz",
        &std::fs::read(&img).unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1200));
    let event = std::fs::read(
        realdata().join("misp-feed/infoblox/0985427f-ab14-4acb-b62f-d56529114048.json"),
    )
    .unwrap();
    drop_file(&outbox, "misp/late-event.json", &event);
    wait_until("both deliveries", Duration::from_secs(60), || {
        delivered_names(&rx.records()).len() == 2
    });
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    w.wait().unwrap();
    let records = rx.records();
    let order: Vec<&str> = with_outcome(&records, "delivered")
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["misp", "image"],
        "the event arrived before the image finished: {records:#?}"
    );
}

fn write_image(path: &Path, rootfs: usize) {
    use rand::{RngCore, SeedableRng};
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let meta = b"architecture: x86_64\ncreation_date: 1\n";
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "metadata.yaml", &meta[..]).unwrap();
    let mut data = vec![0u8; rootfs];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "rootfs/blob", &data[..]).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}

#[test]
fn the_carousel_fills_a_gap_and_is_then_ignored_cheaply() {
    use gapferry_tests::relay::{burst_loss, Relay};
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    // The first 400 datagrams vanish: the file's first transmission is lost whole.
    let relay = Relay::start(rx.addr, burst_loss(0, 400)).unwrap();
    let mut w = Command::new(binary("gapferry-send"))
        .args([
            "watch",
            "--outbox",
            outbox.to_str().unwrap(),
            "--to",
            &relay.addr().to_string(),
        ])
        .args([
            "--rate",
            "50M",
            "--settle",
            "0.2",
            "--resend-last",
            "4",
            "--resend-every",
            "1",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let f = dir.path().join("report.bin");
    random_file(&f, 300_000, 9);
    drop_file(&outbox, "files/report.bin", &std::fs::read(&f).unwrap());
    wait_until(
        "a delivery and a skipped repeat",
        Duration::from_secs(30),
        || {
            let r = rx.records();
            !with_outcome(&r, "delivered").is_empty() && !with_outcome(&r, "skipped").is_empty()
        },
    );
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    w.wait().unwrap();
    assert_eq!(relay.counts().1, 400);
    assert_eq!(
        std::fs::read(rx.files_dir().join("report.bin")).unwrap(),
        std::fs::read(&f).unwrap()
    );
    let records = rx.records();
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
}

#[test]
fn files_the_high_side_would_refuse_are_moved_to_refused_with_their_reason_and_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    let mut w = watcher(&outbox, rx.addr, "100M");
    let refused = [
        (
            "stix/report.json",
            &br#"{"type":"report","id":"x"}"#[..],
            "bundle",
        ),
        ("misp/empty.json", &br#"{"response":[]}"#[..], "no event"),
        ("images/MISP_v1_abc.tar.gz", &b"not a tarball"[..], "gzip"),
        (
            "bad-bundle.json",
            &br#"{"type":"bundle","id":"bundle--1","objects":[]}"#[..],
            "bundle--<uuid>",
        ),
    ];
    for (rel, content, _) in refused {
        drop_file(&outbox, rel, content);
    }
    let good = realdata().join("stix20/misp-stix-tests/test_event1_stix20.json");
    drop_file(&outbox, "stix/good.json", &std::fs::read(&good).unwrap());
    wait_until("the good bundle", Duration::from_secs(30), || {
        !with_outcome(&rx.records(), "delivered").is_empty()
    });
    wait_until("the refused files to move", Duration::from_secs(30), || {
        refused
            .iter()
            .all(|(rel, _, _)| outbox.join("refused").join(rel).exists())
    });
    for (rel, content, why) in refused {
        let moved = outbox.join("refused").join(rel);
        assert_eq!(
            std::fs::read(&moved).unwrap(),
            content,
            "{rel} kept as it was"
        );
        let reason = std::fs::read_to_string(format!("{}.reason", moved.display())).unwrap();
        assert!(reason.contains(why), "{rel}: {reason}");
        assert!(!outbox.join(rel).exists() && !outbox.join("sent").join(rel).exists());
    }
    // Several scans later: nothing retried, nothing from refused/ sent.
    std::thread::sleep(Duration::from_secs(2));
    Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    assert!(w.wait().unwrap().success());
    let records = rx.records();
    assert_eq!(
        records.len(),
        1,
        "only the good bundle crossed: {records:#?}"
    );
    assert_eq!(records[0]["outcome"], "delivered");
    assert!(outbox.join("sent/stix/good.json").exists());
}

/// Starts `gapferry-send watch` scanning only every `poll` seconds without an outbox
/// event, serving metrics at `metrics`; returns once it logged that it is watching (its
/// outbox events are set up).
fn watcher_polling_every(
    outbox: &Path,
    to: std::net::SocketAddr,
    poll: &str,
    metrics: std::net::SocketAddr,
) -> ChildGuard {
    use std::io::BufRead;
    let mut w = Command::new(binary("gapferry-send"))
        .args(["watch", "--outbox", outbox.to_str().unwrap(), "--to"])
        .arg(to.to_string())
        .args(["--rate", "100M", "--settle", "0.3", "--poll-interval", poll])
        .args(["--metrics", &metrics.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(w.stderr.take().unwrap());
    let (tx, ready) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("watching") {
                let _ = tx.send(());
            }
        }
    });
    ready
        .recv_timeout(Duration::from_secs(60))
        .expect("the watch service never logged `watching`");
    ChildGuard(w)
}

#[test]
fn a_dropped_file_is_sent_well_before_the_polling_interval() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut w = watcher_polling_every(&outbox, rx.addr, "60", metrics);
    // The start-up scan is over: only an outbox event can bring this file in before 60 s.
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    drop_file(&outbox, "files/prompt.txt", b"no waiting for the poll\n");
    wait_until(
        "the delivery, within half the polling interval",
        Duration::from_secs(30),
        || delivered_names(&rx.records()).contains_key("prompt.txt"),
    );
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(outbox.join("sent/files/prompt.txt").exists());
    // The endpoint shares the control plane's runtime and answers while it watches.
    let body = scrape_metrics(metrics).expect("the watch service's metrics endpoint");
    assert!(
        body.lines()
            .any(|l| l.starts_with("gapferry_sender_objects_total{")
                && l.contains("kind=\"file\"")
                && l.contains("outcome=\"sent\"")
                && l.ends_with(" 1")),
        "one file counted as sent: {body}"
    );
    assert!(w.terminate().success(), "SIGTERM stops it cleanly");
    assert_eq!(
        std::fs::read(rx.out.join("files/prompt.txt")).unwrap(),
        b"no waiting for the poll\n"
    );
}

/// A service whose session runs out of object ids starts a fresh session on its own: the
/// objects on both sides of the change arrive once each, none lost to an id that wrapped.
#[test]
fn a_session_near_the_end_of_its_object_ids_is_renewed_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let outbox = dir.path().join("outbox");
    let rx = TestReceiver::start(|_| {});
    // Three ids before the service renews its session (its margin is 2^24 ids).
    let first: u32 = u32::MAX - 1 - (1 << 24) - 2;
    let mut w = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args(["watch", "--outbox", outbox.to_str().unwrap()])
            .args([
                "--to",
                &rx.addr.to_string(),
                "--rate",
                "50M",
                "--settle",
                "0.3",
            ])
            .env("GAPFERRY_TEST_FIRST_OBJECT", first.to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let names: Vec<String> = (0..8).map(|i| format!("id-{i}.txt")).collect();
    for (i, n) in names.iter().enumerate() {
        drop_file(
            &outbox,
            &format!("files/{n}"),
            format!("object {i}").as_bytes(),
        );
        std::thread::sleep(Duration::from_millis(150));
    }
    wait_until("the deliveries", Duration::from_secs(60), || {
        delivered_names(&rx.records()).len() >= names.len()
    });
    assert!(w.terminate().success());
    let records = rx.records();
    let delivered = delivered_names(&records);
    assert!(
        names.iter().all(|n| delivered.get(n) == Some(&1)),
        "each once: {delivered:?}"
    );
    let sessions: std::collections::HashSet<&str> = with_outcome(&records, "delivered")
        .iter()
        .map(|r| r["session"].as_str().unwrap())
        .collect();
    assert_eq!(sessions.len(), 2, "a second session: {sessions:?}");
    let ids: Vec<u64> = with_outcome(&records, "delivered")
        .iter()
        .map(|r| r["object"].as_u64().unwrap())
        .collect();
    assert!(ids.iter().any(|&id| id >= first as u64), "{ids:?}");
    assert!(
        ids.iter().any(|&id| id < 8),
        "ids start again at 0: {ids:?}"
    );
    let others: Vec<&Value> = records
        .iter()
        .filter(|r| r["outcome"] != "delivered")
        .collect();
    assert!(others.is_empty(), "{others:?}");
}
