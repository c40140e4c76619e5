//! Test support for gapferry's end-to-end tests: a lossy UDP relay, an in-process
//! receiver, an in-process sender, and helpers to compare trees and read records.
#![warn(missing_docs)]

pub mod fixtures;
pub mod harness;
pub mod lxd;
pub mod openpgp;
pub mod prereq;
pub mod realdata;
pub mod relay;
pub mod tls;
