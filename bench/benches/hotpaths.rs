//! Criterion micro-benchmarks of gapferry's hot paths: per-datagram header encode/parse
//! (with and without the keyed-blake3 tag), RaptorQ block encode and decode at several
//! block and symbol sizes with 0 % and 5 % loss, zstd per block, and the cost of putting
//! datagrams on loopback with `send`, `sendmmsg` and UDP GSO, and candidate per-datagram
//! tags (keyed blake3 as on the wire today, AES-GMAC, ChaCha20-Poly1305 over associated
//! data only) on datagram-sized inputs, the sender's prepare pool (hash pass and windows
//! on 1, 2 and N threads) and block hashes merged into an object's blake3 against
//! `blake3::hash` of the whole.
//!
//! Kept short (10 samples, ~2 s each) so the suite runs in a few minutes on 2 cores:
//! `cargo bench -p gapferry-bench` (add a filter such as `-- fec_decode` to run a part).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gapferry_bench::{data, udpcost};
use gapferry_common::compress::{self, DEFAULT_LEVEL};
use gapferry_common::fec::{BlockDecoder, BlockEncoder};
use gapferry_common::layout;
use gapferry_common::wire::{self, Codec, DataHeader};
use gapferry_common::{Key, KeyRing};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use std::time::Duration;

/// Repair percentage the sender uses by default.
const REPAIR: u32 = 10;

fn configure() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .without_plots()
}

fn header(symbol: u16) -> DataHeader {
    DataHeader {
        session: 0x0123_4567_89ab_cdef,
        object: 7,
        block: 3,
        esi: 1000,
        block_len: symbol as u32 * 1024,
        plain_len: symbol as u32 * 1024,
        codec: Codec::None,
    }
}

fn bench_wire(c: &mut Criterion) {
    let key = Key::from_bytes([7; 32]);
    let mut g = c.benchmark_group("wire");
    for mtu in [1500usize, 9000] {
        for tagged in [false, true] {
            let t = layout::max_symbol_size(mtu, tagged, layout::IpVersion::V6).expect("valid MTU");
            let symbol = data::random_bytes(t as usize, 1);
            let h = header(t);
            let k = tagged.then_some(&key);
            let ring = KeyRing::new(k.into_iter().cloned().collect());
            let label = format!("mtu{mtu}/{}", if tagged { "tagged" } else { "plain" });
            g.throughput(Throughput::Elements(1));
            let mut buf = Vec::with_capacity(mtu);
            g.bench_function(BenchmarkId::new("encode_data", &label), |b| {
                b.iter(|| {
                    wire::encode_data(&mut buf, black_box(&h), black_box(&symbol), k);
                    black_box(buf.len())
                })
            });
            let mut datagram = Vec::new();
            wire::encode_data(&mut datagram, &h, &symbol, k);
            g.bench_function(BenchmarkId::new("parse", &label), |b| {
                b.iter(|| wire::parse(black_box(&datagram), &ring).expect("valid datagram"))
            });
        }
    }
    g.finish();
}

/// (label, block bytes, max symbol) combinations: a 64 KiB block and a full block per MTU.
fn blocks() -> Vec<(String, usize, u16)> {
    let mut out = Vec::new();
    for mtu in [1500usize, 9000] {
        let t = layout::max_symbol_size(mtu, false, layout::IpVersion::V6).expect("valid MTU");
        let full = layout::block_plain_size(t) as usize;
        out.push((format!("64KiB/t{t}"), 64 << 10, t));
        out.push((format!("{:.1}MiB/t{t}", full as f64 / 1048576.0), full, t));
    }
    out
}

fn bench_fec_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec_encode");
    for (label, len, t) in blocks() {
        let block = data::random_bytes(len, 2);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("source+repair", &label), |b| {
            b.iter(|| {
                let mut enc = BlockEncoder::new(block.clone(), t);
                let k = enc.source_symbols();
                let r = layout::repair_symbols(k, REPAIR);
                black_box(enc.repair_symbols(k, r))
            })
        });
    }
    g.finish();
}

/// Every symbol of one block (source then repair) with `loss` of them removed at random.
fn symbols(block: &[u8], t: u16, loss: f64) -> (u16, Vec<(u32, Vec<u8>)>) {
    let mut enc = BlockEncoder::new(block.to_vec(), t);
    let k = enc.source_symbols();
    let r = layout::repair_symbols(k, REPAIR);
    let mut all: Vec<(u32, Vec<u8>)> = (0..k).map(|e| (e, enc.source_symbol(e).to_vec())).collect();
    all.extend(
        enc.repair_symbols(k, r)
            .into_iter()
            .enumerate()
            .map(|(i, s)| (k + i as u32, s)),
    );
    let mut rng = StdRng::seed_from_u64(5);
    all.retain(|_| rng.random::<f64>() >= loss);
    (enc.symbol_size(), all)
}

