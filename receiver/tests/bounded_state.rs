//! State that must not grow with the receiver's age: the run summary keeps counts and a
//! bounded list, and the ledger and `status` stream `records.jsonl` whatever its length.

use gapferry_common::{Event, ObjectDescriptor, ObjectKind, ObjectRef};
use gapferry_receiver::delivery::{Delivery, SUMMARY_NOTABLE};
use gapferry_receiver::destinations::Destinations;
use gapferry_receiver::ledger::DeliveredLedger;
use gapferry_receiver::metrics::ReceiverMetrics;
use gapferry_receiver::status::records_report;
use std::io::Read;

/// Peak resident set of this process so far, bytes (`VmHWM`).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb << 10
}

/// A record log generated on the fly, `repeats` times the same block of lines; counts
/// the bytes it handed out.
struct GeneratedLog {
    block: Vec<u8>,
    at: usize,
    repeats: usize,
    served: u64,
}

impl GeneratedLog {
    /// Deliveries per block, each of its own name.
    const DELIVERED: usize = 2;
    /// Failures per block.
    const FAILED: usize = 3;

    /// Per block: the deliveries, the failures, one loss, one skip, one hook failure and
    /// one line that is not JSON.
    fn new(repeats: usize) -> Self {
        let mut block = String::new();
        for i in 0..Self::DELIVERED {
            block += &format!(
                r#"{{"time":"2026-01-01T00:00:00.000Z","outcome":"delivered","session":"00000000000000aa","object":{i},"kind":"stix","name":"dir/name-{i}.json","size":1000,"blake3":"{}","path":"/srv/gapferry/stix/name-{i}.json","elapsed_ms":3}}"#,
                format!("{i:02x}").repeat(32)
            );
            block.push('\n');
        }
        for i in 0..Self::FAILED {
            block += &format!(
                r#"{{"time":"2026-01-01T00:00:01.000Z","outcome":"failed","session":"00000000000000aa","object":{},"kind":"misp","name":"event-{i}.json","reason":"blake3 of the reassembled bytes differs from the descriptor's (corrupted or forged data; use --key)"}}"#,
                10 + i
            );
            block.push('\n');
        }
        block += r#"{"time":"2026-01-01T00:00:02.000Z","outcome":"lost","session":"00000000000000aa","object":20}"#;
        block += "\n";
        block += r#"{"time":"2026-01-01T00:00:03.000Z","outcome":"skipped","session":"00000000000000aa","object":21,"name":"x","reason":"already delivered"}"#;
        block += "\n";
        block += r#"{"time":"2026-01-01T00:00:04.000Z","outcome":"hook_failed","session":"00000000000000aa","object":22,"name":"y","reason":"hook false exited with 1"}"#;
        block += "\nnot json at all\n";
        GeneratedLog {
            block: block.into_bytes(),
            at: 0,
            repeats,
            served: 0,
        }
    }

    /// A log of about `bytes` bytes.
    fn of_size(bytes: usize) -> Self {
        let per_block = GeneratedLog::new(1).block.len();
        GeneratedLog::new(bytes / per_block)
    }

    fn total(&self) -> u64 {
        (self.block.len() * self.repeats) as u64
    }
}

impl Read for GeneratedLog {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.repeats == 0 {
            return Ok(0);
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        if self.at == self.block.len() {
            self.at = 0;
            self.repeats -= 1;
        }
        self.served += n as u64;
        Ok(n)
    }
}

/// Bytes of generated log: far above what the tests let the process grow by.
const LOG_BYTES: usize = 160 << 20;
/// What reading it may add to the peak resident set.
const GROWTH_BOUND: u64 = 48 << 20;

fn descriptor(name: &str, blake3: [u8; 32]) -> ObjectDescriptor {
    ObjectDescriptor {
        kind: ObjectKind::Stix,
        name: name.into(),
        size: 1000,
        blake3,
        block_plain_size: 1000,
        mtime: 0,
        pass: 1,
        passes: 1,
    }
}

