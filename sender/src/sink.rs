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
    /// Sends whatever is batched now (before going idle).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// Flushes anything buffered, at the end.
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Sleep only when the schedule is this far ahead; shorter waits are absorbed as a burst.
const SLEEP_THRESHOLD: Duration = Duration::from_micros(1000);
/// Most bytes handed to the kernel in one segmented send.
const MAX_BATCH_BYTES: usize = 65_000;
/// A batch is sent once its first datagram is this old on the schedule.
const MAX_BATCH_SPAN: Duration = Duration::from_micros(1000);

/// A UDP socket towards the receiver (or the diode's far side).
///
/// Consecutive datagrams of the same size go to the kernel in one call with UDP generic
/// segmentation offload (GSO) where the kernel offers it, through `quinn-udp`: one system
/// call per up to 44 datagrams instead of one each, the largest cost of sending.
pub struct UdpSink {
    socket: std::net::UdpSocket,
    state: quinn_udp::UdpSocketState,
    to: SocketAddr,
    batch: Vec<u8>,
    segment: usize,
    count: usize,
    first_at: Option<Instant>,
    max_segments: usize,
}

impl UdpSink {
    /// Opens a socket towards `to`, bound to `bind` when given.
    pub fn connect(to: SocketAddr, bind: Option<SocketAddr>) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP))?;
        // A large send buffer absorbs the pacer's small bursts.
        let _ = socket.set_send_buffer_size(8 << 20);
        let local = bind.unwrap_or_else(|| match to {
            SocketAddr::V4(_) => SocketAddr::from(([0, 0, 0, 0], 0)),
            SocketAddr::V6(_) => SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0)),
        });
        socket.bind(&SockAddr::from(local))?;
        let socket: std::net::UdpSocket = socket.into();
        let state = quinn_udp::UdpSocketState::new((&socket).into())?;
        let max_segments = state.max_gso_segments().clamp(1, 64);
        Ok(UdpSink {
            socket,
            state,
            to,
            batch: Vec::with_capacity(MAX_BATCH_BYTES + 9_000),
            segment: 0,
            count: 0,
            first_at: None,
            max_segments,
        })
    }

    /// Datagrams per kernel call at most (1 without GSO).
    pub fn max_segments(&self) -> usize {
        self.max_segments
    }

    fn transmit(&self, contents: &[u8], segment: Option<usize>) -> io::Result<()> {
        let t = quinn_udp::Transmit {
            destination: self.to,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        let mut retries = 0;
        loop {
            match self.state.try_send((&self.socket).into(), &t) {
                Ok(()) => return Ok(()),
                Err(e)
                    if retries < 10_000
                        && (e.raw_os_error() == Some(libc::ENOBUFS)
                            || e.kind() == io::ErrorKind::WouldBlock
                            || e.kind() == io::ErrorKind::Interrupted) =>
                {
                    retries += 1;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Hands the pending batch to the kernel.
    fn flush_batch(&mut self) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let segment = (self.count > 1).then_some(self.segment);
        let result = self.transmit(&self.batch, segment);
        let result = match result {
            // The device refused segmentation: send the datagrams one by one from now on.
            Err(e) if segment.is_some() && self.state.max_gso_segments() <= 1 => {
                tracing::debug!("UDP segmentation refused ({e}); sending datagrams one by one");
                self.max_segments = 1;
                self.batch
                    .chunks(self.segment)
                    .try_for_each(|d| self.transmit(d, None))
            }
            other => other,
        };
        self.batch.clear();
        self.count = 0;
        self.first_at = None;
        result
    }
}

impl DatagramSink for UdpSink {
    fn send(&mut self, datagram: &[u8], at: Instant) -> io::Result<()> {
        let joins = self.count > 0
            && datagram.len() == self.segment
            && self.count < self.max_segments
            && self.batch.len() + datagram.len() <= MAX_BATCH_BYTES
            && self.first_at.is_some_and(|f| at <= f + MAX_BATCH_SPAN);
        if !joins {
            self.flush_batch()?;
            let now = Instant::now();
            if at > now + SLEEP_THRESHOLD {
                std::thread::sleep(at - now - SLEEP_THRESHOLD / 2);
            }
            self.segment = datagram.len();
            self.first_at = Some(at);
        }
        self.batch.extend_from_slice(datagram);
        self.count += 1;
        if self.count >= self.max_segments {
            self.flush_batch()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_batch()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_batch()
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
