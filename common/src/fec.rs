//! RaptorQ coding of one block, over `raptorq`'s `SourceBlockEncoder`/`SourceBlockDecoder`.
//!
//! The decoder wrapper checks every symbol against the block's parameters first: the
//! `raptorq` crate panics on inconsistent input, and input here comes from the wire.

use crate::layout::{self};
use crate::wire::MAX_ESI;
use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder,
};
use thiserror::Error;

/// Most source symbols per block RaptorQ supports (RFC 6330 K'max).
pub const RAPTORQ_MAX_SYMBOLS: u32 = 56_403;
/// Bytes a decoder holds per source symbol slot, besides the symbols themselves. Charged
/// with [`SYMBOL_OVERHEAD`] so a forger sending tiny symbols for wide blocks reaches the
/// receiver's memory limit as fast as the heap really grows.
const SLOT_COST: usize = 32;
/// Bytes of bookkeeping per symbol received (allocation, set entry, packet header).
const SYMBOL_OVERHEAD: usize = 64;
/// A recycled buffer may exceed the block by a 1/`SPARE_SLACK` at most (see
/// [`BlockDecoder::adopt_buffer`]): a small block never holds a big block's buffer.
pub const SPARE_SLACK: usize = 16;

fn oti(block_len: usize, symbol_size: u16) -> ObjectTransmissionInformation {
    ObjectTransmissionInformation::new(block_len as u64, symbol_size, 1, 1, 1)
}

/// Produces the encoding symbols of one block.
pub struct BlockEncoder {
    padded: Vec<u8>,
    block_len: usize,
    symbol_size: u16,
    k: u32,
}

impl BlockEncoder {
    /// Prepares `data` (one encoded block, non-empty) for symbols of at most `max_symbol` bytes.
    pub fn new(mut data: Vec<u8>, max_symbol: u16) -> Self {
        assert!(!data.is_empty(), "blocks are never empty");
        let block_len = data.len();
        let symbol_size = layout::symbol_size(block_len, max_symbol);
        let k = layout::source_symbols(block_len, symbol_size);
        assert!(k <= RAPTORQ_MAX_SYMBOLS);
        data.resize(k as usize * symbol_size as usize, 0);
        BlockEncoder {
            padded: data,
            block_len,
            symbol_size,
            k,
        }
    }

    /// Bytes of the block before padding.
    pub fn block_len(&self) -> usize {
        self.block_len
    }

    /// Source symbols in the block.
    pub fn source_symbols(&self) -> u32 {
        self.k
    }

    /// Bytes per symbol of this block.
    pub fn symbol_size(&self) -> u16 {
        self.symbol_size
    }

    /// Source symbol `esi` (< k), borrowed from the block.
    pub fn source_symbol(&self, esi: u32) -> &[u8] {
        let t = self.symbol_size as usize;
        let at = esi as usize * t;
        &self.padded[at..at + t]
    }

    /// Repair symbols with ids `start..start+count` (ids ≥ k).
    ///
    /// RaptorQ's intermediate symbols (about the block's size again) live only during
    /// the call: a sender holding a few windows of blocks does not hold them twice.
    pub fn repair_symbols(&mut self, start: u32, count: u32) -> Vec<Vec<u8>> {
        assert!(start >= self.k && start + count <= MAX_ESI + 1);
        let (padded, t) = (&self.padded, self.symbol_size);
        let enc = SourceBlockEncoder::new(0, &oti(padded.len(), t), padded);
        enc.repair_packets(start - self.k, count)
            .into_iter()
            .map(|p| p.split().1)
            .collect()
    }
}

/// Why a symbol was refused by a block decoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum SymbolError {
    /// The symbol's length differs from the block's symbol size.
    #[error("symbol size differs from the block's")]
    SizeMismatch,
    /// The block's parameters are outside what the decoder accepts.
    #[error("block parameters out of range")]
    BadBlock,
}

/// What one more symbol did to a block.
#[derive(Debug)]
pub enum Added {
    /// Not enough symbols yet (or a solve is already under way).
    Pending,
    /// Every source symbol arrived: the block's bytes.
    Decoded(Vec<u8>),
    /// Enough symbols to try RaptorQ: run the job (on any thread), then report its
    /// outcome with [`BlockDecoder::solve_failed`] if it fails.
    Solve(SolveJob),
    /// Enough symbols to try RaptorQ, but the decoder holds solves (see
    /// [`BlockDecoder::hold_solves`]): the missing source symbols may still be on their
    /// way; take the job with [`BlockDecoder::take_job`] when it is time.
    Ready,
}

