//! A lossy UDP relay between the sender and the receiver: one thread, a seeded random
//! generator, `recvmmsg`/`sendmmsg` in batches so its own cost stays small, and its CPU
//! time measured so the table can say what it cost.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Datagrams moved per `recvmmsg`/`sendmmsg` call at most.
const BATCH: usize = 64;
/// Largest datagram the relay carries.
const SLOT: usize = 65_536;
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
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
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
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut lens = [0usize; BATCH];
    let mut keep = Vec::with_capacity(BATCH);
    let mut rng = match loss {
        Loss::Random { seed, .. } => StdRng::seed_from_u64(seed),
        Loss::Burst { .. } => StdRng::seed_from_u64(0),
    };
    let mut report = RelayReport::default();
    while !stop.load(Ordering::Relaxed) {
        let n = match recv_batch(&rx, &mut bufs, &mut lens) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => return Err(e),
        };
        keep.clear();
        for (i, &len) in lens.iter().enumerate().take(n) {
            let index = report.seen;
            report.seen += 1;
            let lose = match loss {
                Loss::Random { p, .. } => rng.random::<f64>() < p,
                Loss::Burst { start, len } => (start..start + len).contains(&index),
            };
            if lose {
                report.dropped += 1;
            } else {
                keep.push((i, len));
            }
        }
        send_batch(&tx, &bufs, &keep)?;
    }
    report.cpu_seconds = thread_cpu_seconds();
    Ok(report)
}

/// Receives up to [`BATCH`] datagrams (blocking for the first one, up to the read timeout).
fn recv_batch(rx: &UdpSocket, bufs: &mut [u8], lens: &mut [usize; BATCH]) -> io::Result<usize> {
    // SAFETY: all-zero iovec and mmsghdr are valid values (null pointers, zero lengths).
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for (i, (v, m)) in iov.iter_mut().zip(msgs.iter_mut()).enumerate() {
        v.iov_base = bufs[i * SLOT..].as_mut_ptr() as *mut libc::c_void;
        v.iov_len = SLOT;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every mmsghdr points at one iovec covering a distinct SLOT-byte region of
    // `bufs`, all of which outlive the call; the kernel writes at most BATCH entries.
    let n = unsafe {
        libc::recvmmsg(
            rx.as_raw_fd(),
            msgs.as_mut_ptr(),
            BATCH as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    for (len, m) in lens.iter_mut().zip(&msgs).take(n as usize) {
        *len = m.msg_len as usize;
    }
    Ok(n as usize)
}

/// Sends the datagrams `keep` names (slot index, length) on the connected socket.
fn send_batch(tx: &UdpSocket, bufs: &[u8], keep: &[(usize, usize)]) -> io::Result<()> {
    // SAFETY: all-zero iovec and mmsghdr are valid values.
    let mut iov: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    for ((v, m), &(slot, len)) in iov.iter_mut().zip(msgs.iter_mut()).zip(keep) {
        v.iov_base = bufs[slot * SLOT..].as_ptr() as *mut libc::c_void;
        v.iov_len = len;
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    let mut retries = 0;
    while done < keep.len() {
        // SAFETY: entries done..keep.len() point at live regions of `bufs` (only read).
        let n = unsafe {
            libc::sendmmsg(
                tx.as_raw_fd(),
                msgs[done..].as_mut_ptr(),
                (keep.len() - done) as libc::c_uint,
                0,
            )
        };
        if n >= 0 {
            done += n as usize;
            continue;
        }
        let e = io::Error::last_os_error();
        retries += 1;
        match e.raw_os_error() {
            // A pending ICMP error from an earlier datagram (nobody listening then): it is
            // cleared by being reported, so retry; give up on one datagram if it persists.
            Some(libc::ECONNREFUSED) => {
                if retries % 100 == 0 {
                    done += 1;
                }
            }
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) if retries < 10_000 => {
                std::thread::sleep(Duration::from_micros(20));
            }
            _ => return Err(e),
        }
    }
    Ok(())
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
