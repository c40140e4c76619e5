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

/// Writes an LXD unified image tarball: metadata.yaml plus rootfs/ with `rootfs_bytes` of data.
pub fn lxd_image(path: &Path, rootfs_bytes: usize, seed: u64) {
    use rand::{RngCore, SeedableRng};
    let f = std::fs::File::create(path).unwrap();
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let meta = format!("architecture: x86_64\ncreation_date: {seed}\nproperties:\n  description: test image {seed}\n");
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "metadata.yaml", meta.as_bytes())
        .unwrap();
    let mut data = vec![0u8; rootfs_bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "rootfs/blob", &data[..]).unwrap();
    t.into_inner().unwrap().finish().unwrap();
}
