//! The UDP socket of the high side: bound with a large receive buffer, drained by one
//! thread that does nothing else.

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

/// Receive buffer requested by default: about half a second of a 1 GbE link.
pub const DEFAULT_RECV_BUFFER: usize = 64 << 20;
/// How often the draining thread wakes to check for shutdown when idle.
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Datagrams a GRO read may coalesce (the kernel's UDP_GRO_CNT_MAX).
const GRO_SEGMENTS: usize = 64;
/// Bytes of one receive buffer: a GRO read of full-size 1500-byte-MTU datagrams fits.
pub const RECV_BUFFER_BYTES: usize = GRO_SEGMENTS * 1500;
/// Receive buffers waiting to be reused at most (given back, not yet taken again).
pub const POOL_BUFFERS: usize = 64;

/// A bound UDP socket ready to be drained: `recvmmsg` reads up to 32 messages per call,
/// and with UDP GRO each message may carry up to 64 datagrams of equal size.
pub struct UdpSource {
    socket: UdpSocket,
    state: quinn_udp::UdpSocketState,
    granted: usize,
    wait: Duration,
}

/// Buffers of one [`UdpSource::recv`] call, reused from call to call.
pub struct RecvBatch {
    buffers: Vec<Vec<u8>>,
    meta: Vec<quinn_udp::RecvMeta>,
    messages: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            buffers: vec![vec![0; RECV_BUFFER_BYTES]; quinn_udp::BATCH_SIZE],
            meta: vec![quinn_udp::RecvMeta::default(); quinn_udp::BATCH_SIZE],
            messages: 0,
        }
    }
}

impl RecvBatch {
    /// The messages of the last read: bytes holding one or more datagrams of `stride`
    /// bytes each (the last may be shorter), and the address they came from.
    pub fn messages(&self) -> impl Iterator<Item = (&[u8], usize, std::net::SocketAddr)> {
        self.buffers
            .iter()
            .zip(&self.meta)
            .take(self.messages)
            .map(|(buf, m)| (&buf[..m.len], m.stride.max(1), m.addr))
    }
}

impl RecvBatch {
    /// Message `i` of the last read, as [`Self::messages`] yields it.
    pub fn message(&self, i: usize) -> (&[u8], usize, std::net::SocketAddr) {
        let m = &self.meta[i];
        (&self.buffers[i][..m.len], m.stride.max(1), m.addr)
    }

    /// Messages of the last read.
    pub fn len(&self) -> usize {
        self.messages
    }

    /// Whether the last read brought nothing.
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }

    /// Takes the buffer of message `i` away, cut to the message's bytes, and puts `fresh`
    /// (a [`BufferPool::take`]) in its place for the next read: the datagrams leave the
    /// socket thread without a copy.
    pub fn take_buffer(&mut self, i: usize, fresh: Vec<u8>) -> Vec<u8> {
        let mut taken = std::mem::replace(&mut self.buffers[i], fresh);
        taken.truncate(self.meta[i].len);
        taken
    }
}

/// Receive buffers going round: handed to the assembler with the datagrams they hold,
/// given back through a bounded channel once handled ([`POOL_BUFFERS`] wait there at
/// most; what does not fit is freed), and reused instead of fresh memory.
pub struct BufferPool {
    back: crossbeam_channel::Receiver<Vec<u8>>,
    /// Buffers allocated afresh, and taken back, so far.
    pub counts: (u64, u64),
}

impl BufferPool {
    /// A pool fed by buffers given back on `back` (see [`BufferPool::channel`]).
    pub fn new(back: crossbeam_channel::Receiver<Vec<u8>>) -> Self {
        BufferPool {
            back,
            counts: (0, 0),
        }
    }

    /// The channel buffers are given back on: bounded to [`POOL_BUFFERS`].
    pub fn channel() -> (
        crossbeam_channel::Sender<Vec<u8>>,
        crossbeam_channel::Receiver<Vec<u8>>,
    ) {
        crossbeam_channel::bounded(POOL_BUFFERS)
    }

