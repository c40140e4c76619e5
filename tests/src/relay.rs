//! A UDP relay that loses, duplicates and reorders datagrams on purpose: the diode's
//! bad day, made reproducible by a seeded random generator.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// What the relay does with one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass it on.
    Forward,
    /// Lose it.
    Drop,
    /// Pass it on twice.
    Duplicate,
    /// Hold it back and pass it on after the next one.
    Delay,
}

/// Decides the fate of datagram number `index` (0-based) with bytes `datagram`.
pub type Policy = Box<dyn FnMut(u64, &[u8]) -> Action + Send>;

/// Loses each datagram independently with probability `percent` / 100.
pub fn random_loss(percent: f64, seed: u64) -> Policy {
    let mut rng = StdRng::seed_from_u64(seed);
    Box::new(move |_, _| {
        if rng.random::<f64>() * 100.0 < percent {
            Action::Drop
        } else {
            Action::Forward
        }
    })
}

/// Loses `len` consecutive datagrams starting at index `start`, and nothing else.
pub fn burst_loss(start: u64, len: u64) -> Policy {
    Box::new(move |i, _| {
        if (start..start + len).contains(&i) {
            Action::Drop
        } else {
            Action::Forward
        }
    })
}

/// Delays one datagram in `reorder_every` and duplicates one in `duplicate_every`.
pub fn reorder_and_duplicate(reorder_every: u64, duplicate_every: u64) -> Policy {
    Box::new(move |i, _| {
        if i % duplicate_every == duplicate_every - 1 {
            Action::Duplicate
        } else if i % reorder_every == 0 {
            Action::Delay
        } else {
            Action::Forward
        }
    })
}

/// Binds an ephemeral loopback port with a large receive buffer, so the relay itself
/// does not add loss when its thread is descheduled for a moment.
fn bind_with_large_buffer() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    let _ = s.set_recv_buffer_size(32 << 20);
    let _ = gapferry_receiver::socket::set_rcvbuf_force(&s, 32 << 20);
    s.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())?;
    Ok(s.into())
}

/// Counters of a running relay.
#[derive(Debug, Default)]
pub struct RelayCounters {
    /// Datagrams received.
    pub seen: AtomicU64,
    /// Datagrams dropped on purpose.
    pub dropped: AtomicU64,
}

/// A running relay thread.
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    counters: Arc<RelayCounters>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// Listens on an ephemeral loopback port and forwards to `to` under `policy`.
    pub fn start(to: SocketAddr, mut policy: Policy) -> std::io::Result<Relay> {
        let socket = bind_with_large_buffer()?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let out = UdpSocket::bind("127.0.0.1:0")?;
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(RelayCounters::default());
        let (stop2, counters2) = (stop.clone(), counters.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut index = 0u64;
            let mut held: Option<Vec<u8>> = None;
            while !stop2.load(Ordering::Relaxed) {
                let n = match socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(_) => {
                        if let Some(h) = held.take() {
                            let _ = out.send_to(&h, to);
                        }
                        continue;
                    }
                };
                counters2.seen.fetch_add(1, Ordering::Relaxed);
                let d = &buf[..n];
                match policy(index, d) {
                    Action::Forward => {
                        let _ = out.send_to(d, to);
                    }
                    Action::Drop => {
                        counters2.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Action::Duplicate => {
                        let _ = out.send_to(d, to);
                        let _ = out.send_to(d, to);
                    }
                    Action::Delay => {
                        if let Some(h) = held.replace(d.to_vec()) {
                            let _ = out.send_to(&h, to);
                        }
                        index += 1;
                        continue;
                    }
                }
                if let Some(h) = held.take() {
                    let _ = out.send_to(&h, to);
                }
                index += 1;
            }
        });
        Ok(Relay {
            addr,
            stop,
            counters,
            thread: Some(thread),
        })
    }

    /// Where senders should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Datagrams seen and dropped so far.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.counters.seen.load(Ordering::Relaxed),
            self.counters.dropped.load(Ordering::Relaxed),
        )
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
