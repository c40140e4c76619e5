//! Where datagrams go: a connected UDP socket, or anything else implementing [`DatagramSink`].

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A destination for datagrams that honours the pacing schedule.
pub trait DatagramSink {
    /// Sends one datagram no earlier than about `at`.
    fn send(&mut self, datagram: &[u8], at: Instant) -> io::Result<()>;
    /// Whether the sink plays the schedule in real time (a socket) or only records it.
    fn real_time(&self) -> bool {
        true
    }
    /// Flushes anything buffered.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sleep only when the schedule is this far ahead; shorter waits are absorbed as a burst.
const SLEEP_THRESHOLD: Duration = Duration::from_micros(1000);

/// A UDP socket connected to the receiver (or to the diode's far side).
pub struct UdpSink {
    socket: Socket,
    refused_logged: bool,
}

impl UdpSink {
    /// Opens a socket towards `to`, bound to `bind` when given.
    pub fn connect(to: SocketAddr, bind: Option<SocketAddr>) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
        // A large send buffer absorbs the pacer's small bursts.
        let _ = socket.set_send_buffer_size(8 << 20);
        if let Some(b) = bind {
            socket.bind(&SockAddr::from(b))?;
        }
        socket.connect(&SockAddr::from(to))?;
        Ok(UdpSink {
            socket,
            refused_logged: false,
        })
    }
}

impl DatagramSink for UdpSink {
    fn send(&mut self, datagram: &[u8], at: Instant) -> io::Result<()> {
        let now = Instant::now();
        if at > now + SLEEP_THRESHOLD {
            std::thread::sleep(at - now - SLEEP_THRESHOLD / 2);
        }
        let mut retries = 0;
        loop {
            match self.socket.send(datagram) {
                Ok(_) => return Ok(()),
                // No receiver on a test loopback: on a real diode no ICMP ever comes back.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    if !self.refused_logged {
                        tracing::warn!("the destination refused a datagram (nothing listening there?); sending on");
                        self.refused_logged = true;
                    }
                    return Ok(());
                }
                Err(e)
                    if retries < 1000
                        && (e.raw_os_error() == Some(libc::ENOBUFS)
                            || e.kind() == io::ErrorKind::WouldBlock) =>
                {
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
