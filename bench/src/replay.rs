//! A cheap feeder for the receiver-alone row: datagrams encoded beforehand (by
//! `gapferry-send --pcap-out`) are held in memory and sent with UDP GSO, consecutive
//! datagrams of one length in one `send` of up to 64 KB, paced at a given rate of IP
//! packets. It runs as a process of its own ([`SUBCOMMAND`]) and measures its own CPU
//! time, so the row shows what the receiver costs.

use crate::udpcost::{enable_gso, send_one};
use anyhow::{Context, Result};
use gapferry_pcap::CaptureReader;
use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// IPv4 plus UDP header bytes the pacing counts per datagram, as the sender's `--rate`.
const IP_UDP: u64 = 28;
/// Largest GSO send: the kernel's limit is 64 segments and 64 KB.
const GSO_BYTES: usize = 65_000;
const GSO_SEGMENTS: usize = 64;

/// The hidden subcommand that runs the replayer in a process of its own:
/// `gapferry-bench __replay CAPTURE ADDR RATE_BPS`. The harness never holds the
/// datagrams itself: a child's peak RSS (`ru_maxrss`) starts from its parent's high-water
/// mark, so a harness that once held a GiB of datagrams would inflate every later row.
pub const SUBCOMMAND: &str = "__replay";

/// Runs [`SUBCOMMAND`] with its arguments: loads the capture, logs `sending`, replays it,
/// then logs `replayed datagrams=N bytes=B cpu_us=C` (C: the replaying thread's CPU).
pub fn run_subcommand(args: &[String]) -> Result<()> {
    let [capture, addr, rate] = args else {
        anyhow::bail!("usage: gapferry-bench {SUBCOMMAND} CAPTURE ADDR RATE_BPS");
    };
    let datagrams = load(Path::new(capture))?;
    let to: SocketAddr = addr.parse().context("ADDR")?;
    let rate: u64 = rate.parse().context("RATE_BPS")?;
    eprintln!("sending {} datagrams to {to}", datagrams.len());
    let done = replay(&datagrams, to, rate)?;
    eprintln!(
        "replayed datagrams={} bytes={} cpu_us={}",
        done.datagrams,
        done.bytes,
        (done.cpu_seconds * 1e6) as u64
    );
    Ok(())
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Replayed {
    /// Datagrams sent.
    pub datagrams: u64,
    /// UDP payload bytes sent.
    pub bytes: u64,
    /// CPU seconds of the replaying thread.
    pub cpu_seconds: f64,
}

/// Datagrams held back to back in one buffer (one allocation instead of a million).
#[derive(Debug, Default)]
pub struct Datagrams {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Datagrams {
    /// How many datagrams.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Datagram `i`.
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Appends one datagram.
    pub fn push(&mut self, datagram: &[u8]) {
        self.bytes.extend_from_slice(datagram);
        self.ends.push(self.bytes.len());
    }
}

/// The UDP payloads of a capture file, in order.
pub fn load(path: &Path) -> Result<Datagrams> {
    let mut reader =
        CaptureReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let size = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    let mut out = Datagrams {
        bytes: Vec::with_capacity(size),
        ends: Vec::new(),
    };
    while let Some(d) = reader.next_datagram()? {
        out.push(&d.payload);
    }
    Ok(out)
}

fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Sends `datagrams` to `to` at `rate_bps` (bits per second of IP packets).
pub fn replay(datagrams: &Datagrams, to: SocketAddr, rate_bps: u64) -> Result<Replayed> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(to)?;
    let cpu0 = thread_cpu_seconds();
    let start = Instant::now();
    let mut done = Replayed::default();
    let mut segment = 0usize;
    let mut batch = Vec::with_capacity(GSO_BYTES);
    let mut i = 0;
    while i < datagrams.len() {
        let len = datagrams.get(i).len();
        let mut j = i;
        batch.clear();
        while j < datagrams.len()
            && datagrams.get(j).len() == len
            && j - i < GSO_SEGMENTS
            && batch.len() + len <= GSO_BYTES
        {
            batch.extend_from_slice(datagrams.get(j));
            j += 1;
        }
        if segment != len {
            enable_gso(&socket, len)?;
            segment = len;
        }
        send_one(&socket, &batch)?;
        done.datagrams += (j - i) as u64;
        done.bytes += batch.len() as u64;
        i = j;
        // Pacing: never ahead of rate_bps.
        let bits = (done.bytes + done.datagrams * IP_UDP) * 8;
        let due = Duration::from_secs_f64(bits as f64 / rate_bps as f64);
        if let Some(ahead) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(ahead);
        }
    }
    done.cpu_seconds = thread_cpu_seconds() - cpu0;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::udpcost::Drain;

    #[test]
    fn every_datagram_arrives_whatever_its_length() {
        let mut d = Datagrams::default();
        for (n, len) in [(50, 1452), (1, 80), (3, 1452), (2, 700), (100, 1452)] {
            for k in 0..n {
                d.push(&vec![k as u8; len]);
            }
        }
        assert_eq!(d.get(50), &[0u8; 80][..]);
        let total: usize = (0..d.len()).map(|i| d.get(i).len()).sum();
        let drain = Drain::start(false).unwrap();
        let to = drain.connect().unwrap().peer_addr().unwrap();
        let done = replay(&d, to, 1_000_000_000).unwrap();
        assert_eq!(done.datagrams, 156);
        assert_eq!(done.bytes, total as u64);
        let deadline = Instant::now() + Duration::from_secs(5);
        while drain.bytes() < total as u64 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(drain.bytes(), total as u64);
    }
}
