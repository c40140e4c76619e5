//! What changed in the feed directory since the index last looked, told by inotify: the
//! `<uuid>.json` names created, moved or deleted by anyone (MISP, an operator, this
//! feed), so that a batch re-checks those few files instead of listing a directory of
//! 100 000 events. A full event queue, or the directory itself removed or moved, says
//! "look at everything" ([`Changes::Everything`]); without inotify (no instance left),
//! the feed lists the directory every batch as before.

use crate::fsutil::is_uuid;
use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;
use std::collections::BTreeSet;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::path::Path;

/// An inotify watch on the feed directory.
#[derive(Debug)]
pub(super) struct DirWatch {
    fd: OwnedFd,
}

/// What changed since the last look.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Changes {
    /// The uuids of the event files whose names were created, moved or deleted.
    Names(BTreeSet<String>),
    /// Events were lost or the directory itself went: everything must be looked at.
    Everything,
}

impl DirWatch {
    /// Starts watching `dir` (set up before the directory is read, so nothing done after
    /// the read is missed); `None` when inotify cannot be had.
    pub(super) fn new(dir: &Path) -> Option<DirWatch> {
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).ok()?;
        let flags = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR
            | WatchFlags::DONT_FOLLOW;
        inotify::add_watch(&fd, dir, flags).ok()?;
        Some(DirWatch { fd })
    }

    /// The changes queued since the last call (reads without blocking).
    pub(super) fn changes(&mut self) -> Changes {
        let mut buf = vec![MaybeUninit::<u8>::uninit(); 64 << 10];
        let mut reader = inotify::Reader::new(&self.fd, &mut buf);
        let mut names = BTreeSet::new();
        let mut everything = false;
        loop {
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => continue,
                Err(_) => return Changes::Everything,
            };
            let lost = ReadFlags::QUEUE_OVERFLOW
                | ReadFlags::DELETE_SELF
                | ReadFlags::MOVE_SELF
                | ReadFlags::IGNORED
                | ReadFlags::UNMOUNT;
            if event.events().intersects(lost) {
                everything = true;
                continue;
            }
            let name = event.file_name().and_then(|n| n.to_str().ok());
            if let Some(stem) = name.and_then(|n| n.strip_suffix(".json")) {
                if is_uuid(stem) {
                    names.insert(stem.to_string());
                }
            }
        }
        if everything {
            Changes::Everything
        } else {
            Changes::Names(names)
        }
    }
}
