//! Bursts at the edges of a session, in process: the real sender session writes its
//! datagrams into memory, a burst of 64 consecutive datagrams (plus 2 % random loss) is cut
//! out at the first datagram, in the middle or at the last datagrams, and the real
//! assembler gets the rest. Every object must arrive byte-identical, whatever the burst hit:
//! descriptors, the first or last objects, the ending signals.
//!
//! A second test loses 60 % of the datagrams: every object the sender sent must then have
//! an outcome within a few seconds of the last datagram, not at the session timeout.
//!
//! The same files cross a real one-way link in `oneway_link.rs` (root, namespaces).

use gapferry_common::compress::decompress_block;
use gapferry_common::{Assembler, Event, KeyRing, Limits, ObjectDescriptor, ObjectRef};
use gapferry_sender::progress::Progress;
use gapferry_sender::sink::DatagramSink;
use gapferry_sender::source::{self, KindMode, SourceFile};
use gapferry_sender::{SenderConfig, SenderSession};
use gapferry_tests::fixtures::{json_file, random_file};
use gapferry_tests::realdata::realdata;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Datagrams and their scheduled times, as a capture would hold them.
type Captured = Arc<Mutex<Vec<(Vec<u8>, Instant)>>>;

struct MemorySink(Captured);

impl DatagramSink for MemorySink {
    fn send(&mut self, datagram: &[u8], at: Instant) -> std::io::Result<()> {
        self.0.lock().unwrap().push((datagram.to_vec(), at));
        Ok(())
    }
    fn real_time(&self) -> bool {
        false
    }
}

/// The set: 0 B, 1 B, 700 KB, a large file, 200 objects of 1-20 KB, a real MISP
/// event and a real STIX bundle, in that order (the last objects are the small real ones).
fn inputs(dir: &Path, large: usize) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let mut add = |name: &str, f: &dyn Fn(&Path)| {
        let p = dir.join(name);
        f(&p);
        paths.push(p);
    };
    add("empty.bin", &|p| std::fs::write(p, b"").unwrap());
    add("one.bin", &|p| std::fs::write(p, b"x").unwrap());
    add("mid.bin", &|p| random_file(p, 700_000, 1));
    add("big.bin", &|p| random_file(p, large, 2));
    let small = dir.join("small");
    std::fs::create_dir(&small).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    for i in 0..200u64 {
        let size = rng.random_range(1_000..=20_000);
        let p = small.join(format!("s{i:03}.json"));
        if i % 2 == 0 {
            json_file(&p, size, i);
        } else {
            random_file(&p, size, i);
        }
    }
    paths.push(small);
    let misp =
        realdata().join("misp-events/pymisp-tests/57c4445b-c548-4654-af0b-4be3950d210f.json");
    let stix = realdata().join("stix21/oasis-examples/indicator-for-c2-ip-address.json");
    for p in [misp, stix] {
        assert!(p.is_file(), "real data missing: {}", p.display());
        paths.push(p);
    }
    paths
}

/// Sends `files` through a real sender session into memory.
fn send(files: &[SourceFile]) -> Vec<(Vec<u8>, Instant)> {
    let captured = Captured::default();
    let cfg = SenderConfig {
        rate_bps: 1_000_000_000,
        repair_percent: 15,
        ..SenderConfig::default()
    };
    let mut session =
        SenderSession::with_id(0x5eed, cfg, Box::new(MemorySink(captured.clone()))).unwrap();
    let reports = session.send_files(files, &Progress::hidden()).unwrap();
    assert!(reports.iter().all(|r| r.error.is_none()), "{reports:?}");
    session.finish().unwrap();
    let out = std::mem::take(&mut *captured.lock().unwrap());
    out
}

/// What the assembler made of the datagrams that survived.
#[derive(Default)]
struct Outcome {
    delivered: BTreeMap<String, Vec<u8>>,
    failed: Vec<String>,
    lost: Vec<u32>,
    /// Object ids with any outcome, and when (time of the tick that produced it).
    resolved: BTreeMap<u32, Duration>,
}

