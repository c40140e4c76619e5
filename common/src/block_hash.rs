//! An object's blake3 from its blocks hashed apart: each block is hashed on its own (on any
//! thread, in any order) into a [`BlockDigest`], and an [`ObjectHasher`] merges the digests
//! into the same 32 bytes as `blake3::hash` of the whole object.
//!
//! blake3 is a binary tree over 1 024-byte chunks: a node of `n` bytes (more than one
//! chunk) splits into a left child of [`blake3::hazmat::left_subtree_len`]`(n)` bytes (a
//! power of two of chunks) and a right child of the rest. gapferry's blocks are
//! `max_symbol × 1 024` bytes (1 408 KiB at MTU 1500): whole chunks, but not a power of
//! two of them, so a block is not one node of the tree. [`hash_block`] therefore walks the
//! object's tree from the root and hashes the largest nodes lying wholly inside the block,
//! each with a hasher started at the node's offset (`set_input_offset`, then
//! `finalize_non_root`): about two nodes per power of two in the block's length, each
//! aligned and complete, except the object's last node, which may end in a short chunk as
//! blake3 allows. [`ObjectHasher::finish`] walks the same tree and merges children with
//! `merge_subtrees_non_root`, and the top with `merge_subtrees_root`. A node is never split
//! between two blocks' digests, so each block's nodes are final as soon as it is hashed.
//!
//! An object held in one block is the tree's root: that block's digest holds the root
//! hash from `Hasher::finalize`, as blake3 requires. An empty object has no blocks.

use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};
use std::collections::BTreeMap;
use thiserror::Error;

/// blake3's chunk: block boundaries must fall on multiples of it.
pub const CHUNK_LEN: u64 = blake3::CHUNK_LEN as u64;

/// Why block digests could not be made or merged.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BlockHashError {
    /// A block starts or ends inside a blake3 chunk (it must be cut on 1 024-byte bounds).
    #[error("a block at byte {start} of {len} bytes is not cut on 1024-byte chunk bounds")]
    Unaligned {
        /// Where the block starts in the object.
        start: u64,
        /// Its length.
        len: u64,
    },
    /// A block reaches past the object's end.
    #[error("a block at byte {start} of {len} bytes reaches past the object's {size} bytes")]
    OutOfRange {
        /// Where the block starts.
        start: u64,
        /// Its length.
        len: u64,
        /// The object's size.
        size: u64,
    },
    /// The digests given do not cover the object: a block is missing.
    #[error("no digest covers byte {0} of the object: a block was not hashed")]
    Missing(u64),
    /// Two digests cover the same bytes: a block was given twice.
    #[error("the block covering byte {0} was hashed twice")]
    Duplicate(u64),
    /// A digest was made for an object of another size.
    #[error("a digest made for a {got}-byte object was given to a {want}-byte one")]
    SizeMismatch {
        /// The size the digest was made for.
        got: u64,
        /// The size of the object being merged.
        want: u64,
    },
}

/// The value of one tree node: a chaining value, or the root hash when it is the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NodeValue {
    Chaining(ChainingValue),
    Root([u8; 32]),
}

/// One node of the object's tree hashed from a block's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    start: u64,
    len: u64,
    value: NodeValue,
}

/// The hashes of the tree nodes lying in one block of an object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockDigest {
    object_size: u64,
    nodes: Vec<Node>,
}

/// The largest nodes of the tree of an object of `size` bytes that lie wholly in
/// `range` (chunk-aligned), left to right, as (start, length).
fn nodes_within(size: u64, range: std::ops::Range<u64>) -> Vec<(u64, u64)> {
    fn visit(start: u64, len: u64, range: &std::ops::Range<u64>, out: &mut Vec<(u64, u64)>) {
        let end = start + len;
        if end <= range.start || start >= range.end {
            return;
        }
        if range.start <= start && end <= range.end {
            out.push((start, len));
            return;
        }
        // Partly inside: more than one chunk, since the range is cut on chunk bounds.
        let left = hazmat::left_subtree_len(len);
        visit(start, left, range, out);
        visit(start + left, len - left, range, out);
    }
    let mut out = Vec::new();
    if size > 0 {
        visit(0, size, &range, &mut out);
    }
    out
}

