//! Medians over runs and the one Markdown table the harness prints.

use crate::iperf::Ceiling;
use crate::scenario::{RunResult, Scenario};

const GIB: f64 = (1u64 << 30) as f64;
const MIB: f64 = (1u64 << 20) as f64;
/// IPv4 plus UDP header bytes added to every datagram on the wire.
pub const IP_UDP_HEADERS: u64 = 28;

/// The median of `xs` (mean of the middle two for an even count); `None` when empty.
pub fn median(mut xs: Vec<f64>) -> Option<f64> {
    xs.retain(|x| x.is_finite());
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    Some(if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    })
}

fn med(runs: &[RunResult], f: impl Fn(&RunResult) -> Option<f64>) -> Option<f64> {
    median(runs.iter().filter_map(f).collect())
}

fn fmt(x: Option<f64>, decimals: usize) -> String {
    x.map_or("–".into(), |v| format!("{v:.decimals$}"))
}

fn fmt_count(x: Option<f64>) -> String {
    let Some(v) = x else { return "–".into() };
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// "max M in k/n runs" for a counter that was non-zero in some run, else `None`.
fn worst(runs: &[RunResult], f: impl Fn(&RunResult) -> Option<u64>) -> Option<String> {
    let hits: Vec<u64> = runs.iter().filter_map(&f).filter(|&x| x > 0).collect();
    let max = *hits.iter().max()?;
    Some(format!(
        "max {} in {}/{} runs",
        fmt_count(Some(max as f64)),
        hits.len(),
        runs.len()
    ))
}

/// The table's header.
pub fn header() -> String {
    [
        "| scenario | payload | delivered | goodput MB/s | × iperf3 | objects/s | send CPU s/GiB | recv CPU s/GiB | send peak RSS MiB | recv peak RSS MiB | datagrams sent | datagrams recv | wire B / payload B | kernel drops | notes |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    .join("\n")
}

/// `text` fit for one table cell: one line, no `|`, at most `max` characters.
pub fn cell(text: &str, max: usize) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "/");
    if flat.chars().count() > max {
        let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    } else {
        flat
    }
}

/// The row of a scenario whose every run failed: the first cause, so the table says why.
pub fn failed_row(s: &Scenario, errors: &[String]) -> String {
    let cause = errors
        .first()
        .map_or("no run".to_string(), |e| cell(e, 300));
    format!(
        "| {} | {} | failed: 0/{} runs | – | – | – | – | – | – | – | – | – | – | – | {} |",
        s.name,
        s.payload.describe(),
        errors.len(),
        cause
    )
}

/// The iperf3 ceiling's row; `failures` are the causes of runs that gave no figure.
pub fn iperf_row(runs: &[Ceiling], failures: &[String], secs: u32, window: Option<&str>) -> String {
    if runs.is_empty() {
        let cause = failures
            .first()
            .map_or("no run".to_string(), |e| cell(e, 300));
        return format!(
            "| iperf3 UDP ceiling | – | failed: 0/{} runs | n/a | – | – | – | – | – | – | – | – | – | – | {cause} |",
            failures.len()
        );
    }
    let recv = median(runs.iter().map(|c| c.received_bps / 1e6).collect());
    let sent = median(runs.iter().map(|c| c.sent_bps / 1e6).collect());
    let dgrams = median(runs.iter().map(|c| c.datagrams as f64).collect());
    let lost = median(runs.iter().map(|c| c.lost_percent).collect());
    format!(
        "| iperf3 UDP ceiling | {secs} s × 1472 B | {} runs | {} | 1.00 | – | – | – | – | – | {} | – | – | – | `-u -b 0 -l 1472{}`: sent {} MB/s, {} % lost |",
        runs.len(),
        fmt(recv, 0),
        fmt_count(dgrams),
        window.map_or(String::new(), |w| format!(" -w {w}")),
        fmt(sent, 0),
        fmt(lost, 1)
    )
}