/// A RaptorQ solve of one block: a copy of the symbols held, runnable on any thread.
#[derive(Debug)]
pub struct SolveJob {
    block_len: usize,
    symbol_size: u16,
    packets: Vec<EncodingPacket>,
}

impl SolveJob {
    /// Solves the block; `None` when the symbols do not determine it yet.
    pub fn run(self) -> Option<Vec<u8>> {
        let mut solver = SourceBlockDecoder::new(
            0,
            &oti(self.block_len, self.symbol_size),
            self.block_len as u64,
        );
        solver.decode(self.packets).map(|mut data| {
            data.truncate(self.block_len);
            data
        })
    }

    /// Bytes the job holds, for memory accounting.
    pub fn held_bytes(&self) -> usize {
        self.packets.len() * (self.symbol_size as usize + SYMBOL_OVERHEAD)
    }
}

/// Collects symbols of one block until it decodes.
///
/// Source symbols are copied straight into the block's buffer, so a block that lost
/// nothing is never handed to RaptorQ and costs one copy per symbol. Only when source
/// symbols are missing and enough repair symbols arrived does it hand out a [`SolveJob`].
pub struct BlockDecoder {
    block_len: usize,
    symbol_size: u16,
    k: u32,
    received: u32,
    /// Source symbols in place, grown as far as the highest one received.
    data: Vec<u8>,
    /// Which source symbols `data` holds.
    present: Vec<bool>,
    /// Distinct source symbols held.
    sources: u32,
    /// Distinct repair symbols held.
    repairs: Vec<(u32, Vec<u8>)>,
    /// A solve job is out.
    solving: bool,
    /// Distinct symbols held when the last solve failed.
    attempted: u32,
    /// Bytes copied into the job that is out.
    lent: usize,
    /// Distinct symbols the job that is out was given.
    distinct_at_job: u32,
    /// Solves wait for [`BlockDecoder::take_job`] instead of being handed out at once.
    hold: bool,
}

impl BlockDecoder {
    /// A decoder for a block of `block_len` bytes in symbols of `symbol_size` bytes.
    ///
    /// Refuses parameters RaptorQ cannot handle or that exceed `max_symbols`.
    pub fn new(block_len: usize, symbol_size: u16, max_symbols: u32) -> Result<Self, SymbolError> {
        let k = Self::check(block_len, symbol_size, max_symbols)?;
        Ok(BlockDecoder {
            block_len,
            symbol_size,
            k,
            received: 0,
            data: Vec::new(),
            present: vec![false; k as usize],
            sources: 0,
            repairs: Vec::new(),
            solving: false,
            attempted: 0,
            lent: 0,
            distinct_at_job: 0,
            hold: false,
        })
    }

    /// Checks block parameters as [`Self::new`] does, without allocating; returns what
    /// a decoder for them would hold before its first symbol, and its source symbols.
    pub fn opening_cost(
        block_len: usize,
        symbol_size: u16,
        max_symbols: u32,
    ) -> Result<usize, SymbolError> {
        let k = Self::check(block_len, symbol_size, max_symbols)?;
        Ok(k as usize * SLOT_COST + symbol_size as usize + SYMBOL_OVERHEAD)
    }

    fn check(block_len: usize, symbol_size: u16, max_symbols: u32) -> Result<u32, SymbolError> {
        if block_len == 0 || symbol_size == 0 || block_len > u32::MAX as usize {
            return Err(SymbolError::BadBlock);
        }
        let k = layout::source_symbols(block_len, symbol_size);
        if k > max_symbols.min(RAPTORQ_MAX_SYMBOLS) {
            return Err(SymbolError::BadBlock);
        }
        // A sender following the layout never uses a symbol more than one alignment
        // step larger than needed; refusing that bounds memory per symbol received.
        if layout::symbol_size(block_len, symbol_size) != symbol_size {
            return Err(SymbolError::BadBlock);
        }
        Ok(k)
    }

    /// Source symbols needed at least.
    pub fn source_symbols(&self) -> u32 {
        self.k
    }

    /// Symbols accepted so far (duplicates included).
    pub fn received(&self) -> u32 {
        self.received
    }

    /// Whether a solve job is out.
    pub fn solving(&self) -> bool {
        self.solving
    }

    fn distinct(&self) -> u32 {
        self.sources + self.repairs.len() as u32
    }

    /// Bytes held for this block, for memory accounting: its slots, the source symbols'
    /// buffer, the repair symbols and the copy lent to a solve job.
    pub fn held_bytes(&self) -> usize {
        let t = self.symbol_size as usize + SYMBOL_OVERHEAD;
        self.k as usize * SLOT_COST + self.data.capacity() + self.repairs.len() * t + self.lent
    }

