//! Spreading a sender's datagrams over the stream so that a burst loss anywhere costs every
//! object only a sliver: a row-by-row / column-by-column block interleaver over whole
//! datagrams, with padding so that the last datagrams of a stream are spread too.
//!
//! The sender writes datagrams into a matrix of [`ROWS`] × [`COLUMNS`] cells row by row and
//! sends them column by column. Two datagrams written one after the other leave [`ROWS`]
//! positions apart, so a burst of up to [`ROWS`] consecutive datagrams on the wire removes,
//! of any [`COLUMNS`] − 1 datagrams written one after the other, at most one. An object's
//! datagrams (its symbols and descriptor copies, written close together) therefore lose at
//! most one in fifteen to such a burst, wherever it falls: at the start of a session, in
//! the middle, or at the end.
//!
//! The end of a stream (or a pause in it) has no later datagrams to mix with, so the last
//! matrix is padded with small control datagrams chosen by the caller (descriptor copies,
//! ending heartbeats, inventories), which keep the last objects' datagrams as far apart as
//! in a full matrix. Padding costs at most one matrix of small datagrams per pause.

/// Rows of the matrix: the longest burst, in datagrams, that costs an object at most one
/// datagram in [`COLUMNS`] − 1.
pub const ROWS: usize = 128;
/// Columns of the matrix: of any `COLUMNS − 1` datagrams written one after the other, a
/// burst of up to [`ROWS`] removes at most one.
pub const COLUMNS: usize = 16;
/// Cells in the matrix: datagrams held back at most before the first leaves.
pub const CELLS: usize = ROWS * COLUMNS;

/// A block interleaver over whole datagrams.
#[derive(Debug)]
pub struct Spreader {
    /// Cells in row-major order (written row by row); a cleared cell is empty.
    cells: Vec<Vec<u8>>,
    /// Cells written in the current matrix.
    filled: usize,
    /// Next column-major position to read, while draining.
    reading: Option<usize>,
    /// Whether the current matrix is read bottom-up (every other matrix is), so the last
    /// datagrams written into one matrix and the first of the next never leave side by side.
    upward: bool,
    /// Datagrams written so far, over the stream's life.
    written: u64,
    /// Every datagram written before this count has been read out.
    drained: u64,
}

impl Default for Spreader {
    fn default() -> Self {
        Self::new()
    }
}

impl Spreader {
    /// An empty spreader; its cells are allocated at the first write, so an unused one
    /// (a placeholder while a matrix is drained) costs nothing.
    pub fn new() -> Self {
        Spreader {
            cells: Vec::new(),
            filled: 0,
            reading: None,
            upward: false,
            written: 0,
            drained: 0,
        }
    }

    /// Datagrams written and not yet read.
    pub fn held(&self) -> usize {
        self.filled
    }

    /// Whether the matrix is full and must be drained before the next write.
    pub fn is_full(&self) -> bool {
        self.filled == CELLS
    }

    /// Datagrams written over the stream's life.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Every datagram written before this count has been read out.
    pub fn drained_below(&self) -> u64 {
        self.drained
    }

    /// The next cell to write a datagram into, cleared; [`Self::commit`] keeps it.
    ///
    /// Panics when the matrix is full or being drained (drain it first).
    pub fn slot(&mut self) -> &mut Vec<u8> {
        assert!(
            self.filled < CELLS && self.reading.is_none(),
            "drain the spreader first"
        );
        if self.cells.is_empty() {
            self.cells = (0..CELLS).map(|_| Vec::new()).collect();
        }
        let cell = &mut self.cells[self.filled];
        cell.clear();
        cell
    }

    /// Keeps the datagram just written into [`Self::slot`].
    pub fn commit(&mut self) {
        debug_assert!(!self.cells[self.filled].is_empty(), "an empty datagram");
        self.filled += 1;
        self.written += 1;
    }

    /// Fills every free cell of a started matrix with `filler`, which writes one datagram
    /// into the buffer it is given; does nothing to an empty matrix.
    pub fn pad(&mut self, mut filler: impl FnMut(&mut Vec<u8>)) {
        if self.filled == 0 {
            return;
        }
        while self.filled < CELLS {
            let cell = self.slot();
            filler(cell);
            assert!(!cell.is_empty(), "a filler wrote nothing");
            self.filled += 1;
        }
    }

