//! The sender's side of the protocol without I/O: turning encoded blocks, descriptors and
//! heartbeats into datagrams, with neighbouring blocks interleaved.

use crate::auth::Key;
use crate::control::{self, Heartbeat, ObjectDescriptor};
use crate::fec::BlockEncoder;
use crate::layout;
use crate::wire::{self, Codec, DataHeader, DatagramType};
use std::ops::Range;

/// Blocks whose symbols are interleaved, so a burst loss is spread over them.
pub const INTERLEAVE_DEPTH: usize = 8;

/// Encodes datagrams of one sender session into a reused buffer.
#[derive(Debug, Clone)]
pub struct DatagramWriter {
    session: u64,
    key: Option<Key>,
}

impl DatagramWriter {
    /// A writer for `session`, tagging every datagram when `key` is set.
    pub fn new(session: u64, key: Option<Key>) -> Self {
        DatagramWriter { session, key }
    }

    /// The session id.
    pub fn session(&self) -> u64 {
        self.session
    }

    /// Whether datagrams carry a tag.
    pub fn tagged(&self) -> bool {
        self.key.is_some()
    }

    /// Encodes a descriptor datagram for `object`.
    pub fn descriptor(
        &self,
        out: &mut Vec<u8>,
        object: u32,
        d: &ObjectDescriptor,
    ) -> Result<(), control::ControlError> {
        let body = control::encode(d)?;
        wire::encode_control(
            out,
            DatagramType::Descriptor,
            self.session,
            object,
            &body,
            self.key.as_ref(),
        );
        Ok(())
    }

    /// Encodes a heartbeat datagram.
    pub fn heartbeat(&self, out: &mut Vec<u8>, hb: &Heartbeat) {
        let body = control::encode(hb).expect("a heartbeat is far below the body limit");
        wire::encode_control(
            out,
            DatagramType::Heartbeat,
            self.session,
            0,
            &body,
            self.key.as_ref(),
        );
    }

    /// Encodes an inventory datagram.
    pub fn inventory(&self, out: &mut Vec<u8>, inv: &crate::control::Inventory) {
        let body = control::encode(inv).expect("Inventory::fitting keeps it within the body limit");
        wire::encode_control(
            out,
            DatagramType::Inventory,
            self.session,
            0,
            &body,
            self.key.as_ref(),
        );
    }

    /// Encodes one data datagram.
    pub fn data(&self, out: &mut Vec<u8>, header: &DataHeader, symbol: &[u8]) {
        debug_assert_eq!(header.session, self.session);
        wire::encode_data(out, header, symbol, self.key.as_ref());
    }
}

/// One block ready to send: its encoder and the symbol ids this pass sends.
pub struct OutgoingBlock {
    header: DataHeader,
    encoder: BlockEncoder,
    repair: Vec<Vec<u8>>,
    repair_start: u32,
    esis: Range<u32>,
}

impl OutgoingBlock {
    /// Prepares block `block` of `object`: `data` is its encoded bytes after `codec`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        session: u64,
        object: u32,
        block: u32,
        codec: Codec,
        plain_len: u32,
        data: Vec<u8>,
        max_symbol: u16,
        repair_percent: u32,
        pass: u32,
    ) -> Self {
        let block_len = data.len() as u32;
        let mut encoder = BlockEncoder::new(data, max_symbol);
        let k = encoder.source_symbols();
        let r = layout::repair_symbols(k, repair_percent);
        let esis = layout::pass_symbols(k, r, pass);
        let repair_start = esis.start.max(k);
        let repair = if esis.end > repair_start {
            encoder.repair_symbols(repair_start, esis.end - repair_start)
        } else {
            Vec::new()
        };
        OutgoingBlock {
            header: DataHeader {
                session,
                object,
                block,
                esi: 0,
                block_len,
                plain_len,
                codec,
            },
            encoder,
            repair,
            repair_start,
            esis,
        }
    }

    /// Datagrams this block still has to send in this pass.
    pub fn remaining(&self) -> u32 {
        self.esis.end - self.esis.start
    }

    /// Encodes the block's next datagram into `out`; false when the block is done.
    pub fn next_datagram(&mut self, w: &DatagramWriter, out: &mut Vec<u8>) -> bool {
        let Some(esi) = self.esis.next() else {
            return false;
        };
        let header = DataHeader { esi, ..self.header };
        if esi < self.encoder.source_symbols() {
            w.data(out, &header, self.encoder.source_symbol(esi));
        } else {
            let symbol = &self.repair[(esi - self.repair_start) as usize];
            w.data(out, &header, symbol);
        }
        true
    }
}

