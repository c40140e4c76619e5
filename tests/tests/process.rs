//! The real binaries: a sender killed mid-object and restarted, a receiver stopped by
//! SIGTERM, and clear errors on bad input.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{
    binary, read_records, send, sender_config, with_outcome, TestReceiver,
};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_sender_killed_mid_object_and_restarted_delivers_from_the_new_session() {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("image.bin");
    random_file(&file, 8 << 20, 11);
    let rx = TestReceiver::start(|_| {});
    let to = rx.addr.to_string();
    let mut first = Command::new(binary("gapferry-send"))
        .args([
            "file",
            file.to_str().unwrap(),
            "--to",
            &to,
            "--rate",
            "16M",
            "--quiet",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    first.kill().unwrap();
    first.wait().unwrap();
    let status = Command::new(binary("gapferry-send"))
        .args([
            "file",
            file.to_str().unwrap(),
            "--to",
            &to,
            "--rate",
            "400M",
            "--quiet",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let records = rx.wait_records(2, Duration::from_secs(20));
    let delivered = with_outcome(&records, "delivered");
    assert_eq!(delivered.len(), 1, "{records:#?}");
    let failed = with_outcome(&records, "failed");
    assert_eq!(
        failed.len(),
        1,
        "the killed session's object is recorded: {records:#?}"
    );
    assert_ne!(delivered[0]["session"], failed[0]["session"]);
    assert!(
        failed[0]["reason"]
            .as_str()
            .unwrap()
            .contains("new sender session"),
        "{records:#?}"
    );
    assert_eq!(
        std::fs::read(rx.files_dir().join("image.bin")).unwrap(),
        std::fs::read(&file).unwrap()
    );
}

#[test]
fn the_receiver_binary_stops_cleanly_on_sigterm() {
    let out = tempfile::tempdir().unwrap();
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut rx = Command::new(binary("gapferry-recv"))
        .args([
            "listen",
            "--bind",
            &addr,
            "--out",
            out.path().to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a.bin"), 300_000, 1);
    send(
        &[src.path().to_path_buf()],
        addr.parse().unwrap(),
        sender_config(200_000_000),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_outcome(&read_records(out.path()), "delivered").is_empty()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        with_outcome(&read_records(out.path()), "delivered").len(),
        1
    );
    Command::new("kill")
        .args(["-TERM", &rx.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = rx.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "receiver did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

fn run_fail(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin)).args(args).output().unwrap();
    assert!(!out.status.success(), "{bin} {args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_input_gives_a_clear_error_and_a_nonzero_exit() {
    let err = run_fail(
        "gapferry-send",
        &["file", "/nonexistent/x.json", "--to", "127.0.0.1:9"],
    );
    assert!(err.contains("/nonexistent/x.json"), "{err}");
    let err = run_fail(
        "gapferry-send",
        &[
            "file",
            "/etc/hostname",
            "--to",
            "127.0.0.1:9",
            "--rate",
            "fast",
        ],
    );
    assert!(err.contains("invalid rate"), "{err}");
    let err = run_fail(
        "gapferry-send",
        &["file", "/etc/hostname", "--to", "nowhere"],
    );
    assert!(err.contains("HOST:PORT"), "{err}");
    let err = run_fail(
        "gapferry-send",
        &[
            "file",
            "/etc/hostname",
            "--to",
            "127.0.0.1:9",
            "--mtu",
            "100",
        ],
    );
    assert!(err.contains("MTU"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("bad.key");
    std::fs::write(&key, b"short").unwrap();
    let err = run_fail(
        "gapferry-send",
        &[
            "file",
            "/etc/hostname",
            "--to",
            "127.0.0.1:9",
            "--key",
            key.to_str().unwrap(),
        ],
    );
    assert!(err.contains("key"), "{err}");
    let err = run_fail(
        "gapferry-recv",
        &[
            "listen",
            "--bind",
            "127.0.0.1:9",
            "--out",
            "/proc/forbidden",
        ],
    );
    assert!(err.contains("/proc/forbidden"), "{err}");
}

#[test]
fn keygen_writes_a_key_both_sides_accept() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("link.key");
    let st = Command::new(binary("gapferry-send"))
        .args(["keygen", key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let err = run_fail("gapferry-send", &["keygen", key.to_str().unwrap()]);
    assert!(err.contains("--force"), "{err}");
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("k.bin"), 10_000, 3);
    let k = gapferry_common::Key::parse(&std::fs::read(&key).unwrap()).unwrap();
    let rx = TestReceiver::start(|c| c.keys = gapferry_common::KeyRing::new(vec![k.clone()]));
    let status = Command::new(binary("gapferry-send"))
        .args([
            "file",
            src.path().join("k.bin").to_str().unwrap(),
            "--to",
            &rx.addr.to_string(),
            "--key",
            key.to_str().unwrap(),
            "--quiet",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let records = rx.wait_records(1, Duration::from_secs(10));
    assert_eq!(with_outcome(&records, "delivered").len(), 1, "{records:#?}");
}

#[test]
fn status_reports_the_link_the_loss_rate_and_names_what_failed() {
    use gapferry_common::wire::{self, Datagram};
    use gapferry_tests::relay::{Action, Relay};
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a-ok.bin"), 3 << 20, 1);
    random_file(&src.path().join("b-doomed.bin"), 3 << 20, 2);
    random_file(&src.path().join("c-ok.bin"), 3 << 20, 3);
    let rx = TestReceiver::start(|_| {});
    let keys = gapferry_common::KeyRing::default();
    let mut n = 0u64;
    let policy = Box::new(move |_: u64, d: &[u8]| {
        n += 1;
        match wire::parse(d, &keys) {
            Ok(Datagram::Data { header, .. }) if header.object == 1 && n.is_multiple_of(2) => {
                Action::Drop
            }
            _ if n.is_multiple_of(50) => Action::Drop,
            _ => Action::Forward,
        }
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    // Slow enough that several heartbeats arrive during the transfer.
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(30_000_000),
    );
    rx.wait_records(3, Duration::from_secs(30));
    let out = Command::new(binary("gapferry-recv"))
        .args(["status", "--out", rx.out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("link: "), "{text}");
    let loss: f64 = text
        .split("loss rate: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loss rate: {text}"));
    // Half of one object's data of three plus 2 % of the rest: roughly 15 %.
    assert!((3.0..40.0).contains(&loss), "loss rate {loss} %: {text}");
    assert!(text.contains("2 delivered, 1 failed, 0 lost"), "{text}");
    assert!(
        text.contains("b-doomed.bin") && text.contains("blocks decoded"),
        "{text}"
    );
}

#[test]
fn objects_already_delivered_are_skipped_across_receiver_restarts() {
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("once.bin"), 2 << 20, 7);
    let rx = TestReceiver::start_in(out.path(), |_| {});
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(200_000_000),
    );
    assert_eq!(
        with_outcome(&rx.wait_records(1, Duration::from_secs(20)), "delivered").len(),
        1
    );
    drop(rx);
    // A restarted receiver, the same content sent again: ignored, not decoded or written.
    let rx = TestReceiver::start_in(out.path(), |_| {});
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(200_000_000),
    );
    let records = rx.wait_records(2, Duration::from_secs(20));
    assert_eq!(records[1]["outcome"], "skipped", "{records:#?}");
    let report = rx.stop();
    assert_eq!(
        report.report.assembler.blocks_decoded, 0,
        "nothing was decoded again"
    );
    // Once the operator removes the delivered file, the next send delivers it again.
    std::fs::remove_file(out.path().join("files/once.bin")).unwrap();
    let rx = TestReceiver::start_in(out.path(), |_| {});
    send(
        &[src.path().to_path_buf()],
        rx.addr,
        sender_config(200_000_000),
    );
    let records = rx.wait_records(3, Duration::from_secs(20));
    assert_eq!(records[2]["outcome"], "delivered", "{records:#?}");
    assert!(out.path().join("files/once.bin").exists());
}

#[test]
fn a_receiver_killed_mid_transfer_completes_the_object_on_the_next_pass() {
    use gapferry_tests::harness::ChildGuard;
    let out = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("a-small.bin"), 100_000, 1);
    random_file(&src.path().join("b-large.bin"), 12 << 20, 2);
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bind = format!("127.0.0.1:{port}");
    let start_rx = || {
        ChildGuard(
            Command::new(binary("gapferry-recv"))
                .args([
                    "listen",
                    "--bind",
                    &bind,
                    "--out",
                    out.path().to_str().unwrap(),
                ])
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        )
    };
    let mut rx = start_rx();
    std::thread::sleep(Duration::from_millis(300));
    // Two passes at 40 Mbit/s: each pass of the large file takes about 2.6 s.
    let mut tx = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args([
                "file",
                src.path().to_str().unwrap(),
                "--to",
                &bind,
                "--rate",
                "40M",
                "--passes",
                "2",
                "--quiet",
            ])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(1500));
    rx.0.kill().unwrap(); // SIGKILL: no chance to clean up
    rx.0.wait().unwrap();
    let staged: Vec<_> = std::fs::read_dir(out.path().join(".gapferry/staging"))
        .unwrap()
        .collect();
    assert!(
        !staged.is_empty(),
        "the large object was being staged when the receiver died"
    );
    assert!(
        !out.path().join("files/b-large.bin").exists(),
        "nothing half-written is visible"
    );
    let _rx = start_rx();
    assert!(tx.0.wait().unwrap().success());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline && !out.path().join("files/b-large.bin").exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        std::fs::read(out.path().join("files/b-large.bin")).unwrap(),
        std::fs::read(src.path().join("b-large.bin")).unwrap(),
        "the second pass completed the interrupted object"
    );
    let records = read_records(out.path());
    let a_delivered = records
        .iter()
        .filter(|r| r["name"] == "a-small.bin" && r["outcome"] == "delivered")
        .count();
    assert_eq!(a_delivered, 1, "delivered once, not twice: {records:#?}");
}
