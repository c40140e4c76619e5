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
const RECV_BUFFER_BYTES: usize = GRO_SEGMENTS * 1500;

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
    /// bytes each (the last may be shorter).
    pub fn messages(&self) -> impl Iterator<Item = (&[u8], usize)> {
        self.buffers
            .iter()
            .zip(&self.meta)
            .take(self.messages)
            .map(|(buf, m)| (&buf[..m.len], m.stride.max(1)))
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