    /// What [`Self::held_bytes`] grows by at most with one more symbol: the buffer may
    /// grow to the whole block, and a solve job may be lent every symbol.
    pub fn cost_of_symbol(&self) -> usize {
        let t = self.symbol_size as usize;
        let buffer = (self.k as usize * t).saturating_sub(self.data.capacity());
        buffer + (self.distinct() as usize + 2) * (t + SYMBOL_OVERHEAD)
    }

    /// Takes `buf` (a spare block buffer, recycled) as the buffer of the source symbols,
    /// when none was allocated yet and its capacity fits the whole block with at most
    /// [`SPARE_SLACK`] to spare; gives it back otherwise. Saves growing the buffer,
    /// zeroing it and faulting in fresh pages for every block.
    ///
    /// The old bytes stay where no symbol has landed yet: only the slots marked present
    /// are ever read (copied into a solve job, or handed out once every one is present).
    pub fn adopt_buffer(&mut self, mut buf: Vec<u8>) -> Result<(), Vec<u8>> {
        let whole = self.k as usize * self.symbol_size as usize;
        let fits = (whole..=whole + whole / SPARE_SLACK).contains(&buf.capacity());
        if self.data.capacity() != 0 || !fits {
            return Err(buf);
        }
        buf.truncate(whole);
        buf.resize(whole, 0);
        self.data = buf;
        Ok(())
    }

    /// Takes the source symbols' buffer away (for recycling once the block is done).
    pub fn take_buffer(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }

    /// Adds one symbol, solving with RaptorQ on this thread when needed; returns the
    /// block's bytes once it decodes.
    pub fn add(&mut self, esi: u32, symbol: &[u8]) -> Result<Option<Vec<u8>>, SymbolError> {
        let mut job = match self.offer(esi, symbol)? {
            Added::Pending => return Ok(None),
            Added::Decoded(data) => return Ok(Some(data)),
            Added::Solve(job) => job,
            Added::Ready => match self.take_job() {
                Some(job) => job,
                None => return Ok(None),
            },
        };
        loop {
            if let Some(data) = job.run() {
                self.lent = 0;
                return Ok(Some(data));
            }
            match self.solve_failed() {
                Some(again) => job = again,
                None => return Ok(None),
            }
        }
    }

    /// Adds one symbol; says whether the block is complete or ready for a solve.
    pub fn offer(&mut self, esi: u32, symbol: &[u8]) -> Result<Added, SymbolError> {
        if symbol.len() != self.symbol_size as usize {
            return Err(SymbolError::SizeMismatch);
        }
        if esi > MAX_ESI {
            return Err(SymbolError::BadBlock);
        }
        self.received += 1;
        if esi < self.k {
            if !self.present[esi as usize] {
                self.place(esi, symbol);
            }
            if self.sources == self.k {
                let mut data = std::mem::take(&mut self.data);
                data.truncate(self.block_len);
                return Ok(Added::Decoded(data));
            }
        } else if !self.repairs.iter().any(|(e, _)| *e == esi) {
            self.repairs.push((esi, symbol.to_vec()));
        }
        if !self.solving && self.distinct() >= self.k && self.distinct() > self.attempted {
            if self.hold {
                return Ok(Added::Ready);
            }
            return Ok(Added::Solve(self.job()));
        }
        Ok(Added::Pending)
    }

    /// Makes [`Self::offer`] answer [`Added::Ready`] instead of handing out a solve: a
    /// stream whose symbols arrive out of order (a sender spreads them) completes most
    /// blocks from their source symbols a moment later, without the cost of a solve.
    pub fn hold_solves(&mut self, hold: bool) {
        self.hold = hold;
    }

    /// The solve a held decoder is ready for, if it still is (no job out, enough symbols,
    /// more than at the last failed attempt, some source symbol missing).
    pub fn take_job(&mut self) -> Option<SolveJob> {
        (!self.solving
            && self.sources < self.k
            && self.distinct() >= self.k
            && self.distinct() > self.attempted)
            .then(|| self.job())
    }

    /// Reports that the job handed out failed; returns a new one when more symbols have
    /// arrived since.
    pub fn solve_failed(&mut self) -> Option<SolveJob> {
        self.solving = false;
        self.lent = 0;
        self.attempted = self.attempted.max(self.distinct_at_job);
        (self.distinct() > self.attempted).then(|| self.job())
    }