fn bench_fec_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("fec_decode");
    for (label, len, t) in blocks() {
        let block = data::random_bytes(len, 3);
        g.throughput(Throughput::Bytes(len as u64));
        for loss in [0.0, 0.05] {
            let (ts, syms) = symbols(&block, t, loss);
            let id = BenchmarkId::new(format!("loss{:.0}%", loss * 100.0), &label);
            g.bench_function(id, |b| {
                b.iter(|| {
                    let mut dec =
                        BlockDecoder::new(len, ts, layout::BLOCK_SYMBOLS * 8).expect("valid block");
                    for (esi, s) in &syms {
                        if let Some(out) = dec.add(*esi, s).expect("valid symbol") {
                            return out.len();
                        }
                    }
                    panic!("block did not decode")
                })
            });
        }
    }
    g.finish();
}

fn bench_compress(c: &mut Criterion) {
    let t = layout::max_symbol_size(1500, false, layout::IpVersion::V6).expect("valid MTU");
    let len = layout::block_plain_size(t) as usize;
    let json = data::json_block(len, 4);
    let random = data::random_bytes(len, 4);
    let mut g = c.benchmark_group("zstd_block");
    g.throughput(Throughput::Bytes(len as u64));
    for (name, plain) in [("json", &json), ("random", &random)] {
        g.bench_function(BenchmarkId::new("compress", name), |b| {
            b.iter(|| compress::compress_block(black_box(plain), DEFAULT_LEVEL))
        });
    }
    let (codec, packed) = compress::compress_block(&json, DEFAULT_LEVEL);
    eprintln!(
        "zstd level {DEFAULT_LEVEL}: JSON block {len} B -> {} B ({codec:?})",
        packed.len()
    );
    g.bench_function(BenchmarkId::new("decompress", "json"), |b| {
        b.iter(|| compress::decompress_block(codec, packed.clone(), len as u32).expect("valid"))
    });
    g.finish();
}

/// Datagrams per GSO send: 44 × 1 452 B stays under the 65 507-byte UDP limit.
const GSO_SEGMENTS: usize = 44;

fn bench_udp_send(c: &mut Criterion) {
    // 1 452 B: a full data datagram at MTU 1500 (40 B header + 1 408 B symbol + 4 B spare).
    let datagram = data::random_bytes(1452, 6);
    let mut g = c.benchmark_group("udp_send_loopback");
    g.throughput(Throughput::Elements(GSO_SEGMENTS as u64));
    let drain = udpcost::Drain::start(false).expect("loopback socket");
    let s = drain.connect().expect("loopback socket");
    g.bench_function(BenchmarkId::new("send_per_datagram", GSO_SEGMENTS), |b| {
        b.iter(|| {
            for _ in 0..GSO_SEGMENTS {
                udpcost::send_one(&s, &datagram).expect("send");
            }
        })
    });
    g.bench_function(BenchmarkId::new("sendmmsg", GSO_SEGMENTS), |b| {
        b.iter(|| udpcost::send_mmsg(&s, &datagram, GSO_SEGMENTS).expect("sendmmsg"))
    });
    drop(s);
    drop(drain);
    let super_datagram = datagram.repeat(GSO_SEGMENTS);
    // Without UDP_GRO on the receiving socket the kernel segments on receive, per datagram.
    for (name, gro) in [("gso_to_plain_socket", false), ("gso_to_gro_socket", true)] {
        let drain = udpcost::Drain::start(gro).expect("loopback socket");
        let s = drain.connect().expect("loopback socket");
        udpcost::enable_gso(&s, datagram.len()).expect("UDP_SEGMENT");
        g.bench_function(BenchmarkId::new(name, GSO_SEGMENTS), |b| {
            b.iter(|| udpcost::send_one(&s, &super_datagram).expect("GSO send"))
        });
    }
    g.finish();
}

/// Per-datagram authentication: the wire's two schemes as `gapferry_common::auth` computes
/// them (`wire_blake3`, the first; `wire_gcm_siv`, what senders write now), and the
/// candidates measured before choosing, each over one datagram's bytes as associated data
/// with a 16-byte tag out (no encryption: the payload stays in clear). AES-GMAC and
/// Poly1305 need a nonce unique per datagram under a key, which the wire does not carry.
fn bench_tags(c: &mut Criterion) {
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use gapferry_common::auth::{Key, TagScheme};
    let mut g = c.benchmark_group("tag");
    let key = [7u8; 32];
    let wire_key = Key::from_bytes(key);
    let aes = aes_gcm::Aes256Gcm::new(&key.into());
    let chacha = chacha20poly1305::ChaCha20Poly1305::new(&key.into());
    for len in [64usize, 1472, 8972] {
        let datagram: Vec<u8> = (0..len).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function(BenchmarkId::new("blake3_keyed", len), |b| {
            b.iter(|| black_box(blake3::keyed_hash(&key, black_box(&datagram))))
        });
        for (name, scheme) in [
            ("wire_blake3", TagScheme::Blake3),
            ("wire_gcm_siv", TagScheme::AesGcmSiv),
        ] {
            g.bench_function(BenchmarkId::new(name, len), |b| {
                b.iter(|| black_box(wire_key.tag(scheme, black_box(&datagram))))
            });
        }
        let nonce = [1u8; 12];
        g.bench_function(BenchmarkId::new("aes256_gmac", len), |b| {
            b.iter(|| {
                black_box(
                    aes.encrypt_inout_detached(
                        &nonce.into(),
                        black_box(&datagram),
                        (&mut [][..]).into(),
                    )
                    .unwrap(),
                )
            })
        });
        g.bench_function(BenchmarkId::new("chacha20_poly1305", len), |b| {
            b.iter(|| {
                black_box(
                    chacha
                        .encrypt_inout_detached(
                            &nonce.into(),
                            black_box(&datagram),
                            (&mut [][..]).into(),
                        )
                        .unwrap(),
                )
            })
        });
    }
    g.finish();
}

