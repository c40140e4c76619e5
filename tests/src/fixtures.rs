//! Test data the project makes itself: random and JSON-like files of chosen sizes.

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use std::path::Path;

/// Writes `size` bytes of seeded random (incompressible) data to `path`.
pub fn random_file(path: &Path, size: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; size];
    rng.fill_bytes(&mut data);
    write(path, &data);
}

/// Writes `size` bytes of compressible JSON-looking text to `path`.
pub fn json_file(path: &Path, size: usize, seed: u64) {
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"records\":{\"indicators\":[");
    let mut i = seed;
    while out.len() < size {
        out.push_str(&format!(
            "{{\"type\":\"ip-dst\",\"value\":\"10.{}.{}.{}\",\"uuid\":\"{:08x}-0000-4000-8000-{:012x}\"}},",
            i % 256,
            (i / 256) % 256,
            i % 7,
            i,
            i * 7
        ));
        i += 1;
    }
    out.truncate(size);
    write(path, out.as_bytes());
}

fn write(path: &Path, data: &[u8]) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).expect("create fixture dir");
    }
    std::fs::write(path, data).expect("write fixture");
}
