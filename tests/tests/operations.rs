//! What operators watch: the Prometheus endpoints during a transfer, JSON logs, the
//! generated man pages and completions.

use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::free_port;
use gapferry_tests::harness::{
    binary, http_get, metric_value, read_records, scrape_metrics, with_outcome, ChildGuard,
};

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn metrics_match_what_was_sent_and_delivered_and_json_logs_parse() {
    let out = tempfile::tempdir().unwrap();
    let (udp, rx_metrics, tx_metrics) = (free_port(true), free_port(false), free_port(false));
    let rx_addr: SocketAddr = format!("127.0.0.1:{rx_metrics}").parse().unwrap();
    let tx_addr: SocketAddr = format!("127.0.0.1:{tx_metrics}").parse().unwrap();
    let log = out.path().join("recv.log");
    let mut rx = ChildGuard(
        Command::new(binary("gapferry-recv"))
            .args([
                "--log-format",
                "json",
                "listen",
                "--bind",
                &format!("127.0.0.1:{udp}"),
                "--out",
            ])
            .arg(out.path().join("out"))
            .args(["--metrics", &rx_addr.to_string()])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    // Nothing heard yet: the receiver's health says the link is down.
    let deadline = Instant::now() + Duration::from_secs(10);
    let health = loop {
        if let Some(h) = http_get(rx_addr, "/healthz") {
            break h;
        }
        assert!(
            Instant::now() < deadline,
            "receiver endpoint never answered"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        health.starts_with("HTTP/1.0 503") || health.starts_with("HTTP/1.1 503"),
        "{health}"
    );
    assert!(health.contains("link down"), "{health}");
    let src = tempfile::tempdir().unwrap();
    for i in 0..3 {
        random_file(&src.path().join(format!("f{i}.bin")), 2 << 20, i);
    }
    // ~6 MiB at 20 Mbit/s: a few seconds, long enough to scrape the sender mid-way.
    let mut tx = ChildGuard(
        Command::new(binary("gapferry-send"))
            .args([
                "file",
                src.path().to_str().unwrap(),
                "--to",
                &format!("127.0.0.1:{udp}"),
                "--rate",
                "20M",
                "--quiet",
            ])
            .args(["--metrics", &tx_addr.to_string()])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mid = loop {
        if let Some(b) = scrape_metrics(tx_addr) {
            if metric_value(&b, "gapferry_sender_datagrams_sent_total").is_some_and(|v| v > 100.0) {
                break b;
            }
        }
        assert!(
            Instant::now() < deadline,
            "sender metrics never showed progress"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // Datagrams flowing: healthy on both sides.
    let rx_health = http_get(rx_addr, "/healthz").expect("receiver health");
    assert!(
        rx_health.contains(" 200 ") && rx_health.ends_with("ok\n"),
        "{rx_health}"
    );
    let tx_health = http_get(tx_addr, "/healthz").expect("sender health");
    assert!(tx_health.contains(" 200 "), "{tx_health}");
    assert_eq!(
        metric_value(&mid, "gapferry_sender_rate_bits_per_second"),
        Some(20_000_000.0),
        "{mid}"
    );
    assert!(tx.0.wait().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while with_outcome(&read_records(&out.path().join("out")), "delivered").len() < 3 {
        assert!(Instant::now() < deadline, "deliveries");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let body = scrape_metrics(rx_addr).expect("receiver metrics");
    assert_eq!(
        metric_value(
            &body,
            r#"gapferry_receiver_objects_total{kind="file",outcome="delivered"}"#
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        metric_value(&body, "gapferry_receiver_delivered_bytes_total"),
        Some((6u64 << 20) as f64),
        "{body}"
    );
    assert_eq!(
        metric_value(&body, "gapferry_receiver_received_bytes_total")
            .map(|b| b > (6u64 << 20) as f64),
        Some(true),
        "{body}"
    );
    let received = metric_value(&body, "gapferry_receiver_datagrams_received_total").unwrap();
    assert!(received > 4000.0, "{body}");
    assert!(
        metric_value(&body, "gapferry_receiver_heartbeat_age_seconds").is_some_and(|a| a < 10.0),
        "{body}"
    );
    assert!(!body.contains("outcome=\"failed\""), "{body}");
    assert!(rx.terminate().success());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let delivered: Vec<_> = lines
        .iter()
        .filter(|l| l["message"] == "delivered")
        .collect();
    assert_eq!(delivered.len(), 3, "{text}");
    assert!(
        delivered.iter().any(|d| d["loss_rate"].is_number()),
        "delivered lines carry the loss seen on the link: {text}"
    );
    for d in delivered {
        assert!(
            d["name"].is_string()
                && d["kind"] == "file"
                && d["size"] == 2 << 20
                && d["blake3"].is_string(),
            "{d}"
        );
    }
}

#[test]
fn man_pages_and_completions_are_generated() {
    for bin in ["gapferry-send", "gapferry-recv"] {
        let man = Command::new(binary(bin)).arg("man").output().unwrap();
        assert!(man.status.success());
        let text = String::from_utf8_lossy(&man.stdout);
        assert!(text.contains(".TH") && text.contains(bin), "{bin} man page");
        for shell in ["bash", "zsh", "fish"] {
            let c = Command::new(binary(bin))
                .args(["completions", shell])
                .output()
                .unwrap();
            assert!(c.status.success() && !c.stdout.is_empty(), "{bin} {shell}");
        }
    }
}
