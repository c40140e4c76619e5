//! One pass of one object in the order the protocol sends it: a descriptor first, then the
//! blocks' datagrams window by window through the [`Interleaver`] with a descriptor copy
//! every [`DESCRIPTOR_EVERY`] datagrams (and one half-way through a small object), then
//! closing copies so that every pass carries at least [`MIN_DESCRIPTORS`] copies that
//! carry the object's blake3.
//!
//! A sender that reads an object once learns its blake3 only when it has read the whole
//! object: the copies written before then carry [`BLAKE3_LATER`], and
//! [`ObjectSchedule::set_blake3`] gives the hash to every copy written after. A sender sets
//! it before it adds the object's last two windows, so the copies carrying it are spread
//! over at least one whole window, as the blocks' own symbols are.
//!
//! The schedule is the only place that decides where descriptor copies go: the sender,
//! tests, fuzzers and the bench all produce an object's datagrams through it.

use crate::compress;
use crate::control::{ControlError, ObjectDescriptor, BLAKE3_LATER};
use crate::emit::{DatagramWriter, Interleaver, OutgoingBlock, INTERLEAVE_DEPTH};

/// A descriptor copy is sent after this many data datagrams of an object.
pub const DESCRIPTOR_EVERY: u64 = 128;
/// Descriptor copies every pass of an object gets at least: without one the object is
/// lost, so a small object (a few datagrams) must not depend on one or two surviving.
pub const MIN_DESCRIPTORS: u32 = 4;

/// What [`ObjectSchedule::next`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Emitted {
    /// A copy of the object's descriptor.
    Descriptor,
    /// A data datagram (one symbol of one block).
    Data,
}

/// The datagrams of one pass of one object, in wire order (before session spreading).
pub struct ObjectSchedule {
    object: u32,
    descriptor: ObjectDescriptor,
    window: Interleaver,
    /// Data datagrams a copy is due after, in a window covering the whole object.
    halfway: Option<u64>,
    /// Data datagrams written so far.
    data_written: u64,
    /// Descriptor copies carrying the object's blake3 written so far.
    hashed_copies: u32,
    /// Descriptor copies owed before the next data datagram.
    owed: u32,
    /// The first block of the next window.
    next_block: u32,
    closed: bool,
}

impl ObjectSchedule {
    /// The schedule of pass `descriptor.pass` of `object`; its first datagram is a
    /// descriptor copy. Fails when the descriptor cannot be encoded (a name too long).
    pub fn new(object: u32, descriptor: ObjectDescriptor) -> Result<Self, ControlError> {
        crate::control::encode(&descriptor)?;
        Ok(ObjectSchedule {
            object,
            descriptor,
            window: Interleaver::new(),
            halfway: None,
            data_written: 0,
            hashed_copies: 0,
            owed: 1,
            next_block: 0,
            closed: false,
        })
    }

    /// The object id.
    pub fn object(&self) -> u32 {
        self.object
    }

    /// The descriptor every copy carries.
    pub fn descriptor(&self) -> &ObjectDescriptor {
        &self.descriptor
    }

    /// Whether the copies written from now on carry the object's blake3.
    pub fn blake3_known(&self) -> bool {
        self.descriptor.known_blake3().is_some()
    }

    /// Gives the object's blake3, learned once the sender read the whole object, to every
    /// copy written from now on.
    pub fn set_blake3(&mut self, blake3: [u8; 32]) {
        debug_assert!(blake3 != BLAKE3_LATER);
        self.descriptor.blake3 = blake3;
    }

    /// The index of the first block the next window must start with.
    pub fn next_block(&self) -> u32 {
        self.next_block
    }

    /// Whether every block has been given in a window.
    pub fn blocks_done(&self) -> bool {
        self.next_block as u64 >= self.descriptor.block_count()
    }

    /// Whether the current window's datagrams and owed copies are all written.
    pub fn is_idle(&self) -> bool {
        self.owed == 0 && self.window.is_empty()
    }

    /// Adds the next window: blocks `next_block()..` in order, once the previous window is
    /// written out.
    pub fn add_window(&mut self, blocks: impl IntoIterator<Item = OutgoingBlock>) {
        debug_assert!(
            self.window.is_empty(),
            "the previous window is not written out"
        );
        let start = self.next_block;
        for block in blocks {
            self.window.push(block);
            self.next_block += 1;
        }
        // A small object gets a copy half-way through too, so its copies are spread out.
        let whole = start == 0 && self.blocks_done();
        self.halfway = whole
            .then(|| self.window.remaining() as u64 / 2)
            .filter(|&h| h > 0 && h < DESCRIPTOR_EVERY);
    }