/// Thread counts of the prepare pool and block-hash benchmarks: 1, 2 and every core.
fn thread_counts() -> Vec<usize> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut counts = vec![1, 2, cores];
    counts.dedup();
    counts.sort_unstable();
    counts.dedup();
    counts
}

/// The sender's block preparation on 1, 2 and N threads: the hash pass before the first
/// datagram (`describe_on`) and every window of one pass (read, blake3, zstd, RaptorQ),
/// for a 32 MiB random file at MTU 1500 (23 blocks, 3 windows).
fn bench_prepare_pool(c: &mut Criterion) {
    use gapferry_sender::prepare::{Encoding, Preparer};
    use gapferry_sender::transfer::describe_on;
    use gapferry_sender::SourceFile;
    let dir = tempfile::tempdir().expect("scratch directory");
    let path = dir.path().join("object.bin");
    let len = 32u64 << 20;
    data::write_random_file(&path, len, 12).expect("test file");
    let file = SourceFile {
        path: path.clone(),
        name: "object.bin".into(),
        size: len,
        kind: gapferry_common::ObjectKind::File,
        bytes: None,
    };
    let symbol = layout::max_symbol_size(1500, false, layout::IpVersion::V6).expect("valid MTU");
    let d = describe_on(&file, symbol, 1, 1).expect("describe");
    let mut g = c.benchmark_group("prepare_pool");
    g.throughput(Throughput::Bytes(len));
    for threads in thread_counts() {
        g.bench_function(BenchmarkId::new("describe", threads), |b| {
            b.iter(|| black_box(describe_on(&file, symbol, 1, threads).expect("describe")))
        });
        let encoding = Encoding {
            session: 1,
            object: 0,
            max_symbol: symbol,
            zstd_level: DEFAULT_LEVEL,
            repair_percent: REPAIR,
            threads,
        };
        g.bench_function(BenchmarkId::new("windows", threads), |b| {
            b.iter(|| {
                let mut p = Preparer::start(&file, &d, encoding).expect("start");
                while let Some(w) = p.next_window() {
                    black_box(w.expect("window"));
                }
                p.verify().expect("unchanged")
            })
        });
    }
    g.finish();
}

/// An object's blake3 from its blocks hashed apart and merged, against `blake3::hash` of
/// the whole: 16 MiB in MTU-1500 blocks (1 408 KiB), on one thread and on several.
fn bench_block_hash(c: &mut Criterion) {
    use gapferry_common::block_hash::{hash_block, merge_blocks, ObjectHasher};
    let object = data::random_bytes(16 << 20, 13);
    let size = object.len() as u64;
    let block = layout::block_plain_size(
        layout::max_symbol_size(1500, false, layout::IpVersion::V6).expect("MTU"),
    );
    let mut g = c.benchmark_group("block_hash");
    g.throughput(Throughput::Bytes(size));
    g.bench_function("blake3_hash", |b| {
        b.iter(|| black_box(blake3::hash(black_box(&object))))
    });
    g.bench_function(BenchmarkId::new("merged", 1), |b| {
        b.iter(|| {
            black_box(merge_blocks(
                size,
                block as u64,
                object.chunks(block as usize),
            ))
        })
    });
    for threads in thread_counts().into_iter().filter(|&t| t > 1) {
        g.bench_function(BenchmarkId::new("merged", threads), |b| {
            b.iter(|| {
                let blocks: Vec<(usize, &[u8])> =
                    object.chunks(block as usize).enumerate().collect();
                let digests = std::thread::scope(|s| {
                    let handles: Vec<_> = (0..threads)
                        .map(|t| {
                            let mine: Vec<_> =
                                blocks.iter().skip(t).step_by(threads).copied().collect();
                            s.spawn(move || {
                                mine.into_iter()
                                    .map(|(i, bytes)| {
                                        hash_block(size, (i * block as usize) as u64, bytes)
                                    })
                                    .collect::<Vec<_>>()
                            })
                        })
                        .collect();
                    handles
                        .into_iter()
                        .flat_map(|h| h.join().expect("hashing thread"))
                        .collect::<Vec<_>>()
                });
                let mut merged = ObjectHasher::new(size);
                for digest in digests {
                    merged.add(digest.expect("aligned")).expect("once");
                }
                black_box(merged.finish().expect("whole"))
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = hotpaths;
    config = configure();
    targets = bench_wire, bench_fec_encode, bench_fec_decode, bench_compress, bench_udp_send, bench_tags,
        bench_prepare_pool, bench_block_hash
}
criterion_main!(hotpaths);
