//! Lanes on the receiving side: one bound socket per `--bind`, each drained by its own
//! thread into the one assembler. Owns each lane's counters (datagrams, bytes, rejected,
//! kernel drops, last datagram), their metrics (label `lane`), the lanes' state file
//! (`<out>/.gapferry/lanes.json`) and the lane lines of `status`.

use gapferry_metrics::LaneLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// File name of the lanes' state inside the state directory.
pub const LANES_FILE: &str = "lanes.json";

/// Per-lane receiver metrics; clones share the same values.
#[derive(Clone, Debug, Default)]
pub struct LaneMetrics {
    /// Datagrams read, by lane.
    pub datagrams: Family<LaneLabel, Counter>,
    /// UDP payload bytes read, by lane.
    pub bytes: Family<LaneLabel, Counter>,
    /// Datagrams refused at the socket (wire checks, tag), by lane.
    pub rejected: Family<LaneLabel, Counter>,
    /// Datagrams the kernel dropped for the lane's socket, by lane.
    pub kernel_drops: Family<LaneLabel, Counter>,
    /// Unix seconds of the lane's last datagram, 0 before the first.
    pub last_datagram: Family<LaneLabel, Gauge>,
}

impl LaneMetrics {
    /// Registers the lane metrics under `lane_` in `r`.
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("lane");
        r.register(
            "datagrams_received",
            "Datagrams read, by lane",
            self.datagrams.clone(),
        );
        r.register_with_unit(
            "received",
            "UDP payload bytes read, by lane",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register(
            "rejected",
            "Datagrams refused at the socket, by lane",
            self.rejected.clone(),
        );
        r.register(
            "socket_dropped",
            "Datagrams the kernel dropped for the lane's socket",
            self.kernel_drops.clone(),
        );
        r.register(
            "last_datagram_unix_seconds",
            "When the lane's last datagram arrived",
            self.last_datagram.clone(),
        );
    }
}

/// One lane's live counters, shared by its socket thread and the state writer.
#[derive(Debug)]
pub struct LaneCounters {
    addr: SocketAddr,
    datagrams: Counter,
    bytes: Counter,
    rejected: Counter,
    kernel_drops: Counter,
    last_datagram: Gauge,
    last_ms: AtomicU64,
}

impl LaneCounters {
    /// Counters of the lane bound at `addr`, published in `metrics`.
    pub fn new(addr: SocketAddr, metrics: &LaneMetrics) -> Arc<Self> {
        let label = LaneLabel {
            lane: addr.to_string(),
        };
        Arc::new(LaneCounters {
            addr,
            datagrams: metrics.datagrams.get_or_create(&label).clone(),
            bytes: metrics.bytes.get_or_create(&label).clone(),
            rejected: metrics.rejected.get_or_create(&label).clone(),
            kernel_drops: metrics.kernel_drops.get_or_create(&label).clone(),
            last_datagram: metrics.last_datagram.get_or_create(&label).clone(),
            last_ms: AtomicU64::new(0),
        })
    }

    /// Notes `n` datagrams of `bytes` bytes read now.
    pub fn received(&self, n: u64, bytes: u64) {
        self.datagrams.inc_by(n);
        self.bytes.inc_by(bytes);
        let ms = unix_ms(SystemTime::now());
        self.last_ms.store(ms, Ordering::Relaxed);
        self.last_datagram.set((ms / 1000) as i64);
    }

    /// Notes `n` datagrams refused at the socket.
    pub fn rejected(&self, n: u64) {
        self.rejected.inc_by(n);
    }

    /// Notes `n` more datagrams dropped by the kernel.
    pub fn kernel_dropped(&self, n: u64) {
        self.kernel_drops.inc_by(n);
    }

    /// A snapshot for the state file.
    pub fn state(&self) -> LaneState {
        let last = self.last_ms.load(Ordering::Relaxed);
        LaneState {
            lane: self.addr.to_string(),
            datagrams: self.datagrams.get(),
            bytes: self.bytes.get(),
            rejected: self.rejected.get(),
            kernel_drops: self.kernel_drops.get(),
            last_datagram_unix_ms: (last > 0).then_some(last),
            up_since_unix_ms: None,
        }
    }
}

/// One lane as `lanes.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LaneState {
    /// The bound address.
    pub lane: String,
    /// Datagrams read.
    pub datagrams: u64,
    /// UDP payload bytes read.
    pub bytes: u64,
    /// Datagrams refused at the socket.
    pub rejected: u64,
    /// Datagrams the kernel dropped for the socket.
    pub kernel_drops: u64,
    /// When the last datagram arrived, Unix milliseconds.
    pub last_datagram_unix_ms: Option<u64>,
    /// Since when datagrams have arrived without a silence of [`LINK_DOWN_AFTER`].
    ///
    /// [`LINK_DOWN_AFTER`]: crate::status::LINK_DOWN_AFTER
    pub up_since_unix_ms: Option<u64>,
}

/// Writes `lanes.json` from the lanes' counters, keeping when each lane came up.
pub struct LanesFile {
    state_dir: std::path::PathBuf,
    lanes: Vec<Arc<LaneCounters>>,
    up_since: Vec<Option<u64>>,
}

