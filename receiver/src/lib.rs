//! gapferry's high side: drains the UDP socket (or reads a capture), feeds the protocol
//! state machine of `gapferry-common`, and delivers verified objects atomically.
//!
//! Data flows [`socket`] → [`pipeline`] (assembler) → [`delivery`] → [`records`].
#![warn(missing_docs)]

pub mod cause;
pub mod commit_rate;
pub mod config;
pub mod delivery;
pub mod destinations;
pub mod disk;
pub mod feedcare;
pub mod freshness;
pub mod hooks;
pub mod lanes;
pub mod ledger;
pub mod metrics;
pub mod misp_push;
pub mod pipeline;
pub mod record_lines;
pub mod records;
pub mod replay;
pub mod socket;
pub mod solvers;
pub mod status;
pub mod writeback;

pub use delivery::Summary;
pub use pipeline::{listen, ReceiverConfig};
