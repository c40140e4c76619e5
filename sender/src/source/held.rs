//! The content of an object that is not a whole file on disk (a MISP event split out of
//! an export, or converted to feed form). A listing spills it to one unnamed temporary
//! file, so an export of 100 000 events costs page cache that the kernel can drop, not the
//! sender's memory; it stays in memory only when no temporary file can be written.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// The bytes of one object that is not a whole file; cheap to clone.
#[derive(Debug, Clone)]
pub struct HeldBytes(Held);

#[derive(Debug, Clone)]
enum Held {
    Memory(Arc<Vec<u8>>),
    Spilled {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
}

impl HeldBytes {
    /// Bytes held in memory.
    pub fn in_memory(bytes: Vec<u8>) -> Self {
        HeldBytes(Held::Memory(Arc::new(bytes)))
    }

    /// Their length in bytes.
    pub fn len(&self) -> u64 {
        match &self.0 {
            Held::Memory(b) => b.len() as u64,
            Held::Spilled { len, .. } => *len,
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether they wait in the temporary file rather than in memory.
    pub fn is_spilled(&self) -> bool {
        matches!(self.0, Held::Spilled { .. })
    }

    /// Fills `buf` with the bytes at `offset`; `UnexpectedEof` when that passes the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len()) {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        match &self.0 {
            Held::Memory(b) => {
                let at = offset as usize;
                buf.copy_from_slice(&b[at..at + buf.len()]);
                Ok(())
            }
            Held::Spilled {
                file, offset: o, ..
            } => file.read_exact_at(buf, o + offset),
        }
    }

    /// A reader of the whole, from the start.
    pub fn reader(&self) -> impl Read + Send + 'static {
        HeldReader {
            bytes: self.clone(),
            at: 0,
        }
    }

    /// The whole, read into memory.
    pub fn to_vec(&self) -> io::Result<Vec<u8>> {
        let mut out = vec![0; self.len() as usize];
        self.read_at(0, &mut out)?;
        Ok(out)
    }
}

/// Equal when they hold the same bytes (unreadable ones equal nothing).
impl PartialEq for HeldBytes {
    fn eq(&self, other: &Self) -> bool {
        match (self.to_vec(), other.to_vec()) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for HeldBytes {}

struct HeldReader {
    bytes: HeldBytes,
    at: u64,
}

impl Read for HeldReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.bytes.len().saturating_sub(self.at)).min(buf.len() as u64) as usize;
        self.bytes.read_at(self.at, &mut buf[..n])?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Where one listing keeps the content of its objects that are not whole files.
#[derive(Default)]
pub struct Spill {
    file: Option<Arc<File>>,
    end: u64,
    /// Set once the temporary file could not be made or written: memory from then on.
    failed: bool,
}

impl Spill {
    /// Keeps `bytes`: in the temporary file, or in memory when that cannot be written.
    pub fn keep(&mut self, bytes: Vec<u8>) -> HeldBytes {
        if !self.failed {
            match self.write(&bytes) {
                Ok(held) => return held,
                Err(e) => {
                    self.failed = true;
                    tracing::warn!(
                        dir = %std::env::temp_dir().display(),
                        "cannot write a temporary file ({e}): MISP events to send are held in \
                         memory instead; set TMPDIR to a writable directory with room"
                    );
                }
            }
        }
        HeldBytes::in_memory(bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<HeldBytes> {
        let file = match &self.file {
            Some(f) => f.clone(),
            None => self.file.insert(Arc::new(tempfile::tempfile()?)).clone(),
        };
        file.write_all_at(bytes, self.end)?;
        let offset = self.end;
        self.end += bytes.len() as u64;
        Ok(HeldBytes(Held::Spilled {
            file,
            offset,
            len: bytes.len() as u64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_bytes_read_back_whole_and_by_offset_and_refuse_past_the_end() {
        let mut spill = Spill::default();
        let a = spill.keep(b"first event".to_vec());
        let b = spill.keep((0..5000u32).map(|i| i as u8).collect());
        let empty = spill.keep(Vec::new());
        assert!(a.is_spilled() && b.is_spilled());
        assert_eq!(a.to_vec().unwrap(), b"first event");
        assert_eq!(b.len(), 5000);
        let mut buf = [0u8; 10];
        b.read_at(4990, &mut buf).unwrap();
        assert_eq!(
            buf.to_vec(),
            (4990..5000u32).map(|i| i as u8).collect::<Vec<_>>()
        );
        assert_eq!(
            b.read_at(4991, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert_eq!(
            a.read_at(u64::MAX, &mut buf).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        let mut whole = Vec::new();
        b.reader().read_to_end(&mut whole).unwrap();
        assert_eq!(whole, b.to_vec().unwrap());
        assert!(empty.is_empty());
        assert_eq!(empty.to_vec().unwrap(), Vec::<u8>::new());
        assert_eq!(a, HeldBytes::in_memory(b"first event".to_vec()));
        assert_ne!(a, b);
    }
}
