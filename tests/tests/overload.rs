//! A receiver that cannot keep up names itself, not the link: the failed object's record
//! says the receiver dropped the datagrams (with the advice that fits), and a warning was
//! logged while it was dropping them. The real `gapferry-recv` binary, configured with a
//! small memory limit, against a fast sender on loopback.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::free_port;
use gapferry_tests::harness::spawn_listening;
use gapferry_tests::harness::{
    binary, metric_value, read_records, scrape_metrics, send, sender_config,
};
use std::process::Command;
use std::time::{Duration, Instant};

/// The value of the Prometheus sample `name` served at `port`.
fn metric(port: u16, name: &str) -> Option<f64> {
    metric_value(&scrape_metrics(([127, 0, 0, 1], port).into())?, name)
}

#[test]
fn an_overloaded_receiver_names_itself_in_the_record_and_warns_while_it_drops() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (port, metrics) = (free_port(true), free_port(false));
    // 256 KiB of incomplete blocks at most: a fraction of one 1.4 MB block, so the fast
    // sender's symbols overrun it and the receiver refuses most of them itself.
    let config = dir.path().join("recv.toml");
    std::fs::write(
        &config,
        format!(
            "bind = \"127.0.0.1:{port}\"\nout = \"{}\"\nmetrics = \"127.0.0.1:{metrics}\"\nsession_timeout = 10\n[limits]\nmax_held_bytes = 262144\n",
            out.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("recv.log");
    let started = Instant::now();
    let mut cmd = Command::new(binary("gapferry-recv"));
    cmd.args(["--log-format", "json", "listen", "--config"])
        .arg(&config);
    let mut rx = spawn_listening(cmd, &log);
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 8 << 20, 11);
    send(
        &[src.path().to_path_buf()],
        format!("127.0.0.1:{port}").parse().unwrap(),
        sender_config(1_000_000_000),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let record = loop {
        if let Some(r) = read_records(&out).into_iter().next() {
            break r;
        }
        assert!(Instant::now() < deadline, "no record of big.bin");
        std::thread::sleep(Duration::from_millis(100));
    };
    let refused = metric(metrics, "gapferry_receiver_datagrams_limit_refused_total");
    assert!(rx.terminate().success());
    assert!(refused.is_some_and(|n| n > 0.0), "{refused:?}");
    let elapsed = started.elapsed();

    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["name"], "big.bin", "{record}");
    assert_eq!(record["cause"], "receiver", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.contains("blocks decoded"), "{reason}");
    assert!(
        reason.contains("the receiver dropped") && reason.contains("memory limit: "),
        "{reason}"
    );
    assert!(
        reason.contains("lower --rate on the sender") && reason.contains("max_held_bytes"),
        "{reason}"
    );
    assert!(
        !reason.contains("--repair"),
        "the link is not to blame: {reason}"
    );

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let is_warning = |l: &serde_json::Value| {
        l["level"] == "WARN"
            && l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("the receiver is dropping datagrams itself"))
    };
    let first_warning = lines
        .iter()
        .position(is_warning)
        .unwrap_or_else(|| panic!("no warning that the receiver drops datagrams: {text}"));
    let failed = lines
        .iter()
        .position(|l| l["message"] == "object failed")
        .unwrap_or_else(|| panic!("no failure logged: {text}"));
    assert!(
        first_warning < failed,
        "the warning came while it dropped, before the object failed: {text}"
    );
    let w = &lines[first_warning];
    assert!(w["memory_limit"].as_u64().is_some_and(|n| n > 0), "{w}");
    assert_eq!(lines[failed]["cause"], "receiver", "{text}");
    // Rate-limited: one warning per 5 s at most, however many datagrams were dropped.
    let warnings = lines.iter().filter(|l| is_warning(l)).count() as u64;
    assert!(
        warnings <= 1 + elapsed.as_secs() / 5,
        "{warnings} warnings in {elapsed:?}: {text}"
    );
}

#[test]
fn the_same_shortfall_from_loss_on_the_link_names_the_link() {
    use gapferry_common::wire::{self, Datagram};
    use gapferry_tests::harness::TestReceiver;
    use gapferry_tests::relay::{Action, Relay};
    let rx = TestReceiver::start(|_| {});
    let keys = gapferry_common::KeyRing::default();
    // 40 % of the data lost on the way, far beyond the 10 % repair; the receiver has room.
    let mut n = 0u64;
    let policy = Box::new(move |_: u64, d: &[u8]| match wire::parse(d, &keys) {
        Ok(Datagram::Data { .. }) => {
            n += 1;
            if n % 5 < 2 {
                Action::Drop
            } else {
                Action::Forward
            }
        }
        _ => Action::Forward,
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 4 << 20, 12);
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(100_000_000),
    );
    let records = rx.wait_records(1, Duration::from_secs(30));
    let record = records.first().expect("a record of big.bin");
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["cause"], "link", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("blocks decoded") && reason.contains("raise --repair or --passes"),
        "{reason}"
    );
    assert!(
        reason.contains("the receiver dropped nothing itself") && !reason.contains("--rate"),
        "{reason}"
    );
    let report = rx.stop();
    assert_eq!(report.report.assembler.own_drops.total(), 0);
}

#[test]
fn a_receiver_whose_queue_overflows_names_the_full_queue() {
    use gapferry_common::wire::{self, Datagram};
    use gapferry_tests::harness::TestReceiver;
    use gapferry_tests::relay::{Action, Relay};
    // A queue of one datagram between the socket thread and the assembler: every batch of
    // two or more that the socket thread hands over is dropped as "queue full".
    let rx = TestReceiver::start(|cfg| cfg.queue = 1);
    // The relay loses nothing. It passes control datagrams (descriptors, heartbeats) alone,
    // 1 ms apart from their neighbours, so they reach the assembler one by one; the data
    // follows back to back, in batches the queue cannot take.
    let keys = gapferry_common::KeyRing::default();
    let mut after_control = false;
    let policy = Box::new(move |_: u64, d: &[u8]| {
        let control = matches!(wire::parse(d, &keys), Ok(Datagram::Control { .. }));
        if control || after_control {
            std::thread::sleep(Duration::from_millis(1));
        }
        after_control = control;
        Action::Forward
    });
    let relay = Relay::start(rx.addr, policy).unwrap();
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("big.bin"), 4 << 20, 13);
    send(
        &[src.path().to_path_buf()],
        relay.addr(),
        sender_config(1_000_000_000),
    );
    let records = rx.wait_records(1, Duration::from_secs(60));
    assert_eq!(relay.counts().1, 0, "the link lost nothing");
    let status = Command::new(binary("gapferry-recv"))
        .args(["status", "--out"])
        .arg(&rx.out)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("\nreceiver's own drops: ") && status.contains("(queue full: "),
        "{status}"
    );
    let report = rx.stop();
    assert!(report.queue_full > 0, "the queue overflowed");
    let record = records.first().expect("a record of big.bin");
    assert_eq!(record["outcome"], "failed", "{record}");
    assert_eq!(record["cause"], "receiver", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(
        reason.contains("queue full: ") && reason.contains("give the receiver more cores"),
        "{reason}"
    );
    assert!(!reason.contains("--repair"), "{reason}");
    assert_eq!(
        report.report.assembler.own_drops.queue_full, report.queue_full,
        "every queue drop reached the assembler's count"
    );
}
