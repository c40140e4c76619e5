//! Tests of the pipeline's pieces: the byte budget, the own-drops warning.

use super::assembler_loop::OwnDropsWarning;
use super::handover::CloseOnDrop;
use super::*;
use gapferry_common::assembler::OwnDrops;

#[test]
fn own_drops_warn_at_once_then_at_most_every_five_seconds_with_the_counts_since() {
    let mut w = OwnDropsWarning::default();
    let at = Duration::from_secs;
    let drops = |queue_full, memory_limit| OwnDrops {
        queue_full,
        memory_limit,
        ..OwnDrops::default()
    };
    assert_eq!(w.check(at(1), OwnDrops::default()), None, "nothing dropped");
    assert_eq!(w.check(at(2), drops(3, 0)), Some(drops(3, 0)), "at once");
    assert_eq!(w.check(at(3), drops(10, 4)), None, "too soon");
    assert_eq!(w.check(at(6), drops(12, 4)), None, "still too soon");
    assert_eq!(
        w.check(at(7), drops(12, 4)),
        Some(drops(9, 4)),
        "everything since the last warning"
    );
    assert_eq!(w.check(at(20), drops(12, 4)), None, "the drops stopped");
    assert_eq!(w.check(at(21), drops(13, 4)), Some(drops(1, 0)));
}

/// Joins `t`, failing the test if it has not ended within five seconds.
fn join_soon<T>(t: std::thread::JoinHandle<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !t.is_finished() {
        assert!(Instant::now() < deadline, "the producer is still waiting");
        std::thread::sleep(Duration::from_millis(10));
    }
    t.join().unwrap()
}

#[test]
fn a_byte_budget_holds_the_producer_until_bytes_are_consumed() {
    let budget = Arc::new(ByteBudget::new(100));
    // One hand-over always passes, however large.
    budget.acquire(250);
    let waiting = std::thread::spawn({
        let budget = budget.clone();
        move || {
            budget.acquire(10);
            Instant::now()
        }
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !waiting.is_finished(),
        "250 + 10 bytes exceed the 100-byte budget"
    );
    let freed_at = Instant::now();
    budget.release(250);
    assert!(join_soon(waiting) >= freed_at);
    assert_eq!(budget.lock().0, 10);
    // A consumer that is gone never leaves the producer waiting.
    budget.acquire(85);
    let waiting = std::thread::spawn({
        let budget = budget.clone();
        move || budget.acquire(50)
    });
    std::thread::sleep(Duration::from_millis(50));
    assert!(!waiting.is_finished());
    drop(CloseOnDrop(budget.clone()));
    join_soon(waiting);
}

/// Sends `datagrams` (all as long as the first but the last) to `to` in one GSO write: the
/// receiving socket reads them as one GRO message.
fn send_gso(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let state = quinn_udp::UdpSocketState::new((&sock).into()).unwrap();
    let contents = datagrams.concat();
    let t = quinn_udp::Transmit {
        destination: to,
        ecn: None,
        contents: &contents,
        segment_size: (datagrams.len() > 1).then_some(datagrams[0].len()),
        src_ip: None,
    };
    state.try_send((&sock).into(), &t).unwrap();
}

/// Keyed data datagrams of `n` symbols of 1 400 bytes.
fn keyed_data(key: &gapferry_common::Key, n: u32) -> Vec<Vec<u8>> {
    let w = gapferry_common::emit::DatagramWriter::new(77, Some(key.clone()));
    (0..n)
        .map(|esi| {
            let h = wire::DataHeader {
                session: 77,
                object: 0,
                block: 0,
                esi,
                block_len: 1400 * 64,
                plain_len: 1400 * 64,
                codec: wire::Codec::None,
            };
            let mut out = Vec::new();
            w.data(&mut out, &h, &[esi as u8; 1400]);
            out
        })
        .collect()
}

/// Reads one message from `source` and admits it through `gate`.
fn read_and_admit(
    source: &crate::socket::UdpSource,
    reads: &mut crate::socket::RecvBatch,
    gate: &mut listener::Gate,
    pool: &mut crate::socket::BufferPool,
) -> Vec<Arrival> {
    assert!(source.recv(reads).unwrap(), "nothing arrived");
    let mut out = Vec::new();
    listener::admit_messages(reads, gate, pool, Duration::ZERO, &mut out);
    out
}

#[test]
fn a_gro_read_leaves_in_its_buffer_and_forged_or_truncated_datagrams_cost_no_buffer() {
    let key = gapferry_common::Key::from_bytes([9; 32]);
    let mut source =
        crate::socket::UdpSource::bind("127.0.0.1:0".parse().unwrap(), 4 << 20).unwrap();
    source.set_wait(Duration::from_secs(2));
    let to = source.local_addr().unwrap();
    let mut reads = crate::socket::RecvBatch::default();
    let (back, rx) = crate::socket::BufferPool::channel();
    let mut pool = crate::socket::BufferPool::new(rx);
    let keys = KeyRing::new(vec![key.clone()]);
    let metrics = crate::metrics::ReceiverMetrics::default();
    let lane = crate::lanes::LaneCounters::new(to, &metrics.lanes);
    let mut gate = listener::Gate::new(1472, keys, metrics, lane);
    let good = keyed_data(&key, 40);
    // Every datagram passes: the message leaves whole in its receive buffer, no copy.
    send_gso(to, &good);
    let got = read_and_admit(&source, &mut reads, &mut gate, &mut pool);
    assert_eq!(got.len(), 1, "one arrival for the whole GRO read");
    assert_eq!(got[0].count(), 40);
    assert!(got[0].bytes == good.concat(), "the datagrams' bytes");
    assert_eq!(got[0].bytes.capacity(), crate::socket::RECV_BUFFER_BYTES);
    assert_eq!(pool.counts, (1, 0), "one buffer took its place");
    // One forged datagram among them: the others are copied out, nothing leaves the pool.
    let mut forged = good.clone();
    let last = forged[17].len() - 1;
    forged[17][last] ^= 1;
    send_gso(to, &forged);
    let copies = read_and_admit(&source, &mut reads, &mut gate, &mut pool);
    assert_eq!(
        copies.len(),
        39,
        "the forged datagram is dropped, the rest copied"
    );
    assert!(copies.iter().all(|a| a.bytes.len() == a.stride));
    assert_eq!(
        pool.counts,
        (1, 0),
        "no buffer for a message with a forgery"
    );
    // A truncated datagram alone, then a forged one alone: dropped, no buffer, no copy.
    send_gso(to, &[good[3][..good[3].len() - 5].to_vec()]);
    assert!(read_and_admit(&source, &mut reads, &mut gate, &mut pool).is_empty());
    send_gso(to, &[forged[17].clone()]);
    assert!(read_and_admit(&source, &mut reads, &mut gate, &mut pool).is_empty());
    assert_eq!(pool.counts, (1, 0));
    assert_eq!(gate.rejected().values().sum::<u64>(), 3);
    // The handled buffer goes back and is the next one taken.
    let ptr = got[0].bytes.as_ptr();
    for a in got {
        crate::socket::give_back(&back, a.bytes);
    }
    let next = pool.take();
    assert_eq!(next.as_ptr(), ptr);
    assert_eq!(pool.counts, (1, 1));
}
