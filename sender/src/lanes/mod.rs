//! Lanes: one session sent over several destinations (several diodes, or several ports of
//! one), each with its own socket and its own pacer.
//!
//! Symbols are striped across the lanes, each block's symbols spread in proportion to the
//! lanes' rates, so a dead lane costs every block the same fraction of its symbols, which
//! `--repair` can cover; whole blocks per lane would make a dead lane lose whole blocks.
//! Every other datagram (descriptors, heartbeats, inventories) goes on every lane, so any
//! one live lane carries the whole control plane. A lane whose socket fails is logged and
//! counted and the others go on; only every lane failing stops the session.

use crate::pacer::Pacer;
use crate::sink::DatagramSink;
use gapferry_common::wire::{DatagramType, COMMON_HEADER_LEN, DATA_HEADER_LEN};
use gapferry_metrics::LaneLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use std::io;
use std::time::Instant;

pub mod state;

/// Slots per lane of the striping pattern when the rates have no small ratio: rates are
/// then rounded to this resolution.
const PATTERN_SLOTS: u64 = 64;

/// Per-lane sender metrics; clones share the same values.
#[derive(Clone, Debug, Default)]
pub struct LaneMetrics {
    /// Datagrams sent, by lane.
    pub datagrams: Family<LaneLabel, Counter>,
    /// UDP payload bytes sent, by lane.
    pub bytes: Family<LaneLabel, Counter>,
    /// Sends the socket refused, by lane.
    pub send_errors: Family<LaneLabel, Counter>,
    /// The lane's configured rate.
    pub rate: Family<LaneLabel, Gauge>,
}

impl LaneMetrics {
    /// Registers the lane metrics under `gapferry_sender_lane_`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("gapferry_sender_lane");
        r.register("datagrams_sent", "Datagrams sent", self.datagrams.clone());
        r.register_with_unit(
            "sent",
            "UDP payload bytes sent",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "send_errors",
            "Sends the socket refused",
            self.send_errors.clone(),
        );
        r.register(
            "rate_bits_per_second",
            "Configured lane rate",
            self.rate.clone(),
        );
    }
}

/// What one lane has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaneCounts {
    /// Datagrams handed to the lane's socket.
    pub datagrams: u64,
    /// Their UDP payload bytes.
    pub bytes: u64,
    /// Sends the socket refused.
    pub send_errors: u64,
}

/// One destination with its socket (or any sink) and its pacer.
pub struct Lane {
    name: String,
    rate_bps: u64,
    sink: Box<dyn DatagramSink + Send>,
    pacer: Pacer,
    counts: LaneCounts,
    /// The last send on this lane failed.
    failing: bool,
    /// This lane's metric counters: datagrams, bytes, send errors.
    counters: [Counter; 3],
}

impl Lane {
    /// A lane called `name` (its destination) paced at `rate_bps`.
    pub fn new(name: String, rate_bps: u64, sink: Box<dyn DatagramSink + Send>) -> Self {
        Lane {
            name,
            rate_bps,
            sink,
            pacer: Pacer::new(rate_bps),
            counts: LaneCounts::default(),
            failing: false,
            counters: Default::default(),
        }
    }

    fn count_sent(&mut self, bytes: usize) {
        self.counts.datagrams += 1;
        self.counts.bytes += bytes as u64;
        self.counters[0].inc();
        self.counters[1].inc_by(bytes as u64);
    }
}

/// Several lanes behind one [`DatagramSink`]: the session schedules at the sum of their
/// rates, each lane holds its datagrams to its own rate.
pub struct Lanes {
    lanes: Vec<Lane>,
    /// Lane index per striping slot, each lane in proportion to its rate.
    pattern: Vec<usize>,
    metrics: LaneMetrics,
    /// Where `status` reads the lanes (the outbox service only).
    state: Option<state::StateFile>,
}

