//! gapferry's benchmark harness: test data, a lossy relay, process accounting, the
//! end-to-end scenarios, the one-sided ones (the sender alone; the receiver alone, fed by a
//! replayer), the MISP feed already there, the udpcast peer and the table they print.
#![warn(missing_docs)]

pub mod alone;
pub mod data;
pub mod feed;
pub mod iperf;
pub mod peer;
pub mod procs;
pub mod records;
pub mod relay;
pub mod replay;
pub mod scenario;
pub mod table;
pub mod udpcost;
