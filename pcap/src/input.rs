//! The byte source under a capture: exact reads that tell a clean end of file from a cut
//! one, bounded skips, and the record number and byte offset used in error messages.

use std::io::{self, Read};

use crate::error::CaptureError;

/// A reader that counts the bytes it consumed and knows which record it is in.
pub(crate) struct Input<R> {
    inner: R,
    offset: u64,
    record: u64,
    record_start: u64,
}

impl<R: Read> Input<R> {
    /// Wraps `inner`, starting the count at zero, before the first record.
    pub(crate) fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            record: 0,
            record_start: 0,
        }
    }

    /// Bytes consumed so far.
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads until `buf` is full or the input ends; returns how many bytes were read.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.inner.read(&mut buf[done..]) {
                Ok(0) => break,
                Ok(n) => {
                    // A misbehaving reader may claim more than it was given room for.
                    let n = n.min(buf.len() - done);
                    done += n;
                    self.offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Starts the next record by reading its fixed head; `false` at a clean end of input.
    pub(crate) fn begin_record(
        &mut self,
        head: &mut [u8],
        part: &'static str,
    ) -> Result<bool, CaptureError> {
        self.record += 1;
        self.record_start = self.offset;
        let n = self.fill(head).map_err(|e| self.io_error(e))?;
        if n == 0 {
            self.record -= 1;
            return Ok(false);
        }
        if n < head.len() {
            return Err(self.truncated(part));
        }
        Ok(true)
    }

    /// Reads exactly `buf.len()` bytes of the current record.
    pub(crate) fn exact(&mut self, buf: &mut [u8], part: &'static str) -> Result<(), CaptureError> {
        let n = self.fill(buf).map_err(|e| self.io_error(e))?;
        if n < buf.len() {
            return Err(self.truncated(part));
        }
        Ok(())
    }

    /// Discards exactly `len` bytes of the current record without buffering them.
    pub(crate) fn skip(&mut self, len: u64, part: &'static str) -> Result<(), CaptureError> {
        let n = io::copy(&mut (&mut self.inner).take(len), &mut io::sink());
        let n = match n {
            Ok(n) => n,
            Err(e) => return Err(self.io_error(e)),
        };
        self.offset += n;
        if n < len {
            return Err(self.truncated(part));
        }
        Ok(())
    }

    /// An error saying the current record is cut short.
    pub(crate) fn truncated(&self, part: &'static str) -> CaptureError {
        CaptureError::Truncated {
            record: self.record,
            offset: self.record_start,
            end: self.offset,
            part,
        }
    }

    /// An error saying the current record is inconsistent.
    pub(crate) fn malformed(&self, reason: impl Into<String>) -> CaptureError {
        CaptureError::Malformed {
            record: self.record,
            offset: self.record_start,
            reason: reason.into(),
        }
    }

    /// An error wrapping a failed read in the current record.
    fn io_error(&self, source: io::Error) -> CaptureError {
        CaptureError::Io {
            record: self.record,
            offset: self.offset,
            source,
        }
    }
}
