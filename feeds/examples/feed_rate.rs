//! Measures MISP events per second delivered into a feed directory, empty or pre-filled
//! (issue 12: the feed's cost per event must not grow with the feed). Not a test: run it
//! by hand, in release mode, and read the figures it prints.
//!
//! `cargo run --release -p gapferry-feeds --example feed_rate -- [PREFILL] [EVENTS] [BATCH] [DIR]`
//! (defaults: 0 events already in the feed, 2 000 delivered, batches of 64, a temporary
//! directory under `$TMPDIR`). With `PREFILL` 0 and a `DIR` that already holds a feed,
//! the events are delivered into that feed.

use gapferry_feeds::MispFeed;
use std::time::Instant;

/// A MISP event of about `attributes * 100` bytes, with a distinct uuid per `n`.
fn event(n: u64, attributes: usize) -> Vec<u8> {
    let attrs: Vec<serde_json::Value> = (0..attributes)
        .map(|i| {
            serde_json::json!({"type": "domain", "category": "Network activity",
                "value": format!("host-{n}-{i}.example.org"), "to_ids": true,
                "comment": "generated for the feed rate measurement"})
        })
        .collect();
    serde_json::json!({"Event": {
        "uuid": format!("{:08x}-0000-4000-8000-{:012x}", n >> 48, n & 0xffff_ffff_ffff),
        "info": format!("feed rate event {n}"),
        "date": "2024-01-02",
        "timestamp": "1700000000",
        "Orgc": {"name": "ORG", "uuid": "55f6ea5e-2c60-40e5-964f-47a8950d210f"},
        "Attribute": attrs,
    }})
    .to_string()
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (prefill, events, batch) = (arg(0, 0), arg(1, 2_000), arg(2, 64) as usize);
    let tmp = tempfile::tempdir()?;
    let dir = args.get(3).map_or(tmp.path().join("feed"), Into::into);

    if prefill > 0 {
        // The events already there are written as files and indexed once, as
        // `gapferry-recv feed rebuild` would: far quicker than delivering them.
        let started = Instant::now();
        std::fs::create_dir_all(&dir)?;
        for n in 0..prefill {
            let doc = event(n, 10);
            let uuid = &serde_json::from_slice::<serde_json::Value>(&doc)?["Event"]["uuid"];
            std::fs::write(
                dir.join(format!("{}.json", uuid.as_str().unwrap_or_default())),
                doc,
            )?;
        }
        MispFeed::new(&dir).rebuild()?;
        println!(
            "prefilled {prefill} events in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }

    let present = MispFeed::new(&dir).listing()?.events.len();
    let docs: Vec<Vec<u8>> = (0..events).map(|i| event(1 << 40 | i, 70)).collect();
    let bytes: usize = docs.iter().map(Vec::len).sum();
    let mut feed = MispFeed::new(&dir);
    let started = Instant::now();
    for chunk in docs.chunks(batch) {
        for r in feed.deliver_batch(chunk)? {
            r?;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{events} events of {} B into a feed of {present}, batches of {batch}: {:.0} events/s ({secs:.2} s)",
        bytes / docs.len().max(1),
        events as f64 / secs
    );
    Ok(())
}
