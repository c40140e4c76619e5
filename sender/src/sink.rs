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
                // An ICMP "port unreachable" for an earlier datagram (nothing listening
                // yet, on a test loopback; a real diode never carries one back) is reported
                // on this call, and this datagram was not sent: send it again.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused && retries < 1000 => {
                    retries += 1;
                    if !self.refused_logged {
                        tracing::warn!(
                            "the destination reported nothing listening there; sending on"
                        );
                        self.refused_logged = true;
                    }
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

/// Writes datagrams into a pcap file as Ethernet/IP/UDP frames stamped with the pacing
/// schedule, instead of sending them.
pub struct PcapSink {
    writer: gapferry_pcap::CaptureWriter<std::io::BufWriter<std::fs::File>>,
    base_instant: Instant,
    base_wall: Duration,
}

impl PcapSink {
    /// Creates `path`; frames go from `src` to `dst`.
    pub fn create(path: &std::path::Path, src: SocketAddr, dst: SocketAddr) -> io::Result<Self> {
        let writer =
            gapferry_pcap::CaptureWriter::create(path, src, dst).map_err(io::Error::other)?;
        let base_wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(PcapSink {
            writer,
            base_instant: Instant::now(),
            base_wall,
        })
    }
}

impl DatagramSink for PcapSink {
    fn send(&mut self, datagram: &[u8], at: Instant) -> io::Result<()> {
        let ts = self.base_wall + at.saturating_duration_since(self.base_instant);
        self.writer
            .write_datagram(ts, datagram)
            .map_err(io::Error::other)
    }

    fn real_time(&self) -> bool {
        false
    }

    fn finish(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(io::Error::other)
    }
}