    /// Owes the closing copies: enough for [`MIN_DESCRIPTORS`] carrying the blake3 in all,
    /// and at least one. The blake3 must be known by then ([`Self::set_blake3`]).
    pub fn close(&mut self) {
        debug_assert!(
            self.blake3_known(),
            "closing an object whose hash is unknown"
        );
        if !self.closed {
            self.closed = true;
            self.owed += MIN_DESCRIPTORS.saturating_sub(self.hashed_copies).max(1);
        }
    }

    /// Encodes the next datagram into `out`; `None` when the window is written out and no
    /// copy is owed (add a window, or close).
    pub fn next(&mut self, w: &DatagramWriter, out: &mut Vec<u8>) -> Option<Emitted> {
        if self.owed > 0 {
            self.owed -= 1;
            self.hashed_copies += u32::from(self.blake3_known());
            w.descriptor(out, self.object, &self.descriptor)
                .expect("encoded once in new");
            return Some(Emitted::Descriptor);
        }
        if !self.window.next_datagram(w, out) {
            return None;
        }
        self.data_written += 1;
        if self.data_written.is_multiple_of(DESCRIPTOR_EVERY)
            || Some(self.data_written) == self.halfway
        {
            self.owed += 1;
        }
        Some(Emitted::Data)
    }

    /// Every datagram of the pass at once, from its encoded blocks: for tests, fuzzers
    /// and tools that do not stream.
    pub fn all_datagrams(
        mut self,
        w: &DatagramWriter,
        windows: impl IntoIterator<Item = Vec<OutgoingBlock>>,
    ) -> Vec<Vec<u8>> {
        let mut datagrams = Vec::new();
        let mut out = Vec::new();
        let mut drain = |s: &mut Self, datagrams: &mut Vec<Vec<u8>>| {
            while s.next(w, &mut out).is_some() {
                datagrams.push(out.clone());
            }
        };
        drain(&mut self, &mut datagrams);
        for window in windows {
            self.add_window(window);
            drain(&mut self, &mut datagrams);
        }
        self.close();
        drain(&mut self, &mut datagrams);
        datagrams
    }
}

/// Every datagram of one pass (`d.pass`) of `object` whose content is `original`, as the
/// sender produces them before spreading: blocks compressed at `zstd_level`, coded with
/// `repair_percent` into symbols of at most `max_symbol` bytes, in windows of [`INTERLEAVE_DEPTH`] blocks. For tests, fuzzers and the
/// bench, which hold the object in memory.
pub fn pass_datagrams(
    w: &DatagramWriter,
    object: u32,
    d: &ObjectDescriptor,
    original: &[u8],
    max_symbol: u16,
    repair_percent: u32,
    zstd_level: i32,
) -> Result<Vec<Vec<u8>>, ControlError> {
    let blocks = d.block_count() as u32;
    let windows = (0..blocks).step_by(INTERLEAVE_DEPTH).map(|start| {
        (start..(start + INTERLEAVE_DEPTH as u32).min(blocks))
            .map(|b| {
                let at = b as usize * d.block_plain_size as usize;
                let plain = &original[at..at + d.block_plain_len(b) as usize];
                let (codec, data) = compress::compress_block(plain, zstd_level);
                OutgoingBlock::new(
                    w.session(),
                    object,
                    b,
                    codec,
                    plain.len() as u32,
                    data,
                    max_symbol,
                    repair_percent,
                    d.pass as u32,
                )
            })
            .collect::<Vec<_>>()
    });
    Ok(ObjectSchedule::new(object, d.clone())?.all_datagrams(w, windows))
}

