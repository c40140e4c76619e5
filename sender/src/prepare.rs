//! Turning an object's bytes into windows of blocks ready to send: read, hash, compress
//! and RaptorQ-encode [`INTERLEAVE_DEPTH`] blocks at a time.
//!
//! An object larger than one window is prepared on its own thread, one window ahead of
//! the sending thread, so the pacer sees a steady stream instead of a pause every window
//! while the next one is read and encoded.

use crate::error::TransferError;
use crate::source::SourceFile;
use crossbeam_channel::{bounded, Receiver};
use gapferry_common::compress;
use gapferry_common::control::ObjectDescriptor;
use gapferry_common::emit::{OutgoingBlock, INTERLEAVE_DEPTH};
use std::io::{self, Read};

/// One window of blocks, encoded and ready to interleave.
pub struct Window {
    /// The window's blocks, in order.
    pub blocks: Vec<OutgoingBlock>,
    /// Bytes of the object the window covers.
    pub plain_bytes: u64,
}

/// What a window is encoded with.
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    /// The sender session id.
    pub session: u64,
    /// The object id.
    pub object: u32,
    /// Largest symbol of a block.
    pub max_symbol: u16,
    /// zstd level of block compression.
    pub zstd_level: i32,
    /// Repair symbols as a percentage of source symbols.
    pub repair_percent: u32,
}

/// Reads and encodes the windows of one object pass, in order.
struct WindowMaker {
    file: SourceFile,
    descriptor: ObjectDescriptor,
    encoding: Encoding,
    reader: Box<dyn Read + Send>,
    hasher: blake3::Hasher,
    next_block: u32,
}

impl WindowMaker {
    fn read_err(&self, error: io::Error) -> TransferError {
        if error.kind() == io::ErrorKind::UnexpectedEof {
            TransferError::Changed(self.file.path.clone())
        } else {
            TransferError::Read {
                path: self.file.path.clone(),
                error,
            }
        }
    }

    /// The next window, or `None` once every block is out.
    fn next(&mut self) -> Option<Result<Window, TransferError>> {
        let d = &self.descriptor;
        let blocks = d.block_count() as u32;
        if self.next_block >= blocks {
            return None;
        }
        let e = self.encoding;
        let start = self.next_block;
        let end = (start + INTERLEAVE_DEPTH as u32).min(blocks);
        let mut window = Window {
            blocks: Vec::with_capacity((end - start) as usize),
            plain_bytes: 0,
        };
        for b in start..end {
            let plain_len = d.block_plain_len(b) as usize;
            let mut plain = vec![0u8; plain_len];
            if let Err(err) = self.reader.read_exact(&mut plain) {
                return Some(Err(self.read_err(err)));
            }
            self.hasher.update(&plain);
            let (codec, data) = compress::compress_block(&plain, e.zstd_level);
            window.plain_bytes += plain_len as u64;
            window.blocks.push(OutgoingBlock::new(
                e.session,
                e.object,
                b,
                codec,
                plain_len as u32,
                data,
                e.max_symbol,
                e.repair_percent,
                d.pass as u32,
            ));
        }
        self.next_block = end;
        Some(Ok(window))
    }

    /// Checks, after the last window, that the source still is what the descriptor says.
    fn verify(mut self) -> Result<(), TransferError> {
        let mut extra = [0u8; 1];
        let grew = self.reader.read(&mut extra).map_err(|e| self.read_err(e))? > 0;
        if grew || *self.hasher.finalize().as_bytes() != self.descriptor.blake3 {
            return Err(TransferError::Changed(self.file.path.clone()));
        }
        Ok(())
    }
}

enum Message {
    Window(Result<Window, TransferError>),
    Verdict(Result<(), TransferError>),
}

/// The windows of one object pass, prepared inline or one window ahead on a thread.
pub struct Preparer(Mode);

enum Mode {
    /// Small objects: each window is made when asked for.
    Inline(Box<WindowMaker>),
    /// Objects of several windows: a thread keeps the next window ready.
    Ahead {
        rx: Receiver<Message>,
        verdict: Option<Result<(), TransferError>>,
    },
}

