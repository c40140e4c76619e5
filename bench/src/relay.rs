//! A lossy UDP relay between the sender and the receiver: one thread, a seeded random
//! generator, `recvmmsg` with UDP GRO in and GSO sends out so its own cost stays small,
//! and its CPU time measured so the table can say what it cost.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Bytes of one receive buffer: a GRO read of 64 full-size datagrams at MTU 1500.
const SLOT: usize = 64 * 1500;
/// Receive buffer the relay asks for (forced past `rmem_max` when running as root).
const RELAY_RCVBUF: usize = 64 << 20;

/// Which datagrams the relay loses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loss {
    /// Each datagram independently with this probability (0..1), from a seeded generator.
    Random {
        /// Probability of losing one datagram.
        p: f64,
        /// Seed of the generator.
        seed: u64,
    },
    /// `len` consecutive datagrams starting at index `start` (0-based), nothing else.
    Burst {
        /// Index of the first lost datagram.
        start: u64,
        /// How many are lost.
        len: u64,
    },
}

/// What a relay did, once stopped.
#[derive(Debug, Clone, Copy, Default)]
pub struct RelayReport {
    /// Datagrams read from its socket.
    pub seen: u64,
    /// Datagrams lost on purpose.
    pub dropped: u64,
    /// CPU seconds of the relay thread.
    pub cpu_seconds: f64,
}

/// A running relay.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<io::Result<RelayReport>>>,
}

impl Relay {
    /// Starts a relay on an ephemeral loopback port forwarding to `to` with `loss`.
    pub fn start(to: SocketAddr, loss: Loss) -> io::Result<Relay> {
        let rx = UdpSocket::bind("127.0.0.1:0")?;
        set_rcvbuf(&rx, RELAY_RCVBUF);
        let tx = UdpSocket::bind("127.0.0.1:0")?;
        tx.connect(to)?;
        let addr = rx.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("bench-relay".into())
            .spawn(move || run(rx, tx, loss, flag))?;
        Ok(Relay {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// Where the sender should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the relay and reports what it did.
    pub fn stop(mut self) -> io::Result<RelayReport> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .expect("stopped once")
            .join()
            .map_err(|_| io::Error::other("relay thread panicked"))?
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(socket: &UdpSocket, bytes: usize) {
    let v = bytes as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: a valid socket fd and a pointer to a live c_int of the stated size.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                &v as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// CPU seconds consumed so far by the calling thread.
pub fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn run(rx: UdpSocket, tx: UdpSocket, loss: Loss, stop: Arc<AtomicBool>) -> io::Result<RelayReport> {
    // Both sockets non-blocking, with UDP GRO on the receiving one: a GSO batch from the
    // sender arrives whole, loses its datagrams one by one, and leaves as one GSO send.
    let rx_state = quinn_udp::UdpSocketState::new((&rx).into())?;
    let tx_state = quinn_udp::UdpSocketState::new((&tx).into())?;
    let to = tx.peer_addr()?;
    let mut bufs = vec![vec![0u8; SLOT]; quinn_udp::BATCH_SIZE];
    let mut meta = vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE];
    let mut out: Vec<u8> = Vec::with_capacity(SLOT);
    let mut rng = match loss {
        Loss::Random { seed, .. } => StdRng::seed_from_u64(seed),
        Loss::Burst { .. } => StdRng::seed_from_u64(0),
    };
    let mut report = RelayReport::default();
    while !stop.load(Ordering::Relaxed) {
        let mut slices: Vec<io::IoSliceMut<'_>> =
            bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
        let n = match rx_state.recv((&rx).into(), &mut slices, &mut meta) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                wait_readable(&rx, 50);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for (buf, m) in bufs.iter().zip(&meta).take(n) {
            let stride = m.stride.max(1);
            out.clear();
            let mut kept = 0;
            for datagram in buf[..m.len].chunks(stride) {
                let index = report.seen;
                report.seen += 1;
                let lose = match loss {
                    Loss::Random { p, .. } => rng.random::<f64>() < p,
                    Loss::Burst { start, len } => (start..start + len).contains(&index),
                };
                if lose {
                    report.dropped += 1;
                } else {
                    out.extend_from_slice(datagram);
                    kept += 1;
                }
            }
            if kept > 0 {
                send(&tx_state, &tx, to, &out, (kept > 1).then_some(stride))?;
            }
        }
    }
    report.cpu_seconds = thread_cpu_seconds();
    Ok(report)
}

/// Waits up to `ms` milliseconds for `socket` to become readable.
fn wait_readable(socket: &UdpSocket, ms: libc::c_int) {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one live pollfd and a count of 1; the fd is open for the call.
    unsafe { libc::poll(&mut fd, 1, ms) };
}

/// Sends `contents` to `to`: one datagram, or several of `segment` bytes in one GSO send.
fn send(
    state: &quinn_udp::UdpSocketState,
    tx: &UdpSocket,
    to: SocketAddr,
    contents: &[u8],
    segment: Option<usize>,
) -> io::Result<()> {
    let t = quinn_udp::Transmit {
        destination: to,
        ecn: None,
        contents,
        segment_size: segment,
        src_ip: None,
    };
    let mut retries = 0u32;
    loop {
        match state.try_send(tx.into(), &t) {
            Ok(()) => return Ok(()),
            Err(e) => {
                retries += 1;
                match e.raw_os_error() {
                    // A pending ICMP error from an earlier datagram (nobody listening
                    // then): reporting it clears it; give up on this batch if it persists.
                    Some(libc::ECONNREFUSED) if retries < 100 => {}
                    Some(libc::ECONNREFUSED) => return Ok(()),
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR)
                        if retries < 10_000 =>
                    {
                        std::thread::sleep(Duration::from_micros(20));
                    }
                    _ => return Err(e),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_drops_a_burst() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let relay =
            Relay::start(sink.local_addr().unwrap(), Loss::Burst { start: 2, len: 3 }).unwrap();
        let src = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..10u8 {
            src.send_to(&[i; 100], relay.addr()).unwrap();
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 200];
        for _ in 0..7 {
            let n = sink.recv(&mut buf).unwrap();
            assert_eq!(n, 100);
            got.push(buf[0]);
        }
        assert_eq!(got, vec![0, 1, 5, 6, 7, 8, 9]);
        let r = relay.stop().unwrap();
        assert_eq!((r.seen, r.dropped), (10, 3));
    }
}
