//! The sender's side of the protocol without I/O, the mirror of the [`crate::Assembler`]:
//! [`ObjectSchedule`] orders one pass of one object (descriptor copies among its symbols),
//! [`Session`] numbers objects, spreads every datagram against bursts, pads pauses and adds
//! heartbeats and inventories. The sender crate keeps files, threads, sockets and pacing.

mod object;
mod session;

pub use object::{
    object_datagrams, pass_datagrams, Emitted, ObjectSchedule, DESCRIPTOR_EVERY, MIN_DESCRIPTORS,
};
pub use session::{Session, Transmit, ENDING_SPACING, FLUSH_SPAN, HEARTBEAT_EVERY};