/// Interleaves up to [`INTERLEAVE_DEPTH`] blocks in proportion to their sizes.
///
/// Each block's datagrams are spread evenly over the whole window, so a burst loss
/// anywhere costs every block the same fraction of its symbols, small blocks included.
#[derive(Default)]
pub struct Interleaver {
    blocks: Vec<Scheduled>,
}

struct Scheduled {
    block: OutgoingBlock,
    total: u64,
    sent: u64,
}

impl Interleaver {
    /// An empty interleaver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block to the window.
    pub fn push(&mut self, block: OutgoingBlock) {
        let total = block.remaining() as u64;
        if total > 0 {
            self.blocks.push(Scheduled {
                block,
                total,
                sent: 0,
            });
        }
    }

    /// Blocks with datagrams left.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Datagrams still to send over all blocks.
    pub fn remaining(&self) -> u32 {
        self.blocks.iter().map(|b| b.block.remaining()).sum()
    }

    /// Whether every block is done.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Encodes the next datagram into `out`; false when every block is done.
    ///
    /// Picks the block whose next datagram is due earliest on its own even spacing,
    /// i.e. the smallest `(sent + 1/2) / total`.
    pub fn next_datagram(&mut self, w: &DatagramWriter, out: &mut Vec<u8>) -> bool {
        let due = |b: &Scheduled| (2 * b.sent + 1, 2 * b.total);
        let Some(i) = (0..self.blocks.len()).min_by(|&a, &b| {
            let (na, da) = due(&self.blocks[a]);
            let (nb, db) = due(&self.blocks[b]);
            (na * db).cmp(&(nb * da))
        }) else {
            return false;
        };
        let b = &mut self.blocks[i];
        let sent = b.block.next_datagram(w, out);
        debug_assert!(sent);
        b.sent += 1;
        if b.block.remaining() == 0 {
            self.blocks.remove(i);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(object: u32, index: u32, len: usize) -> OutgoingBlock {
        OutgoingBlock::new(
            1,
            object,
            index,
            Codec::None,
            len as u32,
            vec![7u8; len],
            1408,
            10,
            1,
        )
    }

    #[test]
    fn a_burst_costs_every_block_the_same_fraction() {
        let w = DatagramWriter::new(1, None);
        let mut il = Interleaver::new();
        il.push(block(0, 0, 1408 * 1024));
        il.push(block(0, 1, 1408 * 100));
        il.push(block(0, 2, 1408 * 1024));
        let total = il.remaining() as usize;
        let mut order = Vec::new();
        let mut out = Vec::new();
        while il.next_datagram(&w, &mut out) {
            let parsed = crate::wire::parse(&out, &Default::default()).unwrap();
            let crate::wire::Datagram::Data { header, .. } = parsed else {
                panic!()
            };
            order.push(header.block);
        }
        assert_eq!(order.len(), total);
        // Any window of 300 consecutive datagrams holds each block in proportion.
        for start in (0..total - 300).step_by(97) {
            let window = &order[start..start + 300];
            let small = window.iter().filter(|&&b| b == 1).count();
            assert!(
                (10..=17).contains(&small),
                "small block share {small} at {start}"
            );
        }
    }
}