    /// The next datagram to send, column by column, skipping empty cells; `None` once the
    /// matrix is drained (it is then empty and ready for writing).
    ///
    /// Columns are read top-down in one matrix and bottom-up in the next. Pad a partial
    /// matrix first: read unpadded, its datagrams are spread over its filled rows only.
    pub fn pop(&mut self) -> Option<&[u8]> {
        let index = self.next_cell()?;
        Some(self.cell(index))
    }

    /// Moves to the next cell to send and returns its index for [`Self::cell`]; `None` once
    /// the matrix is drained. [`Self::pop`] in two steps, for callers that must change
    /// other state between choosing the datagram and reading it.
    pub fn next_cell(&mut self) -> Option<usize> {
        if self.filled == 0 {
            return None;
        }
        loop {
            let pos = *self.reading.get_or_insert(0);
            if pos >= CELLS {
                self.reading = None;
                self.filled = 0;
                self.upward = !self.upward;
                self.drained = self.written;
                return None;
            }
            self.reading = Some(pos + 1);
            let row = if self.upward {
                ROWS - 1 - pos % ROWS
            } else {
                pos % ROWS
            };
            let index = row * COLUMNS + pos / ROWS;
            if index < self.filled {
                return Some(index);
            }
        }
    }

    /// The datagram in cell `index`, as returned by [`Self::next_cell`].
    pub fn cell(&self, index: usize) -> &[u8] {
        &self.cells[index]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `n` datagrams numbered from 1 (as 4 bytes), pads with 0s, and drains.
    fn run(n: u32) -> Vec<u32> {
        let mut s = Spreader::new();
        let mut out = Vec::new();
        for i in 1..=n {
            if s.is_full() {
                while let Some(d) = s.pop() {
                    out.push(u32::from_be_bytes(d.try_into().unwrap()));
                }
            }
            s.slot().extend_from_slice(&i.to_be_bytes());
            s.commit();
        }
        s.pad(|c| c.extend_from_slice(&0u32.to_be_bytes()));
        while let Some(d) = s.pop() {
            out.push(u32::from_be_bytes(d.try_into().unwrap()));
        }
        out
    }

    /// Of any `COLUMNS - 1` consecutive datagrams written, a burst of `ROWS` removes one.
    fn assert_bursts_spread(out: &[u32]) {
        for start in 0..out.len().saturating_sub(ROWS) + 1 {
            let mut lost: Vec<u32> = out[start..(start + ROWS).min(out.len())]
                .iter()
                .copied()
                .filter(|&x| x != 0)
                .collect();
            lost.sort_unstable();
            for w in lost.windows(2) {
                assert!(
                    w[1] - w[0] >= COLUMNS as u32 - 1,
                    "burst at {start} removed {} and {}",
                    w[0],
                    w[1]
                );
            }
        }
    }

    #[test]
    fn everything_written_comes_out_once() {
        for n in [1, 15, 16, 17, 2047, 2048, 2049, 5000] {
            let mut real: Vec<u32> = run(n).into_iter().filter(|&x| x != 0).collect();
            real.sort_unstable();
            assert_eq!(real, (1..=n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn a_burst_anywhere_removes_at_most_one_in_fifteen() {
        for n in [1, 5, 40, 700, 2048, 3000, 6144] {
            let out = run(n);
            assert_eq!(out.len() % CELLS, 0, "padded to whole matrices");
            assert_bursts_spread(&out);
        }
    }

    #[test]
    fn a_tiny_stream_is_spread_over_a_whole_matrix() {
        let out = run(12);
        let positions: Vec<usize> = (0..out.len()).filter(|&i| out[i] != 0).collect();
        for w in positions.windows(2) {
            assert!(w[1] - w[0] >= ROWS, "{positions:?}");
        }
    }

    #[test]
    fn drained_below_counts_whole_matrices() {
        let mut s = Spreader::new();
        for _ in 0..CELLS {
            s.slot().push(1);
            s.commit();
        }
        assert_eq!(s.drained_below(), 0);
        while s.pop().is_some() {}
        assert_eq!(s.drained_below(), CELLS as u64);
        s.slot().push(1);
        s.commit();
        assert_eq!(
            (s.written(), s.drained_below()),
            (CELLS as u64 + 1, CELLS as u64)
        );
    }
}