impl LanesFile {
    /// A writer for `lanes` under `state_dir`.
    pub fn new(state_dir: std::path::PathBuf, lanes: Vec<Arc<LaneCounters>>) -> Self {
        let up_since = vec![None; lanes.len()];
        LanesFile {
            state_dir,
            lanes,
            up_since,
        }
    }

    /// Rewrites the file with the counters now; a lane silent for [`LINK_DOWN_AFTER`]
    /// loses its "up since", the first datagram after sets it again.
    ///
    /// [`LINK_DOWN_AFTER`]: crate::status::LINK_DOWN_AFTER
    pub fn write(&mut self) -> std::io::Result<()> {
        let now = unix_ms(SystemTime::now());
        let down_after = crate::status::LINK_DOWN_AFTER.as_millis() as u64;
        let states: Vec<LaneState> = self
            .lanes
            .iter()
            .zip(self.up_since.iter_mut())
            .map(|(lane, up)| {
                let mut s = lane.state();
                match s.last_datagram_unix_ms {
                    Some(last) if now.saturating_sub(last) < down_after => {
                        *up = Some(up.unwrap_or(last).min(last));
                    }
                    _ => *up = None,
                }
                s.up_since_unix_ms = *up;
                s
            })
            .collect();
        let tmp = self.state_dir.join(format!(".{LANES_FILE}.tmp"));
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(&states).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, self.state_dir.join(LANES_FILE))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The lane lines of `status` from `<state>/lanes.json`: nothing for one lane (its link
/// line says it all), one line per lane otherwise.
pub fn report(state_dir: &Path) -> String {
    let lanes: Option<Vec<LaneState>> = std::fs::read(state_dir.join(LANES_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    lanes_report(unix_ms(SystemTime::now()), &lanes.unwrap_or_default())
}

/// The lane lines at `now_ms`.
fn lanes_report(now_ms: u64, lanes: &[LaneState]) -> String {
    if lanes.len() < 2 {
        return String::new();
    }
    let down_after = crate::status::LINK_DOWN_AFTER.as_millis() as u64;
    let mut text = format!("lanes: {}\n", lanes.len());
    for l in lanes {
        let age = |ms: u64| now_ms.saturating_sub(ms) as f64 / 1000.0;
        let state = match (l.last_datagram_unix_ms, l.up_since_unix_ms) {
            (Some(last), up) if now_ms.saturating_sub(last) < down_after => format!(
                "up{} (last datagram {:.1} s ago)",
                up.map_or(String::new(), |u| format!(" for {:.0} s", age(u))),
                age(last)
            ),
            (Some(last), _) => format!("silent for {:.1} s", age(last)),
            (None, _) => "silent (no datagram since the receiver started)".into(),
        };
        text += &format!(
            "  lane {}: {state}: {} datagrams, {} bytes, {} rejected, {} dropped by the kernel\n",
            gapferry_common::name::escape(&l.lane),
            l.datagrams,
            l.bytes,
            l.rejected,
            l.kernel_drops
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane(name: &str, datagrams: u64, last: Option<u64>, up: Option<u64>) -> LaneState {
        LaneState {
            lane: name.into(),
            datagrams,
            bytes: datagrams * 1000,
            rejected: 1,
            kernel_drops: 0,
            last_datagram_unix_ms: last,
            up_since_unix_ms: up,
        }
    }

    #[test]
    fn one_lane_adds_nothing_and_two_show_each() {
        let now = 1_000_000;
        assert_eq!(lanes_report(now, &[lane("a", 5, Some(now), None)]), "");
        let t = lanes_report(
            now,
            &[
                lane("127.0.0.1:7001", 900, Some(now - 200), Some(now - 60_000)),
                lane("127.0.0.1:7002", 12, Some(now - 9_000), None),
                lane("127.0.0.1:7003", 0, None, None),
            ],
        );
        assert!(t.starts_with("lanes: 3\n"), "{t}");
        assert!(t.contains("  lane 127.0.0.1:7001: up for 60 s (last datagram 0.2 s ago): 900 datagrams, 900000 bytes, 1 rejected"), "{t}");
        assert!(
            t.contains("  lane 127.0.0.1:7002: silent for 9.0 s: 12 datagrams"),
            "{t}"
        );
        assert!(t.contains("  lane 127.0.0.1:7003: silent (no datagram since the receiver started): 0 datagrams"), "{t}");
    }

    #[test]
    fn the_state_file_keeps_counts_and_when_a_lane_came_up() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = LaneMetrics::default();
        let a = LaneCounters::new("127.0.0.1:1".parse().unwrap(), &metrics);
        let b = LaneCounters::new("127.0.0.1:2".parse().unwrap(), &metrics);
        a.received(3, 3000);
        b.rejected(2);
        let mut file = LanesFile::new(dir.path().to_path_buf(), vec![a.clone(), b]);
        file.write().unwrap();
        let t = report(dir.path());
        assert!(t.contains("lane 127.0.0.1:1: up for 0 s"), "{t}");
        assert!(t.contains(": 3 datagrams, 3000 bytes, 0 rejected"), "{t}");
        assert!(t.contains("lane 127.0.0.1:2: silent (no datagram since the receiver started): 0 datagrams, 0 bytes, 2 rejected"), "{t}");
        let label = LaneLabel {
            lane: "127.0.0.1:1".into(),
        };
        assert_eq!(metrics.datagrams.get_or_create(&label).get(), 3);
    }
}