/// Which lanes get how many slots: a smooth weighted round robin over the lanes' rates.
fn striping_pattern(rates: &[u64]) -> Vec<usize> {
    let common = rates.iter().copied().fold(0, gcd).max(1);
    let mut weights: Vec<u64> = rates.iter().map(|r| r / common).collect();
    if weights.iter().sum::<u64>() > PATTERN_SLOTS {
        let max = rates.iter().copied().max().unwrap_or(1).max(1);
        weights = rates
            .iter()
            .map(|&r| ((u128::from(r) * u128::from(PATTERN_SLOTS) / u128::from(max)) as u64).max(1))
            .collect();
        let common = weights.iter().copied().fold(0, gcd).max(1);
        weights.iter_mut().for_each(|w| *w /= common);
    }
    let weights: Vec<i64> = weights.iter().map(|&w| w as i64).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            current.iter_mut().zip(&weights).for_each(|(c, w)| *c += w);
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("at least one lane");
            current[best] -= total;
            best
        })
        .collect()
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The striping key of a data datagram (object + block + symbol id, so both the symbols
/// of one block and the consecutive blocks of a spread go round the lanes), or `None` for
/// a datagram every lane carries.
fn stripe_key(datagram: &[u8]) -> Option<u64> {
    if datagram.len() < DATA_HEADER_LEN || datagram[3] != DatagramType::Data as u8 {
        return None;
    }
    let at = |i: usize| u32::from_be_bytes(datagram[i..i + 4].try_into().expect("4 bytes"));
    let object = at(COMMON_HEADER_LEN - 4);
    let (block, esi) = (at(20), at(24));
    Some(u64::from(object) + u64::from(block) + u64::from(esi))
}

impl Lanes {
    /// Lanes over `lanes` (at least one).
    pub fn new(lanes: Vec<Lane>) -> Self {
        assert!(!lanes.is_empty(), "at least one lane");
        let rates: Vec<u64> = lanes.iter().map(|l| l.rate_bps).collect();
        let metrics = LaneMetrics::default();
        let mut lanes = lanes;
        for l in &mut lanes {
            let label = LaneLabel {
                lane: l.name.clone(),
            };
            metrics.rate.get_or_create(&label).set(l.rate_bps as i64);
            l.counters = [
                metrics.datagrams.get_or_create(&label).clone(),
                metrics.bytes.get_or_create(&label).clone(),
                metrics.send_errors.get_or_create(&label).clone(),
            ];
        }
        Lanes {
            pattern: striping_pattern(&rates),
            lanes,
            metrics,
            state: None,
        }
    }

    /// Also keeps the lanes' state file in `dir` (the outbox's journal directory) for
    /// `gapferry-send status`.
    pub fn with_state_file(mut self, dir: std::path::PathBuf) -> Self {
        self.state = Some(state::StateFile::new(dir));
        self
    }

    /// Writes the state file if it is due (`force`: now).
    fn note_state(&mut self, force: bool) {
        if let Some(file) = self.state.as_mut() {
            let lanes = &self.lanes;
            file.update(
                || {
                    lanes
                        .iter()
                        .map(|l| state::LaneState::of(&l.name, l.rate_bps, &l.counts, l.failing))
                        .collect()
                },
                force,
            );
        }
    }

    /// The lanes' metrics (register them to serve them).
    pub fn metrics(&self) -> LaneMetrics {
        self.metrics.clone()
    }

    /// Sum of the lanes' rates: the session's schedule.
    pub fn total_rate(&self) -> u64 {
        self.lanes.iter().map(|l| l.rate_bps).sum()
    }

    /// Each lane's name and counts so far.
    pub fn counts(&self) -> Vec<(String, LaneCounts)> {
        self.lanes
            .iter()
            .map(|l| (l.name.clone(), l.counts.clone()))
            .collect()
    }

    /// Notes the outcome of a send on lane `i`: an error is logged and counted, and only
    /// returned when every lane is failing.
    fn outcome(&mut self, i: usize, result: io::Result<()>) -> io::Result<()> {
        let lane = &mut self.lanes[i];
        match result {
            Ok(()) => {
                if lane.failing {
                    tracing::info!(lane = %lane.name, "lane sends again");
                    lane.failing = false;
                }
                Ok(())
            }
            Err(e) => {
                lane.counts.send_errors += 1;
                lane.counters[2].inc();
                if !lane.failing {
                    tracing::warn!(lane = %lane.name, error = %e,
                        "lane cannot send; going on with the other lanes (check the route and the far side of this lane)");
                    lane.failing = true;
                }
                if self.lanes.iter().all(|l| l.failing) {
                    return Err(e);
                }
                Ok(())
            }
        }
    }

    /// Sends `datagram` on lane `i`, at `at` or later as its pacer allows.
    fn send_on(&mut self, i: usize, datagram: &[u8], at: Instant) -> io::Result<()> {
        let lane = &mut self.lanes[i];
        let at = if lane.sink.real_time() {
            at.max(lane.pacer.schedule(datagram.len(), Instant::now()))
        } else {
            at
        };
        let result = lane.sink.send(datagram, at);
        if result.is_ok() {
            lane.count_sent(datagram.len());
        }
        let result = self.outcome(i, result);
        self.note_state(false);
        result
    }

    /// Runs `f` on every lane's sink, each failure noted as a send's.
    fn each(&mut self, f: impl Fn(&mut dyn DatagramSink) -> io::Result<()>) -> io::Result<()> {
        let mut result = Ok(());
        for i in 0..self.lanes.len() {
            let r = f(self.lanes[i].sink.as_mut());
            if let Err(e) = self.outcome(i, r) {
                result = Err(e);
            }
        }
        result
    }
}

impl DatagramSink for Lanes {
    fn send(&mut self, datagram: &[u8], at: Instant) -> io::Result<()> {
        match stripe_key(datagram) {
            Some(key) => {
                let i = self.pattern[(key % self.pattern.len() as u64) as usize];
                self.send_on(i, datagram, at)
            }
            None => {
                let mut result = Ok(());
                for i in 0..self.lanes.len() {
                    if let Err(e) = self.send_on(i, datagram, at) {
                        result = Err(e);
                    }
                }
                result
            }
        }
    }

    fn real_time(&self) -> bool {
        self.lanes.iter().all(|l| l.sink.real_time())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.each(|s| s.flush())
    }

    fn finish(&mut self) -> io::Result<()> {
        let result = self.each(|s| s.finish());
        self.note_state(true);
        for (name, c) in self.counts() {
            tracing::info!(lane = %name, datagrams = c.datagrams, bytes = c.bytes,
                send_errors = c.send_errors, "lane done");
        }
        result
    }
}

/// Why the lanes given cannot be paired up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LanePlanError {
    /// No destination.
    #[error("--to is required (or `to` in --config)")]
    NoDestination,
    /// `--rate` given neither once nor once per `--to`.
    #[error("{rates} --rate for {lanes} --to: give --rate once (each lane at that rate) or once per --to, in the same order")]
    RateCount {
        /// `--rate`s given.
        rates: usize,
        /// `--to`s given.
        lanes: usize,
    },
    /// `--bind` given neither never nor once per `--to`.
    #[error("{binds} --bind for {lanes} --to: give no --bind, or one per --to in the same order")]
    BindCount {
        /// `--bind`s given.
        binds: usize,
        /// `--to`s given.
        lanes: usize,
    },
}

