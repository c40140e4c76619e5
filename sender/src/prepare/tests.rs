//! The preparer's tests: whole and verified objects at every thread count, the wire
//! order independent of the thread count, sources changed after they were described, and
//! passes read once that learn the hash as they read.

use super::*;
use crate::transfer::describe;
use gapferry_common::ObjectKind;
use std::os::unix::fs::FileExt;

const SYMBOL: u16 = 64; // 64 KiB blocks: a 1 MiB object is two windows.

fn source(path: &std::path::Path) -> SourceFile {
    SourceFile {
        path: path.to_path_buf(),
        name: "f".into(),
        size: std::fs::metadata(path).unwrap().len(),
        kind: ObjectKind::File,
        bytes: None,
    }
}

fn encoding(threads: usize) -> Encoding {
    Encoding {
        session: 1,
        object: 0,
        max_symbol: SYMBOL,
        zstd_level: 3,
        repair_percent: 10,
        threads,
    }
}

/// Thread counts every test runs with: one worker, two, and more than there are blocks.
const THREADS: [usize; 3] = [1, 2, 40];

/// Prepares every window of `file` against `d`; the windows' bytes and the verdict.
fn drain(
    file: &SourceFile,
    d: &ObjectDescriptor,
    threads: usize,
) -> (u64, Result<(), TransferError>) {
    let mut p = Preparer::start(file, d, encoding(threads)).unwrap();
    let mut bytes = 0;
    while let Some(w) = p.next_window() {
        match w {
            Ok(w) => bytes += w.plain_bytes,
            Err(e) => return (bytes, Err(e)),
        }
    }
    (bytes, p.verify().map(|_| ()))
}

/// An object whose content is held in memory (as a split MISP event's is).
fn in_memory(bytes: &[u8]) -> SourceFile {
    SourceFile {
        path: "/nonexistent/export.json".into(),
        name: "e".into(),
        size: bytes.len() as u64,
        kind: ObjectKind::File,
        bytes: Some(crate::source::HeldBytes::in_memory(bytes.to_vec())),
    }
}

fn content(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 1000) as u8).collect()
}

#[test]
fn small_and_multi_window_objects_come_out_whole_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 65_536, 300_000, 1 << 20, (1 << 20) + 17] {
        let path = dir.path().join(format!("f{n}"));
        std::fs::write(&path, content(n)).unwrap();
        let file = source(&path);
        let d = describe(&file, SYMBOL, 1).unwrap();
        assert_eq!(d.blake3, *blake3::hash(&content(n)).as_bytes());
        for threads in THREADS {
            let (bytes, verdict) = drain(&file, &d, threads);
            assert_eq!(bytes, n as u64);
            assert!(verdict.is_ok(), "{n}, {threads} threads: {verdict:?}");
        }
    }
}

#[test]
fn a_source_changed_after_it_was_described_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let n = 1 << 20;
    std::fs::write(&path, content(n)).unwrap();
    let file = source(&path);
    let d = describe(&file, SYMBOL, 1).unwrap();

    for threads in THREADS {
        refused_after_edits(&file, &d, threads);
    }
}

/// Edits `file` (described as `d`) three ways; each pass prepared after it is refused.
fn refused_after_edits(file: &SourceFile, d: &ObjectDescriptor, threads: usize) {
    let n = d.size as usize;
    let mut edited = content(n);
    edited[n / 2] ^= 1;
    std::fs::write(&file.path, &edited).unwrap();
    let changed = drain(file, d, threads).1;
    assert!(
        matches!(changed, Err(TransferError::Changed(_))),
        "{threads}"
    );

    std::fs::write(&file.path, content(n + 1)).unwrap();
    let grown = drain(file, d, threads).1;
    assert!(matches!(grown, Err(TransferError::Changed(_))), "{threads}");

    std::fs::write(&file.path, content(n - 70_000)).unwrap();
    let (bytes, verdict) = drain(file, d, threads);
    assert!(
        matches!(verdict, Err(TransferError::Changed(_))),
        "{threads}"
    );
    assert!(bytes < n as u64);
    std::fs::write(&file.path, content(n)).unwrap();
}

/// Every datagram of every block of the pass, in the order the windows hand them out.
fn wire_of(file: &SourceFile, d: &ObjectDescriptor, threads: usize) -> Vec<Vec<u8>> {
    let w = gapferry_common::emit::DatagramWriter::new(1, None);
    let mut p = Preparer::start(file, d, encoding(threads)).unwrap();
    let mut out = Vec::new();
    while let Some(window) = p.next_window() {
        for mut block in window.unwrap().blocks {
            let mut datagram = Vec::new();
            while block.next_datagram(&w, &mut datagram) {
                out.push(datagram.clone());
            }
        }
    }
    p.verify().unwrap();
    out
}

#[test]
fn the_wire_order_does_not_depend_on_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    // 41 blocks of 64 KiB: six windows, the last one partial, the last block short.
    let n = 40 * 65_536 + 1_000;
    std::fs::write(&path, content(n)).unwrap();
    let file = source(&path);
    let d = describe(&file, SYMBOL, 1).unwrap();
    let one = wire_of(&file, &d, 1);
    // At least one source and MIN_REPAIR repair symbols per block.
    assert!(one.len() >= 41 * 5, "{}", one.len());
    for threads in [2, 3, 8, 40] {
        assert!(wire_of(&file, &d, threads) == one, "{threads} threads");
    }
}

