//! gapferry's low side: reads files, cuts them into compressed RaptorQ blocks, and sends
//! them as paced UDP datagrams (or into a capture file) through a one-way link.
//!
//! Data flows outbox → [`source`] → [`prepare`] → [`transfer`] → [`pacer`] → [`sink`]; the wire format
//! itself lives in `gapferry-common`.
#![warn(missing_docs)]

pub mod config;
pub mod control;
pub mod error;
pub mod http;
pub mod images_pull;
pub mod keygen;
pub mod lanes;
pub mod metrics;
pub mod misp_pull;
pub mod object_pace;
pub mod pacer;
pub mod prepare;
pub mod progress;
pub mod rate;
pub mod session;
pub mod sink;
pub mod source;
pub mod status;
pub mod transfer;
pub mod watch;

pub use session::{SenderConfig, SenderSession};
pub use source::SourceFile;
