//! A cheap feeder for the receiver-alone row: datagrams encoded beforehand (by
//! `gapferry-send --pcap-out`) are held in memory and sent with UDP GSO, consecutive
//! datagrams of one length in one `send` of up to 64 KB, paced at a given rate of IP
//! packets. Its own CPU time is measured apart, so the row shows what the receiver costs.

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

/// The UDP payloads of a capture file, in order.
pub fn load(path: &Path) -> Result<Vec<Vec<u8>>> {
    let mut reader =
        CaptureReader::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    while let Some(d) = reader.next_datagram()? {
        out.push(d.payload);
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
pub fn replay(datagrams: &[Vec<u8>], to: SocketAddr, rate_bps: u64) -> Result<Replayed> {
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.connect(to)?;
    let cpu0 = thread_cpu_seconds();
    let start = Instant::now();
    let mut done = Replayed::default();
    let mut segment = 0usize;
    let mut batch = Vec::with_capacity(GSO_BYTES);
    let mut i = 0;
    while i < datagrams.len() {
        let len = datagrams[i].len();
        let mut j = i;
        batch.clear();
        while j < datagrams.len()
            && datagrams[j].len() == len
            && j - i < GSO_SEGMENTS
            && batch.len() + len <= GSO_BYTES
        {
            batch.extend_from_slice(&datagrams[j]);
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