    /// A buffer of [`RECV_BUFFER_BYTES`] for the next read: one given back when there
    /// is one, else a fresh one.
    pub fn take(&mut self) -> Vec<u8> {
        while let Ok(mut buf) = self.back.try_recv() {
            if buf.capacity() >= RECV_BUFFER_BYTES {
                buf.resize(RECV_BUFFER_BYTES, 0);
                self.counts.1 += 1;
                return buf;
            }
        }
        self.counts.0 += 1;
        vec![0; RECV_BUFFER_BYTES]
    }
}

/// Gives a buffer that came from a read back to its pool, if it is one and the pool has
/// room; frees it otherwise.
pub fn give_back(back: &crossbeam_channel::Sender<Vec<u8>>, buf: Vec<u8>) {
    if buf.capacity() >= RECV_BUFFER_BYTES {
        let _ = back.try_send(buf);
    }
}

impl UdpSource {
    /// Binds `addr` and asks for a `recv_buffer`-byte receive buffer, logging the sysctl
    /// to run when the kernel grants less.
    pub fn bind(addr: SocketAddr, recv_buffer: usize) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            let _ = socket.set_only_v6(false);
        }
        let _ = socket.set_recv_buffer_size(recv_buffer);
        // The kernel reports twice the usable size it granted.
        let mut granted = socket.recv_buffer_size().unwrap_or(0) / 2;
        if granted < recv_buffer && set_rcvbuf_force(&socket, recv_buffer).is_ok() {
            granted = socket.recv_buffer_size().unwrap_or(0) / 2;
        }
        if granted < recv_buffer {
            tracing::warn!(
                requested = recv_buffer,
                granted,
                "the kernel granted a smaller receive buffer than requested; bursts may be dropped. Run: sysctl -w net.core.rmem_max={recv_buffer} (or run the receiver with CAP_NET_ADMIN)"
            );
        } else {
            tracing::info!(bytes = granted, "receive buffer");
        }
        socket.bind(&SockAddr::from(addr))?;
        let socket: UdpSocket = socket.into();
        // Makes the socket non-blocking and turns on UDP GRO where the kernel has it.
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        tracing::debug!(gro_segments = state.gro_segments(), "socket ready");
        Ok(UdpSource {
            socket,
            state,
            granted,
            wait: POLL_INTERVAL,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Receive buffer bytes the kernel granted.
    pub fn granted_buffer(&self) -> usize {
        self.granted
    }

    /// Sets how long [`Self::recv`] waits before reporting an idle socket.
    pub fn set_wait(&mut self, wait: Duration) {
        self.wait = wait;
    }

    /// Reads whatever is queued into `batch`, waiting up to the set wait for the first
    /// datagram; `Ok(false)` when the socket stayed idle.
    pub fn recv(&self, batch: &mut RecvBatch) -> io::Result<bool> {
        batch.messages = 0;
        loop {
            let mut slices: Vec<io::IoSliceMut<'_>> = batch
                .buffers
                .iter_mut()
                .map(|b| io::IoSliceMut::new(b))
                .collect();
            match self
                .state
                .recv((&self.socket).into(), &mut slices, &mut batch.meta)
            {
                Ok(n) => {
                    batch.messages = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if !wait_readable(&self.socket, self.wait)? {
                        return Ok(false);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

/// Datagrams the kernel dropped for this socket because its receive buffer was full: the
/// `drops` column of its line in /proc/net/udp (or udp6), found by the socket's inode.
/// `None` where /proc does not say.
pub fn socket_drops(socket: &UdpSocket) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(format!("/proc/self/fd/{}", socket.as_raw_fd()))
        .ok()?
        .ino();
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .find_map(|table| {
            let text = std::fs::read_to_string(table).ok()?;
            drops_of_inode(&text, inode)
        })
}

/// The `drops` column of the line of a /proc/net/udp table whose inode is `inode`.
fn drops_of_inode(table: &str, inode: u64) -> Option<u64> {
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    // The header names "tx_queue rx_queue" and "tr tm->when" as four columns where the rows
    // have two ("tx:rx", "tr:when"); the last two columns are inode-relative anyway.
    let shift = header
        .len()
        .checked_sub(1 + header.iter().position(|h| *h == "inode")?)?;
    lines.find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let at = f.len().checked_sub(shift + 1)?;
        (f.get(at)?.parse::<u64>().ok()? == inode).then(|| f.last()?.parse().ok())?
    })
}

impl UdpSource {
    /// Datagrams the kernel dropped for this socket (see [`socket_drops`]).
    pub fn kernel_drops(&self) -> Option<u64> {
        socket_drops(&self.socket)
    }
}

/// Waits until `socket` has something to read or `wait` passes; `Ok(false)` on timeout.
fn wait_readable(socket: &UdpSocket, wait: Duration) -> io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = wait.as_millis().clamp(1, libc::c_int::MAX as u128) as libc::c_int;
    // SAFETY: `fd` is one live pollfd and we pass a count of 1; the descriptor is open
    // and owned by `socket` for the duration of the call.
    let rc = unsafe { libc::poll(&mut fd, 1, ms) };
    match rc {
        0 => Ok(false),
        n if n > 0 => Ok(true),
        _ => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// Sets SO_RCVBUFFORCE, which lets a privileged process exceed `net.core.rmem_max`.
pub fn set_rcvbuf_force(socket: &Socket, bytes: usize) -> io::Result<()> {
    let value: libc::c_int = bytes.min(libc::c_int::MAX as usize) as libc::c_int;
    // SAFETY: the fd is a valid open socket owned by `socket` for the duration of the call,
    // and we pass a pointer to a live c_int with its exact size, as setsockopt requires.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            &value as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            
  448: 0100007F:1B58 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 123456 2 0000000000000000 917     
  449: 0100007F:1B59 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 99 2 0000000000000000 3
";

    #[test]
    fn the_drops_column_of_the_right_socket_is_read() {
        assert_eq!(drops_of_inode(TABLE, 123456), Some(917));
        assert_eq!(drops_of_inode(TABLE, 99), Some(3));
        assert_eq!(drops_of_inode(TABLE, 7), None);
        // Hostile or truncated tables give nothing rather than a wrong number.
        assert_eq!(drops_of_inode("", 99), None);
        assert_eq!(drops_of_inode("sl local inode drops\n1: x", 99), None);
        assert_eq!(drops_of_inode("no header here\n99 5", 99), None);
    }

    #[test]
    fn the_pool_reuses_buffers_given_back_and_keeps_a_bounded_number() {
        let (back, rx) = BufferPool::channel();
        let mut pool = BufferPool::new(rx);
        let first = pool.take();
        assert_eq!((first.len(), pool.counts), (RECV_BUFFER_BYTES, (1, 0)));
        // Handed on cut to a message's bytes, given back, taken again: the same memory,
        // whole again for the next read.
        let (ptr, mut used) = (first.as_ptr(), first);
        used.truncate(1234);
        give_back(&back, used);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the buffer given back was reused");
        assert_eq!((again.len(), pool.counts), (RECV_BUFFER_BYTES, (1, 1)));
        // A buffer that is not a receive buffer (a copied datagram) is not kept.
        give_back(&back, vec![7; 1500]);
        assert!(back.is_empty());
        // However many come back, the pool holds POOL_BUFFERS at most.
        for _ in 0..POOL_BUFFERS + 10 {
            give_back(&back, vec![0; RECV_BUFFER_BYTES]);
        }
        assert_eq!(back.len(), POOL_BUFFERS);
        for _ in 0..POOL_BUFFERS + 2 {
            pool.take();
        }
        assert_eq!(pool.counts, (3, 1 + POOL_BUFFERS as u64));
    }

    #[test]
    fn a_socket_dropping_nothing_reads_zero_drops() {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        if std::path::Path::new("/proc/net/udp").exists() {
            assert_eq!(socket_drops(&s), Some(0));
        }
    }
}
