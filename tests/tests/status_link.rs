//! `gapferry-recv status` tells the truth about the link: up while authenticated datagrams
//! of a session arrive, whether or not a heartbeat did; the last datagram's and the last
//! heartbeat's ages apart; the loss rate from the sender's counters. A one-shot sender
//! through a relay losing 60 % of the datagrams, with the real `status` binary.

use gapferry_common::wire::{self, Datagram, DatagramType};
use gapferry_common::KeyRing;
use gapferry_tests::fixtures::random_file;
use gapferry_tests::harness::{binary, send, sender_config, TestReceiver};
use gapferry_tests::relay::{Action, Policy, Relay};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn status(out: &Path) -> String {
    let o = Command::new(binary("gapferry-recv"))
        .args(["status", "--out"])
        .arg(out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Loses 60 % of the data and descriptors (seeded), and every heartbeat unless
/// `heartbeats` says to let them through.
fn sixty_percent_loss(heartbeats: bool) -> Policy {
    let keys = KeyRing::default();
    let mut rng = StdRng::seed_from_u64(60);
    Box::new(move |_, d| match wire::parse(d, &keys) {
        Ok(Datagram::Control {
            kind: DatagramType::Heartbeat,
            ..
        }) => {
            if heartbeats {
                Action::Forward
            } else {
                Action::Drop
            }
        }
        _ if rng.random::<f64>() < 0.6 => Action::Drop,
        _ => Action::Forward,
    })
}

/// Sends `size` random bytes once through `relay` on a thread while `status` is polled;
/// returns every status printed until one satisfied `done` (or the deadline passed).
fn poll_status_while_sending(
    rx: &TestReceiver,
    relay: &Relay,
    size: usize,
    rate: u64,
    done: impl Fn(&str) -> bool,
) -> Vec<String> {
    let src = tempfile::tempdir().unwrap();
    random_file(&src.path().join("doomed.bin"), size, 60);
    let to = relay.addr();
    let paths = vec![src.path().to_path_buf()];
    let sender = std::thread::spawn(move || send(&paths, to, sender_config(rate)));
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = status(&rx.out);
        let ok = done(&text);
        seen.push(text);
        if ok || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    sender.join().expect("sender thread");
    seen
}

#[test]
fn datagrams_without_any_heartbeat_show_the_link_up() {
    let rx = TestReceiver::start(|_| {});
    let relay = Relay::start(rx.addr, sixty_percent_loss(false)).unwrap();
    let seen = poll_status_while_sending(&rx, &relay, 6 << 20, 40_000_000, |t| {
        t.starts_with("link: up")
    });
    let up = seen
        .iter()
        .find(|t| t.starts_with("link: up"))
        .unwrap_or_else(|| panic!("status never showed the link up: {seen:#?}"));
    assert!(up.starts_with("link: up (last datagram "), "{up}");
    assert!(
        up.contains("\nlast heartbeat: never\n"),
        "no heartbeat passed the relay: {up}"
    );
    assert!(up.contains("loss rate: n/a"), "{up}");
    let (seen_by_relay, dropped) = relay.counts();
    assert!(
        dropped as f64 > seen_by_relay as f64 * 0.5,
        "the relay really lost more than half: {dropped}/{seen_by_relay}"
    );
}

#[test]
fn with_heartbeats_status_shows_both_ages_and_the_senders_loss_rate() {
    let rx = TestReceiver::start(|_| {});
    let relay = Relay::start(rx.addr, sixty_percent_loss(true)).unwrap();
    // About 3 s of sending: heartbeats come every second, the loss rate needs two.
    let seen = poll_status_while_sending(&rx, &relay, 12 << 20, 40_000_000, |t| {
        t.starts_with("link: up") && !t.contains("loss rate: n/a")
    });
    let up = seen
        .iter()
        .find(|t| t.starts_with("link: up") && !t.contains("loss rate: n/a"))
        .unwrap_or_else(|| panic!("status never showed the link up with a loss rate: {seen:#?}"));
    assert!(up.starts_with("link: up (last datagram "), "{up}");
    assert!(
        up.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("last heartbeat: ") && l.contains(" s ago (session ")),
        "{up}"
    );
    let loss: f64 = up
        .split("loss rate: ")
        .nth(1)
        .and_then(|t| t.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no loss rate: {up}"));
    // 60 % of everything but heartbeats: the sender's counters see about that much.
    assert!((40.0..75.0).contains(&loss), "loss rate {loss} %: {up}");
}