    /// Forgets the job that is out without waiting for its outcome.
    pub fn cancel_solve(&mut self) {
        self.solving = false;
        self.lent = 0;
    }

    /// Copies every symbol held into a solve job.
    fn job(&mut self) -> SolveJob {
        let t = self.symbol_size as usize;
        let sources = self
            .present
            .iter()
            .enumerate()
            .filter(|(_, p)| **p)
            .map(|(esi, _)| {
                let at = esi * t;
                EncodingPacket::new(
                    PayloadId::new(0, esi as u32),
                    self.data[at..at + t].to_vec(),
                )
            });
        let repairs = self
            .repairs
            .iter()
            .map(|(esi, s)| EncodingPacket::new(PayloadId::new(0, *esi), s.clone()));
        let job = SolveJob {
            block_len: self.block_len,
            symbol_size: self.symbol_size,
            packets: sources.chain(repairs).collect(),
        };
        self.solving = true;
        self.distinct_at_job = self.distinct();
        self.lent = job.held_bytes();
        job
    }

    /// Copies source symbol `esi` into place, growing the buffer as far as it needs.
    fn place(&mut self, esi: u32, symbol: &[u8]) {
        let t = self.symbol_size as usize;
        let (at, end) = (esi as usize * t, (esi as usize + 1) * t);
        if self.data.len() < end {
            if self.data.capacity() < end {
                let whole = self.k as usize * t;
                let want = end.max(self.data.capacity().saturating_mul(2)).min(whole);
                self.data.reserve_exact(want - self.data.len());
            }
            self.data.resize(end, 0);
        }
        self.data[at..end].copy_from_slice(symbol);
        self.present[esi as usize] = true;
        self.sources += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 + i / 7) as u8).collect()
    }

    fn round_trip(n: usize, t: u16, drop_every: usize) {
        let original = data(n);
        let mut enc = BlockEncoder::new(original.clone(), t);
        let k = enc.source_symbols();
        let r = layout::repair_symbols(k, 20);
        let mut dec = BlockDecoder::new(n, enc.symbol_size(), 4096).unwrap();
        let mut out = None;
        let repairs = enc.repair_symbols(k, r);
        let mut symbols: Vec<(u32, Vec<u8>)> =
            (0..k).map(|e| (e, enc.source_symbol(e).to_vec())).collect();
        symbols.extend(
            repairs
                .into_iter()
                .enumerate()
                .map(|(i, s)| (k + i as u32, s)),
        );
        for (i, (esi, s)) in symbols.into_iter().enumerate() {
            if drop_every > 0 && i % drop_every == 0 {
                continue;
            }
            if let Some(d) = dec.add(esi, &s).unwrap() {
                out = Some(d);
                break;
            }
        }
        assert_eq!(out.expect("block decodes"), original);
    }

    #[test]
    fn decodes_with_and_without_loss() {
        round_trip(1, 1408, 0);
        round_trip(1407, 1408, 0);
        round_trip(1409, 1408, 0);
        round_trip(100_000, 1408, 0);
        round_trip(100_000, 1408, 10);
        round_trip(50_000, 1408, 7);
    }

    #[test]
    fn duplicates_reverse_order_and_late_sources_decode_with_bounded_memory() {
        let original = data(300_000);
        let mut enc = BlockEncoder::new(original.clone(), 1408);
        let (k, t) = (enc.source_symbols(), enc.symbol_size() as usize);
        // Every source symbol twice, highest first: the buffer grows once to the block.
        let mut dec = BlockDecoder::new(original.len(), enc.symbol_size(), 4096).unwrap();
        for esi in (1..k).rev() {
            assert_eq!(dec.add(esi, enc.source_symbol(esi)).unwrap(), None);
            assert_eq!(dec.add(esi, enc.source_symbol(esi)).unwrap(), None);
        }
        assert!(dec.held_bytes() <= k as usize * (SLOT_COST + t));
        assert_eq!(
            dec.add(0, enc.source_symbol(0)).unwrap(),
            Some(original.clone())
        );

        // Two sources missing and one repair: too few to try; a duplicate repair does not
        // count; the late source symbol makes k and RaptorQ recovers the other one.
        let mut dec = BlockDecoder::new(original.len(), enc.symbol_size(), 4096).unwrap();
        for esi in 2..k {
            assert_eq!(dec.add(esi, enc.source_symbol(esi)).unwrap(), None);
        }
        let repair = enc.repair_symbols(k, 1).remove(0);
        assert_eq!(dec.add(k, &repair).unwrap(), None);
        assert_eq!(
            dec.add(k, &repair).unwrap(),
            None,
            "a duplicate repair adds nothing"
        );
        assert_eq!(dec.add(1, enc.source_symbol(1)).unwrap(), Some(original));
    }

    #[test]
    fn refuses_inconsistent_symbols_and_blocks() {
        let mut dec = BlockDecoder::new(5000, 1408, 4096).unwrap();
        assert_eq!(dec.add(0, &[0; 100]), Err(SymbolError::SizeMismatch));
        assert!(BlockDecoder::new(0, 1408, 4096).is_err());
        assert!(BlockDecoder::new(10_000_000, 8, 4096).is_err());
        assert!(BlockDecoder::new(100, 1408, 4096).is_err());
        assert!(BlockDecoder::new(100, 104, 4096).is_ok());
    }
}
#[cfg(test)]
mod offer_tests {
    use super::*;

