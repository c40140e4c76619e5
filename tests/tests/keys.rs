//! Key rollover against the real binaries: every tagged datagram names its key (a hint
//! byte); a receiver that retired the old key refuses a sender still using it, counts it
//! apart (`retired_key`), and delivers from the new key.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::keygen;
use gapferry_tests::harness::send_with_binary;
use gapferry_tests::harness::{
    binary, log_number, read_records, strip_ansi, with_outcome, ChildGuard,
};
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, Instant};

fn send(file: &std::path::Path, to: &str, key: &std::path::Path) {
    send_with_binary(&[file], to, &["--key", key.to_str().unwrap()]);
}

#[test]
fn a_retired_key_is_refused_and_counted_and_the_new_one_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.key"), dir.path().join("new.key"));
    keygen(&old);
    keygen(&new);
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to = format!("127.0.0.1:{port}");
    let out = dir.path().join("high");
    let log = dir.path().join("recv.log");
    let mut rx = ChildGuard(
        Command::new(binary("gapferry-recv"))
            .args(["listen", "--bind", &to, "--key"])
            .arg(&new)
            .arg("--retired-key")
            .arg(&old)
            .arg("--out")
            .arg(&out)
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(400));
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    random_file(&src.join("stale.bin"), 50_000, 1);
    random_file(&src.join("fresh.bin"), 50_000, 2);
    send(&src.join("stale.bin"), &to, &old);
    send(&src.join("fresh.bin"), &to, &new);
    let deadline = Instant::now() + Duration::from_secs(10);
    while with_outcome(&read_records(&out), "delivered").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(rx.terminate().success());
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap());
    let records = read_records(&out);
    let delivered: Vec<_> = with_outcome(&records, "delivered")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(delivered, ["fresh.bin"], "{records:#?}");
    let retired = log_number(&text, "retired_key").expect("the stop line counts retired keys");
    assert!(
        retired > 0,
        "the old key's datagrams must be counted apart: {text}"
    );
    assert_eq!(log_number(&text, "rejected"), Some(retired), "{text}");
    // Naming both keys and the same key twice are refused at start.
    let both = Command::new(binary("gapferry-recv"))
        .args(["listen", "--bind", &to, "--key"])
        .arg(&new)
        .arg("--retired-key")
        .arg(&new)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(!both.status.success());
    assert!(
        String::from_utf8_lossy(&both.stderr).contains("both accepted"),
        "{}",
        String::from_utf8_lossy(&both.stderr)
    );
}