/// Feeds the datagrams the `keep` filter lets through, at their scheduled times, ticking
/// every 100 ms, and goes on ticking for `after` past the last datagram.
fn receive(
    datagrams: &[(Vec<u8>, Instant)],
    keep: impl Fn(usize, Duration) -> bool,
    after: Duration,
) -> (Outcome, Duration) {
    let t0 = datagrams[0].1;
    let mut a = Assembler::new(Limits::default(), KeyRing::default());
    let mut out = Outcome::default();
    let mut descriptors: HashMap<ObjectRef, ObjectDescriptor> = HashMap::new();
    let mut buffers: HashMap<ObjectRef, Vec<u8>> = HashMap::new();
    let mut next_tick = Duration::ZERO;
    let mut last = Duration::ZERO;
    let mut drain = |a: &mut Assembler, now: Duration, out: &mut Outcome| {
        while let Some(e) = a.poll_event() {
            match e {
                Event::ObjectStarted { object, descriptor } => {
                    buffers.insert(object, vec![0; descriptor.size as usize]);
                    descriptors.insert(object, descriptor);
                }
                Event::BlockDecoded {
                    object,
                    block,
                    codec,
                    plain_len,
                    data,
                } => {
                    let d = &descriptors[&object];
                    let plain = decompress_block(codec, data, plain_len).unwrap();
                    let at = block as usize * d.block_plain_size as usize;
                    buffers.get_mut(&object).unwrap()[at..at + plain.len()].copy_from_slice(&plain);
                }
                Event::ObjectComplete { object, blake3 } => {
                    let d = &descriptors[&object];
                    let bytes = buffers.remove(&object).unwrap();
                    assert_eq!(*blake3::hash(&bytes).as_bytes(), blake3, "{}", d.name);
                    assert!(d.known_blake3().is_none_or(|k| k == blake3), "{}", d.name);
                    out.delivered.insert(d.name.clone(), bytes);
                    out.resolved.insert(object.object, now);
                }
                Event::ObjectFailed {
                    object,
                    descriptor,
                    reason,
                    ..
                } => {
                    let name = descriptor.map_or(String::new(), |d| d.name);
                    out.failed.push(format!("{object} {name}: {reason}"));
                    out.resolved.insert(object.object, now);
                }
                Event::ObjectLost { object, .. } => {
                    out.lost.push(object.object);
                    out.resolved.insert(object.object, now);
                }
                _ => {}
            }
        }
    };
    for (i, (d, at)) in datagrams.iter().enumerate() {
        let now = *at - t0;
        while next_tick <= now {
            a.tick(next_tick);
            drain(&mut a, next_tick, &mut out);
            next_tick += Duration::from_millis(100);
        }
        if keep(i, now) {
            let _ = a.handle(now, d);
            drain(&mut a, now, &mut out);
            last = now;
        }
    }
    let end = datagrams.last().unwrap().1 - t0 + after;
    while next_tick <= end {
        a.tick(next_tick);
        drain(&mut a, next_tick, &mut out);
        next_tick += Duration::from_millis(100);
    }
    (out, last)
}

fn content(f: &SourceFile) -> Vec<u8> {
    let mut v = Vec::new();
    f.open().unwrap().read_to_end(&mut v).unwrap();
    v
}

/// Cuts a burst of 64 datagrams out at `start`, with 2 % random loss beside it, and checks
/// that every one of `files` is still delivered intact; `what` names the burst.
fn assert_burst_costs_nothing(
    datagrams: &[(Vec<u8>, Instant)],
    files: &[SourceFile],
    start: usize,
    what: &str,
) {
    let n = datagrams.len();
    let burst = start..start + 64;
    let mut rng = StdRng::seed_from_u64(start as u64);
    let random: Vec<bool> = (0..n).map(|_| rng.random_bool(0.02)).collect();
    let (out, _) = receive(
        datagrams,
        |i, _| !burst.contains(&i) && !random[i],
        Duration::from_secs(5),
    );
    assert!(
        out.failed.is_empty() && out.lost.is_empty(),
        "burst {what}: failed {:?}, lost {:?}",
        out.failed,
        out.lost
    );
    for f in files {
        assert!(
            out.delivered.get(&f.name).is_some_and(|g| *g == content(f)),
            "burst {what}: {} not delivered intact",
            f.name
        );
    }
}

#[test]
fn a_burst_of_64_at_the_start_middle_or_end_costs_no_object() {
    let dir = tempfile::tempdir().unwrap();
    let paths = inputs(dir.path(), 8 << 20);
    let files = source::collect(&paths, KindMode::Auto).unwrap();
    assert_eq!(files.len(), 206);
    let datagrams = send(&files);
    let n = datagrams.len();
    for (what, start) in [("first", 0), ("middle", n / 2), ("last", n - 64)] {
        assert_burst_costs_nothing(
            &datagrams,
            &files,
            start,
            &format!("at the {what} datagrams"),
        );
    }
}