#[test]
fn the_ledger_streams_a_large_record_log() {
    let mut log = GeneratedLog::of_size(LOG_BYTES);
    let total = log.total();
    let before = peak_rss();
    let ledger = DeliveredLedger::from_records(&mut log);
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(log.served, total, "the whole log was read");
    assert_eq!(
        ledger.len(),
        GeneratedLog::DELIVERED,
        "one entry per name and content"
    );
    assert!(
        grew < GROWTH_BOUND,
        "reading a {total}-byte record log grew the peak RSS by {grew} bytes (bound {GROWTH_BOUND})"
    );
    assert!(ledger.already_delivered(&descriptor("dir/name-1.json", [1; 32])));
    assert!(!ledger.already_delivered(&descriptor("dir/name-1.json", [2; 32])));
}

#[test]
fn status_streams_a_large_record_log() {
    let mut log = GeneratedLog::of_size(LOG_BYTES);
    let total = log.total();
    let blocks = log.repeats as u64;
    let before = peak_rss();
    let text = records_report(&mut log, 4).unwrap();
    let grew = peak_rss().saturating_sub(before);
    assert_eq!(log.served, total, "the whole log was read");
    assert!(
        grew < GROWTH_BOUND,
        "reading a {total}-byte record log grew the peak RSS by {grew} bytes (bound {GROWTH_BOUND})"
    );
    let counts = format!(
        "objects: {} delivered, {} failed, {blocks} lost, {blocks} skipped (already delivered), {blocks} hooks failed\n",
        blocks * GeneratedLog::DELIVERED as u64,
        blocks * GeneratedLog::FAILED as u64,
    );
    assert!(text.starts_with(&counts), "{text}");
    // The last four not delivered, oldest first: two failures, the loss, the hook failure.
    let named: Vec<&str> = text.lines().skip(2).collect();
    assert_eq!(named.len(), 4, "{text}");
    assert!(
        named[0].contains("failed") && named[0].contains("event-1.json"),
        "{text}"
    );
    assert!(named[1].contains("event-2.json"), "{text}");
    assert!(
        named[2].contains("lost") && named[2].contains("(name unknown)"),
        "{text}"
    );
    assert!(
        named[3].contains("hook_failed") && named[3].contains("hook false exited"),
        "{text}"
    );
    assert!(text.contains("last 4 not delivered:"), "{text}");
}

#[test]
fn a_summary_counts_every_outcome_but_keeps_only_the_last_notable_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut delivery =
        Delivery::open(out, Destinations::under(out), ReceiverMetrics::default()).unwrap();
    let lost = 10 * SUMMARY_NOTABLE as u32 + 7;
    for object in 0..lost {
        delivery.handle(Event::ObjectLost {
            object: ObjectRef { session: 5, object },
            through: object,
            named: None,
        });
    }
    let summary = delivery.into_summary();
    assert_eq!(summary.lost, lost as u64);
    assert_eq!(summary.notable.len(), SUMMARY_NOTABLE);
    assert_eq!(
        summary.notable_dropped,
        lost as u64 - SUMMARY_NOTABLE as u64
    );
    assert_eq!(summary.notable.back().unwrap().object, lost - 1);
    assert_eq!(
        summary.notable.front().unwrap().object,
        lost - SUMMARY_NOTABLE as u32
    );
    // Every record is still on disk.
    let text = std::fs::read_to_string(out.join(".gapferry/records.jsonl")).unwrap();
    assert_eq!(text.lines().count(), lost as usize);
}

#[test]
fn per_session_loss_rates_end_with_their_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let mut delivery =
        Delivery::open(out, Destinations::under(out), ReceiverMetrics::default()).unwrap();
    for session in 0..1_000u64 {
        delivery.handle(Event::Heartbeat {
            session,
            heartbeat: Default::default(),
            received: 1,
            loss_rate: Some(0.5),
        });
        delivery.handle(Event::SessionClosed {
            session,
            reason: "silent".into(),
        });
    }
    assert_eq!(delivery.sessions_tracked(), 0);
}
