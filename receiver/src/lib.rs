//! gapferry receiver library.
