//! Fuzzes the bounded bincode decoding of control bodies (descriptor, heartbeat,
//! inventory): never panics, never makes one allocation larger than four times the body
//! limit (what the body's bytes can really hold in memory, whatever its length fields
//! claim), and what decodes is canonical: it re-encodes to the same bytes.
#![no_main]

use gapferry_common::control::{self, Inventory, MAX_CONTROL_BODY};
use gapferry_common::{Heartbeat, ObjectDescriptor};
use gapferry_fuzz::{take_largest_allocation, Counting};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

fn bounded<T>(decode: impl FnOnce() -> T) -> T {
    take_largest_allocation();
    let r = decode();
    let largest = take_largest_allocation();
    assert!(
        largest <= 4 * MAX_CONTROL_BODY,
        "decoding allocated {largest} bytes at once"
    );
    r
}

fuzz_target!(|data: &[u8]| {
    if let Ok(inv) = bounded(|| control::decode::<Inventory>(data)) {
        assert_eq!(control::encode(&inv).expect("re-encodes"), data);
    }
    if let Ok(d) = bounded(|| control::decode::<ObjectDescriptor>(data)) {
        assert!(data.len() <= MAX_CONTROL_BODY);
        assert_eq!(control::encode(&d).expect("re-encodes"), data);
    }
    if let Ok(h) = bounded(|| control::decode::<Heartbeat>(data)) {
        assert_eq!(control::encode(&h).expect("re-encodes"), data);
    }
});
