//! The gapferry protocol with no I/O: datagram layout, authentication tags, control
//! messages, block layout, block hashes merged into an object's blake3, RaptorQ block
//! coding, block compression, name rules and the receive-side [`Assembler`] and send-side
//! [`send::Session`] state machines.
//!
//! Everything here is deterministic: the sender and receiver crates feed it bytes and
//! a clock, so live UDP, pcap replay, fuzzers and tests drive the same code.
#![warn(missing_docs)]

pub mod assembler;
pub mod auth;
pub mod block_hash;
pub mod compress;
pub mod control;
pub mod emit;
pub mod fec;
pub mod freshness;
pub mod kind;
pub mod layout;
pub mod name;
pub mod send;
mod siv;
pub mod spread;
pub mod wire;

pub use assembler::{Assembler, Event, Limits, ObjectRef};
pub use auth::{Key, KeyRing};
pub use control::{Heartbeat, ObjectDescriptor};
pub use kind::ObjectKind;
pub use wire::{Datagram, Reject};