#[test]
fn a_link_outage_at_the_end_costs_no_object() {
    // A link that flaps for 20 ms just before the last datagram, and one at the start of
    // the last padded matrix (the session's last quarter second).
    let dir = tempfile::tempdir().unwrap();
    let paths = inputs(dir.path(), 1 << 20);
    let files = source::collect(&paths, KindMode::Auto).unwrap();
    let datagrams = send(&files);
    let t0 = datagrams[0].1;
    let end = datagrams.last().unwrap().1 - t0;
    let outage = Duration::from_millis(20);
    let flush_start = end.saturating_sub(Duration::from_millis(650));
    for from in [end.saturating_sub(outage), flush_start] {
        let (out, _) = receive(
            &datagrams,
            |_, t| !(from..from + outage).contains(&t),
            Duration::from_secs(5),
        );
        assert!(
            out.failed.is_empty() && out.lost.is_empty(),
            "outage at {from:?}: {:?} {:?}",
            out.failed,
            out.lost
        );
        assert_eq!(out.delivered.len(), files.len(), "outage at {from:?}");
    }
}

#[test]
fn at_60_percent_loss_every_object_has_an_outcome_soon_after_the_last_datagram() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for i in 0..20u64 {
        let p = dir.path().join(format!("f{i}.bin"));
        random_file(&p, 30_000 * (i as usize + 1), i);
        paths.push(p);
    }
    let files = source::collect(&paths, KindMode::Auto).unwrap();
    let datagrams = send(&files);
    let mut rng = StdRng::seed_from_u64(60);
    let keep: Vec<bool> = (0..datagrams.len()).map(|_| rng.random_bool(0.4)).collect();
    let (out, last) = receive(&datagrams, |i, _| keep[i], Duration::from_secs(10));
    assert_eq!(
        out.resolved.len(),
        files.len(),
        "objects with an outcome: {:?}",
        out.resolved.keys().collect::<Vec<_>>()
    );
    assert!(!out.failed.is_empty(), "60 % loss fails some objects");
    for (object, at) in &out.resolved {
        assert!(
            *at <= last + Duration::from_secs(5),
            "object {object} resolved at {at:?}, the last datagram arrived at {last:?}"
        );
    }
}

/// Where the descriptor copies of object `object` are among `datagrams`, and which of them
/// carry the object's blake3.
fn descriptor_copies(datagrams: &[(Vec<u8>, Instant)], object: u32) -> Vec<(usize, bool)> {
    use gapferry_common::wire::{self, Datagram, DatagramType};
    datagrams
        .iter()
        .enumerate()
        .filter_map(|(i, (d, _))| match wire::parse(d, &KeyRing::default()) {
            Ok(Datagram::Control {
                kind: DatagramType::Descriptor,
                object: o,
                body,
                ..
            }) if o == object => {
                let d: ObjectDescriptor = gapferry_common::control::decode(body).unwrap();
                Some((i, d.known_blake3().is_some()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_file_read_once_arrives_whatever_burst_hits_the_copies_carrying_its_hash() {
    // Three windows of blocks, then small objects; old enough to be read once (the sender
    // learns the big file's hash while reading it and sends it in its last copies).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    random_file(&big, 24 << 20, 7);
    let mut paths = vec![big];
    for i in 0..20u64 {
        let p = dir.path().join(format!("after{i:02}.json"));
        json_file(&p, 5_000, i);
        paths.push(p);
    }
    std::thread::sleep(gapferry_sender::prepare::SETTLE + Duration::from_millis(500));
    let files = source::collect(&paths, KindMode::Auto).unwrap();
    let datagrams = send(&files);
    let copies = descriptor_copies(&datagrams, 0);
    assert!(
        !copies[0].1,
        "the big file's first copy goes out before it is read"
    );
    let hashed: Vec<usize> = copies.iter().filter(|c| c.1).map(|c| c.0).collect();
    assert!(
        hashed.len() >= 8,
        "copies carrying the hash: {} of {}",
        hashed.len(),
        copies.len()
    );
    // The small ones are read whole before their first datagram: every copy has the hash.
    assert!(descriptor_copies(&datagrams, 5).iter().all(|c| c.1));
    let n = datagrams.len();
    let (first, last) = (hashed[0], *hashed.last().unwrap());
    for (what, start) in [
        ("at the first copy carrying the hash", first),
        (
            "ending at the last copy carrying it",
            last.saturating_sub(63),
        ),
        ("at the last datagrams", n - 64),
    ] {
        assert_burst_costs_nothing(&datagrams, &files, start, what);
    }
    // Every copy carrying the hash lost (no burst does that; a targeted drop does): the big
    // file is not delivered and says why; the others are.
    let (out, _) = receive(
        &datagrams,
        |i, _| !hashed.contains(&i),
        Duration::from_secs(5),
    );
    assert!(!out.delivered.contains_key("big.bin"));
    assert!(
        out.failed
            .iter()
            .any(|f| f.contains("big.bin") && f.contains("carrying its blake3")),
        "{:?}",
        out.failed
    );
    assert_eq!(out.delivered.len(), files.len() - 1);
}
