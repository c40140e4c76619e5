//! Streaming a staged file to disk as it grows: writeback starts every few MiB and pages
//! already on disk leave the page cache, so a multi-GB image neither floods the cache
//! (evicting what the high side's MISP is using) nor waits for one huge flush at its
//! final fsync. On a VM whose free memory goes back to the host, it also saves faulting
//! in a fresh page for every 4 KiB written.

use std::fs::File;

/// Bytes written between two writeback rounds.
const WINDOW: u64 = 8 << 20;

/// Writeback state of one staged file.
#[derive(Debug, Default)]
pub struct Writeback {
    /// Bytes written when the next round is due.
    next_round: u64,
}

impl Writeback {
    /// Notes that `written` bytes are now in `file`, of which the first `settled` will not
    /// be read again; every [`WINDOW`] bytes, drops the settled pages already on disk and
    /// starts writing out the rest.
    pub fn wrote(&mut self, file: &File, written: u64, settled: u64) {
        if written < self.next_round.max(WINDOW) {
            return;
        }
        self.next_round = written + WINDOW;
        // Pages still dirty or under writeback are skipped by the kernel; the next round
        // drops them. Both calls are advice: a failure only costs page cache.
        if settled > 0 {
            sys::drop_clean_pages(file, settled);
        }
        sys::start_writeback(file);
    }
}

#[cfg(target_os = "linux")]
mod sys {
    use std::fs::File;
    use std::os::fd::AsRawFd;

    /// Asks the kernel to drop the clean cached pages of `file` below `len`.
    pub fn drop_clean_pages(file: &File, len: u64) {
        let len = i64::try_from(len).unwrap_or(i64::MAX);
        // SAFETY: posix_fadvise only reads its integer arguments; the fd is open and owned
        // by `file` for the duration of the call.
        let rc =
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, len, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            tracing::debug!(errno = rc, "posix_fadvise(DONTNEED) refused");
        }
    }

    /// Starts writeback of every dirty page of `file` without waiting for it.
    pub fn start_writeback(file: &File) {
        // SAFETY: sync_file_range only reads its integer arguments; the fd is open and
        // owned by `file` for the duration of the call. Offset 0 and length 0 mean the
        // whole file.
        let rc =
            unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
        if rc != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "sync_file_range refused");
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod sys {
    use std::fs::File;

    pub fn drop_clean_pages(_file: &File, _len: u64) {}

    pub fn start_writeback(_file: &File) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn rounds_come_every_window_and_leave_the_bytes_intact() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let mut wb = Writeback::default();
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut rounds = 0;
        for i in 0..20u64 {
            file.write_all_at(&chunk, i << 20).unwrap();
            let before = wb.next_round;
            wb.wrote(&file, (i + 1) << 20, i << 20);
            rounds += u32::from(wb.next_round != before);
        }
        assert_eq!(rounds, 20 / 8);
        let mut back = vec![0u8; 1 << 20];
        for i in 0..20u64 {
            file.read_exact_at(&mut back, i << 20).unwrap();
            assert!(back == chunk, "chunk {i} changed");
        }
    }
}
