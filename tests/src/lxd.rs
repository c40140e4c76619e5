//! LXD unified image tarballs for the tests: gzip'd tar with `metadata.yaml` and a
//! `rootfs/` of seeded random bytes, as MISP-airgap ships them, and their signatures.

use rand::{RngCore, SeedableRng};
use std::path::{Path, PathBuf};

/// Writes an LXD unified image to `path` with `rootfs_bytes` of data seeded by `seed`.
pub fn lxd_image(path: &Path, rootfs_bytes: usize, seed: u64) {
    let f = std::fs::File::create(path).expect("create image");
    let gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    let meta = format!(
        "architecture: x86_64\ncreation_date: {seed}\nproperties:\n  description: test image {seed}\n"
    );
    let mut h = tar::Header::new_gnu();
    h.set_size(meta.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "metadata.yaml", meta.as_bytes())
        .expect("metadata.yaml");
    let mut data = vec![0u8; rootfs_bytes];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    t.append_data(&mut h, "rootfs/blob", &data[..])
        .expect("rootfs");
    t.into_inner().expect("tar").finish().expect("gzip");
}

/// Writes `<dir>/<stem>.tar.gz` and its detached signature `<stem>.tar.gz.sig`; returns both.
pub fn signed_image(dir: &Path, stem: &str, rootfs_bytes: usize, seed: u64) -> (PathBuf, PathBuf) {
    let img = dir.join(format!("{stem}.tar.gz"));
    lxd_image(&img, rootfs_bytes, seed);
    let sig = dir.join(format!("{stem}.tar.gz.sig"));
    std::fs::write(&sig, format!("signature of {stem}\n")).expect("write signature");
    (img, sig)
}