#[test]
fn content_held_in_memory_is_prepared_and_checked_like_a_file() {
    let bytes = content(3 * 65_536 + 5);
    let file = in_memory(&bytes);
    let d = describe(&file, SYMBOL, 1).unwrap();
    assert_eq!(d.blake3, *blake3::hash(&bytes).as_bytes());
    for threads in THREADS {
        let (got, verdict) = drain(&file, &d, threads);
        assert_eq!(got, bytes.len() as u64);
        assert!(verdict.is_ok(), "{verdict:?}");
    }
    let other = ObjectDescriptor {
        blake3: [7; 32],
        ..d
    };
    assert!(matches!(
        drain(&file, &other, 2).1,
        Err(TransferError::Changed(_))
    ));
}

#[test]
fn the_hash_pass_on_threads_equals_blake3_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = content(5 * 65_536 + 4_097);
    std::fs::write(&path, &data).unwrap();
    let c = Content::open(&source(&path)).unwrap();
    let size = data.len() as u64;
    for threads in [1, 2, 7] {
        let got = hash_content(&c, size, 65_536, threads).unwrap();
        assert_eq!(got, *blake3::hash(&data).as_bytes(), "{threads} threads");
    }
    // Described as longer than it is: the file changed under the sender.
    let short = hash_content(&c, size + 10, 65_536, 2);
    assert!(matches!(short, Err(TransferError::Changed(_))));
}

#[test]
fn the_workers_never_run_more_than_one_window_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, content(30 * 65_536)).unwrap();
    let file = source(&path);
    let d = describe(&file, SYMBOL, 1).unwrap();
    for threads in THREADS {
        let mut p = Preparer::start(&file, &d, encoding(threads)).unwrap();
        assert_eq!(p.blocks_ahead(), INTERLEAVE_DEPTH as u32);
        let mut windows = 0;
        while let Some(w) = p.next_window() {
            assert!(w.unwrap().blocks.len() <= INTERLEAVE_DEPTH);
            assert!(p.blocks_ahead() <= INTERLEAVE_DEPTH as u32, "{threads}");
            windows += 1;
        }
        assert_eq!((windows, p.blocks_ahead()), (4, 0));
        p.verify().unwrap();
    }
}

/// `file`'s descriptor with its blake3 left to the pass, as the sender outlines it.
fn outline(file: &SourceFile) -> ObjectDescriptor {
    crate::transfer::outline(file, SYMBOL, 1).unwrap()
}

/// Hands out every window of a read-once pass; the window after which the hash was known.
fn learn(p: &mut Preparer) -> Option<usize> {
    let mut known_after = None;
    let mut i = 0;
    while let Some(w) = p.next_window() {
        w.unwrap();
        if known_after.is_none() && p.blake3().is_some() {
            known_after = Some(i);
        }
        i += 1;
    }
    known_after
}

#[test]
fn a_pass_read_once_learns_the_hash_before_its_last_two_windows() {
    // 40 blocks of 64 KiB: five windows. Known once the fourth (index 3) is handed out.
    let bytes = content(40 * 65_536 - 3);
    let file = in_memory(&bytes);
    let d = outline(&file);
    assert!(d.known_blake3().is_none());
    for threads in THREADS {
        let mut p = Preparer::start(&file, &d, encoding(threads)).unwrap();
        assert_eq!(p.blake3(), None, "nothing read yet");
        assert_eq!(learn(&mut p), Some(3), "{threads} threads");
        let want = *blake3::hash(&bytes).as_bytes();
        assert_eq!(p.blake3(), Some(want));
        assert_eq!(p.verify().unwrap(), want);
    }
    // One window (or none): known once that window is handed out.
    for n in [0usize, 1, 65_536, 8 * 65_536] {
        let bytes = content(n);
        let small = in_memory(&bytes);
        let mut p = Preparer::start(&small, &outline(&small), encoding(2)).unwrap();
        let known_after = learn(&mut p);
        assert_eq!(p.verify().unwrap(), *blake3::hash(&bytes).as_bytes(), "{n}");
        assert_eq!(known_after, (n > 0).then_some(0), "{n}");
    }
}

#[test]
fn a_file_changed_recently_is_hashed_before_its_first_window() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    std::fs::write(&path, content(20 * 65_536)).unwrap();
    let file = source(&path);
    // Written just now: a change during the read could keep its timestamps.
    let p = Preparer::start(&file, &outline(&file), encoding(2)).unwrap();
    assert_eq!(
        p.blake3(),
        Some(*blake3::hash(&content(20 * 65_536)).as_bytes())
    );
}

#[test]
fn a_settled_file_changed_while_read_once_is_refused_and_its_hash_never_learned() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let n = 40 * 65_536;
    std::fs::write(&path, content(n)).unwrap();
    std::thread::sleep(SETTLE + std::time::Duration::from_millis(300));
    let file = source(&path);
    let d = outline(&file);
    // Untouched: read once, its hash learned from the blocks.
    let mut p = Preparer::start(&file, &d, encoding(2)).unwrap();
    assert_eq!(p.blake3(), None, "settled: not hashed before");
    learn(&mut p);
    assert_eq!(p.verify().unwrap(), *blake3::hash(&content(n)).as_bytes());
    // Edited in place after the first window, same size: refused, no hash given out.
    let mut p = Preparer::start(&file, &d, encoding(2)).unwrap();
    p.next_window().unwrap().unwrap();
    let mut edited = content(n);
    edited[n - 10] ^= 1;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .write_all_at(&edited[n - 10..], (n - 10) as u64)
        .unwrap();
    // Every window still comes out (the receiver decodes every block and sees only the
    // hash missing), but no hash is learned and the pass is refused.
    let mut windows = 1;
    while let Some(w) = p.next_window() {
        w.unwrap();
        windows += 1;
    }
    assert_eq!(windows, 5);
    assert_eq!(p.blake3(), None);
    let refused = p.verify();
    assert!(
        matches!(refused, Err(TransferError::Changed(_))),
        "{refused:?}"
    );
}