    #[test]
    fn offered_symbols_with_loss_solve_through_jobs() {
        let original: Vec<u8> = (0..1_400_000).map(|i| (i * 13 + i / 999) as u8).collect();
        let mut enc = BlockEncoder::new(original.clone(), 1408);
        let k = enc.source_symbols();
        let r = layout::repair_symbols(k, 10);
        let repairs = enc.repair_symbols(k, r);
        let mut dec = BlockDecoder::new(original.len(), 1408, 4096).unwrap();
        let mut jobs = Vec::new();
        for esi in 0..k {
            if esi % 50 == 3 {
                continue;
            }
            match dec.offer(esi, enc.source_symbol(esi)).unwrap() {
                Added::Pending => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        for (i, s) in repairs.iter().enumerate() {
            if let Added::Solve(job) = dec.offer(k + i as u32, s).unwrap() {
                jobs.push(job);
            }
        }
        assert_eq!(jobs.len(), 1, "one job while it is out");
        let job = jobs.pop().unwrap();
        assert_eq!(job.run(), Some(original));
    }
}

#[cfg(test)]
mod hold_tests {
    use super::*;

    fn block() -> (Vec<u8>, BlockEncoder, u32, Vec<Vec<u8>>) {
        let original: Vec<u8> = (0..140_800).map(|i| (i * 7 + i / 300) as u8).collect();
        let mut enc = BlockEncoder::new(original.clone(), 1408);
        let k = enc.source_symbols();
        let repairs = enc.repair_symbols(k, 10);
        (original, enc, k, repairs)
    }

    #[test]
    fn a_held_decoder_completes_from_late_sources_without_a_solve() {
        let (original, enc, k, repairs) = block();
        let mut dec = BlockDecoder::new(original.len(), 1408, 4096).unwrap();
        dec.hold_solves(true);
        // Repairs overtake the last three source symbols, as a spread stream delivers them.
        for esi in 0..k - 3 {
            assert!(matches!(
                dec.offer(esi, enc.source_symbol(esi)).unwrap(),
                Added::Pending
            ));
        }
        for (i, r) in repairs.iter().take(3).enumerate() {
            assert!(matches!(
                dec.offer(k + i as u32, r).unwrap(),
                Added::Ready | Added::Pending
            ));
        }
        assert!(!dec.solving(), "a held decoder hands out no job by itself");
        let mut decoded = None;
        for esi in k - 3..k {
            match dec.offer(esi, enc.source_symbol(esi)).unwrap() {
                Added::Decoded(d) => decoded = Some(d),
                Added::Ready | Added::Pending => {}
                Added::Solve(_) => panic!("a held decoder handed out a solve"),
            }
        }
        assert_eq!(decoded.as_deref(), Some(&original[..]));
    }

    #[test]
    fn a_held_decoder_gives_its_job_when_taken_and_it_solves() {
        let (original, enc, k, repairs) = block();
        let mut dec = BlockDecoder::new(original.len(), 1408, 4096).unwrap();
        dec.hold_solves(true);
        assert!(dec.take_job().is_none(), "nothing to solve yet");
        for esi in (0..k).filter(|e| e % 10 != 0) {
            dec.offer(esi, enc.source_symbol(esi)).unwrap();
        }
        let mut ready = false;
        for (i, r) in repairs.iter().enumerate() {
            ready |= matches!(dec.offer(k + i as u32, r).unwrap(), Added::Ready);
        }
        assert!(ready, "enough symbols make the decoder ready");
        let job = dec.take_job().expect("a job once taken");
        assert!(dec.take_job().is_none(), "one job out at a time");
        assert_eq!(job.run().as_deref(), Some(&original[..]));
    }
}
