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

/// The iperf3 ceiling's row.
pub fn iperf_row(runs: &[Ceiling], secs: u32, window: Option<&str>) -> String {
    if runs.is_empty() {
        return "| iperf3 UDP ceiling | – | – | n/a | – | – | – | – | – | – | – | – | – | – | iperf3 not installed: `apt-get install iperf3` |".into();
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

/// One scenario's row: medians over `runs`, goodput also as a fraction of `ceiling` (MB/s).
pub fn row(s: &Scenario, runs: &[RunResult], ceiling: Option<f64>) -> String {
    let n = runs.len();
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
    }
    if s.rate != "4G" {
        notes.push(format!("--rate {}", s.rate));
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
    if let Some(r) = runs.iter().find(|r| !r.reasons.is_empty()) {
        notes.push(format!("worst run {}", r.reasons[0]));
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
