//! What one datagram costs the sending process on loopback, three ways: one `send` per
//! datagram, `sendmmsg` batches, and UDP GSO (`UDP_SEGMENT`) towards a socket with UDP GRO.
//! Used by the `udp_send` micro-benchmarks to size the syscall levers.

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

fn setsockopt_int(
    s: &UdpSocket,
    level: libc::c_int,
    opt: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a valid socket fd and a pointer to a live c_int of the stated size.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            level,
            opt,
            &v as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A loopback socket drained by its own thread, so senders never meet a full buffer.
pub struct Drain {
    socket: UdpSocket,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Drain {
    /// Binds 127.0.0.1:0 (with UDP GRO when `gro`) and starts draining it.
    pub fn start(gro: bool) -> io::Result<Drain> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let _ = setsockopt_int(&socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 64 << 20);
        if gro {
            setsockopt_int(&socket, libc::SOL_UDP, libc::UDP_GRO, 1)?;
        }
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let (stop, bytes) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (rx, flag, count) = (socket.try_clone()?, stop.clone(), bytes.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            while !flag.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf) {
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        });
        Ok(Drain {
            socket,
            stop,
            bytes,
            thread: Some(thread),
        })
    }

    /// A socket connected to the drain, for the sender side.
    pub fn connect(&self) -> io::Result<UdpSocket> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        let _ = setsockopt_int(&s, libc::SOL_SOCKET, libc::SO_SNDBUF, 8 << 20);
        s.connect(self.socket.local_addr()?)?;
        Ok(s)
    }

    /// Payload bytes drained so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Drain {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn retry(mut f: impl FnMut() -> isize) -> io::Result<usize> {
    loop {
        let n = f();
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::EAGAIN) | Some(libc::EINTR) => {
                std::thread::yield_now()
            }
            _ => return Err(e),
        }
    }
}

/// Sends `datagram` once with `send(2)`.
pub fn send_one(s: &UdpSocket, datagram: &[u8]) -> io::Result<()> {
    // SAFETY: sending from a live slice on a valid connected socket.
    retry(|| unsafe { libc::send(s.as_raw_fd(), datagram.as_ptr().cast(), datagram.len(), 0) })
        .map(drop)
}

/// Sends `count` copies of `datagram` with as few `sendmmsg(2)` calls as the kernel allows.
pub fn send_mmsg(s: &UdpSocket, datagram: &[u8], count: usize) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: datagram.as_ptr() as *mut libc::c_void,
        iov_len: datagram.len(),
    };
    // SAFETY: an all-zero mmsghdr is a valid value; each then points at the one iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..count).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    while done < count {
        // SAFETY: entries done..count point at `iov`, which points at `datagram` (read only).
        done += retry(|| unsafe {
            libc::sendmmsg(
                s.as_raw_fd(),
                msgs[done..].as_mut_ptr(),
                (count - done) as libc::c_uint,
                0,
            ) as isize
        })?;
    }
    Ok(())
}

/// Turns on UDP GSO on `s`: every send of `k × segment` bytes leaves as `k` datagrams.
pub fn enable_gso(s: &UdpSocket, segment: usize) -> io::Result<()> {
    setsockopt_int(s, libc::SOL_UDP, libc::UDP_SEGMENT, segment as libc::c_int)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn all_three_ways_deliver() {
        let drain = Drain::start(true).unwrap();
        let s = drain.connect().unwrap();
        let d = vec![7u8; 1452];
        send_one(&s, &d).unwrap();
        send_mmsg(&s, &d, 10).unwrap();
        enable_gso(&s, d.len()).unwrap();
        send_one(&s, &d.repeat(4)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while drain.bytes() < 15 * 1452 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(drain.bytes(), 15 * 1452);
    }
}
