//! gapferry sender library.