/// Every datagram of every pass of `object` (passes `1..=d.passes`), as
/// [`pass_datagrams`] produces each pass.
pub fn object_datagrams(
    w: &DatagramWriter,
    object: u32,
    d: &ObjectDescriptor,
    original: &[u8],
    max_symbol: u16,
    repair_percent: u32,
    zstd_level: i32,
) -> Result<Vec<Vec<u8>>, ControlError> {
    let mut datagrams = Vec::new();
    for pass in 1..=d.passes {
        let d = ObjectDescriptor { pass, ..d.clone() };
        datagrams.extend(pass_datagrams(
            w,
            object,
            &d,
            original,
            max_symbol,
            repair_percent,
            zstd_level,
        )?);
    }
    Ok(datagrams)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, Codec, Datagram, DatagramType};
    use crate::ObjectKind;

    fn descriptor(blocks: u64, block_plain_size: u32) -> ObjectDescriptor {
        ObjectDescriptor {
            kind: ObjectKind::File,
            name: "a".into(),
            size: blocks * block_plain_size as u64,
            blake3: [1; 32],
            block_plain_size,
            mtime: 0,
            pass: 1,
            passes: 1,
        }
    }

    fn kinds(datagrams: &[Vec<u8>]) -> String {
        datagrams
            .iter()
            .map(|d| match wire::parse(d, &Default::default()).unwrap() {
                Datagram::Control {
                    kind: DatagramType::Descriptor,
                    ..
                } => 'D',
                Datagram::Data { .. } => '.',
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn block(index: u32, symbols: usize) -> OutgoingBlock {
        let len = 100 * symbols;
        OutgoingBlock::new(
            7,
            1,
            index,
            Codec::None,
            len as u32,
            vec![1; len],
            100,
            0,
            1,
        )
    }

    #[test]
    fn a_tiny_object_has_a_copy_first_half_way_and_enough_at_the_end() {
        let w = DatagramWriter::new(7, None);
        let s = ObjectSchedule::new(1, descriptor(1, 400)).unwrap();
        let got = kinds(&s.all_datagrams(&w, [vec![block(0, 4)]]));
        let n = got.matches('.').count();
        assert!(n >= 4, "{got}");
        // 1 first + 1 half-way + 2 closing = MIN_DESCRIPTORS.
        let half = ".".repeat(n / 2);
        let rest = ".".repeat(n - n / 2);
        assert_eq!(got, format!("D{half}D{rest}DD"));
    }

    #[test]
    fn a_long_object_has_a_copy_every_descriptor_every_datagrams() {
        let w = DatagramWriter::new(7, None);
        let s = ObjectSchedule::new(1, descriptor(2, 30_000)).unwrap();
        let windows = [vec![block(0, 300)], vec![block(1, 300)]];
        let got = kinds(&s.all_datagrams(&w, windows));
        let data = got.matches('.').count();
        assert!(data >= 600, "{data}");
        let copies: Vec<usize> = got.match_indices('D').map(|(i, _)| i).collect();
        // First, one after every 128 data datagrams, and one closing copy.
        assert_eq!(copies.len(), 1 + data / DESCRIPTOR_EVERY as usize + 1);
        for (n, at) in copies[1..copies.len() - 1].iter().enumerate() {
            let data_before = got[..*at].matches('.').count();
            assert_eq!(data_before as u64, (n as u64 + 1) * DESCRIPTOR_EVERY);
        }
        assert!(got.ends_with(".D"));
    }

    #[test]
    fn copies_before_the_hash_is_learned_do_not_count_towards_the_closing_minimum() {
        let w = DatagramWriter::new(7, None);
        let d = ObjectDescriptor {
            blake3: BLAKE3_LATER,
            ..descriptor(3, 30_000)
        };
        let mut s = ObjectSchedule::new(1, d).unwrap();
        let mut out = Vec::new();
        let mut carried = Vec::new();
        let mut drain = |s: &mut ObjectSchedule, carried: &mut Vec<bool>| {
            while let Some(e) = s.next(&w, &mut out) {
                if e == Emitted::Descriptor {
                    let Ok(Datagram::Control { body, .. }) = wire::parse(&out, &Default::default())
                    else {
                        panic!("not a control datagram")
                    };
                    let d: ObjectDescriptor = crate::control::decode(body).unwrap();
                    carried.push(d.known_blake3().is_some());
                }
            }
        };
        drain(&mut s, &mut carried);
        for b in 0..2 {
            s.add_window([block(b, 300)]);
            drain(&mut s, &mut carried);
        }
        // Learned before a last window of one tiny block: few regular copies carry it.
        assert!(!s.blake3_known());
        s.set_blake3([5; 32]);
        s.add_window([block(2, 1)]);
        drain(&mut s, &mut carried);
        s.close();
        drain(&mut s, &mut carried);
        let before = carried.iter().take_while(|c| !**c).count();
        assert!(before >= 5, "{carried:?}");
        assert!(carried[before..].iter().all(|c| *c), "{carried:?}");
        assert_eq!(
            carried.len() - before,
            MIN_DESCRIPTORS as usize,
            "{carried:?}"
        );
    }

    #[test]
    fn an_empty_object_is_all_copies() {
        let w = DatagramWriter::new(7, None);
        let s = ObjectSchedule::new(1, descriptor(0, 400)).unwrap();
        let got = kinds(&s.all_datagrams(&w, std::iter::empty()));
        assert_eq!(got, "DDDD");
    }

    #[test]
    fn a_name_too_long_to_encode_is_refused_up_front() {
        let mut d = descriptor(1, 400);
        d.name = "x".repeat(70_000);
        assert!(ObjectSchedule::new(1, d).is_err());
    }
}