/// Pairs each destination with its bind address and rate: `rates` holds one rate for
/// every lane or one per lane (empty: `default_rate` each), `binds` none or one per lane
/// (a single destination takes a single bind, as before lanes).
pub fn plan<T, B: Clone>(
    to: Vec<T>,
    binds: Vec<B>,
    rates: &[u64],
    default_rate: u64,
) -> Result<Vec<(T, Option<B>, u64)>, LanePlanError> {
    let lanes = to.len();
    if lanes == 0 {
        return Err(LanePlanError::NoDestination);
    }
    let rate = |i: usize| match rates.len() {
        0 => Ok(default_rate),
        1 => Ok(rates[0]),
        n if n == lanes => Ok(rates[i]),
        n => Err(LanePlanError::RateCount { rates: n, lanes }),
    };
    if !binds.is_empty() && binds.len() != lanes {
        return Err(LanePlanError::BindCount {
            binds: binds.len(),
            lanes,
        });
    }
    to.into_iter()
        .enumerate()
        .map(|(i, t)| Ok((t, binds.get(i).cloned(), rate(i)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A sink recording what it got, failing while told to.
    struct Recorder {
        got: Arc<Mutex<Vec<Vec<u8>>>>,
        fail: Arc<Mutex<bool>>,
    }

    impl DatagramSink for Recorder {
        fn send(&mut self, datagram: &[u8], _at: Instant) -> io::Result<()> {
            if *self.fail.lock().unwrap() {
                return Err(io::Error::from_raw_os_error(libc::ENETUNREACH));
            }
            self.got.lock().unwrap().push(datagram.to_vec());
            Ok(())
        }
        fn real_time(&self) -> bool {
            false
        }
    }

    type Taps = Vec<(Arc<Mutex<Vec<Vec<u8>>>>, Arc<Mutex<bool>>)>;

    fn lanes(rates: &[u64]) -> (Lanes, Taps) {
        let mut taps = Vec::new();
        let lanes = rates
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                let (got, fail) = (Arc::default(), Arc::default());
                taps.push((Arc::clone(&got), Arc::clone(&fail)));
                Lane::new(format!("lane{i}"), r, Box::new(Recorder { got, fail }))
            })
            .collect();
        (Lanes::new(lanes), taps)
    }

    fn data(object: u32, block: u32, esi: u32) -> Vec<u8> {
        let mut d = vec![0u8; DATA_HEADER_LEN + 8];
        d[3] = DatagramType::Data as u8;
        d[16..20].copy_from_slice(&object.to_be_bytes());
        d[20..24].copy_from_slice(&block.to_be_bytes());
        d[24..28].copy_from_slice(&esi.to_be_bytes());
        d
    }

    fn heartbeat() -> Vec<u8> {
        let mut d = vec![0u8; 40];
        d[3] = DatagramType::Heartbeat as u8;
        d
    }

    #[test]
    fn each_block_is_striped_by_rate_and_control_goes_everywhere() {
        let (mut l, taps) = lanes(&[300_000_000, 100_000_000]);
        assert_eq!(l.total_rate(), 400_000_000);
        let now = Instant::now();
        for block in 0..4 {
            for esi in 0..400 {
                l.send(&data(7, block, esi), now).unwrap();
            }
        }
        l.send(&heartbeat(), now).unwrap();
        let count = |i: usize, block: u32| {
            taps[i]
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|d| d[3] == 1 && d[20..24] == block.to_be_bytes())
                .count()
        };
        for block in 0..4 {
            assert_eq!((count(0, block), count(1, block)), (300, 100));
        }
        for (got, _) in &taps {
            assert_eq!(
                got.lock().unwrap().last().unwrap()[3],
                3,
                "heartbeat on every lane"
            );
        }
    }

    #[test]
    fn consecutive_blocks_of_a_spread_alternate_lanes() {
        let (mut l, taps) = lanes(&[100_000_000, 100_000_000]);
        let now = Instant::now();
        // A spread sends symbol 0 of blocks 0..4, then symbol 1 of each, and so on.
        for esi in 0..2 {
            for block in 0..4 {
                l.send(&data(1, block, esi), now).unwrap();
            }
        }
        assert_eq!(taps[0].0.lock().unwrap().len(), 4);
        assert_eq!(taps[1].0.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_failing_lane_is_counted_and_only_all_failing_stops() {
        let (mut l, taps) = lanes(&[100_000_000, 100_000_000]);
        let now = Instant::now();
        *taps[1].1.lock().unwrap() = true;
        for esi in 0..10 {
            l.send(&data(0, 0, esi), now).unwrap();
        }
        l.send(&heartbeat(), now).unwrap();
        let counts = l.counts();
        assert_eq!(counts[0].1.datagrams, 6);
        assert_eq!(counts[1].1.send_errors, 6);
        *taps[0].1.lock().unwrap() = true;
        assert!(l.send(&heartbeat(), now).is_err(), "every lane failing");
        *taps[0].1.lock().unwrap() = false;
        l.send(&heartbeat(), now).unwrap();
        assert_eq!(l.counts()[0].1.datagrams, 7);
    }

    #[test]
    fn one_lane_fails_as_one_socket_did() {
        let (mut l, taps) = lanes(&[100_000_000]);
        *taps[0].1.lock().unwrap() = true;
        assert!(l.send(&data(0, 0, 0), Instant::now()).is_err());
    }

    #[test]
    fn plan_pairs_rates_and_binds_or_says_what_to_give() {
        assert_eq!(
            plan(vec!["a"], Vec::<u8>::new(), &[], 9),
            Ok(vec![("a", None, 9)])
        );
        assert_eq!(
            plan(vec!["a", "b"], vec![1, 2], &[5], 9),
            Ok(vec![("a", Some(1), 5), ("b", Some(2), 5)])
        );
        assert_eq!(
            plan(vec!["a", "b"], Vec::<u8>::new(), &[5, 6], 9),
            Ok(vec![("a", None, 5), ("b", None, 6)])
        );
        let e = plan(vec!["a", "b", "c"], Vec::<u8>::new(), &[5, 6], 9).unwrap_err();
        assert_eq!(e, LanePlanError::RateCount { rates: 2, lanes: 3 });
        assert!(e.to_string().contains("give --rate once"), "{e}");
        let e = plan(vec!["a", "b"], vec![1], &[], 9).unwrap_err();
        assert_eq!(e, LanePlanError::BindCount { binds: 1, lanes: 2 });
        assert_eq!(
            plan(Vec::<u8>::new(), Vec::<u8>::new(), &[], 9),
            Err(LanePlanError::NoDestination)
        );
    }

    #[test]
    fn striping_pattern_follows_rates() {
        assert_eq!(striping_pattern(&[5, 5]), vec![0, 1]);
        let p = striping_pattern(&[200, 100]);
        assert_eq!(
            p.iter().filter(|&&i| i == 0).count(),
            2 * p.iter().filter(|&&i| i == 1).count()
        );
        assert_eq!(striping_pattern(&[7]), vec![0]);
    }
}