/// Hashes one block: `bytes` at offset `start` of an object of `object_size` bytes.
///
/// `start` must be a multiple of [`CHUNK_LEN`], and so must the block's end unless it is
/// the object's end.
pub fn hash_block(
    object_size: u64,
    start: u64,
    bytes: &[u8],
) -> Result<BlockDigest, BlockHashError> {
    let len = bytes.len() as u64;
    let end = start.checked_add(len).filter(|&e| e <= object_size);
    let Some(end) = end else {
        return Err(BlockHashError::OutOfRange {
            start,
            len,
            size: object_size,
        });
    };
    if !start.is_multiple_of(CHUNK_LEN) || (!end.is_multiple_of(CHUNK_LEN) && end != object_size) {
        return Err(BlockHashError::Unaligned { start, len });
    }
    let nodes = nodes_within(object_size, start..end)
        .into_iter()
        .map(|(at, n)| {
            let piece = &bytes[(at - start) as usize..(at - start + n) as usize];
            let value = if at == 0 && n == object_size {
                NodeValue::Root(*blake3::hash(piece).as_bytes())
            } else {
                let mut hasher = blake3::Hasher::new();
                hasher.set_input_offset(at);
                hasher.update(piece);
                NodeValue::Chaining(hasher.finalize_non_root())
            };
            Node {
                start: at,
                len: n,
                value,
            }
        })
        .collect();
    Ok(BlockDigest { object_size, nodes })
}

/// Merges the [`BlockDigest`]s of an object, given in any order, into its blake3.
#[derive(Debug)]
pub struct ObjectHasher {
    size: u64,
    nodes: BTreeMap<u64, (u64, NodeValue)>,
}

impl ObjectHasher {
    /// A merger for an object of `size` bytes.
    pub fn new(size: u64) -> Self {
        ObjectHasher {
            size,
            nodes: BTreeMap::new(),
        }
    }

    /// Takes one block's digest.
    pub fn add(&mut self, digest: BlockDigest) -> Result<(), BlockHashError> {
        if digest.object_size != self.size {
            return Err(BlockHashError::SizeMismatch {
                got: digest.object_size,
                want: self.size,
            });
        }
        for node in digest.nodes {
            if self
                .nodes
                .insert(node.start, (node.len, node.value))
                .is_some()
            {
                return Err(BlockHashError::Duplicate(node.start));
            }
        }
        Ok(())
    }

    /// The object's blake3, once every block's digest is in.
    pub fn finish(&self) -> Result<[u8; 32], BlockHashError> {
        if self.size == 0 {
            // An empty object has no blocks (and no chunk to hash apart).
            return Ok(*blake3::hash(&[]).as_bytes());
        }
        match self.node(0, self.size, true)? {
            NodeValue::Root(h) => Ok(h),
            NodeValue::Chaining(_) => unreachable!("the root is merged as a root"),
        }
    }

    fn node(&self, start: u64, len: u64, root: bool) -> Result<NodeValue, BlockHashError> {
        if let Some(&(n, value)) = self.nodes.get(&start) {
            if n == len {
                return Ok(value);
            }
        }
        if len <= CHUNK_LEN {
            return Err(BlockHashError::Missing(start));
        }
        let left = hazmat::left_subtree_len(len);
        let l = self.chaining(start, left)?;
        let r = self.chaining(start + left, len - left)?;
        Ok(if root {
            NodeValue::Root(*hazmat::merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
        } else {
            NodeValue::Chaining(hazmat::merge_subtrees_non_root(&l, &r, Mode::Hash))
        })
    }

    fn chaining(&self, start: u64, len: u64) -> Result<ChainingValue, BlockHashError> {
        match self.node(start, len, false)? {
            NodeValue::Chaining(cv) => Ok(cv),
            // Only a digest of the whole object holds a root, and it is found at the top.
            NodeValue::Root(_) => Err(BlockHashError::Missing(start)),
        }
    }
}

/// The blake3 of an object of `size` bytes from its blocks of `block_size` bytes (the
/// last one shorter), hashed apart: what [`hash_block`] and [`ObjectHasher`] do for a caller
/// holding the blocks in order.
pub fn merge_blocks<'a>(
    size: u64,
    block_size: u64,
    blocks: impl IntoIterator<Item = &'a [u8]>,
) -> Result<[u8; 32], BlockHashError> {
    let mut hasher = ObjectHasher::new(size);
    let mut start = 0u64;
    for block in blocks {
        hasher.add(hash_block(size, start, block)?)?;
        start += block_size;
    }
    hasher.finish()
}
