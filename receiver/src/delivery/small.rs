//! Small documents staged in memory: a MISP event or STIX bundle of at most
//! [`IN_MEMORY_OBJECT`] bytes is reassembled in an anonymous memory file (`memfd`), not in
//! a staging file under the state directory. Its bytes are read into memory after the
//! blake3 check anyway (the feed and the STIX store check the document), so a file on
//! disk only cost a new inode (on a churned ext4, inode allocation was most of a MISP
//! event's commit time), a create and an unlink. Nothing is visible to anyone, and a
//! crash loses only what was never delivered (the sender's next pass sends it again, as
//! it would a staging file, which restart clears).
//!
//! Memory stays bounded: documents held in memory at once total at most
//! [`IN_MEMORY_BUDGET`] bytes; past it, objects take a staging file as before.

use super::staging::Staged;
use super::Delivery;
use gapferry_common::{ObjectDescriptor, ObjectKind};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Largest MISP event or STIX bundle reassembled in memory, in bytes.
pub const IN_MEMORY_OBJECT: u64 = 1 << 20;
/// Most bytes of documents reassembled in memory at once.
pub const IN_MEMORY_BUDGET: u64 = 64 << 20;

impl Delivery {
    /// An anonymous memory file for `d` when it is a small document and the budget has
    /// room, `None` when it takes a staging file on disk.
    pub(super) fn in_memory_file(&self, d: &ObjectDescriptor) -> Option<io::Result<File>> {
        if !matches!(d.kind, ObjectKind::Misp | ObjectKind::Stix) || d.size > IN_MEMORY_OBJECT {
            return None;
        }
        let held: u64 = self
            .staged
            .values()
            .filter(|s| in_memory(s))
            .map(|s| s.descriptor.size)
            .sum();
        if held + d.size > IN_MEMORY_BUDGET {
            return None;
        }
        let fd = rustix::fs::memfd_create("gapferry-object", rustix::fs::MemfdFlags::CLOEXEC);
        Some(fd.map(File::from).map_err(io::Error::from))
    }
}

/// Whether `s` is reassembled in memory (it has no staging path).
pub(super) fn in_memory(s: &Staged) -> bool {
    s.path.as_os_str().is_empty()
}

/// The verified bytes of a staged document (MISP event, STIX bundle), read from its open
/// file (staging file or memory), at most `limit` bytes.
pub(super) fn read_staged(s: &Staged, limit: u64) -> Result<Vec<u8>, String> {
    let size = s.descriptor.size;
    if size > limit {
        return Err(format!("a {size}-byte document is above the {limit}-byte limit for MISP and STIX objects; raise [limits] max_document in the receiver's configuration, or send it as kind `file`"));
    }
    let mut bytes = vec![0; size as usize];
    s.file
        .read_exact_at(&mut bytes, 0)
        .map_err(|e| format!("cannot read the staged object: {e}"))?;
    Ok(bytes)
}

/// Removes a staged object's file from disk, if it has one.
pub(super) fn discard(s: &Staged) {
    if !in_memory(s) {
        let _ = std::fs::remove_file(&s.path);
    }
}