impl Preparer {
    /// Opens `file` and starts preparing the pass `descriptor` describes.
    pub fn start(
        file: &SourceFile,
        descriptor: &ObjectDescriptor,
        encoding: Encoding,
    ) -> Result<Self, TransferError> {
        let reader = file.open().map_err(|error| TransferError::Read {
            path: file.path.clone(),
            error,
        })?;
        let mut maker = Box::new(WindowMaker {
            file: file.clone(),
            descriptor: descriptor.clone(),
            encoding,
            reader,
            hasher: blake3::Hasher::new(),
            next_block: 0,
        });
        if descriptor.block_count() <= INTERLEAVE_DEPTH as u64 {
            return Ok(Preparer(Mode::Inline(maker)));
        }
        // The thread makes the next window while the current one is sent, and hands it
        // over when asked: at most two windows (about 26 MB at MTU 1500) exist at once.
        let (tx, rx) = bounded(0);
        std::thread::Builder::new()
            .name("gapferry-prepare".into())
            .spawn(move || loop {
                let Some(w) = maker.next() else {
                    let _ = tx.send(Message::Verdict(maker.verify()));
                    return;
                };
                let failed = w.is_err();
                // A closed channel means the transfer was dropped: stop.
                if tx.send(Message::Window(w)).is_err() || failed {
                    return;
                }
            })
            .map_err(|error| TransferError::Read {
                path: file.path.clone(),
                error,
            })?;
        Ok(Preparer(Mode::Ahead { rx, verdict: None }))
    }

    /// The next window, or `None` once every block is out.
    pub fn next_window(&mut self) -> Option<Result<Window, TransferError>> {
        match &mut self.0 {
            Mode::Inline(maker) => maker.next(),
            Mode::Ahead {
                verdict: Some(_), ..
            } => None,
            Mode::Ahead { rx, verdict } => match rx.recv() {
                Ok(Message::Window(w)) => Some(w),
                Ok(Message::Verdict(v)) => {
                    *verdict = Some(v);
                    None
                }
                Err(_) => Some(Err(thread_gone())),
            },
        }
    }

    /// After the last window: whether the source still matches its descriptor.
    pub fn verify(self) -> Result<(), TransferError> {
        match self.0 {
            Mode::Inline(maker) => maker.verify(),
            Mode::Ahead {
                verdict: Some(v), ..
            } => v,
            Mode::Ahead { rx, verdict: None } => loop {
                match rx.recv() {
                    Ok(Message::Verdict(v)) => return v,
                    // Windows never taken are skipped.
                    Ok(Message::Window(Ok(_))) => {}
                    Ok(Message::Window(Err(e))) => return Err(e),
                    Err(_) => return Err(thread_gone()),
                }
            },
        }
    }
}

fn thread_gone() -> TransferError {
    TransferError::Sink(io::Error::other(
        "the thread preparing blocks stopped unexpectedly",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::describe;
    use gapferry_common::ObjectKind;

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

    fn encoding() -> Encoding {
        Encoding {
            session: 1,
            object: 0,
            max_symbol: SYMBOL,
            zstd_level: 3,
            repair_percent: 10,
        }
    }

    /// Prepares every window of `file` against `d`; the windows' bytes and the verdict.
    fn drain(file: &SourceFile, d: &ObjectDescriptor) -> (u64, Result<(), TransferError>) {
        let mut p = Preparer::start(file, d, encoding()).unwrap();
        let mut bytes = 0;
        while let Some(w) = p.next_window() {
            match w {
                Ok(w) => bytes += w.plain_bytes,
                Err(e) => return (bytes, Err(e)),
            }
        }
        (bytes, p.verify())
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
            let (bytes, verdict) = drain(&file, &d);
            assert_eq!(bytes, n as u64);
            assert!(verdict.is_ok(), "{n}: {verdict:?}");
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

        let mut edited = content(n);
        edited[n / 2] ^= 1;
        std::fs::write(&path, &edited).unwrap();
        assert!(matches!(drain(&file, &d).1, Err(TransferError::Changed(_))));

        std::fs::write(&path, content(n + 1)).unwrap();
        assert!(matches!(drain(&file, &d).1, Err(TransferError::Changed(_))));

        std::fs::write(&path, content(n - 70_000)).unwrap();
        let (bytes, verdict) = drain(&file, &d);
        assert!(matches!(verdict, Err(TransferError::Changed(_))));
        assert!(bytes < n as u64);
    }
}