/// One scenario's row: medians over `runs`, goodput also as a fraction of `ceiling` (MB/s);
/// `rate` is the sender's `--rate` it ran at, `errored` the runs that gave no result.
pub fn row(
    s: &Scenario,
    runs: &[RunResult],
    ceiling: Option<f64>,
    rate: &str,
    errored: usize,
) -> String {
    let n = runs.len() + errored;
    let complete = runs.iter().filter(|r| r.complete()).count();
    let delivered = if s.sender_alone {
        format!("{complete}/{n} runs sent, no receiver")
    } else if complete == n {
        format!("{complete}/{n} runs")
    } else {
        let worst = runs.iter().map(|r| r.delivered).min().unwrap_or(0);
        format!(
            "{complete}/{n} runs (worst: {worst}/{} objects)",
            runs.first().map_or(0, |r| r.objects)
        )
    };
    let goodput = med(runs, RunResult::goodput_mbs);
    let ratio = goodput.zip(ceiling).map(|(g, c)| g / c);
    let objects_per_s = if s.payload.objects() > 1 {
        med(runs, |r| r.elapsed.map(|e| r.delivered as f64 / e))
    } else {
        None
    };
    let gib = |r: &RunResult| r.payload_bytes as f64 / GIB;
    // The receiver-alone row has no sender process: the replayer's CPU is in the notes.
    let sender = !s.receiver_alone;
    let send_cpu = med(runs, |r| sender.then(|| r.sender.cpu_seconds / gib(r)));
    // The sender-alone row has no receiver (and its socket drops what it is sent).
    let receiver = !s.sender_alone;
    let recv_cpu = med(runs, |r| receiver.then(|| r.receiver.cpu_seconds / gib(r)));
    let send_rss = med(runs, |r| sender.then(|| r.sender.max_rss as f64 / MIB));
    let recv_rss = med(runs, |r| receiver.then(|| r.receiver.max_rss as f64 / MIB));
    let sent = med(runs, |r| r.sent_datagrams.map(|x| x as f64));
    let recv = med(runs, |r| r.recv_datagrams.map(|x| x as f64));
    let wire = med(runs, |r| {
        let (d, b) = (r.sent_datagrams?, r.sent_bytes?);
        Some((b + d * IP_UDP_HEADERS) as f64 / r.payload_bytes as f64)
    });
    let drops = med(runs, |r| r.kernel_drops.map(|x| x as f64));
    let drops_max = runs.iter().filter_map(|r| r.kernel_drops).max();
    let drops = match drops_max {
        Some(m) if drops.is_some_and(|d| (m as f64) > d) => {
            format!("{} (max {})", fmt_count(drops), fmt_count(Some(m as f64)))
        }
        _ => fmt_count(drops),
    };
    let mut notes = Vec::new();
    if s.passes > 1 {
        notes.push(format!("--passes {}", s.passes));
    }
    if let Some(b) = s.recv_buffer {
        notes.push(format!("--recv-buffer {b}"));
    }
    if s.payload.objects() > 1 {
        notes.push(format!("--kind {}", s.kind.unwrap_or("auto")));
    }
    if s.sender_alone {
        notes.push(
            "towards a bound UDP socket nobody reads; goodput = file bytes / sender wall time"
                .into(),
        );
    }
    if s.receiver_alone {
        let cpu = med(runs, |r| r.feeder_cpu_seconds.map(|c| c / gib(r)));
        notes.push(format!(
            "fed by a replayer of pre-encoded datagrams from memory (UDP GSO), replayer CPU {} s/GiB",
            fmt(cpu, 2)
        ));
        if !s.ceiling {
            notes.push(format!("--replay-rate {rate}"));
        }
        for r in runs.iter().filter_map(|r| r.ceiling.as_deref()) {
            notes.push(cell(r, 600));
        }
    }
    if s.keyed {
        notes.push("--key on both sides".into());
    }
    if s.feed_events > 0 {
        notes.push(format!(
            "into a feed already holding {} events",
            fmt_count(Some(s.feed_events as f64))
        ));
    }
    if s.peer {
        notes.push(format!(
            "udp-sender --async --fec {} --max-bitrate {} in a namespace whose return path is dropped; goodput from the sender's start (hellos included) to the receiver's exit, content compared byte for byte",
            crate::peer::FEC,
            crate::peer::max_bitrate(crate::scenario::parse_bits(rate).unwrap_or(0))
        ));
        if crate::scenario::parse_bits(rate).unwrap_or(0) > crate::peer::MAX_MEGABITS * 1_000_000 {
            notes.push(format!(
                "capped below the pair rate {rate}: udp-sender keeps bits/s in a 32-bit int and hung at 2200m"
            ));
        }
    } else if !s.sender_alone && !s.receiver_alone {
        let pair = if s.rate == crate::scenario::PAIR_RATE {
            " (pair rate)"
        } else {
            ""
        };
        notes.push(format!("--rate {rate}{pair}"));
    } else if s.sender_alone {
        notes.push(format!("--rate {rate}"));
    }
    if errored > 0 {
        notes.push(format!("{errored} run(s) gave no result (see the log)"));
    }
    if runs.iter().any(|r| r.relay.is_some()) {
        let lost = med(runs, |r| {
            r.relay
                .map(|x| 100.0 * x.dropped as f64 / x.seen.max(1) as f64)
        });
        let cpu = med(runs, |r| r.relay.map(|x| x.cpu_seconds / gib(r)));
        let dropped = med(runs, |r| r.relay.map(|x| x.dropped as f64));
        notes.push(format!(
            "relay dropped {} ({} %), relay CPU {} s/GiB",
            fmt_count(dropped),
            fmt(lost, 2),
            fmt(cpu, 2)
        ));
    }
    if let Some(w) = worst(runs, |r| r.queue_full) {
        notes.push(format!(
            "receiver assembler queue full (datagrams dropped): {w}"
        ));
    }
    if let Some(w) = worst(runs, |r| r.socket_drops) {
        notes.push(format!("receiver socket drops: {w}"));
    }
    if s.peer {
        if let Some(r) = runs.iter().find(|r| !r.reasons.is_empty()) {
            notes.push(cell(&r.reasons.join("; "), 400));
        }
    } else if let Some(r) = runs.iter().find(|r| !r.reasons.is_empty()) {
        notes.push(format!("worst run {}", cell(&r.reasons[0], 400)));
    }
    format!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        s.name,
        s.payload.describe(),
        delivered,
        fmt(goodput, 0),
        fmt(ratio, 2),
        fmt(objects_per_s, 0),
        fmt(send_cpu, 2),
        fmt(recv_cpu, 2),
        fmt(send_rss, 0),
        fmt(recv_rss, 0),
        fmt_count(sent),
        fmt_count(recv),
        fmt(wire, 3),
        drops,
        if notes.is_empty() {
            "–".into()
        } else {
            notes.join("; ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn counts_are_grouped() {
        assert_eq!(fmt_count(Some(1234567.0)), "1 234 567");
        assert_eq!(fmt_count(Some(12.0)), "12");
        assert_eq!(fmt_count(None), "–");
    }
}

#[cfg(test)]
mod row_tests {
    use super::*;
    use crate::procs::Exit;
    use crate::scenario::all;

    fn scenario(name: &str) -> Scenario {
        all(false).into_iter().find(|s| s.name == name).unwrap()
    }

    fn delivered_run(s: &Scenario) -> RunResult {
        RunResult {
            objects: s.payload.objects(),
            payload_bytes: s.payload.bytes(),
            delivered: s.payload.objects(),
            delivered_bytes: s.payload.bytes(),
            elapsed: Some(2.0),
            sender: Exit {
                cpu_seconds: 2.0,
                ..Exit::default()
            },
            receiver: Exit {
                cpu_seconds: 1.0,
                ..Exit::default()
            },
            ..RunResult::default()
        }
    }

    fn cells(row: &str) -> Vec<String> {
        let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    }

    #[test]
    fn cells_stay_one_line_without_pipes() {
        assert_eq!(cell("a | b\n  c", 100), "a / b c");
        assert_eq!(cell("abcdef", 4), "abc…");
        assert_eq!(cell("abcd", 4), "abcd");
    }

    #[test]
    fn a_failed_scenario_keeps_its_row_and_says_why() {
        let s = scenario("misp-100k");
        let row = failed_row(&s, &["the receiver exited | early\nsee log".into()]);
        let c = cells(&row);
        assert_eq!(c.len(), cells(header().lines().next().unwrap()).len());
        assert_eq!(c[0], "misp-100k");
        assert_eq!(c[2], "failed: 0/1 runs");
        assert_eq!(c[14], "the receiver exited / early see log");
        let iperf = iperf_row(&[], &["iperf3 client failed: busy".into()], 5, Some("4M"));
        let c = cells(&iperf);
        assert_eq!(c[2], "failed: 0/1 runs");
        assert_eq!(c[14], "iperf3 client failed: busy");
    }

    #[test]
    fn pair_rows_name_their_rate_key_and_feed() {
        let bulk = scenario("bulk-keyed");
        let c = cells(&row(
            &bulk,
            &[delivered_run(&bulk)],
            Some(1000.0),
            "2500M",
            1,
        ));
        assert_eq!(c[2], "1/2 runs (worst: 1/1 objects)");
        // 1 GiB in 2 s: 536.9 MB/s, 0.54 of a 1000 MB/s ceiling; 2 CPU-s per GiB sent.
        assert_eq!((c[3].as_str(), c[4].as_str()), ("537", "0.54"));
        assert_eq!((c[6].as_str(), c[7].as_str()), ("2.00", "1.00"));
        assert!(c[14].contains("--key on both sides"), "{}", c[14]);
        assert!(c[14].contains("--rate 2500M (pair rate)"), "{}", c[14]);
        assert!(c[14].contains("1 run(s) gave no result"), "{}", c[14]);
        let misp = scenario("misp-100k");
        let c = cells(&row(&misp, &[delivered_run(&misp)], None, "2500M", 0));
        assert_eq!(c[2], "1/1 runs");
        assert_eq!(c[5], "5000");
        assert!(
            c[14].contains("already holding 100 000 events"),
            "{}",
            c[14]
        );
        let loss = scenario("loss2");
        let c = cells(&row(&loss, &[delivered_run(&loss)], None, "2G", 0));
        assert!(
            c[14].contains("--rate 2G") && !c[14].contains("pair"),
            "{}",
            c[14]
        );
    }

    #[test]
    fn receiver_alone_rows_name_their_pace_and_the_ceiling_what_it_found() {
        let alone = scenario("receiver-alone");
        let c = cells(&row(&alone, &[delivered_run(&alone)], None, "6G", 0));
        assert!(c[14].contains("--replay-rate 6G"), "{}", c[14]);
        let sweep = scenario("receiver-ceiling");
        assert!(sweep.ceiling && sweep.receiver_alone);
        let mut run = delivered_run(&sweep);
        run.ceiling = Some("highest replay rate delivered: 3G; paces tried: 1G 120 MB/s, 2G 230 MB/s, 3G 330 MB/s, 4G failed".into());
        let c = cells(&row(&sweep, &[run], None, "4G", 0));
        assert!(!c[14].contains("--replay-rate"), "{}", c[14]);
        assert!(
            c[14].contains("highest replay rate delivered: 3G"),
            "{}",
            c[14]
        );
        assert!(c[14].contains("4G failed"), "{}", c[14]);
        assert_eq!(crate::alone::fmt_bits(2_500_000_000), "2500M");
        assert_eq!(crate::alone::fmt_bits(10_000_000_000), "10G");
    }

    #[test]
    fn big_and_bulk_run_at_the_one_pair_rate() {
        for name in [
            "bulk",
            "bulk-keyed",
            "big",
            "misp",
            "misp-100k",
            "small",
            "udpcast",
        ] {
            assert_eq!(scenario(name).rate, crate::scenario::PAIR_RATE, "{name}");
        }
        let misp = scenario("misp");
        assert_eq!(misp.payload.objects(), 10_000);
        assert_eq!(scenario("misp-100k").payload, misp.payload);
        assert!(scenario("receiver-alone-keyed").keyed && scenario("sender-alone-keyed").keyed);
    }
}

#[cfg(test)]
mod budget_tests {
    use crate::scenario::{all, run_budget};
    use std::time::Duration;

    #[test]
    fn many_small_objects_get_time_for_each() {
        // 1 GiB: 60 s plus 53 s; 10 000 events of 10 KB: 60 + 5 + 200 s.
        assert_eq!(run_budget(1 << 30, 1), Duration::from_secs(113));
        let misp = all(false).into_iter().find(|s| s.name == "misp").unwrap();
        let b = run_budget(misp.payload.bytes(), misp.payload.objects());
        assert_eq!(b, Duration::from_secs(265));
    }
}
