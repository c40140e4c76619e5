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

/// A bound UDP socket ready to be drained.
pub struct UdpSource {
    socket: UdpSocket,
    granted: usize,
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
        socket.set_read_timeout(Some(POLL_INTERVAL))?;
        Ok(UdpSource { socket, granted })
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
    pub fn set_wait(&self, wait: Duration) -> io::Result<()> {
        self.socket.set_read_timeout(Some(wait))
    }

    /// Receives one datagram into `buf`; `Ok(None)` when the poll interval passed idle.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match self.socket.recv(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
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
