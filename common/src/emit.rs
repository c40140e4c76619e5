//! The sender's side of the protocol without I/O: turning encoded blocks, descriptors and
//! heartbeats into datagrams, with neighbouring blocks interleaved.

use crate::auth::Key;
use crate::control::{self, Heartbeat, ObjectDescriptor};
use crate::fec::BlockEncoder;
use crate::layout;
use crate::wire::{self, Codec, DataHeader, DatagramType};
use std::collections::VecDeque;
use std::ops::Range;

/// Blocks whose symbols are interleaved, so a burst loss is spread over them.
pub const INTERLEAVE_DEPTH: usize = 8;
/// A descriptor copy is sent after this many data datagrams of an object.
pub const DESCRIPTOR_EVERY: u64 = 128;

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

/// Round-robin over up to [`INTERLEAVE_DEPTH`] blocks: one datagram from each in turn.
#[derive(Default)]
pub struct Interleaver {
    blocks: VecDeque<OutgoingBlock>,
}

impl Interleaver {
    /// An empty interleaver.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a block to the rotation.
    pub fn push(&mut self, block: OutgoingBlock) {
        self.blocks.push_back(block);
    }

    /// Blocks still in the rotation.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Datagrams still to send over all blocks.
    pub fn remaining(&self) -> u32 {
        self.blocks.iter().map(OutgoingBlock::remaining).sum()
    }

    /// Whether every block is done.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Encodes the next datagram into `out`; false when every block is done.
    pub fn next_datagram(&mut self, w: &DatagramWriter, out: &mut Vec<u8>) -> bool {
        while let Some(mut b) = self.blocks.pop_front() {
            if b.next_datagram(w, out) {
                if b.remaining() > 0 {
                    self.blocks.push_back(b);
                }
                return true;
            }
        }
        false
    }
}
